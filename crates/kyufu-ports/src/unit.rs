//! Units of work: the writes of one step that span the ports (documents, status record, bus
//! event), handed over together so a store that can do them atomically does them in one durable
//! commit. The embedded store does exactly that (one redb transaction, group-committed with other
//! callers' work); the production adapters (S3, Redis, Kafka) cannot share a transaction, so
//! [`Sequential`] runs today's sequence behind the same method, in the order that keeps every
//! guarantee: documents first, the status record as the commit point, the event last.
//!
//! The contract (checked by `contract::units_*` against every implementation):
//! - [`UnitOfWork::accept`] writes nothing when the idempotency key was used before (the answer
//!   is `Existing`), and otherwise leaves the documents, the record and the key durable before it
//!   returns `Created`; the event is then published, or `published` says why not (the outbox
//!   relay republishes records left in `received`).
//! - [`UnitOfWork::transition_and_publish`] publishes the event only when the transition was
//!   applied, and only after the move is durable; any other outcome publishes nothing.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::{
    AdapterError, ApplicationRecord, CreateOutcome, Document, DocumentStore, EventBus, IdempotencyClaim, StatusStore,
    Transition, TransitionOutcome,
};

/// A message to append to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Everything intake writes for one accepted application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// Stored before the record, never overwritten: the identity document and the full event.
    pub documents: Vec<(String, Document)>,
    /// The new record in `received`: the commit point.
    pub record: ApplicationRecord,
    pub idempotency: Option<IdempotencyClaim>,
    /// The event for the first stage, published once the record is durable.
    pub event: Publication,
}

/// What [`UnitOfWork::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub outcome: CreateOutcome,
    /// For `Created`: whether the event was published (`Err`: it was not; the record is durable
    /// all the same and the outbox relay republishes it). `Ok` for `Existing`, where nothing is
    /// published.
    pub published: Result<(), AdapterError>,
}

#[async_trait]
pub trait UnitOfWork: Send + Sync + 'static {
    /// Stores the documents, then creates the record with its idempotency key (the commit point),
    /// then publishes the event. A reused idempotency key writes nothing and answers `Existing`.
    /// `Err` means nothing was accepted (some documents may be left unreferenced).
    async fn accept(&self, a: &Acceptance) -> Result<Accepted, AdapterError>;

    /// Applies `t` to record `id` and, only if it was applied, publishes `then` after the move is
    /// durable. `Err` after an applied move means the publish failed: the caller retries, finds the
    /// record already moved and publishes again (every consumer is idempotent).
    async fn transition_and_publish(
        &self,
        id: Uuid,
        t: &Transition,
        then: &Publication,
    ) -> Result<TransitionOutcome, AdapterError>;
}

/// The unit of work over separate stores: the sequence, each step after the one before (the
/// documents of one step side by side).
pub struct Sequential {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
}

#[async_trait]
impl UnitOfWork for Sequential {
    async fn accept(&self, a: &Acceptance) -> Result<Accepted, AdapterError> {
        // The documents side by side: one round trip of waiting instead of one per document. All
        // of them are durable before the record (the commit point) is written.
        futures::future::try_join_all(a.documents.iter().map(|(key, doc)| self.documents.put(key, doc))).await?;
        let outcome = self.status.create(&a.record, a.idempotency.as_ref()).await?;
        let published = match outcome {
            CreateOutcome::Created => self.bus.publish(&a.event.topic, &a.event.key, &a.event.payload).await,
            CreateOutcome::Existing { .. } => Ok(()),
        };
        Ok(Accepted { outcome, published })
    }

    async fn transition_and_publish(
        &self,
        id: Uuid,
        t: &Transition,
        then: &Publication,
    ) -> Result<TransitionOutcome, AdapterError> {
        let outcome = self.status.transition(id, t).await?;
        if matches!(outcome, TransitionOutcome::Applied(_)) {
            self.bus.publish(&then.topic, &then.key, &then.payload).await?;
        }
        Ok(outcome)
    }
}

/// The four ports a process writes through, built once by its composition root.
#[derive(Clone)]
pub struct Ports {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
    /// Multi-port writes; atomic where the stores allow it.
    pub units: Arc<dyn UnitOfWork>,
}

impl Ports {
    /// Ports over separate stores, whose units of work run in sequence.
    pub fn sequential(bus: Arc<dyn EventBus>, status: Arc<dyn StatusStore>, documents: Arc<dyn DocumentStore>) -> Self {
        let units = Arc::new(Sequential { bus: bus.clone(), status: status.clone(), documents: documents.clone() });
        Ports { bus, status, documents, units }
    }
}
