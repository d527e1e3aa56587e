//! The review console: where staff handle what the machine would not decide alone, built for
//! many reviewers at once.
//!
//! - `GET /review/login`, `POST /review/login`, `POST /review/logout` — one login per reviewer
//!   (argon2id entries, throttled failures, sessions that run out; see `auth`). API clients may
//!   send HTTP Basic instead of the session cookie.
//! - `GET /review?status=&q=&page=` — cases by status (default `needs_review`, oldest first), a
//!   search box (`search`), pages of [`PAGE_SIZE`], and who holds each case until when.
//! - `POST /review/next` — "take the next case": the oldest case nobody holds is leased to the
//!   reviewer (an atomic claim in the status store, so two reviewers never get one case) and
//!   opened. The lease is short ([`LEASE_SECS`]); the open case page renews it every
//!   [`RENEW_SECS`] and gives it back when left; deciding ends it.
//! - `GET /review/cases/{id}` — one case: the document (zoom, rotation; `/review/cases/{id}/document`
//!   serves the documents step's rendition of an image, else the document as stored) beside the
//!   application and the registry records it was compared with, field by field; the history with
//!   reviewers and reject reasons; keyboard shortcuts. Looking at a case takes nothing.
//! - `POST /review/cases/{id}/decision` — approve (on to coupon issuance) or reject with a reason,
//!   then on to the next case. Every decision is in the application's history as
//!   `reviewer:<name>`, and logged without personal data.
//! - JSON: `GET /review/api/queue`, `POST /review/api/next`, `POST /review/api/cases/{id}/lease`,
//!   `POST /review/api/cases/{id}/release`, `POST /review/api/cases/{id}/decision`.
//!
//! Times are shown in Japan time (UTC+9).
#![forbid(unsafe_code)]

pub mod auth;
mod html;
pub mod search;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, Utc};
use kyufu_domain::{ErrorCode, Program, ReasonCode, Status};
use kyufu_http::ApiError;
use kyufu_ports::events::{payload_key, topics, ApplicationEvent};
use kyufu_ports::{ApplicationRecord, DocumentStore, EventBus, Lease, LeaseOutcome, StatusStore, Transition, TransitionOutcome};
use kyufu_registry::Registry;
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use auth::Reviewers;
use auth::LoginRefused;

/// How long a case stays with the reviewer who took it without a renewal.
pub const LEASE_SECS: i64 = 120;
/// How often the open case page renews its lease.
pub const RENEW_SECS: i64 = 30;
/// Cases per page of the list.
pub const PAGE_SIZE: usize = 25;
/// How many cases of one status the list, the search and "next case" look through.
pub const SCAN_LIMIT: usize = 5_000;
/// How many of the oldest cases "next case" looks at before looking at all.
const NEXT_WINDOW: usize = 64;
const SESSION_COOKIE: &str = "kyufu_review_session";
const CSP: &str = "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; form-action 'self'";

#[derive(Clone)]
pub struct ReviewDeps {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub registry: Arc<Registry>,
    pub program: Program,
    pub reviewers: Reviewers,
}

#[derive(Clone)]
struct Console {
    deps: Arc<ReviewDeps>,
    decisions: IntCounterVec,
}

/// The console's routes (plus `/metrics` and health when merged by the caller).
pub fn router(deps: ReviewDeps, registry: &prometheus::Registry) -> Router {
    let decisions = kyufu_telemetry::register(
        registry,
        IntCounterVec::new(Opts::new("kyufu_review_decisions_total", "Reviewer decisions by outcome"), &["decision"])
            .expect("static metric"),
    );
    let console = Console { deps: Arc::new(deps), decisions };
    Router::new()
        .route("/review", get(queue_page))
        .route("/review/login", get(login_page).post(login))
        .route("/review/logout", post(logout))
        .route("/review/console.js", get(script))
        .route("/review/favicon.svg", get(icon))
        .route("/review/next", post(next_page))
        .route("/review/cases/{id}", get(case_page))
        .route("/review/cases/{id}/take", post(take_page))
        .route("/review/cases/{id}/document", get(document))
        .route("/review/cases/{id}/decision", post(decide_form))
        .route("/review/api/queue", get(queue_json))
        .route("/review/api/next", post(next_json))
        .route("/review/api/cases/{id}/lease", post(renew_json))
        .route("/review/api/cases/{id}/release", post(release_json))
        .route("/review/api/cases/{id}/decision", post(decide_json))
        .with_state(console)
}

