//! Embedded event bus with Kafka's semantics on redb: topics split into partitions, a message's
//! partition chosen by a stable hash of its key, offsets per partition, and consumer groups whose
//! committed offsets are durable.
//!
//! Group membership lives in memory (members of one group are in this process): each topic's
//! partitions are dealt out by `partition % members` over the sorted ids of the members subscribed
//! to that topic, and whenever a member joins or leaves the group's generation changes. Every member
//! then keeps the partitions it still holds and starts each newly assigned one at the group's
//! committed offset, so whatever a departed member had not committed is delivered again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kyufu_ports::{AdapterError, Consumer, EventBus, Message};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use crate::writer::{Writer, Wrote};
use crate::{lock, storage_err};

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

pub(crate) fn encode_message(key: &[u8], payload: &[u8]) -> Result<Vec<u8>, AdapterError> {
    let klen = u32::try_from(key.len()).map_err(|_| AdapterError::Unavailable("bus: message key too long".into()))?;
    let mut value = Vec::with_capacity(4 + key.len() + payload.len());
    value.extend_from_slice(&klen.to_be_bytes());
    value.extend_from_slice(key);
    value.extend_from_slice(payload);
    Ok(value)
}

fn decode_message(raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), AdapterError> {
    let corrupt = || AdapterError::Corrupt("bus message".into());
    let head: [u8; 4] = raw.get(0..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?;
    let klen = usize::try_from(u32::from_be_bytes(head)).map_err(|_| corrupt())?;
    let end = klen.checked_add(4).ok_or_else(corrupt)?;
    let key = raw.get(4..end).ok_or_else(corrupt)?.to_vec();
    let payload = raw.get(end..).ok_or_else(corrupt)?.to_vec();
    Ok((key, payload))
}

/// Partitions of `topic`, creating the topic with `default` partitions when new. Runs inside the
/// caller's write transaction so creating a topic costs no commit of its own.
fn ensure_topic(tx: &WriteTransaction, topic: &str, default: u32) -> Result<u32, AdapterError> {
    let mut t = tx.open_table(TOPICS).map_err(storage_err)?;
    let existing = t.get(topic).map_err(storage_err)?.map(|v| v.value());
    match existing {
        Some(0) => Err(AdapterError::Corrupt(format!("bus: topic {topic} has 0 partitions"))),
        Some(n) => Ok(n),
        None => {
            t.insert(topic, default).map_err(storage_err)?;
            Ok(default)
        }
    }
}

/// Appends `value` (an encoded message) to its partition of `topic`, taking the partition's next
/// offset. The writer runs one operation at a time, so two publishers never take the same offset.
pub(crate) fn publish_in(tx: &WriteTransaction, topic: &str, key: &[u8], value: &[u8], default: u32) -> Result<Wrote<()>, AdapterError> {
    let partitions = ensure_topic(tx, topic, default)?;
    let partition = partition_for(key, partitions);
    let mut ends = tx.open_table(ENDS).map_err(storage_err)?;
    let ek = end_key(topic, partition);
    let offset = ends.get(ek.as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
    let next = offset.checked_add(1).ok_or_else(|| AdapterError::Corrupt(format!("bus: offset overflow in {ek}")))?;
    tx.open_table(MESSAGES)
        .map_err(storage_err)?
        .insert(msg_key(topic, partition, offset).as_slice(), value)
        .map_err(storage_err)?;
    ends.insert(ek.as_str(), next).map_err(storage_err)?;
    Ok(Wrote::yes(()))
}

/// Partitions of `topic` from a read snapshot, if the topic exists (the common case: no write).
fn read_topic(db: &Database, topic: &str) -> Result<Option<u32>, AdapterError> {
    let tx = db.begin_read().map_err(storage_err)?;
    let t = tx.open_table(TOPICS).map_err(storage_err)?;
    let n = t.get(topic).map_err(storage_err)?.map(|v| v.value());
    Ok(n.filter(|n| *n > 0))
}

/// A consumer group's live members and their subscriptions.
#[derive(Default)]
struct Group {
    /// Member id -> subscribed topics with their partition counts.
    members: BTreeMap<u64, BTreeMap<String, u32>>,
    generation: u64,
}

impl Group {
    /// The partitions `member` owns: for each of its topics, partition `p` goes to the
    /// `p % n`-th of the `n` members (sorted by id) subscribed to that topic.
    fn assignment(&self, member: u64) -> BTreeSet<(String, u32)> {
        let mut out = BTreeSet::new();
        let Some(topics) = self.members.get(&member) else { return out };
        for (topic, partitions) in topics {
            let sharing: Vec<u64> =
                self.members.iter().filter(|(_, ts)| ts.contains_key(topic)).map(|(id, _)| *id).collect();
            let Some(index) = sharing.iter().position(|id| *id == member) else { continue };
            for p in 0..*partitions {
                if usize::try_from(p).is_ok_and(|p| p % sharing.len() == index) {
                    out.insert((topic.clone(), p));
                }
            }
        }
        out
    }
}

type Groups = Arc<Mutex<HashMap<String, Group>>>;

/// The embedded [`EventBus`]; obtain it with [`crate::EmbeddedStore::bus`].
pub struct EmbeddedBus {
    db: Arc<Database>,
    writer: Arc<Writer>,
    default_partitions: u32,
    /// One per topic, woken after every commit that appended to it and on membership changes of
    /// a group reading it; a consumer sleeps on the ones of its topics.
    wakers: Wakers,
    groups: Groups,
    next_member: AtomicU64,
}

/// Topic -> its `Notify`, made on first use.
#[derive(Clone, Default)]
pub(crate) struct Wakers(Arc<Mutex<HashMap<String, Arc<Notify>>>>);

impl Wakers {
    pub(crate) fn of(&self, topic: &str) -> Arc<Notify> {
        lock(&self.0).entry(topic.to_owned()).or_default().clone()
    }
}

impl EmbeddedBus {
    pub(crate) fn new(db: Arc<Database>, writer: Arc<Writer>, default_partitions: u32) -> Self {
        EmbeddedBus {
            db,
            writer,
            default_partitions,
            wakers: Wakers::default(),
            groups: Arc::default(),
            next_member: AtomicU64::new(1),
        }
    }

    pub(crate) fn wakers(&self) -> Wakers {
        self.wakers.clone()
    }
}

#[async_trait]
impl EventBus for EmbeddedBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), AdapterError> {
        let value = encode_message(key, payload)?;
        let (topic, key, default) = (topic.to_owned(), key.to_vec(), self.default_partitions);
        // Woken on the writer thread right after the commit, so a cancelled publish still wakes.
        let waker = self.wakers.of(&topic);
        let wake: Box<dyn FnOnce(&()) + Send> = Box::new(move |()| waker.notify_waiters());
        self.writer.write_then(move |tx| publish_in(tx, &topic, &key, &value, default), Some(wake)).await
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError> {
        let default = self.default_partitions;
        let mut subscribed = BTreeMap::new();
        let mut missing = Vec::new();
        for topic in topics {
            match read_topic(&self.db, topic)? {
                Some(n) => {
                    subscribed.insert((*topic).to_owned(), n);
                }
                None => missing.push((*topic).to_owned()),
            }
        }
        if !missing.is_empty() {
            let created = self
                .writer
                .write(move |tx| {
                    let mut out = Vec::new();
                    for topic in &missing {
                        out.push((topic.clone(), ensure_topic(tx, topic, default)?));
                    }
                    Ok(Wrote::yes(out))
                })
                .await?;
            subscribed.extend(created);
        }
        let wakers: Vec<Arc<Notify>> = subscribed.keys().map(|t| self.wakers.of(t)).collect();
        // Members of the group reading these topics recompute their share when woken.
        let member = self.next_member.fetch_add(1, Ordering::Relaxed);
        let topic_names: Vec<String> = subscribed.keys().cloned().collect();
        {
            let mut groups = lock(&self.groups);
            let g = groups.entry(group.to_owned()).or_default();
            g.members.insert(member, subscribed);
            g.generation += 1;
        }
        for waker in &wakers {
            waker.notify_waiters();
        }
        Ok(Box::new(EmbeddedConsumer {
            db: self.db.clone(),
            writer: self.writer.clone(),
            wakers,
            bus_wakers: self.wakers.clone(),
            topics: topic_names,
            groups: self.groups.clone(),
            group: group.to_owned(),
            member,
            generation: 0,
            positions: BTreeMap::new(),
            next_index: 0,
        }))
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), AdapterError> {
        Ok(()) // every publish is already durable when it returns
    }
}

struct EmbeddedConsumer {
    db: Arc<Database>,
    writer: Arc<Writer>,
    /// The `Notify`s of this member's topics.
    wakers: Vec<Arc<Notify>>,
    bus_wakers: Wakers,
    topics: Vec<String>,
    groups: Groups,
    group: String,
    member: u64,
    /// Generation the assignment below was computed for (0: not yet computed).
    generation: u64,
    /// Assigned (topic, partition) -> next offset to deliver.
    positions: BTreeMap<(String, u32), u64>,
    /// Round-robin start, so one busy partition does not starve the others.
    next_index: usize,
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get_mut(&self.group) {
            g.members.remove(&self.member);
            g.generation += 1;
            if g.members.is_empty() {
                groups.remove(&self.group);
            }
        }
        drop(groups);
        // The others of the group take over this member's partitions: wake them.
        for topic in &self.topics {
            self.bus_wakers.of(topic).notify_waiters();
        }
    }
}

