//! Operators steer the running waiting room with `kyufu admin`: a paused queue holds a newcomer
//! with the operator's message, resuming admits them; a wrong token changes nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn admin(sys_dir: &std::path::Path, url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(["admin", "--url", url, "--secrets-file"])
        .arg(sys_dir.join("secrets.json"))
        .args(["--operator", "test-operator"])
        .args(args)
        .output()
        .expect("run kyufu admin");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_message_and_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let review_port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let review = format!("127.0.0.1:{review_port}");
    let sys = System::start_with(dir.path(), &["--households", "50"], &review);
    let staff = format!("http://{review}");
    let c = client();

    let (ok, out) = admin(dir.path(), &staff, &["pause"]);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["paused"], true);
    // Paused without a message: the waiting room says so in the visitor's language.
    let early: Value = c.post(format!("{}/queue/join", sys.base)).send().await.expect("join").json().await.expect("json");
    let early = early["ticket"].as_str().expect("ticket").to_owned();
    for (lang, text) in [("ja", "受付を一時停止しています"), ("en", "Admission is paused")] {
        let page = c.get(format!("{}/wait?lang={lang}", sys.base)).header("X-Queue-Ticket", &early).send().await.expect("wait");
        let page = page.text().await.expect("html");
        assert!(page.contains(text), "{lang}: {page}");
        // The page records the notice the polls carry, so its script reloads it when they change.
        let polled: Value = c.get(format!("{}/queue/status", sys.base)).header("X-Queue-Ticket", &early).send().await.expect("poll").json().await.expect("json");
        let notice = polled["message"].as_str().expect("a paused queue's poll says so");
        assert!(page.contains(&format!("data-notice=\"{notice}\"")), "{lang}: {notice:?} in {page}");
    }
    let (ok, _) = admin(dir.path(), &staff, &["message", "ただいま混み合っています。順番は保たれます。"]);
    assert!(ok);

    let joined: Value = c.post(format!("{}/queue/join", sys.base)).send().await.expect("join").json().await.expect("json");
    assert_eq!(joined["state"], "waiting", "{joined}");
    assert_eq!(joined["message"], "ただいま混み合っています。順番は保たれます。");
    let ticket = joined["ticket"].as_str().expect("ticket").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still: Value = c.get(format!("{}/queue/status", sys.base)).header("X-Queue-Ticket", &ticket).send().await.expect("s").json().await.expect("j");
    assert_eq!(still["state"], "waiting", "paused admission admits no one");

    // A wrong token is refused and changes nothing.
    let resp = c.post(format!("{staff}/admin/v1/resume")).bearer_auth("not-the-token-at-all").send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 401);

    let (ok, out) = admin(dir.path(), &staff, &["resume"]);
    assert!(ok, "{out}");
    let mut admitted = false;
    for _ in 0..50 {
        let s: Value = c.get(format!("{}/queue/status", sys.base)).header("X-Queue-Ticket", &ticket).send().await.expect("s").json().await.expect("j");
        if s["state"] == "admitted" {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "resume admits the waiting visitor");
    let (ok, out) = admin(dir.path(), &staff, &["status"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("json");
    // Both waiting visitors, the early one first (fair order).
    assert_eq!((v["paused"].as_bool(), v["admitted"].as_u64()), (Some(false), Some(2)));
    let (ok, _) = admin(dir.path(), &staff, &["rate", "0", "0"]);
    assert!(ok);
}

/// `kyufu gateway` (the role, as run with several nodes) serves the admin API on its staff address
/// only, with the token from a mounted file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_role_serves_the_admin_api_on_its_staff_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let (public, staff) = (format!("127.0.0.1:{}", port()), format!("127.0.0.1:{}", port()));
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "gateway-role-admin-token-0123456789abcdef\n").expect("token file");
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(["gateway", "--listen", &public, "--admin-listen", &staff, "--secrets-file", "/nonexistent"])
        .env("KYUFU_PASS_KEYS", "k1:0123456789abcdef0123456789abcdef0123456789abcdef")
        .env("KYUFU_IDENTITY_SECRET", "identity-secret-for-the-admin-test-0123456789")
        .env("KYUFU_STATUS_SECRET", "status-secret-for-the-admin-test-0123456789ab")
        .env("KYUFU_ADMIN_TOKEN_FILE", &token_file)
        .env_remove("KYUFU_ADMIN_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let c = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.get(format!("http://{public}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "gateway never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cli = |token: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(["admin", "--url", &format!("http://{staff}"), "--token", token, "--operator", "test-operator"])
            .args(args)
            .output()
            .expect("run kyufu admin");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, _) = cli("not-the-token", &["pause"]);
    assert!(!ok, "a wrong token is refused");
    let (ok, out) = cli("gateway-role-admin-token-0123456789abcdef", &["pause"]);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["paused"], true);
    let joined: Value = c.post(format!("http://{public}/queue/join")).send().await.expect("join").json().await.expect("json");
    assert_eq!(joined["state"], "waiting", "paused: nobody is admitted: {joined}");
    let on_public = c.get(format!("http://{public}/admin/v1/queue")).send().await.expect("get").status().as_u16();
    assert_eq!(on_public, 404, "the admin API is not on the public address");
    let _ = gateway.kill();
    let _ = gateway.wait();
}
