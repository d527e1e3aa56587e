//! The embedded [`UnitOfWork`]: each unit is one writer operation, so documents, record,
//! idempotency key and bus event (or a transition and its publish) become durable together in one
//! commit, shared with whatever else was waiting. The outbox is truly transactional here: an
//! accepted application is always published, and the relay finds nothing to do.

use std::sync::Arc;

use async_trait::async_trait;
use kyufu_ports::{
    Acceptance, Accepted, AdapterError, CreateOutcome, Publication, Transition, TransitionOutcome, UnitOfWork,
};
use redb::WriteTransaction;
use uuid::Uuid;

use crate::bus::{encode_message, publish_in, EmbeddedBus};
use crate::docs;
use crate::status::{create_in, transition_in};
use crate::writer::{Writer, Wrote};

/// The embedded [`UnitOfWork`]; obtain it with [`crate::EmbeddedStore::units`].
pub struct EmbeddedUnits {
    pub(crate) writer: Arc<Writer>,
    pub(crate) bus: Arc<EmbeddedBus>,
    pub(crate) default_partitions: u32,
}

/// A publication encoded once, outside the writer thread.
struct Encoded {
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Encoded {
    fn new(p: &Publication) -> Result<Self, AdapterError> {
        Ok(Encoded { topic: p.topic.clone(), key: p.key.clone(), value: encode_message(&p.key, &p.payload)? })
    }

    fn publish_in(&self, tx: &WriteTransaction, default: u32) -> Result<Wrote<()>, AdapterError> {
        publish_in(tx, &self.topic, &self.key, &self.value, default)
    }
}

impl EmbeddedUnits {
    /// Wakes the topic's consumers after the commit, if `published` says the unit appended to it.
    fn waker<T: 'static>(&self, topic: &str, published: fn(&T) -> bool) -> Option<Box<dyn FnOnce(&T) + Send>> {
        let notify = self.bus.wakers().of(topic);
        Some(Box::new(move |value: &T| {
            if published(value) {
                notify.notify_waiters();
            }
        }))
    }
}

#[async_trait]
impl UnitOfWork for EmbeddedUnits {
    async fn accept(&self, a: &Acceptance) -> Result<Accepted, AdapterError> {
        let documents = a
            .documents
            .iter()
            .map(|(key, doc)| Ok((key.clone(), docs::encode(doc)?)))
            .collect::<Result<Vec<_>, AdapterError>>()?;
        let (record, idem, event) = (a.record.clone(), a.idempotency.clone(), Encoded::new(&a.event)?);
        let default = self.default_partitions;
        let after = self.waker(&a.event.topic, |o: &CreateOutcome| *o == CreateOutcome::Created);
        let outcome = self
            .writer
            .write_then(
                move |tx| {
                    // The record (and its key) decides first: a reused key writes nothing at all.
                    let created = create_in(tx, &record, idem.as_ref())?;
                    if created.value != CreateOutcome::Created {
                        return Ok(created);
                    }
                    for (key, raw) in &documents {
                        docs::put_in(tx, key, raw)?;
                    }
                    event.publish_in(tx, default)?;
                    Ok(created)
                },
                after,
            )
            .await?;
        Ok(Accepted { outcome, published: Ok(()) })
    }

    async fn transition_and_publish(
        &self,
        id: Uuid,
        t: &Transition,
        then: &Publication,
    ) -> Result<TransitionOutcome, AdapterError> {
        let (t, event, default) = (t.clone(), Encoded::new(then)?, self.default_partitions);
        let after = self.waker(&then.topic, |o: &TransitionOutcome| matches!(o, TransitionOutcome::Applied(_)));
        self.writer
            .write_then(
                move |tx| {
                    let moved = transition_in(tx, id, &t)?;
                    if matches!(moved.value, TransitionOutcome::Applied(_)) {
                        event.publish_in(tx, default)?;
                    }
                    Ok(moved)
                },
                after,
            )
            .await
    }
}
