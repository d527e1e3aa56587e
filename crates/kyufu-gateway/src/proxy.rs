//! The reverse proxy for everything under `/api/`: a pooled hyper client to intake (or, in the
//! all-in-one, intake's router called in this process — `Gateway::serve_intake_in_process`), bodies
//! streamed both ways (identity documents make uploads of 10 MB and more), hop-by-hop headers
//! dropped and `X-Forwarded-For` appended. End-to-end headers (`X-Admission-Pass`,
//! `Authorization`, `Idempotency-Key`, `Content-Type`, `Cookie`) pass untouched: the gateway does
//! not check passes, intake does.
//!
//! Timeouts follow the upload rather than the clock: an upload may take minutes on a weak phone
//! connection, so while the request body is moving only a stall (no progress for
//! `upload_idle_timeout`) ends it; once the body is sent, intake has `upstream_timeout` to answer.
//! Intake unreachable, stalled or slow becomes 503 `service_unavailable` with `Retry-After`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::Version;
use hyper::body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kyufu_domain::ErrorCode;
use kyufu_http::ApiError;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::metrics::GatewayMetrics;
use crate::Shared;

/// Seconds a client is asked to wait after intake was unreachable.
const RETRY_AFTER_SECS: u64 = 5;

pub(crate) struct Proxy {
    upstream: Upstream,
    authority: Authority,
    upstream_timeout: Duration,
    upload_idle_timeout: Duration,
    max_body_bytes: u64,
    metrics: GatewayMetrics,
}

/// Largest refused upload the gateway still reads to the end before answering 413, so a client
/// that is still sending gets to read the answer instead of a broken pipe.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

impl Proxy {
    pub(crate) fn new(
        authority: Authority,
        connect_timeout: Duration,
        upstream_timeout: Duration,
        upload_idle_timeout: Duration,
        max_body_bytes: u64,
        metrics: GatewayMetrics,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Shorter than any sensible server keep-alive, so a pooled connection is rarely reused
            // just as intake closes it.
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Proxy { upstream: Upstream::Http(client), authority, upstream_timeout, upload_idle_timeout, max_body_bytes, metrics }
    }

    /// Hands every proxied request to `router` in this process instead of over HTTP (the
    /// all-in-one serves intake this way): the same checks, limits, deadlines and metrics, without
    /// a loopback connection, a second HTTP parse and a copy of every upload.
    pub(crate) fn serve_in_process(&mut self, router: axum::Router) {
        self.upstream = Upstream::InProcess(router);
    }

    /// Whether intake is served in this process (for the start-up log line).
    pub(crate) fn in_process(&self) -> bool {
        matches!(self.upstream, Upstream::InProcess(_))
    }
}

/// Where proxied requests go.
enum Upstream {
    /// Intake over HTTP (a pooled hyper client).
    Http(Client<HttpConnector, Body>),
    /// Intake's router in this process.
    InProcess(axum::Router),
}

