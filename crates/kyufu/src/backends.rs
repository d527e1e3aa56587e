//! Which backing services a role runs on. Every role that touches applications (`intake`,
//! `worker <stage>`, `review`) takes the same three choices — event bus, status store, document
//! store — each `embedded` by default (the data directory's single-file store, one process at a
//! time) or the production service. Mixed choices are allowed (e.g. Kafka with the embedded
//! status store on one machine), but only the all-production combination scales out.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kyufu_ports::{DocumentStore, EventBus, StatusStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BusKind {
    /// The embedded log in the data directory.
    Embedded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusKind {
    /// The embedded store in the data directory.
    Embedded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DocumentsKind {
    /// The embedded store in the data directory.
    Embedded,
}

/// The backing services of one process.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Event bus.
    #[arg(long, env = "KYUFU_BUS", value_enum, default_value_t = BusKind::Embedded)]
    pub bus: BusKind,
    /// Status store (statuses, idempotency keys, dedupe index, coupon registry).
    #[arg(long, env = "KYUFU_STATUS_STORE", value_enum, default_value_t = StatusKind::Embedded)]
    pub status_store: StatusKind,
    /// Document store (identity documents).
    #[arg(long, env = "KYUFU_DOCUMENTS", value_enum, default_value_t = DocumentsKind::Embedded)]
    pub documents: DocumentsKind,
}

/// The opened ports, shared by everything in the process.
pub struct Backends {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
}

impl BackendArgs {
    /// Connects to every chosen service (and opens the embedded store only if something uses it).
    pub async fn open(&self, data_dir: &Path) -> anyhow::Result<Backends> {
        let embedded = {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            kyufu_embedded::EmbeddedStore::open(data_dir)
                .map_err(|e| anyhow::anyhow!("opening embedded storage in {}: {e}", data_dir.display()))?
        };
        let bus = match self.bus {
            BusKind::Embedded => embedded.bus(),
        };
        let status = match self.status_store {
            StatusKind::Embedded => embedded.status_store(),
        };
        let documents = match self.documents {
            DocumentsKind::Embedded => embedded.document_store(),
        };
        tracing::info!(bus = ?self.bus, status_store = ?self.status_store, documents = ?self.documents, "backends open");
        Ok(Backends { bus, status, documents })
    }
}
