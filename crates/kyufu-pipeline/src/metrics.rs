//! Pipeline metrics: per stage processed (by outcome), retries, dead letters, processing time and
//! consumer lag; decisions by outcome and reason; coupons and notifications.

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct StageMetrics {
    pub processed: IntCounterVec,
    pub retries: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub duration: HistogramVec,
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
