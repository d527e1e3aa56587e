//! HTTP handlers of intake: submit an application, look up its status; the funnel handler lives in
//! `funnel`.

use std::time::Instant;

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use kyufu_admission::{verify_pass, PassClaims, TokenError};
use kyufu_domain::application::{ApplicationInput, InputError};
use kyufu_domain::identity::child_identity_key;
use kyufu_domain::{ErrorCode, ReasonCode, Status};
use kyufu_http::ApiError;
use kyufu_ports::events::{ApplicationEvent, DocumentRef};
use kyufu_ports::{AdapterError, Acceptance, ApplicationRecord, Claim, CreateOutcome, Document, IdempotencyClaim, Publication};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use kyufu_domain::document::sniff_content_type;
use crate::Intake;

/// Largest accepted `application` JSON part.
const MAX_APPLICATION_JSON: usize = 64 * 1024;
/// Room for multipart framing and the JSON part on top of the document.
const BODY_OVERHEAD: usize = 256 * 1024;

pub(crate) const SUBMIT_ROUTE: &str = "/api/v1/applications";
pub(crate) const STATUS_ROUTE: &str = "/api/v1/applications/{application_id}";
pub(crate) const SPEND_ROUTE: &str = "/api/v1/pass/spend";

pub(crate) fn api(intake: Intake) -> Router {
    let body_limit = intake.config.max_document_bytes + BODY_OVERHEAD;
    Router::new()
        .route(SUBMIT_ROUTE, post(submit).layer(DefaultBodyLimit::max(body_limit)))
        .route(STATUS_ROUTE, get(status))
        .route(SPEND_ROUTE, post(spend))
        .route(
            crate::links::LINKS_ROUTE,
            post(crate::links::ask).layer(DefaultBodyLimit::max(crate::links::MAX_LINKS_BODY)),
        )
        .route(
            crate::funnel::FUNNEL_ROUTE,
            post(crate::funnel::record).layer(DefaultBodyLimit::max(crate::funnel::MAX_FUNNEL_BODY)),
        )
        .fallback(kyufu_http::not_found)
        .method_not_allowed_fallback(|| async { ApiError::new(ErrorCode::MethodNotAllowed) })
        .with_state(intake)
}

#[derive(Serialize)]
struct Accepted {
    application_id: Uuid,
    status_token: String,
    status_url: String,
    /// The short typeable reference (`XXXXX-XXXXX`); `None` only if the store failed right after
    /// the commit point (the id then serves, and a retry with the same key assigns it).
    reference: Option<String>,
    /// The typeable code that, with the reference or the id, opens the status lookup.
    lookup_code: String,
}

async fn submit(State(intake): State<Intake>, headers: HeaderMap, multipart: Result<Multipart, MultipartRejection>) -> Response {
    let started = Instant::now();
    let result = submit_inner(&intake, &headers, multipart).await;
    let response = match result {
        Ok((accepted, replay)) => {
            intake.metrics.accepted.with_label_values(&[if replay { "true" } else { "false" }]).inc();
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        Err(e) => {
            if e.code.http_status() >= 500 {
                tracing::warn!(code = %e.code, "submission failed");
            }
            intake.metrics.requests.with_label_values(&["submit", &e.code.http_status().to_string(), e.code.as_str()]).inc();
            intake.metrics.latency.with_label_values(&["submit"]).observe(started.elapsed().as_secs_f64());
            return e.into_response();
        }
    };
    intake.metrics.requests.with_label_values(&["submit", "202", ""]).inc();
    intake.metrics.latency.with_label_values(&["submit"]).observe(started.elapsed().as_secs_f64());
    response
}

fn header_or_cookie<'a>(headers: &'a HeaderMap, header_name: &str, cookie: &str) -> Option<&'a str> {
    if let Some(v) = headers.get(header_name).and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    kyufu_http::cookie(headers, cookie)
}

/// Claim namespace of spent admission passes, keyed by pass id.
const SPENT_PASSES: &str = "pass-spent";
/// A spent pass id is remembered this long past the pass's own expiry (clock skew between nodes).
const SPENT_GRACE_SECS: u64 = 300;

fn now_secs() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

/// The visitor's admission pass, checked locally: signature, event and expiry. No call to the
/// gateway.
fn read_pass(intake: &Intake, headers: &HeaderMap) -> Result<PassClaims, ApiError> {
    let Some(pass) = header_or_cookie(headers, "x-admission-pass", "kyufu_pass") else {
        return Err(ErrorCode::AdmissionRequired.into());
    };
    match verify_pass(&intake.config.pass_keyring, pass, &intake.config.program.id, now_secs()) {
        Ok(claims) => Ok(claims),
        Err(TokenError::Expired) => Err(ErrorCode::AdmissionExpired.into()),
        Err(_) => Err(ErrorCode::AdmissionInvalid.into()),
    }
}

