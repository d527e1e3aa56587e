//! The multi-process topology on real services: `kyufu gateway`, `kyufu intake`, `kyufu review`
//! and one process per worker stage (dedupe, idcheck, coupon, notify), all at once, on a real
//! `redis-server`, a real S3 server (`s3s-fs`) and librdkafka's mock Kafka cluster (real TCP, in
//! this test process).
//!
//! 1. The foundation's walk through it: coupon issued, duplicate, needs review.
//! 2. A compressed launch day from the load tester while processes are killed (SIGKILL) and
//!    restarted, a second worker of a stage joins and leaves (rebalance), and a worker is frozen
//!    (SIGSTOP) past its poll interval: the reconciliation finds nothing lost, nothing duplicated,
//!    nothing settled differently from the plan.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kyufu_testservers::{free_port, redis::RedisServer, s3::S3Server};
use rdkafka::mocking::MockCluster;
use serde_json::Value;

const SECRETS: [(&str, &str); 3] = [
    ("KYUFU_PASS_KEYS", "k1:0123456789abcdef0123456789abcdef0123456789abcdef"),
    ("KYUFU_IDENTITY_SECRET", "identity-secret-for-the-topology-test-012345"),
    ("KYUFU_STATUS_SECRET", "status-secret-for-the-topology-test-0123456789"),
];

/// One of our processes; killed when dropped.
struct Proc {
    child: Child,
    health: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {sig}");
    }
}

/// The services and the data directory (registry, secrets, outbox) every process shares.
struct Topology {
    _kafka: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    brokers: String,
    redis: RedisServer,
    s3: S3Server,
    dir: PathBuf,
    registry: PathBuf,
    gateway_base: String,
    intake_addr: String,
}

impl Topology {
    fn new(dir: &Path, households: usize) -> Topology {
        let registry = dir.join("registry.csv");
        let status = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(["registry", "generate", "--households", &households.to_string(), "--out"])
            .arg(&registry)
            .status()
            .expect("registry generate");
        assert!(status.success());
        let kafka = MockCluster::new(3).expect("librdkafka mock cluster");
        // The mock cluster has no admin API; the deployment's init job makes the topics in compose.
        for topic in kyufu_ports::events::topics::ALL {
            kafka.create_topic(topic, 4, 1).expect("create topic");
        }
        let brokers = kafka.bootstrap_servers();
        Topology {
            _kafka: kafka,
            brokers,
            redis: RedisServer::start(),
            s3: S3Server::start(),
            dir: dir.to_owned(),
            registry,
            gateway_base: String::new(),
            intake_addr: String::new(),
        }
    }

    fn spawn(&self, name: &str, args: &[&str], health: String) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).expect("log");
        let (key, secret) = self.s3.credentials();
        let child = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(args)
            .envs(SECRETS)
            .env("KYUFU_DATA_DIR", &self.dir)
            .env("KYUFU_BUS", "kafka")
            .env("KYUFU_KAFKA_BROKERS", &self.brokers)
            .env("KYUFU_KAFKA_CREATE_TOPICS", "false")
            // A frozen or killed member is replaced within seconds, not the default 45.
            .env("KYUFU_KAFKA_SET", "session.timeout.ms=6000;heartbeat.interval.ms=1000;reconnect.backoff.max.ms=1000")
            .env("KYUFU_STATUS_STORE", "redis")
            .env("KYUFU_REDIS_URL", self.redis.url())
            .env("KYUFU_DOCUMENTS", "s3")
            .env("KYUFU_S3_ENDPOINT", self.s3.endpoint())
            .env("KYUFU_S3_BUCKET", "kyufu-topology")
            .env("KYUFU_S3_CREATE_BUCKET", "true")
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn kyufu");
        Proc { child, health }
    }

    /// Intake on its fixed address (a restarted intake comes back where the gateway expects it).
    fn intake(&self) -> Proc {
        let addr = &self.intake_addr;
        self.spawn("intake", &["intake", "--listen", addr, "--relay-after-secs", "20"], format!("http://{addr}/readyz"))
    }

    fn worker(&self, stage: &str, n: usize) -> Proc {
        let listen = format!("127.0.0.1:{}", free_port());
        self.spawn(&format!("worker-{stage}-{n}"), &["worker", stage, "--listen", &listen], format!("http://{listen}/readyz"))
    }

    /// Starts intake, the gateway (public, at `gateway_base`), the review console and one worker per
    /// stage, and waits until each says it is ready.
    async fn start_all(&mut self) -> BTreeMap<String, Proc> {
        let mut procs = BTreeMap::new();
        let intake = format!("127.0.0.1:{}", free_port());
        self.intake_addr.clone_from(&intake);
        procs.insert("intake".to_owned(), self.intake());
        let gateway = format!("127.0.0.1:{}", free_port());
        let upstream = format!("http://{intake}");
        procs.insert(
            "gateway".to_owned(),
            self.spawn("gateway", &["gateway", "--listen", &gateway, "--upstream", &upstream, "--secrets-file", "/nonexistent"], format!("http://{gateway}/readyz")),
        );
        self.gateway_base = format!("http://{gateway}");
        for stage in ["dedupe", "idcheck", "coupon", "notify"] {
            procs.insert(stage.to_owned(), self.worker(stage, 0));
        }
        for (name, p) in &procs {
            wait_ready(name, &p.health).await;
        }
        procs
    }
}

