//! Gateway metrics, registered on the process registry passed in. Labels come from fixed sets
//! (poll outcome, proxied route pattern, status class, error kind): never a ticket, an address or a
//! raw path.
//!
//! The launch-day questions they answer: how many wait (`queue_length`), how long they waited
//! (`queue_wait_seconds`, from the signed join and admission times in each ticket), how fast we
//! admit (`admitted_total`, `admission_rate`), how many may be filling in the form now
//! (`active_sessions`), and whether the proxy to intake is healthy.

use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// Waits from "admitted at once" to a long launch morning, in seconds.
const WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0,
    14400.0,
];

#[derive(Clone)]
pub(crate) struct GatewayMetrics {
    pub queue_length: IntGauge,
    pub admitted: IntCounter,
    pub joins: IntCounter,
    pub polls: PollOutcomes,
    pub passes: IntCounter,
    pub passes_spent: IntCounter,
    pub passes_rejected: IntCounter,
    pub paused: IntGauge,
    pub admission_rate: Gauge,
    pub proxy_requests: IntCounterVec,
    pub proxy_seconds: HistogramVec,
    pub proxy_errors: IntCounterVec,
    pub queue_wait: Histogram,
    pub active_sessions: IntGauge,
    pub tickets_expired: IntCounter,
    pub effective_rate: Gauge,
    pub joins_limited: IntCounter,
    pub requests_limited: IntCounterVec,
}

impl GatewayMetrics {
    pub fn new(registry: &Registry) -> Self {
        use kyufu_telemetry::register;
        // Metric definitions are static, so construction can only fail on a programming error.
        let polls = IntCounterVec::new(Opts::new("kyufu_gateway_status_polls_total", "Status polls by outcome"), &["outcome"])
            .expect("static metric");
        let m = GatewayMetrics {
            queue_length: IntGauge::new("kyufu_gateway_queue_length", "Visitors waiting: issued minus cursor")
                .expect("static metric"),
            admitted: IntCounter::new(
                "kyufu_gateway_admitted_total",
                "Sequence numbers the serving cursor moved past (by this node)",
            )
            .expect("static metric"),
            joins: IntCounter::new("kyufu_gateway_joins_total", "Visitors who joined the queue").expect("static metric"),
            polls: PollOutcomes::new(&polls),
            passes: IntCounter::new(
                "kyufu_gateway_passes_issued_total",
                "Admission passes issued (once per admitted ticket; re-serving the same pass is not counted)",
            )
            .expect("static metric"),
            passes_spent: IntCounter::new(
                "kyufu_gateway_passes_spent_total",
                "Admission passes spent through this node (the visitor finished; the session ends at once)",
            )
            .expect("static metric"),
            passes_rejected: IntCounter::new(
                "kyufu_gateway_passes_rejected_total",
                "Requests intake refused for their admission pass (missing, invalid, expired or already spent: 403)",
            )
            .expect("static metric"),
            paused: IntGauge::new("kyufu_gateway_paused", "1 while admissions are paused").expect("static metric"),
            admission_rate: Gauge::new(
                "kyufu_gateway_admission_rate",
                "Measured admissions per second while visitors wait (drives eta_seconds)",
            )
            .expect("static metric"),
            proxy_requests: IntCounterVec::new(
                Opts::new("kyufu_gateway_proxy_requests_total", "Proxied requests by route pattern and status class"),
                &["route", "status_class"],
            )
            .expect("static metric"),
            proxy_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "kyufu_gateway_proxy_duration_seconds",
                    "Time from request to upstream response headers, including the upload",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16).expect("static buckets")),
                &["route"],
            )
            .expect("static metric"),
            proxy_errors: IntCounterVec::new(
                Opts::new("kyufu_gateway_proxy_errors_total", "Proxied requests the gateway answered itself, by kind"),
                &["kind"],
            )
            .expect("static metric"),
            queue_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "kyufu_gateway_queue_wait_seconds",
                    "Time from joining the queue to admission, observed once per admitted ticket (whole seconds)",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
            )
            .expect("static metric"),
            active_sessions: IntGauge::new(
                "kyufu_gateway_active_sessions",
                "Admission passes this node issued within the last pass lifetime: visitors who may be in the form now",
            )
            .expect("static metric"),
            tickets_expired: IntCounter::new(
                "kyufu_gateway_tickets_expired_total",
                "Abandoned tickets the serving cursor skipped (no poll within the expiry time) without using an admission",
            )
            .expect("static metric"),
            effective_rate: Gauge::new(
                "kyufu_gateway_effective_admission_rate",
                "Admissions per second allowed now: the operator's rate, backed off while intake is overloaded (0 while paused)",
            )
            .expect("static metric"),
            joins_limited: IntCounter::new(
                "kyufu_gateway_joins_rate_limited_total",
                "Joins refused with 429 because one client address joined too often",
            )
            .expect("static metric"),
            requests_limited: IntCounterVec::new(
                Opts::new(
                    "kyufu_gateway_requests_rate_limited_total",
                    "API requests refused with 429 because one client address sent too many, by limit (submit, lookup)",
                ),
                &["limit"],
            )
            .expect("static metric"),
        };
        // Every value of the fixed label sets exists from the start at zero, so `increase()` sees
        // the first event and dashboards show the series before anything happened.
        for kind in crate::proxy::FAILURE_KINDS {
            m.proxy_errors.with_label_values(&[kind]);
        }
        for limit in ["submit", "lookup"] {
            m.requests_limited.with_label_values(&[limit]);
        }
        GatewayMetrics {
            queue_length: register(registry, m.queue_length),
            admitted: register(registry, m.admitted),
            joins: register(registry, m.joins),
            // The outcome counters are series of the registered family.
            polls: {
                register(registry, polls);
                m.polls
            },
            passes: register(registry, m.passes),
            passes_spent: register(registry, m.passes_spent),
            passes_rejected: register(registry, m.passes_rejected),
            paused: register(registry, m.paused),
            admission_rate: register(registry, m.admission_rate),
            proxy_requests: register(registry, m.proxy_requests),
            proxy_seconds: register(registry, m.proxy_seconds),
            proxy_errors: register(registry, m.proxy_errors),
            queue_wait: register(registry, m.queue_wait),
            active_sessions: register(registry, m.active_sessions),
            tickets_expired: register(registry, m.tickets_expired),
            effective_rate: register(registry, m.effective_rate),
            joins_limited: register(registry, m.joins_limited),
            requests_limited: register(registry, m.requests_limited),
        }
    }
}

/// `kyufu_gateway_status_polls_total` by outcome, each series looked up once: a poll counts itself
/// without hashing a label value. Creating them here also makes every outcome exist at zero.
#[derive(Clone)]
pub(crate) struct PollOutcomes {
    pub admitted: IntCounter,
    pub waiting: IntCounter,
    pub expired: IntCounter,
    pub unavailable: IntCounter,
    pub invalid: IntCounter,
}

impl PollOutcomes {
    fn new(polls: &IntCounterVec) -> Self {
        let outcome = |name: &str| polls.with_label_values(&[name]);
        PollOutcomes {
            admitted: outcome("admitted"),
            waiting: outcome("waiting"),
            expired: outcome("expired"),
            unavailable: outcome("unavailable"),
            invalid: outcome("invalid"),
        }
    }
}
