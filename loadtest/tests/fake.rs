//! The load tester against a tiny in-test server that implements the public contract (waiting
//! room, submission with idempotency keys, status lookup, `/metrics`) and can be told to misbehave:
//! forget some accepted applications, leave some stuck, issue a coupon code twice, give a retry a
//! second id. Faithful, the run must pass; lossy, the real `loadtest` binary must find every kind of
//! fault and exit non-zero. Only ever on 127.0.0.1.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Clone, Copy, Default)]
struct Faults {
    /// Every n-th accepted application is forgotten (404 on lookup).
    forget_every: Option<usize>,
    /// Every n-th accepted application never leaves `received`.
    stuck_every: Option<usize>,
    /// Every n-th coupon reuses the previous coupon code.
    reuse_coupon_every: Option<usize>,
    /// A retry with a known Idempotency-Key gets a new id.
    ignore_idempotency: bool,
}

#[derive(Default)]
struct Fake {
    faults: Faults,
    accepted: usize,
    coupons: usize,
    by_key: HashMap<String, String>,
    first_for_child: HashMap<String, String>,
    records: HashMap<String, Value>,
    last_coupon: String,
}

type Shared = Arc<Mutex<Fake>>;

fn error(status: u16, code: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(json!({"code": code, "message": code}))).into_response()
}

fn queue_answer() -> Json<Value> {
    Json(json!({"ticket": "t1", "state": "admitted", "position": 0, "eta_seconds": 0, "refresh_after_seconds": 5, "pass": "good-pass"}))
}