/// The client's address, when the server was started with connection info.
struct Client(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

fn lock_ns(program: &str) -> String {
    format!("review-lock:{program}")
}

fn session_ns(program: &str) -> String {
    format!("review-session:{program}")
}

fn unavailable<E>(_: E) -> ApiError {
    ApiError::new(ErrorCode::ServiceUnavailable)
}

/// Why a request has no reviewer.
enum Denied {
    /// No session, or it ran out, and no Basic login.
    NoLogin,
    Refused(LoginRefused),
    Store(ApiError),
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

/// The reviewer behind a request: a live session cookie, or else (API routes only, so a browser's
/// remembered Basic login never decides a case from a forged form) an HTTP Basic login.
async fn who(console: &Console, headers: &HeaderMap, client: Option<IpAddr>, basic: bool) -> Result<String, Denied> {
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let lease = console
            .deps
            .status
            .lease_of(&session_ns(&console.deps.program.id), &auth::session_key(token))
            .await
            .map_err(|e| Denied::Store(unavailable(e)))?;
        if let Some(l) = lease.filter(|l| l.until > Utc::now() && console.deps.reviewers.knows(&l.holder)) {
            return Ok(l.holder);
        }
    }
    match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).filter(|_| basic) {
        Some(authorization) => console.deps.reviewers.basic(authorization, client).map_err(Denied::Refused),
        None => Err(Denied::NoLogin),
    }
}

fn throttled_message(wait: std::time::Duration) -> (String, String) {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    (
        format!("ログインの失敗が続いたため、ログインを一時的に止めています。約 {minutes} 分後にもう一度お試しください。"),
        format!("Too many failed logins: logins are paused. Try again in about {minutes} minutes."),
    )
}

fn retry_after(resp: &mut Response, wait: std::time::Duration) {
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// For the JSON API: 401 with a Basic challenge, or 429 while throttled.
fn api_denied(d: Denied) -> Response {
    match d {
        Denied::Store(e) => e.into_response(),
        Denied::Refused(LoginRefused::Throttled(wait)) => {
            let (ja, en) = throttled_message(wait);
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({"code": "login_throttled", "message": format!("{ja} {en}")}))).into_response();
            retry_after(&mut resp, wait);
            resp
        }
        Denied::NoLogin | Denied::Refused(LoginRefused::Wrong) => {
            let mut resp = ApiError::new(ErrorCode::Unauthorized).into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"kyufu review\", charset=\"UTF-8\""));
            resp
        }
    }
}