impl Upstream {
    async fn send(&self, req: Request) -> Result<Response, Failure> {
        match self {
            Upstream::Http(client) => client
                .request(req)
                .await
                .map(|resp| resp.map(Body::new))
                .map_err(|e| if e.is_connect() { Failure::Connect } else { Failure::Exchange }),
            Upstream::InProcess(router) => {
                use tower::ServiceExt;
                // Intake's router matches the request afresh: it must not see this router's
                // extensions (its own path parameters would clash with the gateway's `{*path}`),
                // only what a connection would give it.
                let (mut parts, body) = req.into_parts();
                let connect_info = parts.extensions.remove::<ConnectInfo<SocketAddr>>();
                parts.extensions = http::Extensions::new();
                if let Some(info) = connect_info {
                    parts.extensions.insert(info);
                }
                // The router's error type is `Infallible`.
                router.clone().oneshot(Request::from_parts(parts, body)).await.map_err(|_| Failure::Exchange)
            }
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`, which
/// the gateway's own server has already answered.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Intake's route that spends the visitor's admission pass (the form calls it when done).
pub(crate) const SPEND_ROUTE: &str = "/api/v1/pass/spend";

/// Route pattern for metrics and logs: a fixed set, never a raw path (it may hold an id).
pub(crate) fn route_pattern(path: &str) -> &'static str {
    let mut segments = path.trim_end_matches('/').split('/').skip(1);
    match (segments.next(), segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some("api"), Some("v1"), Some("applications"), None, _) => "/api/v1/applications",
        (Some("api"), Some("v1"), Some("applications"), Some(id), None) if !id.is_empty() => {
            "/api/v1/applications/{id}"
        }
        (Some("api"), Some("v1"), Some("funnel"), None, _) => "/api/v1/funnel",
        (Some("api"), Some("v1"), Some("links"), None, _) => "/api/v1/links",
        (Some("api"), Some("v1"), Some("pass"), Some("spend"), None) => SPEND_ROUTE,
        _ => "/api/other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Why a proxied request was answered by the gateway itself.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Connect,
    /// Intake did not answer within `upstream_timeout` after the body was sent.
    Timeout,
    /// The upload made no progress for `upload_idle_timeout`.
    Stalled,
    /// The visitor's connection failed mid-upload, or intake broke the exchange.
    Exchange,
    /// The upload passed `max_body_bytes`.
    TooLarge,
}

/// Every `Failure::kind`, for metrics set up at zero.
pub(crate) const FAILURE_KINDS: [&str; 5] = ["connect", "timeout", "stalled", "exchange", "too_large"];

impl Failure {
    fn kind(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Stalled => "stalled",
            Failure::Exchange => "exchange",
            Failure::TooLarge => "too_large",
        }
    }
}

/// Any route under `/api/`. Submissions and lookups are limited per client address first (429
/// `too_many_requests` with `Retry-After`); a refused request never reaches intake.
pub(crate) async fn forward(State(gw): State<Arc<Shared>>, req: Request) -> Response {
    let route = route_pattern(req.uri().path());
    let client = crate::queue::client_of(&gw, req.extensions(), req.headers());
    let (limit, limiter) = if req.method() == http::Method::POST && route == "/api/v1/applications" {
        ("submit", &gw.submit_limit)
    } else {
        ("lookup", &gw.lookup_limit)
    };
    if let Err(wait_secs) = limiter.check(client) {
        gw.metrics.requests_limited.with_label_values(&[limit]).inc();
        gw.metrics.proxy_requests.with_label_values(&[route, "4xx"]).inc();
        return ApiError::new(ErrorCode::TooManyRequests).retry_after(wait_secs).into_response();
    }
    let spend = req.method() == http::Method::POST && route == SPEND_ROUTE;
    let span = tracing::info_span!("proxy", route, method = %req.method());
    let mut resp = forward_inner(&gw.proxy, &gw.admission.backoff, route, req).instrument(span).await;
    // Intake answers 403 only for the admission pass (missing, invalid, expired, spent or past its
    // bound of applications).
    if resp.status() == http::StatusCode::FORBIDDEN {
        gw.metrics.passes_rejected.inc();
    }
    // 204: intake spent the pass just now (a second spend of it is a 403). The session ends here,
    // and the visitor's cookies go, so the next visit starts with a fresh place in the queue.
    if spend && resp.status() == http::StatusCode::NO_CONTENT {
        gw.admission.pass_spent(crate::queue::now_secs()).await;
        for name in [crate::ticket::PASS_COOKIE, crate::ticket::TICKET_COOKIE] {
            if let Some(c) = crate::ticket::clear_cookie(name, gw.config.secure_cookies) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
    }
    resp
}

async fn forward_inner(proxy: &Proxy, backoff: &Backoff, route: &'static str, req: Request) -> Response {
    let started = Instant::now();
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > proxy.max_body_bytes) {
        proxy.metrics.proxy_requests.with_label_values(&[route, "4xx"]).inc();
        proxy.metrics.proxy_errors.with_label_values(&[Failure::TooLarge.kind()]).inc();
        if n <= DRAIN_LIMIT {
            use http_body_util::BodyExt;
            let mut body = req.into_body();
            while let Some(Ok(_)) = body.frame().await {}
        }
        return ApiError::new(ErrorCode::DocumentTooLarge).into_response();
    }
    let (mut parts, body) = req.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = match Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(proxy.authority.clone())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        // The path came from a URI the server already parsed, so this cannot happen in practice.
        Err(_) => return ApiError::new(ErrorCode::NotFound).into_response(),
    };
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    // The client derives Host from the upstream URI; the visitor's is kept as X-Forwarded-Host.
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(ip) = peer {
        // Appended, not replaced: a load balancer in front has already added its hop.
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let progress = Arc::new(Progress::new(proxy.max_body_bytes));
    let body = if body.is_end_stream() {
        progress.finish();
        Body::empty()
    } else {
        Body::new(WatchedBody { inner: body, progress: progress.clone() })
    };
    let result = exchange(proxy, Request::from_parts(parts, body), &progress).await;
    proxy.metrics.proxy_seconds.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    // Intake's own time: from the end of the upload (or the start, if it answered before).
    let now = Instant::now();
    let latency = now.saturating_duration_since(progress.finished_at().unwrap_or(started).max(started));
    match &result {
        Ok(resp) => backoff.observe(!resp.status().is_server_error(), latency, now),
        Err(_) if progress.too_large.load(Ordering::Acquire) => {}
        Err(_) => backoff.observe(false, latency, now),
    }
    match result {
        Ok(resp) => {
            proxy.metrics.proxy_requests.with_label_values(&[route, status_class(resp.status().as_u16())]).inc();
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body)
        }
        Err(_) if progress.too_large.load(Ordering::Acquire) => {
            proxy.metrics.proxy_requests.with_label_values(&[route, "4xx"]).inc();
            proxy.metrics.proxy_errors.with_label_values(&[Failure::TooLarge.kind()]).inc();
            ApiError::new(ErrorCode::DocumentTooLarge).into_response()
        }
        Err(failure) => {
            proxy.metrics.proxy_requests.with_label_values(&[route, "5xx"]).inc();
            proxy.metrics.proxy_errors.with_label_values(&[failure.kind()]).inc();
            tracing::warn!(kind = failure.kind(), "proxied request failed");
            ApiError::new(ErrorCode::ServiceUnavailable).retry_after(RETRY_AFTER_SECS).into_response()
        }
    }
}

/// Sends the request and waits for the response headers under the upload-aware deadlines.
async fn exchange(
    proxy: &Proxy,
    req: Request,
    progress: &Progress,
) -> Result<Response, Failure> {
    let send = proxy.upstream.send(req);
    tokio::pin!(send);
    loop {
        let (deadline, failure) = match progress.finished_at() {
            Some(at) => (at + proxy.upstream_timeout, Failure::Timeout),
            None => (progress.last_progress() + proxy.upload_idle_timeout, Failure::Stalled),
        };
        if Instant::now() >= deadline {
            return Err(failure);
        }
        tokio::select! {
            // Intake may answer before reading the whole body (a refused pass), so the response
            // is always watched, not only after the upload.
            result = &mut send => return result,
            // Deadlines move with progress: recompute them.
            () = progress.finished.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// How far a proxied upload has got, shared between the body (which reports) and the exchange
/// (which enforces the deadlines).
struct Progress {
    origin: Instant,
    /// Milliseconds from `origin` to the last frame.
    last_ms: AtomicU64,
    done: AtomicBool,
    /// Milliseconds from `origin` to the end of the body.
    done_ms: AtomicU64,
    finished: Notify,
    /// Bytes of the body seen so far, and the most allowed.
    bytes: AtomicU64,
    limit: u64,
    too_large: AtomicBool,
}

impl Progress {
    fn new(limit: u64) -> Self {
        Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            done_ms: AtomicU64::new(0),
            finished: Notify::new(),
            bytes: AtomicU64::new(0),
            limit,
            too_large: AtomicBool::new(false),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn finish(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.done_ms.store(self.elapsed_ms(), Ordering::Release);
            // notify_one keeps a permit if nobody waits yet, so the wake-up is never lost.
            self.finished.notify_one();
        }
    }

    fn last_progress(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn finished_at(&self) -> Option<Instant> {
        self.done
            .load(Ordering::Acquire)
            .then(|| self.origin + Duration::from_millis(self.done_ms.load(Ordering::Acquire)))
    }
}

/// The visitor's request body on its way to intake, reporting progress. Frames pass through as
/// they come; nothing is buffered.
struct WatchedBody {
    inner: Body,
    progress: Arc<Progress>,
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                let seen = this.progress.bytes.fetch_add(len, Ordering::AcqRel) + len;
                if seen > this.progress.limit {
                    // A chunked upload without Content-Length ran past the cap: stop it here.
                    this.progress.too_large.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(axum::Error::new("upload exceeds the size limit"))));
                }
                this.progress.touch();
                // hyper stops polling once the body says it has ended, so the end is recorded
                // here as well as on `None`.
                if this.inner.is_end_stream() {
                    this.progress.finish();
                }
            }
            Poll::Ready(None) => this.progress.finish(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_never_carry_ids() {
        assert_eq!(route_pattern("/api/v1/applications"), "/api/v1/applications");
        assert_eq!(route_pattern("/api/v1/applications/"), "/api/v1/applications");
        assert_eq!(route_pattern("/api/v1/applications/0f9a-42"), "/api/v1/applications/{id}");
        assert_eq!(route_pattern("/api/v1/applications/0f9a-42/x"), "/api/other");
        assert_eq!(route_pattern("/api/v1/links"), "/api/v1/links");
        assert_eq!(route_pattern("/api/v1/funnel"), "/api/v1/funnel");
        assert_eq!(route_pattern("/api/v1/pass/spend"), "/api/v1/pass/spend");
        assert_eq!(route_pattern("/api/v1/pass/spend/x"), "/api/other");
        for f in [Failure::Connect, Failure::Timeout, Failure::Stalled, Failure::Exchange, Failure::TooLarge] {
            assert!(FAILURE_KINDS.contains(&f.kind()), "{}", f.kind());
        }
        assert_eq!(route_pattern("/api/v1/funnel/x"), "/api/other");
        assert_eq!(route_pattern("/api/v2/anything/secret"), "/api/other");
    }

    #[test]
    fn hop_by_hop_headers_go_end_to_end_headers_stay() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-admission-pass", "p"),
            ("authorization", "Bearer t"),
            ("idempotency-key", "k-12345678"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("cookie", "kyufu_pass=p"),
            ("content-length", "12"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["authorization", "content-length", "content-type", "cookie", "idempotency-key", "x-admission-pass"]
        );
    }

    #[tokio::test]
    async fn watched_body_reports_its_end_even_when_not_polled_past_the_last_frame() {
        use http_body_util::BodyExt;
        let progress = Arc::new(Progress::new(u64::MAX));
        let mut body = WatchedBody { inner: Body::from("twelve bytes"), progress: progress.clone() };
        assert!(progress.finished_at().is_none());
        let frame = body.frame().await;
        assert!(matches!(frame, Some(Ok(_))));
        assert!(progress.finished_at().is_some(), "a full-length body ends with its last frame");
    }
}
