//! The production event bus on Kafka, through rdkafka (librdkafka).
//!
//! **Producer.** One idempotent producer per process (`enable.idempotence=true`, `acks=all`, at
//! most 5 requests in flight per connection, which librdkafka keeps ordered and free of
//! duplicates across retries). `publish` resolves only when the broker has acknowledged the
//! message (the delivery report), so intake answers 202 only for a durable message; a delivery
//! that does not succeed within `delivery_timeout` answers `Unavailable` and intake answers 503.
//! `flush` drains the queue before shutdown. Publishes are batched: every lane of every stage and
//! every intake request publishes and waits, so many messages are waiting at once; `linger` (a
//! few milliseconds) lets them share one produce request per partition leader, which is one
//! replication round trip instead of one per message (with `acks=all` each round trip waits for
//! the followers). Compression (`compression`, `lz4` by default) is per batch, so it pays once
//! batches hold several messages.
//!
//! **Topics.** The names of `kyufu_ports::events::topics` behind an optional prefix, created at
//! connect with `partitions` and `replication_factor` when missing ("already exists" is fine).
//! Messages are keyed by the child's identity key, so one child always lands on one partition and
//! is processed in order.
//!
//! **Consumers and offsets (at least once).** Each stage is its own consumer group. Offsets are
//! never stored automatically (`enable.auto.offset.store=false`): `Consumer::commit(msg)` stores
//! the message's offset (Kafka then records `offset + 1`, the next to read) only after the stage's effect is durable, and librdkafka commits stored offsets
//! every `auto.commit.interval.ms`, on a rebalance's revocation and on close. So a message whose
//! effect was not written is delivered again (to this member or, after a rebalance, to the next
//! owner of its partition); every stage's effect is idempotent, so a redelivery changes nothing.
//! A message whose partition was revoked while it was being handled cannot have its offset stored
//! any more: `commit` then succeeds without storing, and the partition's new owner handles the
//! message again.
//!
//! **Dead letters** are the stage runner's job (`kyufu_pipeline::runner`): after bounded retries it
//! publishes the message with the reason to the dead-letter topic, durably, and only then commits.
//!
//! **Fetch waits.** A fetch that finds nothing new waits at the broker up to `fetch_wait`
//! (`fetch.wait.max.ms`, 500 ms) and is answered as soon as a message is replicated, so the wait
//! adds no latency to a hop (measured: publish to consumer in ~5 ms with the 500 ms wait); a
//! shorter wait only makes idle consumers ask more often (at 100 ms, five times the fetch requests
//! on an idle pipeline, CPU on every broker). What the long poll does delay is anything else sent
//! on the same connection, since the broker answers a connection's requests in order: hence the
//! separate client for lag lookups below.
//!
//! **Lag** of a member: the high watermark minus the committed offset, summed over its assigned
//! partitions (exported by the runner as `kyufu_pipeline_consumer_lag_messages{stage}`). It is
//! looked up off the hot path: a thread per consumer refreshes it every `lag_interval` through a
//! client of its own, and `Consumer::lag` answers the last value at once. It used to be looked up
//! inline, through the consumer's own connections, where each watermark query waited behind the
//! pending long-poll fetch (up to 500 ms each, one per partition): the stage's loop stood still
//! for seconds at every refresh, and when a refresh took longer than its interval the loop did
//! nothing else (the bursts-then-silence pattern of the first topology benchmark).
//!
//! **Metrics** (`KafkaMetrics`, when given a registry): requests by kind from librdkafka's
//! statistics, publish latency, and the delay from a message's creation to its consumer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kyufu_ports::{AdapterError, Consumer, EventBus, Message};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message as _, TopicPartitionList};

mod lag;
mod metrics;
pub use metrics::KafkaMetrics;
use metrics::RequestCounter;

/// How to reach Kafka and what the topics look like.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub brokers: String,
    /// Prepended to every topic and consumer-group name (one deployment per prefix).
    pub topic_prefix: String,
    /// Partitions of each topic created at connect (the most consumers a stage can use at once).
    pub partitions: i32,
    /// Replication factor of topics created at connect (3 in production, with `min.insync.replicas=2`).
    pub replication_factor: i32,
    /// Topics created at connect (unprefixed names).
    pub topics: Vec<String>,
    /// Whether `connect` creates missing topics with the admin API. Off where the topics are made
    /// by the deployment (compose's init job, a Kubernetes Job, an operator) or the cluster does
    /// not offer the admin API (librdkafka's mock cluster: its topics are made by the test).
    pub create_topics: bool,
    /// How long `publish` waits for the broker's acknowledgement before answering `Unavailable`.
    pub delivery_timeout: Duration,
    /// Extra librdkafka settings for every client, `key=value` (security, tuning).
    pub overrides: Vec<(String, String)>,
    /// Extra librdkafka settings for consumers only (e.g. `session.timeout.ms`).
    pub consumer_overrides: Vec<(String, String)>,
    /// How long the producer waits for more messages to batch with (`linger.ms`).
    pub linger: Duration,
    /// Batch compression (`compression.type`): `none`, `lz4`, `zstd`, `gzip`, `snappy`.
    pub compression: String,
    /// Longest wait of a fetch that finds nothing new (`fetch.wait.max.ms`).
    pub fetch_wait: Duration,
    /// How often each consumer's lag is looked up (in the background).
    pub lag_interval: Duration,
    /// Where the clients' metrics go; none when `None`.
    pub metrics: Option<KafkaMetrics>,
}