impl EmbeddedConsumer {
    /// Recomputes the assignment if the group changed. Partitions still held keep their position
    /// (moved forward if the group committed past it meanwhile); new ones start at the committed
    /// offset.
    async fn refresh(&mut self) -> Result<(), AdapterError> {
        let (generation, wanted) = {
            let groups = lock(&self.groups);
            let Some(g) = groups.get(&self.group) else { return Ok(()) };
            (g.generation, g.assignment(self.member))
        };
        if generation == self.generation {
            return Ok(());
        }
        let committed = {
            let tx = self.db.begin_read().map_err(storage_err)?;
            let commits = tx.open_table(COMMITS).map_err(storage_err)?;
            let mut out = BTreeMap::new();
            for (topic, p) in wanted {
                let c = commits.get(commit_key(&self.group, &topic, p).as_str()).map_err(storage_err)?.map(|v| v.value());
                out.insert((topic, p), c.unwrap_or(0));
            }
            out
        };
        let previous = std::mem::take(&mut self.positions);
        self.positions = committed
            .into_iter()
            .map(|(tp, committed)| {
                let position = previous.get(&tp).map_or(committed, |held| (*held).max(committed));
                (tp, position)
            })
            .collect();
        self.generation = generation;
        Ok(())
    }

    /// Up to `max` available messages from one read snapshot: the assigned partitions in turn
    /// (starting one further each call, so one busy partition does not starve the others), at most
    /// an even share of `max` from each, in offset order within a partition.
    fn take(&mut self, max: usize) -> Result<Vec<Message>, AdapterError> {
        let n = self.positions.len();
        if n == 0 || max == 0 {
            return Ok(Vec::new());
        }
        let share = max.div_ceil(n);
        let assigned: Vec<(String, u32, u64)> = self.positions.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        let start = self.next_index % n;
        let tx = self.db.begin_read().map_err(storage_err)?;
        let msgs = tx.open_table(MESSAGES).map_err(storage_err)?;
        let mut out = Vec::new();
        for (topic, partition, offset) in assigned.into_iter().cycle().skip(start).take(n) {
            let room = share.min(max - out.len());
            if room == 0 {
                break;
            }
            let (lo, hi) = (msg_key(&topic, partition, offset), msg_key(&topic, partition, u64::MAX));
            let mut next = offset;
            for entry in msgs.range::<&[u8]>(lo.as_slice()..hi.as_slice()).map_err(storage_err)?.take(room) {
                let (_, v) = entry.map_err(storage_err)?;
                let (key, payload) = decode_message(v.value())?;
                out.push(Message { topic: topic.clone(), partition, offset: next, key, payload });
                next = next.saturating_add(1);
            }
            self.positions.insert((topic, partition), next);
        }
        self.next_index = (start + 1) % n;
        Ok(out)
    }

