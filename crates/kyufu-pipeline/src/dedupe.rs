//! Dedupe: one benefit per child per program.
//!
//! **Exact duplicates.** The child's identity is the registry resident id when the registry
//! resolves the child (by the id given, or by kana name, birth date and address), otherwise the
//! keyed hash of kana name, birth date and postal code computed at intake. It is claimed in the
//! status store with SET NX semantics, only ever as a keyed hash (HMAC with the identity secret):
//! the first application to claim it goes on, a later one becomes `duplicate` with a pointer to the
//! first. A rejected first application stops blocking: its claim passes to the newcomer.
//!
//! **Near duplicates** (one kana character off, day and month swapped) are never rejected by the
//! machine: they go to review with `possible_duplicate`. Every application claims the keyed hashes
//! of its name's one-character-deletion neighbourhood (two names one edit apart always share one),
//! with its birth date and with the date's day and month swapped. A shared key flags the later
//! application unless both were resolved to registry residents — then they are different people
//! (twins with similar names, cousins), because the same resident would have been an exact match.
//!
//! Safe to redo: claims by the same owner win again, so a replay takes the same path and its
//! conditional status move finds the work done.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use kyufu_domain::identity::{keyed_hash, IdentitySecret};
use kyufu_domain::normalize::kana_key;
use kyufu_domain::{ReasonCode, Status};
use kyufu_ports::events::{topics, ApplicationEvent};
use kyufu_ports::{Claim, EventBus, Message, StatusStore, Transition, TransitionOutcome};
use kyufu_registry::Registry;
use uuid::Uuid;

use crate::matching::{find, Match};
use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub struct Dedupe {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub registry: Arc<Registry>,
    pub secret: IdentitySecret,
    pub output_topic: String,
    pub metrics: StageMetrics,
}

pub const NAME: &str = "dedupe";

/// The child's exact identity key and whether the registry resolved it.
pub fn exact_key(registry: &Registry, secret: &IdentitySecret, ev: &ApplicationEvent) -> (String, bool) {
    let c = &ev.application.child;
    let postal = &ev.application.guardian.postal_code;
    match find(registry, c.resident_id.as_deref(), &c.family_name_kana, &c.given_name_kana, c.birth_date, postal) {
        // Same material as `child_identity_key` for a given resident id, so both agree.
        Match::Found(r) => (keyed_hash(secret, &ev.program_id, &format!("rid\u{1f}{}", r.resident_id)), true),
        Match::NotFound | Match::Ambiguous => (ev.identity_key.clone(), false),
    }
}

/// The same date with day and month swapped, when that is a different valid date.
fn swapped(d: NaiveDate) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()).filter(|s| *s != d)
}

/// Keyed hashes of the one-deletion neighbourhood of the child's kana name, with the birth date
/// and with its swapped form, at the guardian's postal code.
pub fn near_keys(secret: &IdentitySecret, ev: &ApplicationEvent) -> Vec<String> {
    let c = &ev.application.child;
    let name: Vec<char> = format!("{}{}", kana_key(&c.family_name_kana), kana_key(&c.given_name_kana)).chars().collect();
    let mut variants: Vec<String> = vec![name.iter().collect()];
    for skip in 0..name.len() {
        let v: String = name.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, ch)| *ch).collect();
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    let postal = &ev.application.guardian.postal_code;
    let dates = std::iter::once(c.birth_date).chain(swapped(c.birth_date));
    dates
        .flat_map(|d| variants.iter().map(move |v| format!("near\u{1f}{v}\u{1f}{d}\u{1f}{postal}")))
        .map(|material| keyed_hash(secret, &ev.program_id, &material))
        .collect()
}

impl Dedupe {
    async fn mark(&self, raw: &Message, id: Uuid, to: Status, reason: ReasonCode, first: Uuid) -> Result<Handled, StageError> {
        let mut t = Transition::new(&[Status::Received], to, NAME);
        t.reasons = vec![reason];
        t.duplicate_of = Some(first);
        let outcome = self.status.transition(id, &t).await?;
        // The citizen is told (notify, through `applications.settled`); a redo finds the record
        // already moved and tells again, which notify's sent-record turns into nothing.
        if matches!(outcome, TransitionOutcome::Applied(_) | TransitionOutcome::AlreadyIn(_)) {
            self.bus.publish(topics::SETTLED, &raw.key, &raw.payload).await?;
        }
        match outcome {
            TransitionOutcome::Applied(record) => {
                self.metrics.observe_final(&record);
                self.metrics.decisions.with_label_values(&[NAME, to.as_str()]).inc();
                if to == Status::NeedsReview {
                    self.metrics.reasons.with_label_values(&[reason.as_str()]).inc();
                }
                Ok(Handled::Done(if to == Status::Duplicate { "duplicate" } else { "possible_duplicate" }))
            }
            TransitionOutcome::AlreadyIn(_) | TransitionOutcome::Refused(_) => Ok(Handled::Skipped),
            TransitionOutcome::NotFound => Err(StageError::Poison("no status record".into())),
        }
    }
}

fn parse_owner(owner: &str) -> Result<(Uuid, bool), StageError> {
    let (id, flag) = owner.split_once('|').unwrap_or((owner, "u"));
    let id = Uuid::parse_str(id).map_err(|_| StageError::Poison("dedupe owner is not an id".into()))?;
    Ok((id, flag == "r"))
}

#[async_trait]
impl Stage for Dedupe {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let ns = format!("dedupe:{}", ev.program_id);
        let me = ev.application_id.to_string();
        let (key, resolved) = exact_key(&self.registry, &self.secret, ev);
        let mut claim = self.status.claim(&ns, &key, &me).await?;
        if let Claim::Held { owner } = &claim {
            let (first, _) = parse_owner(owner)?;
            let first_rec = self.status.get(first).await?;
            // A rejected (or vanished) first application no longer holds the child's benefit.
            if first_rec.is_none_or(|r| r.status == Status::Rejected) && self.status.release(&ns, &key, owner).await? {
                claim = self.status.claim(&ns, &key, &me).await?;
            }
        }
        if let Claim::Held { owner } = claim {
            let (first, _) = parse_owner(&owner)?;
            return self.mark(raw, ev.application_id, Status::Duplicate, ReasonCode::DuplicateApplication, first).await;
        }

        let near_owner = format!("{me}|{}", if resolved { "r" } else { "u" });
        let claims = self.status.claim_many(&format!("near:{}", ev.program_id), &near_keys(&self.secret, ev), &near_owner).await?;
        for c in claims {
            if let Claim::Held { owner } = c {
                let (other, other_resolved) = parse_owner(&owner)?;
                if other != ev.application_id && !(resolved && other_resolved) {
                    return self.mark(raw, ev.application_id, Status::NeedsReview, ReasonCode::PossibleDuplicate, other).await;
                }
            }
        }
        self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
        Ok(Handled::Done("unique"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapped_dates() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("date");
        assert_eq!(swapped(d(2019, 4, 5)), Some(d(2019, 5, 4)));
        assert_eq!(swapped(d(2019, 4, 4)), None, "same date");
        assert_eq!(swapped(d(2019, 4, 25)), None, "no 25th month");
    }
}
