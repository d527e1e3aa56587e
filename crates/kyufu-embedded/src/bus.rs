//! Embedded event bus with Kafka's semantics on redb: topics split into partitions, a message's
//! partition chosen by a stable hash of its key, offsets per partition, and consumer groups whose
//! committed offsets are durable.
//!
//! Group membership lives in memory (members of one group are in this process): partitions are
//! dealt out by `partition % members` over the sorted member ids, and whenever a member joins or
//! leaves the group's generation changes; every member then restarts each partition it holds from
//! the group's committed offset, so whatever a departed member had not committed is delivered again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kyufu_ports::{AdapterError, Consumer, EventBus, Message};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use crate::{blocking, lock, storage_err};

/// `[topic][0][partition u32 BE][offset u64 BE]` -> `[key len u32 BE][key][payload]`
const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bus_messages");
/// `topic` -> partitions
const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("bus_topics");
/// `topic\x1fpartition` -> next offset
const ENDS: TableDefinition<&str, u64> = TableDefinition::new("bus_ends");
/// `group\x1ftopic\x1fpartition` -> committed (next offset to read)
const COMMITS: TableDefinition<&str, u64> = TableDefinition::new("bus_commits");

pub(crate) fn init_tables(db: &Database) -> Result<(), AdapterError> {
    let tx = db.begin_write().map_err(storage_err)?;
    tx.open_table(MESSAGES).map_err(storage_err)?;
    tx.open_table(TOPICS).map_err(storage_err)?;
    tx.open_table(ENDS).map_err(storage_err)?;
    tx.open_table(COMMITS).map_err(storage_err)?;
    tx.commit().map_err(storage_err)
}

fn msg_key(topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 13);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn end_key(topic: &str, partition: u32) -> String {
    format!("{topic}\u{1f}{partition}")
}

fn commit_key(group: &str, topic: &str, partition: u32) -> String {
    format!("{group}\u{1f}{topic}\u{1f}{partition}")
}

