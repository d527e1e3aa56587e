//! Intake metrics: requests by route pattern and outcome, latency, upload sizes, bus publish
//! latency and failures, status lookups by outcome, virus scans by outcome, and the form funnel. Labels are route
//! patterns, statuses, funnel steps and error codes only: every value comes from a fixed table,
//! and every series that alerts or dashboards use is created at zero on start, so `rate()` and
//! `increase()` see the first event.

use kyufu_domain::Status;
use prometheus::{exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// Outcomes of a status lookup besides the statuses themselves.
pub(crate) const LOOKUP_NOT_FOUND: &str = "not_found";
pub(crate) const LOOKUP_UNAVAILABLE: &str = "unavailable";

/// Outcomes of a virus scan: the only values of the `outcome` label (never a signature name).
pub(crate) const SCAN_CLEAN: &str = "clean";
pub(crate) const SCAN_INFECTED: &str = "infected";
pub(crate) const SCAN_ERROR: &str = "error";

#[derive(Clone)]
pub(crate) struct IntakeMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub upload_bytes: Histogram,
    pub publish_seconds: Histogram,
    pub publish_failures: IntCounterVec,
    pub accepted: IntCounterVec,
    pub status_lookups: IntCounterVec,
    pub funnel_steps: IntCounterVec,
    pub documents_scanned: IntCounterVec,
    pub passes_spent: IntCounter,
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
            HistogramOpts::new("kyufu_intake_publish_duration_seconds", "Time to write an accepted application: documents, the record (the commit point) and its bus event (one commit on the embedded store)")
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
        let status_lookups = IntCounterVec::new(
            Opts::new(
                "kyufu_intake_status_lookups_total",
                "Applicant status lookups by outcome: the status shown, not_found (unknown id or wrong token) or unavailable",
            ),
            &["outcome"],
        )
        .expect("static metric");
        for s in Status::ALL {
            status_lookups.with_label_values(&[s.as_str()]);
        }
        status_lookups.with_label_values(&[LOOKUP_NOT_FOUND]);
        status_lookups.with_label_values(&[LOOKUP_UNAVAILABLE]);
        let funnel_steps = IntCounterVec::new(
            Opts::new(
                "kyufu_funnel_steps_total",
                "Form funnel events reported by the citizen pages, by step and (for step=error) error code",
            ),
            &["step", "error_code"],
        )
        .expect("static metric");
        for step in crate::funnel::STEPS {
            funnel_steps.with_label_values(&[step, ""]);
        }
        for replay in ["false", "true"] {
            accepted.with_label_values(&[replay]);
        }
        for kind in ["unavailable", "already_exists", "corrupt"] {
            publish_failures.with_label_values(&[kind]);
        }
        let documents_scanned = IntCounterVec::new(
            Opts::new(
                "kyufu_intake_documents_scanned_total",
                "Documents sent to the virus scanner, by outcome: clean, infected, or error (unreachable, timeout, scanner error)",
            ),
            &["outcome"],
        )
        .expect("static metric");
        for outcome in [SCAN_CLEAN, SCAN_INFECTED, SCAN_ERROR] {
            documents_scanned.with_label_values(&[outcome]);
        }
        let passes_spent = IntCounter::new(
            "kyufu_intake_passes_spent_total",
            "Admission passes spent by the applicant finishing (later use of them is refused: admission_spent)",
        )
        .expect("static metric");
        IntakeMetrics {
            passes_spent: register(registry, passes_spent),
            documents_scanned: register(registry, documents_scanned),
            status_lookups: register(registry, status_lookups),
            funnel_steps: register(registry, funnel_steps),
            requests: register(registry, requests),
            latency: register(registry, latency),
            upload_bytes: register(registry, upload_bytes),
            publish_seconds: register(registry, publish_seconds),
            publish_failures: register(registry, publish_failures),
            accepted: register(registry, accepted),
        }
    }
}
