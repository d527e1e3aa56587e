//! Which backing services a role runs on. Every role that touches applications (`intake`,
//! `worker <stage>`, `review`) takes the same three choices — event bus, status store, document
//! store — each `embedded` by default (the data directory's single-file store, one process at a
//! time) or the production service: Kafka, Redis, S3. Only the all-production combination lets
//! several processes run side by side; mixed choices are for trying one service at a time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kyufu_http::Readiness;
use kyufu_ports::{DocumentStore, EventBus, StatusStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BusKind {
    /// The embedded log in the data directory.
    Embedded,
    /// Kafka (`--kafka-brokers`).
    Kafka,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusKind {
    /// The embedded store in the data directory.
    Embedded,
    /// Redis (`--redis-url`).
    Redis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DocumentsKind {
    /// The embedded store in the data directory.
    Embedded,
    /// S3 or an S3-compatible store (`--s3-bucket`, `--s3-endpoint`).
    S3,
}

/// The backing services of one process.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Event bus.
    #[arg(long, env = "KYUFU_BUS", value_enum, default_value_t = BusKind::Embedded)]
    pub bus: BusKind,
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(long, env = "KYUFU_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of every topic and consumer group (one deployment per prefix).
    #[arg(long, env = "KYUFU_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub kafka_topic_prefix: String,
    /// Partitions of topics this process creates when they are missing.
    #[arg(long, env = "KYUFU_KAFKA_PARTITIONS", default_value_t = 12)]
    pub kafka_partitions: i32,
    /// Replication factor of topics this process creates.
    #[arg(long, env = "KYUFU_KAFKA_REPLICATION", default_value_t = 1)]
    pub kafka_replication: i32,
    /// Create missing topics at start (`false` where the deployment makes them).
    #[arg(long, env = "KYUFU_KAFKA_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub kafka_create_topics: bool,
    /// Extra librdkafka settings, `key=value`, repeatable (security, tuning).
    #[arg(long = "kafka-set", env = "KYUFU_KAFKA_SET", value_delimiter = ';')]
    pub kafka_set: Vec<String>,
    /// Milliseconds a publish waits for others to share its produce request (`linger.ms`): one
    /// replication round trip for the batch instead of one per message; every hop pays it once.
    #[arg(long, env = "KYUFU_KAFKA_LINGER_MS", default_value_t = 5)]
    pub kafka_linger_ms: u64,
    /// Compression of produce batches: none, lz4, zstd, snappy or gzip.
    #[arg(long, env = "KYUFU_KAFKA_COMPRESSION", default_value = "lz4")]
    pub kafka_compression: String,
    /// Longest wait of a fetch that finds nothing new, milliseconds (`fetch.wait.max.ms`). The
    /// broker answers as soon as a message is there, so this adds no latency; lower values only
    /// make idle consumers ask more often.
    #[arg(long, env = "KYUFU_KAFKA_FETCH_WAIT_MS", default_value_t = 500)]
    pub kafka_fetch_wait_ms: u64,
    /// Status store (statuses, idempotency keys, dedupe index, coupon registry).
    #[arg(long, env = "KYUFU_STATUS_STORE", value_enum, default_value_t = StatusKind::Embedded)]
    pub status_store: StatusKind,
    /// Redis URL.
    #[arg(long, env = "KYUFU_REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Prefix of every Redis key.
    #[arg(long, env = "KYUFU_REDIS_PREFIX", default_value = "kyufu:")]
    pub redis_prefix: String,
    /// Document store (identity documents).
    #[arg(long, env = "KYUFU_DOCUMENTS", value_enum, default_value_t = DocumentsKind::Embedded)]
    pub documents: DocumentsKind,
    /// S3 endpoint for S3-compatible stores; unset for AWS S3.
    #[arg(long, env = "KYUFU_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KYUFU_S3_BUCKET", default_value = "kyufu-documents")]
    pub s3_bucket: String,
    #[arg(long, env = "KYUFU_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Create the bucket at start if missing (compose, tests); production buckets are made by the deployment.
    #[arg(long, env = "KYUFU_S3_CREATE_BUCKET", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_create_bucket: bool,
}

/// What `BackendArgs::open` checks before it connects; names the bad setting.
fn check_kafka_tuning(args: &BackendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.kafka_linger_ms <= 1_000, "--kafka-linger-ms / KYUFU_KAFKA_LINGER_MS: at most 1000");
    anyhow::ensure!(
        (1..=10_000).contains(&args.kafka_fetch_wait_ms),
        "--kafka-fetch-wait-ms / KYUFU_KAFKA_FETCH_WAIT_MS: 1-10000"
    );
    anyhow::ensure!(
        ["none", "lz4", "zstd", "snappy", "gzip"].contains(&args.kafka_compression.as_str()),
        "--kafka-compression / KYUFU_KAFKA_COMPRESSION: one of none, lz4, zstd, snappy, gzip"
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QueueStateKind {
    /// In this process: one gateway node (a restart begins a new queue).
    Memory,
    /// In Redis (`--redis-url`): several gateway nodes serve one queue.
    Redis,
}

/// Where a gateway keeps its queue numbers.
#[derive(Args, Clone, Debug)]
pub struct QueueStateArgs {
    /// Queue numbers (sequence, cursor, epoch): `memory` for one node, `redis` to share one queue
    /// between several gateway nodes.
    #[arg(long, env = "KYUFU_QUEUE_STATE", value_enum, default_value_t = QueueStateKind::Memory)]
    pub queue_state: QueueStateKind,
    /// Redis URL (with `--queue-state redis`).
    #[arg(long, env = "KYUFU_REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Prefix of every Redis key; the queue is `<prefix>queue:<program id>`.
    #[arg(long, env = "KYUFU_REDIS_PREFIX", default_value = "kyufu:")]
    pub redis_prefix: String,
    /// Lease of the node that moves the shared cursor, milliseconds: admission stops at most this
    /// long when that node dies.
    #[arg(long, env = "KYUFU_QUEUE_LEASE_MS", default_value_t = 3_000)]
    pub queue_lease_ms: u64,
}

impl QueueStateArgs {
    /// The chosen queue state for the queue `queue` (the program id). Redis unreachable at start
    /// is a configuration problem: the process exits naming the setting.
    pub async fn open(&self, queue: &str) -> anyhow::Result<Arc<dyn kyufu_gateway::QueueState>> {
        match self.queue_state {
            QueueStateKind::Memory => Ok(Arc::new(kyufu_gateway::MemoryQueueState::new())),
            QueueStateKind::Redis => {
                anyhow::ensure!(
                    (300..=60_000).contains(&self.queue_lease_ms),
                    "--queue-lease-ms / KYUFU_QUEUE_LEASE_MS: must be 300-60000"
                );
                let mut redis = kyufu_redis::RedisConfig::new(&self.redis_url);
                redis.prefix.clone_from(&self.redis_prefix);
                // Polls are answered from cached numbers; a slow Redis only delays joins and ticks.
                redis.response_timeout = Duration::from_secs(1);
                let lease = Duration::from_millis(self.queue_lease_ms);
                let config =
                    kyufu_redis::QueueStateConfig { lease_ttl: lease, renew_every: lease / 3, ..Default::default() };
                let state = within("Redis", kyufu_redis::RedisQueueState::connect(&redis, queue, config))
                    .await?
                    .map_err(|e| anyhow::anyhow!("--queue-state redis, --redis-url: {e}"))?;
                tracing::info!(prefix = %self.redis_prefix, "queue state in Redis, shared with other gateway nodes");
                Ok(Arc::new(state))
            }
        }
    }
}

/// The opened ports, shared by everything in the process.
pub struct Backends {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
    /// One atomic commit when all three ports are embedded, else the sequence over the services.
    pub units: Arc<dyn kyufu_ports::UnitOfWork>,
    s3: Option<kyufu_s3::S3DocumentStore>,
    kafka: Option<Arc<kyufu_kafka::KafkaBus>>,
}

impl Backends {
    /// The ports on these backends.
    pub fn ports(&self) -> kyufu_ports::Ports {
        kyufu_ports::Ports {
            bus: self.bus.clone(),
            status: self.status.clone(),
            documents: self.documents.clone(),
            units: self.units.clone(),
        }
    }
}

impl BackendArgs {
    fn needs_embedded(&self) -> bool {
        self.bus == BusKind::Embedded || self.status_store == StatusKind::Embedded || self.documents == DocumentsKind::Embedded
    }

    /// Connects to every chosen service (and opens the embedded store only if something uses it).
    /// A service that cannot be reached at start is a configuration problem: the process exits
    /// naming it, before serving anything. The adapters' metrics and the ports' per-call latency
    /// (`timed`) go to `metrics`.
    pub async fn open(&self, data_dir: &Path, metrics: &prometheus::Registry) -> anyhow::Result<Backends> {
        check_kafka_tuning(self)?;
        let embedded = if self.needs_embedded() {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            Some(
                kyufu_embedded::EmbeddedStore::open(data_dir)
                    .map_err(|e| anyhow::anyhow!("opening embedded storage in {}: {e}", data_dir.display()))?,
            )
        } else {
            None
        };
        let embedded_store = embedded.clone();
        let embedded = |what: &str| embedded.clone().with_context(|| format!("embedded {what}: store not open"));
        let mut kafka = None;
        let bus: Arc<dyn EventBus> = match self.bus {
            BusKind::Embedded => embedded("bus")?.bus(),
            BusKind::Kafka => {
                let mut config = kyufu_kafka::KafkaConfig::new(&self.kafka_brokers);
                config.topic_prefix.clone_from(&self.kafka_topic_prefix);
                config.partitions = self.kafka_partitions;
                config.replication_factor = self.kafka_replication;
                config.create_topics = self.kafka_create_topics;
                config.overrides = kyufu_kafka::KafkaConfig::parse_overrides(&self.kafka_set)
                    .map_err(|e| anyhow::anyhow!("--kafka-set / KYUFU_KAFKA_SET: {e}"))?;
                config.linger = Duration::from_millis(self.kafka_linger_ms);
                config.compression.clone_from(&self.kafka_compression);
                config.fetch_wait = Duration::from_millis(self.kafka_fetch_wait_ms);
                config.metrics = Some(kyufu_kafka::KafkaMetrics::new(metrics));
                let connected = Arc::new(
                    within("Kafka", kyufu_kafka::KafkaBus::connect(config))
                        .await?
                        .map_err(|e| anyhow::anyhow!("--kafka-brokers {}: {e}", self.kafka_brokers))?,
                );
                kafka = Some(connected.clone());
                connected
            }
        };
        let status: Arc<dyn StatusStore> = match self.status_store {
            StatusKind::Embedded => embedded("status store")?.status_store(),
            StatusKind::Redis => {
                let mut config = kyufu_redis::RedisConfig::new(&self.redis_url);
                config.prefix.clone_from(&self.redis_prefix);
                config.metrics = Some(metrics.clone());
                Arc::new(
                    within("Redis", kyufu_redis::RedisStatusStore::connect(config))
                        .await?
                        .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?,
                )
            }
        };
        let mut s3 = None;
        let documents: Arc<dyn DocumentStore> = match self.documents {
            DocumentsKind::Embedded => embedded("document store")?.document_store(),
            DocumentsKind::S3 => {
                let mut config = kyufu_s3::S3Config::new(&self.s3_bucket);
                config.endpoint.clone_from(&self.s3_endpoint);
                config.region.clone_from(&self.s3_region);
                config.create_bucket = self.s3_create_bucket;
                config.metrics = Some(metrics.clone());
                // Credentials from the environment or from mounted files (`AWS_..._FILE`).
                config.access_key_id = crate::secrets::env_or_file("AWS_ACCESS_KEY_ID")?;
                config.secret_access_key = crate::secrets::env_or_file("AWS_SECRET_ACCESS_KEY")?;
                let store = within("S3", kyufu_s3::S3DocumentStore::connect(config))
                    .await?
                    .map_err(|e| anyhow::anyhow!("--s3-bucket {}: {e}", self.s3_bucket))?;
                s3 = Some(store.clone());
                Arc::new(store)
            }
        };
        let all_embedded =
            self.bus == BusKind::Embedded && self.status_store == StatusKind::Embedded && self.documents == DocumentsKind::Embedded;
        let (units, sequential) = match &embedded_store {
            Some(store) if all_embedded => (store.units(), false),
            _ => (kyufu_ports::Ports::sequential(bus.clone(), status.clone(), documents.clone()).units, true),
        };
        let timed = crate::timed::ports(
            kyufu_ports::Ports { bus, status, documents, units },
            sequential,
            &crate::timed::PortTimer::new(metrics),
        );
        tracing::info!(bus = ?self.bus, status_store = ?self.status_store, documents = ?self.documents, "backends open");
        Ok(Backends { bus: timed.bus, status: timed.status, documents: timed.documents, units: timed.units, s3, kafka })
    }
}

fn log_reachability(service: &str, ok: bool) {
    if ok {
        tracing::info!(service, "reachable");
    } else {
        tracing::warn!(service, "unreachable; /readyz answers 503 until it is back");
    }
}

/// Bounds a connect at start, naming the service that did not answer.
async fn within<T>(service: &str, connect: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .map_err(|_| anyhow::anyhow!("{service} did not answer within 30 s at start"))
}

impl Backends {
    /// Probes the services that are not the status store (which `kyufu_intake::monitor` probes)
    /// every few seconds: `event_bus` (Kafka) and `document_store` (S3) readiness checks, so
    /// `/readyz` answers 503 and `kyufu_dependency_up` drops while one is unreachable.
    pub fn watch(&self, readiness: &Readiness, mut stop: tokio::sync::watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
        if self.s3.is_none() && self.kafka.is_none() {
            return None;
        }
        let (s3, kafka, readiness) = (self.s3.clone(), self.kafka.clone(), readiness.clone());
        Some(tokio::spawn(async move {
            loop {
                if let Some(s3) = &s3 {
                    let ok = s3.ping().await.is_ok();
                    if readiness.set_check("document_store", ok) {
                        log_reachability("document store", ok);
                    }
                }
                if let Some(kafka) = &kafka {
                    let ok = kafka.ping().await.is_ok();
                    if readiness.set_check("event_bus", ok) {
                        log_reachability("event bus", ok);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => return,
                }
            }
        }))
    }
}

/// Virus scanning of uploaded documents (roles that run intake: `intake`, `all-in-one`).
#[derive(Args, Clone, Debug)]
pub struct ScanArgs {
    /// clamd that scans every uploaded document before it is stored, `tcp:HOST:PORT` or
    /// `unix:/path`. While it cannot be reached, uploads are refused with 503 (fail closed) and
    /// `/readyz` names `virus_scanner`. Without it, documents are not virus-scanned.
    #[arg(long, env = "KYUFU_CLAMD")]
    pub clamd: Option<kyufu_intake::scan::ClamdAddr>,
}

impl ScanArgs {
    /// The scanner, if one is configured.
    pub fn scanner(&self) -> Option<Arc<dyn kyufu_intake::scan::DocumentScanner>> {
        let addr = self.clamd.clone()?;
        tracing::info!(clamd = %addr, "uploads are virus-scanned; refused while the scanner is unreachable");
        Some(Arc::new(kyufu_intake::scan::Clamd::new(addr)))
    }

    /// Pings the scanner every few seconds into `readiness` (check `virus_scanner`) until `stop`.
    pub fn watch(
        scanner: Option<&Arc<dyn kyufu_intake::scan::DocumentScanner>>,
        readiness: &Readiness,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let scanner = scanner?.clone();
        Some(tokio::spawn(kyufu_intake::scan::watch(scanner, readiness.clone(), Duration::from_secs(5), stop)))
    }
}
