//! The embedded adapters against the port contracts: ordering, consumer groups, rebalancing,
//! at-least-once redelivery, durability across reopen, atomic transitions and claims.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use kyufu_domain::Status;
use kyufu_embedded::EmbeddedStore;
use kyufu_ports::{AdapterError, ApplicationRecord, Claim, Document, Transition};
use uuid::Uuid;

const T: Duration = Duration::from_millis(300);

#[tokio::test]
async fn messages_keep_order_per_key_and_every_group_sees_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let bus = store.bus();
    for i in 0..20u32 {
        bus.publish("t", format!("key{}", i % 3).as_bytes(), &i.to_be_bytes()).await.expect("publish");
    }
    for group in ["a", "b"] {
        let mut c = bus.subscribe(group, &["t"]).await.expect("subscribe");
        let mut seen = Vec::new();
        while let Some(m) = c.poll(T).await.expect("poll") {
            seen.push((m.key.clone(), u32::from_be_bytes(m.payload.as_slice().try_into().expect("4 bytes")), m.partition));
            c.commit(&m).await.expect("commit");
        }
        assert_eq!(seen.len(), 20, "group {group}");
        for k in 0..3 {
            let key = format!("key{k}").into_bytes();
            let of_key: Vec<_> = seen.iter().filter(|(kk, _, _)| *kk == key).collect();
            let values: Vec<u32> = of_key.iter().map(|(_, v, _)| *v).collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            assert_eq!(values, sorted, "per-key order for {k}");
            let partitions: HashSet<u32> = of_key.iter().map(|(_, _, p)| *p).collect();
            assert_eq!(partitions.len(), 1, "one key, one partition");
        }
    }
}

#[tokio::test]
async fn poll_wakes_on_publish_and_times_out_when_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let bus = store.bus();
    let mut c = bus.subscribe("g", &["t"]).await.expect("subscribe");
    assert!(c.poll(Duration::from_millis(50)).await.expect("poll").is_none());
    let b2 = bus.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        b2.publish("t", b"k", b"late").await.expect("publish");
    });
    let m = c.poll(Duration::from_secs(5)).await.expect("poll").expect("woken by publish");
    assert_eq!(m.payload, b"late");
}

#[tokio::test]
async fn members_split_partitions_and_a_leaver_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let bus = store.bus();
    for i in 0..40u32 {
        bus.publish("t", format!("k{i}").as_bytes(), &i.to_be_bytes()).await.expect("publish");
    }
    let mut a = bus.subscribe("g", &["t"]).await.expect("a");
    let mut b = bus.subscribe("g", &["t"]).await.expect("b");
    let mut got_a = Vec::new();
    let mut parts_a = HashSet::new();
    // a processes and commits 5 messages, b takes 3 without committing, then b leaves.
    for _ in 0..5 {
        let m = a.poll(T).await.expect("poll").expect("a has work");
        parts_a.insert(m.partition);
        got_a.push(u32::from_be_bytes(m.payload.as_slice().try_into().expect("4")));
        a.commit(&m).await.expect("commit");
    }
    let mut parts_b = HashSet::new();
    let mut uncommitted_b = Vec::new();
    for _ in 0..3 {
        let m = b.poll(T).await.expect("poll").expect("b has work");
        parts_b.insert(m.partition);
        uncommitted_b.push(u32::from_be_bytes(m.payload.as_slice().try_into().expect("4")));
    }
    assert!(parts_a.is_disjoint(&parts_b), "members share no partition: {parts_a:?} {parts_b:?}");
    drop(b);
    // a now owns everything and receives the rest, including b's uncommitted messages.
    while let Some(m) = a.poll(T).await.expect("poll") {
        got_a.push(u32::from_be_bytes(m.payload.as_slice().try_into().expect("4")));
        a.commit(&m).await.expect("commit");
    }
    let all: HashSet<u32> = got_a.iter().copied().collect();
    assert_eq!(all.len(), 40, "every message processed after the rebalance");
    for v in uncommitted_b {
        assert!(all.contains(&v), "b's uncommitted {v} redelivered");
    }
}