/// For pages: to the login form (coming back to `path`), or the throttle message.
fn page_denied(d: Denied, path: &str) -> Response {
    match d {
        Denied::Store(e) => e.into_response(),
        Denied::Refused(LoginRefused::Throttled(wait)) => {
            let (ja, en) = throttled_message(wait);
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, html_page(html::login(path, Some(&format!("{ja}<br>{en}"))))).into_response();
            retry_after(&mut resp, wait);
            resp
        }
        Denied::NoLogin | Denied::Refused(LoginRefused::Wrong) => {
            Redirect::to(&format!("/review/login?next={}", urlencode(path))).into_response()
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// An HTML answer with the console's security headers.
fn html_page(body: String) -> Response {
    let mut resp = Html(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

macro_rules! reviewer_or {
    ($console:expr, $headers:expr, $client:expr, $deny:expr, $basic:expr) => {
        match who(&$console, &$headers, $client.0, $basic).await {
            Ok(me) => me,
            Err(d) => return $deny(d),
        }
    };
}

// ── Login ───────────────────────────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
struct NextParam {
    #[serde(default)]
    next: Option<String>,
}

/// Only paths of the console are followed after login.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with("/review") && !n.contains("//") && !n.contains('\\')).unwrap_or("/review")
}

async fn login_page(Query(p): Query<NextParam>) -> Response {
    html_page(html::login(safe_next(p.next.as_deref()), None))
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(State(console): State<Console>, client: Client, form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>) -> Response {
    let Ok(Form(f)) = form else {
        return (StatusCode::BAD_REQUEST, html_page(html::login("/review", Some("名前とパスワードを入力してください。 Enter your name and password.")))).into_response();
    };
    let next = safe_next(f.next.as_deref()).to_owned();
    let name = match console.deps.reviewers.login(f.name.trim(), &f.password, client.0) {
        Ok(name) => name,
        Err(LoginRefused::Wrong) => {
            let msg = "名前またはパスワードが違います。 The name or password is wrong.";
            return (StatusCode::UNAUTHORIZED, html_page(html::login(&next, Some(msg)))).into_response();
        }
        Err(LoginRefused::Throttled(wait)) => {
            let (ja, en) = throttled_message(wait);
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, html_page(html::login(&next, Some(&format!("{ja}<br>{en}"))))).into_response();
            retry_after(&mut resp, wait);
            return resp;
        }
    };
    let token = auth::new_session_token();
    let ttl = console.deps.reviewers.session_ttl;
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(8));
    let ns = session_ns(&console.deps.program.id);
    if let Err(e) = console.deps.status.take_lease(&ns, &auth::session_key(&token), &name, now, until).await {
        return unavailable(e).into_response();
    }
    tracing::info!(reviewer = %name, "reviewer logged in");
    let mut resp = Redirect::to(&next).into_response();
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/review; HttpOnly; SameSite=Strict; Max-Age={}", ttl.as_secs());
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let ns = session_ns(&console.deps.program.id);
        let key = auth::session_key(token);
        if let Ok(Some(l)) = console.deps.status.lease_of(&ns, &key).await {
            let _ = console.deps.status.end_lease(&ns, &key, &l.holder).await;
        }
    }
    let mut resp = Redirect::to("/review/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("kyufu_review_session=; Path=/review; HttpOnly; SameSite=Strict; Max-Age=0"));
    resp
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("console.js"),
    )
        .into_response()
}

async fn icon() -> Response {
    (
        [(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "max-age=86400")],
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#123a6b\"/><path d=\"M4 8l3 3 5-6\" stroke=\"#fff\" stroke-width=\"2\" fill=\"none\"/></svg>",
    )
        .into_response()
}

// ── Leases ──────────────────────────────────────────────────────────────────────────────────────

fn lease_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::seconds(LEASE_SECS)
}

/// Takes or renews `me`'s lease on a case: Ok(lease), or Err(the other holder's lease).
async fn take(console: &Console, id: Uuid, me: &str) -> Result<Result<Lease, Lease>, ApiError> {
    let now = Utc::now();
    match console.deps.status.take_lease(&lock_ns(&console.deps.program.id), &id.to_string(), me, now, lease_until(now)).await.map_err(unavailable)? {
        LeaseOutcome::Won(l) => Ok(Ok(l)),
        LeaseOutcome::Held(l) => Ok(Err(l)),
    }
}

async fn release(console: &Console, id: Uuid, me: &str) {
    if let Err(e) = console.deps.status.end_lease(&lock_ns(&console.deps.program.id), &id.to_string(), me).await {
        tracing::warn!(error = %e, "could not release a review lease; it runs out by itself");
    }
}

