//! The launch-day load tester. It replays a day of applications against a running kyufu over its
//! public HTTP contract only (waiting room, submission, status lookup, `/metrics`), as a crowd of
//! realistic visitors planned from the target's resident registry, writes a ledger of every
//! accepted application, and at the end reconciles the ledger against the system: nothing lost,
//! nothing duplicated, every outcome the one the plan made certain. The figures go to
//! `summary.json` and a self-contained `report.html`.
//!
//! ```text
//! plan (registry + curve + seed) ──► visitors (join, poll, submit, poll status) ──► ledger.jsonl
//!                                        │                                           │
//!              /metrics every second ────┤                          sweep every id ◄─┘
//!                                        ▼                                 │
//!                                  report.html, summary.json ◄── reconciliation
//! ```
#![forbid(unsafe_code)]

pub mod ledger;
pub mod metrics;
pub mod photos;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod stats;
pub mod svg;
pub mod target;
pub mod visitor;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use tokio::sync::{mpsc, watch};

use crate::ledger::{LedgerEntry, LedgerWriter};
use crate::plan::Mix;
use crate::profile::{Curve, Speedup};
use crate::reconcile::Reconciliation;
use crate::report::Summary;
use crate::visitor::{Ctx, Live, VisitorRecord};

/// A run, fully decided.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL, as the user gave it (checked by `target::check`).
    pub target: String,
    /// Base URL where the target serves `/metrics`: its staff or operations address (the public
    /// port never serves metrics).
    pub metrics: String,
    pub allow_remote: bool,
    pub profile_name: String,
    pub curve: Curve,
    pub applications: u64,
    pub speedup: Speedup,
    pub registry: PathBuf,
    pub reference_date: NaiveDate,
    pub age_limit: u32,
    pub out_dir: PathBuf,
    pub seed: u64,
    pub mix: Mix,
    /// Shortest wait between two waiting-room polls of one visitor.
    pub min_poll: Duration,
    /// How long an accepted application may take to settle before it counts as lost.
    pub settle_timeout: Duration,
    /// How long the replay may run past the end of the (compressed) profile before visitors stop.
    pub drain_timeout: Duration,
    pub progress: bool,
}

/// The result of a run: the summary (also written to disk) and whether it passed.
pub struct Outcome {
    pub summary: Summary,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.summary.verdict == "pass"
    }
}

/// An HTTP client for the crowd: pooled connections, bounded timeouts.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

/// CPU seconds this process used so far (Linux; `None` elsewhere). Assumes the usual 100 ticks/s.
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Fails with advice when nothing answers at `base`.
pub async fn probe(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let resp = client.get(format!("{base}/healthz")).timeout(Duration::from_secs(5)).send().await;
    match resp {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => anyhow::bail!("{base}/healthz answered {}; is this a kyufu deployment?", r.status()),
        Err(e) => anyhow::bail!("nothing answers at {base} ({e}); start the system first (`make run`) or pass --target"),
    }
}

/// `kyufu_intake_applications_accepted_total` of the target, if it exposes it.
async fn accepted_so_far(client: &reqwest::Client, base: &str) -> Option<f64> {
    let text = client.get(format!("{base}/metrics")).timeout(Duration::from_secs(5)).send().await.ok()?.text().await.ok()?;
    let samples = metrics::parse(&text);
    let accepted: Vec<f64> = samples.iter().filter(|s| s.name == "kyufu_intake_applications_accepted_total").map(|s| s.value).collect();
    (!accepted.is_empty()).then(|| accepted.iter().sum())
}

