//! The embedded store's write path as Prometheus counters, read at scrape time:
//! `kyufu_storage_fsyncs_total` (fsyncs the database file received, counted by its storage
//! backend), `kyufu_storage_commits_total` (durable group commits) and
//! `kyufu_storage_operations_total` (writes handed to the writer). fsyncs per application is the
//! first divided by the applications settled; operations per commit is the group-commit batch.

use std::sync::{Arc, Mutex};

use kyufu_embedded::{EmbeddedStore, IoStats};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Registry};

struct StorageCollector {
    store: Arc<EmbeddedStore>,
    fsyncs: IntCounter,
    commits: IntCounter,
    operations: IntCounter,
    /// What the counters were last set from.
    seen: Mutex<IoStats>,
}

impl Collector for StorageCollector {
    fn desc(&self) -> Vec<&Desc> {
        [&self.fsyncs, &self.commits, &self.operations].into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = self.store.io_stats();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.fsyncs.inc_by(now.syncs.saturating_sub(seen.syncs));
        self.commits.inc_by(now.commits.saturating_sub(seen.commits));
        self.operations.inc_by(now.operations.saturating_sub(seen.operations));
        *seen = now;
        [&self.fsyncs, &self.commits, &self.operations].into_iter().flat_map(|c| c.collect()).collect()
    }
}

/// Registers the store's counters on `registry`.
pub fn register(registry: &Registry, store: Arc<EmbeddedStore>) {
    // Static definitions: construction fails only on a programming error.
    let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric");
    let collector = StorageCollector {
        store,
        fsyncs: counter("kyufu_storage_fsyncs_total", "fsyncs of the embedded database file"),
        commits: counter("kyufu_storage_commits_total", "Durable group commits of the embedded store"),
        operations: counter("kyufu_storage_operations_total", "Writes applied by the embedded store's writer (each caller's write is one)"),
        seen: Mutex::new(IoStats::default()),
    };
    if let Err(e) = registry.register(Box::new(collector)) {
        tracing::warn!(error = %e, "storage metrics not registered");
    }
}
