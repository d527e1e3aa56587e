//! The shared queue numbers behind a small trait: `issued` (the last sequence number handed out) and
//! `cursor` (every visitor with `seq <= cursor` is admitted), plus an `epoch` naming this numbering.
//! These three numbers are the only state of the waiting room; everything per visitor lives in the
//! signed ticket. The in-memory implementation serves one gateway process; a shared store
//! (`kyufu_redis::RedisQueueState`: batched `INCRBY` for `join`, a lease-fenced script doing
//! `cursor = min(cursor + n, issued)` for `advance`) lets several gateway nodes serve one queue
//! without changing the callers.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

/// A snapshot of the queue numbers. `cursor <= issued` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Names this numbering; changes whenever the counters start again from zero.
    pub epoch: u32,
    /// Sequence numbers handed out so far (the last one issued).
    pub issued: u64,
    /// Highest admitted sequence number.
    pub cursor: u64,
    /// Admission passes spent (the visitor finished) so far, on every node: the cursor writer
    /// returns that many places to the session cap as the number grows.
    pub spent: u64,
}

impl Counters {
    /// Visitors holding a number the cursor has not reached yet.
    pub fn waiting(&self) -> u64 {
        self.issued.saturating_sub(self.cursor)
    }
}

/// The place a visitor got on joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub epoch: u32,
    pub seq: u64,
}

/// One node's part of the liveness exchange between gateway nodes sharing a queue (see
/// `liveness`). Numbers are places in admission order, like the cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivenessReport {
    /// Signs of life seen on this node since its last exchange: (number, Unix seconds).
    pub seen: Vec<(u64, u64)>,
    /// Numbers the cursor's node skipped as abandoned since its last exchange.
    pub skipped: Vec<u64>,
    /// The cursor's node only: the numbers whose last sign of life (on any node) it needs, and
    /// the numbers the cursor has passed whose records can go. Both inclusive ranges.
    pub fetch: Option<(u64, u64)>,
    pub prune: Option<(u64, u64)>,
    /// Skipped numbers above this one are wanted back; `None`: none wanted.
    pub skipped_after: Option<u64>,
    /// Skipped numbers below this one can be forgotten.
    pub forget_skipped_below: Option<u64>,
}

/// What the other nodes reported, as far as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivenessShared {
    /// Last sign of life per number of `fetch`, where any node saw one.
    pub seen: Vec<(u64, u64)>,
    /// Numbers skipped above `skipped_after`, ascending.
    pub skipped: Vec<u64>,
}

/// What the shared one-place-per-reference book says (`QueueState::reference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedReference {
    /// This store keeps no book; the node keeps its own.
    Unsupported,
    /// Not seen in this epoch (a look-up only).
    Unknown,
    /// Not seen, and the book is full: join without deduplication.
    Full,
    /// The number (and join time) the reference holds in this epoch.
    Known { seq: u64, jat: u64 },
}

/// The queue store could not be reached; nobody is at fault yet, the caller answers 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("queue state unavailable: {0}")]
    Unavailable(String),
}

