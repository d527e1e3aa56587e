//! The waiting room's queue numbers in Redis, so several gateway nodes serve one queue with the
//! same results as one node.
//!
//! **Layout** (under the configured prefix, one queue per event): `{p}queue:{event}` — hash
//! `{epoch, issued, cursor, spent}`; `{p}queue:{event}:lease` — string, the token of the node that moves
//! the cursor, with a PX expiry.
//!
//! **Joins** on one node are coalesced: a batching task takes every join waiting in its channel (up
//! to `max_batch`), allocates them with one `HINCRBY issued n` and hands the `n` consecutive
//! numbers to the callers in arrival order. Nothing is allocated for nobody: a failed call allocates
//! nothing, so there are no gaps a cursor would waste admissions on.
//!
//! **Epoch**: every script sets it with `HSETNX` to a fresh random value if it is missing, so all
//! nodes share the first one written. If the hash vanishes (Redis flushed or lost), the next call
//! picks a new epoch and tickets of the old numbering are refused, as after a single-node restart.
//!
//! **One writer**: a node moves the cursor only while it holds the lease (`SET NX PX`, renewed by a
//! compare-and-extend script every `renew_every`; a failed renewal means it stops advancing). The
//! move itself is one script that checks the lease token (fencing: a writer whose lease has passed
//! to another node moves nothing) and does `cursor = min(cursor + n, issued)`. Followers neither
//! take admission tokens nor advance; they see the cursor move and measure its rate from that.
//!
//! **Liveness**: `{p}queue:{event}:live` — hash, number → the latest Unix second any node saw the
//! visitor holding it poll (each node sends what it saw since the last tick, keeping the larger
//! time); `{p}queue:{event}:skipped` — sorted set of the numbers the cursor's node skipped as
//! abandoned. One script per node per tick: the cursor's node reads the next few thousand numbers'
//! times, clears the records of numbers the cursor passed and forgets old skips; the others read
//! the skips they have not seen. Both stay within the liveness window around the cursor.
//!
//! **Spent passes**: `spent` in the queue hash counts passes spent on any node (`HINCRBY`).
//!
//! **One place per reference**: `{p}queue:{event}:refs` — hash, keyed hash of an applicant
//! reference → `epoch:seq:join time`, bounded by the reference capacity (`HLEN`).
//!
//! **Operator controls**: `{p}queue:{event}:controls` — hash of the fields operators changed
//! (`paused`, `rate`, `message`, …) and a `version` moved on by every change; each node reads it
//! once a tick when the version moved and takes the fields over.
//!
//! **Launch-day pre-queue**: the first node to open the queue fixes `pq_base` and `pq_size` (the
//! numbers issued by then) in the queue hash, in one script; every node draws the same order. The
//! draw's seed is `launch_seed` in the same hash, written by the first node to start (`HSETNX`).
//!
//! **Cache**: `counters` answers from the last numbers read for up to `cache_max_age`; the gateway's
//! ticker calls `refresh` every tick, so polls do not reach Redis. When Redis is unreachable,
//! `counters` keeps answering with the last numbers (waiting visitors keep their place), `refresh`
//! and `join` fail (readiness down, joins 503), and the lease runs out, so nobody is admitted until
//! the shared cursor can be written again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kyufu_gateway::{Counters, LivenessReport, LivenessShared, QueueState, SharedReference, Slot, StateError};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::{mpsc, oneshot};

use crate::RedisConfig;

/// Timing and batching of a shared queue.
#[derive(Debug, Clone)]
pub struct QueueStateConfig {
    /// How long a lease lasts without renewal: the longest admission stops after the writer node
    /// dies.
    pub lease_ttl: Duration,
    /// How often the lease is renewed (or, on other nodes, tried for); well below `lease_ttl`.
    pub renew_every: Duration,
    /// How long `counters` may answer from the last numbers read.
    pub cache_max_age: Duration,
    /// Most joins allocated by one `HINCRBY`.
    pub max_batch: usize,
}

