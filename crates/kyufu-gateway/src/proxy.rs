//! Reverse proxy to intake: a pooled hyper client, bodies streamed both ways (uploads are large),
//! hop-by-hop headers dropped, `X-Forwarded-For` set, a connect timeout and a timeout until the
//! response headers. Intake unreachable or slow becomes 503 `service_unavailable` with
//! `Retry-After`; the visitor's data was not accepted and may be sent again.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kyufu_domain::ErrorCode;
use kyufu_http::ApiError;

use crate::metrics::GatewayMetrics;
use crate::routes::AppState;
use crate::GatewayConfig;

#[derive(Clone)]
pub(crate) struct Proxy {
    client: Client<HttpConnector, Body>,
    upstream: String,
    timeout: std::time::Duration,
    max_body_bytes: u64,
    metrics: GatewayMetrics,
}

impl Proxy {
    pub(crate) fn new(config: &GatewayConfig, metrics: GatewayMetrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream_connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector);
        Proxy { client, upstream: config.upstream.clone(), timeout: config.upstream_timeout, max_body_bytes: config.max_body_bytes, metrics }
    }
}

/// Largest refused upload the gateway still reads to the end before answering 413.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

/// Route pattern for metrics: never the raw path (it may hold an application id).
fn route_label(method: &axum::http::Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        ("POST", "/api/v1/applications") => "submit",
        ("GET", p) if p.starts_with("/api/v1/applications/") => "status",
        _ => "other",
    }
}

pub(crate) async fn forward(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let proxy = &state.proxy;
    let started = Instant::now();
    let route = route_label(req.method(), req.uri().path());
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{}", proxy.upstream, path_and_query).parse::<Uri>() else {
        return ApiError::new(ErrorCode::NotFound).into_response();
    };
    // Refuse oversized uploads here, before streaming them anywhere: intake would refuse them too,
    // but only after reading its limit, and a connection it closes mid-upload looks like an outage.
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > proxy.max_body_bytes) {
        proxy.metrics.proxy_requests.with_label_values(&[route, "too_large"]).inc();
        // Read and drop a moderately oversized upload so the client, still sending, gets to read
        // the 413 instead of a broken pipe; anything larger is cut off.
        if n <= DRAIN_LIMIT {
            let mut body = req.into_body();
            while let Some(Ok(_)) = body.frame().await {}
        }
        return ApiError::new(ErrorCode::DocumentTooLarge).into_response();
    }
    let (mut parts, body) = req.into_parts();
    let limit = usize::try_from(proxy.max_body_bytes).unwrap_or(usize::MAX);
    let body = Body::new(http_body_util::Limited::new(body, limit));
    parts.uri = uri;
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts.headers.remove(header::HOST);
    let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        parts.headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let upstream_req = Request::from_parts(parts, body);
    let result = tokio::time::timeout(proxy.timeout, proxy.client.request(upstream_req)).await;
    proxy.metrics.proxy_seconds.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    match result {
        Ok(Ok(resp)) => {
            let class = match resp.status().as_u16() {
                200..=299 => "2xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            proxy.metrics.proxy_requests.with_label_values(&[route, class]).inc();
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(h);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) if is_length_limit(&e) => {
            proxy.metrics.proxy_requests.with_label_values(&[route, "too_large"]).inc();
            ApiError::new(ErrorCode::DocumentTooLarge).into_response()
        }
        Ok(Err(e)) => {
            proxy.metrics.proxy_requests.with_label_values(&[route, "unavailable"]).inc();
            tracing::warn!(error = %e, route, "intake unreachable");
            ApiError::new(ErrorCode::ServiceUnavailable).retry_after(5).into_response()
        }
        Err(_) => {
            proxy.metrics.proxy_requests.with_label_values(&[route, "timeout"]).inc();
            tracing::warn!(route, "intake timed out");
            ApiError::new(ErrorCode::ServiceUnavailable).retry_after(10).into_response()
        }
    }
}

/// Whether a client error came from the body passing `max_body_bytes` (a chunked upload).
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}
