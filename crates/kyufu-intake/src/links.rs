//! "Lost your link?": `POST /api/v1/links` with `{"email": "..."}` sends the status links of every
//! application made with that email address to that address again — never to another one, and the
//! answer is the same `202` whether or not the address is known, sent before any lookup happens,
//! so the endpoint cannot tell anyone which addresses applied.
//!
//! The email index is kept as claims in the status store (namespace `email:<program>`, keys
//! `<keyed hash of the address>:<n>` for the n-th application, owner the application id), so the
//! embedded store and Redis keep it alike and no address is stored in clear. Each address may ask
//! once per `ASK_EVERY` (an expiring claim); the limit per client address is the gateway's.
//! The emails themselves are the notify stage's: intake republishes each application's stored
//! event on `applications.resend`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kyufu_domain::identity::keyed_hash;
use kyufu_domain::ErrorCode;
use kyufu_http::ApiError;
use kyufu_ports::events::{payload_key, topics, ApplicationEvent};
use kyufu_ports::{AdapterError, Claim, StatusStore};
use serde::Deserialize;
use uuid::Uuid;

use crate::Intake;

pub(crate) const LINKS_ROUTE: &str = "/api/v1/links";
/// Largest request body.
pub(crate) const MAX_LINKS_BODY: usize = 1024;
/// Applications remembered per address (a family applies for a few children).
const MAX_PER_ADDRESS: usize = 16;
/// How often one address may ask.
const ASK_EVERY: Duration = Duration::from_secs(15 * 60);

#[derive(Deserialize)]
pub(crate) struct LinksRequest {
    email: String,
}

fn index_namespace(program_id: &str) -> String {
    format!("email:{program_id}")
}

fn address_key(intake: &Intake, email: &str) -> String {
    keyed_hash(&intake.config.identity_secret, &intake.config.program.id, &format!("email\u{1f}{}", email.trim().to_lowercase()))
}

/// Records that application `id` was made with `email` (idempotent: a retry finds its own slot).
pub(crate) async fn index(store: &dyn StatusStore, intake: &Intake, email: &str, id: Uuid) -> Result<(), AdapterError> {
    let (ns, key, owner) = (index_namespace(&intake.config.program.id), address_key(intake, email), id.to_string());
    for n in 0..MAX_PER_ADDRESS {
        if store.claim(&ns, &format!("{key}:{n}"), &owner).await? == Claim::Won {
            return Ok(());
        }
    }
    // More applications than slots: the later ones are found by their own emails only.
    Ok(())
}

/// The applications made with `email`, oldest first.
async fn lookup(store: &dyn StatusStore, intake: &Intake, email: &str) -> Result<Vec<Uuid>, AdapterError> {
    let (ns, key) = (index_namespace(&intake.config.program.id), address_key(intake, email));
    let mut ids = Vec::new();
    for n in 0..MAX_PER_ADDRESS {
        match store.claimed_by(&ns, &format!("{key}:{n}")).await? {
            Some(owner) => ids.extend(Uuid::parse_str(&owner).ok()),
            None => break,
        }
    }
    Ok(ids)
}

/// Sends the links again, if the address is known and has not asked lately.
async fn resend(intake: Intake, email: String) -> Result<usize, AdapterError> {
    let ports = &intake.ports;
    let program = &intake.config.program.id;
    let asked = ports.status.claim_expiring(&format!("links-asked:{program}"), &address_key(&intake, &email), &Uuid::new_v4().to_string(), ASK_EVERY).await?;
    if asked != Claim::Won {
        return Ok(0);
    }
    let mut sent = 0;
    for id in lookup(&*ports.status, &intake, &email).await? {
        let Some(stored) = ports.documents.get(&payload_key(program, id)).await? else { continue };
        let Ok(ev) = ApplicationEvent::from_json(&stored.bytes) else { continue };
        // The index is by keyed hash: make sure the event really carries this address.
        if !ev.application.guardian.email.eq_ignore_ascii_case(email.trim()) {
            continue;
        }
        ports.bus.publish(topics::RESEND, ev.identity_key.as_bytes(), &stored.bytes).await?;
        sent += 1;
    }
    Ok(sent)
}

/// `POST /api/v1/links`.
pub(crate) async fn ask(State(intake): State<Intake>, body: Result<Json<LinksRequest>, axum::extract::rejection::JsonRejection>) -> Response {
    let Ok(Json(req)) = body else {
        return ApiError::new(ErrorCode::InvalidJson).into_response();
    };
    let email = req.email.trim().to_owned();
    let plausible = (3..=254).contains(&email.len()) && email.is_ascii() && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
    if !plausible {
        intake.metrics.requests.with_label_values(&["links", "422", "invalid_email"]).inc();
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"code": "invalid_email", "message": "This email address does not look right."})))
            .into_response();
    }
    intake.metrics.requests.with_label_values(&["links", "202", ""]).inc();
    // Answered before any lookup: the same words and the same time for known and unknown addresses.
    tokio::spawn(async move {
        if let Err(e) = resend(intake.clone(), email).await {
            tracing::warn!(error = %e, "resending links failed");
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"code": "accepted", "message": "If applications were made with this address, their links are on the way to it."})),
    )
        .into_response()
}
