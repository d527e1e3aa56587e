//! Waiting-room endpoints: `POST /queue/join`, `GET /queue/status`, and the proxy for `/api/`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use kyufu_admission::{PassClaims, Purpose, TokenError};
use kyufu_domain::ErrorCode;
use kyufu_http::ApiError;
use serde::Serialize;

use crate::admission::Admission;
use crate::metrics::GatewayMetrics;
use crate::proxy::Proxy;
use crate::ticket::TicketClaims;
use crate::GatewayConfig;

#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<GatewayConfig>,
    pub admission: Arc<Admission>,
    pub proxy: Proxy,
    pub metrics: GatewayMetrics,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/queue/join", post(join))
        .route("/queue/status", get(status))
        .route("/api/{*path}", any(crate::proxy::forward))
        .fallback(kyufu_http::not_found)
        .with_state(state)
}

#[derive(Serialize)]
struct QueueView {
    ticket: String,
    state: &'static str,
    position: u64,
    eta_seconds: Option<u64>,
    refresh_after_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")).ok()
}

/// The answer for a visitor holding sequence number `seq`.
async fn view(state: &AppState, seq: u64, iat: u64) -> Response {
    let config = &state.config;
    let cursor = state.admission.cursor().await;
    let t = now();
    let claims = TicketClaims { ev: config.event_id.clone(), seq, iat, nxt: t + config.refresh_secs };
    let ticket = config.keyring.sign(Purpose::Ticket, &claims);
    let admitted = seq <= cursor;
    let position = seq.saturating_sub(cursor);
    let pass = admitted.then(|| {
        state.metrics.passes_issued.inc();
        config.keyring.sign(Purpose::Pass, &PassClaims::new(&config.event_id, seq, t, config.pass_ttl_secs))
    });
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let eta_seconds = if admitted {
        Some(0)
    } else {
        state.admission.measured_rate().map(|r| (position as f64 / r).ceil() as u64)
    };
    let refresh = if admitted { 0 } else { config.refresh_secs };
    state.metrics.polls.with_label_values(&[if admitted { "admitted" } else { "waiting" }]).inc();
    let body = QueueView {
        ticket: ticket.clone(),
        state: if admitted { "admitted" } else { "waiting" },
        position,
        eta_seconds,
        refresh_after_seconds: refresh,
        pass: pass.clone(),
    };
    let mut resp = Json(body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = cookie("kyufu_ticket", &ticket, config.ticket_max_age_secs, config.secure_cookies) {
        headers.append(header::SET_COOKIE, c);
    }
    if let Some(p) = &pass {
        if let Some(c) = cookie("kyufu_pass", p, config.pass_ttl_secs, config.secure_cookies) {
            headers.append(header::SET_COOKIE, c);
        }
    }
    resp
}

async fn join(State(state): State<AppState>) -> Response {
    let seq = state.admission.join().await;
    view(&state, seq, now()).await
}

fn ticket_from(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-queue-ticket").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "kyufu_ticket")
        .map(|(_, v)| v.trim())
}

async fn status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(raw) = ticket_from(&headers) else {
        state.metrics.polls.with_label_values(&["invalid"]).inc();
        return ApiError::new(ErrorCode::TicketRequired).into_response();
    };
    let claims: TicketClaims = match state.config.keyring.verify(Purpose::Ticket, raw) {
        Ok(c) => c,
        Err(TokenError::Expired) => return ApiError::new(ErrorCode::TicketExpired).into_response(),
        Err(_) => {
            state.metrics.polls.with_label_values(&["invalid"]).inc();
            return ApiError::new(ErrorCode::TicketInvalid).into_response();
        }
    };
    if claims.ev != state.config.event_id {
        state.metrics.polls.with_label_values(&["invalid"]).inc();
        return ApiError::new(ErrorCode::TicketInvalid).into_response();
    }
    if now().saturating_sub(claims.iat) > state.config.ticket_max_age_secs {
        return ApiError::new(ErrorCode::TicketExpired).into_response();
    }
    view(&state, claims.seq, claims.iat).await
}
