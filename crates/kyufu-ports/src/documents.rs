//! The document store: identity documents by random key, never overwritten.

use async_trait::async_trait;
use bytes::Bytes;

use crate::AdapterError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `image/jpeg`, `image/png` or `application/pdf`, decided from the bytes.
    pub content_type: String,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
    pub bytes: Bytes,
}

#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// Stores `doc` under `key`. Returns `AlreadyExists` if the key is taken (no overwrite).
    /// Returns only once the document is durable.
    async fn put(&self, key: &str, doc: &Document) -> Result<(), AdapterError>;

    /// The document under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Document>, AdapterError>;
}
