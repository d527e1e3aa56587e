//! The multi-process topology on real services: `kyufu gateway`, `kyufu intake`, `kyufu review`
//! and one process per worker stage (dedupe, documents, idcheck, coupon, notify), all at once, on a real
//! `redis-server`, a real S3 server (`s3s-fs`) and a real three-broker Apache Kafka cluster
//! (KRaft, replication factor 3, `min.insync.replicas=2`; the roles create the topics through the
//! admin API as they start). The tests of this binary share one cluster, each behind its own topic
//! and group prefix; the fault run, which kills brokers, has a cluster of its own.
//!
//! 1. The foundation's walk through it: coupon issued, duplicate, needs review.
//! 2. A compressed launch day from the load tester while processes are killed (SIGKILL) and
//!    restarted, a second worker of a stage joins and leaves (rebalance), and a worker is frozen
//!    (SIGSTOP) past its poll interval: the reconciliation finds nothing lost, nothing duplicated,
//!    nothing settled differently from the plan.
//! 3. (`make fault-run`, also run by CI) The same at 10,000 applications, with every worker role
//!    and intake killed in turn, a zombie worker, a Redis restart, the S3 server away for 30 s, and
//!    twice a Kafka broker killed (SIGKILL) and restarted: the leader of the received topic's first
//!    partition, then the broker that took over from it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kyufu_ports::events::topics;
use kyufu_testservers::{free_port, kafka::KafkaCluster, redis::RedisServer, s3::S3Server};
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

/// The Kafka cluster of a topology: the one this test binary shares, or one of its own where the
/// test kills brokers (behind a mutex, so a restart can wait on a blocking thread while the load
/// goes on).
enum Kafka {
    Shared(&'static KafkaCluster),
    Own(Arc<Mutex<KafkaCluster>>),
}

/// The services and the data directory (registry, secrets, outbox) every process shares.
struct Topology {
    kafka: Kafka,
    brokers: String,
    /// Prefix of this topology's topics and consumer groups on the cluster.
    prefix: String,
    redis: RedisServer,
    s3: S3Server,
    dir: PathBuf,
    registry: PathBuf,
    gateway_base: String,
    /// The gateway's operations address (`/metrics`; the public port serves none).
    gateway_ops: String,
    intake_addr: String,
}

impl Topology {
    fn new(dir: &Path, households: usize, kafka: Kafka, prefix: &str) -> Topology {
        let registry = dir.join("registry.csv");
        let status = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(["registry", "generate", "--households", &households.to_string(), "--out"])
            .arg(&registry)
            .status()
            .expect("registry generate");
        assert!(status.success());
        let brokers = match &kafka {
            Kafka::Shared(cluster) => cluster.bootstrap(),
            Kafka::Own(cluster) => cluster.lock().expect("kafka cluster").bootstrap(),
        };
        Topology {
            kafka,
            brokers,
            prefix: prefix.to_owned(),
            redis: RedisServer::start(),
            s3: S3Server::start(),
            dir: dir.to_owned(),
            registry,
            gateway_base: String::new(),
            gateway_ops: String::new(),
            intake_addr: String::new(),
        }
    }

