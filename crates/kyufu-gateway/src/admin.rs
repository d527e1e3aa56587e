//! The operators' API: see the queue, pause and resume admission, set the rate and burst, and show
//! a message to everyone waiting. Every call needs the admin bearer token (compared in constant
//! time) and every change is logged with the operator's name (`X-Operator`) on the `audit` target.
//!
//! Served on the staff port, never on the public one. With several gateway nodes on one shared
//! queue, a change sent to any node is passed on to the others through the queue state (they take
//! it over within a tick); if it cannot be passed on, the answer is 503 and the change holds on
//! that node only.
//!
//! - `GET  /admin/v1/queue` — issued, admitted, waiting, paused, rate, burst, measured rate, message
//! - `POST /admin/v1/pause`, `POST /admin/v1/resume`
//! - `PUT  /admin/v1/rate` `{"per_sec": 200, "burst": 400}`
//! - `PUT  /admin/v1/message` `{"message": "..."}`, `DELETE /admin/v1/message`
//! - `PUT  /admin/v1/queue-everyone` `{"enabled": true}`
//! - `PUT  /admin/v1/fail-open` `{"until": "2026-12-01T09:30:00+09:00"}`, `DELETE /admin/v1/fail-open`
//! - `PUT  /admin/v1/session-cap` `{"max_sessions": 5000}` (0: no cap)
//! - `PUT  /admin/v1/opening` `{"opens_at": "2026-12-01T09:00:00+09:00"}`

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kyufu_domain::ErrorCode;
use kyufu_http::ApiError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Control, GatewayHandle};

#[derive(Clone)]
struct Admin {
    handle: GatewayHandle,
    token_hash: [u8; 32],
}

/// Longest operator message (characters), so a typo cannot flood every visitor's screen.
const MAX_MESSAGE_CHARS: usize = 500;

/// The admin routes, guarded by `token` (at least 16 characters).
pub fn admin_router(handle: GatewayHandle, token: &str) -> Result<Router, String> {
    if token.chars().count() < 16 {
        return Err("the admin token must be at least 16 characters".to_owned());
    }
    let admin = Admin { handle, token_hash: Sha256::digest(token.as_bytes()).into() };
    Ok(Router::new()
        .route("/admin/v1/queue", get(queue))
        .route("/admin/v1/pause", post(pause))
        .route("/admin/v1/resume", post(resume))
        .route("/admin/v1/rate", put(rate))
        .route("/admin/v1/message", put(set_message).delete(clear_message))
        .route("/admin/v1/queue-everyone", put(queue_everyone))
        .route("/admin/v1/fail-open", put(fail_open).delete(end_fail_open))
        .route("/admin/v1/session-cap", put(session_cap))
        .route("/admin/v1/opening", put(opening))
        .with_state(admin))
}

/// The operator's name for the audit log, if the token is right.
fn operator(admin: &Admin, headers: &HeaderMap) -> Result<String, ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::new(ErrorCode::Unauthorized))?;
    let hash: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    if !bool::from(hash.ct_eq(&admin.token_hash)) {
        return Err(ApiError::new(ErrorCode::Unauthorized));
    }
    let name = headers.get("x-operator").and_then(|v| v.to_str().ok()).unwrap_or("unnamed");
    // Operator names go to the audit log: keep them short and printable.
    Ok(name.chars().filter(|c| c.is_ascii_graphic()).take(64).collect())
}

/// Passes a change made here on to the other gateway nodes of the queue, then answers with the
/// snapshot. If the shared state cannot take it, the change holds on this node only: 503, so the
/// operator (and `kyufu admin`) knows to try again.
async fn shared(admin: &Admin, change: &Control) -> Response {
    match admin.handle.share(change).await {
        Ok(()) => snapshot_json(admin).await,
        Err(e) => {
            tracing::warn!(error = %e, ?change, "operator change made on this node only; the other nodes did not get it");
            ApiError::new(ErrorCode::ServiceUnavailable).retry_after(5).into_response()
        }
    }
}

async fn snapshot_json(admin: &Admin) -> Response {
    match admin.handle.snapshot().await {
        Ok(s) => Json(serde_json::json!({
            "issued": s.counters.issued,
            "admitted": s.counters.cursor,
            "waiting": s.counters.waiting(),
            "paused": s.paused,
            "rate_per_sec": s.rate_per_sec,
            "burst": s.burst,
            "measured_rate": s.measured_rate,
            "message": admin.handle.message(),
            "queue_everyone": s.queue_everyone,
            "fail_open_until": s.fail_open_until.and_then(crate::launch::rfc3339),
            "session_cap": s.session_cap,
            "admitted_sessions": s.admitted_sessions,
            "opens_at": s.opens_at.and_then(crate::launch::rfc3339),
            "opened": s.opened,
        }))
        .into_response(),
        Err(_) => ApiError::new(ErrorCode::ServiceUnavailable).into_response(),
    }
}

async fn queue(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(_) => snapshot_json(&admin).await,
        Err(e) => e.into_response(),
    }
}

async fn pause(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(op) => {
            admin.handle.pause();
            tracing::warn!(target: "audit", operator = %op, action = "pause", "operator paused admission");
            shared(&admin, &Control::Paused(true)).await
        }
        Err(e) => e.into_response(),
    }
}

async fn resume(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(op) => {
            admin.handle.resume();
            tracing::warn!(target: "audit", operator = %op, action = "resume", "operator resumed admission");
            shared(&admin, &Control::Paused(false)).await
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct RateInput {
    per_sec: u32,
    burst: u32,
}

fn invalid(message: &str) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"code": "invalid_admin_request", "message": message}))).into_response()
}

