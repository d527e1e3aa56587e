//! Per-step latency of every call a role makes to its backing services: the ports wrapped in
//! decorators that time each call into `kyufu_port_operation_duration_seconds{port, operation}`
//! (labels from the fixed tables below: the four ports and their methods). The role processes
//! (intake, workers, review) build their ports through `timed`, and the unit of work's sequence
//! runs over the timed ports, so intake's accept shows as document puts, the record's create and
//! the publish, each with its own histogram. Counting those histograms per application gives the
//! round trips a step costs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kyufu_domain::Status;
use kyufu_ports::{
    Acceptance, Accepted, AdapterError, ApplicationRecord, Claim, Consumer, CreateOutcome, Document, DocumentStore,
    EventBus, IdempotencyClaim, Publication, StatusStore, Transition, TransitionOutcome, UnitOfWork,
};
use prometheus::{HistogramOpts, HistogramVec, Registry};
use uuid::Uuid;

/// The histogram every decorator observes into.
#[derive(Clone)]
pub struct PortTimer {
    seconds: HistogramVec,
}

impl PortTimer {
    pub fn new(registry: &Registry) -> Self {
        let seconds = kyufu_telemetry::register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "kyufu_port_operation_duration_seconds",
                    "One call to a backing service through its port (status store, document store, event bus, unit of work), by operation",
                )
                .buckets(prometheus::exponential_buckets(0.00025, 2.0, 16).expect("static buckets")),
                &["port", "operation"],
            )
            .expect("static metric"),
        );
        PortTimer { seconds }
    }

    async fn time<T>(&self, port: &'static str, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.observe(port, operation, started.elapsed());
        out
    }

    fn observe(&self, port: &'static str, operation: &'static str, took: Duration) {
        self.seconds.with_label_values(&[port, operation]).observe(took.as_secs_f64());
    }
}

const STATUS: &str = "status_store";
const DOCUMENTS: &str = "document_store";
const BUS: &str = "event_bus";
const UNITS: &str = "unit_of_work";

/// Wraps the ports in timing decorators; the unit of work is rebuilt over the timed ports when it
/// is the sequence over separate stores (an atomic one is timed as a whole).
pub fn ports(ports: kyufu_ports::Ports, sequential: bool, timer: &PortTimer) -> kyufu_ports::Ports {
    let bus: Arc<dyn EventBus> = Arc::new(TimedBus { inner: ports.bus, timer: timer.clone() });
    let status: Arc<dyn StatusStore> = Arc::new(TimedStatus { inner: ports.status, timer: timer.clone() });
    let documents: Arc<dyn DocumentStore> = Arc::new(TimedDocuments { inner: ports.documents, timer: timer.clone() });
    let inner_units = if sequential {
        kyufu_ports::Ports::sequential(bus.clone(), status.clone(), documents.clone()).units
    } else {
        ports.units
    };
    let units: Arc<dyn UnitOfWork> = Arc::new(TimedUnits { inner: inner_units, timer: timer.clone() });
    kyufu_ports::Ports { bus, status, documents, units }
}

struct TimedStatus {
    inner: Arc<dyn StatusStore>,
    timer: PortTimer,
}

