//! What the Kafka clients of one process cost and how long they wait, as Prometheus metrics:
//! requests sent to the brokers by kind (from librdkafka's own statistics, so nothing extra goes
//! over the wire), the time from `publish` to the brokers' acknowledgement, and the time from a
//! message's creation to its hand-over to a consumer (linger, replication to every in-sync
//! replica, the fetch, and the wait in the consumer's queue). Labels come from fixed tables: the
//! client kind, the request kind and the unprefixed topic name of `kyufu_ports::events::topics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use rdkafka::statistics::Statistics;

/// The request kinds counted one by one; every other kind is `other`.
const REQUESTS: &[(&str, &str)] = &[
    ("Produce", "produce"),
    ("Fetch", "fetch"),
    ("ListOffsets", "list_offsets"),
    ("Metadata", "metadata"),
    ("OffsetCommit", "offset_commit"),
    ("OffsetFetch", "offset_fetch"),
    ("FindCoordinator", "find_coordinator"),
    ("JoinGroup", "group"),
    ("SyncGroup", "group"),
    ("Heartbeat", "group"),
    ("LeaveGroup", "group"),
    ("InitProducerId", "init_producer_id"),
    ("ApiVersion", "api_versions"),
];

/// Client kinds: the one producer of a process, each stage's group consumer, and the consumer's
/// separate lag client.
pub(crate) const PRODUCER: &str = "producer";
pub(crate) const CONSUMER: &str = "consumer";
pub(crate) const LAG: &str = "lag";

fn request_label(name: &str) -> &'static str {
    REQUESTS.iter().find(|(n, _)| *n == name).map_or("other", |(_, label)| label)
}

/// The Kafka metrics of a process, registered once on its registry.
#[derive(Clone)]
pub struct KafkaMetrics {
    requests: IntCounterVec,
    publish: Histogram,
    consume_delay: HistogramVec,
}

impl KafkaMetrics {
    pub fn new(registry: &Registry) -> Self {
        use kyufu_telemetry::register;
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new("kyufu_kafka_requests_total", "Requests this process's Kafka clients sent to the brokers, by client and request kind"),
                &["client", "request"],
            )
            .expect("static metric"),
        );
        for client in [PRODUCER, CONSUMER, LAG] {
            for request in ["produce", "fetch", "list_offsets", "offset_fetch", "metadata", "other"] {
                requests.with_label_values(&[client, request]);
            }
        }
        let publish = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "kyufu_kafka_publish_duration_seconds",
                    "From publish to the acknowledgement of every in-sync replica (linger and batching included)",
                )
                .buckets(exponential_buckets(0.00025, 2.0, 16).expect("static buckets")),
            )
            .expect("static metric"),
        );
        let consume_delay = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "kyufu_kafka_consume_delay_seconds",
                    "From a message's creation by its producer to its hand-over to this consumer, by topic",
                )
                .buckets(exponential_buckets(0.00025, 2.0, 18).expect("static buckets")),
                &["topic"],
            )
            .expect("static metric"),
        );
        KafkaMetrics { requests, publish, consume_delay }
    }

    pub(crate) fn published(&self, took: Duration) {
        self.publish.observe(took.as_secs_f64());
    }

    /// `topic` is unprefixed; a name outside the project's table counts as `other`.
    pub(crate) fn consumed(&self, topic: &str, delay: Duration) {
        let label = kyufu_ports::events::topics::ALL.iter().find(|t| **t == topic).copied().unwrap_or("other");
        self.consume_delay.with_label_values(&[label]).observe(delay.as_secs_f64());
    }
}

/// Turns librdkafka's cumulative per-connection request counts into counter increments.
pub(crate) struct RequestCounter {
    client: &'static str,
    metrics: KafkaMetrics,
    /// Last count seen per (broker handle, request kind).
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl RequestCounter {
    pub(crate) fn new(client: &'static str, metrics: KafkaMetrics) -> Self {
        RequestCounter { client, metrics, seen: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn record(&self, stats: &Statistics) {
        let Ok(mut seen) = self.seen.lock() else { return };
        for broker in stats.brokers.values() {
            for (kind, count) in &broker.req {
                if *count <= 0 {
                    continue;
                }
                let last = seen.entry((broker.name.clone(), kind.clone())).or_insert(0);
                // A count below the last one means the broker handle was made anew.
                let delta = if *count >= *last { *count - *last } else { *count };
                *last = *count;
                if let Ok(delta) = u64::try_from(delta) {
                    if delta > 0 {
                        self.metrics.requests.with_label_values(&[self.client, request_label(kind)]).inc_by(delta);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_kinds_map_to_a_fixed_table() {
        assert_eq!(request_label("Produce"), "produce");
        assert_eq!(request_label("Heartbeat"), "group");
        assert_eq!(request_label("SomethingNew"), "other");
    }

    #[test]
    fn cumulative_counts_become_increments_per_connection() {
        let registry = prometheus::Registry::new();
        let metrics = KafkaMetrics::new(&registry);
        let counter = RequestCounter::new(PRODUCER, metrics);
        let stats = |produce: i64| -> Statistics {
            let broker = format!(
                r#"{{"name": "b1", "nodeid": 1, "nodename": "b1", "source": "learned", "state": "UP", "stateage": 0,
                "outbuf_cnt": 0, "outbuf_msg_cnt": 0, "waitresp_cnt": 0, "waitresp_msg_cnt": 0, "tx": 0, "txbytes": 0,
                "txerrs": 0, "txretries": 0, "txidle": 0, "req_timeouts": 0, "rx": 0, "rxbytes": 0, "rxerrs": 0,
                "rxcorriderrs": 0, "rxpartial": 0, "rxidle": 0, "zbuf_grow": 0, "buf_grow": 0,
                "req": {{"Produce": {produce}, "Fetch": 0}}, "toppars": {{}}}}"#
            );
            let json = format!(
                r#"{{"name": "p", "client_id": "c", "type": "producer", "ts": 0, "time": 0, "age": 0, "replyq": 0,
                "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0, "simple_cnt": 0, "metadata_cache_cnt": 0,
                "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0, "txmsg_bytes": 0, "rxmsgs": 0,
                "rxmsg_bytes": 0, "brokers": {{"b1": {broker}}}, "topics": {{}}}}"#
            );
            serde_json::from_str(&json).expect("statistics")
        };
        counter.record(&stats(3));
        counter.record(&stats(5));
        let text = kyufu_telemetry::encode(&registry);
        assert!(text.contains("kyufu_kafka_requests_total{client=\"producer\",request=\"produce\"} 5"), "{text}");
    }
}