/// On a failing test, prints every process's log (they live in the temporary directory, which
/// goes away with the test).
struct LogsOnPanic(PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("===== {} (last 40 lines)", path.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

async fn wait_ready(name: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = match reqwest::get(url).await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{name} at {url} never became ready: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_separate_processes_on_kafka_redis_and_s3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnPanic(dir.path().to_owned());
    let mut topo = Topology::new(dir.path(), 80);
    let _procs = topo.start_all().await;
    let base = topo.gateway_base.clone();
    let c = client();
    let fams = families(&read_registry(&topo.registry), chrono::Local::now().date_naive());
    assert!(fams.len() >= 12, "registry too small: {}", fams.len());

    let mut accepted: Vec<(String, String, &str)> = Vec::new();
    for (i, (g, ch)) in fams[..10].iter().enumerate() {
        let mut app = application_json(g, ch);
        let expected = if i == 9 {
            // A child the registry does not know: a person must look.
            app["child"]["given_name_kana"] = Value::from("ミチノスケ");
            "needs_review"
        } else {
            "coupon_issued"
        };
        let pass = admit(&c, &base).await;
        let (code, body) = submit(&c, &base, &pass, form(&app, png_document())).await;
        assert_eq!(code, 202, "{body}");
        accepted.push((body["application_id"].as_str().expect("id").into(), body["status_token"].as_str().expect("token").into(), expected));
    }
    // The first child again.
    let pass = admit(&c, &base).await;
    let (code, body) = submit(&c, &base, &pass, form(&application_json(&fams[0].0, &fams[0].1), png_document())).await;
    assert_eq!(code, 202, "{body}");
    accepted.push((body["application_id"].as_str().expect("id").into(), body["status_token"].as_str().expect("token").into(), "duplicate"));

    let mut coupons = HashSet::new();
    for (id, token, expected) in &accepted {
        let v = wait_settled(&c, &base, id, token, Duration::from_secs(60)).await;
        assert_eq!(v["status"], *expected, "{id}: {v}");
        if let Some(code) = v["coupon_code"].as_str() {
            assert!(coupons.insert(code.to_owned()), "a coupon issued twice");
        }
    }
    assert_eq!(coupons.len(), 9);

    // A poison message on the bus: the dedupe worker gives up on it after its retries and puts it
    // on the dead-letter topic with the reason, then carries on.
    use kyufu_ports::EventBus as _;
    let mut config = kyufu_kafka::KafkaConfig::new(topo.brokers.clone());
    config.create_topics = false;
    let bus = kyufu_kafka::KafkaBus::connect(config).await.expect("test's own Kafka client");
    let mut dead = bus.subscribe("test-dlq-reader", &[kyufu_ports::events::topics::DEAD_LETTER]).await.expect("subscribe");
    bus.publish(kyufu_ports::events::topics::RECEIVED, b"junk", b"{not json").await.expect("publish poison");
    let deadline = Instant::now() + Duration::from_secs(60);
    let letter = loop {
        if let Ok(Some(m)) = dead.poll(Duration::from_millis(500)).await {
            break m;
        }
        assert!(Instant::now() < deadline, "no dead letter");
    };
    let letter: kyufu_ports::events::DeadLetter = serde_json::from_slice(&letter.payload).expect("dead letter json");
    assert_eq!(letter.stage, "dedupe");
    assert_eq!(letter.payload, b"{not json");
    // Later applications still flow.
    let pass = admit(&c, &base).await;
    let (code, body) = submit(&c, &base, &pass, form(&application_json(&fams[10].0, &fams[10].1), png_document())).await;
    assert_eq!(code, 202, "{body}");
    let v = wait_settled(&c, &base, body["application_id"].as_str().expect("id"), body["status_token"].as_str().expect("t"), Duration::from_secs(60)).await;
    assert_eq!(v["status"], "coupon_issued", "{v}");
    // The notify worker wrote one email per coupon into the shared outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(topo.dir.join("outbox")).map(|d| d.count()).unwrap_or(0) < 9 {
        assert!(Instant::now() < deadline, "emails missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_day_under_faults_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnPanic(dir.path().to_owned());
    let mut topo = Topology::new(dir.path(), 300);
    let mut procs = topo.start_all().await;
    let idcheck_b = topo.worker("idcheck", 1);
    wait_ready("idcheck 1", &idcheck_b.health).await;
    procs.insert("idcheck-b".to_owned(), idcheck_b);

    let out = dir.path().join("loadtest-report");
    let config = loadtest::Config {
        target: topo.gateway_base.clone(),
        allow_remote: false,
        profile_name: "launch-day".into(),
        curve: loadtest::profile::Curve::launch_day(),
        applications: 300,
        // A day in twenty seconds, so the faults below land in the middle of the traffic.
        speedup: loadtest::profile::Speedup::new(4_320.0).expect("speedup"),
        registry: topo.registry.clone(),
        reference_date: chrono::Local::now().date_naive(),
        age_limit: 18,
        out_dir: out.clone(),
        seed: 23,
        mix: loadtest::plan::Mix { retry: 0.1, duplicate: 0.05, wrong: 0.05, bad_input: 0.05, abandon: 0.02, omit_resident_id: 0.5 },
        min_poll: Duration::from_millis(200),
        settle_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(120),
        progress: false,
    };

    let faults = async {
        let pause = |s| tokio::time::sleep(Duration::from_millis(s));
        let mut log = Vec::new();
        pause(2_000).await;
        // A worker killed mid-stream, and started again.
        drop(procs.remove("dedupe"));
        log.push("SIGKILL dedupe");
        pause(1_500).await;
        procs.insert("dedupe".into(), topo.worker("dedupe", 1));
        // A zombie: one of two idcheck workers frozen past its session timeout; the other takes its
        // partitions; then it wakes up and must not undo anything.
        procs["idcheck"].signal("-STOP");
        log.push("SIGSTOP idcheck 0");
        // A second coupon worker joins (rebalance).
        procs.insert("coupon-b".into(), topo.worker("coupon", 1));
        pause(8_000).await;
        procs["idcheck"].signal("-CONT");
        log.push("SIGCONT idcheck 0");
        // Intake killed mid-stream and restarted at the same address.
        drop(procs.remove("intake"));
        log.push("SIGKILL intake");
        pause(1_000).await;
        procs.insert("intake".into(), topo.intake());
        // Redis killed (SIGKILL; append-only file, fsync always) and restarted.
        pause(2_000).await;
        topo.redis.kill();
        log.push("SIGKILL redis-server");
        pause(2_000).await;
        topo.redis.restart();
        // The S3 server away for a while.
        pause(2_000).await;
        topo.s3.kill();
        log.push("S3 down");
        pause(8_000).await;
        topo.s3.restart();
        log.push("S3 back");
        // The coupon worker killed while everything catches up.
        drop(procs.remove("coupon"));
        log.push("SIGKILL coupon 0");
        log
    };
    let (outcome, faults) = tokio::join!(loadtest::run(config), faults);
    let outcome = outcome.expect("load run");
    let s = &outcome.summary;
    let text = loadtest::report::text(s);
    eprintln!("faults: {faults:?}\n{text}");
    assert_eq!((s.lost, s.duplicated, s.mismatched), (0, 0, 0), "{text}");
    assert!(outcome.passed(), "{text}");
    assert_eq!(s.reconciliation.settled, s.reconciliation.accepted, "{text}");
    assert!(s.reconciliation.accepted >= 250, "{text}");
    for status in ["coupon_issued", "duplicate", "needs_review"] {
        assert!(s.reconciliation.by_status.get(status).copied().unwrap_or(0) > 0, "no {status}: {text}");
    }
}