#[async_trait]
impl StatusStore for TimedStatus {
    async fn create(&self, record: &ApplicationRecord, idem: Option<&IdempotencyClaim>) -> Result<CreateOutcome, AdapterError> {
        self.timer.time(STATUS, "create", self.inner.create(record, idem)).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<ApplicationRecord>, AdapterError> {
        self.timer.time(STATUS, "get", self.inner.get(id)).await
    }
    async fn transition(&self, id: Uuid, t: &Transition) -> Result<TransitionOutcome, AdapterError> {
        self.timer.time(STATUS, "transition", self.inner.transition(id, t)).await
    }
    async fn claim(&self, namespace: &str, key: &str, owner: &str) -> Result<Claim, AdapterError> {
        self.timer.time(STATUS, "claim", self.inner.claim(namespace, key, owner)).await
    }
    async fn claim_many(&self, namespace: &str, keys: &[String], owner: &str) -> Result<Vec<Claim>, AdapterError> {
        self.timer.time(STATUS, "claim_many", self.inner.claim_many(namespace, keys, owner)).await
    }
    async fn claim_expiring(&self, namespace: &str, key: &str, owner: &str, ttl: Duration) -> Result<Claim, AdapterError> {
        self.timer.time(STATUS, "claim_expiring", self.inner.claim_expiring(namespace, key, owner, ttl)).await
    }
    async fn claimed_by(&self, namespace: &str, key: &str) -> Result<Option<String>, AdapterError> {
        self.timer.time(STATUS, "claimed_by", self.inner.claimed_by(namespace, key)).await
    }
    async fn release(&self, namespace: &str, key: &str, owner: &str) -> Result<bool, AdapterError> {
        self.timer.time(STATUS, "release", self.inner.release(namespace, key, owner)).await
    }
    async fn reassign(&self, namespace: &str, key: &str, from: &str, to: &str) -> Result<Claim, AdapterError> {
        self.timer.time(STATUS, "reassign", self.inner.reassign(namespace, key, from, to)).await
    }
    // The compare-and-set is one step in the store (a Lua script on Redis): forwarded, not rebuilt
    // from release and claim by the trait's default. Leases are built on these two.
    async fn replace_claim(&self, namespace: &str, key: &str, expected: Option<&str>, owner: &str) -> Result<bool, AdapterError> {
        self.timer.time(STATUS, "replace_claim", self.inner.replace_claim(namespace, key, expected, owner)).await
    }
    async fn replace_claim_until(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&str>,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, AdapterError> {
        self.timer.time(STATUS, "replace_claim", self.inner.replace_claim_until(namespace, key, expected, owner, until)).await
    }
    async fn list_by_status(&self, status: Status, limit: usize) -> Result<Vec<ApplicationRecord>, AdapterError> {
        self.timer.time(STATUS, "list_by_status", self.inner.list_by_status(status, limit)).await
    }
    async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, AdapterError> {
        self.timer.time(STATUS, "count_by_status", self.inner.count_by_status()).await
    }
}

struct TimedDocuments {
    inner: Arc<dyn DocumentStore>,
    timer: PortTimer,
}

#[async_trait]
impl DocumentStore for TimedDocuments {
    async fn put(&self, key: &str, doc: &Document) -> Result<(), AdapterError> {
        self.timer.time(DOCUMENTS, "put", self.inner.put(key, doc)).await
    }
    async fn get(&self, key: &str) -> Result<Option<Document>, AdapterError> {
        self.timer.time(DOCUMENTS, "get", self.inner.get(key)).await
    }
}

struct TimedBus {
    inner: Arc<dyn EventBus>,
    timer: PortTimer,
}

#[async_trait]
impl EventBus for TimedBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), AdapterError> {
        self.timer.time(BUS, "publish", self.inner.publish(topic, key, payload)).await
    }
    /// Consumers are not timed here: the stage runner times its own polls and handling.
    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError> {
        self.inner.subscribe(group, topics).await
    }
    async fn flush(&self, timeout: Duration) -> Result<(), AdapterError> {
        self.inner.flush(timeout).await
    }
}

struct TimedUnits {
    inner: Arc<dyn UnitOfWork>,
    timer: PortTimer,
}

#[async_trait]
impl UnitOfWork for TimedUnits {
    async fn accept(&self, a: &Acceptance) -> Result<Accepted, AdapterError> {
        self.timer.time(UNITS, "accept", self.inner.accept(a)).await
    }
    async fn transition_and_publish(&self, id: Uuid, t: &Transition, then: &Publication) -> Result<TransitionOutcome, AdapterError> {
        self.timer.time(UNITS, "transition_and_publish", self.inner.transition_and_publish(id, t, then)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_through_the_timed_ports_is_observed_under_its_port_and_operation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = kyufu_embedded::EmbeddedStore::open(dir.path()).expect("open");
        let plain = kyufu_ports::Ports::sequential(store.bus(), store.status_store(), store.document_store());
        let registry = prometheus::Registry::new();
        let timed = ports(plain, true, &PortTimer::new(&registry));
        let record = ApplicationRecord::received(Uuid::new_v4(), "p", chrono::Utc::now());
        let acceptance = Acceptance {
            documents: vec![(
                "p/x/document".into(),
                Document { content_type: "image/png".into(), sha256: "a".repeat(64), bytes: b"x".to_vec().into() },
            )],
            record: record.clone(),
            idempotency: None,
            event: Publication { topic: "t".into(), key: b"k".to_vec(), payload: b"{}".to_vec() },
        };
        timed.units.accept(&acceptance).await.expect("accept");
        timed.status.get(record.application_id).await.expect("get");
        let text = kyufu_telemetry::encode(&registry);
        for (port, op) in [(UNITS, "accept"), (DOCUMENTS, "put"), (STATUS, "create"), (BUS, "publish"), (STATUS, "get")] {
            let series = format!("kyufu_port_operation_duration_seconds_count{{operation=\"{op}\",port=\"{port}\"}} 1");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }
}