#[tokio::test]
async fn committed_offsets_and_data_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Uuid::new_v4();
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let bus = store.bus();
        for i in 0..6u32 {
            bus.publish("t", b"same", &i.to_be_bytes()).await.expect("publish");
        }
        let mut c = bus.subscribe("g", &["t"]).await.expect("sub");
        for _ in 0..4 {
            let m = c.poll(T).await.expect("poll").expect("msg");
            if m.offset < 2 {
                c.commit(&m).await.expect("commit");
            }
        }
        store.status_store().create(&ApplicationRecord::received(id, "p", Utc::now()), None).await.expect("create");
        let doc = Document { content_type: "image/png".into(), sha256: "ab".repeat(32), bytes: b"png".to_vec().into() };
        store.document_store().put("d", &doc).await.expect("put");
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    let mut c = store.bus().subscribe("g", &["t"]).await.expect("sub");
    let m = c.poll(T).await.expect("poll").expect("redelivered");
    assert_eq!(m.offset, 2, "resumes right after the last commit; uncommitted 2 and 3 come again");
    let rec = store.status_store().get(id).await.expect("get").expect("record survived");
    assert_eq!(rec.status, Status::Received);
    assert_eq!(store.document_store().get("d").await.expect("get").expect("doc").bytes.as_ref(), b"png");
}

#[tokio::test]
async fn idempotent_create_and_conditional_transitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let s = store.status_store();
    kyufu_ports::contract::status_create_and_transition(s).await;
}

#[tokio::test]
async fn units_of_work_commit_documents_record_and_event_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let before = store.io_stats();
    kyufu_ports::contract::units_accept_and_transition(store.ports()).await;
    // The same checks through the sequence the production adapters use.
    let seq = kyufu_ports::Ports::sequential(store.bus(), store.status_store(), store.document_store());
    kyufu_ports::contract::units_accept_and_transition(seq).await;
    let after = store.io_stats();
    assert!(after.syncs > before.syncs && after.commits > before.commits, "the backend counts fsyncs: {before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs_and_each_sees_its_own_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let s = store.status_store();
    let before = store.io_stats();
    // 400 creates and 400 claims racing in pairs for 200 keys, all at once.
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let id = Uuid::new_v4();
                s.create(&ApplicationRecord::received(id, "p", Utc::now()), None).await.expect("create");
                let claim = s.claim("group-commit", &format!("k{}", i / 2), &format!("o{i}")).await.expect("claim");
                (id, claim)
            })
        })
        .collect();
    let mut won = 0;
    let mut ids = Vec::new();
    for t in tasks {
        let (id, claim) = t.await.expect("join");
        ids.push(id);
        if claim == Claim::Won {
            won += 1;
        }
    }
    assert_eq!(won, 200, "each key has one owner even inside one batch");
    let after = store.io_stats();
    let ops = after.operations - before.operations;
    assert_eq!(ops, 800);
    assert!(after.commits - before.commits < ops, "operations were grouped into fewer commits: {before:?} -> {after:?}");
    drop(s);
    drop(store);
    // Everything answered is durable: reopen and read every record back.
    let store = EmbeddedStore::open(dir.path()).expect("reopen right after drop");
    for id in ids {
        assert!(store.status_store().get(id).await.expect("get").is_some());
    }
}

#[tokio::test]
async fn racing_transitions_have_exactly_one_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let s = store.status_store();
    kyufu_ports::contract::status_racing_transitions(s, 4).await;
}

#[tokio::test]
async fn claims_listing_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let s = store.status_store();
    kyufu_ports::contract::status_claims_listing_and_counts(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    kyufu_ports::contract::status_leases(store.status_store(), 8).await;
}

#[tokio::test]
async fn reference_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    kyufu_ports::contract::reference_index(store.status_store()).await;
}

#[tokio::test]
async fn documents_are_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let d = store.document_store();
    let doc = |b: &[u8]| Document { content_type: "application/pdf".into(), sha256: "0".repeat(64), bytes: b.to_vec().into() };
    d.put("x", &doc(b"first")).await.expect("put");
    assert_eq!(d.put("x", &doc(b"second")).await, Err(AdapterError::AlreadyExists));
    let got = d.get("x").await.expect("get").expect("doc");
    assert_eq!(got.bytes.as_ref(), b"first");
    assert_eq!(got.content_type, "application/pdf");
    assert!(d.get("missing").await.expect("get").is_none());
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = EmbeddedStore::open(dir.path()).expect("open");
    let second = EmbeddedStore::open(dir.path());
    assert!(matches!(second, Err(AdapterError::Unavailable(m)) if m.contains("one process")));
}

