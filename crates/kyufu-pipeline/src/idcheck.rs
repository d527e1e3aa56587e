//! ID-check triage: match guardian and child against the resident registry and check the uploaded
//! document. Every failed check becomes a reason code; no reasons means `approved`, any reason
//! means `needs_review`. Nothing is rejected without a person.
//!
//! Safe to redo: the decision is a pure function of the event, the registry and the document; the
//! status move is conditional, and an application already approved is forwarded to coupon issuance
//! again (the crash may have come between the move and the publish).

use std::sync::Arc;

use async_trait::async_trait;
use kyufu_domain::application::{BeneficiaryKind, Child, Guardian};
use kyufu_domain::document::sniff_content_type;
use kyufu_domain::normalize::kana_key;
use kyufu_domain::program::age_on;
use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{DocumentStore, EventBus, Message, StatusStore, Transition, TransitionOutcome};
use kyufu_registry::{Registry, Resident};

use crate::matching::{find, Match};
use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "idcheck";

/// Age from which a guardian counts as an adult (Civil Code, since 2022).
const ADULT_AGE: u32 = 18;

pub struct IdCheck {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub registry: Arc<Registry>,
    pub program: Program,
    pub output_topic: String,
    pub metrics: StageMetrics,
}

fn same_kana(r: &Resident, family: &str, given: &str) -> bool {
    kana_key(&r.family_name_kana) == kana_key(family) && kana_key(&r.given_name_kana) == kana_key(given)
}

/// The reasons an application needs a person; empty when it can be approved automatically.
pub fn decide(program: &Program, registry: &Registry, ev: &ApplicationEvent, document_ok: Result<(), ReasonCode>) -> Vec<ReasonCode> {
    let mut reasons = Vec::new();
    let app = &ev.application;
    let g: &Guardian = &app.guardian;
    let c: &Child = &app.child;
    let guardian = find(registry, g.resident_id.as_deref(), &g.family_name_kana, &g.given_name_kana, g.birth_date, &g.postal_code);
    let child = find(registry, c.resident_id.as_deref(), &c.family_name_kana, &c.given_name_kana, c.birth_date, &g.postal_code);

    match &guardian {
        Match::Found(r) => {
            if !same_kana(r, &g.family_name_kana, &g.given_name_kana) {
                reasons.push(ReasonCode::GuardianNameMismatch);
            }
            if r.birth_date != g.birth_date {
                reasons.push(ReasonCode::GuardianBirthDateMismatch);
            }
            if r.postal_code != g.postal_code {
                reasons.push(ReasonCode::PostalCodeMismatch);
            }
            if age_on(r.birth_date, program.reference_date).is_none_or(|a| a < ADULT_AGE) {
                reasons.push(ReasonCode::GuardianNotAdult);
            }
        }
        Match::NotFound => reasons.push(ReasonCode::GuardianNotInRegistry),
        Match::Ambiguous => reasons.push(ReasonCode::RegistryAmbiguous),
    }
    match &child {
        Match::Found(r) => {
            if !same_kana(r, &c.family_name_kana, &c.given_name_kana) {
                reasons.push(ReasonCode::ChildNameMismatch);
            }
            if r.birth_date != c.birth_date {
                reasons.push(ReasonCode::ChildBirthDateMismatch);
            }
            match app.kind {
                BeneficiaryKind::Child => {
                    if !program.child_within_age_limit(r.birth_date) {
                        reasons.push(ReasonCode::ChildOverAgeLimit);
                    }
                }
                BeneficiaryKind::ExpectantMother => {
                    if r.expecting.is_none() {
                        reasons.push(ReasonCode::NotExpectant);
                    }
                }
            }
            if !program.postal_code_in_region(&r.postal_code) {
                reasons.push(ReasonCode::OutsideRegion);
            }
        }
        Match::NotFound => reasons.push(ReasonCode::ChildNotInRegistry),
        Match::Ambiguous => reasons.push(ReasonCode::RegistryAmbiguous),
    }
    if let (Match::Found(gr), Match::Found(cr)) = (&guardian, &child) {
        if gr.household_id != cr.household_id {
            reasons.push(ReasonCode::NotSameHousehold);
        }
    }
    if let Err(reason) = document_ok {
        reasons.push(reason);
    }
    reasons.sort();
    reasons.dedup();
    reasons
}

impl IdCheck {
    async fn check_document(&self, ev: &ApplicationEvent) -> Result<Result<(), ReasonCode>, StageError> {
        let Some(doc) = self.documents.get(&ev.document.key).await? else {
            return Ok(Err(ReasonCode::DocumentMissing));
        };
        let readable = !doc.bytes.is_empty()
            && doc.sha256 == ev.document.sha256
            && sniff_content_type(&doc.bytes) == Some(doc.content_type.as_str());
        Ok(if readable { Ok(()) } else { Err(ReasonCode::DocumentUnreadable) })
    }
}

#[async_trait]
impl Stage for IdCheck {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        match record.status {
            Status::Received => {}
            Status::Approved => {
                self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
                return Ok(Handled::Skipped);
            }
            _ => return Ok(Handled::Skipped),
        }
        let document_ok = self.check_document(ev).await?;
        let reasons = decide(&self.program, &self.registry, ev, document_ok);
        let to = if reasons.is_empty() { Status::Approved } else { Status::NeedsReview };
        let mut t = Transition::new(&[Status::Received], to, NAME);
        t.reasons = reasons.clone();
        match self.status.transition(ev.application_id, &t).await? {
            TransitionOutcome::Applied(_) => {
                self.metrics.decisions.with_label_values(&[NAME, to.as_str()]).inc();
                for r in &reasons {
                    self.metrics.reasons.with_label_values(&[r.as_str()]).inc();
                }
            }
            TransitionOutcome::AlreadyIn(_) => {}
            TransitionOutcome::Refused(_) => return Ok(Handled::Skipped),
            TransitionOutcome::NotFound => return Err(StageError::Poison("no status record".into())),
        }
        if to == Status::Approved {
            self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
        }
        Ok(Handled::Done(to.as_str()))
    }
}
