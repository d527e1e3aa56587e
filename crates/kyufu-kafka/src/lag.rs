//! A consumer's lag, looked up in the background. A thread per consumer wakes every interval, takes
//! the member's assignment (a local call), asks the group coordinator for the committed offsets
//! and a client of its own for each partition's watermarks, and keeps the sum; `Consumer::lag`
//! reads it without waiting. Why a thread and a client of its own: the lookups block, and through
//! the consumer's own connections each watermark query waits behind the pending long-poll fetch,
//! so done inline they stalled the stage's loop for seconds (see the crate's documentation).
//!
//! Same meaning as before: the high watermark minus the committed offset (or the low watermark
//! when nothing was committed yet), summed over the assigned partitions; a lookup that fails
//! leaves the last value in place, as the inline lookup left the gauge.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::Offset;

use crate::{GroupContext, StatsContext};

/// Bound on each lookup; a lookup that fails keeps the last value.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The background lookup of one consumer; dropping it stops the thread and waits for it, so the
/// consumer's close never races a lookup.
pub(crate) struct LagWatch {
    last: Arc<AtomicI64>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LagWatch {
    pub(crate) fn start(
        consumer: Arc<StreamConsumer<GroupContext>>,
        client: BaseConsumer<StatsContext>,
        every: Duration,
    ) -> LagWatch {
        let last = Arc::new(AtomicI64::new(-1));
        let (stop, stopped) = mpsc::channel::<()>();
        let value = last.clone();
        let thread = std::thread::Builder::new()
            .name("kafka-lag".into())
            .spawn(move || loop {
                // The client's own events (statistics, logs) wait on its main queue until polled;
                // a few per round keep it empty (statistics come every two seconds).
                for _ in 0..8 {
                    let _ = client.poll(Duration::ZERO);
                }
                match lookup(&consumer, &client) {
                    Ok(lag) => value.store(i64::try_from(lag).unwrap_or(i64::MAX), Ordering::Relaxed),
                    Err(e) => tracing::debug!(error = %e, "consumer lag unknown this round"),
                }
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .ok();
        if thread.is_none() {
            tracing::warn!("could not start the consumer-lag thread; lag stays unknown");
        }
        LagWatch { last, stop: Some(stop), thread }
    }

    /// The last lag found, if any lookup succeeded yet.
    pub(crate) fn last(&self) -> Option<u64> {
        u64::try_from(self.last.load(Ordering::Relaxed)).ok()
    }
}

impl Drop for LagWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lookup(consumer: &StreamConsumer<GroupContext>, client: &BaseConsumer<StatsContext>) -> Result<u64, rdkafka::error::KafkaError> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(0);
    }
    // The coordinator's connection carries no fetches, so this is one quick round trip.
    let committed = consumer.committed_offsets(assignment, LOOKUP_TIMEOUT)?;
    let mut lag = 0u64;
    for e in committed.elements() {
        let (low, high) = client.fetch_watermarks(e.topic(), e.partition(), LOOKUP_TIMEOUT)?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += u64::try_from(high.saturating_sub(from)).unwrap_or(0);
    }
    Ok(lag)
}