#[tokio::test]
async fn a_rebalance_keeps_held_partitions_going_and_restarts_moved_ones_at_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One partition: the first member keeps it when a second joins, the second gets it when the
    // first leaves.
    let store = EmbeddedStore::open_with_partitions(dir.path(), 1).expect("open");
    let bus = store.bus();
    for i in 0..3u32 {
        bus.publish("t", b"k", &i.to_be_bytes()).await.expect("publish");
    }
    let mut a = bus.subscribe("g", &["t"]).await.expect("a");
    let first = a.poll(T).await.expect("poll").expect("offset 0");
    assert_eq!(first.offset, 0);
    let mut b = bus.subscribe("g", &["t"]).await.expect("b");
    assert_eq!(a.poll(T).await.expect("poll").expect("a keeps the partition").offset, 1, "no rewind on a join");
    assert!(b.poll(Duration::from_millis(50)).await.expect("poll").is_none(), "b owns nothing");
    drop(a);
    let again = b.poll(T).await.expect("poll").expect("moved partition restarts at the commit");
    assert_eq!(again.offset, 0, "a's uncommitted messages come again");
    assert_eq!(again.payload, first.payload);
}

#[tokio::test]
async fn members_of_one_group_on_different_topics_each_get_their_whole_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let bus = store.bus();
    let mut x = bus.subscribe("g", &["x"]).await.expect("x");
    let _y = bus.subscribe("g", &["y"]).await.expect("y");
    for i in 0..16u32 {
        bus.publish("x", format!("k{i}").as_bytes(), &i.to_be_bytes()).await.expect("publish");
    }
    let mut seen = HashSet::new();
    while let Some(m) = x.poll(T).await.expect("poll") {
        seen.insert(m.payload);
    }
    assert_eq!(seen.len(), 16, "a member alone on its topic owns all of its partitions");
}

#[tokio::test]
async fn lag_counts_uncommitted_messages_and_commits_never_go_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open_with_partitions(dir.path(), 1).expect("open");
        let bus = store.bus();
        for i in 0..10u32 {
            bus.publish("t", b"k", &i.to_be_bytes()).await.expect("publish");
        }
        let mut c = bus.subscribe("g", &["t"]).await.expect("sub");
        assert_eq!(c.lag().await.expect("lag"), Some(10), "known before the first poll");
        let mut msgs = Vec::new();
        for _ in 0..6 {
            msgs.push(c.poll(T).await.expect("poll").expect("msg"));
        }
        assert_eq!(c.lag().await.expect("lag"), Some(10), "delivery alone is not progress");
        c.commit(&msgs[5]).await.expect("commit");
        c.commit(&msgs[1]).await.expect("commit older");
        assert_eq!(c.lag().await.expect("lag"), Some(4), "the older commit did not move the offset back");
    }
    let store = EmbeddedStore::open_with_partitions(dir.path(), 1).expect("reopen");
    let mut c = store.bus().subscribe("g", &["t"]).await.expect("sub");
    assert_eq!(c.poll(T).await.expect("poll").expect("msg").offset, 6);
}

#[tokio::test]
async fn concurrent_publishers_never_share_an_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let bus = store.bus();
    let tasks: Vec<_> = (0..40u32)
        .map(|i| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.publish("t", b"one-key", &i.to_be_bytes()).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("publish");
    }
    let mut c = bus.subscribe("g", &["t"]).await.expect("sub");
    let mut offsets = Vec::new();
    let mut payloads = HashSet::new();
    while let Some(m) = c.poll(T).await.expect("poll") {
        offsets.push(m.offset);
        payloads.insert(m.payload);
    }
    assert_eq!(offsets, (0..40).collect::<Vec<u64>>(), "one partition, dense offsets in order");
    assert_eq!(payloads.len(), 40, "no message overwrote another");
}

#[tokio::test]
async fn racing_claims_have_exactly_one_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let s = store.status_store();
    kyufu_ports::contract::status_racing_claims(s, 8).await;
}

#[tokio::test]
async fn status_index_and_counts_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        let s = store.status_store();
        s.create(&ApplicationRecord::received(a, "p", Utc::now()), None).await.expect("create");
        s.create(&ApplicationRecord::received(b, "p", Utc::now()), None).await.expect("create");
        s.transition(b, &Transition::new(&[Status::Received], Status::Duplicate, "t")).await.expect("t");
        assert_eq!(s.claim("ns", "k", "me").await.expect("claim"), Claim::Won);
    }
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    let s = store.status_store();
    let listed = s.list_by_status(Status::Duplicate, 10).await.expect("list");
    let dup: Vec<Uuid> = listed.iter().map(|r| r.application_id).collect();
    assert_eq!(dup, vec![b]);
    let counts = s.count_by_status().await.expect("counts");
    assert!(counts.contains(&(Status::Received, 1)) && counts.contains(&(Status::Duplicate, 1)), "{counts:?}");
    assert_eq!(s.claim("ns", "k", "other").await.expect("claim"), Claim::Held { owner: "me".into() });
}
