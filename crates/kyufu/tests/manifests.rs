//! The Kubernetes manifests drive the multi-process topology. Every Deployment of `deploy/k8s` whose
//! image is ours runs as `kyufu <its args>` with exactly the environment its pod would get (the
//! ConfigMap, the Secret, its own `env`), the files its volumes mount and several replicas (two
//! gateways, two intakes), on a real three-broker Kafka, `redis-server`, the S3 server and `clamd`.
//! Cluster addresses are rewritten to those local servers by one explicit table (`EXTERNAL`) and by
//! the manifests' own Services, so a manifest naming a host the test does not know fails here
//! instead of silently pointing nowhere.
//!
//! A load then goes in through one gateway and on through the other: each visitor joins the queue
//! on one replica and waits, submits and is looked up on the other. A ticket issued by one replica
//! must be honoured by the other, which is what breaks when the replicas do not share one queue
//! (`KYUFU_QUEUE_STATE`); and every application must reach its final status.
//!
//! What the test adds to the manifests, each with its reason where it is done: the S3 endpoint
//! (the manifests use AWS's), the Kafka topics and the bucket (made by the operator in
//! production), generated secrets and registry (created outside the repository), and fewer
//! replicas than the manifests ask for.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kyufu_testservers::{clamd::ClamdServer, free_port, kafka::KafkaCluster, redis::RedisServer, s3::S3Server};
use serde_json::Value;
use serde_yaml::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The services the manifests expect outside our own Deployments (`host:port` as the manifests
/// write it), each run by this test. A manifest that names anything else fails the test.
const EXTERNAL: [&str; 3] = ["kafka-bootstrap.kafka.svc:9092", "redis.redis.svc:6379", "clamd:3310"];

/// Values that name the public site for people (the links in emails), never something a process
/// connects to: kept as they are.
const PUBLIC: [&str; 1] = ["https://kyufu.example.jp"];

/// Deployments in the manifests that are not ours and that the test replaces by a local server.
const REPLACED: [&str; 1] = ["clamd"];

/// Replicas started of a Deployment: two gateways sharing one queue (the point of this test) and
/// two intakes behind them; one of everything else, so that the whole topology fits on two cores.
fn replicas(deployment: &str, declared: u64) -> usize {
    assert!(declared >= 1, "{deployment}: no replicas");
    match deployment {
        "gateway" => {
            assert!(declared >= 2, "the gateway runs as one replica: the test needs at least two");
            2
        }
        "intake" => usize::from(declared >= 2) + 1,
        _ => 1,
    }
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn string_map(v: &Yaml, what: &str) -> BTreeMap<String, String> {
    v.as_mapping()
        .unwrap_or_else(|| panic!("{what}: no data"))
        .iter()
        .map(|(k, v)| {
            let k = k.as_str().unwrap_or_else(|| panic!("{what}: a key that is not a string")).to_owned();
            let v = v.as_str().unwrap_or_else(|| panic!("{what}: {k} is not a string")).to_owned();
            (k, v)
        })
        .collect()
}

/// One replica of one of our Deployments, as it will run here.
struct Pod {
    /// `<deployment>-<replica>`.
    name: String,
    deployment: String,
    component: String,
    replica: usize,
    container: Yaml,
    /// Container port → the loopback address it has here.
    ports: BTreeMap<u16, String>,
    /// Port name → container port.
    named: BTreeMap<String, u16>,
    /// Mount path in the container → directory here.
    mounts: Vec<(String, PathBuf)>,
}

impl Pod {
    fn port(&self, port: &Yaml) -> u16 {
        match port {
            Yaml::String(name) => *self.named.get(name).unwrap_or_else(|| panic!("{}: no port named {name}", self.name)),
            other => other.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or_else(|| panic!("{}: port {other:?}", self.name)),
        }
    }

    /// The loopback URL of an `httpGet` probe.
    fn probe_url(&self, probe: &str) -> String {
        let get = &self.container[probe]["httpGet"];
        let path = get["path"].as_str().unwrap_or_else(|| panic!("{}: {probe} has no httpGet path", self.name));
        let port = self.port(&get["port"]);
        format!("http://{}{path}", self.ports[&port])
    }
}

/// What a value of the manifests becomes here, for one pod.
struct Localizer<'a> {
    /// `host:port` → the loopback addresses behind it (one per replica of a Service's pods).
    services: &'a BTreeMap<String, Vec<String>>,
    /// Where absolute paths that no volume of the pod mounts end up: nowhere that exists.
    unmounted: &'a Path,
}

impl Localizer<'_> {
    fn value(&self, pod: &Pod, value: &str) -> String {
        if PUBLIC.contains(&value) {
            return value.to_owned();
        }
        if value.starts_with('/') {
            return self.path(pod, value).display().to_string();
        }
        let mut out = value.to_owned();
        // Listen addresses: each replica on its own free loopback port.
        while let Some(at) = out.find("0.0.0.0:") {
            let digits: String = out[at + 8..].chars().take_while(char::is_ascii_digit).collect();
            let port: u16 = digits.parse().unwrap_or_else(|_| panic!("{}: listen address in {value:?}", pod.name));
            let local = pod.ports.get(&port).unwrap_or_else(|| panic!("{}: listens on {port}, which its container does not declare", pod.name));
            out.replace_range(at..at + 8 + digits.len(), local);
        }
        for (service, endpoints) in self.services {
            // A Service spreads its clients over its pods: here replica i talks to endpoint i.
            out = replace_host(&out, service, &endpoints[pod.replica % endpoints.len()]);
        }
        let foreign = foreign_hosts(&out);
        assert!(
            foreign.is_empty(),
            "{}: {value:?} names {foreign:?}, which this test does not run: map it in EXTERNAL (tests/manifests.rs) or fix the manifest",
            pod.name
        );
        out
    }

    fn path(&self, pod: &Pod, path: &str) -> PathBuf {
        let mount = pod
            .mounts
            .iter()
            .filter(|(at, _)| path == at || path.starts_with(&format!("{}/", at.trim_end_matches('/'))))
            .max_by_key(|(at, _)| at.len());
        match mount {
            Some((at, local)) => local.join(path[at.len()..].trim_start_matches('/')),
            // Not mounted into this pod: in the container it is the image's (read-only, and empty
            // where our files go); here it must not reach the host's file system either.
            None => self.unmounted.join(path.trim_start_matches('/')),
        }
    }

    /// An argument: `--flag=value` localizes the value.
    fn arg(&self, pod: &Pod, arg: &str) -> String {
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => format!("{flag}={}", self.value(pod, value)),
            _ => self.value(pod, arg),
        }
    }
}

