//! Intake overload slows admission: against a stand-in intake that answers 503 or answers slowly,
//! the gateway's effective admission rate (`kyufu_gateway_effective_admission_rate`) drops below the
//! operator's rate, and climbs back to it once intake is healthy again.

use std::time::{Duration, Instant};

use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use axum::Router;
use kyufu_admission::Keyring;
use kyufu_gateway::GatewayConfig;

/// `/api/fail` answers 503, `/api/slow` answers after 400 ms, `/api/ok` at once.
async fn start_intake() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/api/fail", get(|| async { (AxumStatus::SERVICE_UNAVAILABLE, "busy") }))
        .route(
            "/api/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "late"
            }),
        )
        .route("/api/ok", get(|| async { "fine" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn effective_rate(client: &reqwest::Client, base: &str) -> f64 {
    let text = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("kyufu_gateway_effective_admission_rate "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no effective rate in {text}"))
}

/// Waits until the effective rate satisfies `want`, returning the last value.
async fn until_rate(client: &reqwest::Client, base: &str, want: impl Fn(f64) -> bool, within: Duration) -> f64 {
    let until = Instant::now() + within;
    loop {
        let rate = effective_rate(client, base).await;
        if want(rate) || Instant::now() > until {
            return rate;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn intake_503_and_slow_answers_back_admission_off_and_health_restores_it() {
    let intake = start_intake().await;
    let mut config = GatewayConfig::new("rice-2026", Keyring::random(), intake.as_str());
    config.rate_per_sec = 100;
    config.backoff_floor = 0.2;
    config.backoff_slow = Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let registry = kyufu_telemetry::new_registry();
    // Metrics are served on an operations port of their own, never on the public one.
    let ops_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = format!("http://{}", ops_listener.local_addr().expect("addr"));
    tokio::spawn(kyufu_http::serve(ops_listener, kyufu_http::metrics_routes(registry.clone()), std::future::pending()));
    tokio::spawn(kyufu_gateway::run(listener, config, registry, std::future::pending()));
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    assert_eq!(until_rate(&client, &ops, |r| r == 100.0, Duration::from_secs(2)).await, 100.0);
    assert_eq!(get("/api/ok").await.expect("ok").status(), 200);
    assert_eq!(effective_rate(&client, &ops).await, 100.0, "a healthy answer changes nothing");

    assert_eq!(get("/api/fail").await.expect("fail").status(), 503);
    let after_one = until_rate(&client, &ops, |r| r < 100.0, Duration::from_secs(1)).await;
    assert!(after_one <= 50.0, "one 503 halves the rate: {after_one}");
    // Intake keeps failing: cut after cut, down to the floor (20/s), never below.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        get("/api/fail").await.expect("fail");
    }
    let floor = effective_rate(&client, &ops).await;
    assert!((20.0..25.0).contains(&floor), "at the floor: {floor}");

    // Healthy again: back to the operator's rate (20 -> 100 at +20/s, after the 1 s cooldown).
    let recovered = until_rate(&client, &ops, |r| r == 100.0, Duration::from_secs(8)).await;
    assert_eq!(recovered, 100.0, "recovers to the operator's rate");

    // A slow (but successful) intake is overload too.
    assert_eq!(get("/api/slow").await.expect("slow").status(), 200);
    let slowed = until_rate(&client, &ops, |r| r < 100.0, Duration::from_secs(1)).await;
    assert!(slowed <= 50.0, "a slow answer halves the rate: {slowed}");
}