impl std::fmt::Debug for KafkaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaMetrics")
    }
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            partitions: 12,
            replication_factor: 1,
            topics: kyufu_ports::events::topics::ALL.iter().map(|t| (*t).to_owned()).collect(),
            create_topics: true,
            delivery_timeout: Duration::from_secs(15),
            overrides: Vec::new(),
            consumer_overrides: Vec::new(),
            linger: Duration::from_millis(5),
            compression: "lz4".to_owned(),
            fetch_wait: Duration::from_millis(500),
            lag_interval: Duration::from_secs(5),
            metrics: None,
        }
    }

    /// Parses `key=value` pairs (from the command line); names the bad one.
    pub fn parse_overrides(pairs: &[String]) -> Result<Vec<(String, String)>, String> {
        pairs
            .iter()
            .map(|p| {
                p.split_once('=')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("expected key=value, got {p:?}"))
            })
            .collect()
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // librdkafka's own log lines go through `tracing` at the matching level; they carry
        // broker addresses and error codes, never message contents.
        c.set("log_level", "4");
        if self.metrics.is_some() {
            // Request counts for `kyufu_kafka_requests_total`; librdkafka keeps them anyway.
            c.set("statistics.interval.ms", "2000");
        }
        for (k, v) in &self.overrides {
            c.set(k, v);
        }
        c
    }
}

fn unavailable(what: &str, e: &KafkaError) -> AdapterError {
    AdapterError::Unavailable(format!("kafka {what}: {e}"))
}

/// The Kafka [`EventBus`].
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer<StatsContext>,
}

/// Counts a client's requests from its statistics (when metrics are on).
pub(crate) struct StatsContext {
    requests: Option<RequestCounter>,
}

impl StatsContext {
    pub(crate) fn new(client: &'static str, metrics: Option<&KafkaMetrics>) -> Self {
        StatsContext { requests: metrics.map(|m| RequestCounter::new(client, m.clone())) }
    }
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(r) = &self.requests {
            r.record(&statistics);
        }
    }
}

/// The lag client never joins a group: nothing to react to.
impl ConsumerContext for StatsContext {}

impl KafkaBus {
    /// Creates the producer and the topics that are missing. Fails with `Unavailable` when no
    /// broker answers within a few seconds.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBus, AdapterError> {
        let mut pc = config.client();
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // Each message waits this long at most for others to share its produce request (and
            // its replication round trip). Every hop pays it once, so it stays a few ms.
            .set("linger.ms", config.linger.as_millis().to_string())
            .set("compression.type", &config.compression)
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string());
        for (k, v) in &config.overrides {
            pc.set(k, v);
        }
        let producer: FutureProducer<StatsContext> = pc
            .create_with_context(StatsContext::new(metrics::PRODUCER, config.metrics.as_ref()))
            .map_err(|e| unavailable("producer", &e))?;
        let bus = KafkaBus { config, producer };
        if bus.config.create_topics {
            bus.create_topics().await?;
        } else {
            bus.check_reachable().await?;
        }
        Ok(bus)
    }

    fn full(&self, topic: &str) -> String {
        format!("{}{}", self.config.topic_prefix, topic)
    }

    /// A metadata round trip: some broker answers (readiness).
    pub async fn ping(&self) -> Result<(), AdapterError> {
        self.check_reachable().await
    }

    /// A metadata round trip: some broker answers.
    async fn check_reachable(&self) -> Result<(), AdapterError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(5)).map(|_| ()))
            .await
            .map_err(|e| AdapterError::Unavailable(format!("kafka metadata: {e}")))?
            .map_err(|e| unavailable("metadata", &e))
    }

    /// The full names of the topics this bus uses (with the prefix).
    pub fn topic_names(&self) -> Vec<String> {
        self.config.topics.iter().map(|t| self.full(t)).collect()
    }

    async fn create_topics(&self) -> Result<(), AdapterError> {
        let admin: AdminClient<DefaultClientContext> = self.config.client().create().map_err(|e| unavailable("admin", &e))?;
        let names: Vec<String> = self.config.topics.iter().map(|t| self.full(t)).collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, self.config.partitions, TopicReplication::Fixed(self.config.replication_factor)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics(&new, &options).await.map_err(|e| unavailable("create topics", &e))?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, partitions = self.config.partitions, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(AdapterError::Unavailable(format!("kafka create topic {name}: {code}"))),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), AdapterError> {
        let topic = self.full(topic);
        let record = FutureRecord::to(&topic).key(key).payload(payload);
        let started = Instant::now();
        self.producer.send(record, Timeout::After(self.config.delivery_timeout)).await.map_err(|(e, _)| unavailable("publish", &e))?;
        if let Some(m) = &self.config.metrics {
            m.published(started.elapsed());
        }
        Ok(())
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError> {
        let mut cc = self.config.client();
        cc.set("group.id", format!("{}{}", self.config.topic_prefix, group))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", self.config.fetch_wait.as_millis().to_string());
        for (k, v) in &self.config.consumer_overrides {
            cc.set(k, v);
        }
        let context = GroupContext { group: group.to_owned(), stats: StatsContext::new(metrics::CONSUMER, self.config.metrics.as_ref()) };
        let consumer: StreamConsumer<GroupContext> = cc.create_with_context(context).map_err(|e| unavailable("consumer", &e))?;
        let full: Vec<String> = topics.iter().map(|t| self.full(t)).collect();
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        consumer.subscribe(&refs).map_err(|e| unavailable("subscribe", &e))?;
        let consumer = Arc::new(consumer);
        // The lag client has no group membership and no fetches: its queries never wait behind
        // the consumer's long poll.
        let lag_client: BaseConsumer<StatsContext> = self
            .config
            .client()
            .create_with_context(StatsContext::new(metrics::LAG, self.config.metrics.as_ref()))
            .map_err(|e| unavailable("lag client", &e))?;
        let lag = lag::LagWatch::start(consumer.clone(), lag_client, self.config.lag_interval);
        Ok(Box::new(KafkaConsumer {
            consumer,
            lag: Some(lag),
            prefix: self.config.topic_prefix.clone(),
            metrics: self.config.metrics.clone(),
        }))
    }

    async fn flush(&self, timeout: Duration) -> Result<(), AdapterError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| AdapterError::Unavailable(format!("kafka flush: {e}")))?
            .map_err(|e| unavailable("flush", &e))
    }
}