/// The numbers a waiting room shares between its gateway nodes.
///
/// Implementations must keep `cursor <= issued`, never move either backwards within an epoch, and
/// hand out every sequence number once. They may cache `counters` for up to one admission tick,
/// since handlers call it on every poll.
#[async_trait]
pub trait QueueState: Send + Sync + 'static {
    /// Hands out the next sequence number (the first is 1).
    async fn join(&self) -> Result<Slot, StateError>;
    /// The current numbers.
    async fn counters(&self) -> Result<Counters, StateError>;
    /// Moves the cursor forward by up to `n`, never past `issued`; returns how far it moved.
    async fn advance(&self, n: u64) -> Result<u64, StateError>;

    /// Counts one admission pass spent (on any node), so the node moving the cursor can give the
    /// place back to the session cap at once.
    async fn spend(&self) -> Result<(), StateError>;

    /// The numbers read from the store itself, never from a cache: the admission ticker calls it
    /// once a tick, so its answer drives readiness (`queue_state`) and keeps any cache fresh.
    async fn refresh(&self) -> Result<Counters, StateError> {
        self.counters().await
    }

    /// Whether this node may move the cursor now. Several nodes sharing a store elect one writer;
    /// the others do not spend admission tokens (their `advance` would move nothing) and only
    /// watch the cursor move.
    fn drives_cursor(&self) -> bool {
        true
    }

    /// Writes operator control fields for every node of this queue (see `Control`). One node's
    /// store has no one to tell.
    async fn publish_controls(&self, fields: &[(&'static str, String)]) -> Result<(), StateError> {
        let _ = fields;
        Ok(())
    }

    /// The shared operator controls, if they changed since version `known`: the new version and
    /// every field. The ticker asks once a tick.
    async fn shared_controls(&self, known: u64) -> Result<Option<(u64, Vec<(String, String)>)>, StateError> {
        let _ = known;
        Ok(None)
    }

    /// The shared one-place-per-reference book: the number the keyed hash `key` holds in `epoch`.
    /// With `seq` 0 it only looks; otherwise it records `(seq, jat)` unless the reference already
    /// holds a number (which is returned instead) or `capacity` references are kept (`Full`).
    async fn reference(&self, key: &str, epoch: u32, seq: u64, jat: u64, capacity: u64) -> Result<SharedReference, StateError> {
        let _ = (key, epoch, seq, jat, capacity);
        Ok(SharedReference::Unsupported)
    }

    /// The node is shutting down: give up anything it holds for the others (the cursor lease), so
    /// another node takes over at once instead of after the lease runs out.
    async fn release(&self) {}

    /// The seed of the launch-day draw that every node of this queue uses: the first node to
    /// start stores its `proposed` seed and every later one gets that one back, so the published
    /// commitment and the order are the same on every node and across restarts. One node's store
    /// keeps `proposed`.
    async fn agree_launch_seed(&self, proposed: [u8; 32]) -> Result<[u8; 32], StateError> {
        Ok(proposed)
    }

    /// Closes the launch-day pre-queue, once for every node: the first call fixes the pre-queue
    /// as the numbers `base+1 ..= issued` at that moment; every call returns that `(base, size)`.
    /// One node's store has no one to agree with.
    async fn close_prequeue(&self, base: u64) -> Result<(u64, u64), StateError> {
        let issued = self.refresh().await?.issued;
        Ok((base, issued.saturating_sub(base)))
    }

    /// Passes on this node's liveness news and returns the other nodes' (only called when
    /// `is_shared`): the nodes' own polls are the only signs of life, so a shared store must carry
    /// them for the cursor's node to tell an abandoned number from one polling elsewhere. `None`:
    /// this store carries no liveness, and nobody is ever skipped (the safe default).
    async fn exchange_liveness(&self, report: LivenessReport) -> Result<Option<LivenessShared>, StateError> {
        let _ = report;
        Ok(None)
    }

    /// Whether other gateway nodes serve the same queue. Per-node knowledge (which visitors poll
    /// here) then says nothing about the whole queue, so the gateway does not act on it.
    fn is_shared(&self) -> bool {
        false
    }
}

/// Queue numbers in process memory: one gateway node. A restart begins a new epoch, so tickets
/// issued before it are refused (the visitor joins again) instead of being misplaced in the new
/// numbering.
#[derive(Debug)]
pub struct MemoryQueueState {
    epoch: u32,
    issued: AtomicU64,
    cursor: AtomicU64,
    spent: AtomicU64,
}

impl MemoryQueueState {
    pub fn new() -> Self {
        // Random and non-zero, so two runs of a gateway never share an epoch by accident.
        let epoch = rand::random::<u32>().max(1);
        MemoryQueueState { epoch, issued: AtomicU64::new(0), cursor: AtomicU64::new(0), spent: AtomicU64::new(0) }
    }
}

impl Default for MemoryQueueState {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl QueueState for MemoryQueueState {
    async fn join(&self) -> Result<Slot, StateError> {
        let seq = self.issued.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        Ok(Slot { epoch: self.epoch, seq })
    }

    async fn counters(&self) -> Result<Counters, StateError> {
        // Cursor first: issued only grows, so the pair read this way still has cursor <= issued.
        let cursor = self.cursor.load(Ordering::SeqCst);
        let issued = self.issued.load(Ordering::SeqCst);
        let spent = self.spent.load(Ordering::SeqCst);
        Ok(Counters { epoch: self.epoch, issued, cursor, spent })
    }

    async fn spend(&self) -> Result<(), StateError> {
        self.spent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn advance(&self, n: u64) -> Result<u64, StateError> {
        let issued = self.issued.load(Ordering::SeqCst);
        let mut moved = 0;
        // fetch_update retries on contention, so concurrent advances never overshoot `issued`.
        let _ = self.cursor.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cursor| {
            let to = cursor.saturating_add(n).min(issued).max(cursor);
            moved = to - cursor;
            Some(to)
        });
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursor_never_passes_issued_and_numbers_are_unique() {
        let state = MemoryQueueState::new();
        assert_eq!(state.advance(5).await, Ok(0), "nothing issued, nothing to admit");
        let a = state.join().await.expect("join");
        let b = state.join().await.expect("join");
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.epoch, b.epoch);
        assert_eq!(state.advance(5).await, Ok(2), "clipped at issued");
        let c = state.counters().await.expect("counters");
        assert_eq!((c.issued, c.cursor, c.waiting()), (2, 2, 0));
        state.join().await.expect("join");
        assert_eq!(state.advance(1).await, Ok(1));
        assert_eq!(state.counters().await.expect("counters").cursor, 3);
        state.spend().await.expect("spend");
        assert_eq!(state.counters().await.expect("counters").spent, 1);
    }

    #[test]
    fn each_memory_queue_has_its_own_epoch() {
        // Two random u32s collide with probability 2^-32; a constant epoch would always collide.
        assert_ne!(MemoryQueueState::new().epoch, MemoryQueueState::new().epoch);
    }
}
