//! The production event bus on Kafka, through rdkafka (librdkafka).
//!
//! **Producer.** One idempotent producer per process (`enable.idempotence=true`, `acks=all`, at
//! most 5 requests in flight per connection, which librdkafka keeps ordered and free of
//! duplicates across retries). `publish` resolves only when the broker has acknowledged the
//! message (the delivery report), so intake answers 202 only for a durable message; a delivery
//! that does not succeed within `delivery_timeout` answers `Unavailable` and intake answers 503.
//! `flush` drains the queue before shutdown.
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
//! **Lag** of a member: the high watermark minus the committed offset, summed over its assigned
//! partitions (exported by the runner as `kyufu_pipeline_consumer_lag_messages{stage}`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kyufu_ports::{AdapterError, Consumer, EventBus, Message};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};

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
    producer: FutureProducer,
}

impl KafkaBus {
    /// Creates the producer and the topics that are missing. Fails with `Unavailable` when no
    /// broker answers within a few seconds.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBus, AdapterError> {
        let mut pc = config.client();
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // Stages publish one message and wait for it: a linger would add its length to every
            // message's trip through the pipeline. Concurrent publishes (intake) still batch.
            .set("linger.ms", "0")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string());
        for (k, v) in &config.overrides {
            pc.set(k, v);
        }
        let producer: FutureProducer = pc.create().map_err(|e| unavailable("producer", &e))?;
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
        self.producer
            .send(record, Timeout::After(self.config.delivery_timeout))
            .await
            .map(|_| ())
            .map_err(|(e, _)| unavailable("publish", &e))
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError> {
        let mut cc = self.config.client();
        cc.set("group.id", format!("{}{}", self.config.topic_prefix, group))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        for (k, v) in &self.config.consumer_overrides {
            cc.set(k, v);
        }
        let consumer: StreamConsumer<GroupContext> =
            cc.create_with_context(GroupContext { group: group.to_owned() }).map_err(|e| unavailable("consumer", &e))?;
        let full: Vec<String> = topics.iter().map(|t| self.full(t)).collect();
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        consumer.subscribe(&refs).map_err(|e| unavailable("subscribe", &e))?;
        Ok(Box::new(KafkaConsumer { consumer: Arc::new(consumer), prefix: self.config.topic_prefix.clone() }))
    }

    async fn flush(&self, timeout: Duration) -> Result<(), AdapterError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| AdapterError::Unavailable(format!("kafka flush: {e}")))?
            .map_err(|e| unavailable("flush", &e))
    }
}

/// Logs the group's assignments and revocations (partition numbers only).
struct GroupContext {
    group: String,
}

impl ClientContext for GroupContext {}

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
    prefix: String,
}

impl Drop for KafkaConsumer {
    /// Closing a consumer leaves its group and commits the stored offsets; librdkafka waits for the
    /// cluster to answer, which at shutdown may never come (the cluster is gone too). The close
    /// runs on a thread of its own and the owner waits at most ten seconds for it, so a process
    /// always stops; when the cluster is there, the close is complete before the owner goes on.
    fn drop(&mut self) {
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

    async fn lag(&mut self) -> Result<Option<u64>, AdapterError> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<u64>, AdapterError> {
            let assignment = consumer.assignment().map_err(|e| unavailable("assignment", &e))?;
            if assignment.count() == 0 {
                return Ok(Some(0));
            }
            let timeout = Duration::from_secs(2);
            let committed = consumer.committed_offsets(assignment, timeout).map_err(|e| unavailable("committed", &e))?;
            let mut lag = 0u64;
            for e in committed.elements() {
                let (low, high) =
                    consumer.fetch_watermarks(e.topic(), e.partition(), timeout).map_err(|err| unavailable("watermarks", &err))?;
                let from = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => low,
                };
                lag += u64::try_from(high.saturating_sub(from)).unwrap_or(0);
            }
            Ok(Some(lag))
        })
        .await
        .map_err(|e| AdapterError::Unavailable(format!("kafka lag: {e}")))?
    }
}
