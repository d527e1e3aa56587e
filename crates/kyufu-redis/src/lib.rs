//! The production status store on Redis.
//!
//! **Layout** (every key under a configurable prefix, `kyufu:` by default):
//! - `{p}app:{id}` — hash `{json, rev}`: the record as JSON and a revision number;
//! - `{p}idx:{status}` — sorted set of ids in that status, scored by `updated_at` (ms): the review
//!   queue and the reconciliation listing, oldest first;
//! - `{p}counts` — hash status → number of records (the review-backlog and status gauges);
//! - `{p}idem:{key}` — string `"{id} {fingerprint}"`, with a TTL (`idempotency_ttl`);
//! - `{p}claim:{namespace}:{key}` — string owner (the dedupe index, the coupon registry).
//!
//! **Atomicity.** Every write is one Lua script, so Redis runs it alone: `create` writes the record,
//! its index entry, the count and the idempotency key together or not at all; a `claim` is a
//! compare-and-set. A transition keeps the state machine in one place (`ApplicationRecord::apply`,
//! shared with the embedded store): the adapter reads the record, applies the transition in Rust,
//! and a script writes the result only if the revision is still the one it read (and moves the
//! index entry and the counts in the same step). A concurrent writer makes the script refuse; the
//! adapter then reads again and re-applies, so a race has exactly one winner and a replay finds the
//! record already moved (`AlreadyIn`): nothing can move backwards or be applied twice.
//!
//! **No re-read before a move.** A stage reads the record, decides, then moves it: `get` keeps
//! the record and its revision for a moment (`RecentReads`, a few thousand, oldest dropped), and
//! the move's first attempt applies the transition to that copy and sends the revision-checked
//! write at once: one round trip instead of a read and a write. The revision check makes the copy
//! safe to use: if anything moved the record since, the write is refused and the adapter reads
//! afresh as before. The copy is used only when the transition applies to it; any other answer
//! (`AlreadyIn`, `Refused`) comes from a fresh read, so no answer is ever taken from a stale copy.
//!
//! **Durability.** Production Redis runs with the append-only file (`deploy/redis/redis.conf`:
//! `appendonly yes`, `appendfsync everysec`). With `everysec` a crash of the Redis host can lose up
//! to a second of writes; the pipeline tolerates that because every stage's effect is re-derived
//! from Kafka (offsets are committed after the write is acknowledged, and a lost write is redone by
//! the redelivered message), and intake answers 202 only after the Kafka publish, whose consumers
//! recreate nothing but re-apply transitions. Operators who want zero loss on host crash set
//! `appendfsync always` at a throughput cost (measured in the crate's benchmark).
//!
//! **Expiry.** Idempotency keys expire (`idempotency_ttl`, 7 days by default): a retry after that
//! is a new application, which dedupe then marks `duplicate`. Records, claims and indexes live for
//! the program's lifetime (the dedupe index must outlive every application); a program is closed
//! by deleting its prefix.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use kyufu_domain::Status;
use kyufu_ports::{
    AdapterError, ApplicationRecord, Claim, CreateOutcome, IdempotencyClaim, StatusStore, Transition, TransitionOutcome,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use uuid::Uuid;

mod queue_state;
pub use queue_state::{QueueStateConfig, RedisQueueState};

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS when the server offers it).
    pub url: String,
    /// Prefix of every key; one per program/deployment (tests use a unique one each).
    pub prefix: String,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Bound on each command's round trip; past it the call answers `Unavailable`.
    pub response_timeout: Duration,
    /// Bound on (re)connecting.
    pub connect_timeout: Duration,
    /// Where the round-trip counts go (`kyufu_redis_requests_total{operation}`); none when `None`.
    pub metrics: Option<prometheus::Registry>,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "kyufu:".to_owned(),
            idempotency_ttl: Duration::from_secs(7 * 24 * 3600),
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            metrics: None,
        }
    }
}

