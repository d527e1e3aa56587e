//! The port contracts as executable checks, shared by every adapter's tests (feature `contract`):
//! the embedded store and the production adapters run the same functions, so "implements the
//! same trait" means "passes the same checks". Each function expects a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kyufu_domain::Status;
use uuid::Uuid;

use crate::{
    AdapterError, ApplicationRecord, Claim, CreateOutcome, EventBus, IdempotencyClaim, StatusStore, Transition,
    TransitionOutcome,
};

/// Create is idempotent by key (same request, different request), never overwrites an id;
/// transitions are conditional, replays change nothing, and nothing moves backwards.
pub async fn status_create_and_transition(s: Arc<dyn StatusStore>) {
    let first = ApplicationRecord::received(Uuid::new_v4(), "p", Utc::now());
    let claim = IdempotencyClaim { key: "key-1".into(), fingerprint: "f1".into() };
    assert_eq!(s.create(&first, Some(&claim)).await.expect("create"), CreateOutcome::Created);
    let retry = ApplicationRecord::received(Uuid::new_v4(), "p", Utc::now());
    assert_eq!(
        s.create(&retry, Some(&claim)).await.expect("create"),
        CreateOutcome::Existing { application_id: first.application_id, same_request: true }
    );
    let other = IdempotencyClaim { key: "key-1".into(), fingerprint: "f2".into() };
    assert_eq!(
        s.create(&retry, Some(&other)).await.expect("create"),
        CreateOutcome::Existing { application_id: first.application_id, same_request: false }
    );
    assert!(s.get(retry.application_id).await.expect("get").is_none(), "a replay writes nothing");
    assert_eq!(s.create(&first, None).await, Err(AdapterError::AlreadyExists));
    assert_eq!(s.get(first.application_id).await.expect("get"), Some(first.clone()), "round trip");

    let id = first.application_id;
    let approve = Transition::new(&[Status::Received], Status::Approved, "t");
    assert!(matches!(s.transition(id, &approve).await.expect("t"), TransitionOutcome::Applied(r) if r.status == Status::Approved));
    assert!(matches!(s.transition(id, &approve).await.expect("t"), TransitionOutcome::AlreadyIn(_)));
    let dup = Transition::new(&[Status::Received], Status::Duplicate, "t");
    assert!(matches!(s.transition(id, &dup).await.expect("t"), TransitionOutcome::Refused(r) if r.status == Status::Approved));
    assert_eq!(s.transition(Uuid::new_v4(), &dup).await.expect("t"), TransitionOutcome::NotFound);
    let back = Transition::new(&[Status::Approved], Status::Received, "t");
    assert!(matches!(s.transition(id, &back).await.expect("t"), TransitionOutcome::Refused(_)), "never backwards");
    let mut issue = Transition::new(&[Status::Approved], Status::CouponIssued, "coupon");
    issue.coupon_code = Some("CODE-1".into());
    assert!(matches!(s.transition(id, &issue).await.expect("t"), TransitionOutcome::Applied(_)));
    let mut again = issue.clone();
    again.coupon_code = Some("CODE-2".into());
    assert!(matches!(s.transition(id, &again).await.expect("t"), TransitionOutcome::AlreadyIn(r) if r.coupon_code.as_deref() == Some("CODE-1")));
    let rec = s.get(id).await.expect("get").expect("record");
    assert_eq!(rec.coupon_code.as_deref(), Some("CODE-1"), "a replay never changes the coupon");
    assert_eq!(rec.history.iter().map(|h| h.status).collect::<Vec<_>>(), [Status::Received, Status::Approved, Status::CouponIssued]);
}

/// Many tasks race to move one record: exactly one wins, and the history records one move.
pub async fn status_racing_transitions(s: Arc<dyn StatusStore>, racers: usize) {
    for _ in 0..5 {
        let id = Uuid::new_v4();
        s.create(&ApplicationRecord::received(id, "p", Utc::now()), None).await.expect("create");
        let targets = [Status::Approved, Status::Duplicate, Status::NeedsReview];
        let tasks: Vec<_> = (0..racers)
            .map(|i| {
                let s = s.clone();
                let to = targets[i % targets.len()];
                tokio::spawn(async move { s.transition(id, &Transition::new(&[Status::Received], to, &format!("w{i}"))).await })
            })
            .collect();
        let mut applied = 0;
        for t in tasks {
            if matches!(t.await.expect("join").expect("transition"), TransitionOutcome::Applied(_)) {
                applied += 1;
            }
        }
        assert_eq!(applied, 1);
        let rec = s.get(id).await.expect("get").expect("rec");
        assert_eq!(rec.history.len(), 2, "one move recorded: {:?}", rec.history);
    }
}