async fn submit(State(s): State<Shared>, headers: HeaderMap, mut multipart: Multipart) -> Response {
    if headers.get("x-admission-pass").and_then(|v| v.to_str().ok()) != Some("good-pass") {
        return error(403, "admission_invalid");
    }
    let key = match headers.get("idempotency-key").map(|v| v.to_str().unwrap_or("")) {
        Some(k) if (8..=128).contains(&k.len()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => Some(k.to_owned()),
        Some(_) => return error(400, "idempotency_key_invalid"),
        None => None,
    };
    let (mut app, mut doc) = (None, None);
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or("").to_owned();
        let bytes = field.bytes().await.unwrap_or_default();
        match name.as_str() {
            "application" => app = Some(bytes),
            "document" => doc = Some(bytes),
            _ => {}
        }
    }
    let Some(app) = app else { return error(400, "missing_application") };
    let Ok(app): Result<Value, _> = serde_json::from_slice(&app) else { return error(400, "invalid_json") };
    if !app["guardian"]["email"].as_str().unwrap_or("").contains('@') {
        return error(422, "invalid_application");
    }
    let Some(doc) = doc else { return error(400, "missing_document") };
    if !(doc.starts_with(&[0xFF, 0xD8, 0xFF]) || doc.starts_with(b"\x89PNG\r\n\x1a\n") || doc.starts_with(b"%PDF-")) {
        return error(415, "unsupported_document_type");
    }

    let mut f = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = &key {
        if let Some(id) = f.by_key.get(k).cloned() {
            if !f.faults.ignore_idempotency {
                return (StatusCode::ACCEPTED, Json(json!({"application_id": id, "status_token": format!("tok-{id}")}))).into_response();
            }
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Some(k) = key {
        f.by_key.insert(k, id.clone());
    }
    f.accepted += 1;
    let n = f.accepted;
    let child = &app["child"];
    let child_key = match child.get("resident_id").and_then(Value::as_str) {
        Some(rid) => rid.to_owned(),
        None => format!("{}|{}|{}", child["family_name_kana"], child["given_name_kana"], child["birth_date"]),
    };
    let now = "2026-04-01T00:00:00Z";
    let (status, coupon, duplicate_of) = if f.faults.stuck_every.is_some_and(|e| n % e == 0) {
        ("received".to_owned(), Value::Null, Value::Null)
    } else if child["given_name_kana"].as_str().unwrap_or("").starts_with("ミトウロク") {
        ("needs_review".to_owned(), Value::Null, Value::Null)
    } else if let Some(first) = f.first_for_child.get(&child_key).cloned() {
        ("duplicate".to_owned(), Value::Null, Value::from(first))
    } else {
        f.first_for_child.insert(child_key, id.clone());
        f.coupons += 1;
        let code = if f.faults.reuse_coupon_every.is_some_and(|e| f.coupons % e == 0) && !f.last_coupon.is_empty() {
            f.last_coupon.clone()
        } else {
            format!("CODE-{:06}", f.coupons)
        };
        f.last_coupon.clone_from(&code);
        ("coupon_issued".to_owned(), Value::from(code), Value::Null)
    };
    let mut history = vec![json!({"status": "received", "at": now, "actor": "intake"})];
    if status != "received" {
        history.push(json!({"status": status, "at": "2026-04-01T00:00:00.250Z", "actor": "fake"}));
    }
    let record = json!({
        "application_id": id, "status": status, "reasons": [], "coupon_code": coupon, "duplicate_of": duplicate_of,
        "received_at": now, "updated_at": now, "history": history,
    });
    if f.faults.forget_every.is_none_or(|e| n % e != 0) {
        f.records.insert(id.clone(), record);
    }
    (StatusCode::ACCEPTED, Json(json!({"application_id": id, "status_token": format!("tok-{id}")}))).into_response()
}

async fn status(State(s): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if token != format!("Bearer tok-{id}") {
        return error(404, "not_found");
    }
    let f = s.lock().unwrap_or_else(|e| e.into_inner());
    match f.records.get(&id) {
        Some(r) => Json(r.clone()).into_response(),
        None => error(404, "not_found"),
    }
}

async fn start_fake(faults: Faults) -> String {
    let state: Shared = Arc::new(Mutex::new(Fake { faults, ..Default::default() }));
    let app = Router::new()
        .route("/queue/join", post(|| async { queue_answer() }))
        .route("/queue/status", get(|| async { queue_answer() }))
        .route("/api/v1/applications", post(submit))
        .route("/api/v1/applications/{id}", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "kyufu_gateway_queue_length 0\nkyufu_pipeline_consumer_lag_messages{stage=\"dedupe\"} 0\n" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn registry(dir: &std::path::Path) -> (std::path::PathBuf, chrono::NaiveDate) {
    let today = chrono::Local::now().date_naive();
    let reg = kyufu_registry::generate(&kyufu_registry::GeneratorConfig { seed: 5, households: 200, reference_date: today, ..Default::default() });
    let path = dir.join("registry.csv");
    reg.write_path(&path).expect("write registry");
    (path, today)
}

fn config(target: &str, registry: std::path::PathBuf, today: chrono::NaiveDate, out: std::path::PathBuf) -> loadtest::Config {
    loadtest::Config {
        target: target.to_owned(),
        metrics: target.to_owned(),
        allow_remote: false,
        profile_name: "steady".into(),
        curve: loadtest::profile::Curve::steady(20.0).expect("curve"),
        applications: 150,
        speedup: loadtest::profile::Speedup::new(10.0).expect("speedup"),
        registry,
        reference_date: today,
        age_limit: 18,
        out_dir: out,
        seed: 3,
        mix: loadtest::plan::Mix { retry: 0.2, duplicate: 0.1, wrong: 0.1, bad_input: 0.2, abandon: 0.05, omit_resident_id: 0.5 },
        min_poll: std::time::Duration::from_millis(50),
        settle_timeout: std::time::Duration::from_secs(2),
        drain_timeout: std::time::Duration::from_secs(30),
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faithful_system_passes_and_the_files_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = start_fake(Faults::default()).await;
    let (reg, today) = registry(dir.path());
    let out = dir.path().join("report");
    let outcome = loadtest::run(config(&target, reg, today, out.clone())).await.expect("run");
    let s = &outcome.summary;
    assert!(outcome.passed(), "{}", loadtest::report::text(s));
    assert_eq!((s.lost, s.duplicated, s.mismatched), (0, 0, 0));
    assert_eq!(s.reconciliation.accepted, 150);
    assert!(s.reconciliation.by_status.get("duplicate").copied().unwrap_or(0) > 0, "{:?}", s.reconciliation.by_status);
    assert!(s.reconciliation.by_status.get("needs_review").copied().unwrap_or(0) > 0);
    assert!(s.reconciliation.retries_checked > 0 && s.reconciliation.bad_inputs_sent > 0);
    assert_eq!(s.reconciliation.bad_inputs_as_expected, s.reconciliation.bad_inputs_sent);
    assert!(s.intake_latency_s.p99.is_some() && s.submit_to_final_s.p50 == Some(0.25), "{:?}", s.submit_to_final_s);
    let ledger = std::fs::read_to_string(out.join("ledger.jsonl")).expect("ledger");
    assert_eq!(ledger.lines().count(), 150);
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    assert_eq!(summary["verdict"], "pass");
    assert_eq!(summary["lost"], 0);
    let html = std::fs::read_to_string(out.join("report.html")).expect("report");
    assert!(html.contains("<svg") && html.contains("Queue length over time") && !html.contains("<script"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_system_is_caught_and_the_binary_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Faults { forget_every: Some(17), stuck_every: Some(23), reuse_coupon_every: Some(11), ignore_idempotency: true };
    let target = start_fake(faults).await;
    let (reg, today) = registry(dir.path());
    let out = dir.path().join("report");
    let bin = env!("CARGO_BIN_EXE_loadtest");
    let args: Vec<String> = [
        "--target", &target, "--registry", &reg.display().to_string(), "--reference-date", &today.to_string(),
        "--applications", "150", "--profile", "steady", "--steady-secs", "20", "--speedup", "10", "--retry", "0.2",
        "--min-poll", "0.05", "--settle-timeout", "2", "--seed", "3", "--out", &out.display().to_string(), "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let output = tokio::task::spawn_blocking(move || Command::new(bin).args(&args).output()).await.expect("join").expect("run loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("verdict      : FAIL"), "{stdout}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary")).expect("json");
    let lost = summary["lost"].as_u64().expect("lost");
    let duplicated = summary["duplicated"].as_u64().expect("duplicated");
    // 150 accepted: every 17th forgotten (8) and every 23rd stuck (6, one overlap with 17 at most).
    assert!(lost >= 12, "lost {lost}: {stdout}");
    let findings = summary["reconciliation"]["lost"].to_string();
    assert!(findings.contains("404") && findings.contains("still `received`"), "{findings}");
    let dup = summary["reconciliation"]["duplicated"].to_string();
    assert!(dup.contains("was issued to 2 applications"), "{dup}");
    assert!(dup.contains("different ids"), "{dup}");
    assert!(duplicated >= 2, "{duplicated}");
    assert_eq!(summary["verdict"], "fail");
}

#[test]
fn refuses_a_non_loopback_target_before_sending_anything() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--target", "http://192.0.2.10:8080", "--applications", "1", "--quiet"])
        .output()
        .expect("run loadtest");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not on this machine's loopback") && stderr.contains("--allow-remote"), "{stderr}");
}
