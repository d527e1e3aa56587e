//! HTTP plumbing shared by the gateway and intake: the `{"code", "message"}` error body built from
//! the one error table, `/metrics`, `/healthz` and `/readyz`, and serving a router until shutdown.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kyufu_domain::{ErrorCode, FieldError};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
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

/// Whether the process is ready for traffic: every named check (one per dependency, e.g.
/// `status_store`, `queue_state`) last reported healthy. Liveness (`/healthz`) is always true while
/// the process answers; readiness is what a load balancer acts on. Cheap to clone; every clone is
/// the same state, so the components of one process (gateway and intake in all-in-one) report
/// into one `/readyz`.
///
/// It is also a Prometheus collector, registered by `ops_routes`: `kyufu_ready` (1 while `/readyz`
/// answers 200) and `kyufu_dependency_up{dependency}` (the last result of each check), so alerts
/// see what the load balancer sees.
#[derive(Clone)]
pub struct Readiness(Arc<ReadinessInner>);

struct ReadinessInner {
    checks: RwLock<BTreeMap<&'static str, bool>>,
    ready: IntGauge,
    up: IntGaugeVec,
}

impl Readiness {
    /// Ready, with no check reported yet.
    pub fn ready() -> Self {
        // Metric definitions are static, so construction can only fail on a programming error.
        let ready = IntGauge::new("kyufu_ready", "1 while /readyz answers 200: every dependency check passes")
            .expect("static metric");
        ready.set(1);
        let up = IntGaugeVec::new(
            Opts::new("kyufu_dependency_up", "Last probe of a dependency this process needs: 1 reachable, 0 not"),
            &["dependency"],
        )
        .expect("static metric");
        Readiness(Arc::new(ReadinessInner { checks: RwLock::new(BTreeMap::new()), ready, up }))
    }

    /// Sets the process-wide `process` check.
    pub fn set(&self, ready: bool) {
        self.set_check("process", ready);
    }

    /// Records the latest result of check `name` (a fixed dependency name, never input); returns
    /// true when it changed, so callers log transitions rather than every probe.
    pub fn set_check(&self, name: &'static str, ok: bool) -> bool {
        // A poisoned lock only means a writer panicked while inserting a bool; the map is intact.
        let mut checks = self.0.checks.write().unwrap_or_else(|e| e.into_inner());
        let changed = checks.insert(name, ok) != Some(ok);
        self.0.up.with_label_values(&[name]).set(i64::from(ok));
        self.0.ready.set(i64::from(checks.values().all(|ok| *ok)));
        changed
    }

    /// True when no check is failing.
    pub fn get(&self) -> bool {
        self.0.checks.read().unwrap_or_else(|e| e.into_inner()).values().all(|ok| *ok)
    }

    /// Names of the failing checks, sorted.
    pub fn failing(&self) -> Vec<&'static str> {
        let checks = self.0.checks.read().unwrap_or_else(|e| e.into_inner());
        checks.iter().filter(|(_, ok)| !**ok).map(|(name, _)| *name).collect()
    }
}

impl Collector for Readiness {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.0.ready.desc();
        d.extend(self.0.up.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut m = self.0.ready.collect();
        m.extend(self.0.up.collect());
        m
    }
}

/// `/metrics`, `/healthz` and `/readyz` for any process. Registers `readiness` on `registry`; a
/// process serving several routers (all-in-one) passes the same `Readiness` to each, and the
/// repeated registration of that one collector is ignored.
pub fn ops_routes(registry: Registry, readiness: Readiness) -> Router {
    if let Err(e) = registry.register(Box::new(readiness.clone())) {
        if !matches!(e, prometheus::Error::AlreadyReg) {
            tracing::warn!(error = %e, "readiness metrics not registered");
        }
    }
    metrics_routes(registry).merge(health_routes(readiness))
}

/// `/healthz` and `/readyz` only: what a public port carries (load balancers probe it).
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(ready).with_state(readiness))
}

/// `/metrics` only, for a staff or operations address (never a public one).
pub fn metrics_routes(registry: Registry) -> Router {
    Router::new().route("/metrics", get(metrics).with_state(registry))
}

async fn metrics(State(registry): State<Registry>) -> Response {
    ([(header::CONTENT_TYPE, kyufu_telemetry::CONTENT_TYPE)], kyufu_telemetry::encode(&registry)).into_response()
}

/// 200 when ready; otherwise 503 `service_unavailable` whose `errors` name each failing check
/// (`{"field": "status_store", "code": "unreachable"}`), so the operator sees which dependency.
async fn ready(State(r): State<Readiness>) -> Response {
    let failing = r.failing();
    if failing.is_empty() {
        return Json(serde_json::json!({"status": "ready"})).into_response();
    }
    let errors = failing.into_iter().map(|name| FieldError { field: name.to_owned(), code: "unreachable" }).collect();
    ApiError::new(ErrorCode::ServiceUnavailable).with_errors(errors).into_response()
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

/// Escapes text for HTML element content and quoted attributes (citizen pages, review console,
/// email).
pub use kyufu_domain::html::escape as html_escape;

/// The value of cookie `name` in the request's `Cookie` headers, if present.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn readyz(router: &Router) -> (u16, serde_json::Value) {
        let req = Request::get("/readyz").body(Body::empty()).expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn readyz_follows_every_check_and_names_the_failing_ones() {
        let readiness = Readiness::ready();
        let router = ops_routes(prometheus::Registry::new(), readiness.clone());
        assert_eq!(readyz(&router).await.0, 200);
        assert!(readiness.set_check("status_store", true), "first report is a change");
        assert!(!readiness.set_check("status_store", true), "same result is not");
        assert!(readiness.set_check("status_store", false));
        readiness.set_check("queue_state", true);
        let (status, body) = readyz(&router).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "service_unavailable");
        assert_eq!(body["errors"], serde_json::json!([{"field": "status_store", "code": "unreachable"}]));
        let clone = readiness.clone();
        clone.set_check("status_store", true);
        assert_eq!(readyz(&router).await.0, 200, "clones share one state");
        readiness.set(false);
        assert_eq!(readiness.failing(), vec!["process"]);
    }

    #[test]
    fn readiness_is_exported_once_per_process() {
        let registry = prometheus::Registry::new();
        let readiness = Readiness::ready();
        let _gateway = ops_routes(registry.clone(), readiness.clone());
        let _intake = ops_routes(registry.clone(), readiness.clone());
        readiness.set_check("status_store", false);
        readiness.set_check("queue_state", true);
        let text = kyufu_telemetry::encode(&registry);
        assert!(text.contains("kyufu_ready 0"), "{text}");
        assert!(text.contains("kyufu_dependency_up{dependency=\"status_store\"} 0"), "{text}");
        assert!(text.contains("kyufu_dependency_up{dependency=\"queue_state\"} 1"), "{text}");
        readiness.set_check("status_store", true);
        assert!(kyufu_telemetry::encode(&registry).contains("kyufu_ready 1"));
    }
}