/// A valid pass that has not been spent (`None` when no pass is required). The spent check is one
/// read of the status store.
async fn check_pass(intake: &Intake, headers: &HeaderMap) -> Result<Option<PassClaims>, ApiError> {
    if !intake.config.require_pass {
        return Ok(None);
    }
    let claims = read_pass(intake, headers)?;
    match intake.ports.status.claimed_by(SPENT_PASSES, &claims.pid).await {
        Ok(None) => Ok(Some(claims)),
        Ok(Some(_)) => Err(ErrorCode::AdmissionSpent.into()),
        Err(e) => {
            tracing::warn!(error = %e, "spent-pass check failed; nothing accepted");
            Err(ApiError::new(ErrorCode::ServiceUnavailable))
        }
    }
}

/// Claim namespace of the submission slots of admission passes, keyed `<pass id>.<slot>`.
const PASS_SLOTS: &str = "pass-slot";

/// One pass, one household: takes one of the pass's `submissions_per_pass` slots for `owner`.
/// Slots are claims in the status store (`SET NX` on Redis, one transaction on the embedded
/// store), so two intake processes racing for the last slot cannot both win. Claiming again as the
/// same owner wins, so a retry with the same idempotency key takes the slot it took before rather
/// than a new one. Slots are remembered as long as spent passes are.
async fn take_pass_slot(intake: &Intake, claims: &PassClaims, owner: &str) -> Result<(), ApiError> {
    let limit = intake.config.submissions_per_pass;
    if limit == 0 {
        return Ok(());
    }
    let ttl = std::time::Duration::from_secs(claims.exp.saturating_sub(now_secs()).saturating_add(SPENT_GRACE_SECS));
    for slot in 0..limit {
        let key = format!("{}.{slot}", claims.pid);
        match intake.ports.status.claim_expiring(PASS_SLOTS, &key, owner, ttl).await {
            Ok(Claim::Won) => return Ok(()),
            Ok(Claim::Held { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "pass slot check failed; nothing accepted");
                return Err(ApiError::new(ErrorCode::ServiceUnavailable).retry_after(5));
            }
        }
    }
    Err(ErrorCode::AdmissionLimitReached.into())
}

/// `POST /api/v1/pass/spend`: the visitor is done (every child sent), so the pass ends now rather
/// than at its expiry. 204 when this call spent it — the gateway then ends the session and gives
/// the place back — and 403 `admission_spent` for a pass spent before, so only one call per pass
/// ever returns capacity.
async fn spend(State(intake): State<Intake>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let result = spend_inner(&intake, &headers).await;
    let (status, code, resp) = match result {
        Ok(()) => {
            intake.metrics.passes_spent.inc();
            let resp = (StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, "no-store")]).into_response();
            (204, "", resp)
        }
        Err(e) => (e.code.http_status(), e.code.as_str(), e.into_response()),
    };
    intake.metrics.requests.with_label_values(&["spend", &status.to_string(), code]).inc();
    intake.metrics.latency.with_label_values(&["spend"]).observe(started.elapsed().as_secs_f64());
    resp
}

async fn spend_inner(intake: &Intake, headers: &HeaderMap) -> Result<(), ApiError> {
    let claims = read_pass(intake, headers)?;
    let now = now_secs();
    let ttl = std::time::Duration::from_secs(claims.exp.saturating_sub(now).saturating_add(SPENT_GRACE_SECS));
    // A fresh owner per call: a second call, even with the same pass, finds the claim held.
    let owner = Uuid::new_v4().to_string();
    match intake.ports.status.claim_expiring(SPENT_PASSES, &claims.pid, &owner, ttl).await {
        Ok(Claim::Won) => Ok(()),
        Ok(Claim::Held { .. }) => Err(ErrorCode::AdmissionSpent.into()),
        Err(e) => {
            tracing::warn!(error = %e, "spending a pass failed");
            Err(ApiError::new(ErrorCode::ServiceUnavailable).retry_after(5))
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().map_err(|_| ApiError::new(ErrorCode::IdempotencyKeyInvalid))?.trim();
    let ok = (8..=128).contains(&key.len()) && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(Some(key.to_owned()))
    } else {
        Err(ErrorCode::IdempotencyKeyInvalid.into())
    }
}

fn multipart_error(e: &MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::DocumentTooLarge)
    } else {
        ApiError::new(ErrorCode::InvalidMultipart)
    }
}