/// The running lease on a case, if any.
async fn holder_of(console: &Console, id: Uuid, now: DateTime<Utc>) -> Result<Option<Lease>, ApiError> {
    let l = console.deps.status.lease_of(&lock_ns(&console.deps.program.id), &id.to_string()).await.map_err(unavailable)?;
    Ok(l.filter(|l| l.until > now))
}

/// The oldest case waiting for review that nobody holds, leased to `me`.
async fn take_next(console: &Console, me: &str) -> Result<Option<(Uuid, Lease)>, ApiError> {
    let store = &console.deps.status;
    let now = Utc::now();
    // The oldest cases are the likeliest to be held by others already: look at a first window,
    // then at everything.
    for limit in [NEXT_WINDOW, SCAN_LIMIT] {
        let waiting = store.list_by_status(Status::NeedsReview, limit).await.map_err(unavailable)?;
        let complete = waiting.len() < limit;
        for r in waiting {
            let id = r.application_id;
            if holder_of(console, id, now).await?.is_some() {
                continue;
            }
            let Ok(lease) = take(console, id, me).await? else { continue };
            // Decided between the listing and the claim? Give it back and look further.
            match store.get(id).await.map_err(unavailable)? {
                Some(now_rec) if now_rec.status == Status::NeedsReview => return Ok(Some((id, lease))),
                _ => release(console, id, me).await,
            }
        }
        if complete {
            break;
        }
    }
    Ok(None)
}

