//! Real Apache Kafka brokers for tests: KRaft nodes (each broker and controller at once) as `java`
//! processes on free loopback ports, started from the jars `scripts/install-kafka.sh` fetched from
//! Maven Central (`make deps`). Each node has its own temporary directory holding its
//! `server.properties`, its data, its log (`server.log`, through log4j; nothing reaches the test's
//! output) and what the JVM printed (`java.out`).
//!
//! `KafkaCluster::start(1)` is one broker; `start(3)` is a cluster with replication factor 3 and
//! `min.insync.replicas=2`, so one broker can be killed (`kill`, SIGKILL) while producers with
//! `acks=all` go on, and started again with its data (`restart`). `shared(n)` starts one cluster
//! for a whole test binary; its tests keep apart by topic prefix.
//!
//! No stray JVMs: the nodes are killed when the cluster is dropped (a panicking test unwinds
//! through that too), and a watchdog process per cluster kills them and removes their directories
//! when the test process ends without dropping it (a shared cluster lives in a `static`, which is
//! never dropped; a test binary may also be killed).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;

use crate::ServerProcess;

/// The broker version; `scripts/install-kafka.sh` fetches the same (checked by a test below).
pub const KAFKA_VERSION: &str = "4.4.0";

/// How long a cluster (or a restarted node) may take to serve metadata with every running broker.
/// A JVM starts in seconds, but this machine is shared and small.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// Small and quick to start rather than fast: three of these run beside the whole topology on two
/// cores. Serial GC and a capped heap keep memory and GC threads down; the client compiler alone
/// (`TieredStopAtLevel=1`) takes about a third less CPU to start a broker than with the optimising
/// compiler warming up behind it, and test traffic never needs peak speed.
const JVM_OPTIONS: &[&str] = &[
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

/// Instead of the client compiler alone, the full JIT (as production brokers run) and a fixed
/// heap, when the environment says `KYUFU_KAFKA_JVM=server`: for runs that measure throughput
/// (`make bench-topology`, which warms the brokers up first with `warm_up`). Tests keep the quick
/// start.
const SERVER_JVM_OPTIONS: &[&str] = &[
    "-Xms512m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

fn jvm_options() -> &'static [&'static str] {
    if std::env::var("KYUFU_KAFKA_JVM").is_ok_and(|v| v == "server") {
        SERVER_JVM_OPTIONS
    } else {
        JVM_OPTIONS
    }
}

/// Where the jars are: `$KAFKA_LIBS`, else the cache `scripts/install-kafka.sh` fills. Panics, with
/// how to fill it, when the fetch has not completed.
pub fn libs() -> PathBuf {
    let dir = std::env::var_os("KAFKA_LIBS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("kyufu").join(format!("kafka-{KAFKA_VERSION}")).join("libs")
    });
    assert!(
        dir.join(".complete").is_file(),
        "the Apache Kafka {KAFKA_VERSION} broker jars are not in {}: run `make deps` (scripts/install-deps.sh fetches them from Maven Central)",
        dir.display()
    );
    dir
}

/// The state of one partition as the cluster's metadata shows it; brokers by their index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: Option<usize>,
    pub replicas: Vec<usize>,
    pub in_sync: Vec<usize>,
}

/// Running KRaft nodes; node `i` has `node.id` `i`. Killed when dropped.
pub struct KafkaCluster {
    nodes: Vec<ServerProcess>,
    watchdog: Child,
}

