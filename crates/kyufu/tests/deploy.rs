//! The deployment files cannot run here (no container engine, no cluster), so they are checked
//! against the binary and against each other: every `kyufu` subcommand, flag and `KYUFU_*`
//! variable they use exists in the binary's own `--help`; every compose dependency, Prometheus
//! scrape target and secret file names something that exists; every Kubernetes Deployment has
//! probes, resources, a non-root read-only security context and a PodDisruptionBudget; every
//! HPA and Service points at a Deployment that exists.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::yaml_docs;
use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `--help` text of `kyufu <args...>`.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kyufu")).args(args).arg("--help").output().expect("run kyufu --help");
    assert!(out.status.success(), "kyufu {args:?} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the binary accepts for one invocation: its flags and environment variables.
struct Surface {
    flags: BTreeSet<String>,
    envs: BTreeSet<String>,
}

fn surface(command: &[String]) -> Surface {
    // `worker <stage>` takes the stage as a positional argument; `registry generate` is nested.
    let depth = if command.first().map(String::as_str) == Some("registry") { 2 } else { 1 };
    let sub: Vec<&str> = command.iter().take(depth).map(String::as_str).collect();
    let text = format!("{}\n{}", help(&sub), help(&[]));
    let flags = text
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').split('=').next().unwrap_or("").to_owned())
        .collect();
    let mut envs: BTreeSet<String> = text
        .match_indices("[env: ")
        .map(|(i, _)| text[i + 6..].split(['=', ']']).next().unwrap_or("").to_owned())
        .collect();
    // Read directly by the secrets loader, not through a flag.
    for e in ["KYUFU_PASS_KEYS", "KYUFU_IDENTITY_SECRET", "KYUFU_STATUS_SECRET", "KYUFU_REVIEWERS", "KYUFU_ADMIN_TOKEN"] {
        envs.insert(e.to_owned());
    }
    Surface { flags, envs }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn check_invocation(what: &str, command: &[String], env: &[String]) {
    assert!(!command.is_empty(), "{what}: no command");
    let s = surface(command);
    assert!(
        ["all-in-one", "gateway", "intake", "worker", "review", "registry", "admin", "probe"].contains(&command[0].as_str()),
        "{what}: unknown subcommand {}",
        command[0]
    );
    if command[0] == "worker" {
        let stage = command.get(1).map(String::as_str).unwrap_or("");
        assert!(["dedupe", "documents", "idcheck", "coupon", "notify"].contains(&stage), "{what}: unknown stage {stage:?}");
    }
    for arg in command.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap_or(arg);
        assert!(s.flags.contains(flag), "{what}: `kyufu {}` has no flag {flag}", command[0]);
    }
    // Environment is shared between roles (one ConfigMap, one compose anchor), so a variable only
    // has to be read by some role; a misspelt or removed one is read by none.
    let known = every_role_env();
    for name in env.iter().filter(|n| n.starts_with("KYUFU_")) {
        assert!(s.envs.contains(name) || known.contains(name), "{what}: no kyufu role reads {name}");
    }
}

fn every_role_env() -> BTreeSet<String> {
    let roles: [&[&str]; 7] = [&["all-in-one"], &["gateway"], &["intake"], &["worker"], &["review"], &["admin"], &["registry", "generate"]];
    roles.iter().flat_map(|r| surface(&r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).envs).collect()
}

#[test]
fn compose_uses_only_what_the_binary_offers_and_names_only_what_exists() {
    let root = repo();
    let compose = yaml_docs(&root.join("deploy/compose.yaml")).remove(0);
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect();
    let mut ours = 0;
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        assert!(svc["image"].as_str().is_some(), "{name}: no image");
        match &svc["depends_on"] {
            Value::Mapping(m) => {
                for dep in m.keys() {
                    let dep = dep.as_str().expect("dependency name");
                    assert!(names.contains(dep), "{name} depends on unknown service {dep}");
                }
            }
            Value::Sequence(s) => {
                for dep in s {
                    assert!(names.contains(dep.as_str().unwrap_or("")), "{name} depends on unknown {dep:?}");
                }
            }
            _ => {}
        }
        if svc["image"].as_str() == Some("kyufu:local") {
            ours += 1;
            let command = strings(&svc["command"]);
            let env: Vec<String> = svc["environment"].as_mapping().map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect()).unwrap_or_default();
            check_invocation(&format!("compose service {name}"), &command, &env);
            if let Some(test) = svc["healthcheck"]["test"].as_sequence() {
                let probe: Vec<String> = test.iter().skip(1).filter_map(|v| v.as_str().map(str::to_owned)).collect();
                assert_eq!(probe.first().map(String::as_str), Some("kyufu"), "{name}: health check runs the binary's probe");
                check_invocation(&format!("{name} health check"), &probe[1..], &[]);
            }
        }
        for file in svc["env_file"].as_sequence().into_iter().flatten().filter_map(Value::as_str) {
            assert!(file.starts_with("secrets/"), "{name}: env file {file} outside deploy/secrets (which is not committed)");
        }
    }
    assert!(ours >= 8, "every role is a service: {ours}");
    for role in ["gateway", "intake", "worker-dedupe", "worker-documents", "worker-idcheck", "worker-coupon", "worker-notify", "review"] {
        assert!(names.contains(role), "compose lacks {role}");
    }
    // Intake scans every upload and waits for a healthy scanner (it fails closed while clamd is away).
    let intake = &services["intake"];
    assert_eq!(intake["environment"]["KYUFU_CLAMD"].as_str(), Some("tcp:clamd:3310"), "intake scans with clamd");
    assert_eq!(intake["depends_on"]["clamd"]["condition"].as_str(), Some("service_healthy"));
    for infra in ["kafka", "redis", "minio", "clamd", "prometheus", "grafana"] {
        assert!(names.contains(infra), "compose lacks {infra}");
    }
    // The roles create no topics (KYUFU_KAFKA_CREATE_TOPICS=false): kafka-init makes every one they use.
    let init = strings(&services["kafka-init"]["command"]).join("\n");
    for topic in kyufu_ports::events::topics::ALL {
        assert!(init.split(|c: char| c.is_whitespace() || c == ';').any(|w| w == *topic), "compose's kafka-init does not make the topic {topic}");
    }
    // Secret files are generated, never committed.
    let ignore = std::fs::read_to_string(root.join(".gitignore")).expect(".gitignore");
    assert!(ignore.lines().any(|l| l.trim() == "/deploy/secrets"), "deploy/secrets must be ignored by git");
    // Prometheus scrapes services that exist.
    let prom = yaml_docs(&root.join("deploy/prometheus/prometheus.yml")).remove(0);
    for job in prom["scrape_configs"].as_sequence().expect("scrape configs") {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            for target in strings(&sc["targets"]) {
                let host = target.split(':').next().unwrap_or("");
                assert!(host == "127.0.0.1" || names.contains(host), "prometheus scrapes {target}, which is not a compose service");
            }
        }
    }
    // The Redis configuration the compose file mounts is the documented one.
    let conf = std::fs::read_to_string(root.join("deploy/redis/redis.conf")).expect("redis.conf");
    assert!(conf.lines().any(|l| l.trim() == "appendonly yes"), "Redis runs with the append-only file");
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() {
    let dir = repo().join("deploy/k8s");
    let kustomization = yaml_docs(&dir.join("kustomization.yaml")).remove(0);
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in strings(&kustomization["resources"]) {
        for doc in yaml_docs(&dir.join(&file)) {
            let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{file}: a document without kind")).to_owned();
            by_kind.entry(kind).or_default().push(doc);
        }
    }
    let config = &by_kind["ConfigMap"][0];
    let deployments = &by_kind["Deployment"];
    let component = |v: &Value| v["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"].as_str().map(str::to_owned);
    let mut names = BTreeSet::new();
    for d in deployments {
        let name = d["metadata"]["name"].as_str().expect("name").to_owned();
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}: non-root");
        for c in pod["containers"].as_sequence().expect("containers") {
            if c["image"].as_str() != Some("kyufu") {
                // Not ours (clamd): it still needs resources and a readiness probe.
                assert!(c["readinessProbe"].is_mapping() && c["resources"]["limits"]["memory"].as_str().is_some(), "{name}: probe and resources");
                continue;
            }
            let args = strings(&c["args"]);
            // The environment the container gets: the ConfigMap, then its own `env` entries.
            let mut env: BTreeMap<String, String> = config["data"]
                .as_mapping()
                .expect("config data")
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect();
            for e in c["env"].as_sequence().into_iter().flatten() {
                env.insert(e["name"].as_str().expect("env name").to_owned(), e["value"].as_str().unwrap_or_default().to_owned());
            }
            let env_names: Vec<String> = env.keys().cloned().collect();
            check_invocation(&format!("deployment {name}"), &args, &env_names);
            if args.first().map(String::as_str) == Some("gateway") {
                // Several replicas must share one queue, or each pod runs its own queue (tickets
                // refused by the other pods, and every pod admitting at the full rate).
                assert_eq!(env.get("KYUFU_QUEUE_STATE").map(String::as_str), Some("redis"), "{name}: replicas need a shared queue");
                let trusted = env.get("KYUFU_TRUSTED_PROXIES").map(String::as_str).unwrap_or_default();
                assert!(
                    kyufu_gateway::TrustedProxies::parse(trusted).is_ok_and(|t| !t.is_empty()),
                    "{name}: behind the ingress, KYUFU_TRUSTED_PROXIES must name it ({trusted:?})"
                );
            }
            if args.first().map(String::as_str) == Some("worker") && args.get(1).map(String::as_str) == Some("notify") {
                // The links in citizens' emails must point at the public site, not at the default
                // (the process's own loopback address).
                let public = env.get("KYUFU_PUBLIC_URL").map(String::as_str).unwrap_or_default();
                assert!(public.starts_with("https://"), "{name}: KYUFU_PUBLIC_URL must be the public https site ({public:?})");
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(c[probe]["httpGet"]["path"].as_str().is_some(), "{name}: {probe}");
            }
            assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{name}");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{name}");
            assert!(c["resources"]["requests"]["cpu"].as_str().is_some() && c["resources"]["limits"]["memory"].as_str().is_some(), "{name}: resources");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}: read-only root");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false), "{name}");
        }
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"].as_str().map(str::to_owned),
            component(d),
            "{name}: the selector matches the pods"
        );
        names.insert(name);
    }
    for role in ["gateway", "intake", "review", "clamd", "worker-dedupe", "worker-documents", "worker-idcheck", "worker-coupon", "worker-notify"] {
        assert!(names.contains(role), "no Deployment {role}");
    }
    assert_eq!(config["data"]["KYUFU_CLAMD"].as_str(), Some("tcp:clamd:3310"), "intake scans every upload with clamd");
    let pdb_components: BTreeSet<String> = by_kind["PodDisruptionBudget"].iter().filter_map(component).collect();
    for d in deployments {
        assert!(pdb_components.contains(&component(d).expect("component")), "{:?} has no PodDisruptionBudget", d["metadata"]["name"]);
    }
    let mut scaled = BTreeSet::new();
    for h in &by_kind["HorizontalPodAutoscaler"] {
        let target = h["spec"]["scaleTargetRef"]["name"].as_str().expect("target").to_owned();
        assert!(names.contains(&target), "HPA for unknown Deployment {target}");
        assert!(h["spec"]["maxReplicas"].as_u64().unwrap_or(0) <= 12 || !target.starts_with("worker"), "{target}: more members than partitions");
        scaled.insert(target);
    }
    for role in ["gateway", "intake", "worker-dedupe", "worker-documents", "worker-idcheck", "worker-coupon"] {
        assert!(scaled.contains(role), "{role} does not scale");
    }
    let deployment_components: BTreeSet<String> = deployments.iter().filter_map(component).collect();
    for s in &by_kind["Service"] {
        let sel = s["spec"]["selector"]["app.kubernetes.io/component"].as_str().expect("selector").to_owned();
        assert!(deployment_components.contains(&sel), "Service selects nothing: {sel}");
    }
}

/// Every manifest validates against the Kubernetes schemas (kubernetes-validate from PyPI, strict:
/// unknown fields are errors), which parsing alone does not show.
#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let validator = home.join(".cache/kyufu/kubernetes-validate-1.37.0/bin/kubernetes-validate");
    assert!(validator.exists(), "{} is missing: run `make deps` (scripts/install-deps.sh)", validator.display());
    let dir = repo().join("deploy/k8s");
    let kustomization = yaml_docs(&dir.join("kustomization.yaml")).remove(0);
    let files: Vec<PathBuf> = strings(&kustomization["resources"]).iter().map(|f| dir.join(f)).collect();
    assert!(files.len() >= 6, "{files:?}");
    let out = Command::new(&validator).args(["--strict", "--quiet"]).args(&files).output().expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "deploy/k8s does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
