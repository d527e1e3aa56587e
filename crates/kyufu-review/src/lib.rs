//! The review console: where staff handle what the machine would not decide alone.
//!
//! - `GET /review` — the queue of `needs_review` applications, oldest first, with reasons and who
//!   is looking at each.
//! - `GET /review/cases/{id}` — one case: every reason, the application as submitted, the registry
//!   records it was compared with, and the uploaded document (`/review/cases/{id}/document`: the
//!   documents step's rendition of an image, else the document as stored).
//!   Opening a case takes a lease on it (`LEASE_SECS`), so two reviewers never decide the same case.
//! - `POST /review/cases/{id}/decision` — approve (the application moves to `approved` and is
//!   published to coupon issuance) or reject with a reason. Every decision is recorded in the
//!   application's history as `reviewer:<name>` with the time, and logged without personal data.
//! - `GET /review/api/queue`, `POST /review/api/cases/{id}/decision` — the same as JSON.
//!
//! Every route needs a reviewer login (HTTP Basic, `auth`).
#![forbid(unsafe_code)]

pub mod auth;
mod html;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::Utc;
use kyufu_domain::{ErrorCode, Program, ReasonCode, Status};
use kyufu_http::ApiError;
use kyufu_ports::events::{payload_key, topics, ApplicationEvent};
use kyufu_ports::{ApplicationRecord, Claim, DocumentStore, EventBus, StatusStore, Transition, TransitionOutcome};
use kyufu_registry::Registry;
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use auth::Reviewers;

/// How long opening a case reserves it for the reviewer.
pub const LEASE_SECS: i64 = 15 * 60;

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
        .route("/review/cases/{id}", get(case_page))
        .route("/review/cases/{id}/document", get(document))
        .route("/review/cases/{id}/decision", post(decide_form))
        .route("/review/api/queue", get(queue_json))
        .route("/review/api/cases/{id}/decision", post(decide_json))
        .with_state(console)
}

/// Who is asking, or a 401 challenge.
#[allow(clippy::result_large_err)] // the error is the response itself, built once per refused request
fn reviewer(console: &Console, headers: &HeaderMap) -> Result<String, Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    console.deps.reviewers.authenticate(auth).ok_or_else(|| {
        let mut resp = ApiError::new(ErrorCode::Unauthorized).into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"kyufu review\", charset=\"UTF-8\""),
        );
        resp
    })
}

fn lock_ns(program: &str) -> String {
    format!("review-lock:{program}")
}

/// Who holds a case, if anyone, and until when.
fn parse_lease(owner: &str) -> (String, i64) {
    let (name, until) = owner.rsplit_once('|').unwrap_or((owner, "0"));
    (name.to_owned(), until.parse().unwrap_or(0))
}

/// Takes the lease on a case: Ok(the stored lease) if `me` holds it now, Err(holder) if someone
/// else does. An expired lease is taken over.
async fn lease(console: &Console, id: Uuid, me: &str) -> Result<Result<String, String>, ApiError> {
    let ns = lock_ns(&console.deps.program.id);
    let key = id.to_string();
    let owner = format!("{me}|{}", Utc::now().timestamp() + LEASE_SECS);
    let store = &console.deps.status;
    let unavailable = |_| ApiError::new(ErrorCode::ServiceUnavailable);
    for _ in 0..2 {
        match store.claim(&ns, &key, &owner).await.map_err(unavailable)? {
            Claim::Won => return Ok(Ok(owner)),
            Claim::Held { owner: held } => {
                let (holder, until) = parse_lease(&held);
                if holder == me {
                    return Ok(Ok(held));
                }
                if until > Utc::now().timestamp() {
                    return Ok(Err(holder));
                }
                // Expired: free it and try once more.
                store.release(&ns, &key, &held).await.map_err(unavailable)?;
            }
        }
    }
    Ok(Err("another reviewer".to_owned()))
}

async fn release_lease(console: &Console, id: Uuid, lease: &str) {
    let ns = lock_ns(&console.deps.program.id);
    if let Err(e) = console.deps.status.release(&ns, &id.to_string(), lease).await {
        tracing::warn!(error = %e, "could not release a review lease; it expires by itself");
    }
}

#[derive(Serialize)]
struct QueueItem {
    application_id: Uuid,
    received_at: chrono::DateTime<Utc>,
    waiting_seconds: i64,
    reasons: Vec<ReasonCode>,
}

async fn load_queue(console: &Console) -> Result<(Vec<ApplicationRecord>, Vec<(Status, u64)>), ApiError> {
    let unavailable = |_| ApiError::new(ErrorCode::ServiceUnavailable);
    let records = console.deps.status.list_by_status(Status::NeedsReview, 200).await.map_err(unavailable)?;
    let counts = console.deps.status.count_by_status().await.map_err(unavailable)?;
    Ok((records, counts))
}

