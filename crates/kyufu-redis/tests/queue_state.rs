//! The shared queue numbers against a real `redis-server`: batched joins from two nodes, the cursor
//! clipped at `issued`, one writer holding the lease, takeover when it stops renewing, the fence
//! against a stale writer, and a new epoch when Redis loses the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kyufu_gateway::QueueState;
use kyufu_redis::{QueueStateConfig, RedisConfig, RedisQueueState};
use kyufu_testservers::redis::RedisServer;
use uuid::Uuid;

fn redis_config(server: &RedisServer, prefix: &str) -> RedisConfig {
    let mut config = RedisConfig::new(server.url());
    config.prefix = prefix.to_owned();
    config
}

fn unique_prefix() -> String {
    format!("test:{}:", Uuid::new_v4().simple())
}

async fn node(server: &RedisServer, prefix: &str, config: QueueStateConfig) -> Arc<RedisQueueState> {
    Arc::new(RedisQueueState::connect(&redis_config(server, prefix), "rice", config).await.expect("connect to the test redis-server"))
}

fn short_lease() -> QueueStateConfig {
    QueueStateConfig { lease_ttl: Duration::from_millis(600), renew_every: Duration::from_millis(100), ..QueueStateConfig::default() }
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).expect("redis url");
    client.get_multiplexed_async_connection().await.expect("raw connection to the test redis-server")
}

