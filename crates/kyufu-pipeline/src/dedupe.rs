//! Dedupe: one benefit per child per program. The child's identity key (a keyed hash computed at
//! intake) is claimed in the status store with SET NX semantics; the first application to claim it
//! goes on to ID-check, a later one for the same child becomes `duplicate` with a pointer to the
//! first. A rejected first application stops blocking: its claim is handed to the newcomer.
//!
//! Safe to redo: a replay finds the claim already held by the same application and forwards again;
//! a replayed duplicate finds the record already `duplicate`.

use std::sync::Arc;

use async_trait::async_trait;
use kyufu_domain::{ReasonCode, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{Claim, EventBus, Message, StatusStore, Transition, TransitionOutcome};
use uuid::Uuid;

use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub struct Dedupe {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub output_topic: String,
    pub metrics: StageMetrics,
}

pub const NAME: &str = "dedupe";

fn namespace(program_id: &str) -> String {
    format!("dedupe:{program_id}")
}

#[async_trait]
impl Stage for Dedupe {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let ns = namespace(&ev.program_id);
        let me = ev.application_id.to_string();
        let mut claim = self.status.claim(&ns, &ev.identity_key, &me).await?;
        if let Claim::Held { owner } = &claim {
            let first = Uuid::parse_str(owner).map_err(|_| StageError::Poison("dedupe owner is not an id".into()))?;
            let first_rec = self.status.get(first).await?;
            // A rejected (or vanished) first application no longer holds the child's benefit.
            if first_rec.is_none_or(|r| r.status == Status::Rejected)
                && self.status.release(&ns, &ev.identity_key, owner).await?
            {
                claim = self.status.claim(&ns, &ev.identity_key, &me).await?;
            }
        }
        match claim {
            Claim::Won => {
                self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
                Ok(Handled::Done("unique"))
            }
            Claim::Held { owner } => {
                let first = Uuid::parse_str(&owner).map_err(|_| StageError::Poison("dedupe owner is not an id".into()))?;
                let mut t = Transition::new(&[Status::Received], Status::Duplicate, NAME);
                t.reasons = vec![ReasonCode::DuplicateApplication];
                t.duplicate_of = Some(first);
                match self.status.transition(ev.application_id, &t).await? {
                    TransitionOutcome::Applied(_) => {
                        self.metrics.decisions.with_label_values(&[NAME, Status::Duplicate.as_str()]).inc();
                        Ok(Handled::Done("duplicate"))
                    }
                    TransitionOutcome::AlreadyIn(_) | TransitionOutcome::Refused(_) => Ok(Handled::Skipped),
                    TransitionOutcome::NotFound => Err(StageError::Poison("no status record".into())),
                }
            }
        }
    }
}
