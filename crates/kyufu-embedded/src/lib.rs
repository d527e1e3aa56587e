//! Embedded defaults of the three ports, on one redb file (`<data dir>/kyufu.redb`): pure Rust, no
//! server, and every write committed durably before the call returns, so an acknowledged
//! application survives SIGKILL. They honour the same contracts as the Kafka, Redis and S3
//! adapters; the difference is scale: one process, one writer at a time.
//!
//! redb is blocking, so every call runs on tokio's blocking pool.
#![forbid(unsafe_code)]

mod bus;
mod docs;
mod status;

use std::path::Path;
use std::sync::{Arc, Mutex};

use kyufu_ports::{AdapterError, DocumentStore, EventBus, StatusStore};
use redb::Database;

pub use bus::EmbeddedBus;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "kyufu.redb";

/// The opened store; hands out the three ports, all backed by the same file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    bus: Arc<EmbeddedBus>,
}

/// Default partitions per topic.
pub const DEFAULT_PARTITIONS: u32 = 4;

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/kyufu.redb`.
    pub fn open(dir: &Path) -> Result<Arc<EmbeddedStore>, AdapterError> {
        Self::open_with_partitions(dir, DEFAULT_PARTITIONS)
    }

    /// Like `open`, with `partitions` for newly created topics.
    pub fn open_with_partitions(dir: &Path, partitions: u32) -> Result<Arc<EmbeddedStore>, AdapterError> {
        std::fs::create_dir_all(dir).map_err(|e| AdapterError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| {
            AdapterError::Unavailable(format!(
                "opening {} ({e}); the embedded store allows one process at a time",
                path.display()
            ))
        })?;
        let db = Arc::new(db);
        bus::init_tables(&db)?;
        status::init_tables(&db)?;
        docs::init_tables(&db)?;
        let bus = Arc::new(EmbeddedBus::new(db.clone(), partitions.max(1)));
        Ok(Arc::new(EmbeddedStore { db, bus }))
    }

    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    pub fn status_store(&self) -> Arc<dyn StatusStore> {
        Arc::new(status::EmbeddedStatusStore { db: self.db.clone() })
    }

    pub fn document_store(&self) -> Arc<dyn DocumentStore> {
        Arc::new(docs::EmbeddedDocumentStore { db: self.db.clone() })
    }
}

fn storage_err(e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unavailable(format!("embedded storage: {e}"))
}

/// Runs blocking redb work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdapterError> + Send + 'static,
) -> Result<T, AdapterError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AdapterError::Unavailable(format!("blocking task: {e}")))?
}

/// Poison-tolerant lock: a panic elsewhere must not take the store down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
