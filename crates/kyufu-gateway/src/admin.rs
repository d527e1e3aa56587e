//! The operators' API: see the queue, pause and resume admission, set the rate and burst, and show
//! a message to everyone waiting. Every call needs the admin bearer token (compared in constant
//! time) and every change is logged with the operator's name (`X-Operator`) on the `audit` target.
//!
//! Served on the staff port, never on the public one.
//!
//! - `GET  /admin/v1/queue` — issued, admitted, waiting, paused, rate, burst, measured rate, message
//! - `POST /admin/v1/pause`, `POST /admin/v1/resume`
//! - `PUT  /admin/v1/rate` `{"per_sec": 200, "burst": 400}`
//! - `PUT  /admin/v1/message` `{"message": "..."}`, `DELETE /admin/v1/message`

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

use crate::GatewayHandle;

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
            snapshot_json(&admin).await
        }
        Err(e) => e.into_response(),
    }
}

async fn resume(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(op) => {
            admin.handle.resume();
            tracing::warn!(target: "audit", operator = %op, action = "resume", "operator resumed admission");
            snapshot_json(&admin).await
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
    snapshot_json(&admin).await
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
    snapshot_json(&admin).await
}

async fn clear_message(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match operator(&admin, &headers) {
        Ok(op) => {
            admin.handle.set_message(None);
            tracing::warn!(target: "audit", operator = %op, action = "clear_message", "operator cleared the waiting-room message");
            snapshot_json(&admin).await
        }
        Err(e) => e.into_response(),
    }
}
