//! Ports: the small traits through which intake, workers and the status lookup reach Kafka, Redis
//! and S3 (or their embedded stand-ins), plus the messages that travel on the bus, and the units of
//! work (`unit`) that hand one step's writes across ports to a store that can commit them at once.
//!
//! Every implementation must honour the same contract, spelled out on each method; the embedded
//! adapters and the production adapters are tested against it.
#![forbid(unsafe_code)]

pub mod bus;
#[cfg(feature = "contract")]
pub mod contract;
pub mod documents;
pub mod events;
pub mod reference;
pub mod status;
pub mod unit;

/// An error from an adapter. `Unavailable` is transient (retry later); the others are final.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdapterError {
    /// The backing service cannot be reached or timed out; nothing was changed, or the change is
    /// safe to repeat.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A write that must not overwrite found the key taken.
    #[error("already exists")]
    AlreadyExists,
    /// Stored data could not be decoded; a bug or corruption, never retried.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

pub use bus::{Consumer, EventBus, Message};
pub use documents::{Document, DocumentStore};
pub use status::{
    ApplicationRecord, Claim, CreateOutcome, IdempotencyClaim, Lease, LeaseOutcome, StatusChange, StatusStore, Transition,
    TransitionOutcome,
};
pub use unit::{Acceptance, Accepted, Ports, Publication, Sequential, UnitOfWork};
