//! Pipeline metrics: per stage processed (by outcome), retries, dead letters, processing time, the
//! wait between a message's poll and the start of its handling, and consumer lag; decisions by
//! outcome and reason; coupons and notifications; and the figure applicants feel, submit→final:
//! from intake's `received` to the first status an application ends in without a person
//! (`duplicate`, `needs_review`, `coupon_issued`), read from the record's own history when a stage
//! moves it there.

use kyufu_domain::Status;
use kyufu_ports::ApplicationRecord;
use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The statuses an application ends in without a person: submit→final stops at the first of them.
pub const FINAL: [Status; 3] = [Status::Duplicate, Status::NeedsReview, Status::CouponIssued];

/// Buckets of submit→final, seconds: fine around the 2 s target, coarse up to ten minutes of
/// backlog.
const SUBMIT_TO_FINAL_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
    60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];

#[derive(Clone)]
pub struct StageMetrics {
    pub processed: IntCounterVec,
    pub retries: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub duration: HistogramVec,
    pub queue_wait: HistogramVec,
    pub submit_to_final: HistogramVec,
    pub lag: IntGaugeVec,
    pub decisions: IntCounterVec,
    pub reasons: IntCounterVec,
    pub coupons_issued: IntCounter,
    pub notifications: IntCounterVec,
}

impl StageMetrics {
    pub fn new(registry: &Registry) -> Self {
        use kyufu_telemetry::register;
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("static metric"))
        };
        StageMetrics {
            processed: counter_vec(
                "kyufu_pipeline_messages_processed_total",
                "Messages a stage finished, by outcome",
                &["stage", "outcome"],
            ),
            retries: counter_vec("kyufu_pipeline_retries_total", "Handling attempts that will be retried", &["stage"]),
            dead_letters: counter_vec(
                "kyufu_pipeline_dead_letters_total",
                "Messages sent to the dead-letter topic",
                &["stage"],
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("kyufu_pipeline_processing_duration_seconds", "Time to handle one message")
                        .buckets(exponential_buckets(0.0005, 2.0, 15).expect("static buckets")),
                    &["stage"],
                )
                .expect("static metric"),
            ),
            queue_wait: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "kyufu_pipeline_queue_wait_seconds",
                        "From a message's poll to the start of its handling in its lane (lanes busy, same key ahead)",
                    )
                    .buckets(exponential_buckets(0.0001, 2.0, 18).expect("static buckets")),
                    &["stage"],
                )
                .expect("static metric"),
            ),
            submit_to_final: {
                let h = register(
                    registry,
                    HistogramVec::new(
                        HistogramOpts::new(
                            "kyufu_pipeline_submit_to_final_seconds",
                            "From intake's received to the first final status (duplicate, needs_review, coupon_issued), from the record's history, by that status",
                        )
                        .buckets(SUBMIT_TO_FINAL_BUCKETS.to_vec()),
                        &["status"],
                    )
                    .expect("static metric"),
                );
                for s in FINAL {
                    h.with_label_values(&[s.as_str()]);
                }
                h
            },
            lag: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("kyufu_pipeline_consumer_lag_messages", "Messages not yet committed by the stage's group"),
                    &["stage"],
                )
                .expect("static metric"),
            ),
            decisions: counter_vec(
                "kyufu_pipeline_decisions_total",
                "Automatic decisions by stage and resulting status",
                &["stage", "status"],
            ),
            reasons: counter_vec("kyufu_pipeline_review_reasons_total", "Reasons given for review", &["reason"]),
            coupons_issued: register(
                registry,
                IntCounter::new("kyufu_pipeline_coupons_issued_total", "Coupons issued").expect("static metric"),
            ),
            notifications: counter_vec(
                "kyufu_pipeline_notifications_total",
                "Coupon notifications by outcome",
                &["outcome"],
            ),
        }
    }
}

impl StageMetrics {
    /// Observes submit→final for a record a stage just moved, if that move made it final for the
    /// first time (a later final status, after a person's review, is not the applicant's wait for
    /// the automatic answer).
    pub fn observe_final(&self, record: &ApplicationRecord) {
        if !FINAL.contains(&record.status) {
            return;
        }
        let finals = record.history.iter().filter(|c| FINAL.contains(&c.status)).count();
        if finals != 1 {
            return;
        }
        let received = record.history.first().map_or(record.created_at, |c| c.at);
        let waited = (record.updated_at - received).to_std().unwrap_or_default();
        self.submit_to_final.with_label_values(&[record.status.as_str()]).observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyufu_ports::{Transition, TransitionOutcome};

    #[test]
    fn submit_to_final_is_observed_once_from_the_history() {
        let registry = Registry::new();
        let m = StageMetrics::new(&registry);
        let at = chrono::Utc::now();
        let record = ApplicationRecord::received(uuid::Uuid::new_v4(), "p", at);
        let moved = |r: &ApplicationRecord, to: Status, from: Status, secs: i64| match r
            .apply(&Transition::new(&[from], to, "t"), at + chrono::Duration::milliseconds(secs * 1000))
        {
            TransitionOutcome::Applied(next) => next,
            other => panic!("{other:?}"),
        };
        let approved = moved(&record, Status::Approved, Status::Received, 1);
        m.observe_final(&approved);
        let issued = moved(&approved, Status::CouponIssued, Status::Approved, 3);
        m.observe_final(&issued);
        let review = moved(&record, Status::NeedsReview, Status::Received, 2);
        let reviewed = moved(&moved(&review, Status::Approved, Status::NeedsReview, 50), Status::CouponIssued, Status::Approved, 60);
        m.observe_final(&reviewed);
        let text = kyufu_telemetry::encode(&registry);
        assert!(text.contains("kyufu_pipeline_submit_to_final_seconds_count{status=\"coupon_issued\"} 1"), "{text}");
        assert!(text.contains("kyufu_pipeline_submit_to_final_seconds_sum{status=\"coupon_issued\"} 3"), "{text}");
        assert!(text.contains("kyufu_pipeline_submit_to_final_seconds_count{status=\"needs_review\"} 0"), "{text}");
    }
}