/// FNV-1a: stable across processes and versions, unlike std's hasher.
fn partition_for(key: &[u8], partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

#[derive(Default)]
struct Group {
    members: Vec<u64>,
    generation: u64,
}

pub struct EmbeddedBus {
    db: Arc<Database>,
    default_partitions: u32,
    /// Woken on every publish and membership change.
    notify: Arc<Notify>,
    groups: Arc<Mutex<HashMap<String, Group>>>,
    next_member: AtomicU64,
    /// Serialises offset allocation so two publishers never take the same offset.
    publish_lock: Arc<Mutex<()>>,
}

impl EmbeddedBus {
    pub(crate) fn new(db: Arc<Database>, default_partitions: u32) -> Self {
        EmbeddedBus {
            db,
            default_partitions,
            notify: Arc::new(Notify::new()),
            groups: Arc::default(),
            next_member: AtomicU64::new(1),
            publish_lock: Arc::default(),
        }
    }
}

/// Partitions of `topic`, creating the topic with `default` partitions when new.
fn ensure_topic(db: &Database, topic: &str, default: u32) -> Result<u32, AdapterError> {
    {
        let tx = db.begin_read().map_err(storage_err)?;
        let t = tx.open_table(TOPICS).map_err(storage_err)?;
        if let Some(v) = t.get(topic).map_err(storage_err)? {
            return Ok(v.value());
        }
    }
    let tx = db.begin_write().map_err(storage_err)?;
    let n = {
        let mut t = tx.open_table(TOPICS).map_err(storage_err)?;
        let existing = t.get(topic).map_err(storage_err)?.map(|v| v.value());
        match existing {
            Some(n) => n,
            None => {
                t.insert(topic, default).map_err(storage_err)?;
                default
            }
        }
    };
    tx.commit().map_err(storage_err)?;
    Ok(n)
}

#[async_trait]
impl EventBus for EmbeddedBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), AdapterError> {
        let (db, topic, default) = (self.db.clone(), topic.to_owned(), self.default_partitions);
        let mut value = Vec::with_capacity(4 + key.len() + payload.len());
        value.extend_from_slice(&u32::try_from(key.len()).unwrap_or(0).to_be_bytes());
        value.extend_from_slice(key);
        value.extend_from_slice(payload);
        let key = key.to_vec();
        let publish_lock = self.publish_lock.clone();
        blocking(move || {
            let partitions = ensure_topic(&db, &topic, default)?;
            let partition = partition_for(&key, partitions);
            let _guard = lock(&publish_lock);
            let tx = db.begin_write().map_err(storage_err)?;
            {
                let mut ends = tx.open_table(ENDS).map_err(storage_err)?;
                let ek = end_key(&topic, partition);
                let offset = ends.get(ek.as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
                tx.open_table(MESSAGES)
                    .map_err(storage_err)?
                    .insert(msg_key(&topic, partition, offset).as_slice(), value.as_slice())
                    .map_err(storage_err)?;
                ends.insert(ek.as_str(), offset + 1).map_err(storage_err)?;
            }
            tx.commit().map_err(storage_err)
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError> {
        let mut partitions = BTreeMap::new();
        for topic in topics {
            let (db, t, d) = (self.db.clone(), (*topic).to_owned(), self.default_partitions);
            let n = blocking(move || ensure_topic(&db, &t, d)).await?;
            partitions.insert((*topic).to_owned(), n);
        }
        let member = self.next_member.fetch_add(1, Ordering::Relaxed);
        {
            let mut groups = lock(&self.groups);
            let g = groups.entry(group.to_owned()).or_default();
            g.members.push(member);
            g.members.sort_unstable();
            g.generation += 1;
        }
        self.notify.notify_waiters();
        Ok(Box::new(EmbeddedConsumer {
            db: self.db.clone(),
            notify: self.notify.clone(),
            groups: self.groups.clone(),
            group: group.to_owned(),
            member,
            partitions,
            generation: 0,
            positions: Vec::new(),
            next_index: 0,
        }))
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), AdapterError> {
        Ok(()) // every publish is already durable when it returns
    }
}

struct EmbeddedConsumer {
    db: Arc<Database>,
    notify: Arc<Notify>,
    groups: Arc<Mutex<HashMap<String, Group>>>,
    group: String,
    member: u64,
    /// Subscribed topics and their partition counts.
    partitions: BTreeMap<String, u32>,
    /// Generation the assignment below was computed for.
    generation: u64,
    /// Assigned (topic, partition, next offset to deliver).
    positions: Vec<(String, u32, u64)>,
    /// Round-robin start, so one busy partition does not starve the others.
    next_index: usize,
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get_mut(&self.group) {
            g.members.retain(|m| *m != self.member);
            g.generation += 1;
        }
        drop(groups);
        self.notify.notify_waiters();
    }
}

impl EmbeddedConsumer {
    /// Recomputes the assignment if the group changed; positions restart at committed offsets.
    async fn refresh(&mut self) -> Result<(), AdapterError> {
        let (generation, index, count) = {
            let groups = lock(&self.groups);
            let Some(g) = groups.get(&self.group) else { return Ok(()) };
            let idx = g.members.iter().position(|m| *m == self.member).unwrap_or(0);
            (g.generation, idx, g.members.len().max(1))
        };
        if generation == self.generation {
            return Ok(());
        }
        let mut wanted = Vec::new();
        for (topic, n) in &self.partitions {
            for p in 0..*n {
                if (p as usize) % count == index {
                    wanted.push((topic.clone(), p));
                }
            }
        }
        let (db, group) = (self.db.clone(), self.group.clone());
        let positions = blocking(move || {
            let tx = db.begin_read().map_err(storage_err)?;
            let commits = tx.open_table(COMMITS).map_err(storage_err)?;
            let mut out = Vec::new();
            for (topic, p) in wanted {
                let c = commits.get(commit_key(&group, &topic, p).as_str()).map_err(storage_err)?.map(|v| v.value());
                out.push((topic, p, c.unwrap_or(0)));
            }
            Ok(out)
        })
        .await?;
        self.positions = positions;
        self.generation = generation;
        Ok(())
    }

    /// The first available message of an assigned partition, round-robin.
    async fn try_next(&mut self) -> Result<Option<Message>, AdapterError> {
        if self.positions.is_empty() {
            return Ok(None);
        }
        let db = self.db.clone();
        let n = self.positions.len();
        let order: Vec<(usize, String, u32, u64)> = (0..n)
            .map(|i| (self.next_index + i) % n)
            .map(|i| (i, self.positions[i].0.clone(), self.positions[i].1, self.positions[i].2))
            .collect();
        let found = blocking(move || {
            let tx = db.begin_read().map_err(storage_err)?;
            let msgs = tx.open_table(MESSAGES).map_err(storage_err)?;
            for (i, topic, p, offset) in order {
                if let Some(v) = msgs.get(msg_key(&topic, p, offset).as_slice()).map_err(storage_err)? {
                    let raw = v.value();
                    let corrupt = || AdapterError::Corrupt("bus message".into());
                    let klen = u32::from_be_bytes(raw.get(0..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?) as usize;
                    let key = raw.get(4..4 + klen).ok_or_else(corrupt)?.to_vec();
                    let payload = raw.get(4 + klen..).ok_or_else(corrupt)?.to_vec();
                    return Ok(Some((i, Message { topic, partition: p, offset, key, payload })));
                }
            }
            Ok(None)
        })
        .await?;
        Ok(found.map(|(i, msg)| {
            self.positions[i].2 = msg.offset + 1;
            self.next_index = (i + 1) % n;
            msg
        }))
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<Option<Message>, AdapterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let notify = self.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.refresh().await?;
            if let Some(msg) = self.try_next().await? {
                return Ok(Some(msg));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn commit(&mut self, msg: &Message) -> Result<(), AdapterError> {
        let (db, key, next) = (self.db.clone(), commit_key(&self.group, &msg.topic, msg.partition), msg.offset + 1);
        blocking(move || {
            let tx = db.begin_write().map_err(storage_err)?;
            {
                let mut commits = tx.open_table(COMMITS).map_err(storage_err)?;
                let cur = commits.get(key.as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
                if next > cur {
                    commits.insert(key.as_str(), next).map_err(storage_err)?;
                }
            }
            tx.commit().map_err(storage_err)
        })
        .await
    }

    async fn lag(&mut self) -> Result<Option<u64>, AdapterError> {
        let (db, group) = (self.db.clone(), self.group.clone());
        let assigned: Vec<(String, u32)> = self.positions.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        blocking(move || {
            let tx = db.begin_read().map_err(storage_err)?;
            let ends = tx.open_table(ENDS).map_err(storage_err)?;
            let commits = tx.open_table(COMMITS).map_err(storage_err)?;
            let mut lag = 0u64;
            for (t, p) in assigned {
                let end = ends.get(end_key(&t, p).as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
                let c = commits.get(commit_key(&group, &t, p).as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
                lag += end.saturating_sub(c);
            }
            Ok(Some(lag))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spread() {
        assert_eq!(partition_for(b"child-1", 4), partition_for(b"child-1", 4));
        let used: std::collections::HashSet<u32> = (0..100).map(|i| partition_for(format!("k{i}").as_bytes(), 4)).collect();
        assert_eq!(used.len(), 4);
    }
}