impl Default for QueueStateConfig {
    fn default() -> Self {
        QueueStateConfig {
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            cache_max_age: Duration::from_millis(150),
            max_batch: 256,
        }
    }
}

/// KEYS: queue. ARGV: n, candidate epoch. Allocates `n` numbers; returns {epoch, last, cursor}.
const JOIN: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local last = redis.call('HINCRBY', KEYS[1], 'issued', ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'epoch', 'cursor')
return {tonumber(v[1]), last, tonumber(v[2] or 0)}
"#;

/// KEYS: queue. ARGV: candidate epoch. Returns {epoch, issued, cursor, spent}.
const READ: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'epoch', 'issued', 'cursor', 'spent')
return {tonumber(v[1]), tonumber(v[2] or 0), tonumber(v[3] or 0), tonumber(v[4] or 0)}
"#;

/// KEYS: queue, lease. ARGV: token, n, candidate epoch. Moves the cursor by up to `n`, never past
/// `issued`, only for the lease holder. Returns {-1} without the lease, else {moved, epoch, issued,
/// cursor, spent}.
const ADVANCE: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1} end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'epoch', 'issued', 'cursor', 'spent')
local issued = tonumber(v[2] or 0)
local cursor = tonumber(v[3] or 0)
local to = math.min(cursor + tonumber(ARGV[2]), issued)
if to < cursor then to = cursor end
if to > cursor then redis.call('HSET', KEYS[1], 'cursor', to) end
return {to - cursor, tonumber(v[1]), issued, to, tonumber(v[4] or 0)}
"#;

/// KEYS: lease. ARGV: token, ttl ms. Extends the lease only if this node still holds it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: controls hash. ARGV: field, value pairs. Writes them and moves the version on.
const PUBLISH_CONTROLS: &str = r#"
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return redis.call('HINCRBY', KEYS[1], 'version', 1)
"#;

/// KEYS: controls hash. ARGV: the version known. Returns {version} when nothing changed, else
/// {version, field, value, ...}.
const SHARED_CONTROLS: &str = r#"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or 0)
if v <= tonumber(ARGV[1]) then return {tostring(v)} end
local out = {tostring(v)}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= 'version' then out[#out + 1] = all[i]; out[#out + 1] = all[i + 1] end
end
return out
"#;

/// KEYS: references hash. ARGV: key, epoch, seq (0: look only), join time, capacity. Returns
/// {seq, jat} held in this epoch (or just recorded), {} when unknown (look-up), {-1} when full.
const REFERENCE: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local e, s, j = string.match(v, '^(%d+):(%d+):(%d+)$')
  if e == ARGV[2] then return {tonumber(s), tonumber(j)} end
end
if ARGV[3] == '0' then return {} end
if not v and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {-1} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4])
return {tonumber(ARGV[3]), tonumber(ARGV[4])}
"#;

/// KEYS: lease. ARGV: token. Gives the lease up only if this node holds it.
const RELEASE_LEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: live hash, skipped set. ARGV: n, then n (number, time) pairs; m, then m skipped numbers;
/// prune from, prune to (inclusive; from > to: none); fetch from, fetch to (likewise); skipped
/// after ('' for none); forget skipped below ('' for none). Returns {fetched (number, time) pairs
/// flattened, skipped numbers}.
const LIVENESS: &str = r#"
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  local seq, at = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  local cur = redis.call('HGET', KEYS[1], seq)
  if not cur or tonumber(cur) < at then redis.call('HSET', KEYS[1], seq, at) end