/// Claims (one owner per key, per namespace, released only by the owner), `claim_many`, a claim
/// handed on (`reassign`), the status listing (oldest move first, limited) and the per-status
/// counts.
pub async fn status_claims_listing_and_counts(s: Arc<dyn StatusStore>) {
    assert_eq!(s.claim("ns", "k", "a").await.expect("claim"), Claim::Won);
    assert_eq!(s.claim("ns", "k", "a").await.expect("claim"), Claim::Won, "same owner again");
    assert_eq!(s.claim("ns", "k", "b").await.expect("claim"), Claim::Held { owner: "a".into() });
    assert_eq!(s.claim("other", "k", "b").await.expect("claim"), Claim::Won, "namespaces are separate");
    assert!(!s.release("ns", "k", "b").await.expect("release"), "only the owner releases");
    assert!(s.release("ns", "k", "a").await.expect("release"));
    assert_eq!(s.claim("ns", "k", "b").await.expect("claim"), Claim::Won);
    let many = s.claim_many("ns", &["k".into(), "k2".into(), "k3".into()], "c").await.expect("claim_many");
    assert_eq!(many, vec![Claim::Held { owner: "b".into() }, Claim::Won, Claim::Won]);
    assert_eq!(s.claimed_by("ns", "k").await.expect("claimed_by"), Some("b".into()));
    assert_eq!(s.claimed_by("ns", "k3").await.expect("claimed_by"), Some("c".into()));
    assert_eq!(s.claimed_by("ns", "free").await.expect("claimed_by"), None);
    assert_eq!(s.claimed_by("ns", "free").await.expect("claimed_by"), None, "looking never claims");
    assert_eq!(s.claim("ns", "free", "d").await.expect("claim"), Claim::Won);
    let ttl = Duration::from_secs(600);
    assert_eq!(s.claim_expiring("spent", "p1", "x", ttl).await.expect("claim_expiring"), Claim::Won);
    assert_eq!(s.claim_expiring("spent", "p1", "x", ttl).await.expect("claim_expiring"), Claim::Won, "same owner");
    assert_eq!(
        s.claim_expiring("spent", "p1", "y", ttl).await.expect("claim_expiring"),
        Claim::Held { owner: "x".into() }
    );
    assert_eq!(s.claimed_by("spent", "p1").await.expect("claimed_by"), Some("x".into()));
    // Handing a claim on: only from its owner (or a free key), never from someone else's.
    assert_eq!(s.claim("sent", "a1", "pending").await.expect("claim"), Claim::Won);
    assert_eq!(s.reassign("sent", "a1", "pending", "sent").await.expect("reassign"), Claim::Won);
    assert_eq!(s.claimed_by("sent", "a1").await.expect("claimed_by"), Some("sent".into()));
    assert_eq!(s.reassign("sent", "a1", "pending", "other").await.expect("reassign"), Claim::Held { owner: "sent".into() });
    assert_eq!(s.reassign("sent", "a1", "sent", "sent").await.expect("reassign"), Claim::Won, "to itself");
    assert_eq!(s.reassign("sent", "free", "pending", "sent").await.expect("reassign"), Claim::Won, "a free key is taken");
    assert_eq!(s.claimed_by("sent", "free").await.expect("claimed_by"), Some("sent".into()));

    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = Uuid::new_v4();
        s.create(&ApplicationRecord::received(id, "p", Utc::now()), None).await.expect("create");
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for id in [ids[1], ids[0]] {
        s.transition(id, &Transition::new(&[Status::Received], Status::NeedsReview, "t")).await.expect("t");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let review: Vec<Uuid> = s.list_by_status(Status::NeedsReview, 10).await.expect("list").iter().map(|r| r.application_id).collect();
    assert_eq!(review, vec![ids[1], ids[0]]);
    let received: Vec<Uuid> = s.list_by_status(Status::Received, 2).await.expect("list").iter().map(|r| r.application_id).collect();
    assert_eq!(received, vec![ids[2], ids[3]], "oldest first, limited");
    let counts = s.count_by_status().await.expect("counts");
    assert!(counts.contains(&(Status::Received, 3)) && counts.contains(&(Status::NeedsReview, 2)), "{counts:?}");
}

/// Compare-and-set claims and leases: a lease is taken when free or run out, renewed by its
/// holder, refused to others while it runs, ended only by its holder; racing takers of one key
/// get one winner.
pub async fn status_leases(s: Arc<dyn StatusStore>, racers: usize) {
    use crate::{Lease, LeaseOutcome};
    assert!(s.replace_claim("cas", "k", None, "a").await.expect("cas"), "free: taken");
    assert!(!s.replace_claim("cas", "k", None, "b").await.expect("cas"), "held: not taken");
    assert!(!s.replace_claim("cas", "k", Some("x"), "b").await.expect("cas"), "wrong expectation");
    assert!(s.replace_claim("cas", "k", Some("a"), "b").await.expect("cas"));
    assert_eq!(s.claimed_by("cas", "k").await.expect("claimed_by"), Some("b".into()));

    let now = Utc::now();
    let min = chrono::Duration::minutes(1);
    let won = |holder: &str, until| LeaseOutcome::Won(Lease { holder: holder.into(), until });
    let until = |t: chrono::DateTime<Utc>| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).expect("ms");
    let t1 = until(now + min);
    assert_eq!(s.take_lease("lease", "case", "alice", now, t1).await.expect("lease"), won("alice", t1));
    assert_eq!(
        s.take_lease("lease", "case", "bob", now, until(now + min * 2)).await.expect("lease"),
        LeaseOutcome::Held(Lease { holder: "alice".into(), until: t1 }),
        "someone else's running lease is refused"
    );
    let t2 = until(now + min * 3);
    assert_eq!(s.take_lease("lease", "case", "alice", now, t2).await.expect("lease"), won("alice", t2), "renewed");
    assert_eq!(s.lease_of("lease", "case").await.expect("lease_of").map(|l| l.until), Some(t2));
    let later = now + min * 4;
    let t3 = until(later + min);
    assert_eq!(s.take_lease("lease", "case", "bob", later, t3).await.expect("lease"), won("bob", t3), "a run-out lease is taken over");
    assert!(!s.end_lease("lease", "case", "alice").await.expect("end"), "alice's lease is gone");
    assert!(s.end_lease("lease", "case", "bob").await.expect("end"));
    assert_eq!(s.lease_of("lease", "case").await.expect("lease_of"), None);

    // Racers for one expired lease: one wins.
    let stale = until(now - min);
    assert_eq!(s.take_lease("lease", "race", "old", now - min * 2, stale).await.expect("lease"), won("old", stale));
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.take_lease("lease", "race", &format!("r{i}"), now, now + min).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.expect("join").expect("lease"), LeaseOutcome::Won(_)) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// The reference index (`crate::reference`): a reference is claimed once per application, found
/// again by a retry, resolved back to its application, kept per program, and a candidate another
/// application holds is skipped.
pub async fn reference_index(s: Arc<dyn StatusStore>) {
    use crate::reference::{assign, candidate, namespace, resolve};
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let ra = assign(&*s, "p", a).await.expect("assign");
    assert_eq!(assign(&*s, "p", a).await.expect("assign again"), ra, "a retry finds the same reference");
    assert_eq!(resolve(&*s, "p", &ra).await.expect("resolve"), Some(a));
    assert_eq!(resolve(&*s, "other", &ra).await.expect("resolve"), None, "references are per program");
    let rb = assign(&*s, "p", b).await.expect("assign");
    assert_ne!(ra, rb);
    assert_eq!(resolve(&*s, "p", &rb).await.expect("resolve"), Some(b));

    // Another application already holds c's first candidates: c gets the next free one.
    let c = Uuid::new_v4();
    let taken: Vec<_> = (0..3).filter_map(|k| candidate(c, k)).collect();
    for r in &taken {
        assert_eq!(s.claim(&namespace("p"), r.as_str(), &b.to_string()).await.expect("claim"), Claim::Won);
    }
    let rc = assign(&*s, "p", c).await.expect("assign");
    assert!(!taken.contains(&rc), "{rc:?} was taken");
    assert_eq!(resolve(&*s, "p", &rc).await.expect("resolve"), Some(c));
    assert_eq!(resolve(&*s, "p", &taken[0]).await.expect("resolve"), Some(b), "the holder keeps its claim");
}