/// `value` with every `host:port` of `service` (not as part of a longer name) replaced by `with`.
fn replace_host(value: &str, service: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find(service) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + service.len()..].chars().next();
        let whole = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') && !after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..at]);
        out.push_str(if whole { with } else { service });
        rest = &rest[at + service.len()..];
    }
    out.push_str(rest);
    out
}

/// The hosts `value` names (as `scheme://host…` or `host:port`) that are not this machine's loopback.
fn foreign_hosts(value: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for (at, _) in value.match_indices("://") {
        let authority = value[at + 3..].split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("").split(':').next().unwrap_or("");
        hosts.push(host.to_owned());
    }
    for token in value.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '/' | '=' | '@' | '"')) {
        let Some((left, port)) = token.rsplit_once(':') else { continue };
        let host = left.rsplit(':').next().unwrap_or("");
        let names_a_host = host.chars().any(|c| c.is_ascii_alphabetic()) || host.parse::<std::net::IpAddr>().is_ok();
        if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && names_a_host {
            hosts.push(host.to_owned());
        }
    }
    hosts.retain(|h| !h.is_empty() && h != "127.0.0.1" && h != "localhost");
    hosts
}

/// The environment of a container as Kubernetes builds it: `envFrom` in order, then `env`
/// (literal values and references to ConfigMap and Secret keys). Returned with, for each variable,
/// whether its value is a secret of the test's (those are not checked for host names).
fn container_env(
    what: &str,
    container: &Yaml,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, (String, bool)> {
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_sequence().into_iter().flatten() {
        let (data, secret) = if let Some(name) = from["configMapRef"]["name"].as_str() {
            (config_maps.get(name).unwrap_or_else(|| panic!("{what}: envFrom names the unknown ConfigMap {name}")), false)
        } else if let Some(name) = from["secretRef"]["name"].as_str() {
            (secrets.get(name).unwrap_or_else(|| panic!("{what}: envFrom names the unknown Secret {name}")), true)
        } else {
            panic!("{what}: an envFrom source this test does not know: {from:?}");
        };
        env.extend(data.iter().map(|(k, v)| (k.clone(), (v.clone(), secret))));
    }
    for e in container["env"].as_sequence().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_else(|| panic!("{what}: env without a name")).to_owned();
        let key_ref = |kind: &str, maps: &BTreeMap<String, BTreeMap<String, String>>| {
            let r = &e["valueFrom"][kind];
            let (map, key) = (r["name"].as_str()?, r["key"].as_str()?);
            Some(maps.get(map).and_then(|m| m.get(key)).unwrap_or_else(|| panic!("{what}: {name} refers to {map}/{key}, which does not exist")).clone())
        };
        let value = if let Some(v) = e["value"].as_str() {
            (v.to_owned(), false)
        } else if let Some(v) = key_ref("secretKeyRef", secrets) {
            (v, true)
        } else if let Some(v) = key_ref("configMapKeyRef", config_maps) {
            (v, false)
        } else {
            panic!("{what}: {name} has a value this test does not know how to give: {e:?}");
        };
        env.insert(name, value);
    }
    env
}

