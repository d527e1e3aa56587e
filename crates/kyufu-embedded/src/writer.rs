//! Group commit: one thread owns redb's write transaction and drains a queue of operations. It
//! takes every operation waiting (up to [`MAX_BATCH`]), applies them in arrival order inside one
//! transaction — each sees the writes of the ones before it and decides its own outcome — commits
//! once with `Durability::Immediate`, and only then answers every caller. So an answer still
//! follows an fsync (SIGKILL at any instant loses nothing acknowledged), but one fsync serves
//! everyone who was waiting while the previous one ran: the busier the store, the larger the batch.
//!
//! An operation must decide any refusal (`AlreadyExists`, a lost claim) before it writes. If one
//! fails anyway (a storage error half-way), the batch is aborted and each of its operations runs
//! again in a transaction of its own, so one failure never fails the others; operations are
//! therefore `FnMut` and must not consume what they capture. A batch in which nothing wrote is
//! aborted instead of committed (no fsync for a claim that found its owner).
//!
//! The thread ends when the last handle is dropped; dropping the last [`Writer`] waits for it, so
//! the database file is closed (and may be opened again) when the store is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use kyufu_ports::AdapterError;
use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use crate::{lock, storage_err};

/// Most operations applied in one transaction: bounds the wait of the last one in a batch.
pub(crate) const MAX_BATCH: usize = 512;

/// What an operation did: its answer, and whether it wrote anything.
pub(crate) struct Wrote<T> {
    pub(crate) value: T,
    pub(crate) wrote: bool,
}

impl<T> Wrote<T> {
    pub(crate) fn yes(value: T) -> Self {
        Wrote { value, wrote: true }
    }
    pub(crate) fn no(value: T) -> Self {
        Wrote { value, wrote: false }
    }
}

/// An operation waiting for the writer, with its caller's answer channel.
trait Job: Send {
    /// Applies the operation inside `tx`; true if it wrote. `Err`: `tx` may be half-written.
    fn run(&mut self, tx: &WriteTransaction) -> Result<bool, AdapterError>;
    /// Answers the caller: with the operation's result if `committed` is Ok, else with its error.
    fn finish(self: Box<Self>, committed: Result<(), AdapterError>);
    /// Answers the caller with `e` (the operation failed on its own).
    fn fail(self: Box<Self>, e: AdapterError);
}

struct TypedJob<T, F> {
    op: F,
    result: Option<T>,
    reply: oneshot::Sender<Result<T, AdapterError>>,
    after_commit: Option<Box<dyn FnOnce(&T) + Send>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&WriteTransaction) -> Result<Wrote<T>, AdapterError> + Send + 'static,
{
    fn run(&mut self, tx: &WriteTransaction) -> Result<bool, AdapterError> {
        let Wrote { value, wrote } = (self.op)(tx)?;
        self.result = Some(value);
        Ok(wrote)
    }

    fn finish(self: Box<Self>, committed: Result<(), AdapterError>) {
        let this = *self;
        let answer = match (committed, this.result) {
            (Ok(()), Some(value)) => {
                if let Some(after) = this.after_commit {
                    after(&value);
                }
                Ok(value)
            }
            (Ok(()), None) => Err(AdapterError::Unavailable("embedded storage: operation never ran".into())),
            (Err(e), _) => Err(e),
        };
        // The caller may have gone (cancelled request); the write stands either way.
        let _ = this.reply.send(answer);
    }

    fn fail(self: Box<Self>, e: AdapterError) {
        let _ = self.reply.send(Err(e));
    }
}

/// Counters of the writer's work, for the store's metrics and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Durable commits.
    pub commits: AtomicU64,
    /// Operations applied (each caller's write is one).
    pub operations: AtomicU64,
    /// `fsync`s (sync_data calls) the database file received, counted by the storage backend.
    pub syncs: Arc<AtomicU64>,
}

/// A snapshot of [`WriterStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub commits: u64,
    pub operations: u64,
    pub syncs: u64,
}

impl WriterStats {
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            commits: self.commits.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}

/// Handle to the writer thread; cheap to share (`Arc`). The thread stops when the last handle is
/// dropped.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn start(db: Arc<Database>, stats: Arc<WriterStats>) -> Result<Arc<Writer>, AdapterError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("kyufu-redb-writer".into())
            .spawn(move || run(&db, &rx, &stats))
            .map_err(|e| AdapterError::Unavailable(format!("starting the storage writer: {e}")))?;
        Ok(Arc::new(Writer { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) }))
    }

    /// Runs `op` in the next group commit and answers once it is durable.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<Wrote<T>, AdapterError> + Send + 'static,
    {
        self.write_then(op, None).await
    }

    /// Like `write`; `after_commit` runs on the writer thread right after the commit (before the
    /// caller is answered, and even if the caller has gone), e.g. to wake consumers.
    pub(crate) async fn write_then<T, F>(
        &self,
        op: F,
        after_commit: Option<Box<dyn FnOnce(&T) + Send>>,
    ) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<Wrote<T>, AdapterError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob { op, result: None, reply, after_commit });
        let sent = lock(&self.queue).as_ref().map(|q| q.send(job).is_ok()).unwrap_or(false);
        if !sent {
            return Err(AdapterError::Unavailable("embedded storage is closed".into()));
        }
        answer.await.map_err(|_| AdapterError::Unavailable("embedded storage writer stopped".into()))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the batch it is on; waiting for it releases the
        // database file before the store's owner opens it again.
        lock(&self.queue).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Box<dyn Job>>, stats: &WriterStats) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats.operations.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(batch) = commit_batch(db, batch, stats) {
            // Something failed inside the shared transaction: each operation alone, so only the
            // failing one fails.
            for job in batch {
                let _ = commit_batch(db, vec![job], stats);
            }
        }
    }
}

/// Applies `batch` in one transaction and answers every job. `Err(batch)` when an operation
/// failed and the transaction was aborted; for a batch of one, that job's own error has been
/// answered and the returned batch is empty.
fn commit_batch(db: &Database, mut batch: Vec<Box<dyn Job>>, stats: &WriterStats) -> Result<(), Vec<Box<dyn Job>>> {
    let tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => {
            let e = storage_err(e);
            for job in batch {
                job.fail(e.clone());
            }
            return Ok(());
        }
    };
    let mut wrote = false;
    for i in 0..batch.len() {
        match batch[i].run(&tx) {
            Ok(w) => wrote |= w,
            Err(e) => {
                let _ = tx.abort();
                if batch.len() == 1 {
                    if let Some(job) = batch.pop() {
                        job.fail(e);
                    }
                    return Err(Vec::new());
                }
                return Err(batch);
            }
        }
    }
    let committed = if wrote {
        let result = tx.commit().map_err(storage_err);
        if result.is_ok() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        result
    } else {
        tx.abort().map_err(storage_err)
    };
    for job in batch {
        job.finish(committed.clone());
    }
    Ok(())
}
