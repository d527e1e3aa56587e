//! Each role as its own process on the same data: `kyufu gateway` and `kyufu intake` accept an
//! application; then, with intake stopped (the embedded store admits one process at a time),
//! `kyufu worker dedupe`, `worker documents`, `worker idcheck` and `worker coupon` each run alone and carry it
//! forward through their own consumer groups; intake started again shows `coupon_issued`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SECRETS: [(&str, &str); 3] = [
    ("KYUFU_PASS_KEYS", "k1:0123456789abcdef0123456789abcdef0123456789abcdef"),
    ("KYUFU_IDENTITY_SECRET", "identity-secret-for-the-roles-test-0123456789"),
    ("KYUFU_STATUS_SECRET", "status-secret-for-the-roles-test-0123456789ab"),
];

fn kyufu(dir: &std::path::Path, args: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("roles.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(args)
        .envs(SECRETS)
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn kyufu")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_runs_as_its_own_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let registry = dir.path().join("registry.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(["registry", "generate", "--households", "50", "--out"])
        .arg(&registry)
        .status()
        .expect("registry generate");
    assert!(status.success());

    let (gw_port, intake_port) = (free_port(), free_port());
    let intake_addr = format!("127.0.0.1:{intake_port}");
    let intake = Kill(kyufu(dir.path(), &["intake", "--listen", &intake_addr, "--data-dir", &data]));
    let gw_addr = format!("127.0.0.1:{gw_port}");
    let upstream = format!("http://{intake_addr}");
    let _gateway = Kill(kyufu(dir.path(), &["gateway", "--listen", &gw_addr, "--upstream", &upstream, "--secrets-file", "/nonexistent"]));
    let base = format!("http://{gw_addr}");
    wait_http(&format!("{base}/healthz")).await;
    wait_http(&format!("http://{intake_addr}/healthz")).await;

    let c = client();
    let fams = families(&read_registry(&registry), chrono::Local::now().date_naive());
    let pass = admit(&c, &base).await;
    let (code, body) = submit(&c, &base, &pass, form(&application_json(&fams[0].0, &fams[0].1), png_document())).await;
    assert_eq!(code, 202, "{body}");
    let (id, token) = (body["application_id"].as_str().expect("id").to_owned(), body["status_token"].as_str().expect("t").to_owned());
    drop(intake);

    // Each stage alone, in its own process, until its input is drained.
    for stage in ["dedupe", "documents", "idcheck", "coupon"] {
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        let _worker = Kill(kyufu(dir.path(), &["worker", stage, "--listen", &listen, "--data-dir", &data]));
        let metrics_url = format!("http://{listen}/metrics");
        wait_http(&metrics_url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = reqwest::get(&metrics_url).await.expect("metrics").text().await.expect("text");
            if text.lines().any(|l| l.starts_with("kyufu_pipeline_messages_processed_total") && l.contains(stage)) {
                break;
            }
            assert!(Instant::now() < deadline, "{stage} processed nothing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let _intake = Kill(kyufu(dir.path(), &["intake", "--listen", &intake_addr, "--data-dir", &data]));
    wait_http(&format!("http://{intake_addr}/healthz")).await;
    let (code, v): (u16, Value) = lookup(&c, &base, &id, &token).await;
    assert_eq!(code, 200);
    assert_eq!(v["status"], "coupon_issued", "{v}");

    // A worker for a stage that does not exist refuses to start, naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_kyufu")).args(["worker", "bogus", "--data-dir", &data]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}
