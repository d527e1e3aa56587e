//! Each role as its own process on the same data: `kyufu gateway` and `kyufu intake` accept an
//! application; then, with intake stopped (the embedded store admits one process at a time),
//! `kyufu worker dedupe`, `worker documents`, `worker idcheck` and `worker coupon` each run alone
//! and carry it forward through their own consumer groups; intake started again shows
//! `coupon_issued`. Then a second application goes the whole way through one `kyufu worker all`.

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
        // The tests send many children through one admission pass, more than a household's bound.
        .env("KYUFU_SUBMISSIONS_PER_PASS", "0")
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
        let _worker = worker_until_processed(dir.path(), &data, stage).await;
    }

    let intake = Kill(kyufu(dir.path(), &["intake", "--listen", &intake_addr, "--data-dir", &data]));
    wait_http(&format!("http://{intake_addr}/healthz")).await;
    let (code, v): (u16, Value) = lookup(&c, &base, &id, &token).await;
    assert_eq!(code, 200);
    assert_eq!(v["status"], "coupon_issued", "{v}");

    // Every stage in one process: a second application goes all the way through it.
    let (code, body) = submit(&c, &base, &pass, form(&application_json(&fams[1].0, &fams[1].1), png_document())).await;
    assert_eq!(code, 202, "{body}");
    let (id, token) = (body["application_id"].as_str().expect("id").to_owned(), body["status_token"].as_str().expect("t").to_owned());
    drop(intake);
    drop(worker_until_processed(dir.path(), &data, "all").await);
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

/// Runs `kyufu worker <stage>` until its metrics show the stage processed something (for `all`: the
/// last stage on the way to a coupon).
async fn worker_until_processed(dir: &std::path::Path, data: &str, stage: &str) -> Kill {
    let listen = format!("127.0.0.1:{}", free_port());
    let worker = Kill(kyufu(dir, &["worker", stage, "--listen", &listen, "--data-dir", data]));
    let metrics_url = format!("http://{listen}/metrics");
    wait_http(&metrics_url).await;
    let stage_label = if stage == "all" { "coupon" } else { stage };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(&metrics_url).await.expect("metrics").text().await.expect("text");
        let processed = text
            .lines()
            .filter(|l| l.starts_with("kyufu_pipeline_messages_processed_total") && l.contains(&format!("stage=\"{stage_label}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if processed > 0.0 {
            return worker;
        }
        assert!(Instant::now() < deadline, "{stage} processed nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
