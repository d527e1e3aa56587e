//! HTTP plumbing shared by the gateway and intake: the `{"code", "message"}` error body built from
//! the one error table, `/metrics`, `/healthz` and `/readyz`, and serving a router until shutdown.
#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kyufu_domain::{ErrorCode, FieldError};
use prometheus::Registry;
use serde::Serialize;
use tokio::net::TcpListener;

/// An error answer: a code from the table, optional field errors, optional `Retry-After`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub errors: Vec<FieldError>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        ApiError { code, errors: Vec::new(), retry_after_secs: None }
    }
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        ApiError::new(code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody { code: self.code.as_str(), message: self.code.message(), errors: &self.errors };
        let mut resp = (status, Json(body)).into_response();
        let retry = self.retry_after_secs.or(match status.as_u16() {
            429 | 503 => Some(5),
            _ => None,
        });
        if let Some(secs) = retry {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Whether the process is ready for traffic (dependencies reachable). Liveness is always true
/// while the process answers.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready() -> Self {
        Readiness(Arc::new(AtomicBool::new(true)))
    }
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `/metrics`, `/healthz` and `/readyz` for any process.
pub fn ops_routes(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics).with_state(registry))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(ready).with_state(readiness))
}

async fn metrics(State(registry): State<Registry>) -> Response {
    ([(header::CONTENT_TYPE, kyufu_telemetry::CONTENT_TYPE)], kyufu_telemetry::encode(&registry)).into_response()
}

async fn ready(State(r): State<Readiness>) -> Response {
    if r.get() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(ErrorCode::ServiceUnavailable).into_response()
    }
}

/// Fallback for unknown routes: the standard 404 body.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
