//! Coupon issuance: for each approved application, a code unique across the program (claimed in
//! the status store before it is written to the record), written with the conditional move
//! `approved -> coupon_issued`, then the guardian is notified.
//!
//! Safe to redo: a replay finds `coupon_issued` and only re-sends the (idempotent) notification. If
//! two runs race, the loser releases the code it claimed, so the applicant has exactly one code.
//! A failed notification is retried a few times but never holds back issuance.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kyufu_domain::{Program, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{Claim, Message, StatusStore, Transition, TransitionOutcome};

use crate::coupon_code;
use crate::metrics::StageMetrics;
use crate::notify::{coupon_email, Notifier};
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "coupon";

pub struct CouponIssuer {
    pub status: Arc<dyn StatusStore>,
    pub notifier: Arc<dyn Notifier>,
    pub program: Program,
    pub metrics: StageMetrics,
}

impl CouponIssuer {
    async fn notify(&self, ev: &ApplicationEvent, code: &str) {
        let mail = coupon_email(&self.program, ev.application_id, &ev.application.guardian.email, &ev.application.child.given_name, code);
        for attempt in 1..=3u32 {
            match self.notifier.send(&mail).await {
                Ok(()) => {
                    self.metrics.notifications.with_label_values(&["sent"]).inc();
                    return;
                }
                Err(e) => {
                    tracing::warn!(application_id = %ev.application_id, attempt, error = %e, "notification failed");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        self.metrics.notifications.with_label_values(&["failed"]).inc();
    }
}

#[async_trait]
impl Stage for CouponIssuer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, _raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        match record.status {
            Status::CouponIssued => {
                if let Some(code) = &record.coupon_code {
                    self.notify(ev, code).await;
                }
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
        match self.status.transition(ev.application_id, &t).await? {
            TransitionOutcome::Applied(_) => {
                self.metrics.coupons_issued.inc();
                self.metrics.decisions.with_label_values(&[NAME, Status::CouponIssued.as_str()]).inc();
                self.notify(ev, &code).await;
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
