//! Embedded status store. Records are JSON by application id; every create and transition is one
//! writer operation together with the status index (status, updated_at, id) and the per-status
//! counts, so the index never disagrees with the records. The operations are functions of the write
//! transaction (`*_in`), so a unit of work (`units.rs`) can run them inside its own.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use kyufu_domain::Status;
use kyufu_ports::{
    AdapterError, ApplicationRecord, Claim, CreateOutcome, IdempotencyClaim, StatusStore, Transition, TransitionOutcome,
};
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage_err;
use crate::writer::{Writer, Wrote};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("status_records");
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("status_idempotency");
const CLAIMS: TableDefinition<&str, &str> = TableDefinition::new("status_claims");
/// Key: `[status u8][updated_at micros u64 BE][id 16]`.
const BY_STATUS: TableDefinition<&[u8], ()> = TableDefinition::new("status_index");
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("status_counts");

pub(crate) fn init_tables(db: &Database) -> Result<(), AdapterError> {
    let tx = db.begin_write().map_err(storage_err)?;
    tx.open_table(RECORDS).map_err(storage_err)?;
    tx.open_table(IDEMPOTENCY).map_err(storage_err)?;
    tx.open_table(CLAIMS).map_err(storage_err)?;
    tx.open_table(BY_STATUS).map_err(storage_err)?;
    tx.open_table(COUNTS).map_err(storage_err)?;
    tx.commit().map_err(storage_err)
}

/// The embedded [`StatusStore`]; obtain it with [`crate::EmbeddedStore::status_store`].
pub struct EmbeddedStatusStore {
    pub(crate) db: Arc<Database>,
    pub(crate) writer: Arc<Writer>,
}

#[derive(Serialize, Deserialize)]
struct IdemEntry {
    application_id: Uuid,
    fingerprint: String,
}

fn status_byte(s: Status) -> u8 {
    Status::ALL.iter().position(|x| *x == s).and_then(|p| u8::try_from(p).ok()).unwrap_or(u8::MAX)
}

fn index_key(r: &ApplicationRecord) -> Vec<u8> {
    let micros = u64::try_from(r.updated_at.timestamp_micros()).unwrap_or(0);
    let mut k = Vec::with_capacity(25);
    k.push(status_byte(r.status));
    k.extend_from_slice(&micros.to_be_bytes());
    k.extend_from_slice(r.application_id.as_bytes());
    k
}

fn decode(raw: &[u8]) -> Result<ApplicationRecord, AdapterError> {
    serde_json::from_slice(raw).map_err(|e| AdapterError::Corrupt(format!("status record: {e}")))
}

fn encode(r: &ApplicationRecord) -> Result<Vec<u8>, AdapterError> {
    serde_json::to_vec(r).map_err(|e| AdapterError::Corrupt(format!("status record: {e}")))
}