/// Logs the group's assignments and revocations (partition numbers only); counts requests.
pub(crate) struct GroupContext {
    group: String,
    stats: StatsContext,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        self.stats.stats(statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Stored offsets are committed by librdkafka right after this callback.
            tracing::info!(group = %self.group, partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => tracing::info!(group = %self.group, partitions = tpl.count(), "partitions assigned"),
            Rebalance::Error(e) => tracing::warn!(group = %self.group, error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // `NoOffset` only means nothing new was stored since the last commit.
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; retried at the next interval");
            }
        }
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// Stopped (and its hold on the consumer released) before the consumer closes.
    lag: Option<lag::LagWatch>,
    prefix: String,
    metrics: Option<KafkaMetrics>,
}

impl Drop for KafkaConsumer {
    /// Closing a consumer leaves its group and commits the stored offsets; librdkafka waits for the
    /// cluster to answer, which at shutdown may never come (the cluster is gone too). The close
    /// runs on a thread of its own and the owner waits at most ten seconds for it, so a process
    /// always stops; when the cluster is there, the close is complete before the owner goes on.
    fn drop(&mut self) {
        drop(self.lag.take());
        let consumer = self.consumer.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("kafka-consumer-close".into()).spawn(move || {
            drop(consumer);
            let _ = done_tx.send(());
        });
        if spawned.is_ok() && done_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            tracing::warn!("Kafka consumer close did not finish within 10 s; leaving it behind");
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<Option<Message>, AdapterError> {
        match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(unavailable("poll", &e)),
            Ok(Ok(m)) => {
                let topic = m.topic().strip_prefix(self.prefix.as_str()).unwrap_or(m.topic()).to_owned();
                if let (Some(metrics), Some(created)) = (&self.metrics, m.timestamp().to_millis()) {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    if let Some(delay) = now.checked_sub(Duration::from_millis(u64::try_from(created).unwrap_or(0))) {
                        metrics.consumed(&topic, delay);
                    }
                }
                Ok(Some(Message {
                    topic,
                    partition: u32::try_from(m.partition()).unwrap_or(0),
                    offset: u64::try_from(m.offset()).unwrap_or(0),
                    key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                }))
            }
        }
    }

    async fn commit(&mut self, msg: &Message) -> Result<(), AdapterError> {
        let topic = format!("{}{}", self.prefix, msg.topic);
        let partition = i32::try_from(msg.partition).map_err(|_| AdapterError::Corrupt("partition out of range".into()))?;
        let offset = i64::try_from(msg.offset).map_err(|_| AdapterError::Corrupt("offset out of range".into()))?;
        // `rd_kafka_offset_store` takes the processed message's offset and commits offset + 1.
        match self.consumer.store_offset(&topic, partition, offset) {
            Ok(()) => Ok(()),
            // The partition went to another member during the rebalance; it handles the message again.
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition)) => {
                tracing::debug!(partition, "offset not stored: partition no longer assigned");
                Ok(())
            }
            Err(e) => Err(unavailable("store offset", &e)),
        }
    }

    /// The last value the background lookup found (`None` before the first one).
    async fn lag(&mut self) -> Result<Option<u64>, AdapterError> {
        Ok(self.lag.as_ref().and_then(lag::LagWatch::last))
    }
}
