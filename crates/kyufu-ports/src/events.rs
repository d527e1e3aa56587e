//! Messages on the bus. Each payload is JSON with a `v` version field so old and new workers can
//! run side by side during a deploy.

use chrono::{DateTime, Utc};
use kyufu_domain::{Application, ReasonCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default topic names; deployments may prefix them.
pub mod topics {
    /// Intake -> dedupe.
    pub const RECEIVED: &str = "applications.received";
    /// Dedupe -> documents: applications that are not duplicates.
    pub const UNIQUE: &str = "applications.unique";
    /// Documents -> ID-check: applications whose document rendition is made (or failed).
    pub const DOCUMENTED: &str = "applications.documented";
    /// ID-check and reviewers -> coupon issuance.
    pub const APPROVED: &str = "applications.approved";
    /// Coupon issuance -> notification: applications whose coupon was issued.
    pub const ISSUED: &str = "applications.issued";
    /// Dedupe, ID-check and reviewers -> notification: outcomes a citizen is told of other than
    /// the coupon (duplicate, sent to a person, rejected).
    pub const SETTLED: &str = "applications.settled";
    /// Intake -> notification: the links of an application, asked for again.
    pub const RESEND: &str = "applications.resend";
    /// Messages a stage gave up on, with the reason.
    pub const DEAD_LETTER: &str = "applications.deadletter";
    /// Every topic, in pipeline order (what a deployment creates).
    pub const ALL: &[&str] = &[RECEIVED, UNIQUE, DOCUMENTED, APPROVED, ISSUED, SETTLED, RESEND, DEAD_LETTER];
}

/// Where intake keeps the full application event in the document store, before the commit point:
/// the outbox relay republishes from it and the review console shows it.
pub fn payload_key(program_id: &str, application_id: Uuid) -> String {
    format!("{program_id}/{application_id}/application.json")
}

/// Where the documents step keeps the rendition of an image document that reviewers see: upright,
/// at most 2,000 px on its longer side, JPEG, no metadata.
pub fn rendition_key(program_id: &str, application_id: Uuid) -> String {
    format!("{program_id}/{application_id}/rendition")
}

/// Where the uploaded identity document is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRef {
    pub key: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

/// An accepted application on its way through the pipeline. The same payload flows through every
/// stage topic; stages add nothing to it, they record their decisions in the status store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationEvent {
    pub v: u32,
    pub application_id: Uuid,
    pub program_id: String,
    /// Keyed hash of the child's identity (`kyufu_domain::identity`); also the partition key.
    pub identity_key: String,
    pub received_at: DateTime<Utc>,
    pub application: Application,
    pub document: DocumentRef,
}

impl ApplicationEvent {
    pub const VERSION: u32 = 1;

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data structs into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A message a stage could not process after bounded retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub v: u32,
    pub stage: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Machine-readable reason, never personal data.
    pub error: String,
    pub reason: ReasonCode,
    pub application_id: Option<Uuid>,
    pub failed_at: DateTime<Utc>,
    /// The original payload, base64-free: kept as the raw bytes it was.
    pub payload: Vec<u8>,
}
