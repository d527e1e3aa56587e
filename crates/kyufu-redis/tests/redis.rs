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
async fn contract_leases() {
    let server = RedisServer::start();
    kyufu_ports::contract::status_leases(store(&server).await, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_out_lease_is_forgotten() {
    let server = RedisServer::start();
    let s = store(&server).await;
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::milliseconds(300);
    assert!(matches!(s.take_lease("session", "tok", "alice", now, until).await.expect("lease"), kyufu_ports::LeaseOutcome::Won(_)));
    assert!(s.lease_of("session", "tok").await.expect("lease_of").is_some());
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.claimed_by("session", "tok").await.expect("claimed_by").is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "Redis keeps no lease long after it ran out");
    // A plain compare-and-set claim never expires.
    assert!(s.replace_claim("cas", "k", None, "a").await.expect("cas"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(s.claimed_by("cas", "k").await.expect("claimed_by"), Some("a".into()));
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

/// Two stores (two worker processes) on one prefix: what one read a moment ago is stale once the
/// other moved the record. A move from the stale copy must never win nor answer from it: the
/// revision-checked write is refused, and the answer comes from a fresh read. A read followed by a
/// move with nothing in between takes one round trip for the move, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_from_a_stale_read_neither_wins_nor_answers_from_it() {
    let server = RedisServer::start();
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let registry = prometheus::Registry::new();
    let open = |registry: Option<prometheus::Registry>| {
        let mut config = RedisConfig::new(server.url());
        config.prefix.clone_from(&prefix);
        config.metrics = registry;
        RedisStatusStore::connect(config)
    };
    let a = open(Some(registry.clone())).await.expect("a");
    let b = open(None).await.expect("b");
    let id = Uuid::new_v4();
    a.create(&ApplicationRecord::received(id, "p", Utc::now()), None).await.expect("create");

    // a reads; b approves; a's review move from the copy it holds must be refused, not applied.
    assert_eq!(a.get(id).await.expect("get").map(|r| r.status), Some(Status::Received));
    assert!(matches!(b.transition(id, &Transition::new(&[Status::Received], Status::Approved, "b")).await, Ok(TransitionOutcome::Applied(_))));
    let review = Transition::new(&[Status::Received], Status::NeedsReview, "a");
    assert!(matches!(a.transition(id, &review).await, Ok(TransitionOutcome::Refused(r)) if r.status == Status::Approved));

    // a reads (approved); b issues; a's issue with another code answers AlreadyIn with b's code.
    assert_eq!(a.get(id).await.expect("get").map(|r| r.status), Some(Status::Approved));
    let mut issue = Transition::new(&[Status::Approved], Status::CouponIssued, "b");
    issue.coupon_code = Some("B".into());
    assert!(matches!(b.transition(id, &issue).await, Ok(TransitionOutcome::Applied(_))));
    issue.coupon_code = Some("A".into());
    assert!(matches!(a.transition(id, &issue).await, Ok(TransitionOutcome::AlreadyIn(r)) if r.coupon_code.as_deref() == Some("B")));
    let rec = b.get(id).await.expect("get").expect("record");
    assert_eq!(rec.history.iter().map(|h| h.status).collect::<Vec<_>>(), [Status::Received, Status::Approved, Status::CouponIssued]);

    // Read, then move, undisturbed: one read, one write.
    let fresh = Uuid::new_v4();
    a.create(&ApplicationRecord::received(fresh, "p", Utc::now()), None).await.expect("create");
    let count = |op: &str| -> f64 {
        let text = kyufu_telemetry::encode(&registry);
        let series = format!("kyufu_redis_requests_total{{operation=\"{op}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse().ok()).unwrap_or(0.0)
    };
    let (reads, writes) = (count("read"), count("transition"));
    a.get(fresh).await.expect("get");
    assert!(matches!(a.transition(fresh, &review).await, Ok(TransitionOutcome::Applied(_))));
    assert_eq!((count("read") - reads, count("transition") - writes), (1.0, 1.0), "the move did not read again");
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