/// Waits (bounded) until exactly one of `nodes` holds the lease; returns its index.
async fn leader_of(nodes: &[&RedisQueueState]) -> usize {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let holders: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].drives_cursor()).collect();
        assert!(holders.len() <= 1, "two nodes hold the cursor lease at once: {holders:?}");
        if let [one] = holders[..] {
            return one;
        }
        assert!(Instant::now() < until, "no node took the cursor lease within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_joins_on_two_nodes_are_unique_gap_free_and_in_arrival_order() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let a = node(&server, &prefix, QueueStateConfig::default()).await;
    let b = node(&server, &prefix, QueueStateConfig::default()).await;
    const PER_NODE: usize = 150;
    // Each node gets its joins from one task, in rounds of 25 concurrent joins that `join_all`
    // polls in a fixed order (it does so below 30 futures), so their arrival order at the node's
    // batcher is the order of the vector.
    let run = |state: Arc<RedisQueueState>| {
        tokio::spawn(async move {
            let mut slots = Vec::new();
            for _ in 0..PER_NODE / 25 {
                slots.extend(futures::future::join_all((0..25).map(|_| state.join())).await);
            }
            slots
        })
    };
    let (from_a, from_b) = tokio::join!(run(a.clone()), run(b.clone()));
    let from_a: Vec<_> = from_a.expect("task").into_iter().map(|r| r.expect("join")).collect();
    let from_b: Vec<_> = from_b.expect("task").into_iter().map(|r| r.expect("join")).collect();
    for slots in [&from_a, &from_b] {
        assert!(slots.windows(2).all(|w| w[0].seq < w[1].seq), "numbers follow arrival order on a node");
    }
    let epoch = from_a[0].epoch;
    assert!(from_a.iter().chain(&from_b).all(|s| s.epoch == epoch), "both nodes share one epoch");
    let mut all: Vec<u64> = from_a.iter().chain(&from_b).map(|s| s.seq).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2 * PER_NODE as u64).collect::<Vec<_>>(), "unique and without gaps");
    let counters = b.refresh().await.expect("counters");
    assert_eq!((counters.epoch, counters.issued, counters.cursor), (epoch, 2 * PER_NODE as u64, 0));
    // Coalesced: far fewer allocations (each one HINCRBY inside the join script) than joins.
    let mut conn = raw(&server).await;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("INFO");
    let allocations: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hincrby:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("hincrby in commandstats");
    eprintln!("{allocations} allocations for {} joins", 2 * PER_NODE);
    assert!(allocations < (2 * PER_NODE) as u64 / 4, "{allocations} allocations for {} joins", 2 * PER_NODE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_moves_the_cursor_and_never_past_issued() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let a = node(&server, &prefix, QueueStateConfig::default()).await;
    let b = node(&server, &prefix, QueueStateConfig::default()).await;
    let (leader, follower) = if leader_of(&[&a, &b]).await == 0 { (a, b) } else { (b, a) };
    assert_eq!(leader.advance(5).await, Ok(0), "nothing issued, nothing to admit");
    for _ in 0..5 {
        follower.join().await.expect("join");
    }
    assert_eq!(follower.advance(3).await, Ok(0), "a follower moves nothing");
    assert_eq!(leader.refresh().await.expect("counters").cursor, 0);
    assert_eq!(leader.advance(3).await, Ok(3));
    assert_eq!(leader.advance(10).await, Ok(2), "clipped at issued");
    let seen = follower.refresh().await.expect("counters");
    assert_eq!((seen.issued, seen.cursor), (5, 5), "the follower sees the shared cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_passes_on_when_its_holder_stops_renewing() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let a = node(&server, &prefix, short_lease()).await;
    let b = node(&server, &prefix, short_lease()).await;
    let (leader, follower) = if leader_of(&[&a, &b]).await == 0 { (a, b) } else { (b, a) };
    for _ in 0..3 {
        leader.join().await.expect("join");
    }
    assert_eq!(leader.advance(1).await, Ok(1));
    // Renewal keeps the lease well past its lifetime while the holder runs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(leader.drives_cursor() && !follower.drives_cursor(), "a renewed lease stays with its holder");
    // The holder stops (its tasks end with it); its lease runs out and the follower takes over.
    drop(leader);
    assert_eq!(leader_of(&[&follower]).await, 0);
    assert_eq!(follower.advance(5).await, Ok(2), "the new writer moves the cursor on from where it was");
    assert_eq!(follower.refresh().await.expect("counters").cursor, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_lease_passed_on_moves_nothing() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    // A long lease: the node keeps believing it holds it while another token sits in Redis.
    let config = QueueStateConfig { lease_ttl: Duration::from_secs(60), renew_every: Duration::from_secs(30), ..QueueStateConfig::default() };
    let stale = node(&server, &prefix, config).await;
    leader_of(&[&stale]).await;
    for _ in 0..3 {
        stale.join().await.expect("join");
    }
    // The lease expired during a pause of this node and another node took it.
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}queue:rice:lease"))
        .arg("another-node")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    assert!(stale.drives_cursor(), "the node has not noticed yet");
    assert_eq!(stale.advance(3).await, Ok(0), "fenced: the stale writer moves nothing");
    let cursor: Option<u64> = redis::cmd("HGET").arg(format!("{prefix}queue:rice")).arg("cursor").query_async(&mut conn).await.expect("HGET");
    assert_eq!(cursor.unwrap_or(0), 0);
    assert!(!stale.drives_cursor(), "and knows it has lost the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lost_by_redis_starts_a_new_epoch() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let a = node(&server, &prefix, QueueStateConfig::default()).await;
    let b = node(&server, &prefix, QueueStateConfig::default()).await;
    let first = a.join().await.expect("join");
    assert_eq!(b.refresh().await.expect("counters").epoch, first.epoch, "a second node adopts the epoch");
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("FLUSHALL");
    let after = b.join().await.expect("join");
    assert_ne!(after.epoch, first.epoch, "old tickets must not match the new numbering");
    assert_eq!(after.seq, 1, "numbering starts again");
    assert_eq!(a.refresh().await.expect("counters").epoch, after.epoch, "every node follows the new epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_passes_on_at_once() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    // A long lease: without the release the follower would wait half a minute.
    let long = QueueStateConfig { lease_ttl: Duration::from_secs(30), renew_every: Duration::from_millis(100), ..QueueStateConfig::default() };
    let a = node(&server, &prefix, long.clone()).await;
    let b = node(&server, &prefix, long).await;
    let (leader, follower) = if leader_of(&[&a, &b]).await == 0 { (a, b) } else { (b, a) };
    let released_at = Instant::now();
    leader.release().await;
    assert!(!leader.drives_cursor(), "the released node stops moving the cursor at once");
    assert_eq!(leader_of(&[&leader, &follower]).await, 1, "the other node took over");
    assert!(released_at.elapsed() < Duration::from_secs(5), "took {:?}", released_at.elapsed());
    // The released node does not take it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!leader.drives_cursor() && follower.drives_cursor());
}