async fn queue_json(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Err(r) = reviewer(&console, &headers) {
        return r;
    }
    match load_queue(&console).await {
        Ok((records, counts)) => {
            let now = Utc::now();
            let items: Vec<QueueItem> = records
                .into_iter()
                .map(|r| QueueItem {
                    application_id: r.application_id,
                    received_at: r.created_at,
                    waiting_seconds: (now - r.created_at).num_seconds(),
                    reasons: r.reasons,
                })
                .collect();
            let counts: serde_json::Map<String, serde_json::Value> =
                counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n.into())).collect();
            Json(serde_json::json!({ "items": items, "counts": counts })).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn queue_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let me = match reviewer(&console, &headers) {
        Ok(me) => me,
        Err(r) => return r,
    };
    match load_queue(&console).await {
        Ok((records, counts)) => Html(html::queue(&me, &records, &counts, Utc::now())).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn load_case(console: &Console, id: Uuid) -> Result<(ApplicationRecord, Option<ApplicationEvent>), ApiError> {
    let unavailable = |_| ApiError::new(ErrorCode::ServiceUnavailable);
    let record = console.deps.status.get(id).await.map_err(unavailable)?.ok_or(ApiError::new(ErrorCode::NotFound))?;
    let event = console
        .deps
        .documents
        .get(&payload_key(&record.program_id, id))
        .await
        .map_err(unavailable)?
        .and_then(|d| ApplicationEvent::from_json(&d.bytes).ok());
    Ok((record, event))
}

async fn case_page(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let me = match reviewer(&console, &headers) {
        Ok(me) => me,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    let (record, event) = match load_case(&console, id).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let holder = if record.status == Status::NeedsReview {
        match lease(&console, id, &me).await {
            Ok(Ok(_)) => None,
            Ok(Err(holder)) => Some(holder),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    Html(html::case(&me, &record, event.as_ref(), &console.deps.registry, holder.as_deref())).into_response()
}

async fn document(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = reviewer(&console, &headers) {
        return r;
    }
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
                (header::CACHE_CONTROL, "no-store".to_owned()),
                (header::HeaderName::from_static("x-content-type-options"), "nosniff".to_owned()),
                (header::CONTENT_DISPOSITION, "inline".to_owned()),
            ],
            doc.bytes,
        )
            .into_response(),
        Ok(None) => ApiError::new(ErrorCode::NotFound).into_response(),
        Err(_) => ApiError::new(ErrorCode::ServiceUnavailable).into_response(),
    }
}

#[derive(Deserialize)]
pub struct DecisionInput {
    /// `approve` or `reject`.
    pub decision: String,
    /// For a rejection: the reason code shown to the applicant next to `rejected_by_reviewer`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a decision could not be made.
enum DecisionError {
    Api(ApiError),
    /// Someone else holds the case.
    Locked(String),
    /// The case is no longer waiting for review.
    NotPending(Status),
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
    let held = match lease(console, id, me).await.map_err(DecisionError::Api)? {
        Ok(held) => held,
        Err(holder) => return Err(DecisionError::Locked(holder)),
    };
    let (record, event) = load_case(console, id).await.map_err(DecisionError::Api)?;
    if record.status != Status::NeedsReview {
        return Err(DecisionError::NotPending(record.status));
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
    let unavailable = |_| DecisionError::Api(ApiError::new(ErrorCode::ServiceUnavailable));
    match console.deps.status.transition(id, &t).await.map_err(unavailable)? {
        TransitionOutcome::Applied(_) | TransitionOutcome::AlreadyIn(_) => {}
        TransitionOutcome::Refused(r) => return Err(DecisionError::NotPending(r.status)),
        TransitionOutcome::NotFound => return Err(DecisionError::Api(ApiError::new(ErrorCode::NotFound))),
    }
    if to == Status::Approved {
        // On to coupon issuance. If this publish fails the reviewer retries; the coupon stage is
        // idempotent and the status is already `approved`.
        let Some(ev) = event else {
            return Err(DecisionError::Api(ApiError::new(ErrorCode::Internal)));
        };
        console.deps.bus.publish(topics::APPROVED, ev.identity_key.as_bytes(), &ev.to_json()).await.map_err(unavailable)?;
    }
    release_lease(console, id, &held).await;
    console.decisions.with_label_values(&[to.as_str()]).inc();
    tracing::info!(application_id = %id, reviewer = me, decision = to.as_str(), "review decision");
    Ok(to)
}

fn decision_error(e: DecisionError) -> Response {
    match e {
        DecisionError::Api(a) => a.into_response(),
        DecisionError::Locked(holder) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"code": "case_locked", "message": format!("This case is being reviewed by {holder}.")})),
        )
            .into_response(),
        DecisionError::NotPending(s) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"code": "case_not_pending", "message": format!("This case is already {s}.")})),
        )
            .into_response(),
        DecisionError::BadInput(m) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"code": "invalid_decision", "message": m}))).into_response()
        }
    }
}

async fn decide_json(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, body: Result<Json<DecisionInput>, axum::extract::rejection::JsonRejection>) -> Response {
    let me = match reviewer(&console, &headers) {
        Ok(me) => me,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    let Ok(Json(input)) = body else { return ApiError::new(ErrorCode::InvalidJson).into_response() };
    match decide(&console, &me, id, &input).await {
        Ok(status) => Json(serde_json::json!({"application_id": id, "status": status})).into_response(),
        Err(e) => decision_error(e),
    }
}

async fn decide_form(State(console): State<Console>, Path(id): Path<String>, headers: HeaderMap, form: Result<Form<DecisionInput>, axum::extract::rejection::FormRejection>) -> Response {
    let me = match reviewer(&console, &headers) {
        Ok(me) => me,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return ApiError::new(ErrorCode::NotFound).into_response() };
    let Ok(Form(input)) = form else { return decision_error(DecisionError::BadInput("decision must be approve or reject")) };
    match decide(&console, &me, id, &input).await {
        Ok(_) => Redirect::to("/review").into_response(),
        Err(e) => decision_error(e),
    }
}