fn bump(counts: &mut Table<&str, u64>, s: Status, delta: i64) -> Result<(), AdapterError> {
    let cur = counts.get(s.as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
    let next = u64::try_from(i64::try_from(cur).unwrap_or(i64::MAX).saturating_add(delta)).unwrap_or(0);
    counts.insert(s.as_str(), next).map_err(storage_err)?;
    Ok(())
}

fn claim_key(namespace: &str, key: &str) -> String {
    format!("{namespace}\u{1f}{key}")
}

/// Creates `record` with its idempotency key. Every refusal is decided before anything is written.
pub(crate) fn create_in(
    tx: &WriteTransaction,
    record: &ApplicationRecord,
    idem: Option<&IdempotencyClaim>,
) -> Result<Wrote<CreateOutcome>, AdapterError> {
    let mut idempotency = tx.open_table(IDEMPOTENCY).map_err(storage_err)?;
    if let Some(claim) = idem {
        if let Some(v) = idempotency.get(claim.key.as_str()).map_err(storage_err)? {
            let e: IdemEntry = serde_json::from_slice(v.value()).map_err(|e| AdapterError::Corrupt(e.to_string()))?;
            return Ok(Wrote::no(CreateOutcome::Existing {
                application_id: e.application_id,
                same_request: e.fingerprint == claim.fingerprint,
            }));
        }
    }
    let mut records = tx.open_table(RECORDS).map_err(storage_err)?;
    let id = record.application_id.as_bytes().as_slice();
    if records.get(id).map_err(storage_err)?.is_some() {
        return Err(AdapterError::AlreadyExists);
    }
    let raw = encode(record)?;
    if let Some(claim) = idem {
        let entry = IdemEntry { application_id: record.application_id, fingerprint: claim.fingerprint.clone() };
        let entry = serde_json::to_vec(&entry).map_err(|e| AdapterError::Corrupt(e.to_string()))?;
        idempotency.insert(claim.key.as_str(), entry.as_slice()).map_err(storage_err)?;
    }
    records.insert(id, raw.as_slice()).map_err(storage_err)?;
    tx.open_table(BY_STATUS).map_err(storage_err)?.insert(index_key(record).as_slice(), ()).map_err(storage_err)?;
    bump(&mut tx.open_table(COUNTS).map_err(storage_err)?, record.status, 1)?;
    Ok(Wrote::yes(CreateOutcome::Created))
}

/// Applies `t` to record `id` (see `ApplicationRecord::apply`); writes only when it was applied.
pub(crate) fn transition_in(tx: &WriteTransaction, id: Uuid, t: &Transition) -> Result<Wrote<TransitionOutcome>, AdapterError> {
    let mut records = tx.open_table(RECORDS).map_err(storage_err)?;
    let current = match records.get(id.as_bytes().as_slice()).map_err(storage_err)? {
        Some(v) => decode(v.value())?,
        None => return Ok(Wrote::no(TransitionOutcome::NotFound)),
    };
    let outcome = current.apply(t, Utc::now());
    let TransitionOutcome::Applied(next) = &outcome else { return Ok(Wrote::no(outcome)) };
    let raw = encode(next)?;
    records.insert(id.as_bytes().as_slice(), raw.as_slice()).map_err(storage_err)?;
    let mut index = tx.open_table(BY_STATUS).map_err(storage_err)?;
    index.remove(index_key(&current).as_slice()).map_err(storage_err)?;
    index.insert(index_key(next).as_slice(), ()).map_err(storage_err)?;
    let mut counts = tx.open_table(COUNTS).map_err(storage_err)?;
    bump(&mut counts, current.status, -1)?;
    bump(&mut counts, next.status, 1)?;
    Ok(Wrote::yes(outcome))
}

/// Claims each of `keys` (already namespaced) for `owner`; one answer per key.
fn claim_in(tx: &WriteTransaction, keys: &[String], owner: &str) -> Result<Wrote<Vec<Claim>>, AdapterError> {
    let mut t = tx.open_table(CLAIMS).map_err(storage_err)?;
    let mut wrote = false;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let existing = t.get(k.as_str()).map_err(storage_err)?.map(|v| v.value().to_owned());
        out.push(match existing {
            None => {
                t.insert(k.as_str(), owner).map_err(storage_err)?;
                wrote = true;
                Claim::Won
            }
            Some(o) if o == owner => Claim::Won,
            Some(o) => Claim::Held { owner: o },
        });
    }
    Ok(Wrote { value: out, wrote })
}

impl EmbeddedStatusStore {
    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T, AdapterError>) -> Result<T, AdapterError> {
        let tx = self.db.begin_read().map_err(storage_err)?;
        f(&tx)
    }
}