end
local m = tonumber(ARGV[i]); i = i + 1
for k = 1, m do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i]); i = i + 1
end
local pf, pt = tonumber(ARGV[i]), tonumber(ARGV[i + 1]); i = i + 2
local batch = {}
for seq = pf, pt do
  batch[#batch + 1] = seq
  if #batch == 1000 then redis.call('HDEL', KEYS[1], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('HDEL', KEYS[1], unpack(batch)) end
local ff, ft = tonumber(ARGV[i]), tonumber(ARGV[i + 1]); i = i + 2
local seen = {}
local from = ff
while from <= ft do
  local to = math.min(ft, from + 999)
  local fields = {}
  for seq = from, to do fields[#fields + 1] = seq end
  local vals = redis.call('HMGET', KEYS[1], unpack(fields))
  for k = 1, #fields do
    if vals[k] then seen[#seen + 1] = fields[k]; seen[#seen + 1] = tonumber(vals[k]) end
  end
  from = to + 1
end
local after, below = ARGV[i], ARGV[i + 1]
if below ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. below) end
local skipped = {}
if after ~= '' then skipped = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. after, '+inf', 'LIMIT', 0, 100000) end
return {seen, skipped}
"#;

/// KEYS: queue. ARGV: base, candidate epoch. Fixes the pre-queue on the first call as
/// `base+1 ..= issued`; returns {base, size} as fixed.
const CLOSE_PREQUEUE: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'pq_size') == 0 then
  local issued = tonumber(redis.call('HGET', KEYS[1], 'issued') or 0)
  local base = tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], 'pq_base', base, 'pq_size', math.max(issued - base, 0))
end
local v = redis.call('HMGET', KEYS[1], 'pq_base', 'pq_size')
return {tonumber(v[1]), tonumber(v[2])}
"#;

type Waiter = oneshot::Sender<Result<Slot, StateError>>;

