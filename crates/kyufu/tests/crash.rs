//! Killing the all-in-one process with SIGKILL in the middle of a stream of submissions and
//! starting it again loses no accepted application: every 202 reaches a settled status, the
//! expected one, and no coupon is issued twice.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_accepted_application() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--households", "400", "--relay-after-secs", "2"];
    let mut sys = System::start(dir.path(), &args);
    let base = sys.base.clone();
    let c = client();
    let registry = read_registry(&dir.path().join("registry.csv"));
    let fams = families(&registry, chrono::Utc::now().date_naive());
    assert!(fams.len() >= 150, "only {} families", fams.len());
    let fams: Vec<_> = fams.into_iter().take(150).collect();
    let pass = admit(&c, &base).await;

    // Submit from 4 concurrent senders; kill the process once 40 applications are accepted.
    let accepted: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (c, base, pass, fams, accepted, next) = (c.clone(), base.clone(), pass.clone(), fams.clone(), accepted.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= fams.len() {
                    return;
                }
                let app = application_json(&fams[i].0, &fams[i].1);
                let sent = c
                    .post(format!("{base}/api/v1/applications"))
                    .header("X-Admission-Pass", &pass)
                    .multipart(form(&app, png_document()))
                    .send()
                    .await;
                let Ok(resp) = sent else { return }; // the process died under us: not accepted
                if resp.status().as_u16() != 202 {
                    return;
                }
                let Ok(v) = resp.json::<Value>().await else { return };
                let id = v["application_id"].as_str().unwrap_or_default().to_owned();
                let token = v["status_token"].as_str().unwrap_or_default().to_owned();
                accepted.lock().await.push((id, token, i));
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = accepted.lock().await.len();
        if n >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} of 40 applications accepted within 120 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sys.kill();
    for s in senders {
        tokio::time::timeout(Duration::from_secs(60), s).await.expect("a sender still waiting 60 s after the kill").expect("no panic");
    }
    let accepted = accepted.lock().await.clone();
    eprintln!("accepted before the kill: {}", accepted.len());
    assert!(accepted.len() >= 40 && accepted.len() < 150, "kill came too late: {} accepted", accepted.len());

    // Restart on the same data and let the pipeline finish.
    let sys = System::start(dir.path(), &args);
    let base = sys.base.clone();
    let mut coupons = HashSet::new();
    for (id, token, i) in &accepted {
        let done = wait_settled(&c, &base, id, token, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "coupon_issued", "application {i} ({id}) ended as {done}");
        let coupon = done["coupon_code"].as_str().expect("coupon").to_owned();
        assert!(coupons.insert(coupon), "coupon issued twice");
    }
    // Every accepted child was distinct, so none may have turned into a duplicate.
    assert_eq!(coupons.len(), accepted.len());
}
