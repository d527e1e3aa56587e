//! Coupon issuance: for each approved application, a code unique across the program (claimed in
//! the status store before it is written to the record), written with the conditional move
//! `approved -> coupon_issued` together with the hand-over to the notify stage (one unit of work),
//! then the guardian is notified.
//!
//! Safe to redo: a replay finds `coupon_issued` and only passes the application on to the notify
//! stage again (which mails once). If two runs race, the loser releases the code it claimed, so
//! the applicant has exactly one code. The email is the notify stage's job, so a mail outage never
//! holds back issuance.

use std::sync::Arc;

use async_trait::async_trait;
use kyufu_domain::{Program, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{Claim, EventBus, Message, Publication, StatusStore, Transition, TransitionOutcome, UnitOfWork};

use crate::coupon_code;
use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "coupon";

pub struct CouponIssuer {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    /// The issuing move and the hand-over to the notify stage as one unit.
    pub units: Arc<dyn UnitOfWork>,
    pub program: Program,
    /// Where issued applications go for their notification.
    pub output_topic: String,
    pub metrics: StageMetrics,
}

#[async_trait]
impl Stage for CouponIssuer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        match record.status {
            Status::CouponIssued => {
                // The crash may have come between issuing and passing it on.
                self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
                return Ok(Handled::Skipped);
            }
            Status::Approved => {}
            _ => return Ok(Handled::Skipped),
        }
        let ns = format!("coupon:{}", ev.program_id);
        let me = ev.application_id.to_string();
        let code = loop {
            let candidate = coupon_code::generate();
            match self.status.claim(&ns, &candidate, &me).await? {
                Claim::Won => break candidate,
                Claim::Held { .. } => tracing::warn!("coupon code collision; drawing again"),
            }
        };
        let mut t = Transition::new(&[Status::Approved], Status::CouponIssued, NAME);
        t.coupon_code = Some(code.clone());
        let then = Publication { topic: self.output_topic.clone(), key: raw.key.clone(), payload: raw.payload.clone() };
        match self.units.transition_and_publish(ev.application_id, &t, &then).await? {
            TransitionOutcome::Applied(record) => {
                self.metrics.observe_final(&record);
                self.metrics.coupons_issued.inc();
                self.metrics.decisions.with_label_values(&[NAME, Status::CouponIssued.as_str()]).inc();
                Ok(Handled::Done("coupon_issued"))
            }
            TransitionOutcome::AlreadyIn(rec) | TransitionOutcome::Refused(rec) => {
                // Someone else issued first (or the status moved on): give our code back.
                if rec.coupon_code.as_deref() != Some(code.as_str()) {
                    self.status.release(&ns, &code, &me).await?;
                }
                Ok(Handled::Skipped)
            }
            TransitionOutcome::NotFound => Err(StageError::Poison("no status record".into())),
        }
    }
}
