//! The `/api/` reverse proxy against a small echo server standing in for intake: a 12 MB upload
//! streams through with its end-to-end headers, the upstream's answer comes back as it was, and an
//! unreachable or slow upstream becomes 503 `service_unavailable` with `Retry-After`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Json, Router};
use futures::StreamExt;
use kyufu_admission::Keyring;
use kyufu_gateway::GatewayConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Echoes what arrived: method, path and query, selected headers, body size. Answers 201 with a
/// header of its own so the test can tell the upstream's answer from the gateway's.
async fn echo(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/api/slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut size = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => size += bytes.len(),
            Err(_) => return (AxumStatus::BAD_REQUEST, "body broke").into_response(),
        }
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let echoed = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()),
        "body_bytes": size,
        "peer_is_loopback": peer.ip().is_loopback(),
        "x-admission-pass": header("x-admission-pass"),
        "idempotency-key": header("idempotency-key"),
        "authorization": header("authorization"),
        "content-type": header("content-type"),
        "cookie": header("cookie"),
        "x-forwarded-for": header("x-forwarded-for"),
        "x-hop": header("x-hop"),
        "host": header("host"),
    });
    (AxumStatus::CREATED, [("x-upstream", "echo")], Json(echoed)).into_response()
}

async fn start_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(any(echo));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    format!("http://{addr}")
}

/// A gateway started through `run`, the way the binaries start it.
/// A gateway in front of `upstream`: its public base URL, and the operations base URL serving its
/// `/metrics` (the public port never does).
async fn start_gateway(upstream: &str, tweak: impl FnOnce(&mut GatewayConfig)) -> (String, String) {
    let mut config = GatewayConfig::new("rice-2026", Keyring::random(), upstream);
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let registry = kyufu_telemetry::new_registry();
    let ops_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = format!("http://{}", ops_listener.local_addr().expect("addr"));
    tokio::spawn(kyufu_http::serve(ops_listener, kyufu_http::metrics_routes(registry.clone()), std::future::pending()));
    tokio::spawn(kyufu_gateway::run(listener, config, registry, std::future::pending()));
    (base, ops)
}