/// The topics the deployment makes (Kafka's auto-creation is off and the roles are told not to
/// create them, `KYUFU_KAFKA_CREATE_TOPICS=false`): the list of compose's `kafka-init` job, the one
/// place the deployment files name them.
fn deployment_topics() -> Vec<String> {
    let compose = yaml_docs(&repo().join("deploy/compose.yaml")).remove(0);
    let script = strings(&compose["services"]["kafka-init"]["command"]).join("\n");
    let list = script.split("for t in ").nth(1).and_then(|rest| rest.split(';').next()).expect("compose kafka-init: `for t in <topics>;`");
    list.split_whitespace().map(str::to_owned).collect()
}

/// The test's values for what is created outside the repository: the Secret `kyufu-secrets` as
/// `deploy/make-secrets.sh` and the comment in `config.yaml` make it (`kyufu.json` and the keys of
/// `s3.env`), and the ConfigMap `kyufu-registry` (the registry extract).
fn outside_objects(dir: &Path, s3: &S3Server) -> (BTreeMap<String, BTreeMap<String, String>>, BTreeMap<String, String>) {
    let reviewer = Command::new(env!("CARGO_BIN_EXE_kyufu")).args(["reviewer-entry", "reviewer", "--generate"]).output().expect("kyufu reviewer-entry");
    assert!(reviewer.status.success(), "kyufu reviewer-entry failed");
    let hex = |n: usize| -> String { (0..n).map(|_| format!("{:02x}", rand::random::<u8>())).collect() };
    let kyufu_json = serde_json::json!({
        "pass_keys": format!("k1:{}", hex(32)),
        "identity_secret": hex(32),
        "status_secret": hex(32),
        "reviewers": String::from_utf8_lossy(&reviewer.stdout).trim(),
        "admin_token": hex(24),
    });
    let (key, secret) = s3.credentials();
    let secret_data = BTreeMap::from([
        ("kyufu.json".to_owned(), kyufu_json.to_string()),
        ("AWS_ACCESS_KEY_ID".to_owned(), key.to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), secret.to_owned()),
    ]);
    let registry = dir.join("registry.csv");
    let generated = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .args(["registry", "generate", "--households", "200", "--out"])
        .arg(&registry)
        .stdout(Stdio::null())
        .status()
        .expect("kyufu registry generate");
    assert!(generated.success(), "kyufu registry generate failed");
    let registry_data = BTreeMap::from([("registry.csv".to_owned(), std::fs::read_to_string(&registry).expect("registry.csv"))]);
    (BTreeMap::from([("kyufu-secrets".to_owned(), secret_data)]), registry_data)
}