/// The Redis [`StatusStore`]. Cheap to clone: one multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct RedisStatusStore {
    conn: ConnectionManager,
    prefix: String,
    idempotency_ttl_ms: u64,
    scripts: std::sync::Arc<Scripts>,
    recent: std::sync::Arc<std::sync::Mutex<RecentReads>>,
    requests: Option<prometheus::IntCounterVec>,
}

/// The round trips counted in `kyufu_redis_requests_total`, by what they do.
const OPERATIONS: [&str; 12] =
    ["ping", "read", "create", "transition", "claim", "claim_expiring", "claimed_by", "release", "reassign", "replace", "list", "counts"];

/// Records `get` read lately, with their revisions, for the move that usually follows.
struct RecentReads {
    by_id: std::collections::HashMap<Uuid, (ApplicationRecord, String)>,
    order: std::collections::VecDeque<Uuid>,
}

/// How many recent reads are kept: a stage holds at most its window of messages at once.
const RECENT_READS: usize = 4096;

impl RecentReads {
    fn keep(&mut self, record: &ApplicationRecord, rev: &str) {
        if self.by_id.insert(record.application_id, (record.clone(), rev.to_owned())).is_none() {
            self.order.push_back(record.application_id);
        }
        while self.order.len() > RECENT_READS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    fn take(&mut self, id: Uuid) -> Option<(ApplicationRecord, String)> {
        // The id stays in `order` until it comes round; removing it there would cost a scan.
        self.by_id.remove(&id)
    }
}

struct Scripts {
    create: Script,
    cas: Script,
    claim_many: Script,
    release: Script,
    reassign: Script,
    replace: Script,
}

/// KEYS: app, idx(status), counts, [idem]. ARGV: json, status, score, [idem value, ttl ms].
/// Returns {"created"} | {"exists"} | {"idem", value}.
const CREATE: &str = r#"
if #KEYS == 4 then
  local prior = redis.call('GET', KEYS[4])
  if prior then return {'idem', prior} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
if #KEYS == 4 then redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5]) end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'rev', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[6])
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
return {'created'}
"#;

/// KEYS: app, idx(old), idx(new), counts. ARGV: expected rev, json, old status, new status, score, id.
/// Returns 1 when written, 0 when the revision moved on, -1 when the record is gone.
const CAS: &str = r#"
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'rev', tonumber(rev) + 1)
redis.call('ZREM', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
redis.call('HINCRBY', KEYS[4], ARGV[3], -1)
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
return 1
"#;

/// KEYS: claim keys. ARGV: owner. Returns, per key, the owner after the call.
const CLAIM_MANY: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if not cur then
    redis.call('SET', k, ARGV[1])
    cur = ARGV[1]
  end
  out[i] = cur
end
return out
"#;

/// KEYS: claim key. ARGV: owner. Deletes only the owner's claim.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// KEYS: claim key. ARGV: from, to. Hands the claim from `from` to `to`; takes a free key too.
/// Returns the owner after the call.
const REASSIGN: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return cur
"#;

/// KEYS: claim key. ARGV: expected owner ('' = free), new owner, expiry in unix ms ('' = none).
/// Compare-and-set; 1 when set.
const REPLACE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  if ARGV[3] == '' then
    redis.call('SET', KEYS[1], ARGV[2])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  end
  return 1
end
return 0
"#;

/// How often a transition re-reads after losing a race before giving up as `Unavailable`.
const CAS_ATTEMPTS: usize = 32;

/// One multiplexed, self-reconnecting connection, opened within `connect_timeout`. The error text
/// names the failure kind only, never a value.
pub(crate) async fn open_connection(config: &RedisConfig) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("redis url: {:?}", e.kind()))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(2);
    tokio::time::timeout(
        config.connect_timeout + Duration::from_millis(500),
        ConnectionManager::new_with_config(client, manager_config),
    )
    .await
    .map_err(|_| "redis: connect timed out".to_owned())?
    .map_err(|e| format!("redis: {:?}", e.kind()))
}