impl KafkaCluster {
    /// Starts `brokers` combined broker+controller nodes and waits until the metadata lists every
    /// one of them. Panics, saying why, when the jars or `java` are missing or a node does not
    /// come up (with the end of its log).
    pub fn start(brokers: usize) -> KafkaCluster {
        assert!((1..=9).contains(&brokers), "a test cluster has 1 to 9 brokers, not {brokers}");
        let started = Instant::now();
        let libs = libs();
        let ports = distinct_free_ports(2 * brokers);
        let (client_ports, controller_ports) = ports.split_at(brokers);
        let voters: Vec<String> = controller_ports.iter().enumerate().map(|(id, p)| format!("{id}@127.0.0.1:{p}")).collect();
        let dirs: Vec<tempfile::TempDir> = (0..brokers)
            .map(|_| tempfile::Builder::new().prefix("kyufu-kafka-").tempdir().unwrap_or_else(|e| panic!("temporary directory for a Kafka node: {e}")))
            .collect();
        for (id, dir) in dirs.iter().enumerate() {
            let node = NodeConfig { id, brokers, port: client_ports[id], controller_port: controller_ports[id], voters: voters.join(",") };
            write(&dir.path().join("server.properties"), &node.properties(dir.path()));
            write(&dir.path().join("log4j2.properties"), &log4j_properties(dir.path()));
        }
        format_storage(&libs, &dirs);
        let watchdog = watchdog(&dirs);
        let nodes = dirs.into_iter().zip(client_ports).map(|(dir, &port)| ServerProcess::start_in(dir, port, spawn_node)).collect();
        let mut cluster = KafkaCluster { nodes, watchdog };
        cluster.wait_ready();
        eprintln!("kafka: {brokers} broker(s) ready in {:.1} s at {}", started.elapsed().as_secs_f64(), cluster.bootstrap());
        cluster
    }