/// The shared [`QueueState`]. Background tasks (join batching, lease) stop when it is dropped; a
/// dropped writer's lease runs out after `lease_ttl` and another node takes over.
pub struct RedisQueueState {
    inner: Arc<Inner>,
    joins: mpsc::Sender<Waiter>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Inner {
    conn: ConnectionManager,
    queue_key: String,
    lease_key: String,
    live_key: String,
    skipped_key: String,
    controls_key: String,
    refs_key: String,
    /// This node's lease token: random, so a stale writer cannot pass the fence.
    token: String,
    config: QueueStateConfig,
    /// Until when this node may advance: lease granted at send time + `lease_ttl`.
    lease_until: Mutex<Option<Instant>>,
    cache: Mutex<Cache>,
    join: Script,
    read: Script,
    advance: Script,
    renew: Script,
    liveness: Script,
    close_prequeue: Script,
    publish_controls: Script,
    shared_controls: Script,
    reference: Script,
    release_lease: Script,
}

#[derive(Default)]
struct Cache {
    counters: Option<Counters>,
    /// Last time Redis was asked (answered or not); `counters` asks again only after
    /// `cache_max_age`, so an outage does not make every poll wait on Redis.
    asked: Option<Instant>,
}

fn unavailable(e: &redis::RedisError) -> StateError {
    // Kind only: Redis error texts may quote arguments.
    StateError::Unavailable(format!("redis: {:?}", e.kind()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values only: a panic mid-assignment leaves them usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisQueueState {
    /// Connects and starts the join batcher and the lease task. `queue` names the queue (the event
    /// id): nodes with the same prefix and queue share it.
    pub async fn connect(redis: &RedisConfig, queue: &str, config: QueueStateConfig) -> Result<Self, StateError> {
        let conn = crate::open_connection(redis).await.map_err(StateError::Unavailable)?;
        let queue_key = format!("{}queue:{}", redis.prefix, queue);
        let inner = Arc::new(Inner {
            conn,
            lease_key: format!("{queue_key}:lease"),
            live_key: format!("{queue_key}:live"),
            skipped_key: format!("{queue_key}:skipped"),
            controls_key: format!("{queue_key}:controls"),
            refs_key: format!("{queue_key}:refs"),
            queue_key,
            token: format!("{:032x}", rand::random::<u128>()),
            lease_until: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            join: Script::new(JOIN),
            read: Script::new(READ),
            advance: Script::new(ADVANCE),
            renew: Script::new(RENEW),
            liveness: Script::new(LIVENESS),
            close_prequeue: Script::new(CLOSE_PREQUEUE),
            publish_controls: Script::new(PUBLISH_CONTROLS),
            shared_controls: Script::new(SHARED_CONTROLS),
            reference: Script::new(REFERENCE),
            release_lease: Script::new(RELEASE_LEASE),
            config,
        });
        inner.read_counters().await?;
        let (joins, rx) = mpsc::channel(inner.config.max_batch.max(1) * 4);
        let tasks = vec![tokio::spawn(batch_joins(inner.clone(), rx)), tokio::spawn(keep_lease(inner.clone()))];
        Ok(RedisQueueState { inner, joins, tasks })
    }
}

impl Drop for RedisQueueState {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// A fresh random epoch for the scripts to set if the queue has none, never the one this node
    /// knows (that numbering is gone if the hash vanished).
    fn candidate_epoch(&self) -> u32 {
        let known = lock(&self.cache).counters.map(|c| c.epoch);
        loop {
            let epoch = rand::random::<u32>().max(1);
            if Some(epoch) != known {
                return epoch;
            }
        }
    }

    /// Takes numbers read from Redis into the cache. Within an epoch nothing moves backwards,
    /// whatever order answers arrive in; a new epoch replaces everything.
    fn remember(&self, fresh: Counters) -> Counters {
        let mut cache = lock(&self.cache);
        let merged = match cache.counters {
            Some(old) if old.epoch == fresh.epoch => {
                Counters {
                    epoch: fresh.epoch,
                    issued: old.issued.max(fresh.issued),
                    cursor: old.cursor.max(fresh.cursor),
                    spent: old.spent.max(fresh.spent),
                }
            }
            _ => fresh,
        };
        cache.counters = Some(merged);
        merged
    }

    async fn read_counters(&self) -> Result<Counters, StateError> {
        lock(&self.cache).asked = Some(Instant::now());
        let mut inv = self.read.prepare_invoke();
        inv.key(&self.queue_key).arg(self.candidate_epoch());
        let mut conn = self.conn.clone();
        let (epoch, issued, cursor, spent): (u32, u64, u64, u64) =
            inv.invoke_async(&mut conn).await.map_err(|e| unavailable(&e))?;
        Ok(self.remember(Counters { epoch, issued, cursor, spent }))
    }

    /// Allocates `n` consecutive numbers; returns the epoch and the last of them.
    async fn allocate(&self, n: usize) -> Result<(u32, u64), StateError> {
        let mut inv = self.join.prepare_invoke();
        inv.key(&self.queue_key).arg(n).arg(self.candidate_epoch());
        let mut conn = self.conn.clone();
        let (epoch, last, cursor): (u32, u64, u64) =
            inv.invoke_async(&mut conn).await.map_err(|e| unavailable(&e))?;
        // The join script does not read `spent`; 0 never lowers the remembered count.
        self.remember(Counters { epoch, issued: last, cursor, spent: 0 });
        Ok((epoch, last))
    }

    fn holds_lease(&self) -> bool {
        lock(&self.lease_until).is_some_and(|until| Instant::now() < until)
    }

    /// Renews the lease if this node holds it, else tries to take it.
    async fn lease_step(&self) {
        let ttl_ms = u64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let sent = Instant::now();
        let mut conn = self.conn.clone();
        // Renewed even when this node thinks it lost the lease: after an outage shorter than the
        // lease, Redis may still hold this node's token, and nobody else can take it meanwhile.
        let believed = self.holds_lease();
        let mut inv = self.renew.prepare_invoke();
        inv.key(&self.lease_key).arg(&self.token).arg(ttl_ms);
        let mut held = match inv.invoke_async::<i64>(&mut conn).await {
            Ok(renewed) => renewed == 1,
            // Unknown outcome: keep the lease we know of until it runs out on its own.
            Err(_) => return,
        };
        if believed && !held {
            tracing::warn!("queue cursor lease lost to another gateway node");
        }
        if !held {
            let taken: Result<Option<String>, _> = redis::cmd("SET")
                .arg(&self.lease_key)
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await;
            match taken {
                Ok(reply) => {
                    held = reply.is_some();
                    if held && !believed {
                        tracing::info!("this gateway node now moves the queue cursor");
                    }
                }
                Err(_) => return,
            }
        }
        // Counted from the send, before Redis started the expiry: never later than Redis's own.
        *lock(&self.lease_until) = held.then(|| sent + self.config.lease_ttl);
    }
}

/// Coalesces the joins waiting in the channel into one allocation and answers them in order.
async fn batch_joins(inner: Arc<Inner>, mut rx: mpsc::Receiver<Waiter>) {
    let max = inner.config.max_batch.max(1);
    let mut batch: Vec<Waiter> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        // A caller that already gave up (its request was dropped) gets no number.
        batch.retain(|w| !w.is_closed());
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        match inner.allocate(n).await {
            Ok((epoch, last)) => {
                let first_seq = last.saturating_sub(n as u64) + 1;
                for (seq, waiter) in (first_seq..).zip(batch.drain(..)) {
                    // A caller gone since holds a number nobody uses, as a visitor who never polls.
                    let _ = waiter.send(Ok(Slot { epoch, seq }));
                }
            }
            Err(e) => {
                for waiter in batch.drain(..) {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn keep_lease(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(inner.config.renew_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        inner.lease_step().await;
    }
}

#[async_trait]
impl QueueState for RedisQueueState {
    async fn join(&self) -> Result<Slot, StateError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StateError::Unavailable("queue join batcher stopped".into());
        self.joins.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn counters(&self) -> Result<Counters, StateError> {
        let cached = {
            let cache = lock(&self.inner.cache);
            let fresh = cache.asked.is_some_and(|at| at.elapsed() < self.inner.config.cache_max_age);
            match cache.counters {
                Some(c) if fresh => return Ok(c),
                other => other,
            }
        };
        match self.inner.read_counters().await {
            Ok(c) => Ok(c),
            // Redis unreachable: the last numbers are still true for every waiting ticket (the
            // cursor cannot move without Redis), so polls keep answering with them.
            Err(e) => cached.ok_or(e),
        }
    }

    async fn refresh(&self) -> Result<Counters, StateError> {
        self.inner.read_counters().await
    }

    async fn publish_controls(&self, fields: &[(&'static str, String)]) -> Result<(), StateError> {
        let mut inv = self.inner.publish_controls.key(&self.inner.controls_key);
        for (name, value) in fields {
            inv.arg(*name).arg(value);
        }
        let mut conn = self.inner.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(|e| unavailable(&e))?;
        Ok(())
    }

    async fn shared_controls(&self, known: u64) -> Result<Option<(u64, Vec<(String, String)>)>, StateError> {
        let mut conn = self.inner.conn.clone();
        let reply: Vec<String> = self
            .inner
            .shared_controls
            .key(&self.inner.controls_key)
            .arg(known)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let version = reply.first().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if version <= known {
            return Ok(None);
        }
        let fields = reply[1..].chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
        Ok(Some((version, fields)))
    }

    async fn reference(&self, key: &str, epoch: u32, seq: u64, jat: u64, capacity: u64) -> Result<SharedReference, StateError> {
        let mut conn = self.inner.conn.clone();
        let reply: Vec<i64> = self
            .inner
            .reference
            .key(&self.inner.refs_key)
            .arg(key)
            .arg(epoch)
            .arg(seq)
            .arg(jat)
            .arg(capacity)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(match reply.as_slice() {
            [s, j] => SharedReference::Known { seq: as_u64(*s), jat: as_u64(*j) },
            [_] => SharedReference::Full,
            _ => SharedReference::Unknown,
        })
    }

    async fn release(&self) {
        // Stop renewing first, so the lease is not taken again right after.
        for task in &self.tasks {
            task.abort();
        }
        // Redis may still hold this node's token even if it thinks the lease lapsed: ask anyway.
        *lock(&self.inner.lease_until) = None;
        let mut conn = self.inner.conn.clone();
        let released: Result<i64, _> =
            self.inner.release_lease.key(&self.inner.lease_key).arg(&self.inner.token).invoke_async(&mut conn).await;
        match released {
            Ok(1) => tracing::info!("queue cursor lease released for another node"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e.kind(), "queue cursor lease not released; it runs out by itself"),
        }
    }

    async fn agree_launch_seed(&self, proposed: [u8; 32]) -> Result<[u8; 32], StateError> {
        let hex = kyufu_gateway::launch::seed_hex(&proposed);
        let mut conn = self.inner.conn.clone();
        let (_, stored): (i64, String) = redis::pipe()
            .atomic()
            .hset_nx(&self.inner.queue_key, "launch_seed", &hex)
            .hget(&self.inner.queue_key, "launch_seed")
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        kyufu_gateway::launch::parse_seed_hex(&stored)
            .ok_or_else(|| StateError::Unavailable("the stored launch seed is not 64 hex digits".into()))
    }

    async fn close_prequeue(&self, base: u64) -> Result<(u64, u64), StateError> {
        let mut inv = self.inner.close_prequeue.prepare_invoke();
        inv.key(&self.inner.queue_key).arg(base).arg(self.inner.candidate_epoch());
        let mut conn = self.inner.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(|e| unavailable(&e))
    }

    async fn exchange_liveness(&self, report: LivenessReport) -> Result<Option<LivenessShared>, StateError> {
        let mut inv = self.inner.liveness.prepare_invoke();
        inv.key(&self.inner.live_key).key(&self.inner.skipped_key);
        inv.arg(report.seen.len());
        for (seq, at) in &report.seen {
            inv.arg(*seq).arg(*at);
        }
        inv.arg(report.skipped.len());
        for seq in &report.skipped {
            inv.arg(*seq);
        }
        for range in [report.prune, report.fetch] {
            let (from, to) = range.unwrap_or((1, 0));
            inv.arg(from).arg(to);
        }
        let or_empty = |v: Option<u64>| v.map_or_else(String::new, |n| n.to_string());
        inv.arg(or_empty(report.skipped_after)).arg(or_empty(report.forget_skipped_below));
        let mut conn = self.inner.conn.clone();
        let (seen, skipped): (Vec<u64>, Vec<u64>) = inv.invoke_async(&mut conn).await.map_err(|e| unavailable(&e))?;
        let seen = seen.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        Ok(Some(LivenessShared { seen, skipped }))
    }

    async fn spend(&self) -> Result<(), StateError> {
        let mut conn = self.inner.conn.clone();
        let _: i64 = conn.hincr(&self.inner.queue_key, "spent", 1).await.map_err(|e| unavailable(&e))?;
        Ok(())
    }

    async fn advance(&self, n: u64) -> Result<u64, StateError> {
        if n == 0 || !self.inner.holds_lease() {
            return Ok(0);
        }
        let mut inv = self.inner.advance.prepare_invoke();
        inv.key(&self.inner.queue_key).key(&self.inner.lease_key);
        inv.arg(&self.inner.token).arg(n).arg(self.inner.candidate_epoch());
        let mut conn = self.inner.conn.clone();
        let reply: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(|e| unavailable(&e))?;
        match reply.as_slice() {
            [moved, epoch, issued, cursor, spent] => {
                let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
                let epoch = u32::try_from(*epoch).unwrap_or(0);
                let (issued, cursor, spent) = (as_u64(*issued), as_u64(*cursor), as_u64(*spent));
                self.inner.remember(Counters { epoch, issued, cursor, spent });
                Ok(as_u64(*moved))
            }
            _ => {
                // Fenced off: the lease passed to another node since it was last renewed here.
                *lock(&self.inner.lease_until) = None;
                tracing::warn!("queue cursor lease lost; this node stops advancing");
                Ok(0)
            }
        }
    }

    fn drives_cursor(&self) -> bool {
        self.inner.holds_lease()
    }

    fn is_shared(&self) -> bool {
        true
    }
}
