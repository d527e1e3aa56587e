//! The Redis status store against a real `redis-server` (started on a free loopback port with the
//! append-only file on): the same contract checks as the embedded store, races with many
//! concurrent writers, and what survives a SIGKILL of the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kyufu_domain::Status;
use kyufu_ports::{AdapterError, ApplicationRecord, Claim, StatusStore, Transition, TransitionOutcome};
use kyufu_redis::{RedisConfig, RedisStatusStore};
use kyufu_testservers::redis::RedisServer;
use uuid::Uuid;

async fn store(server: &RedisServer) -> Arc<dyn StatusStore> {
    let mut config = RedisConfig::new(server.url());
    config.prefix = format!("test:{}:", Uuid::new_v4().simple());
    Arc::new(RedisStatusStore::connect(config).await.expect("connect to the test redis-server"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_of_work_run_in_sequence_over_redis() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = kyufu_embedded::EmbeddedStore::open(dir.path()).expect("open");
    let ports = kyufu_ports::Ports::sequential(embedded.bus(), store(&server).await, embedded.document_store());
    kyufu_ports::contract::units_accept_and_transition(ports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_create_and_transition() {
    let server = RedisServer::start();
    kyufu_ports::contract::status_create_and_transition(store(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_claims_listing_and_counts() {
    let server = RedisServer::start();
    kyufu_ports::contract::status_claims_listing_and_counts(store(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_reference_index() {
    let server = RedisServer::start();
    kyufu_ports::contract::reference_index(store(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_claim_is_forgotten_after_its_time() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let ttl = Duration::from_millis(300);
    assert_eq!(s.claim_expiring("pass-spent", "p", "a", ttl).await.expect("claim"), Claim::Won);
    assert_eq!(s.claim_expiring("pass-spent", "p", "b", ttl).await.expect("claim"), Claim::Held { owner: "a".into() });
    assert_eq!(s.claimed_by("pass-spent", "p").await.expect("lookup"), Some("a".into()));
    // A plain claim never expires; the expiring one is gone once its time has passed.
    assert_eq!(s.claim("ns", "q", "a").await.expect("claim"), Claim::Won);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.claimed_by("pass-spent", "p").await.expect("lookup").is_some() {
        assert!(Instant::now() < deadline, "the expiring claim never went away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.claim_expiring("pass-spent", "p", "b", ttl).await.expect("claim"), Claim::Won, "free again");
    assert_eq!(s.claimed_by("ns", "q").await.expect("lookup"), Some("a".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_transitions_have_exactly_one_winner() {
    let server = RedisServer::start();
    kyufu_ports::contract::status_racing_transitions(store(&server).await, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_claims_have_exactly_one_winner() {
    let server = RedisServer::start();
    kyufu_ports::contract::status_racing_claims(store(&server).await, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_stores_on_separate_connections_agree() {
    // Two processes' worth of stores (separate connections) racing on the same records.
    let server = RedisServer::start();
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let mut a = RedisConfig::new(server.url());
    a.prefix.clone_from(&prefix);
    let b = a.clone();
    let (a, b) = (RedisStatusStore::connect(a).await.expect("a"), RedisStatusStore::connect(b).await.expect("b"));
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        a.create(&ApplicationRecord::received(*id, "p", Utc::now()), None).await.expect("create");
    }
    let mut tasks = Vec::new();
    for (n, s) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for id in ids {
                let t = Transition::new(&[Status::Received], Status::Approved, &format!("worker{n}"));
                if matches!(s.transition(id, &t).await.expect("transition"), TransitionOutcome::Applied(_)) {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    assert_eq!(total, ids.len(), "each record moved exactly once");
    let counts = b.count_by_status().await.expect("counts");
    assert!(counts.contains(&(Status::Approved, 20)) && counts.contains(&(Status::Received, 0)), "{counts:?}");
    assert_eq!(b.list_by_status(Status::Approved, 100).await.expect("list").len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_sigkill_and_calls_fail_fast_while_down() {
    let mut server = RedisServer::start();
    let s = store(&server).await;
    let ids: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        s.create(&ApplicationRecord::received(*id, "p", Utc::now()), None).await.expect("create");
        s.transition(*id, &Transition::new(&[Status::Received], Status::NeedsReview, "t")).await.expect("t");
    }
    assert_eq!(s.claim("coupon", "CODE", ids[0].to_string().as_str()).await.expect("claim"), Claim::Won);

    server.kill();
    let started = Instant::now();
    let err = s.get(ids[0]).await.expect_err("server is down");
    assert!(matches!(err, AdapterError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "a down server answered in {:?}", started.elapsed());

    server.restart();
    // The same store reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rec = loop {
        match s.get(ids[29]).await {
            Ok(rec) => break rec,
            Err(AdapterError::Unavailable(_)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("after restart: {e:?}"),
        }
    };
    assert_eq!(rec.expect("record survived").status, Status::NeedsReview);
    assert_eq!(s.list_by_status(Status::NeedsReview, 100).await.expect("list").len(), 30);
    assert_eq!(s.claim("coupon", "CODE", "someone-else").await.expect("claim"), Claim::Held { owner: ids[0].to_string() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable_not_a_hang() {
    let port = kyufu_testservers::free_port();
    let started = Instant::now();
    let err = RedisStatusStore::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}/"))).await.err();
    assert!(matches!(err, Some(AdapterError::Unavailable(_))), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_expire_and_records_do_not() {
    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.prefix = format!("test:{}:", Uuid::new_v4().simple());
    config.idempotency_ttl = Duration::from_millis(300);
    let s = RedisStatusStore::connect(config).await.expect("connect");
    let claim = kyufu_ports::IdempotencyClaim { key: "k".into(), fingerprint: "f".into() };
    let first = ApplicationRecord::received(Uuid::new_v4(), "p", Utc::now());
    s.create(&first, Some(&claim)).await.expect("create");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = ApplicationRecord::received(Uuid::new_v4(), "p", Utc::now());
    assert_eq!(s.create(&second, Some(&claim)).await.expect("create"), kyufu_ports::CreateOutcome::Created, "key expired");
    assert!(s.get(first.application_id).await.expect("get").is_some(), "records do not expire");
}
