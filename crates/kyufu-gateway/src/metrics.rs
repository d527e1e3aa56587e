//! Gateway metrics: queue length, joins, admissions, polls by outcome, passes, proxied requests.
//! Labels are outcomes and route patterns; never tickets, addresses or paths with ids.

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub(crate) struct GatewayMetrics {
    pub queue_length: IntGauge,
    pub joins: IntCounter,
    pub admitted: IntCounter,
    pub polls: IntCounterVec,
    pub passes_issued: IntCounter,
    pub proxy_requests: IntCounterVec,
    pub proxy_seconds: HistogramVec,
}

impl GatewayMetrics {
    pub fn new(registry: &Registry) -> Self {
        use kyufu_telemetry::register;
        GatewayMetrics {
            queue_length: register(
                registry,
                IntGauge::new("kyufu_gateway_queue_length", "Visitors waiting (issued minus admitted)").expect("static metric"),
            ),
            joins: register(registry, IntCounter::new("kyufu_gateway_joins_total", "Visitors who joined the queue").expect("static metric")),
            admitted: register(
                registry,
                IntCounter::new("kyufu_gateway_admitted_total", "Visitors admitted from the queue").expect("static metric"),
            ),
            polls: register(
                registry,
                IntCounterVec::new(Opts::new("kyufu_gateway_status_polls_total", "Queue status polls by outcome"), &["outcome"])
                    .expect("static metric"),
            ),
            passes_issued: register(
                registry,
                IntCounter::new("kyufu_gateway_passes_issued_total", "Admission passes issued").expect("static metric"),
            ),
            proxy_requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new("kyufu_gateway_proxy_requests_total", "Requests proxied to intake by route and status class"),
                    &["route", "class"],
                )
                .expect("static metric"),
            ),
            proxy_seconds: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("kyufu_gateway_proxy_duration_seconds", "Time until intake's response headers")
                        .buckets(exponential_buckets(0.001, 2.0, 15).expect("static buckets")),
                    &["route"],
                )
                .expect("static metric"),
            ),
        }
    }
}