async fn next_json(State(console): State<Console>, headers: HeaderMap, client: Client) -> Response {
    let me = reviewer_or!(console, headers, client, api_denied, true);
    match take_next(&console, &me).await {
        Ok(Some((id, lease))) => Json(serde_json::json!({"application_id": id, "lease_until": lease.until})).into_response(),
        Ok(None) => Json(serde_json::json!({"application_id": null})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn next_page(State(console): State<Console>, headers: HeaderMap, client: Client) -> Response {
    let me = reviewer_or!(console, headers, client, |d| page_denied(d, "/review"), false);
    match take_next(&console, &me).await {
        Ok(Some((id, _))) => Redirect::to(&format!("/review/cases/{id}")).into_response(),
        Ok(None) => Redirect::to("/review?none=1").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn take_page(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, client: Client) -> Response {
    let me = reviewer_or!(console, headers, client, |d| page_denied(d, "/review"), false);
    let Ok(id) = Uuid::parse_str(&id) else { return not_found_page(&me) };
    match take(&console, id, &me).await {
        Ok(_) => Redirect::to(&format!("/review/cases/{id}")).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn renew_json(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, client: Client) -> Response {
    let me = reviewer_or!(console, headers, client, api_denied, true);
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    match take(&console, id, &me).await {
        Ok(Ok(l)) => Json(serde_json::json!({"application_id": id, "lease_until": l.until})).into_response(),
        Ok(Err(l)) => locked(&l),
        Err(e) => e.into_response(),
    }
}

async fn release_json(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, client: Client) -> Response {
    let me = reviewer_or!(console, headers, client, api_denied, true);
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    release(&console, id, &me).await;
    StatusCode::NO_CONTENT.into_response()
}

fn locked(l: &Lease) -> Response {
    (
        StatusCode::CONFLICT,
        Json(serde_json::json!({"code": "case_locked", "holder": l.holder, "until": l.until, "message": format!("This case is being reviewed by {}.", l.holder)})),
    )
        .into_response()
}

// ── The list ────────────────────────────────────────────────────────────────────────────────────

#[derive(Deserialize, Default)]
struct ListParams {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    page: Option<String>,
    #[serde(default)]
    none: Option<String>,
}

/// One row of the list.
pub(crate) struct Row {
    record: ApplicationRecord,
    event: Option<ApplicationEvent>,
    lease: Option<Lease>,
}

pub(crate) struct Listing {
    status: Option<Status>,
    q: String,
    page: usize,
    pages: usize,
    total: usize,
    rows: Vec<Row>,
    counts: Vec<(Status, u64)>,
}

/// `?status=`: a status, `all`, or by default `needs_review`; Err for anything else.
fn parse_status(s: Option<&str>) -> Result<Option<Status>, ()> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Some(Status::NeedsReview)),
        Some("all") => Ok(None),
        Some(s) => Status::parse(s).map(Some).ok_or(()),
    }
}

const BAD_STATUS: &str = "status must be all, received, duplicate, needs_review, approved, rejected or coupon_issued";

async fn load_event(console: &Console, record: &ApplicationRecord) -> Result<Option<ApplicationEvent>, ApiError> {
    let doc = console.deps.documents.get(&payload_key(&record.program_id, record.application_id)).await.map_err(unavailable)?;
    Ok(doc.and_then(|d| ApplicationEvent::from_json(&d.bytes).ok()))
}

async fn list(console: &Console, p: &ListParams, status: Option<Status>) -> Result<Listing, ApiError> {
    let store = &console.deps.status;
    let q = p.q.as_deref().unwrap_or("").trim().chars().take(100).collect::<String>();
    let page = p.page.as_deref().and_then(|s| s.parse::<usize>().ok()).unwrap_or(1).max(1);
    let mut records = Vec::new();
    let statuses: Vec<Status> = match status {
        Some(s) => vec![s],
        None => Status::ALL.to_vec(),
    };
    for s in statuses {
        records.extend(store.list_by_status(s, SCAN_LIMIT).await.map_err(unavailable)?);
    }
    if status.is_none() {
        records.sort_by_key(|r| r.created_at);
    }
    // With a search, every case is read with its application; without, only the page's.
    let mut found: Vec<(ApplicationRecord, Option<ApplicationEvent>)> = Vec::new();
    // A reference (`XXXXX-XXXXX`, any case, hyphen optional) names one application: the
    // reference index says which; other searches read every listed case.
    let by_reference = match kyufu_domain::reference::Reference::parse(&q) {
        Some(r) => kyufu_ports::reference::resolve(&**store, &console.deps.program.id, &r).await.map_err(unavailable)?,
        None => None,
    };
    match search::Query::parse(&q) {
        Some(query) => {
            for r in records {
                let ev = load_event(console, &r).await?;
                if by_reference == Some(r.application_id) || query.matches(&r, ev.as_ref()) {
                    found.push((r, ev));
                }
            }
        }
        None => found = records.into_iter().map(|r| (r, None)).collect(),
    }
    let total = found.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages);
    let now = Utc::now();
    let mut rows = Vec::new();
    for (record, ev) in found.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
        let event = match ev {
            Some(ev) => Some(ev),
            None => load_event(console, &record).await?,
        };
        let lease = if record.status == Status::NeedsReview { holder_of(console, record.application_id, now).await? } else { None };
        rows.push(Row { record, event, lease });
    }
    let counts = store.count_by_status().await.map_err(unavailable)?;
    Ok(Listing { status, q, page, pages, total, rows, counts })
}

#[derive(Serialize)]
struct QueueItem {
    application_id: Uuid,
    status: Status,
    received_at: DateTime<Utc>,
    waiting_seconds: i64,
    reasons: Vec<ReasonCode>,
    held_by: Option<String>,
    held_until: Option<DateTime<Utc>>,
}

async fn queue_json(State(console): State<Console>, headers: HeaderMap, client: Client, Query(p): Query<ListParams>) -> Response {
    let _me = reviewer_or!(console, headers, client, api_denied, true);
    let Ok(status) = parse_status(p.status.as_deref()) else {
        return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"code": "invalid_status", "message": BAD_STATUS}))).into_response();
    };
    match list(&console, &p, status).await {
        Ok(l) => {
            let now = Utc::now();
            let items: Vec<QueueItem> = l
                .rows
                .into_iter()
                .map(|r| QueueItem {
                    application_id: r.record.application_id,
                    status: r.record.status,
                    received_at: r.record.created_at,
                    waiting_seconds: (now - r.record.created_at).num_seconds(),
                    held_by: r.lease.as_ref().map(|l| l.holder.clone()),
                    held_until: r.lease.map(|l| l.until),
                    reasons: r.record.reasons,
                })
                .collect();
            let counts: serde_json::Map<String, serde_json::Value> =
                l.counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n.into())).collect();
            Json(serde_json::json!({ "items": items, "total": l.total, "page": l.page, "pages": l.pages, "counts": counts })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn queue_page(State(console): State<Console>, headers: HeaderMap, client: Client, Query(p): Query<ListParams>) -> Response {
    let me = reviewer_or!(console, headers, client, |d| page_denied(d, "/review"), false);
    let Ok(status) = parse_status(p.status.as_deref()) else {
        let text = format!("状態の指定が正しくありません。 {BAD_STATUS}.</p><p><a href=\"/review\">一覧へ</a>");
        return (StatusCode::BAD_REQUEST, html_page(html::message(&me, "状態の指定が正しくありません", &text))).into_response();
    };
    match list(&console, &p, status).await {
        Ok(l) => html_page(html::queue(&me, &l, p.none.is_some(), Utc::now())),
        Err(e) => e.into_response(),
    }
}

// ── A case ──────────────────────────────────────────────────────────────────────────────────────

async fn load_case(console: &Console, id: Uuid) -> Result<(ApplicationRecord, Option<ApplicationEvent>), ApiError> {
    let record = console.deps.status.get(id).await.map_err(unavailable)?.ok_or(ApiError::new(ErrorCode::NotFound))?;
    let event = load_event(console, &record).await?;
    Ok((record, event))
}

fn not_found_page(me: &str) -> Response {
    (StatusCode::NOT_FOUND, html_page(html::message(me, "申請が見つかりません", "この番号の申請はありません。 No application has this number."))).into_response()
}

async fn case_page(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, client: Client) -> Response {
    let path = format!("/review/cases/{}", urlencode(&id));
    let me = reviewer_or!(console, headers, client, |d| page_denied(d, &path), false);
    let Ok(id) = Uuid::parse_str(&id) else { return not_found_page(&me) };
    let (record, event) = match load_case(&console, id).await {
        Ok(x) => x,
        Err(e) if e.code == ErrorCode::NotFound => return not_found_page(&me),
        Err(e) => return e.into_response(),
    };
    // Looking takes nothing: the lease is only shown.
    let lease = if record.status == Status::NeedsReview {
        match holder_of(&console, id, Utc::now()).await {
            Ok(l) => l,
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    html_page(html::case(&me, &record, event.as_ref(), &console.deps.registry, lease.as_ref()))
}

async fn document(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, client: Client) -> Response {
    let _me = reviewer_or!(console, headers, client, api_denied, true);
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    let event = match load_case(&console, id).await {
        Ok((_, Some(ev))) => ev,
        Ok((_, None)) => return ApiError::new(ErrorCode::NotFound).into_response(),
        Err(e) => return e.into_response(),
    };
    // The rendition the documents step made (upright, small, no metadata) when there is one; a
    // PDF, or an image not yet rendered, as stored.
    let rendition = console.deps.documents.get(&kyufu_ports::events::rendition_key(&event.program_id, event.application_id)).await;
    let stored = match rendition {
        Ok(Some(doc)) => Ok(Some(doc)),
        Ok(None) => console.deps.documents.get(&event.document.key).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(Some(doc)) => (
            [
                (header::CONTENT_TYPE, doc.content_type.clone()),
                (header::CACHE_CONTROL, "private, no-store".to_owned()),
                (header::HeaderName::from_static("x-content-type-options"), "nosniff".to_owned()),
                (header::CONTENT_DISPOSITION, "inline".to_owned()),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox".to_owned()),
            ],
            doc.bytes,
        )
            .into_response(),
        Ok(None) => ApiError::new(ErrorCode::NotFound).into_response(),
        Err(_) => ApiError::new(ErrorCode::ServiceUnavailable).into_response(),
    }
}

// ── Decisions ───────────────────────────────────────────────────────────────────────────────────

#[derive(Deserialize)]
pub struct DecisionInput {
    /// `approve` or `reject`.
    pub decision: String,
    /// For a rejection: the reason code shown to the applicant next to `rejected_by_reviewer`.
    #[serde(default)]
    pub reason: Option<String>,
    /// `next`: after deciding, take the next case (the pages' forms).
    #[serde(default)]
    pub then: Option<String>,
}

/// Why a decision could not be made.
enum DecisionError {
    Api(ApiError),
    /// Someone else holds the case.
    Locked(Lease),
    /// The case is no longer waiting for review.
    NotPending(ApplicationRecord),
    BadInput(&'static str),
}

async fn decide(console: &Console, me: &str, id: Uuid, input: &DecisionInput) -> Result<Status, DecisionError> {
    let reject_reason = match (input.decision.as_str(), input.reason.as_deref()) {
        ("approve", _) => None,
        ("reject", reason) => Some(
            reason
                .filter(|r| !r.is_empty())
                .map(|r| serde_json::from_value::<ReasonCode>(serde_json::Value::String(r.to_owned())))
                .transpose()
                .map_err(|_| DecisionError::BadInput("unknown reason code"))?,
        ),
        _ => return Err(DecisionError::BadInput("decision must be approve or reject")),
    };
    let (record, event) = load_case(console, id).await.map_err(DecisionError::Api)?;
    if record.status != Status::NeedsReview {
        return Err(DecisionError::NotPending(record));
    }
    // Held by `me` for a while yet: decide. Otherwise take it now (free, or run out), or refuse.
    let now = Utc::now();
    let held = holder_of(console, id, now).await.map_err(DecisionError::Api)?;
    if !held.is_some_and(|l| l.holder == me && l.until > now + chrono::Duration::seconds(10)) {
        if let Err(holder) = take(console, id, me).await.map_err(DecisionError::Api)? {
            return Err(DecisionError::Locked(holder));
        }
    }
    let actor = format!("reviewer:{me}");
    let (to, t) = match reject_reason {
        None => (Status::Approved, Transition::new(&[Status::NeedsReview], Status::Approved, &actor)),
        Some(reason) => {
            let mut t = Transition::new(&[Status::NeedsReview], Status::Rejected, &actor);
            t.reasons = std::iter::once(ReasonCode::RejectedByReviewer).chain(reason).collect();
            (Status::Rejected, t)
        }
    };
    let store_err = |_| DecisionError::Api(ApiError::new(ErrorCode::ServiceUnavailable));
    match console.deps.status.transition(id, &t).await.map_err(store_err)? {
        TransitionOutcome::Applied(_) => {}
        TransitionOutcome::AlreadyIn(r) | TransitionOutcome::Refused(r) => {
            release(console, id, me).await;
            return Err(DecisionError::NotPending(r));
        }
        TransitionOutcome::NotFound => return Err(DecisionError::Api(ApiError::new(ErrorCode::NotFound))),
    }
    if to == Status::Approved {
        // On to coupon issuance. If this publish fails the reviewer retries; the coupon stage is
        // idempotent and the status is already `approved`.
        let Some(ev) = event else {
            return Err(DecisionError::Api(ApiError::new(ErrorCode::Internal)));
        };
        console.deps.bus.publish(topics::APPROVED, ev.identity_key.as_bytes(), &ev.to_json()).await.map_err(store_err)?;
    } else if let Some(ev) = event {
        // Rejected: the citizen is told by email (notify, through `applications.settled`).
        console.deps.bus.publish(topics::SETTLED, ev.identity_key.as_bytes(), &ev.to_json()).await.map_err(store_err)?;
    }
    release(console, id, me).await;
    console.decisions.with_label_values(&[to.as_str()]).inc();
    tracing::info!(application_id = %id, reviewer = me, decision = to.as_str(), "review decision");
    Ok(to)
}

fn decision_error_json(e: DecisionError) -> Response {
    match e {
        DecisionError::Api(a) => a.into_response(),
        DecisionError::Locked(l) => locked(&l),
        DecisionError::NotPending(r) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"code": "case_not_pending", "status": r.status, "message": format!("This case is already {}.", r.status)})),
        )
            .into_response(),
        DecisionError::BadInput(m) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"code": "invalid_decision", "message": m}))).into_response()
        }
    }
}