    fn spawn(&self, name: &str, args: &[&str], health: String) -> Proc {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).expect("log");
        let (key, secret) = self.s3.credentials();
        let child = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(args)
            .envs(SECRETS)
            // The tests send many children through one admission pass, more than a household's bound.
            .env("KYUFU_SUBMISSIONS_PER_PASS", "0")
            .env("KYUFU_DATA_DIR", &self.dir)
            .env("KYUFU_BUS", "kafka")
            .env("KYUFU_KAFKA_BROKERS", &self.brokers)
            .env("KYUFU_KAFKA_TOPIC_PREFIX", &self.prefix)
            // Each role creates what is missing as it starts (the default); a few partitions, every
            // one on all three brokers.
            .env("KYUFU_KAFKA_PARTITIONS", "4")
            .env("KYUFU_KAFKA_REPLICATION", "3")
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
        let ops = format!("127.0.0.1:{}", free_port());
        let upstream = format!("http://{intake}");
        let args = ["gateway", "--listen", &gateway, "--upstream", &upstream, "--ops-listen", &ops, "--secrets-file", "/nonexistent"];
        procs.insert("gateway".to_owned(), self.spawn("gateway", &args, format!("http://{gateway}/readyz")));
        self.gateway_base = format!("http://{gateway}");
        self.gateway_ops = format!("http://{ops}");
        for stage in ["dedupe", "documents", "idcheck", "coupon", "notify"] {
            procs.insert(stage.to_owned(), self.worker(stage, 0));
        }
        for (name, p) in &procs {
            wait_ready(name, &p.health).await;
        }
        procs
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
    let mut topo = Topology::new(dir.path(), 80, Kafka::Shared(KafkaCluster::shared(3)), "walk.");
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
    config.topic_prefix.clone_from(&topo.prefix);
    config.create_topics = false;
    let bus = kyufu_kafka::KafkaBus::connect(config).await.expect("test's own Kafka client");
    let mut dead = bus.subscribe("test-dlq-reader", &[kyufu_ports::events::topics::DEAD_LETTER]).await.expect("subscribe");
    bus.publish(kyufu_ports::events::topics::RECEIVED, b"junk", b"{not json").await.expect("publish poison");
    // Every stage that reads `applications.received` gives it up: dedupe, and notify (receipts).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stages = BTreeSet::new();
    while stages.len() < 2 {
        if let Ok(Some(m)) = dead.poll(Duration::from_millis(500)).await {
            let letter: kyufu_ports::events::DeadLetter = serde_json::from_slice(&m.payload).expect("dead letter json");
            assert_eq!(letter.payload, b"{not json");
            stages.insert(letter.stage);
        }
        assert!(Instant::now() < deadline, "dead letters only from {stages:?}");
    }
    assert_eq!(stages, BTreeSet::from(["dedupe".to_owned(), "notify".to_owned()]));
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

/// The topology with a second idcheck worker (so one can be frozen while the other takes over).
async fn fault_topology(dir: &Path, households: usize, kafka: Kafka, prefix: &str) -> (Topology, BTreeMap<String, Proc>) {
    let mut topo = Topology::new(dir, households, kafka, prefix);
    let mut procs = topo.start_all().await;
    let idcheck_b = topo.worker("idcheck", 1);
    wait_ready("idcheck 1", &idcheck_b.health).await;
    procs.insert("idcheck-b".to_owned(), idcheck_b);
    (topo, procs)
}

/// A load-test run against `topo` with the settings both fault runs share.
fn fault_load(topo: &Topology, out: &Path, curve: loadtest::profile::Curve, applications: u64, speedup: f64, mix: loadtest::plan::Mix) -> loadtest::Config {
    loadtest::Config {
        target: topo.gateway_base.clone(),
        metrics: topo.gateway_ops.clone(),
        allow_remote: false,
        profile_name: "fault-run".into(),
        curve,
        applications,
        speedup: loadtest::profile::Speedup::new(speedup).expect("speedup"),
        registry: topo.registry.clone(),
        reference_date: chrono::Local::now().date_naive(),
        age_limit: 18,
        out_dir: out.to_owned(),
        seed: 23,
        mix,
        min_poll: Duration::from_millis(200),
        settle_timeout: Duration::from_secs(900),
        drain_timeout: Duration::from_secs(600),
        progress: false,
    }
}

/// The oracle's verdict: nothing lost, duplicated or settled differently from the plan (a dead
/// letter moves an application to needs_review, a mismatch wherever the plan expects otherwise),
/// at least `min_accepted` accepted, and every kind of outcome seen.
fn assert_reconciled(outcome: &loadtest::Outcome, faults: &[String], min_accepted: usize) {
    let s = &outcome.summary;
    let text = loadtest::report::text(s);
    eprintln!("faults: {faults:#?}\n{text}");
    assert_eq!((s.lost, s.duplicated, s.mismatched), (0, 0, 0), "{text}");
    assert!(outcome.passed(), "{text}");
    assert_eq!(s.reconciliation.settled, s.reconciliation.accepted, "{text}");
    assert!(s.reconciliation.accepted >= min_accepted, "{text}");
    for status in ["coupon_issued", "duplicate", "needs_review"] {
        assert!(s.reconciliation.by_status.get(status).copied().unwrap_or(0) > 0, "no {status}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_day_under_faults_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnPanic(dir.path().to_owned());
    let (mut topo, mut procs) = fault_topology(dir.path(), 300, Kafka::Shared(KafkaCluster::shared(3)), "faults.").await;
    let out = dir.path().join("loadtest-report");
    // A day in twenty seconds, so the faults below land in the middle of the traffic.
    let mix = loadtest::plan::Mix { retry: 0.1, duplicate: 0.05, wrong: 0.05, bad_input: 0.05, abandon: 0.02, omit_resident_id: 0.5 };
    let mut config = fault_load(&topo, &out, loadtest::profile::Curve::launch_day(), 300, 4_320.0, mix);
    config.settle_timeout = Duration::from_secs(120);
    config.drain_timeout = Duration::from_secs(120);

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
    let faults: Vec<String> = faults.into_iter().map(str::to_owned).collect();
    assert_reconciled(&outcome.expect("load run"), &faults, 250);
}

/// What the long fault run does, in order, while the traffic flows.
async fn every_fault_in_turn(topo: &mut Topology, procs: &mut BTreeMap<String, Proc>) -> Vec<String> {
    let mut log: Vec<String> = Vec::new();
    let mut note = |what: String| {
        eprintln!("fault run: {what}");
        log.push(what);
    };
    let pause = |s: u64| tokio::time::sleep(Duration::from_secs(s));
    pause(15).await;
    // Each worker role and intake killed mid-stream (SIGKILL) and started again.
    for stage in ["dedupe", "documents", "idcheck-b", "coupon", "notify"] {
        let (role, n) = stage.split_once('-').map_or((stage, 0), |(r, _)| (r, 1));
        drop(procs.remove(stage));
        note(format!("SIGKILL {role} {n}"));
        pause(2).await;
        let p = topo.worker(role, n);
        wait_ready(stage, &p.health).await;
        procs.insert(stage.to_owned(), p);
        note(format!("{role} {n} restarted"));
        pause(10).await;
    }
    drop(procs.remove("intake"));
    note("SIGKILL intake".into());
    pause(1).await;
    let p = topo.intake();
    wait_ready("intake", &p.health).await;
    procs.insert("intake".into(), p);
    note("intake restarted".into());
    pause(10).await;
    // A zombie: one of two idcheck workers frozen past its session timeout while the other takes
    // its partitions; a second coupon worker joins meanwhile (rebalance).
    procs["idcheck"].signal("-STOP");
    note("SIGSTOP idcheck 0".into());
    procs.insert("coupon-b".into(), topo.worker("coupon", 1));
    pause(10).await;
    procs["idcheck"].signal("-CONT");
    note("SIGCONT idcheck 0".into());
    pause(10).await;
    // Redis killed (append-only file, fsync always) and restarted.
    topo.redis.kill();
    note("SIGKILL redis-server".into());
    pause(3).await;
    topo.redis.restart();
    note("redis-server restarted".into());
    pause(10).await;
    // The S3 server away for 30 seconds.
    topo.s3.kill();
    note("S3 server down".into());
    pause(30).await;
    topo.s3.restart();
    note("S3 server back after 30 s".into());
    pause(10).await;
    // A Kafka broker killed (SIGKILL) for 10 s and restarted with its data, twice: the leader of the
    // received topic's first partition, then the broker that led it after that (so the second
    // failover may need the broker that just came back). The restart waits on a blocking thread;
    // the load goes on meanwhile.
    let Kafka::Own(kafka) = &topo.kafka else { panic!("the fault run kills brokers of its own cluster") };
    let received = format!("{}{}", topo.prefix, topics::RECEIVED);
    for _ in 0..2 {
        let (cluster, topic) = (kafka.clone(), received.clone());
        let (leader, partitions) = tokio::task::spawn_blocking(move || {
            let mut cluster = cluster.lock().expect("kafka cluster");
            let partitions = cluster.topic(&topic).expect("the received topic");
            let leader = partitions[0].leader.expect("a leader of the received topic's partition 0");
            cluster.kill(leader);
            (leader, partitions)
        })
        .await
        .expect("kill a broker");
        note(format!("SIGKILL Kafka broker {leader}, leader of {} partition 0 (partitions: {partitions:?})", topics::RECEIVED));
        pause(10).await;
        let cluster = kafka.clone();
        tokio::task::spawn_blocking(move || cluster.lock().expect("kafka cluster").restart(leader)).await.expect("restart a broker");
        note(format!("Kafka broker {leader} restarted"));
        pause(10).await;
    }
    drop(procs.remove("coupon-b"));
    note("SIGKILL coupon 1".into());
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long (minutes): run with `make fault-run`, which CI runs after `make test`"]
async fn ten_thousand_applications_through_every_fault_lose_nothing() {
    let applications: u64 = std::env::var("KYUFU_FAULT_RUN_APPLICATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnPanic(dir.path().to_owned());
    // About 1.8 eligible children per household; the plan needs one child per application.
    let households = usize::try_from(applications).unwrap_or(usize::MAX) / 4 * 3 + 500;
    let kafka = Kafka::Own(Arc::new(Mutex::new(KafkaCluster::start(3))));
    let (mut topo, mut procs) = fault_topology(dir.path(), households, kafka, "fault-run.").await;
    let out = dir.path().join("loadtest-report");
    // Arrivals spread evenly over four minutes, so every fault below lands in the middle of them.
    let mix = loadtest::plan::Mix { retry: 0.05, duplicate: 0.03, wrong: 0.03, bad_input: 0.02, abandon: 0.01, omit_resident_id: 0.5 };
    let curve = loadtest::profile::Curve::steady(240.0).expect("curve");
    let mut config = fault_load(&topo, &out, curve, applications, 1.0, mix);
    config.seed = 29;
    config.min_poll = Duration::from_millis(500);
    let started = Instant::now();
    let (outcome, faults) = tokio::join!(loadtest::run(config), every_fault_in_turn(&mut topo, &mut procs));
    eprintln!("whole run: {:.0} s", started.elapsed().as_secs_f64());
    // The report (HTML with plots, summary.json) outlives the temporary directory when asked.
    if let Some(to) = std::env::var_os("KYUFU_FAULT_RUN_REPORT").map(PathBuf::from) {
        let _ = std::fs::create_dir_all(&to);
        for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
            let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
        }
    }
    assert_reconciled(&outcome.expect("load run"), &faults, usize::try_from(applications * 9 / 10).unwrap_or(usize::MAX));
}