#[tokio::test]
async fn a_large_upload_and_its_headers_pass_through() {
    let upstream = start_upstream().await;
    let upstream_host = upstream.trim_start_matches("http://").to_owned();
    let (gw, ops) = start_gateway(&upstream, |c| c.max_body_bytes = 16 * 1024 * 1024).await;
    let client = reqwest::Client::new();
    let body = vec![7u8; 12 * 1024 * 1024];
    let resp = client
        .post(format!("{gw}/api/v1/applications?lang=ja"))
        .header("X-Admission-Pass", "k1.pass-payload.pass-mac")
        .header("Idempotency-Key", "retry-key-0001")
        .header("Authorization", "Bearer status-token")
        .header("Content-Type", "multipart/form-data; boundary=XyZ")
        .header("Cookie", "kyufu_pass=abc; other=1")
        .header("Connection", "x-hop")
        .header("X-Hop", "must not cross")
        .header("X-Forwarded-For", "203.0.113.9")
        .body(body)
        .send()
        .await
        .expect("proxied");
    assert_eq!(resp.status(), StatusCode::CREATED, "the upstream's status comes back");
    assert_eq!(resp.headers().get("x-upstream").and_then(|v| v.to_str().ok()), Some("echo"));
    let echoed: Value = resp.json().await.expect("upstream body");
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/api/v1/applications?lang=ja");
    assert_eq!(echoed["body_bytes"], 12 * 1024 * 1024);
    assert_eq!(echoed["x-admission-pass"], "k1.pass-payload.pass-mac");
    assert_eq!(echoed["idempotency-key"], "retry-key-0001");
    assert_eq!(echoed["authorization"], "Bearer status-token");
    assert_eq!(echoed["content-type"], "multipart/form-data; boundary=XyZ");
    assert_eq!(echoed["cookie"], "kyufu_pass=abc; other=1");
    assert_eq!(echoed["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "the gateway appends the visitor's address");
    assert_eq!(echoed["x-hop"], Value::Null, "headers named by Connection stay on their hop");
    assert_eq!(echoed["host"], upstream_host.as_str());

    // A bodiless GET, and the metrics label it by route pattern, never by id.
    let resp = client.get(format!("{gw}/api/v1/applications/0f9a-1234")).send().await.expect("proxied");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let echoed: Value = resp.json().await.expect("upstream body");
    assert_eq!((echoed["method"].as_str(), echoed["body_bytes"].as_u64()), (Some("GET"), Some(0)));
    let metrics = client.get(format!("{ops}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(
        "kyufu_gateway_proxy_requests_total{route=\"/api/v1/applications/{id}\",status_class=\"2xx\"} 1"
    ));
    assert!(metrics.contains("kyufu_gateway_proxy_requests_total{route=\"/api/v1/applications\",status_class=\"2xx\"} 1"));
    assert!(!metrics.contains("0f9a-1234"), "no ids in labels");
}

#[tokio::test]
async fn an_unreachable_upstream_is_503_with_retry_after() {
    // A port that was just free: nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let (gw, _) = start_gateway(&format!("http://{addr}"), |_| {}).await;
    let resp = reqwest::Client::new()
        .post(format!("{gw}/api/v1/applications"))
        .header("Content-Type", "application/octet-stream")
        .body(vec![1u8; 64 * 1024])
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "service_unavailable");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_slow_upstream_is_503_after_the_timeout() {
    let upstream = start_upstream().await;
    let (gw, _) = start_gateway(&upstream, |c| c.upstream_timeout = Duration::from_millis(300)).await;
    let resp = reqwest::Client::new().get(format!("{gw}/api/slow")).send().await.expect("answered");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "service_unavailable");
}

#[tokio::test]
async fn an_upload_over_the_cap_is_refused_at_the_edge_with_413() {
    let upstream = start_upstream().await;
    let (gw, ops) = start_gateway(&upstream, |c| c.max_body_bytes = 1024 * 1024).await;
    let client = reqwest::Client::new();
    // Declared length over the cap: answered without contacting intake, readable by the client.
    let resp = client.post(format!("{gw}/api/v1/applications")).body(vec![1u8; 3 * 1024 * 1024]).send().await.expect("answered");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.headers().get("x-upstream").is_none(), "never reached the upstream");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "document_too_large");
    // A chunked upload with no length that runs past the cap is cut off and answered 413 too.
    let chunks = futures::stream::iter((0..32).map(|_| Ok::<_, std::io::Error>(vec![2u8; 64 * 1024])));
    let resp = client
        .post(format!("{gw}/api/v1/applications"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    } // (a client may also see the connection closed while it is still sending)
    let metrics = client.get(format!("{ops}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("kyufu_gateway_proxy_errors_total{kind=\"too_large\"}"), "{metrics}");
}

#[tokio::test]
async fn one_address_submitting_or_looking_up_too_often_gets_429_and_never_reaches_intake() {
    let upstream = start_upstream().await;
    let (gw, ops) = start_gateway(&upstream, |c| {
        c.submit_limit_per_sec = 1;
        c.submit_limit_burst = 2;
        c.lookup_limit_per_sec = 1;
        c.lookup_limit_burst = 3;
        c.join_limit_loopback = true;
    })
    .await;
    let client = reqwest::Client::new();
    let submit = || client.post(format!("{gw}/api/v1/applications")).body("x").send();
    let lookup = || client.get(format!("{gw}/api/v1/applications/some-id")).send();
    for _ in 0..2 {
        assert_eq!(submit().await.expect("submit").status(), StatusCode::CREATED);
    }
    let refused = submit().await.expect("submit");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = refused.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| (1..=2).contains(&s)), "{retry:?}");
    assert_eq!(refused.json::<Value>().await.expect("json")["code"], "too_many_requests");
    // Lookups have their own bucket: the spent submit bucket does not block them.
    for _ in 0..3 {
        assert_eq!(lookup().await.expect("lookup").status(), StatusCode::CREATED);
    }
    assert_eq!(lookup().await.expect("lookup").status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await;
    assert_eq!(submit().await.expect("submit").status(), StatusCode::CREATED, "allowed again after Retry-After");

    let metrics = client.get(format!("{ops}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("kyufu_gateway_requests_rate_limited_total{limit=\"submit\"} 1"), "{metrics}");
    assert!(metrics.contains("kyufu_gateway_requests_rate_limited_total{limit=\"lookup\"} 1"), "{metrics}");
    // Only the allowed requests reached the upstream (its 201s); the refused ones are the 4xx.
    assert!(metrics.contains("kyufu_gateway_proxy_requests_total{route=\"/api/v1/applications\",status_class=\"2xx\"} 3"), "{metrics}");
    assert!(metrics.contains("kyufu_gateway_proxy_requests_total{route=\"/api/v1/applications\",status_class=\"4xx\"} 1"), "{metrics}");
    assert!(metrics.contains("kyufu_gateway_proxy_requests_total{route=\"/api/v1/applications/{id}\",status_class=\"2xx\"} 3"), "{metrics}");
}