fn decision_error_page(me: &str, id: Uuid, e: DecisionError) -> Response {
    let (status, title, text) = match e {
        DecisionError::Api(a) => return a.into_response(),
        DecisionError::Locked(l) => (
            StatusCode::CONFLICT,
            "ほかの審査者が担当しています",
            format!(
                "この申請は {} さんが {} まで担当しています。判定は記録されていません。 {} is reviewing this case; your decision was not recorded.",
                html::esc(&l.holder),
                html::jst_time(l.until),
                html::esc(&l.holder)
            ),
        ),
        DecisionError::NotPending(r) => {
            // Who decided it, if a reviewer did, and when.
            let by = r.history.iter().rev().find_map(|h| h.actor.strip_prefix("reviewer:").map(|n| (n, h.status, h.at)));
            let (ja, en) = match by {
                Some((n, s, at)) => (
                    format!("{} さんが {} に「{}」と判定しました", html::esc(n), html::jst_datetime(at), html::status_ja(s)),
                    format!("{} decided it ({}) at {} JST", html::esc(n), s.as_str(), html::jst_datetime(at)),
                ),
                None => (String::new(), String::new()),
            };
            (
                StatusCode::CONFLICT,
                "この申請はすでに判定されています",
                format!(
                    "この申請は今「{}」です。{ja}。あなたの判定は記録されていません。 This case is already {}. {en}; your decision was not recorded.",
                    html::status_ja(r.status),
                    r.status.as_str(),
                ),
            )
        }
        DecisionError::BadInput(m) => (StatusCode::UNPROCESSABLE_ENTITY, "判定を読み取れません", format!("承認か却下を選んでください。 {m}.")),
    };
    let body = format!("{text}</p><p><a href=\"/review/cases/{id}\">申請に戻る</a>");
    (status, html_page(html::message(me, title, &body))).into_response()
}