/// Many owners race for one key: exactly one wins.
pub async fn status_racing_claims(s: Arc<dyn StatusStore>, racers: usize) {
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.claim("coupon", "c-1", &format!("owner{i}")).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("join").expect("claim") == Claim::Won {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// Units of work: an accepted application leaves its documents, record and key durable and its
/// event published once; a reused idempotency key writes and publishes nothing; a transition
/// publishes only when applied. `ports` may be the embedded store's or [`crate::Ports::sequential`]
/// over production adapters; the topic and group are fresh per call.
pub async fn units_accept_and_transition(ports: crate::Ports) {
    use crate::{Acceptance, Document, Publication};
    let topic = format!("contract.units.{}", Uuid::new_v4().simple());
    let mut consumer = ports.bus.subscribe(&format!("{topic}.group"), &[topic.as_str()]).await.expect("subscribe");
    let doc = |text: &str| Document { content_type: "application/pdf".into(), sha256: "00".repeat(32), bytes: bytes::Bytes::from(text.to_owned()) };
    let acceptance = |id: Uuid, fingerprint: &str| Acceptance {
        documents: vec![(format!("contract/{id}/document"), doc("document")), (format!("contract/{id}/event"), doc("event"))],
        record: ApplicationRecord::received(id, "p", Utc::now()),
        idempotency: Some(IdempotencyClaim { key: format!("units-{topic}"), fingerprint: fingerprint.into() }),
        event: Publication { topic: topic.clone(), key: id.as_bytes().to_vec(), payload: id.to_string().into_bytes() },
    };

    let first = Uuid::new_v4();
    let accepted = ports.units.accept(&acceptance(first, "f1")).await.expect("accept");
    assert_eq!(accepted.outcome, CreateOutcome::Created);
    assert_eq!(accepted.published, Ok(()));
    assert_eq!(ports.status.get(first).await.expect("get").map(|r| r.status), Some(Status::Received));
    let stored = ports.documents.get(&format!("contract/{first}/document")).await.expect("doc").expect("document stored");
    assert_eq!(stored.bytes, bytes::Bytes::from_static(b"document"));
    assert!(ports.documents.get(&format!("contract/{first}/event")).await.expect("doc").is_some());

    // A retry with the same key (a new id, as intake mints one per attempt) writes nothing.
    let retry = Uuid::new_v4();
    let again = ports.units.accept(&acceptance(retry, "f1")).await.expect("accept");
    assert_eq!(again.outcome, CreateOutcome::Existing { application_id: first, same_request: true });
    let other = ports.units.accept(&acceptance(Uuid::new_v4(), "f2")).await.expect("accept");
    assert_eq!(other.outcome, CreateOutcome::Existing { application_id: first, same_request: false });
    assert!(ports.status.get(retry).await.expect("get").is_none(), "a replay creates no record");

    let approve = Transition::new(&[Status::Received], Status::Approved, "contract");
    let then = Publication { topic: topic.clone(), key: first.as_bytes().to_vec(), payload: b"approved".to_vec() };
    assert!(matches!(ports.units.transition_and_publish(first, &approve, &then).await.expect("t"), TransitionOutcome::Applied(_)));
    assert!(matches!(ports.units.transition_and_publish(first, &approve, &then).await.expect("t"), TransitionOutcome::AlreadyIn(_)));
    let dup = Transition::new(&[Status::Received], Status::Duplicate, "contract");
    assert!(matches!(ports.units.transition_and_publish(first, &dup, &then).await.expect("t"), TransitionOutcome::Refused(_)));
    assert_eq!(ports.units.transition_and_publish(retry, &dup, &then).await.expect("t"), TransitionOutcome::NotFound);

    // Exactly two messages: the accepted event, then the one applied move.
    let mut seen = Vec::new();
    while let Some(m) = consumer.poll(Duration::from_millis(if seen.len() < 2 { 10_000 } else { 1_000 })).await.expect("poll") {
        seen.push(m.payload);
    }
    assert_eq!(seen, vec![first.to_string().into_bytes(), b"approved".to_vec()]);
}

/// A consumer's polls may be dropped half-way (the stage runner polls inside `select!`): every
/// message published still comes out of some completed poll, none is taken and lost. Publishes
/// `n` messages to `topic` and reads them with polls that are abandoned whenever they are not
/// ready at once.
pub async fn consumer_polls_are_cancel_safe(bus: Arc<dyn EventBus>, topic: &str, n: usize) {
    for i in 0..n {
        bus.publish(topic, format!("k{}", i % 7).as_bytes(), format!("m{i}").as_bytes()).await.expect("publish");
    }
    let mut c = bus.subscribe("cancel-safe", &[topic]).await.expect("subscribe");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut abandoned = 0u32;
    while seen.len() < n && tokio::time::Instant::now() < deadline {
        let polled = tokio::select! {
            biased;
            batch = c.poll_batch(64, Duration::from_millis(100)) => Some(batch.expect("poll")),
            () = std::future::ready(()) => None,
        };
        match polled {
            Some(batch) => {
                for m in batch {
                    c.commit(&m).await.expect("commit");
                    seen.insert(String::from_utf8_lossy(&m.payload).into_owned());
                }
            }
            None => abandoned += 1,
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(seen.len(), n, "messages taken by abandoned polls were lost ({abandoned} polls abandoned)");
}
