//! Secrets rotate without breaking what applicants hold and without letting old keys in: the real
//! `kyufu gateway` and `kyufu intake` processes restarted with rotated pass keys and status-token
//! secrets, some of them read from files (`NAME_FILE`), never from the repository.
//!
//! 1. Intake knows the gateway's pass key `k1` and a new `k2`: a pass signed with `k1` is accepted.
//! 2. Intake restarted with only `k2`: a fresh pass from the gateway (still signing with `k1`) is
//!    refused, and nothing is stored.
//! 3. The status token handed out under secret S1 keeps working after intake restarts with
//!    `S2,S1`; new tokens come from S2; after a restart with only S2 the old token finds nothing
//!    (the same 404 as an unknown application), the new one still works.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const K1: &str = "k1:0123456789abcdef0123456789abcdef0123456789abcdef";
const K2: &str = "k2:fedcba9876543210fedcba9876543210fedcba9876543210";
const S1: &str = "status-secret-one-for-the-rotation-test-0123";
const S2: &str = "status-secret-two-for-the-rotation-test-4567";
const IDENTITY: &str = "identity-secret-for-the-rotation-test-012345";

fn kyufu(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Kill {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("secrets.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(args)
        .env_remove("KYUFU_PASS_KEYS")
        .env_remove("KYUFU_STATUS_SECRET")
        .env_remove("KYUFU_IDENTITY_SECRET")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn kyufu");
    Kill(child)
}

/// A secret written to a private file, for the `NAME_FILE` form.
fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).expect("write secret file");
    path.to_str().expect("utf-8 path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_keys_and_status_secrets_rotate_without_breaking_links_or_letting_old_keys_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path").to_owned();
    let registry = dir.path().join("registry.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(["registry", "generate", "--households", "40", "--out"])
        .arg(&registry)
        .status()
        .expect("registry generate");
    assert!(status.success());
    let fams = families(&read_registry(&registry), chrono::Local::now().date_naive());
    assert!(fams.len() >= 4, "registry too small");

    let (gw_port, intake_port) = (free_port(), free_port());
    let intake_addr = format!("127.0.0.1:{intake_port}");
    let gw_addr = format!("127.0.0.1:{gw_port}");
    let base = format!("http://{gw_addr}");
    // The gateway signs with k1 throughout; its key comes from a file.
    let gateway_env = [
        ("KYUFU_PASS_KEYS_FILE", secret_file(dir.path(), "gateway-pass-keys", K1)),
        ("KYUFU_STATUS_SECRET", S1.to_owned()),
        ("KYUFU_IDENTITY_SECRET", IDENTITY.to_owned()),
    ];
    let upstream = format!("http://{intake_addr}");
    let _gateway = kyufu(
        dir.path(),
        &["gateway", "--listen", &gw_addr, "--upstream", &upstream, "--secrets-file", "/nonexistent"],
        &gateway_env,
    );
    let start_intake = |pass_keys: &str, status_secret: &str| {
        let env = [
            ("KYUFU_PASS_KEYS", pass_keys.to_owned()),
            ("KYUFU_STATUS_SECRET_FILE", secret_file(dir.path(), "status-secret", status_secret)),
            ("KYUFU_IDENTITY_SECRET", IDENTITY.to_owned()),
        ];
        kyufu(dir.path(), &["intake", "--listen", &intake_addr, "--data-dir", &data, "--secrets-file", "/nonexistent"], &env)
    };
    let c = client();
    let submit_child = |i: usize| {
        let (c, base, app) = (c.clone(), base.clone(), application_json(&fams[i].0, &fams[i].1));
        async move {
            let pass = admit(&c, &base).await;
            submit(&c, &base, &pass, form(&app, png_document())).await
        }
    };
    let ids = |body: &serde_json::Value| {
        (body["application_id"].as_str().expect("id").to_owned(), body["status_token"].as_str().expect("token").to_owned())
    };

    // 1. Intake rolling out k2 while still accepting k1; status secret S1.
    let intake = start_intake(&format!("{K2},{K1}"), S1);
    wait_http_logged(&format!("{base}/healthz"), Some(&dir.path().join("secrets.log"))).await;
    wait_http_logged(&format!("http://{intake_addr}/healthz"), Some(&dir.path().join("secrets.log"))).await;
    let (code, body) = submit_child(0).await;
    assert_eq!(code, 202, "a k1 pass while k1 is still known: {body}");
    let (id_a, token_a) = ids(&body);
    assert_eq!(lookup(&c, &base, &id_a, &token_a).await.0, 200);
    drop(intake);

    // 3a. Status secret rotated to S2, S1 still accepted: the link already sent keeps working.
    let intake = start_intake(&format!("{K2},{K1}"), &format!("{S2},{S1}"));
    wait_http_logged(&format!("http://{intake_addr}/healthz"), Some(&dir.path().join("secrets.log"))).await;
    let (code, v) = lookup(&c, &base, &id_a, &token_a).await;
    assert_eq!(code, 200, "old link during rotation: {v}");
    let (code, body) = submit_child(1).await;
    assert_eq!(code, 202, "{body}");
    let (id_b, token_b) = ids(&body);
    drop(intake);

    // 2 and 3b. Rotation finished: only k2 and S2.
    let intake = start_intake(K2, S2);
    wait_http_logged(&format!("http://{intake_addr}/healthz"), Some(&dir.path().join("secrets.log"))).await;
    let (code, v) = lookup(&c, &base, &id_a, &token_a).await;
    let (unknown_code, unknown) = lookup(&c, &base, &uuid::Uuid::new_v4().to_string(), &token_a).await;
    assert_eq!((code, &v["code"]), (404, &unknown["code"]), "a dropped secret's token finds nothing, like an unknown id");
    assert_eq!(unknown_code, 404);
    let (code, v) = lookup(&c, &base, &id_b, &token_b).await;
    assert_eq!(code, 200, "a token from the new secret: {v}");
    let (code, body) = submit_child(2).await;
    assert_eq!((code, body["code"].as_str()), (403, Some("admission_invalid")), "a pass signed with the dropped key k1: {body}");
    drop(intake);

    // Nothing of the refused submission was stored: only the two accepted applications exist.
    let _worker = {
        let env = [
            ("KYUFU_PASS_KEYS", K2.to_owned()),
            ("KYUFU_STATUS_SECRET", S2.to_owned()),
            ("KYUFU_IDENTITY_SECRET", IDENTITY.to_owned()),
        ];
        let listen = format!("127.0.0.1:{}", free_port());
        let registry = registry.to_str().expect("utf-8 path");
        let args = ["worker", "dedupe", "--listen", &listen, "--data-dir", &data, "--registry", registry, "--secrets-file", "/nonexistent"];
        let w = kyufu(dir.path(), &args, &env);
        let metrics = format!("http://{listen}/metrics");
        wait_http_logged(&metrics, Some(&dir.path().join("secrets.log"))).await;
        let processed = || async {
            let text = reqwest::get(&metrics).await.expect("metrics").text().await.expect("text");
            let n: f64 = text
                .lines()
                .filter(|l| l.starts_with("kyufu_pipeline_messages_processed_total") && l.contains("dedupe"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            (n, text)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while processed().await.0 < 2.0 {
            assert!(Instant::now() < deadline, "dedupe did not process the two accepted applications");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Time for a third, wrongly published application to show up before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (n, text) = processed().await;
        assert_eq!(n, 2.0, "exactly the two accepted applications were published: {text}");
        w
    };
}

#[test]
fn a_status_secret_shorter_than_32_characters_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(["intake", "--listen", "127.0.0.1:0", "--data-dir", data, "--secrets-file", "/nonexistent"])
        .env("KYUFU_PASS_KEYS", K1)
        .env("KYUFU_IDENTITY_SECRET", IDENTITY)
        .env("KYUFU_STATUS_SECRET", format!("{S2},too-short"))
        .env_remove("KYUFU_STATUS_SECRET_FILE")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("KYUFU_STATUS_SECRET"), "{stderr}");
    assert!(!stderr.contains("too-short"), "the secret itself is not echoed: {stderr}");
}
