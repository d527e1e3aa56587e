//! Intake metrics: requests by route pattern and outcome, latency, upload sizes, bus publish
//! latency and failures. Labels are route patterns and error codes only.

use prometheus::{exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub(crate) struct IntakeMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub upload_bytes: Histogram,
    pub publish_seconds: Histogram,
    pub publish_failures: IntCounterVec,
    pub accepted: IntCounterVec,
}

impl IntakeMetrics {
    pub fn new(registry: &Registry) -> Self {
        use kyufu_telemetry::register;
        let requests = IntCounterVec::new(
            Opts::new("kyufu_intake_requests_total", "Intake requests by route pattern and outcome (HTTP status, error code)"),
            &["route", "status", "code"],
        )
        .expect("static metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("kyufu_intake_request_duration_seconds", "Intake request latency by route pattern")
                .buckets(exponential_buckets(0.001, 2.0, 15).expect("static buckets")),
            &["route"],
        )
        .expect("static metric");
        let upload_bytes = Histogram::with_opts(
            HistogramOpts::new("kyufu_intake_document_size_bytes", "Size of accepted identity documents")
                .buckets(exponential_buckets(16_384.0, 2.0, 11).expect("static buckets")),
        )
        .expect("static metric");
        let publish_seconds = Histogram::with_opts(
            HistogramOpts::new("kyufu_intake_publish_duration_seconds", "Time to publish an application to the bus")
                .buckets(exponential_buckets(0.0005, 2.0, 15).expect("static buckets")),
        )
        .expect("static metric");
        let publish_failures = IntCounterVec::new(
            Opts::new("kyufu_intake_publish_failures_total", "Bus publishes that failed after the commit point (the relay retries them)"),
            &["kind"],
        )
        .expect("static metric");
        let accepted = IntCounterVec::new(
            Opts::new("kyufu_intake_applications_accepted_total", "Applications accepted (202), by whether it was a retry"),
            &["replay"],
        )
        .expect("static metric");
        IntakeMetrics {
            requests: register(registry, requests),
            latency: register(registry, latency),
            upload_bytes: register(registry, upload_bytes),
            publish_seconds: register(registry, publish_seconds),
            publish_failures: register(registry, publish_failures),
            accepted: register(registry, accepted),
        }
    }
}