/// Replays the plan against the target and reconciles; writes `ledger.jsonl`, `summary.json` and
/// `report.html` into the output directory.
pub async fn run(cfg: Config) -> anyhow::Result<Outcome> {
    let base = target::check(&cfg.target, cfg.allow_remote).map_err(anyhow::Error::msg)?;
    let registry = kyufu_registry::Registry::load_path(&cfg.registry)
        .with_context(|| format!("loading the target's resident registry {}", cfg.registry.display()))?;
    let plan = plan::build(&registry, cfg.reference_date, cfg.age_limit, cfg.applications, &cfg.curve, cfg.mix, cfg.seed)
        .map_err(anyhow::Error::msg)?;
    drop(registry);
    std::fs::create_dir_all(&cfg.out_dir).with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let client = client()?;
    probe(&client, &base).await?;

    let metrics_base = cfg.metrics.trim_end_matches('/').to_owned();
    let accepted_before = accepted_so_far(&client, &metrics_base).await;
    if let Some(n) = accepted_before.filter(|n| *n > 0.0) {
        eprintln!(
            "loadtest: warning: the target has already accepted {n:.0} applications; children applied for before \
             will settle as `duplicate` and show up as mismatched. Replay against a fresh system for a clean verdict."
        );
    }
    let started_at = chrono::Utc::now();
    let start = Instant::now();
    let cpu_before = own_cpu_seconds();
    let profile_wall = cfg.speedup.wall(cfg.curve.duration());
    let hard_deadline = start + profile_wall + cfg.drain_timeout;

    // The ledger is written by one blocking task as acceptances arrive.
    let (ledger_tx, mut ledger_rx) = mpsc::unbounded_channel::<LedgerEntry>();
    let mut writer = LedgerWriter::create(&cfg.out_dir.join("ledger.jsonl"))?;
    let ledger_task = tokio::task::spawn_blocking(move || {
        let mut entries = Vec::new();
        let mut error = None;
        while let Some(e) = ledger_rx.blocking_recv() {
            if error.is_none() {
                error = writer.append(&e).err();
            }
            entries.push(e);
        }
        (entries, error)
    });

    let snapshots = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(metrics::sample(client.clone(), format!("{metrics_base}/metrics"), start, Duration::from_secs(1), snapshots.clone(), stop_rx));

    let live = Arc::new(Live::default());
    let pb = progress::bar(cfg.applications, cfg.progress);
    let progress_task = tokio::spawn(progress::drive(pb.clone(), live.clone(), snapshots.clone()));

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        base: base.clone(),
        speedup: cfg.speedup,
        min_poll: cfg.min_poll,
        start,
        settle_timeout: cfg.settle_timeout,
        hard_deadline,
        ledger: ledger_tx,
        live: live.clone(),
    });
    let planned_visitors = plan.visitors.len();
    let mut tasks = tokio::task::JoinSet::new();
    let mut records: Vec<VisitorRecord> = Vec::with_capacity(planned_visitors);
    for v in plan.visitors {
        let at = start + cfg.speedup.wall(v.arrival);
        if at >= hard_deadline {
            break;
        }
        // Collect finished visitors while waiting, so memory follows the crowd, not the day.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(r) = done { records.push(r) }
                }
            }
        }
        tasks.spawn(visitor::visit(ctx.clone(), v));
    }
    drop(ctx);
    // Visitors stop by themselves at the hard deadline; a last margin for in-flight requests.
    let give_up_at = hard_deadline + Duration::from_secs(90);
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Ok(r)) => records.push(r),
                Some(Err(_)) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(give_up_at.into()) => {
                tasks.abort_all();
                while let Some(done) = tasks.join_next().await {
                    if let Ok(r) = done { records.push(r) }
                }
                break;
            }
        }
    }
    let (entries, ledger_error) = ledger_task.await.context("ledger writer")?;
    if let Some(e) = ledger_error {
        eprintln!("loadtest: warning: the ledger file is incomplete: {e:#}");
    }

    pb.set_message("checking every accepted application…");
    let observed = visitor::sweep(&client, &base, &entries, Instant::now() + cfg.settle_timeout, 32).await;
    let _ = stop_tx.send(true);
    let _ = sampler.await;
    pb.finish_and_clear();
    let _ = progress_task.await;
    let wall = start.elapsed().as_secs_f64();

    let retries: Vec<_> = records.iter().flat_map(|r| r.retry_checks.iter().cloned()).collect();
    let bad: Vec<_> = records.iter().filter_map(|r| r.bad_input.clone()).collect();
    let not_accepted: Vec<_> = records.iter().flat_map(|r| r.not_accepted.iter().cloned()).collect();
    let reconciliation: Reconciliation = reconcile::reconcile(&entries, &observed, &retries, &bad, &not_accepted);

    let snaps = snapshots.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (summary, raw) = report::summarize(report::Inputs {
        run: report::RunInfo {
            target: base,
            profile: cfg.profile_name.clone(),
            planned_applications: cfg.applications,
            planned_visitors,
            speedup: cfg.speedup.factor(),
            profile_duration_s: cfg.curve.duration(),
            seed: cfg.seed,
            registry: cfg.registry.display().to_string(),
            reference_date: cfg.reference_date.to_string(),
            started_at: started_at.to_rfc3339(),
            target_accepted_before: accepted_before,
            wall_time_s: wall,
        },
        records: &records,
        snapshots: &snaps,
        observed: &observed,
        reconciliation,
        tester_cpu_s: match (cpu_before, own_cpu_seconds()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
    });
    report::write(&cfg.out_dir, &summary, &raw)?;
    Ok(Outcome { summary })
}

/// Re-checks a ledger from an earlier run against the system (for example after a restart):
/// every accepted application must still be there, settled, with unique coupons.
pub async fn reconcile_ledger(target: &str, allow_remote: bool, ledger_path: &std::path::Path, settle_timeout: Duration) -> anyhow::Result<Reconciliation> {
    let base = target::check(target, allow_remote).map_err(anyhow::Error::msg)?;
    let entries = ledger::read(ledger_path)?;
    let client = client()?;
    probe(&client, &base).await?;
    let observed = visitor::sweep(&client, &base, &entries, Instant::now() + settle_timeout, 32).await;
    Ok(reconcile::reconcile(&entries, &observed, &[], &[], &[]))
}
