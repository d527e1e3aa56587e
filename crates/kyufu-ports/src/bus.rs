//! The event bus: named topics split into partitions, messages placed by key (the same key always
//! lands on the same partition, so one child's applications are processed in order), and consumer
//! groups that each see every message at least once.

use std::time::Duration;

use async_trait::async_trait;

use crate::AdapterError;

/// One message as delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Appends a message. Returns only once the message is durable (Kafka: acknowledged by all
    /// in-sync replicas; embedded: committed to disk). On error the message may or may not have
    /// been written; consumers are idempotent, so the caller may publish again.
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), AdapterError>;

    /// Joins consumer group `group` reading `topics`. Members of one group split the partitions
    /// between them; when a member joins or leaves, partitions are reassigned and every message
    /// not committed by its previous owner is delivered again.
    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError>;

    /// Waits until every message published so far is durable (producer flush before shutdown).
    async fn flush(&self, timeout: Duration) -> Result<(), AdapterError>;
}

/// Both polls must be **cancel-safe**: the stage runner polls inside `select!` and drops the poll
/// future whenever another branch (a finished message, the lag timer) is ready first. A message
/// the consumer took from the bus must therefore be returned by the same call, never held across
/// an await the caller may abandon: a message taken and dropped is skipped, and committing the
/// messages after it commits it too.
#[async_trait]
pub trait Consumer: Send {
    /// The next message of an assigned partition, waiting up to `timeout`; `None` when nothing
    /// arrived in time. Within a partition, messages come in offset order. Cancel-safe.
    async fn poll(&mut self, timeout: Duration) -> Result<Option<Message>, AdapterError>;

    /// Up to `max` messages (at least one unless nothing arrived within `timeout`): waits like
    /// `poll` for the first, then takes only what is already there, without waiting again. Same
    /// order guarantees as `poll`; cancel-safe; a bus that can read many messages at once
    /// overrides it.
    async fn poll_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>, AdapterError> {
        use futures::FutureExt as _;
        let mut out = Vec::new();
        let Some(first) = self.poll(timeout).await? else { return Ok(out) };
        out.push(first);
        // Once a message is taken, nothing here awaits: a zero-timeout poll that is not ready at
        // its first poll (its timer needs the runtime) would otherwise be an await at which the
        // caller can drop this future, and the messages taken so far with it. Each further poll
        // gets one chance to answer at once; the first that cannot ends the batch.
        while out.len() < max {
            match self.poll(Duration::ZERO).now_or_never() {
                Some(Ok(Some(m))) => out.push(m),
                // Nothing there now, or an error the next call will meet again.
                _ => break,
            }
        }
        Ok(out)
    }

    /// Records that `msg` and everything before it in its partition is processed. Call only after
    /// the effect of processing is durable (at-least-once). A message never committed is delivered
    /// again after a restart or rebalance.
    async fn commit(&mut self, msg: &Message) -> Result<(), AdapterError>;

    /// Committed lag summed over assigned partitions (messages not yet committed), if known.
    async fn lag(&mut self) -> Result<Option<u64>, AdapterError> {
        Ok(None)
    }
}
