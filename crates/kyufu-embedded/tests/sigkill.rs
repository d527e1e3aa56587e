//! The durability promise itself: a child process writes through every port, reports the writes as
//! acknowledged, and is killed with SIGKILL; the parent reopens the data directory and finds all of
//! them. The child is this same test binary, re-run with an environment variable naming the directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use kyufu_domain::Status;
use kyufu_embedded::EmbeddedStore;
use kyufu_ports::{ApplicationRecord, Claim, Document, IdempotencyClaim, Transition};
use uuid::Uuid;

const CHILD_DIR: &str = "KYUFU_EMBEDDED_SIGKILL_DIR";
const ACKED: &str = "KYUFU-ACKED";
const APP_ID: &str = "6f1c1f6e-8d1e-4c59-9d6a-3a1f4a0f2b11";

/// Runs only as the child of `acknowledged_writes_survive_sigkill`; a no-op otherwise.
#[tokio::test]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
async fn sigkill_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let store = EmbeddedStore::open(std::path::Path::new(&dir)).expect("open");
    let bus = store.bus();
    for i in 0..3u32 {
        bus.publish("t", b"k", &i.to_be_bytes()).await.expect("publish");
    }
    let mut c = bus.subscribe("g", &["t"]).await.expect("subscribe");
    let m = c.poll(Duration::from_secs(5)).await.expect("poll").expect("message");
    c.commit(&m).await.expect("commit");
    let id: Uuid = APP_ID.parse().expect("uuid");
    let claim = IdempotencyClaim { key: "idem".into(), fingerprint: "fp".into() };
    let s = store.status_store();
    s.create(&ApplicationRecord::received(id, "p", Utc::now()), Some(&claim)).await.expect("create");
    s.transition(id, &Transition::new(&[Status::Received], Status::NeedsReview, "child")).await.expect("transition");
    assert_eq!(s.claim("ns", "k", "child").await.expect("claim"), Claim::Won);
    let bytes = b"%PDF".to_vec().into();
    let doc = Document { content_type: "application/pdf".into(), sha256: "0".repeat(64), bytes };
    store.document_store().put("doc", &doc).await.expect("put");
    println!("{ACKED}");
    std::io::Write::flush(&mut std::io::stdout()).expect("flush stdout");
    // Wait to be killed; never exit cleanly, so nothing gets a chance to flush on the way out.
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("the parent should have killed this process");
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["sigkill_child_writer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    // `contains`: libtest may print "test name ... " on the same line first.
    let acked = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains(ACKED));
    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    let status = child.wait().expect("wait");
    assert!(acked, "the child never acknowledged its writes (exit: {status})");
    assert!(!status.success(), "the child was killed, not finished: {status}");

    let store = EmbeddedStore::open(dir.path()).expect("reopen after SIGKILL");
    let mut c = store.bus().subscribe("g", &["t"]).await.expect("subscribe");
    let m = c.poll(Duration::from_secs(1)).await.expect("poll").expect("uncommitted message");
    assert_eq!(m.offset, 1, "offset 0 was committed, 1 and 2 were not");
    let id: Uuid = APP_ID.parse().expect("uuid");
    let s = store.status_store();
    assert_eq!(s.get(id).await.expect("get").expect("record").status, Status::NeedsReview);
    let claim = IdempotencyClaim { key: "idem".into(), fingerprint: "fp".into() };
    let again = s.create(&ApplicationRecord::received(Uuid::new_v4(), "p", Utc::now()), Some(&claim)).await;
    assert_eq!(again, Ok(kyufu_ports::CreateOutcome::Existing { application_id: id, same_request: true }));
    assert_eq!(s.claim("ns", "k", "parent").await.expect("claim"), Claim::Held { owner: "child".into() });
    assert_eq!(store.document_store().get("doc").await.expect("get").expect("doc").bytes.as_ref(), b"%PDF");
}