/// Writes the files a pod's volumes hold and returns its mounts (mount path → directory here).
fn mount_volumes(pod_dir: &Path, what: &str, spec: &Yaml, container: &Yaml, data: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<(String, PathBuf)> {
    let volumes: BTreeMap<&str, &Yaml> =
        spec["volumes"].as_sequence().into_iter().flatten().filter_map(|v| Some((v["name"].as_str()?, v))).collect();
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_sequence().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_else(|| panic!("{what}: a volumeMount without a name"));
        let at = m["mountPath"].as_str().unwrap_or_else(|| panic!("{what}: {name} has no mountPath")).to_owned();
        let volume = volumes.get(name).unwrap_or_else(|| panic!("{what}: mounts the undeclared volume {name}"));
        let local = pod_dir.join(name);
        std::fs::create_dir_all(&local).expect("volume directory");
        let source = if volume["emptyDir"].is_mapping() {
            None
        } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
            Some((secret, &volume["secret"]["items"]))
        } else if let Some(map) = volume["configMap"]["name"].as_str() {
            Some((map, &volume["configMap"]["items"]))
        } else {
            panic!("{what}: volume {name} is of a kind this test does not know: {volume:?}");
        };
        if let Some((object, items)) = source {
            let keys = data.get(object).unwrap_or_else(|| panic!("{what}: volume {name} needs {object}, which nobody creates"));
            // Without `items` every key becomes a file of its name.
            let files: Vec<(String, String)> = match items.as_sequence() {
                Some(items) => items.iter().map(|i| (i["key"].as_str().unwrap_or("").to_owned(), i["path"].as_str().unwrap_or("").to_owned())).collect(),
                None => keys.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in files {
                let text = keys.get(&key).unwrap_or_else(|| panic!("{what}: volume {name} wants key {key} of {object}, which it lacks"));
                std::fs::write(local.join(&path), text).expect("volume file");
            }
        }
        mounts.push((at, local));
    }
    mounts
}