/// Reads a field to the end, refusing it as soon as it passes `limit` bytes.
async fn read_capped(field: &mut Field<'_>, limit: usize, too_large: ErrorCode) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
        if buf.len() + chunk.len() > limit {
            return Err(too_large.into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn submit_inner(
    intake: &Intake,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(Accepted, bool), ApiError> {
    let pass = check_pass(intake, headers).await?;
    let idem = idempotency_key(headers)?;
    let mut multipart = multipart.map_err(|_| ApiError::new(ErrorCode::UnsupportedMediaType))?;

    let mut app_json: Option<Bytes> = None;
    let mut document: Option<Bytes> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(|e| multipart_error(&e))? {
        match field.name() {
            Some("application") if app_json.is_none() => {
                app_json = Some(read_capped(&mut field, MAX_APPLICATION_JSON, ErrorCode::InvalidApplication).await?);
            }
            Some("document") if document.is_none() => {
                document = Some(read_capped(&mut field, intake.config.max_document_bytes, ErrorCode::DocumentTooLarge).await?);
            }
            // Unknown or repeated parts are drained and ignored; the body limit still bounds them.
            _ => {
                read_capped(&mut field, intake.config.max_document_bytes, ErrorCode::DocumentTooLarge).await?;
            }
        }
    }
    let app_json = app_json.ok_or(ApiError::new(ErrorCode::MissingApplication))?;
    let today = Utc::now().date_naive();
    let application = ApplicationInput::parse(&app_json, today).map_err(|e| match e {
        InputError::Json => ApiError::new(ErrorCode::InvalidJson),
        InputError::Invalid(v) => ApiError::new(ErrorCode::InvalidApplication).with_errors(v.errors),
    })?;
    let document = document.ok_or(ApiError::new(ErrorCode::MissingDocument))?;
    if document.is_empty() {
        return Err(ErrorCode::EmptyDocument.into());
    }
    let content_type = sniff_content_type(&document).ok_or(ApiError::new(ErrorCode::UnsupportedDocumentType))?;
    intake.metrics.upload_bytes.observe(document.len() as f64);
    let stored = crate::inspect::check_document(&document, content_type, &intake.inspectors).await?;
    // The scanner judges what was uploaded, metadata included.
    scan(intake, &document).await?;
    // From here on `document` is what is stored: an image without its metadata.
    let document = stored;

    let doc_sha = hex(&Sha256::digest(&document));
    let program = &intake.config.program;
    let identity_key = child_identity_key(&intake.config.identity_secret, &program.id, &application);

    // Nothing is written before this point: every refusal above leaves no trace (but a slot of
    // the pass, taken last).
    let mut application_id = Uuid::new_v4();
    if let Some(claims) = &pass {
        let owner = idem.as_ref().map_or_else(|| application_id.to_string(), |key| format!("idem:{key}"));
        take_pass_slot(intake, claims, &owner).await?;
    }
    let received_at = Utc::now();
    let doc_ref = DocumentRef {
        key: format!("{}/{}/document", program.id, application_id),
        content_type: content_type.to_owned(),
        size: document.len() as u64,
        sha256: doc_sha.clone(),
    };
    let event = ApplicationEvent {
        v: ApplicationEvent::VERSION,
        application_id,
        program_id: program.id.clone(),
        identity_key,
        received_at,
        application,
        document: doc_ref,
    };
    let ports = &intake.ports;
    let doc = Document { content_type: content_type.to_owned(), sha256: doc_sha.clone(), bytes: document };
    let payload = event.to_json();
    let payload_doc = Document {
        content_type: "application/json".to_owned(),
        sha256: hex(&Sha256::digest(&payload)),
        bytes: Bytes::from(payload.clone()),
    };
    // One unit: document and full event (for the relay and the review console) first, then the
    // record with its idempotency key — the commit point — then the event on the bus. On the
    // embedded store all of it is one durable commit.
    let acceptance = Acceptance {
        documents: vec![
            (event.document.key.clone(), doc),
            (kyufu_ports::events::payload_key(&program.id, application_id), payload_doc),
        ],
        record: ApplicationRecord::received(application_id, &program.id, received_at),
        idempotency: idem.map(|key| IdempotencyClaim { key, fingerprint: fingerprint(&app_json, &doc_sha) }),
        event: Publication { topic: intake.config.received_topic.clone(), key: event.identity_key.clone().into_bytes(), payload },
    };
    let started = Instant::now();
    let accepted = ports.units.accept(&acceptance).await.map_err(unavailable)?;
    let mut replay = false;
    match accepted.outcome {
        CreateOutcome::Created => match accepted.published {
            Ok(()) => intake.metrics.publish_seconds.observe(started.elapsed().as_secs_f64()),
            Err(e) => {
                // Accepted all the same: the relay republishes records left in `received`.
                intake.metrics.publish_failures.with_label_values(&[adapter_kind(&e)]).inc();
                tracing::warn!(error = %e, "publish after commit failed; the outbox relay will retry");
            }
        },
        CreateOutcome::Existing { application_id: first, same_request: true } => {
            // A retry of a request that already reached the commit point.
            application_id = first;
            replay = true;
            republish_if_received(intake, first, event.identity_key.as_bytes()).await;
        }
        CreateOutcome::Existing { same_request: false, .. } => return Err(ErrorCode::IdempotencyConflict.into()),
    }
    // After the commit point, so a refused submission leaves no reference behind; a retry finds
    // the same one again.
    let reference = match kyufu_ports::reference::assign(&*ports.status, &program.id, application_id).await {
        Ok(r) => Some(r.display()),
        Err(e) => {
            tracing::warn!(error = %e, "reference not assigned; the application id stands in");
            None
        }
    };
    if let Err(e) = crate::links::index(&*ports.status, intake, &event.application.guardian.email, application_id).await {
        tracing::warn!(error = %e, "email index not written; a retry writes it");
    }
    Ok((
        Accepted {
            application_id,
            status_token: intake.config.status_tokens.issue(application_id),
            status_url: format!("/api/v1/applications/{application_id}"),
            reference,
            lookup_code: intake.config.status_tokens.issue_code(application_id),
        },
        replay,
    ))
}

/// A retried submission whose first attempt reached the commit point may never have been
/// published: the store can apply a write whose answer timed out, and that attempt then answered
/// 503 without publishing. While the application is still `received`, publish its stored event
/// again now (stages are idempotent, so a second copy changes nothing) instead of leaving it to the
/// outbox relay minutes later — by then a later application for the same child could have been
/// checked first and taken the child's claim. When the status cannot be read (the store that just
/// timed out is still busy), the event is published all the same: a copy for an application that
/// moved on already changes nothing downstream, while leaving it to the relay left the applicant
/// waiting for minutes (seen in the topology bench under overload). Failures here are left to
/// the relay.
async fn republish_if_received(intake: &Intake, id: Uuid, key: &[u8]) {
    let ports = &intake.ports;
    match ports.status.get(id).await {
        Ok(Some(record)) if record.status == Status::Received => {}
        Ok(_) => return,
        Err(e) => tracing::warn!(error = %e, "replay: status unknown; publishing the stored event again to be sure"),
    }
    let stored = match ports.documents.get(&kyufu_ports::events::payload_key(&intake.config.program.id, id)).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return tracing::warn!("replay: stored event missing; the outbox relay will republish"),
        Err(e) => return tracing::warn!(error = %e, "replay: stored event unreadable; the outbox relay will republish"),
    };
    if let Err(e) = ports.bus.publish(&intake.config.received_topic, key, &stored.bytes).await {
        intake.metrics.publish_failures.with_label_values(&[adapter_kind(&e)]).inc();
        tracing::warn!(error = %e, "replay: publish failed; the outbox relay will retry");
    }
}

/// Sends the document to the virus scanner, if one is configured. Fails closed: a document that
/// could not be scanned is refused with 503 and never stored.
async fn scan(intake: &Intake, document: &[u8]) -> Result<(), ApiError> {
    use crate::metrics::{SCAN_CLEAN, SCAN_ERROR, SCAN_INFECTED};
    use crate::scan::Verdict;
    let Some(scanner) = &intake.config.scanner else { return Ok(()) };
    let outcome = scanner.scan(document).await;
    let label = match &outcome {
        Ok(Verdict::Clean) => SCAN_CLEAN,
        Ok(Verdict::Infected(_)) => SCAN_INFECTED,
        Err(_) => SCAN_ERROR,
    };
    intake.metrics.documents_scanned.with_label_values(&[label]).inc();
    match outcome {
        Ok(Verdict::Clean) => Ok(()),
        Ok(Verdict::Infected(signature)) => {
            // The signature names the malware, not the applicant; nothing else is logged.
            tracing::warn!(%signature, "upload refused by the virus scanner; nothing stored");
            Err(ErrorCode::DocumentInfected.into())
        }
        Err(e) => {
            tracing::warn!(error = %e, "virus scanner unavailable; upload refused (fail closed)");
            Err(ApiError::new(ErrorCode::ScannerUnavailable).retry_after(10))
        }
    }
}

fn fingerprint(app_json: &[u8], doc_sha: &str) -> String {
    let mut h = Sha256::new();
    h.update(app_json);
    h.update(b"\x1e");
    h.update(doc_sha.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn adapter_kind(e: &AdapterError) -> &'static str {
    match e {
        AdapterError::Unavailable(_) => "unavailable",
        AdapterError::AlreadyExists => "already_exists",
        AdapterError::Corrupt(_) => "corrupt",
    }
}

fn unavailable(e: AdapterError) -> ApiError {
    tracing::warn!(error = %e, "storage write failed before the commit point; nothing accepted");
    ApiError::new(ErrorCode::ServiceUnavailable)
}

#[derive(Serialize)]
struct Explanation {
    code: ReasonCode,
    ja: &'static str,
    en: &'static str,
}

#[derive(Serialize)]
struct StatusView {
    application_id: Uuid,
    status: Status,
    reasons: Vec<ReasonCode>,
    /// Each reason in words a citizen understands.
    explanations: Vec<Explanation>,
    coupon_code: Option<String>,
    duplicate_of: Option<Uuid>,
    received_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
    history: Vec<kyufu_ports::StatusChange>,
}

async fn status(State(intake): State<Intake>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let result = status_inner(&intake, &id, &headers).await;
    let outcome = match &result {
        Ok(view) => view.status.as_str(),
        Err(e) if e.code == ErrorCode::NotFound => crate::metrics::LOOKUP_NOT_FOUND,
        Err(_) => crate::metrics::LOOKUP_UNAVAILABLE,
    };
    intake.metrics.status_lookups.with_label_values(&[outcome]).inc();
    let (code, resp) = match result {
        Ok(view) => ("", Json(view).into_response()),
        Err(e) => (e.code.as_str(), e.into_response()),
    };
    let status = resp.status().as_u16().to_string();
    intake.metrics.requests.with_label_values(&["status", &status, code]).inc();
    intake.metrics.latency.with_label_values(&["status"]).observe(started.elapsed().as_secs_f64());
    resp
}

/// The reasons a citizen is shown: all of them while a person is checking; once decided, only the
/// decision's own (a rejection must not still say "a member of staff is checking").
fn citizen_reasons(record: &kyufu_ports::ApplicationRecord) -> Vec<ReasonCode> {
    match record.status {
        Status::Rejected => vec![ReasonCode::RejectedByReviewer],
        Status::Duplicate => vec![ReasonCode::DuplicateApplication],
        Status::Approved | Status::CouponIssued => Vec::new(),
        Status::Received | Status::NeedsReview => record.reasons.clone(),
    }
}

async fn status_inner(intake: &Intake, id: &str, headers: &HeaderMap) -> Result<StatusView, ApiError> {
    // Unknown id, malformed id, missing or wrong token: all the same 404, so ids cannot be probed.
    // The id is the application id or its short reference, as typed.
    let not_found = || ApiError::new(ErrorCode::NotFound);
    let id = match Uuid::parse_str(id) {
        Ok(id) => id,
        Err(_) => {
            let reference = kyufu_domain::reference::Reference::parse(id).ok_or_else(not_found)?;
            kyufu_ports::reference::resolve(&*intake.ports.status, &intake.config.program.id, &reference)
                .await
                .map_err(|_| ApiError::new(ErrorCode::ServiceUnavailable))?
                .ok_or_else(not_found)?
        }
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| header_or_cookie(headers, "x-status-token", "kyufu_status"))
        .ok_or_else(not_found)?;
    if !intake.config.status_tokens.verify_token_or_code(id, token) {
        return Err(not_found());
    }
    let record = intake
        .ports
        .status
        .get(id)
        .await
        .map_err(|_| ApiError::new(ErrorCode::ServiceUnavailable))?
        .ok_or_else(not_found)?;
    Ok(StatusView {
        application_id: record.application_id,
        status: record.status,
        explanations: citizen_reasons(&record)
            .into_iter()
            .map(|code| {
                let (ja, en) = code.explain();
                Explanation { code, ja, en }
            })
            .collect(),
        reasons: record.reasons,
        coupon_code: record.coupon_code,
        duplicate_of: record.duplicate_of,
        received_at: record.created_at,
        updated_at: record.updated_at,
        history: record.history,
    })
}
