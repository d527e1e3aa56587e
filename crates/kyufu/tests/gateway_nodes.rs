//! `kyufu gateway --queue-state redis`: two gateway processes on one real `redis-server` serve one
//! queue (a visitor joins one and polls the other); a bad queue-state setting or an unreachable
//! Redis stops the process before it serves, naming the setting.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kyufu_testservers::redis::RedisServer;
use serde_json::Value;

const SECRETS: [(&str, &str); 3] = [
    ("KYUFU_PASS_KEYS", "k1:0123456789abcdef0123456789abcdef0123456789abcdef"),
    ("KYUFU_IDENTITY_SECRET", "identity-secret-for-the-nodes-test-0123456789"),
    ("KYUFU_STATUS_SECRET", "status-secret-for-the-nodes-test-0123456789ab"),
];

fn gateway(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kyufu"));
    cmd.arg("gateway").args(args).arg("--secrets-file").arg(dir.join("secrets.json")).envs(SECRETS);
    cmd.env_remove("KYUFU_QUEUE_STATE").env_remove("KYUFU_REDIS_URL").env_remove("KYUFU_REDIS_PREFIX");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_one_queue_through_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let addrs: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    // Admission closed (rate 0), so both visitors stay in the queue for the test to see.
    let _nodes: Vec<Kill> = addrs
        .iter()
        .map(|addr| {
            let args = ["--listen", addr, "--queue-state", "redis", "--redis-url", &redis.url(), "--rate", "0"];
            Kill(gateway(dir.path(), &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn kyufu"))
        })
        .collect();
    for addr in &addrs {
        wait_http(&format!("http://{addr}/healthz")).await;
    }
    let c = reqwest::Client::new();
    let mut tickets = Vec::new();
    for addr in &addrs {
        let v: Value = c.post(format!("http://{addr}/queue/join")).send().await.expect("join").json().await.expect("json");
        assert_eq!(v["state"], "waiting", "{v}");
        tickets.push((v["ticket"].as_str().unwrap_or_default().to_owned(), v["position"].as_u64()));
    }
    assert_eq!((tickets[0].1, tickets[1].1), (Some(1), Some(2)), "one numbering across both processes");
    // Neither was given a launch seed, yet both commit to the same one: the first node's, kept in
    // Redis, so a pre-queue would be drawn alike on both.
    let mut commitments = Vec::new();
    for addr in &addrs {
        let f: Value = c.get(format!("http://{addr}/queue/fairness")).send().await.expect("fairness").json().await.expect("json");
        commitments.push(f["seed_sha256"].as_str().unwrap_or_default().to_owned());
    }
    assert!(commitments[0].len() == 64 && commitments[0] == commitments[1], "{commitments:?}");
    // A third node given another seed refuses to start, naming the setting.
    let third = format!("127.0.0.1:{}", free_port());
    let other_seed = "ab".repeat(32);
    let args = ["--listen", &third, "--queue-state", "redis", "--redis-url", &redis.url(), "--launch-seed", &other_seed];
    let out = gateway(dir.path(), &args).output().expect("run kyufu");
    assert!(!out.status.success(), "a node with another seed must not start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--launch-seed"), "{}", String::from_utf8_lossy(&out.stderr));
    // Each ticket is honoured by the other process, at the same place.
    for (i, (ticket, position)) in tickets.iter().enumerate() {
        let other = &addrs[(i + 1) % 2];
        let resp = c.get(format!("http://{other}/queue/status")).header("X-Queue-Ticket", ticket).send().await.expect("status");
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["position"].as_u64(), *position, "{v}");
    }
}

#[test]
fn bad_queue_state_settings_stop_the_gateway_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let nobody = format!("redis://127.0.0.1:{}/", free_port());
    let cases: [(&[&str], &str); 3] = [
        (&["--queue-state", "bogus"], "--queue-state"),
        (&["--queue-state", "redis", "--redis-url", &nobody], "--redis-url"),
        (&["--queue-state", "redis", "--queue-lease-ms", "5"], "--queue-lease-ms"),
    ];
    for (args, named) in cases {
        let out = gateway(dir.path(), &[&["--listen", &listen][..], args].concat()).output().expect("run kyufu");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must not start");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// Operators steer every node at once: `kyufu admin --url A,B pause` holds the queue whichever
/// node holds the cursor, and `resume` on both lets the waiting visitor in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admin_command_pauses_and_resumes_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start();
    let port = free_port;
    let nodes: Vec<(String, String)> = (0..2).map(|_| (format!("127.0.0.1:{}", port()), format!("127.0.0.1:{}", port()))).collect();
    let token = "admin-token-for-the-nodes-test-0123456789";
    let _procs: Vec<Kill> = nodes
        .iter()
        .map(|(public, staff)| {
            let args = ["--listen", public, "--admin-listen", staff, "--queue-state", "redis", "--redis-url", &redis.url(), "--rate", "50"];
            let mut cmd = gateway(dir.path(), &args);
            cmd.env("KYUFU_ADMIN_TOKEN", token);
            Kill(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn kyufu"))
        })
        .collect();
    for (public, staff) in &nodes {
        wait_http(&format!("http://{public}/healthz")).await;
        wait_http(&format!("http://{staff}/healthz")).await;
    }
    let urls = nodes.iter().map(|(_, staff)| format!("http://{staff}")).collect::<Vec<_>>().join(",");
    let admin = |action: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(["admin", "--url", &urls, "--token", token, "--operator", "test-operator", action])
            .output()
            .expect("run kyufu admin");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("json")
    };
    let paused = admin("pause");
    for (_, staff) in &nodes {
        assert_eq!(paused[format!("http://{staff}")]["paused"], true, "{paused}");
    }
    let c = reqwest::Client::new();
    let mut tickets = Vec::new();
    for (public, _) in &nodes {
        let v: Value = c.post(format!("http://{public}/queue/join")).send().await.expect("join").json().await.expect("json");
        assert_eq!(v["state"], "waiting", "paused everywhere: {v}");
        tickets.push(v["ticket"].as_str().unwrap_or_default().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let poll = |node: usize, ticket: String| {
        let (c, public) = (c.clone(), nodes[node].0.clone());
        async move {
            let v: Value = c.get(format!("http://{public}/queue/status")).header("X-Queue-Ticket", ticket).send().await.expect("status").json().await.expect("json");
            v
        }
    };
    for (i, t) in tickets.iter().enumerate() {
        assert_eq!(poll(i, t.clone()).await["state"], "waiting", "still paused");
    }
    admin("resume");
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, t) in tickets.iter().enumerate() {
        while poll(i, t.clone()).await["state"] != "admitted" {
            assert!(Instant::now() < deadline, "not admitted after resume");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