    /// One cluster of `brokers` for every test of this test binary, started by the first test that
    /// asks. Tests on it keep apart by topic prefix and never kill its brokers (`&` only).
    pub fn shared(brokers: usize) -> &'static KafkaCluster {
        static SHARED: OnceLock<KafkaCluster> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| KafkaCluster::start(brokers));
        assert_eq!(cluster.brokers(), brokers, "the shared cluster of this test binary has another size");
        cluster
    }

    pub fn brokers(&self) -> usize {
        self.nodes.len()
    }

    /// `127.0.0.1:p0,127.0.0.1:p1,...`, every node (killed ones too: clients skip them).
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s directory (its `server.log` and data).
    pub fn dir(&self, i: usize) -> &Path {
        self.nodes[i].dir()
    }

    /// Kills node `i` with SIGKILL: no controlled shutdown, no leadership handed over.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its port with its data (killing it first if it runs) and waits
    /// until the metadata lists every running node.
    pub fn restart(&mut self, i: usize) {
        let started = Instant::now();
        self.nodes[i].restart();
        self.wait_ready();
        eprintln!("kafka: broker {i} back in {:.1} s", started.elapsed().as_secs_f64());
    }

    /// The partitions of `topic` (index = partition), or `None` when the cluster does not know it.
    pub fn topic(&self, topic: &str) -> Option<Vec<PartitionState>> {
        let metadata = self.client().fetch_metadata(Some(topic), Duration::from_secs(10)).ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none())?;
        let index = |id: i32| usize::try_from(id).ok();
        let mut partitions: Vec<_> = t.partitions().iter().collect();
        partitions.sort_by_key(|p| p.id());
        Some(
            partitions
                .into_iter()
                .map(|p| PartitionState {
                    leader: index(p.leader()),
                    replicas: p.replicas().iter().copied().filter_map(index).collect(),
                    in_sync: p.isr().iter().copied().filter_map(index).collect(),
                })
                .collect(),
        )
    }

    /// The node that leads `partition` of `topic` right now.
    pub fn leader(&self, topic: &str, partition: usize) -> Option<usize> {
        self.topic(topic)?.get(partition)?.leader
    }

    fn client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            // Retry refused connections quickly while brokers come up.
            .set("reconnect.backoff.max.ms", "500")
            .set("log_level", "0")
            .create()
            .unwrap_or_else(|e| panic!("a Kafka client for the test cluster: {e}"))
    }

    /// Waits until every started node accepts connections (a KRaft broker opens its client port
    /// only once the controller has unfenced it) and the metadata lists every one of them.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        let want: Vec<i32> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_started()).filter_map(|i| i32::try_from(i).ok()).collect();
        let mut seen = String::from("nothing yet");
        let client = self.client();
        loop {
            for i in 0..self.nodes.len() {
                if let Some(status) = self.nodes[i].exited() {
                    panic!("Kafka broker {i} exited ({status}) while starting:\n{}", self.log_tail(i));
                }
            }
            let listening = want.iter().all(|&i| {
                let port = self.nodes[usize::try_from(i).unwrap_or(0)].port();
                std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
            });
            if listening {
                match client.fetch_metadata(None, Duration::from_secs(2)) {
                    Ok(metadata) => {
                        let mut ids: Vec<i32> = metadata.brokers().iter().map(rdkafka::metadata::MetadataBroker::id).collect();
                        ids.sort_unstable();
                        if ids == want {
                            return;
                        }
                        seen = format!("metadata lists brokers {ids:?}, want {want:?}");
                    }
                    Err(e) => seen = format!("metadata: {e}"),
                }
            }
            if Instant::now() > deadline {
                let logs: String = want.iter().filter_map(|&i| usize::try_from(i).ok()).map(|i| self.log_tail(i)).collect();
                panic!("the Kafka cluster was not ready within {READY_WITHIN:?} ({seen}):\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of node `i`'s log and JVM output, for a panic message.
    fn log_tail(&self, i: usize) -> String {
        let mut out = String::new();
        for file in ["java.out", "server.log"] {
            let path = self.nodes[i].dir().join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "----- {} (last 30 lines)", path.display());
            for line in &lines[lines.len().saturating_sub(30)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        // The nodes are killed as the fields drop; the watchdog must not act on its own afterwards.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// What differs between the nodes of one cluster.
struct NodeConfig {
    id: usize,
    brokers: usize,
    port: u16,
    controller_port: u16,
    /// `controller.quorum.voters`: a fixed quorum of every node, so the cluster needs no
    /// bootstrapping of controllers beyond formatting each node's storage.
    voters: String,
}

impl NodeConfig {
    fn properties(&self, dir: &Path) -> String {
        let NodeConfig { id, brokers, port, controller_port, voters } = self;
        let replication = (*brokers).min(3);
        // With three replicas a write needs two: one broker may be down, as in production.
        let min_isr = if replication >= 3 { 2 } else { 1 };
        format!(
            "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
# Topics come from the admin API (the adapter's --kafka-create-topics) or not at all, so a topic
# the code forgot to create fails instead of appearing with default settings.
auto.create.topics.enable=false
num.partitions=4
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=6
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
# Tests start consumers one after another; a group should not wait for more members.
group.initial.rebalance.delay.ms=0
# A killed broker is fenced, and its partitions led elsewhere, within seconds.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
# Small files and few threads: test traffic is small and the machine has two cores.
log.segment.bytes=1048576
log.index.size.max.bytes=131072
log.cleaner.dedupe.buffer.size=4194304
log.cleaner.threads=1
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
background.threads=2
",
            data = dir.join("data").display(),
        )
    }
}

/// Log4j 2 writes the broker's log to `server.log` in its directory (the default configuration
/// would print it to stdout, into the test's output).
fn log4j_properties(dir: &Path) -> String {
    format!(
        "rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
# One line per request otherwise.
logger.request.name=kafka.request.logger
logger.request.level=WARN
",
        dir.join("server.log").display()
    )
}

/// Sends `messages` through the scratch topic `_kyufu_warm_up` (8 partitions, replicated as the
/// cluster allows) the way the pipeline does: an idempotent producer with `acks=all`, then a
/// consumer group reading them back and committing. Run once after start by benchmarks
/// (`kafka-cluster --warm-up`), so the brokers' JIT has compiled those paths before measuring.
pub fn warm_up(bootstrap: &str, messages: usize) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::Message as _;
    const TOPIC: &str = "_kyufu_warm_up";
    let brokers = bootstrap.split(',').count();
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().map_err(|e| format!("admin: {e}"))?;
    let topic = NewTopic::new(TOPIC, 8, TopicReplication::Fixed(i32::try_from(brokers.min(3)).unwrap_or(1)));
    futures::executor::block_on(admin.create_topics(&[topic], &AdminOptions::new())).map_err(|e| format!("create topic: {e}"))?;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let payload = vec![b'x'; 1024];
    for i in 0..messages {
        let key = format!("k{i}");
        let mut record = BaseRecord::to(TOPIC).key(&key).payload(&payload);
        // A full local queue: serve delivery reports and try again.
        while let Err((_, back)) = producer.send(record) {
            producer.poll(Duration::from_millis(10));
            record = back;
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| format!("flush: {e}"))?;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "_kyufu_warm_up")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    consumer.subscribe(&[TOPIC]).map_err(|e| format!("subscribe: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut read = 0;
    while read < messages {
        if Instant::now() > deadline {
            return Err(format!("read back {read} of {messages} in 120 s"));
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let _ = m.payload();
            read += 1;
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `java` with the test JVM options, the node's log configuration and the jars.
fn java(libs: &Path, dir: &Path) -> Command {
    let mut command = Command::new(crate::require_command("java"));
    command
        .args(jvm_options())
        .arg(format!("-Dlog4j2.configurationFile={}", dir.join("log4j2.properties").display()))
        .arg("-cp")
        // The JVM expands `dir/*` to every jar in it.
        .arg(libs.join("*"))
        .stdin(Stdio::null());
    // The class-data sharing archive install-kafka.sh made halves the start-up CPU. One that no
    // longer fits the JVM is ignored by it (with a warning in java.out), never fatal.
    let mut archive = libs.as_os_str().to_owned();
    archive.push(".jsa");
    let archive = PathBuf::from(archive);
    if archive.is_file() {
        command.arg(format!("-XX:SharedArchiveFile={}", archive.display()));
    }
    command
}

fn output_file(dir: &Path) -> std::fs::File {
    let path = dir.join("java.out");
    std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Formats every node's storage with one cluster id (Kafka's storage tool; a JVM each, side by side).
fn format_storage(libs: &Path, dirs: &[tempfile::TempDir]) {
    let cluster_id = cluster_id();
    let tools: Vec<(Child, &Path)> = dirs
        .iter()
        .map(|dir| {
            let out = output_file(dir.path());
            let child = java(libs, dir.path())
                .args(["kafka.tools.StorageTool", "format", "--cluster-id", &cluster_id, "--config"])
                .arg(dir.path().join("server.properties"))
                .stdout(out.try_clone().unwrap_or_else(|e| panic!("java.out: {e}")))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("starting Kafka's storage tool: {e}"));
            (child, dir.path())
        })
        .collect();
    for (mut child, dir) in tools {
        let status = child.wait().unwrap_or_else(|e| panic!("waiting for Kafka's storage tool: {e}"));
        if !status.success() {
            let out = std::fs::read_to_string(dir.join("java.out")).unwrap_or_default();
            panic!("formatting Kafka storage in {} failed ({status}):\n{out}", dir.display());
        }
    }
}

fn spawn_node(_port: u16, dir: &Path) -> Child {
    let out = output_file(dir);
    let child = java(&libs(), dir)
        .arg("kafka.Kafka")
        .arg(dir.join("server.properties"))
        .stdout(out.try_clone().unwrap_or_else(|e| panic!("java.out: {e}")))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting a Kafka broker in {}: {e}", dir.display()));
    write(&dir.join("java.pid"), &child.id().to_string());
    child
}

/// A shell that waits for its standard input to close, which happens when this process ends
/// however it ends, then kills the nodes still running and removes their directories. It kills a
/// pid only if that process's command line names the node's directory, so a pid reused by then is
/// left alone.
fn watchdog(dirs: &[tempfile::TempDir]) -> Child {
    const SCRIPT: &str = r#"read -r _
for d in "$@"; do
  pid=$(cat "$d/java.pid" 2>/dev/null) || continue
  grep -qF "$d" "/proc/$pid/cmdline" 2>/dev/null && kill -9 "$pid"
done
rm -rf "$@""#;
    Command::new("sh")
        .args(["-c", SCRIPT, "kafka-watchdog"])
        .args(dirs.iter().map(tempfile::TempDir::path))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the Kafka test cluster's watchdog: {e}"))
}

/// `n` loopback ports nobody listens on, all different.
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = crate::free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// A Kafka cluster id: 16 bytes in URL-safe base64 without padding (22 characters). It need not be
/// secret, only different between clusters started side by side. The top bit is cleared so the id
/// starts with a letter: the storage tool's argument parser takes an id starting with `-` for an
/// option.
fn cluster_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = nanos ^ (u128::from(std::process::id()) << 64) ^ u128::from(crate::free_port());
    base64url(&(splitmix(seed) >> 1).to_be_bytes())
}

/// One round of a 128-bit mix so that close seeds give unrelated ids.
fn splitmix(seed: u128) -> u128 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
    z = (z ^ (z >> 67)).wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb);
    z ^ (z >> 61)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_script_fetches_the_version_started_here() {
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/install-kafka.sh")).expect("install-kafka.sh");
        assert!(script.contains(&format!("\nKAFKA_VERSION={KAFKA_VERSION}\n")), "scripts/install-kafka.sh pins another Kafka version than {KAFKA_VERSION}");
    }

    #[test]
    fn cluster_ids_are_sixteen_bytes_of_base64url() {
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64url(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let id = cluster_id();
        assert_eq!(id.len(), 22);
        assert_ne!(id, cluster_id());
        for _ in 0..1000 {
            assert!(cluster_id().starts_with(|c: char| c.is_ascii_alphabetic()), "an id the storage tool would take for an option");
        }
    }

    /// Polls `check` until it holds or `limit` passes.
    fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !check() {
            assert!(Instant::now() < deadline, "{what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn gone(port: u16, dir: &Path) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && !dir.exists()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_leader_is_replaced_and_rejoins_after_restart() {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let mut cluster = KafkaCluster::start(3);
        assert_eq!(cluster.bootstrap().split(',').count(), 3);
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", cluster.bootstrap()).create().expect("admin client");
        let created = admin.create_topics(&[NewTopic::new("t", 2, TopicReplication::Fixed(3))], &AdminOptions::new()).await.expect("create topics");
        assert!(created.iter().all(Result::is_ok), "{created:?}");
        let full = |p: &PartitionState| p.leader.is_some() && p.in_sync.len() == 3;
        eventually("topic t with a leader and three in-sync replicas", Duration::from_secs(30), || {
            cluster.topic("t").is_some_and(|ps| ps.len() == 2 && ps.iter().all(full))
        });
        let leader = cluster.leader("t", 0).expect("leader");
        cluster.kill(leader);
        // Fenced after the broker session timeout (6 s), then the partition is led elsewhere.
        eventually("a new leader without the killed broker", Duration::from_secs(30), || {
            cluster.topic("t").and_then(|ps| ps.first().cloned()).is_some_and(|p| p.leader.is_some_and(|l| l != leader) && !p.in_sync.contains(&leader))
        });
        cluster.restart(leader);
        eventually("the restarted broker back in sync", Duration::from_secs(60), || cluster.topic("t").is_some_and(|ps| ps.iter().all(full)));

        let (ports, dirs): (Vec<u16>, Vec<PathBuf>) = cluster.nodes.iter().map(|n| (n.port(), n.dir().to_owned())).unzip();
        drop(cluster);
        for (port, dir) in ports.iter().zip(&dirs) {
            assert!(gone(*port, dir), "broker on {port} still answering or {} left behind after drop", dir.display());
        }
    }

    #[test]
    fn the_watchdog_stops_brokers_of_a_process_that_ends_without_dropping_them() {
        let mut cluster = KafkaCluster::start(1);
        let (port, dir) = (cluster.nodes[0].port(), cluster.dir(0).to_owned());
        // What the end of this process would do: the watchdog's standard input closes.
        drop(cluster.watchdog.stdin.take());
        eventually("the watchdog kills the broker and removes its directory", Duration::from_secs(20), || {
            gone(port, &dir) && cluster.nodes[0].exited().is_some()
        });
    }
}
