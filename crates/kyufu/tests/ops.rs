//! Operations against the real binary: a real Prometheus (Debian's `prometheus`, installed by
//! `scripts/install-deps.sh`) scrapes a real `kyufu all-in-one` while a short load runs, and its
//! HTTP API must show the launch-day series with the values the load implies; the Grafana
//! dashboards and the Prometheus rules may name only metrics a running system exports (or a
//! recording rule defines); every alert links to its runbook section.
//!
//! `render_launch_day_overview` runs a short rush with a real queue and renders the launch-day
//! dashboard from Prometheus query results as a static HTML page, every panel with data (with
//! `KYUFU_SNAPSHOT`, a 3-minute launch, for the screenshot in docs/).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The repository root (two levels above this crate).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ------------------------------------------------------------------------------------------------
// A real Prometheus on a free loopback port.

struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` (`host:port`) every second as job `kyufu-all-in-one`,
    /// with the project's recording and alerting rules, storage in a temp dir.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo().join("deploy/prometheus");
        let rule_file = |name: &str| {
            let p = rules.join(name);
            std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).display().to_string()
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: kyufu-all-in-one\n    static_configs:\n      - targets: [\"{target}\"]\n        labels: {{ role: all-in-one }}\n",
            rule_file("recording.rules.yml"),
            rule_file("alerts.rules.yml"),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus config");
        // The port is free when asked; a rare race with another process is retried.
        for _attempt in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let spawned = Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::from(log.try_clone().expect("log file")))
                .stderr(Stdio::from(log))
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => panic!(
                    "cannot start `prometheus` ({e}): run `scripts/install-deps.sh` (or `make deps`) to install it"
                ),
            };
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken or bad config; see the log
                }
                if blocking_get(&format!("{base}/-/ready")).is_some_and(|(code, _)| code == 200) {
                    return Prometheus { child, base, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        panic!("prometheus did not become ready; run `scripts/install-deps.sh` if it is missing. Log:\n{log}");
    }

    /// Instant query; every result as (labels, value).
    async fn query(&self, c: &reqwest::Client, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let resp: Value = c
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", q)])
            .send()
            .await
            .expect("query prometheus")
            .json()
            .await
            .expect("prometheus json");
        assert_eq!(resp["status"], "success", "{q}: {resp}");
        resp["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let labels = r["metric"]
                            .as_object()
                            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
                            .unwrap_or_default();
                        let value = r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The single value of `q`, once `ok` holds for it (within 30 s); fails with the last value.
    async fn eventually(&self, c: &reqwest::Client, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.query(c, q).await;
            let value = match result.as_slice() {
                [(_, v)] => Some(*v),
                _ => None,
            };
            if let Some(v) = value.filter(|v| ok(*v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "prometheus: `{q}` never got a plausible value; last result {result:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A GET without the async client, for readiness polling from sync code.
fn blocking_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(authority).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf))
}

// ------------------------------------------------------------------------------------------------
// A short load through the public API.

/// What a short load did, to compare with the metrics.
struct Load {
    accepted: u64,
    coupons: u64,
    review: u64,
}

async fn funnel(c: &reqwest::Client, base: &str, body: Value) {
    let resp = c.post(format!("{base}/api/v1/funnel")).json(&body).send().await.expect("funnel");
    assert_eq!(resp.status().as_u16(), 204, "{body}");
}

/// Admits one visitor, submits `valid` applications for registry children and one for a child who
/// is not in the registry, reports funnel steps, and waits until everything settled.
async fn short_load(c: &reqwest::Client, base: &str, data_dir: &Path, valid: usize) -> Load {
    let registry = read_registry(&data_dir.join("registry.csv"));
    let fams = families(&registry, chrono::Utc::now().date_naive());
    assert!(fams.len() > valid, "registry too small");
    let pass = admit(c, base).await;
    let mut submitted = Vec::new();
    for (g, child) in fams.iter().take(valid) {
        funnel(c, base, json!({"step": "form_started", "lang": "ja"})).await;
        let (code, body) = submit(c, base, &pass, form(&application_json(g, child), png_document())).await;
        assert_eq!(code, 202, "{body}");
        submitted.push(body);
    }
    let mut stranger = application_json(&fams[valid].0, &fams[valid].1);
    stranger["child"]["given_name"] = json!("存在");
    stranger["child"]["given_name_kana"] = json!("ソンザイシナイ");
    let (code, body) = submit(c, base, &pass, form(&stranger, png_document())).await;
    assert_eq!(code, 202, "{body}");
    submitted.push(body);
    funnel(c, base, json!({"step": "error", "error_code": "document_too_large", "lang": "en"})).await;
    let mut load = Load { accepted: submitted.len() as u64, coupons: 0, review: 0 };
    for body in &submitted {
        let (id, token) = (body["application_id"].as_str().expect("id"), body["status_token"].as_str().expect("token"));
        let settled = wait_settled(c, base, id, token, Duration::from_secs(30)).await;
        match settled["status"].as_str() {
            Some("coupon_issued") => load.coupons += 1,
            Some("needs_review") => load.review += 1,
            other => panic!("unexpected status {other:?}: {settled}"),
        }
    }
    assert_eq!(load.review, 1, "exactly the stranger goes to review");
    load
}

// ------------------------------------------------------------------------------------------------
// (2) Prometheus scrapes the running system.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_launch_day_series_from_a_running_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = System::start(dir.path(), &["--households", "300"]);
    let target = sys.staff.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(&target);
    let c = client();

    // Ready from the first probe: the status store answers.
    let (code, _) = blocking_get(&format!("{}/readyz", sys.base)).expect("readyz");
    assert_eq!(code, 200);

    let load = short_load(&c, &sys.base, dir.path(), 3).await;

    let accepted = prom
        .eventually(&c, "sum(kyufu_intake_applications_accepted_total)", |v| v >= load.accepted as f64)
        .await;
    assert_eq!(accepted, load.accepted as f64, "every 202 counted once");
    prom.eventually(&c, r#"kyufu_intake_applications_accepted_total{replay="true"}"#, |v| v == 0.0).await;
    prom.eventually(&c, "kyufu_gateway_admitted_total", |v| v >= 1.0).await;
    prom.eventually(&c, "kyufu_gateway_passes_issued_total", |v| v >= 1.0).await;
    prom.eventually(&c, "kyufu_gateway_queue_wait_seconds_count", |v| v >= 1.0).await;
    prom.eventually(&c, "kyufu_gateway_active_sessions", |v| v >= 1.0).await;
    let coupons = prom.eventually(&c, "kyufu_pipeline_coupons_issued_total", |v| v >= load.coupons as f64).await;
    assert_eq!(coupons, load.coupons as f64);
    assert!(coupons > 0.0);
    prom.eventually(&c, "process_resident_memory_bytes", |v| v > 1_000_000.0).await;
    prom.eventually(&c, r#"up{job="kyufu-all-in-one"}"#, |v| v == 1.0).await;
    prom.eventually(&c, "kyufu_ready", |v| v == 1.0).await;
    prom.eventually(&c, r#"kyufu_dependency_up{dependency="status_store"}"#, |v| v == 1.0).await;
    prom.eventually(&c, r#"kyufu_dependency_up{dependency="queue_state"}"#, |v| v == 1.0).await;
    // The status-store monitor runs every 5 s.
    prom.eventually(&c, "kyufu_review_backlog_applications", |v| v == load.review as f64).await;
    prom.eventually(&c, r#"kyufu_status_applications{status="coupon_issued"}"#, |v| v == load.coupons as f64).await;
    prom.eventually(&c, "kyufu_review_oldest_age_seconds", |v| (0.0..600.0).contains(&v)).await;
    prom.eventually(&c, r#"kyufu_funnel_steps_total{step="form_started"}"#, |v| v == 3.0).await;
    prom.eventually(&c, r#"kyufu_funnel_steps_total{step="error",error_code="document_too_large"}"#, |v| v == 1.0).await;
    prom.eventually(&c, r#"sum(kyufu_intake_status_lookups_total{outcome="coupon_issued"})"#, |v| v >= 1.0).await;
    prom.eventually(&c, r#"sum(kyufu_pipeline_messages_processed_total{stage="dedupe"})"#, |v| v == load.accepted as f64).await;
    prom.eventually(&c, "sum(kyufu_pipeline_dead_letters_total)", |v| v == 0.0).await;
    // The recording rules load and evaluate on the real series.
    prom.eventually(&c, r#"kyufu:status_applications:max{status="needs_review"}"#, |v| v == load.review as f64).await;
    prom.eventually(&c, "kyufu:gateway_queue_length:sum", |v| v == 0.0).await;
    // No label carries an id or a name: label values of kyufu series are short ASCII words.
    let series = prom.query(&c, r#"{__name__=~"kyufu_.+"}"#).await;
    assert!(series.len() > 50, "{} series", series.len());
    for (labels, _) in &series {
        for (k, v) in labels.iter().filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job" | "role")) {
            let looks_like_id = uuid::Uuid::parse_str(v).is_ok() || v.chars().filter(char::is_ascii_digit).count() > 8;
            assert!(v.len() <= 40 && v.is_ascii() && !looks_like_id, "{k}={v}");
        }
    }
    drop(prom);
}

// ------------------------------------------------------------------------------------------------
// (3) Dashboards and rules name only metrics that exist.

/// Metric names in a PromQL expression: identifiers that are not functions, aggregations,
/// keywords, label names or values, durations, numbers or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
        "quantile", "inf", "nan", "atan2",
    ];
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    let s: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening delimiter at `i` past its closing one, stepping over quoted strings.
    let skip_group = |mut i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        while i < s.len() {
            match s[i] {
                '"' | '\'' | '`' => {
                    let q = s[i];
                    i += 1;
                    while i < s.len() && s[i] != q {
                        i += if s[i] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let next_non_ws = |mut j: usize| {
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < s.len() {
        let c = s[i];
        if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if matches!(c, '"' | '\'' | '`') {
            let mut j = i + 1;
            while j < s.len() && s[j] != c {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '$' || c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) {
            i += 1;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_' || s[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_' || s[i] == ':') {
                i += 1;
            }
            let ident: String = s[start..i].iter().collect();
            let next = next_non_ws(i);
            let followed_by_paren = s.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&ident.to_lowercase().as_str()) {
                if followed_by_paren {
                    i = skip_group(next, '(', ')');
                }
            } else if followed_by_paren || KEYWORDS.contains(&ident.to_lowercase().as_str()) {
                // a function or an aggregation keyword
            } else {
                out.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn metric_names_sees_only_metric_names() {
    let got = metric_names(
        r#"histogram_quantile(0.9, sum by (le, stage) (rate(kyufu_a_bucket{stage=~"$stage", x="b{c}"}[$__rate_interval])))
           / on(stage) group_left(role) kyufu:b:rate5m offset 5m > bool 1e3 unless max without (x) (kyufu_c) and vector(0)"#,
    );
    let want: BTreeSet<String> = ["kyufu_a_bucket", "kyufu:b:rate5m", "kyufu_c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
    assert_eq!(metric_names("kyufu_typo_total"), ["kyufu_typo_total".to_owned()].into());
}

/// Every sample name a live scrape shows (histograms show their `_bucket`, `_sum`, `_count`), and
/// the metric families (base names) with their `# TYPE`.
fn scraped_names(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut samples = BTreeSet::new();
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, families)
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rule of a rule file.
fn rules(path: &Path) -> Vec<serde_yaml::Value> {
    yaml(path)["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// Every `expr` string in a JSON document, with where it was found.
fn json_exprs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let here = m.get("title").and_then(Value::as_str).map_or(at.to_owned(), |t| format!("{at} / {t}"));
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("expr", Value::String(e)) => out.push((here.clone(), e.clone())),
                    _ => json_exprs(child, &here, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|child| json_exprs(child, at, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_name_only_exported_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = System::start(dir.path(), &["--households", "300"]);
    let c = client();
    short_load(&c, &sys.base, dir.path(), 2).await;
    let text = c.get(format!("{}/metrics", sys.staff)).send().await.expect("scrape").text().await.expect("text");
    let (samples, families) = scraped_names(&text);
    assert!(samples.contains("kyufu_gateway_queue_wait_seconds_bucket"), "histogram suffixes are seen");

    let prom_dir = repo().join("deploy/prometheus");
    let recording = rules(&prom_dir.join("recording.rules.yml"));
    let alerts = rules(&prom_dir.join("alerts.rules.yml"));
    let recorded: BTreeSet<String> =
        recording.iter().filter_map(|r| r["record"].as_str().map(str::to_owned)).collect();
    assert!(recorded.len() >= 15, "{recorded:?}");
    // What exists: scraped samples, recording rules, and the series Prometheus makes itself.
    let synthetic = ["up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"];
    let known: BTreeSet<String> =
        samples.iter().cloned().chain(recorded.iter().cloned()).chain(synthetic.map(str::to_owned)).collect();
    let mut unknown = Vec::new();
    let mut checked = BTreeSet::new();
    let mut check = |place: &str, expr: &str| {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in `{expr}`");
        for name in names {
            if !known.contains(&name) {
                unknown.push(format!("{place}: `{name}` in `{expr}`"));
            }
            checked.insert(name);
        }
    };

    // Rules.
    for r in recording.iter().chain(&alerts) {
        let name = r["record"].as_str().or(r["alert"].as_str()).unwrap_or("?");
        check(&format!("rule {name}"), r["expr"].as_str().unwrap_or_default());
    }
    // Every alert has a runbook section.
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).expect("docs/runbook.md");
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for a in &alerts {
        let name = a["alert"].as_str().expect("alert name");
        let url = a["annotations"]["runbook_url"].as_str().unwrap_or_default();
        assert_eq!(url, format!("docs/runbook.md#{}", name.to_lowercase()), "{name}");
        assert!(runbook.lines().any(|l| l == format!("### {name}")), "docs/runbook.md has no section `### {name}`");
        assert!(a["labels"]["severity"].as_str().is_some(), "{name} has no severity");
    }

    // Dashboards.
    let dash_dir = repo().join("deploy/grafana/dashboards");
    let mut titles = BTreeSet::new();
    let mut uids = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(&dash_dir).expect("dashboards dir").flatten().map(|e| e.path()).collect();
    files.sort();
    for path in &files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let title = d["title"].as_str().expect("title").to_owned();
        assert!(uids.insert(d["uid"].as_str().expect("uid").to_owned()), "duplicate uid in {}", path.display());
        let panels: Vec<&Value> = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
            .filter(|p| p["type"] != "row")
            .collect();
        assert!(panels.len() >= 6, "{title}: {} panels", panels.len());
        for p in &panels {
            let ptitle = p["title"].as_str().unwrap_or("?");
            assert_eq!(p["datasource"]["uid"], "kyufu-prometheus", "{title} / {ptitle}");
            let targets = p["targets"].as_array().map_or(0, Vec::len);
            assert!(targets > 0, "{title} / {ptitle} has no query");
        }
        let mut exprs = Vec::new();
        json_exprs(&d, &path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), &mut exprs);
        for (place, expr) in &exprs {
            check(place, expr);
        }
        for var in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = var["query"]["query"].as_str().or(var["query"].as_str()).unwrap_or_default();
            if let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')) {
                check(&format!("{title} / variable"), inner.0);
            }
        }
        titles.insert(title);
    }
    for want in ["kyufu — Launch day overview", "kyufu — Pipeline stages", "kyufu — Review"] {
        assert!(titles.contains(want), "no dashboard {want:?} in {titles:?}");
    }
    assert!(unknown.is_empty(), "queries name metrics that do not exist:\n{}", unknown.join("\n"));
    assert!(checked.len() >= 30, "only {} distinct metrics checked", checked.len());

    // Every kyufu metric family a process exports is in the runbook's metrics reference.
    for name in families.keys().filter(|n| n.starts_with("kyufu_")) {
        assert!(runbook.contains(&format!("`{name}`")), "docs/runbook.md does not describe {name}");
    }
}

// ------------------------------------------------------------------------------------------------
// The launch-day overview from a real run, rendered the way Grafana lays it out: every panel must
// show data. In `make test` a short rush (60 visitors, about a minute); with KYUFU_SNAPSHOT set,
// the three-minute launch the picture in docs/ is made from:
//
//   KYUFU_SNAPSHOT=/tmp/ops.html cargo test -p kyufu --test ops render
//   chromium --headless ... --screenshot=docs/screenshots/ops-overview.png file:///tmp/ops.html

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_launch_day_overview() {
    let snapshot = std::env::var_os("KYUFU_SNAPSHOT");
    let out = snapshot.clone().map_or_else(|| std::env::temp_dir().join(format!("kyufu-ops-overview-{}.html", std::process::id())), PathBuf::from);
    let dir = tempfile::tempdir().expect("tempdir");
    // Two admissions per second against a morning rush: a real queue builds and drains.
    let sys = System::start(dir.path(), &["--households", "2000", "--rate", "2", "--burst", "4"]);
    let prom = Prometheus::start(sys.staff.trim_start_matches("http://"));
    let c = client();
    let registry = read_registry(&dir.path().join("registry.csv"));
    let fams = Arc::new(families(&registry, chrono::Utc::now().date_naive()));
    // Prometheus applies new targets a few seconds after it starts; counting begins with its
    // first scrape, so the rush waits for it.
    prom.eventually(&c, r#"up{job="kyufu-all-in-one"}"#, |v| v == 1.0).await;
    let started = Instant::now();

    // The morning rush: 240 visitors in the first 40 s (three times the admission rate), then one
    // every 2 s for a minute while the line drains (for the picture); 50 in 8 s, then 10 more, for
    // the test.
    let (rush, all) = if snapshot.is_some() { (240usize, 270usize) } else { (50, 60) };
    let mut visitors = Vec::new();
    for i in 0..all {
        let gap = if i < rush { 166 } else { 2_000 };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let (c, base, fams) = (c.clone(), sys.base.clone(), fams.clone());
        visitors.push(tokio::spawn(async move { visitor(i, &c, &base, &fams).await }));
    }
    for v in visitors {
        v.await.expect("visitor");
    }
    // Let the last decisions, the monitor and a few scrapes land.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let window = started.elapsed();

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboards/launch-day-overview.json")).expect("dashboard"),
    )
    .expect("json");
    let html = render(&c, &prom, &dash, window).await;
    assert!(html.contains("queue_joined"), "the funnel was rendered");
    std::fs::write(&out, html).expect("write snapshot");
    println!("launch-day overview written to {}", out.display());
    if snapshot.is_none() {
        let _ = std::fs::remove_file(&out);
    }
}

/// One visitor: join, poll until admitted, walk the form (some leave or hit an error on the way),
/// submit, look the application up.
async fn visitor(i: usize, c: &reqwest::Client, base: &str, fams: &[(Resident, Resident)]) {
    let lang = if i.is_multiple_of(5) { "en" } else { "ja" };
    let step = |s: &str| json!({"step": s, "lang": lang});
    let joined: Value = c.post(format!("{base}/queue/join")).send().await.expect("join").json().await.expect("json");
    funnel(c, base, step("queue_joined")).await;
    let mut ticket = joined["ticket"].as_str().unwrap_or_default().to_owned();
    let mut answer = joined;
    while answer["state"] != "admitted" {
        let wait = answer["refresh_after_seconds"].as_u64().unwrap_or(2).clamp(1, 3);
        tokio::time::sleep(Duration::from_secs(wait)).await;
        answer = c
            .get(format!("{base}/queue/status"))
            .header("X-Queue-Ticket", &ticket)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        ticket = answer["ticket"].as_str().unwrap_or(&ticket).to_owned();
    }
    let pass = answer["pass"].as_str().unwrap_or_default().to_owned();
    funnel(c, base, step("admitted")).await;
    // Form steps take a moment each; some visitors give up on the way, most often at the upload.
    let steps = ["form_started", "guardian_done", "child_done", "upload_started", "upload_done", "confirm_shown"];
    let leaves_after = match i % 13 {
        2 => Some("form_started"),
        5 | 9 => Some("upload_started"),
        11 => Some("confirm_shown"),
        _ => None,
    };
    for s in steps {
        tokio::time::sleep(Duration::from_millis(300 + (i as u64 * 37) % 500)).await;
        funnel(c, base, step(s)).await;
        if s == "upload_started" && i % 13 == 5 {
            funnel(c, base, json!({"step": "error", "error_code": "document_too_large", "lang": lang})).await;
        }
        if s == "upload_started" && i % 13 == 9 {
            funnel(c, base, json!({"step": "error", "error_code": "unsupported_document_type", "lang": lang})).await;
        }
        if leaves_after == Some(s) {
            return;
        }
    }
    let (g, child) = &fams[i % fams.len()];
    let mut app = application_json(g, child);
    if i % 8 == 5 {
        app["child"]["given_name_kana"] = json!("ソンザイシナイ"); // not in the registry: review
    }
    let (code, body) = submit(c, base, &pass, form(&app, png_document())).await;
    if code != 202 {
        funnel(c, base, json!({"step": "error", "error_code": body["code"].as_str().unwrap_or("internal"), "lang": lang})).await;
        return;
    }
    funnel(c, base, step("submitted")).await;
    let (id, token) = (body["application_id"].as_str().unwrap_or_default(), body["status_token"].as_str().unwrap_or_default());
    wait_settled(c, base, id, token, Duration::from_secs(60)).await;
}

// ------------------------------------------------------------------------------------------------
// Rendering the dashboard as static HTML with inline SVG.

async fn query_range(c: &reqwest::Client, prom: &Prometheus, q: &str, window: Duration) -> Vec<(String, Vec<(f64, f64)>)> {
    let end = chrono::Utc::now().timestamp() as f64;
    let start = end - window.as_secs_f64();
    let resp: Value = c
        .get(format!("{}/api/v1/query_range", prom.base))
        .query(&[("query", q), ("start", &start.to_string()), ("end", &end.to_string()), ("step", "2")])
        .send()
        .await
        .expect("query_range")
        .json()
        .await
        .expect("json");
    assert_eq!(resp["status"], "success", "{q}: {resp}");
    resp["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let labels = r["metric"].as_object().cloned().unwrap_or_default();
            let points = r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()? - start, p[1].as_str()?.parse::<f64>().ok()?)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            (legend_of(&labels), points)
        })
        .collect()
}

/// The series' labels as `k=v k=v` (without the metric name).
fn legend_of(labels: &serde_json::Map<String, Value>) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Grafana's legend format (`{{label}}`) filled from `legend_of`; without a format, the labels
/// that tell series apart (not the target's job, instance and role).
fn fill_legend(format: &str, labels_text: &str) -> String {
    if format.is_empty() || format == "__auto" {
        let own = labels_text.split(' ').filter(|kv| !["job=", "instance=", "role="].iter().any(|p| kv.starts_with(p)));
        return own.collect::<Vec<_>>().join(" ");
    }
    let mut out = format.to_owned();
    for pair in labels_text.split(' ') {
        if let Some((k, v)) = pair.split_once('=') {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
    }
    // Labels the series lacks (e.g. role on a synthetic series) disappear.
    while let (Some(a), Some(b)) = (out.find("{{"), out.find("}}")) {
        if b < a {
            break;
        }
        out.replace_range(a..b + 2, "");
    }
    out.trim().to_owned()
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "s" if v >= 3600.0 => format!("{:.1} h", v / 3600.0),
        "s" if v >= 60.0 => format!("{:.1} min", v / 60.0),
        "s" if v >= 1.0 => format!("{v:.1} s"),
        "s" => format!("{:.0} ms", v * 1000.0),
        "percentunit" => format!("{:.1}%", v * 100.0),
        "bytes" => format!("{:.0} MiB", v / 1_048_576.0),
        "reqps" => format!("{v:.2}/s"),
        _ if v.fract() == 0.0 || v.abs() >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const COLOURS: &[&str] = &["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#b877d9", "#f2495c", "#8ab8ff", "#fade2a"];

fn sparkline(points: &[(f64, f64)], window: f64, w: f64, h: f64, colour: &str) -> String {
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
    let path: Vec<String> =
        points.iter().map(|(t, v)| format!("{:.1},{:.1}", t / window * w, h - v / max * (h - 2.0))).collect();
    format!(r#"<svg width="{w}" height="{h}"><polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/></svg>"#, path.join(" "))
}

async fn render(c: &reqwest::Client, prom: &Prometheus, dash: &Value, window: Duration) -> String {
    let secs = window.as_secs_f64();
    // `$__range` covers the whole run and a little before it, so counters are counted from zero.
    let range = format!("{}s", window.as_secs() + 30);
    let mut cells = String::new();
    let mut empty = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        let (x, y, w, h) = (
            p["gridPos"]["x"].as_u64().unwrap_or(0),
            p["gridPos"]["y"].as_u64().unwrap_or(0),
            p["gridPos"]["w"].as_u64().unwrap_or(24),
            p["gridPos"]["h"].as_u64().unwrap_or(1),
        );
        let style = format!("grid-column:{} / span {w};grid-row:{} / span {h};", x + 1, y + 1);
        let title = esc(p["title"].as_str().unwrap_or(""));
        let kind = p["type"].as_str().unwrap_or("");
        if kind == "row" {
            cells += &format!(r#"<div class="row" style="{style}">{title}</div>"#);
            continue;
        }
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("short");
        let mut series = Vec::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or("").replace("$__rate_interval", "15s").replace("$__range", &range);
            let legend = t["legendFormat"].as_str().unwrap_or("");
            for (labels, points) in query_range(c, prom, &expr, window).await {
                let name = fill_legend(legend, &labels);
                series.push((if name.is_empty() { "(none)".to_owned() } else { name }, points));
            }
        }
        if series.iter().all(|(_, pts)| pts.is_empty()) {
            empty.push(p["title"].as_str().unwrap_or("?").to_owned());
        }
        let body = match kind {
            "stat" => {
                let last = series.first().and_then(|(_, pts)| pts.last()).map_or(f64::NAN, |p| p.1);
                let mapped = p["fieldConfig"]["defaults"]["mappings"][0]["options"][format!("{last}")]["text"].as_str();
                let steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"].as_array().cloned().unwrap_or_default();
                let colour = steps
                    .iter()
                    .rfind(|s| s["value"].as_f64().is_none_or(|v| last >= v))
                    .and_then(|s| s["color"].as_str())
                    .unwrap_or("green");
                let colour = match colour {
                    "green" => "#37872d",
                    "red" => "#c4162a",
                    other => other,
                };
                let text = mapped.map_or_else(|| if last.is_nan() { "–".to_owned() } else { fmt_value(last, unit) }, str::to_owned);
                let spark = series.first().map_or(String::new(), |(_, pts)| sparkline(pts, secs, 150.0, 26.0, "#ffffff88"));
                format!(r#"<div class="stat" style="background:{colour}"><div class="big">{}</div>{spark}</div>"#, esc(&text))
            }
            "bargauge" => {
                let mut bars: Vec<(String, f64)> =
                    series.iter().map(|(l, pts)| (l.clone(), pts.last().map_or(0.0, |p| p.1))).collect();
                let order = ["queue_joined", "admitted", "form_started", "guardian_done", "child_done", "upload_started", "upload_done", "confirm_shown", "submitted", "error"];
                bars.sort_by_key(|(l, _)| order.iter().position(|o| o == l).unwrap_or(99));
                let max = bars.iter().map(|b| b.1).fold(1.0, f64::max);
                bars.iter()
                    .map(|(l, v)| {
                        format!(
                            r#"<div class="bar"><span class="bl">{}</span><span class="bt"><span class="bf" style="width:{:.1}%"></span></span><span class="bv">{:.0}</span></div>"#,
                            esc(l),
                            v / max * 100.0,
                            v
                        )
                    })
                    .collect()
            }
            _ => {
                let (cw, ch) = (w as f64 * 52.0 - 20.0, h as f64 * 30.0 - 70.0);
                // The right-axis overrides of the dashboard: a regex on the series name and a unit.
                let right_unit: Vec<Option<String>> = series
                    .iter()
                    .map(|(l, _)| {
                        p["fieldConfig"]["overrides"].as_array().into_iter().flatten().find_map(|o| {
                            let re = o["matcher"]["options"].as_str().unwrap_or("");
                            let hit = (re == ".*/s" && l.ends_with("/s")) || re == l;
                            let unit = o["properties"].as_array()?.iter().find(|p| p["id"] == "unit")?["value"].as_str()?;
                            hit.then(|| unit.to_owned())
                        })
                    })
                    .collect();
                let right: Vec<bool> = right_unit.iter().map(Option::is_some).collect();
                let max_of = |side: bool| {
                    series
                        .iter()
                        .zip(&right)
                        .filter(|(_, r)| **r == side)
                        .flat_map(|((_, pts), _)| pts.iter().map(|p| p.1))
                        .fold(0.0_f64, f64::max)
                        .max(1e-9)
                };
                let (lmax, rmax) = (max_of(false), max_of(true));
                let mut svg = format!(r##"<svg width="{cw}" height="{ch}"><rect width="100%" height="100%" fill="#181b1f"/>"##);
                for k in 1..4 {
                    let gy = ch * k as f64 / 4.0;
                    svg += &format!(r##"<line x1="0" x2="{cw}" y1="{gy}" y2="{gy}" stroke="#2c3235"/>"##);
                }
                let mut legend = String::new();
                for (n, ((label, pts), on_right)) in series.iter().zip(&right).enumerate() {
                    let colour = COLOURS[n % COLOURS.len()];
                    let max = if *on_right { rmax } else { lmax };
                    let pts: Vec<String> = pts
                        .iter()
                        .map(|(t, v)| format!("{:.1},{:.1}", t / secs * cw, ch - v / max * (ch - 4.0)))
                        .collect();
                    svg += &format!(r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"#, pts.join(" "));
                    let series_unit = right_unit[n].as_deref().unwrap_or(unit);
                    let last = series[n].1.last().map_or(String::new(), |p| fmt_value(p.1, series_unit));
                    legend += &format!(r#"<span class="lg"><i style="background:{colour}"></i>{} <b>{}</b></span>"#, esc(label), esc(&last));
                }
                svg += &format!(
                    r##"<text x="4" y="12" fill="#8e8e8e" font-size="10">{}</text><text x="4" y="{}" fill="#8e8e8e" font-size="10">−{} s</text><text x="{}" y="{}" fill="#8e8e8e" font-size="10" text-anchor="end">now</text></svg>"##,
                    esc(&fmt_value(lmax, unit)),
                    ch - 3.0,
                    window.as_secs(),
                    cw - 4.0,
                    ch - 3.0
                );
                format!("{svg}<div class=\"legend\">{legend}</div>")
            }
        };
        cells += &format!(r#"<div class="panel" style="{style}"><div class="title">{title}</div>{body}</div>"#);
    }
    assert!(empty.is_empty(), "panels without data in a real run: {empty:?}");
    let title = esc(dash["title"].as_str().unwrap_or(""));
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{background:#111217;color:#d8d9da;font:12px system-ui,"Noto Sans CJK JP",sans-serif;margin:0;padding:8px}}
h1{{font-size:16px;margin:2px 4px 6px}} .sub{{color:#8e8e8e;font-size:11px;margin:0 4px 8px}}
.grid{{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:30px;gap:4px}}
.panel{{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:4px 6px;overflow:hidden}}
.title{{font-weight:600;margin-bottom:3px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
.row{{font-weight:600;font-size:13px;padding-top:10px;color:#ccccdc}}
.stat{{border-radius:3px;height:calc(100% - 20px);display:flex;flex-direction:column;justify-content:center;align-items:center}}
.big{{font-size:24px;font-weight:700;color:#fff}}
.legend{{display:flex;flex-wrap:wrap;gap:2px 10px;margin-top:3px}} .lg i{{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}}
.bar{{display:flex;align-items:center;gap:6px;margin:3px 0}} .bl{{width:110px;text-align:right;color:#ccccdc}}
.bt{{flex:1;background:#22252b;height:14px}} .bf{{display:block;height:14px;background:linear-gradient(90deg,#3274d9,#8ab8ff)}} .bv{{width:40px}}
</style></head><body><h1>{title}</h1><div class="sub">Rendered from Prometheus query results of a real all-in-one run: the last {} s, 1 s scrapes, the dashboard's own queries and recording rules.</div>
<div class="grid">{cells}</div></body></html>"##,
        window.as_secs()
    )
}
