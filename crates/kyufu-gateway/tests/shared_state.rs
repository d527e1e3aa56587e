//! A gateway on a queue state shared with other nodes (`QueueState::is_shared`): its per-node
//! liveness ring does not skip visitors (they may be polling another node), and a node that does
//! not hold the cursor (`drives_cursor` false) admits nobody by itself.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kyufu_admission::Keyring;
use kyufu_gateway::{Counters, Gateway, GatewayConfig, MemoryQueueState, QueueState, Slot, StateError};
use reqwest::StatusCode;

/// One node's view of a shared queue: the numbers in memory, the cursor writable only while
/// `drives` is set (as with a lease held elsewhere).
struct SharedQueue {
    inner: MemoryQueueState,
    drives: AtomicBool,
}

#[async_trait]
impl QueueState for SharedQueue {
    async fn join(&self) -> Result<Slot, StateError> {
        self.inner.join().await
    }
    async fn counters(&self) -> Result<Counters, StateError> {
        self.inner.counters().await
    }
    async fn advance(&self, n: u64) -> Result<u64, StateError> {
        if self.drives_cursor() {
            self.inner.advance(n).await
        } else {
            Ok(0)
        }
    }
    async fn spend(&self) -> Result<(), StateError> {
        self.inner.spend().await
    }
    fn drives_cursor(&self) -> bool {
        self.drives.load(Ordering::SeqCst)
    }
    fn is_shared(&self) -> bool {
        true
    }
}

async fn start(state: Arc<SharedQueue>, tweak: impl FnOnce(&mut GatewayConfig)) -> common::Harness {
    let mut config = GatewayConfig::new(common::EVENT, Keyring::random(), "http://127.0.0.1:9");
    config.tick = Duration::from_millis(20);
    tweak(&mut config);
    let keyring = config.keyring.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (gateway, handle) = Gateway::with_state(config, kyufu_telemetry::new_registry(), state).expect("valid config");
    let ops = common::serve_ops(gateway.ops_router()).await;
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    common::Harness { base, ops, handle, keyring, client: reqwest::Client::new() }
}

#[tokio::test]
async fn silent_visitors_are_not_skipped_when_the_queue_is_shared() {
    let state = Arc::new(SharedQueue { inner: MemoryQueueState::new(), drives: AtomicBool::new(true) });
    // On one node these settings skip a ticket silent for more than 2 s (see queue.rs).
    let h = start(state, |c| {
        c.refresh_secs = 1;
        c.expire_after_polls = 2;
    })
    .await;
    h.handle.pause();
    let a = common::join(&h).await.ticket();
    let b = common::join(&h).await.ticket();
    // Neither polls this node for 3.5 s: they might be polling another one.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    h.handle.resume();
    for t in [&a, &b] {
        let admitted = common::until_admitted(&h, t, Duration::from_secs(5)).await;
        assert_eq!(admitted.status, StatusCode::OK);
    }
    let text = h.client.get(format!("{}/metrics", h.ops)).send().await.expect("get").text().await.expect("text");
    assert!(text.lines().any(|l| l == "kyufu_gateway_tickets_expired_total 0"), "{text}");
}

#[tokio::test]
async fn a_node_without_the_cursor_admits_nobody_by_itself() {
    let state = Arc::new(SharedQueue { inner: MemoryQueueState::new(), drives: AtomicBool::new(false) });
    let h = start(state.clone(), |c| c.rate_per_sec = 1_000).await;
    let joined = common::join(&h).await;
    assert!(!joined.admitted(), "the join answer does not admit on a follower");
    // Several ticks pass; the follower takes no turn at the cursor.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = common::status(&h, &joined.ticket()).await;
        assert_eq!((r.status, r.state(), r.position()), (StatusCode::OK, "waiting", 1), "{:?}", r.body);
    }
    state.drives.store(true, Ordering::SeqCst);
    assert!(common::until_admitted(&h, &joined.ticket(), Duration::from_secs(5)).await.admitted());
}