    /// Waits until `take` finds something or `timeout` passes.
    async fn wait_for(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>, AdapterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let wakers = self.wakers.clone();
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let mut waiting: Vec<_> = wakers.iter().map(|w| Box::pin(w.notified())).collect();
            for w in &mut waiting {
                w.as_mut().enable();
            }
            self.refresh().await?;
            let found = self.take(max)?;
            if !found.is_empty() {
                return Ok(found);
            }
            if waiting.is_empty() || tokio::time::timeout_at(deadline, futures_select_any(waiting)).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

/// Resolves when any of `futures` does.
async fn futures_select_any<F: std::future::Future<Output = ()> + Unpin>(mut futures: Vec<F>) {
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if std::pin::Pin::new(&mut *f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<Option<Message>, AdapterError> {
        Ok(self.wait_for(1, timeout).await?.pop())
    }

    async fn poll_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>, AdapterError> {
        self.wait_for(max.max(1), timeout).await
    }

    async fn commit(&mut self, msg: &Message) -> Result<(), AdapterError> {
        let key = commit_key(&self.group, &msg.topic, msg.partition);
        let next = msg.offset.saturating_add(1);
        self.writer
            .write(move |tx| {
                let mut commits = tx.open_table(COMMITS).map_err(storage_err)?;
                let cur = commits.get(key.as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
                if next > cur {
                    commits.insert(key.as_str(), next).map_err(storage_err)?;
                }
                Ok(Wrote { value: (), wrote: next > cur })
            })
            .await
    }

    async fn lag(&mut self) -> Result<Option<u64>, AdapterError> {
        self.refresh().await?;
        let tx = self.db.begin_read().map_err(storage_err)?;
        let ends = tx.open_table(ENDS).map_err(storage_err)?;
        let commits = tx.open_table(COMMITS).map_err(storage_err)?;
        let mut lag = 0u64;
        for (t, p) in self.positions.keys() {
            let end = ends.get(end_key(t, *p).as_str()).map_err(storage_err)?.map(|v| v.value()).unwrap_or(0);
            let c = commits.get(commit_key(&self.group, t, *p).as_str()).map_err(storage_err)?.map(|v| v.value());
            lag = lag.saturating_add(end.saturating_sub(c.unwrap_or(0)));
        }
        Ok(Some(lag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spread() {
        // Pinned values: a change of hash would move keys between partitions of existing data.
        assert_eq!(partition_for(b"", 4), u32::try_from(0xcbf2_9ce4_8422_2325_u64 % 4).unwrap_or(9));
        assert_eq!(partition_for(b"child-1", 4), partition_for(b"child-1", 4));
        let used: BTreeSet<u32> = (0..100).map(|i| partition_for(format!("k{i}").as_bytes(), 4)).collect();
        assert_eq!(used.len(), 4);
        assert!((0..100).all(|i| partition_for(format!("k{i}").as_bytes(), 3) < 3));
    }

    #[test]
    fn fnv1a_matches_the_reference_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(partition_for(b"a", 1000), u32::try_from(0xaf63_dc4c_8601_ec8c_u64 % 1000).unwrap_or(u32::MAX));
    }

    #[test]
    fn assignment_splits_each_topic_among_its_subscribers_only() {
        let mut g = Group::default();
        let both: BTreeMap<String, u32> = [("a".to_owned(), 4), ("b".to_owned(), 2)].into();
        g.members.insert(1, both);
        g.members.insert(2, [("a".to_owned(), 4)].into());
        let one = g.assignment(1);
        let two = g.assignment(2);
        assert!(one.is_disjoint(&two));
        // Topic b has one subscriber, who must get all of it.
        assert!(one.contains(&("b".to_owned(), 0)) && one.contains(&("b".to_owned(), 1)));
        assert_eq!(one.len() + two.len(), 6, "every partition owned: {one:?} {two:?}");
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn message_encoding_round_trips_and_rejects_garbage() {
        let raw = encode_message(b"key", b"payload").expect("encode");
        assert_eq!(decode_message(&raw).expect("decode"), (b"key".to_vec(), b"payload".to_vec()));
        assert!(matches!(decode_message(&[0, 0]), Err(AdapterError::Corrupt(_))));
        assert!(matches!(decode_message(&[0xff, 0xff, 0xff, 0xff, 1]), Err(AdapterError::Corrupt(_))));
    }
}
