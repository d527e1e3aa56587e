//! Embedded defaults of the three ports, on one redb file (`<data dir>/kyufu.redb`): pure Rust, no
//! server, and every write committed durably before the call returns, so an acknowledged write
//! survives SIGKILL. They honour the same contracts as the Kafka, Redis and S3 adapters; the
//! difference is scale: one process, one writer at a time.
//!
//! # Design
//!
//! - **One file, one handle.** [`EmbeddedStore::open`] opens or creates `<dir>/kyufu.redb` and hands
//!   out [`EmbeddedStore::bus`], [`EmbeddedStore::status_store`] and
//!   [`EmbeddedStore::document_store`] as `Arc<dyn Port>`, all on the same database. redb locks the
//!   file, so a second open (in this or another process) fails with `Unavailable` instead of
//!   corrupting it.
//! - **Durable, group-committed** (`writer.rs`). Every write is an operation handed to one writer
//!   thread, which applies every operation waiting in one redb write transaction and commits it
//!   once with `Durability::Immediate` before answering any of them. Operations run one after the
//!   other, so read-modify-write methods (transition, claim, create, offset allocation) stay
//!   atomic; a caller is answered only after the fsync that made its write durable, and one fsync
//!   serves every caller that was waiting. A batch that wrote nothing is aborted, not committed.
//!   `fsync`s are counted by the storage backend (`backend.rs`, [`EmbeddedStore::io_stats`]).
//! - **Units of work** ([`UnitOfWork`]): intake's documents, record, idempotency key and bus event
//!   are one operation, and so is a stage's transition with its publish, so each is atomic.
//! - **Reads on the caller's thread.** Point reads (a record, a document, a claim, the next
//!   messages) open a read snapshot directly; redb serves them from its cache.
//! - **Bus** (`bus.rs`): topics are created on first publish or subscribe with the store's partition
//!   count (default [`DEFAULT_PARTITIONS`], see [`EmbeddedStore::open_with_partitions`]) and keep it.
//!   A message goes to partition `FNV-1a(key) % partitions` (stable across restarts) and gets that
//!   partition's next offset. Committed offsets per (group, topic, partition) are stored and never
//!   move backwards. Group membership is in memory (all members live in this process): each topic's
//!   partitions are dealt out over the sorted ids of the members subscribed to it (`p % n`); a join
//!   or leave (dropping a consumer) bumps the group's generation, every member then re-reads its
//!   assignment, keeps the partitions it still holds and starts each newly assigned one at the
//!   group's committed offset, so whatever its previous owner had not committed is delivered again.
//!   `poll` sleeps on its topics' `Notify`s, woken once per commit that appended to the topic and
//!   on membership changes, and `poll_batch` reads many messages in one snapshot. `flush` is a
//!   no-op because publish is already durable. There is no retention yet.
//! - **Status store** (`status.rs`): records as JSON by application id, a secondary index
//!   `(status, updated_at, id)` and per-status counts, all updated in the same transaction as the
//!   record; idempotency keys and claims in their own tables.
//! - **Document store** (`docs.rs`): `key -> (content type, sha256, bytes)`, never overwritten.
//! - **Errors.** Storage failures map to `AdapterError::Unavailable`, data that cannot be decoded to
//!   `AdapterError::Corrupt`; nothing read from disk is unwrapped.
#![forbid(unsafe_code)]

mod backend;
mod bus;
mod docs;
mod status;
mod units;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use kyufu_ports::{AdapterError, DocumentStore, EventBus, Ports, StatusStore, UnitOfWork};

pub use bus::EmbeddedBus;
pub use docs::EmbeddedDocumentStore;
pub use status::EmbeddedStatusStore;
pub use units::EmbeddedUnits;
pub use writer::IoStats;
use writer::{Writer, WriterStats};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "kyufu.redb";

/// Default partitions per topic.
pub const DEFAULT_PARTITIONS: u32 = 4;

/// The opened store; hands out the three ports, all backed by the same file.
pub struct EmbeddedStore {
    bus: Arc<EmbeddedBus>,
    status: Arc<EmbeddedStatusStore>,
    documents: Arc<EmbeddedDocumentStore>,
    units: Arc<EmbeddedUnits>,
    stats: Arc<WriterStats>,
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/kyufu.redb`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Arc<EmbeddedStore>, AdapterError> {
        Self::open_with_partitions(dir, DEFAULT_PARTITIONS)
    }

    /// Like `open`, with `partitions` (at least 1) for topics created from now on; existing topics
    /// keep the count they were created with, so a key never changes partition.
    pub fn open_with_partitions(dir: &Path, partitions: u32) -> Result<Arc<EmbeddedStore>, AdapterError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| AdapterError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let refused = |e: &dyn std::fmt::Display| {
            AdapterError::Unavailable(format!(
                "opening {} ({e}); the embedded store allows one process at a time",
                path.display()
            ))
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| refused(&e))?;
        let stats = Arc::new(WriterStats::default());
        let backend = backend::CountingBackend::new(file, stats.syncs.clone()).map_err(|e| refused(&e))?;
        let db = Arc::new(redb::Builder::new().create_with_backend(backend).map_err(|e| refused(&e))?);
        bus::init_tables(&db)?;
        status::init_tables(&db)?;
        docs::init_tables(&db)?;
        let writer = Writer::start(db.clone(), stats.clone())?;
        let bus = Arc::new(EmbeddedBus::new(db.clone(), writer.clone(), partitions.max(1)));
        Ok(Arc::new(EmbeddedStore {
            units: Arc::new(EmbeddedUnits { writer: writer.clone(), bus: bus.clone(), default_partitions: partitions.max(1) }),
            bus,
            status: Arc::new(EmbeddedStatusStore { db: db.clone(), writer: writer.clone() }),
            documents: Arc::new(EmbeddedDocumentStore { db, writer }),
            stats,
        }))
    }

    /// The event bus. Every call returns the same bus, so consumers of one group obtained through
    /// different calls still split the partitions between them.
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    pub fn status_store(&self) -> Arc<dyn StatusStore> {
        self.status.clone()
    }

    pub fn document_store(&self) -> Arc<dyn DocumentStore> {
        self.documents.clone()
    }

    /// Multi-port writes as one atomic, group-committed operation.
    pub fn units(&self) -> Arc<dyn UnitOfWork> {
        self.units.clone()
    }

    /// All four ports on this store.
    pub fn ports(&self) -> Ports {
        Ports { bus: self.bus(), status: self.status_store(), documents: self.document_store(), units: self.units() }
    }

    /// Commits, operations and fsyncs so far (for metrics and benchmarks).
    pub fn io_stats(&self) -> IoStats {
        self.stats.snapshot()
    }
}

fn storage_err(e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unavailable(format!("embedded storage: {e}"))
}

/// Poison-tolerant lock: a panic elsewhere must not take the store down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
