//! Embedded document store: `key -> (content type, sha256, bytes)` in one table, never
//! overwritten; content type and hash come back exactly as they were put.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use kyufu_ports::{AdapterError, Document, DocumentStore};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::storage_err;
use crate::writer::{Writer, Wrote};

const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");

pub(crate) fn init_tables(db: &Database) -> Result<(), AdapterError> {
    let tx = db.begin_write().map_err(storage_err)?;
    tx.open_table(DOCS).map_err(storage_err)?;
    tx.commit().map_err(storage_err)
}

/// The embedded [`DocumentStore`]; obtain it with [`crate::EmbeddedStore::document_store`].
pub struct EmbeddedDocumentStore {
    pub(crate) db: Arc<Database>,
    pub(crate) writer: Arc<Writer>,
}

/// Stores the encoded document `raw` under `key`, refusing a taken key before writing.
pub(crate) fn put_in(tx: &WriteTransaction, key: &str, raw: &[u8]) -> Result<Wrote<()>, AdapterError> {
    let mut t = tx.open_table(DOCS).map_err(storage_err)?;
    if t.get(key).map_err(storage_err)?.is_some() {
        return Err(AdapterError::AlreadyExists);
    }
    t.insert(key, raw).map_err(storage_err)?;
    Ok(Wrote::yes(()))
}

/// Tag of the current value layout: `[1][ct len u16 BE][ct][sha len u16 BE][sha][bytes]`. Values
/// written before the tag existed start with the high byte of a short content-type length (0) and
/// are `[ct len u16 BE][ct][sha 64 ascii][bytes]`.
const FORMAT_V1: u8 = 1;

pub(crate) fn encode(doc: &Document) -> Result<Vec<u8>, AdapterError> {
    let too_long = |what: &str| AdapterError::Unavailable(format!("document {what} longer than 65535 bytes"));
    let ct = doc.content_type.as_bytes();
    let sha = doc.sha256.as_bytes();
    let ct_len = u16::try_from(ct.len()).map_err(|_| too_long("content type"))?;
    let sha_len = u16::try_from(sha.len()).map_err(|_| too_long("sha256"))?;
    let mut out = Vec::with_capacity(5 + ct.len() + sha.len() + doc.bytes.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&ct_len.to_be_bytes());
    out.extend_from_slice(ct);
    out.extend_from_slice(&sha_len.to_be_bytes());
    out.extend_from_slice(sha);
    out.extend_from_slice(&doc.bytes);
    Ok(out)
}

/// Reads a big-endian u16 length at `at` and the field after it; returns the field and where the
/// next one starts.
fn field(raw: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(u16::from_be_bytes(raw.get(at..at.checked_add(2)?)?.try_into().ok()?));
    let start = at + 2;
    let end = start.checked_add(len)?;
    Some((raw.get(start..end)?, end))
}

fn decode(raw: &[u8]) -> Result<Document, AdapterError> {
    let corrupt = || AdapterError::Corrupt("document record".into());
    let (ct, sha, rest) = match raw.first() {
        Some(&FORMAT_V1) => {
            let (ct, next) = field(raw, 1).ok_or_else(corrupt)?;
            let (sha, next) = field(raw, next).ok_or_else(corrupt)?;
            (ct, sha, next)
        }
        Some(0) => {
            let (ct, next) = field(raw, 0).ok_or_else(corrupt)?;
            let end = next.checked_add(64).ok_or_else(corrupt)?;
            (ct, raw.get(next..end).ok_or_else(corrupt)?, end)
        }
        _ => return Err(corrupt()),
    };
    Ok(Document {
        content_type: String::from_utf8(ct.to_vec()).map_err(|_| corrupt())?,
        sha256: String::from_utf8(sha.to_vec()).map_err(|_| corrupt())?,
        bytes: Bytes::copy_from_slice(raw.get(rest..).ok_or_else(corrupt)?),
    })
}

#[async_trait]
impl DocumentStore for EmbeddedDocumentStore {
    async fn put(&self, key: &str, doc: &Document) -> Result<(), AdapterError> {
        let (key, raw) = (key.to_owned(), encode(doc)?);
        self.writer.write(move |tx| put_in(tx, &key, &raw)).await
    }

    async fn get(&self, key: &str) -> Result<Option<Document>, AdapterError> {
        let tx = self.db.begin_read().map_err(storage_err)?;
        let t = tx.open_table(DOCS).map_err(storage_err)?;
        match t.get(key).map_err(storage_err)? {
            Some(v) => decode(v.value()).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(sha: &str) -> Document {
        Document { content_type: "image/png".into(), sha256: sha.into(), bytes: Bytes::from_static(b"\x89PNG") }
    }

    #[test]
    fn round_trips_any_hash_text_exactly() {
        for sha in ["", "abc", &"f".repeat(64), &"0".repeat(70)] {
            let d = doc(sha);
            assert_eq!(decode(&encode(&d).expect("encode")).expect("decode"), d);
        }
    }

    #[test]
    fn reads_values_written_before_the_format_tag() {
        let sha = "a".repeat(64);
        let mut legacy = vec![0, 9];
        legacy.extend_from_slice(b"image/png");
        legacy.extend_from_slice(sha.as_bytes());
        legacy.extend_from_slice(b"\x89PNG");
        assert_eq!(decode(&legacy).expect("decode"), doc(&sha));
    }

    #[test]
    fn truncated_or_unknown_values_are_corrupt() {
        let raw = encode(&doc("abc")).expect("encode");
        assert!(matches!(decode(&raw[..4]), Err(AdapterError::Corrupt(_))));
        assert!(matches!(decode(&[7, 0, 0]), Err(AdapterError::Corrupt(_))));
        assert!(matches!(decode(&[]), Err(AdapterError::Corrupt(_))));
    }
}
