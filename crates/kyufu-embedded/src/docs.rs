//! Embedded document store: `key -> (content type, sha256, bytes)`, never overwritten.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use kyufu_ports::{AdapterError, Document, DocumentStore};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{blocking, storage_err};

const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");

pub(crate) fn init_tables(db: &Database) -> Result<(), AdapterError> {
    let tx = db.begin_write().map_err(storage_err)?;
    tx.open_table(DOCS).map_err(storage_err)?;
    tx.commit().map_err(storage_err)
}

pub(crate) struct EmbeddedDocumentStore {
    pub(crate) db: Arc<Database>,
}

/// `[ct len u16][ct][sha 64 ascii][bytes]`
fn encode(doc: &Document) -> Vec<u8> {
    let ct = doc.content_type.as_bytes();
    let mut out = Vec::with_capacity(2 + ct.len() + 64 + doc.bytes.len());
    out.extend_from_slice(&u16::try_from(ct.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(ct);
    let mut sha = doc.sha256.as_bytes().to_vec();
    sha.resize(64, b'0');
    out.extend_from_slice(&sha);
    out.extend_from_slice(&doc.bytes);
    out
}

fn decode(raw: &[u8]) -> Result<Document, AdapterError> {
    let corrupt = || AdapterError::Corrupt("document record".into());
    let len = usize::from(u16::from_be_bytes(raw.get(0..2).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?));
    let ct = raw.get(2..2 + len).ok_or_else(corrupt)?;
    let sha = raw.get(2 + len..2 + len + 64).ok_or_else(corrupt)?;
    let bytes = raw.get(2 + len + 64..).ok_or_else(corrupt)?;
    Ok(Document {
        content_type: String::from_utf8(ct.to_vec()).map_err(|_| corrupt())?,
        sha256: String::from_utf8(sha.to_vec()).map_err(|_| corrupt())?,
        bytes: Bytes::copy_from_slice(bytes),
    })
}

#[async_trait]
impl DocumentStore for EmbeddedDocumentStore {
    async fn put(&self, key: &str, doc: &Document) -> Result<(), AdapterError> {
        let (db, key, raw) = (self.db.clone(), key.to_owned(), encode(doc));
        blocking(move || {
            let tx = db.begin_write().map_err(storage_err)?;
            {
                let mut t = tx.open_table(DOCS).map_err(storage_err)?;
                if t.get(key.as_str()).map_err(storage_err)?.is_some() {
                    return Err(AdapterError::AlreadyExists);
                }
                t.insert(key.as_str(), raw.as_slice()).map_err(storage_err)?;
            }
            tx.commit().map_err(storage_err)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Document>, AdapterError> {
        let (db, key) = (self.db.clone(), key.to_owned());
        blocking(move || {
            let tx = db.begin_read().map_err(storage_err)?;
            let t = tx.open_table(DOCS).map_err(storage_err)?;
            match t.get(key.as_str()).map_err(storage_err)? {
                Some(v) => decode(v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }
}