fn unavailable(e: redis::RedisError) -> AdapterError {
    // Never echo values: error texts from Redis may quote arguments.
    AdapterError::Unavailable(format!("redis: {:?}", e.kind()))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Corrupt(format!("{what}: {e}"))
}

fn score(r: &ApplicationRecord) -> i64 {
    r.updated_at.timestamp_millis()
}

impl RedisStatusStore {
    /// Connects (bounded by `connect_timeout`) and loads the scripts.
    pub async fn connect(config: RedisConfig) -> Result<RedisStatusStore, AdapterError> {
        let conn = open_connection(&config).await.map_err(AdapterError::Unavailable)?;
        let store = RedisStatusStore {
            conn,
            prefix: config.prefix,
            idempotency_ttl_ms: u64::try_from(config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            scripts: std::sync::Arc::new(Scripts {
                create: Script::new(CREATE),
                cas: Script::new(CAS),
                claim_many: Script::new(CLAIM_MANY),
                release: Script::new(RELEASE),
                reassign: Script::new(REASSIGN),
                replace: Script::new(REPLACE),
            }),
            recent: std::sync::Arc::new(std::sync::Mutex::new(RecentReads {
                by_id: std::collections::HashMap::new(),
                order: std::collections::VecDeque::new(),
            })),
            requests: config.metrics.as_ref().map(|registry| {
                let c = kyufu_telemetry::register(
                    registry,
                    prometheus::IntCounterVec::new(
                        prometheus::Opts::new(
                            "kyufu_redis_requests_total",
                            "Round trips to Redis for the status store, by operation (a script or a pipeline is one)",
                        ),
                        &["operation"],
                    )
                    .expect("static metric"),
                );
                for op in OPERATIONS {
                    c.with_label_values(&[op]);
                }
                c
            }),
        };
        store.ping().await?;
        Ok(store)
    }

    /// One round trip; `Unavailable` when Redis does not answer.
    pub async fn ping(&self) -> Result<(), AdapterError> {
        let mut conn = self.conn.clone();
        self.sent("ping");
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// Counts one round trip.
    fn sent(&self, operation: &'static str) {
        if let Some(c) = &self.requests {
            c.with_label_values(&[operation]).inc();
        }
    }

    fn app_key(&self, id: Uuid) -> String {
        format!("{}app:{}", self.prefix, id)
    }
    fn idx_key(&self, s: Status) -> String {
        format!("{}idx:{}", self.prefix, s.as_str())
    }
    fn counts_key(&self) -> String {
        format!("{}counts", self.prefix)
    }
    fn idem_key(&self, key: &str) -> String {
        format!("{}idem:{}", self.prefix, key)
    }
    fn claim_key(&self, namespace: &str, key: &str) -> String {
        format!("{}claim:{}:{}", self.prefix, namespace, key)
    }

    /// Compare-and-set of a claim, expiring at `expire_ms` (unix ms) when given.
    async fn replace(&self, namespace: &str, key: &str, expected: Option<&str>, owner: &str, expire_ms: Option<i64>) -> Result<bool, AdapterError> {
        if expected == Some("") {
            return Ok(false); // no stored owner is empty
        }
        self.sent("replace");
        let mut inv = self.scripts.replace.prepare_invoke();
        inv.key(self.claim_key(namespace, key)).arg(expected.unwrap_or("")).arg(owner).arg(expire_ms.map(|ms| ms.to_string()).unwrap_or_default());
        let mut conn = self.conn.clone();
        let set: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(set == 1)
    }

    async fn read(&self, id: Uuid) -> Result<Option<(ApplicationRecord, String)>, AdapterError> {
        let mut conn = self.conn.clone();
        self.sent("read");
        let (json, rev): (Option<String>, Option<String>) =
            redis::cmd("HMGET").arg(self.app_key(id)).arg("json").arg("rev").query_async(&mut conn).await.map_err(unavailable)?;
        match (json, rev) {
            (Some(json), Some(rev)) => Ok(Some((serde_json::from_str(&json).map_err(|e| corrupt("status record", e))?, rev))),
            (None, None) => Ok(None),
            _ => Err(AdapterError::Corrupt("status record without revision".into())),
        }
    }
}

#[async_trait]
impl StatusStore for RedisStatusStore {
    async fn create(&self, record: &ApplicationRecord, idem: Option<&IdempotencyClaim>) -> Result<CreateOutcome, AdapterError> {
        let json = serde_json::to_string(record).map_err(|e| corrupt("status record", e))?;
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(self.app_key(record.application_id)).key(self.idx_key(record.status)).key(self.counts_key());
        if let Some(c) = idem {
            inv.key(self.idem_key(&c.key));
        }
        inv.arg(json).arg(record.status.as_str()).arg(score(record));
        let idem_value = idem.map(|c| format!("{} {}", record.application_id, c.fingerprint));
        inv.arg(idem_value.as_deref().unwrap_or("")).arg(self.idempotency_ttl_ms).arg(record.application_id.to_string());
        let mut conn = self.conn.clone();
        self.sent("create");
        let reply: Vec<String> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("created") => Ok(CreateOutcome::Created),
            Some("exists") => Err(AdapterError::AlreadyExists),
            Some("idem") => {
                let value = reply.get(1).ok_or_else(|| AdapterError::Corrupt("idempotency entry missing".into()))?;
                let (id, fingerprint) = value.split_once(' ').ok_or_else(|| AdapterError::Corrupt("idempotency entry".into()))?;
                let application_id = Uuid::parse_str(id).map_err(|e| corrupt("idempotency entry", e))?;
                let same_request = idem.is_some_and(|c| c.fingerprint == fingerprint);
                Ok(CreateOutcome::Existing { application_id, same_request })
            }
            _ => Err(AdapterError::Corrupt("unexpected reply from create script".into())),
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<ApplicationRecord>, AdapterError> {
        let Some((record, rev)) = self.read(id).await? else { return Ok(None) };
        if let Ok(mut recent) = self.recent.lock() {
            recent.keep(&record, &rev);
        }
        Ok(Some(record))
    }

    async fn transition(&self, id: Uuid, t: &Transition) -> Result<TransitionOutcome, AdapterError> {
        // First attempt on the copy a `get` just read, if the move applies to it (see the module).
        let mut held = self.recent.lock().ok().and_then(|mut recent| recent.take(id));
        for _ in 0..CAS_ATTEMPTS {
            let from_copy = held.take().and_then(|(current, rev)| match current.apply(t, Utc::now()) {
                applied @ TransitionOutcome::Applied(_) => Some((current, rev, applied)),
                _ => None,
            });
            let (current, rev, outcome) = match from_copy {
                Some(attempt) => attempt,
                None => {
                    let Some((current, rev)) = self.read(id).await? else {
                        return Ok(TransitionOutcome::NotFound);
                    };
                    let outcome = current.apply(t, Utc::now());
                    (current, rev, outcome)
                }
            };
            let TransitionOutcome::Applied(next) = &outcome else {
                return Ok(outcome);
            };
            let json = serde_json::to_string(next).map_err(|e| corrupt("status record", e))?;
            let mut inv = self.scripts.cas.prepare_invoke();
            inv.key(self.app_key(id)).key(self.idx_key(current.status)).key(self.idx_key(next.status)).key(self.counts_key());
            inv.arg(&rev).arg(json).arg(current.status.as_str()).arg(next.status.as_str()).arg(score(next)).arg(id.to_string());
            let mut conn = self.conn.clone();
            self.sent("transition");
            let written: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            match written {
                1 => return Ok(outcome),
                -1 => return Ok(TransitionOutcome::NotFound),
                _ => tokio::task::yield_now().await,
            }
        }
        Err(AdapterError::Unavailable("status record too contended; retry".into()))
    }

    async fn reassign(&self, namespace: &str, key: &str, from: &str, to: &str) -> Result<Claim, AdapterError> {
        let mut inv = self.scripts.reassign.prepare_invoke();
        inv.key(self.claim_key(namespace, key)).arg(from).arg(to);
        let mut conn = self.conn.clone();
        self.sent("reassign");
        let owner: String = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(if owner == to { Claim::Won } else { Claim::Held { owner } })
    }

    async fn claim(&self, namespace: &str, key: &str, owner: &str) -> Result<Claim, AdapterError> {
        let mut claims = self.claim_many(namespace, &[key.to_owned()], owner).await?;
        claims.pop().ok_or_else(|| AdapterError::Corrupt("empty reply from claim script".into()))
    }

    async fn claim_many(&self, namespace: &str, keys: &[String], owner: &str) -> Result<Vec<Claim>, AdapterError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.scripts.claim_many.prepare_invoke();
        for k in keys {
            inv.key(self.claim_key(namespace, k));
        }
        inv.arg(owner);
        let mut conn = self.conn.clone();
        self.sent("claim");
        let owners: Vec<String> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        if owners.len() != keys.len() {
            return Err(AdapterError::Corrupt("claim script answered for a different number of keys".into()));
        }
        Ok(owners.into_iter().map(|o| if o == owner { Claim::Won } else { Claim::Held { owner: o } }).collect())
    }

    async fn claim_expiring(&self, namespace: &str, key: &str, owner: &str, ttl: Duration) -> Result<Claim, AdapterError> {
        let k = self.claim_key(namespace, key);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        // SET NX PX with GET: one round trip, the current owner back when the key was taken.
        self.sent("claim_expiring");
        let previous: Option<String> = redis::cmd("SET")
            .arg(&k)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match previous {
            None => Claim::Won,
            Some(o) if o == owner => Claim::Won,
            Some(o) => Claim::Held { owner: o },
        })
    }

    async fn claimed_by(&self, namespace: &str, key: &str) -> Result<Option<String>, AdapterError> {
        let mut conn = self.conn.clone();
        self.sent("claimed_by");
        conn.get(self.claim_key(namespace, key)).await.map_err(unavailable)
    }

    async fn release(&self, namespace: &str, key: &str, owner: &str) -> Result<bool, AdapterError> {
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(self.claim_key(namespace, key)).arg(owner);
        let mut conn = self.conn.clone();
        self.sent("release");
        let released: i64 = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(released == 1)
    }

    async fn replace_claim(&self, namespace: &str, key: &str, expected: Option<&str>, owner: &str) -> Result<bool, AdapterError> {
        self.replace(namespace, key, expected, owner, None).await
    }

    async fn replace_claim_until(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&str>,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, AdapterError> {
        // A moment past `until`, so a lease read just before it runs out still reads as it was.
        self.replace(namespace, key, expected, owner, Some(until.timestamp_millis().max(1) + 1_000)).await
    }

    async fn list_by_status(&self, status: Status, limit: usize) -> Result<Vec<ApplicationRecord>, AdapterError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        self.sent("list");
        let ids: Vec<String> = conn.zrange(self.idx_key(status), 0, stop).await.map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(format!("{}app:{}", self.prefix, id), "json");
        }
        self.sent("list");
        let jsons: Vec<Option<String>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(jsons.len());
        // A record moved between the two reads is skipped (it is listed under its new status).
        for json in jsons.into_iter().flatten() {
            let record: ApplicationRecord = serde_json::from_str(&json).map_err(|e| corrupt("status record", e))?;
            if record.status == status {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, AdapterError> {
        let mut conn = self.conn.clone();
        self.sent("counts");
        let counts: std::collections::HashMap<String, i64> = conn.hgetall(self.counts_key()).await.map_err(unavailable)?;
        Ok(Status::ALL
            .iter()
            .map(|s| (*s, counts.get(s.as_str()).copied().unwrap_or(0).max(0).unsigned_abs()))
            .collect())
    }
}