async fn decide_json(
    State(console): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    client: Client,
    body: Result<Json<DecisionInput>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let me = reviewer_or!(console, headers, client, api_denied, true);
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    let Ok(Json(input)) = body else { return ApiError::new(ErrorCode::InvalidJson).into_response() };
    match decide(&console, &me, id, &input).await {
        Ok(status) => Json(serde_json::json!({"application_id": id, "status": status})).into_response(),
        Err(e) => decision_error_json(e),
    }
}

async fn decide_form(
    State(console): State<Console>,
    Path(id): Path<String>,
    headers: HeaderMap,
    client: Client,
    form: Result<Form<DecisionInput>, axum::extract::rejection::FormRejection>,
) -> Response {
    let path = format!("/review/cases/{}", urlencode(&id));
    let me = reviewer_or!(console, headers, client, |d| page_denied(d, &path), false);
    let Ok(id) = Uuid::parse_str(&id) else { return not_found_page(&me) };
    let Ok(Form(input)) = form else { return decision_error_page(&me, id, DecisionError::BadInput("decision must be approve or reject")) };
    match decide(&console, &me, id, &input).await {
        Ok(_) if input.then.as_deref() == Some("next") => match take_next(&console, &me).await {
            Ok(Some((next, _))) => Redirect::to(&format!("/review/cases/{next}")).into_response(),
            Ok(None) => Redirect::to("/review?none=1").into_response(),
            Err(e) => e.into_response(),
        },
        Ok(_) => Redirect::to("/review").into_response(),
        Err(e) => decision_error_page(&me, id, e),
    }
}