#[async_trait]
impl StatusStore for EmbeddedStatusStore {
    async fn create(&self, record: &ApplicationRecord, idem: Option<&IdempotencyClaim>) -> Result<CreateOutcome, AdapterError> {
        let (record, idem) = (record.clone(), idem.cloned());
        self.writer.write(move |tx| create_in(tx, &record, idem.as_ref())).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<ApplicationRecord>, AdapterError> {
        self.read(|tx| {
            let t = tx.open_table(RECORDS).map_err(storage_err)?;
            match t.get(id.as_bytes().as_slice()).map_err(storage_err)? {
                Some(v) => decode(v.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    async fn transition(&self, id: Uuid, t: &Transition) -> Result<TransitionOutcome, AdapterError> {
        let t = t.clone();
        self.writer.write(move |tx| transition_in(tx, id, &t)).await
    }

    async fn claim(&self, namespace: &str, key: &str, owner: &str) -> Result<Claim, AdapterError> {
        let mut claims = self.claim_many(namespace, &[key.to_owned()], owner).await?;
        claims.pop().ok_or_else(|| AdapterError::Corrupt("claim: no answer".into()))
    }

    async fn claimed_by(&self, namespace: &str, key: &str) -> Result<Option<String>, AdapterError> {
        let k = claim_key(namespace, key);
        self.read(|tx| {
            let t = tx.open_table(CLAIMS).map_err(storage_err)?;
            let owner = t.get(k.as_str()).map_err(storage_err)?.map(|v| v.value().to_owned());
            Ok(owner)
        })
    }

    async fn claim_many(&self, namespace: &str, keys: &[String], owner: &str) -> Result<Vec<Claim>, AdapterError> {
        let owner = owner.to_owned();
        let keys: Vec<String> = keys.iter().map(|k| claim_key(namespace, k)).collect();
        self.writer.write(move |tx| claim_in(tx, &keys, &owner)).await
    }

    async fn release(&self, namespace: &str, key: &str, owner: &str) -> Result<bool, AdapterError> {
        let (k, owner) = (claim_key(namespace, key), owner.to_owned());
        self.writer
            .write(move |tx| {
                let mut t = tx.open_table(CLAIMS).map_err(storage_err)?;
                let mine = t.get(k.as_str()).map_err(storage_err)?.is_some_and(|v| v.value() == owner);
                if mine {
                    t.remove(k.as_str()).map_err(storage_err)?;
                }
                Ok(Wrote { value: mine, wrote: mine })
            })
            .await
    }

    async fn replace_claim(&self, namespace: &str, key: &str, expected: Option<&str>, owner: &str) -> Result<bool, AdapterError> {
        let (k, expected, owner) = (claim_key(namespace, key), expected.map(str::to_owned), owner.to_owned());
        self.writer
            .write(move |tx| {
                let mut t = tx.open_table(CLAIMS).map_err(storage_err)?;
                let current = t.get(k.as_str()).map_err(storage_err)?.map(|v| v.value().to_owned());
                let swap = current == expected;
                if swap && current.as_deref() != Some(owner.as_str()) {
                    t.insert(k.as_str(), owner.as_str()).map_err(storage_err)?;
                }
                Ok(Wrote { value: swap, wrote: swap })
            })
            .await
    }

    async fn list_by_status(&self, status: Status, limit: usize) -> Result<Vec<ApplicationRecord>, AdapterError> {
        self.read(|tx| {
            let index = tx.open_table(BY_STATUS).map_err(storage_err)?;
            let records = tx.open_table(RECORDS).map_err(storage_err)?;
            let b = status_byte(status);
            let lo = [b];
            let hi = [b.saturating_add(1)];
            let mut out = Vec::new();
            for entry in index.range::<&[u8]>(lo.as_slice()..hi.as_slice()).map_err(storage_err)? {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = entry.map_err(storage_err)?;
                let id = k.value().get(9..25).ok_or_else(|| AdapterError::Corrupt("status index key".into()))?;
                // The index is written in the same transaction as the record, so a dangling entry
                // means corruption, not a race.
                let v = records
                    .get(id)
                    .map_err(storage_err)?
                    .ok_or_else(|| AdapterError::Corrupt("status index points at a missing record".into()))?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, AdapterError> {
        self.read(|tx| {
            let counts = tx.open_table(COUNTS).map_err(storage_err)?;
            let mut out = Vec::new();
            for s in Status::ALL {
                let n = counts.get(s.as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
                out.push((*s, n));
            }
            Ok(out)
        })
    }
}