async fn rate(State(admin): State<Admin>, headers: HeaderMap, body: Result<Json<RateInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let op = match operator(&admin, &headers) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let Ok(Json(input)) = body else { return invalid("send {\"per_sec\": N, \"burst\": N}") };
    if input.per_sec > 100_000 || input.burst > 1_000_000 {
        return invalid("rate or burst out of range");
    }
    admin.handle.set_rate(input.per_sec, input.burst);
    tracing::warn!(target: "audit", operator = %op, action = "set_rate", per_sec = input.per_sec, burst = input.burst, "operator set the admission rate");
    shared(&admin, &Control::Rate { per_sec: input.per_sec, burst: input.burst }).await
}

#[derive(Deserialize)]
struct MessageInput {
    message: String,
}

async fn set_message(State(admin): State<Admin>, headers: HeaderMap, body: Result<Json<MessageInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let op = match operator(&admin, &headers) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let Ok(Json(input)) = body else { return invalid("send {\"message\": \"...\"}") };
    let text = input.message.trim();
    if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS || text.chars().any(char::is_control) {
        return invalid("the message must be 1 to 500 characters without control characters");
    }
    admin.handle.set_message(Some(text.to_owned()));
    tracing::warn!(target: "audit", operator = %op, action = "set_message", chars = text.chars().count(), "operator set the waiting-room message");
    shared(&admin, &Control::Message(Some(text.to_owned()))).await
}

async fn clear_message(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(op) => {
            admin.handle.set_message(None);
            tracing::warn!(target: "audit", operator = %op, action = "clear_message", "operator cleared the waiting-room message");
            shared(&admin, &Control::Message(None)).await
        }
        Err(e) => e.into_response(),
    }
}

/// The operator, or the response refusing the call.
type Checked<T> = Result<(String, T), Box<Response>>;

/// Authenticates and reads a JSON body; `usage` tells a caller what to send.
fn checked<T>(
    admin: &Admin,
    headers: &HeaderMap,
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    usage: &str,
) -> Checked<T> {
    let op = operator(admin, headers).map_err(|e| Box::new(e.into_response()))?;
    let Ok(Json(input)) = body else { return Err(Box::new(invalid(usage))) };
    Ok((op, input))
}

#[derive(Deserialize)]
struct QueueEveryoneInput {
    enabled: bool,
}

async fn queue_everyone(State(admin): State<Admin>, headers: HeaderMap, body: Result<Json<QueueEveryoneInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let (op, input) = match checked(&admin, &headers, body, "send {\"enabled\": true|false}") {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    admin.handle.set_queue_everyone(input.enabled);
    tracing::warn!(target: "audit", operator = %op, action = "queue_everyone", enabled = input.enabled, "operator changed queue-everyone");
    shared(&admin, &Control::QueueEveryone(input.enabled)).await
}

/// Longest fail-open an operator can set in one call: it must end by itself the same day.
const MAX_FAIL_OPEN_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
struct FailOpenInput {
    until: String,
}

async fn fail_open(State(admin): State<Admin>, headers: HeaderMap, body: Result<Json<FailOpenInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let (op, input) = match checked(&admin, &headers, body, "send {\"until\": \"<RFC 3339 time>\"}") {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let now = crate::queue::now_secs();
    let Some(until) = crate::launch::parse_rfc3339(&input.until) else { return invalid("until must be an RFC 3339 time") };
    if until <= now || until - now > MAX_FAIL_OPEN_SECS {
        return invalid("until must be in the future and at most 24 hours away");
    }
    admin.handle.set_fail_open_until(until);
    tracing::warn!(target: "audit", operator = %op, action = "fail_open", until = %input.until, "operator opened the door without queuing");
    shared(&admin, &Control::FailOpenUntil(until)).await
}

async fn end_fail_open(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(op) => {
            admin.handle.set_fail_open_until(0);
            tracing::warn!(target: "audit", operator = %op, action = "end_fail_open", "operator ended fail-open");
            shared(&admin, &Control::FailOpenUntil(0)).await
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct SessionCapInput {
    max_sessions: u64,
}

async fn session_cap(State(admin): State<Admin>, headers: HeaderMap, body: Result<Json<SessionCapInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let (op, input) = match checked(&admin, &headers, body, "send {\"max_sessions\": N} (0: no cap)") {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    if input.max_sessions > 10_000_000 {
        return invalid("max_sessions out of range");
    }
    admin.handle.set_session_cap(input.max_sessions);
    tracing::warn!(target: "audit", operator = %op, action = "set_session_cap", max_sessions = input.max_sessions, "operator set the session cap");
    shared(&admin, &Control::SessionCap(input.max_sessions)).await
}

#[derive(Deserialize)]
struct OpeningInput {
    opens_at: String,
}

async fn opening(State(admin): State<Admin>, headers: HeaderMap, body: Result<Json<OpeningInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let (op, input) = match checked(&admin, &headers, body, "send {\"opens_at\": \"<RFC 3339 time>\"}") {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let Some(opens_at) = crate::launch::parse_rfc3339(&input.opens_at) else { return invalid("opens_at must be an RFC 3339 time") };
    match admin.handle.set_opening(opens_at).await {
        Ok(()) => {
            tracing::warn!(target: "audit", operator = %op, action = "set_opening", opens_at = %input.opens_at, "operator set the opening time");
            shared(&admin, &Control::OpensAt(opens_at)).await
        }
        Err(crate::OpeningError::AlreadyOpened(_)) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"code": "already_opened", "message": "the queue has opened; the pre-queue order is fixed"})),
        )
            .into_response(),
        Err(crate::OpeningError::State(_)) => ApiError::new(ErrorCode::ServiceUnavailable).into_response(),
    }
}