/// Joins the queue on gateway `join`, then waits for admission and submits on gateway `on`: a
/// ticket issued by one replica must be honoured by the other. A refusal fails at once.
async fn apply_across(c: &reqwest::Client, join: &str, on: &str, application: &Value) -> (String, String) {
    let joined = c.post(format!("{join}/queue/join")).send().await.expect("join");
    assert!(joined.status().is_success(), "join on {join}: {}", joined.status());
    let joined: Value = joined.json().await.expect("join json");
    let ticket = joined["ticket"].as_str().expect("ticket");
    let deadline = Instant::now() + Duration::from_secs(15);
    let pass = loop {
        let answer = c.get(format!("{on}/queue/status")).header("X-Queue-Ticket", ticket).send().await.expect("queue status");
        let code = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        let shared = "do the gateway replicas share one queue (KYUFU_QUEUE_STATE in deploy/k8s/config.yaml)?";
        assert!(code.is_success(), "gateway {on} refused a ticket gateway {join} issued ({code}: {body}): {shared}");
        if body["state"] == "admitted" {
            break body["pass"].as_str().expect("pass once admitted").to_owned();
        }
        assert!(Instant::now() < deadline, "gateway {on} did not admit a ticket gateway {join} issued within 15 s ({body}): {shared}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (code, body) = submit(c, on, &pass, form(application, png_document())).await;
    assert_eq!(code, 202, "submit on {on}: {body}");
    (body["application_id"].as_str().expect("id").to_owned(), body["status_token"].as_str().expect("token").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_run_with_two_gateways_sharing_one_queue() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnPanic(dir.path().to_owned());
    let k8s = repo().join("deploy/k8s");

    // Everything the kustomization applies, by kind.
    let kustomization = yaml_docs(&k8s.join("kustomization.yaml")).remove(0);
    let mut by_kind: BTreeMap<String, Vec<Yaml>> = BTreeMap::new();
    for file in strings(&kustomization["resources"]) {
        for doc in yaml_docs(&k8s.join(&file)) {
            by_kind.entry(doc["kind"].as_str().unwrap_or_default().to_owned()).or_default().push(doc);
        }
    }
    let name_of = |d: &Yaml| d["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let mut config_maps: BTreeMap<String, BTreeMap<String, String>> =
        by_kind["ConfigMap"].iter().map(|c| (name_of(c), string_map(&c["data"], &name_of(c)))).collect();

    // The local servers, the slow ones (Kafka's JVMs, clamd loading its database) side by side.
    let kafka = std::thread::spawn(|| KafkaCluster::start(3));
    let clamd = std::thread::spawn(ClamdServer::start);
    let (redis, s3) = (RedisServer::start(), S3Server::start());
    let (secrets, registry) = outside_objects(dir.path(), &s3);
    config_maps.insert("kyufu-registry".to_owned(), registry);
    let (kafka, clamd) = (kafka.join().expect("kafka cluster"), clamd.join().expect("clamd"));
    let external: BTreeMap<String, Vec<String>> = EXTERNAL
        .iter()
        .zip([kafka.bootstrap(), format!("127.0.0.1:{}", redis.port()), format!("127.0.0.1:{}", clamd.port())])
        .map(|(host, local)| ((*host).to_owned(), vec![local]))
        .collect();
    let config = &config_maps["kyufu-config"];

    // The operator's part in production. The topics: a few partitions on all three brokers (the
    // manifests leave partitions and replication to whoever makes them).
    let mut topics = kyufu_kafka::KafkaConfig::new(kafka.bootstrap());
    topics.topics = deployment_topics();
    (topics.partitions, topics.replication_factor) = (4, 3);
    kyufu_kafka::KafkaBus::connect(topics).await.expect("creating the deployment's topics");
    // The bucket, in the manifests' region.
    let mut bucket = kyufu_s3::S3Config::new(config["KYUFU_S3_BUCKET"].as_str());
    bucket.endpoint = Some(s3.endpoint());
    bucket.region.clone_from(&config["KYUFU_S3_REGION"]);
    (bucket.access_key_id, bucket.secret_access_key) = (Some(s3.credentials().0.to_owned()), Some(s3.credentials().1.to_owned()));
    bucket.create_bucket = true;
    kyufu_s3::S3DocumentStore::connect(bucket).await.expect("creating the bucket");

    // The pods: ports and volumes first (the Services' addresses depend on the ports).
    let mut volume_data = secrets.clone();
    volume_data.extend(config_maps.clone());
    let mut pods = Vec::new();
    let mut replaced = BTreeSet::new();
    for d in &by_kind["Deployment"] {
        let deployment = name_of(d);
        let spec = &d["spec"]["template"]["spec"];
        let containers = spec["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{deployment}: one container per pod");
        let container = &containers[0];
        if container["image"].as_str() != Some("kyufu") {
            replaced.insert(deployment);
            continue;
        }
        // The image's entrypoint is `kyufu` (Dockerfile); a `command` would replace it.
        assert!(container["command"].is_null(), "{deployment}: `command` replaces the image's entrypoint `kyufu`");
        let component = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].as_str().unwrap_or_default().to_owned();
        for replica in 0..replicas(&deployment, d["spec"]["replicas"].as_u64().unwrap_or(1)) {
            let name = format!("{deployment}-{replica}");
            let mut named = BTreeMap::new();
            let mut ports = BTreeMap::new();
            for p in container["ports"].as_sequence().into_iter().flatten() {
                let port = p["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("containerPort");
                if let Some(n) = p["name"].as_str() {
                    named.insert(n.to_owned(), port);
                }
                ports.insert(port, format!("127.0.0.1:{}", free_port()));
            }
            let mounts = mount_volumes(&dir.path().join(&name), &name, spec, container, &volume_data);
            pods.push(Pod { name, deployment: deployment.clone(), component: component.clone(), replica, container: container.clone(), ports, named, mounts });
        }
    }
    assert_eq!(replaced, REPLACED.iter().map(|s| (*s).to_owned()).collect(), "Deployments not of our image that this test does not run");

    // Our Services: `name:port` → the pods they select, at their target port.
    let mut services = external.clone();
    for s in &by_kind["Service"] {
        let component = s["spec"]["selector"]["app.kubernetes.io/component"].as_str().unwrap_or_default();
        for p in s["spec"]["ports"].as_sequence().into_iter().flatten() {
            let key = format!("{}:{}", name_of(s), p["port"].as_u64().expect("service port"));
            let endpoints: Vec<String> =
                pods.iter().filter(|pod| pod.component == component).map(|pod| pod.ports[&pod.port(&p["targetPort"])].clone()).collect();
            if endpoints.is_empty() {
                assert!(external.contains_key(&key), "Service {key} selects no pod this test runs and is not in EXTERNAL");
            } else {
                services.insert(key, endpoints);
            }
        }
    }

    // Start every pod: `kyufu <args>` with exactly its environment, localized.
    let unmounted = dir.path().join("not-mounted");
    let localize = Localizer { services: &services, unmounted: &unmounted };
    let workdir = std::fs::read_to_string(repo().join("Dockerfile"))
        .expect("Dockerfile")
        .lines()
        .filter_map(|l| l.strip_prefix("WORKDIR ").map(str::trim).map(str::to_owned))
        .next_back()
        .expect("the image's WORKDIR");
    let mut running = Vec::new();
    for pod in &pods {
        let args: Vec<String> = strings(&pod.container["args"]).iter().map(|a| localize.arg(pod, a)).collect();
        let mut env: BTreeMap<String, String> = container_env(&pod.name, &pod.container, &config_maps, &secrets)
            .into_iter()
            .map(|(k, (v, secret))| {
                let v = if secret { v } else { localize.value(pod, &v) };
                (k, v)
            })
            .collect();
        // Exception: the manifests use AWS's S3 endpoint (no KYUFU_S3_ENDPOINT); here the local S3
        // server stands in for it. An endpoint the manifests set goes through the table instead.
        if env.get("KYUFU_DOCUMENTS").map(String::as_str) == Some("s3") && !env.contains_key("KYUFU_S3_ENDPOINT") {
            env.insert("KYUFU_S3_ENDPOINT".to_owned(), s3.endpoint());
        }
        let cwd = localize.path(pod, &workdir);
        std::fs::create_dir_all(&cwd).expect("working directory");
        let log = std::fs::File::create(dir.path().join(format!("{}.log", pod.name))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .args(&args)
            // Nothing of the test's own environment: a container gets only what its pod spec says.
            .env_clear()
            .envs(&env)
            .current_dir(cwd)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn kyufu");
        running.push(Kill(child));
    }

    // Every pod passes its own readiness probe (and its liveness probe) on its own address.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (pod, proc) in pods.iter().zip(running.iter_mut()) {
        let ready = pod.probe_url("readinessProbe");
        loop {
            let answer = match reqwest::get(&ready).await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = proc.0.try_wait() {
                panic!("{} exited ({status}) before it was ready; its log is below", pod.name);
            }
            assert!(Instant::now() < deadline, "{} never passed its readiness probe {ready}: {answer}", pod.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let live = reqwest::get(pod.probe_url("livenessProbe")).await.expect("liveness probe");
        assert!(live.status().is_success(), "{}: liveness probe {}", pod.name, live.status());
    }
    eprintln!("manifests: {} pods ready after {:.1} s", pods.len(), started.elapsed().as_secs_f64());

    // The load: each visitor joins on one gateway and is admitted, submits and is looked up on the
    // other. Two children of earlier households come again (duplicates) and two children the
    // registry does not know need a person; every other one gets a coupon. The per-address limits
    // of the manifests stay as they are: the load keeps under each gateway's submission burst.
    let gateways: Vec<String> =
        pods.iter().filter(|p| p.deployment == "gateway").map(|p| format!("http://{}", p.ports[&p.port(&Yaml::from("http"))])).collect();
    assert_eq!(gateways.len(), 2);
    let fams = families(&read_registry(&dir.path().join("registry.csv")), chrono::Local::now().date_naive());
    let fresh = 44;
    assert!(fams.len() >= fresh, "registry too small: {}", fams.len());
    let mut plan: Vec<(Value, &str)> = Vec::new();
    for (i, (g, ch)) in fams[..fresh].iter().enumerate() {
        let mut app = application_json(g, ch);
        let expected = if i % 15 == 7 {
            app["child"]["given_name_kana"] = Value::from("ミチノスケ");
            "needs_review"
        } else {
            "coupon_issued"
        };
        plan.push((app, expected));
    }
    let c = client();
    let mut accepted: Vec<(String, String, usize, &str)> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (app, _)) in plan.iter().enumerate() {
        let (c, app) = (c.clone(), app.clone());
        let (join, on) = (gateways[i % 2].clone(), gateways[(i + 1) % 2].clone());
        tasks.spawn(async move { (i, apply_across(&c, &join, &on, &app).await) });
        // A few visitors at a time.
        if tasks.len() >= 6 {
            let (i, (id, token)) = tasks.join_next().await.expect("a visitor").expect("visitor task");
            accepted.push((id, token, i, plan[i].1));
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (i, (id, token)) = done.expect("visitor task");
        accepted.push((id, token, i, plan[i].1));
    }
    // The same children again, once every first application is in.
    for i in [0, 1] {
        let (id, token) = apply_across(&c, &gateways[(i + 1) % 2], &gateways[i % 2], &application_json(&fams[i].0, &fams[i].1)).await;
        accepted.push((id, token, i + 1, "duplicate"));
    }
    eprintln!("manifests: {} applications accepted after {:.1} s", accepted.len(), started.elapsed().as_secs_f64());

    // Every application reaches its final status, looked up on the gateway it joined on.
    let mut settled: BTreeMap<String, usize> = BTreeMap::new();
    let mut coupons = BTreeSet::new();
    for (id, token, i, expected) in &accepted {
        let v = wait_settled(&c, &gateways[i % 2], id, token, Duration::from_secs(60)).await;
        assert_eq!(v["status"], *expected, "{id}: {v}");
        *settled.entry(v["status"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        if let Some(code) = v["coupon_code"].as_str() {
            assert!(coupons.insert(code.to_owned()), "a coupon issued twice");
        }
    }
    let lost = accepted.len() - settled.values().sum::<usize>();
    assert_eq!(lost, 0, "lost applications");
    assert_eq!(settled.get("duplicate"), Some(&2), "{settled:?}");
    assert_eq!(settled.get("needs_review"), Some(&3), "{settled:?}");
    assert_eq!(coupons.len(), fresh - 3, "{settled:?}");
    eprintln!("manifests: {settled:?}, 0 lost, after {:.1} s", started.elapsed().as_secs_f64());
}
