//! `loadtest`: replays launch day against a running kyufu and proves nothing was lost. Parses the
//! command line, runs the replay (or re-checks an earlier ledger), prints the verdict and exits
//! non-zero when anything was lost, duplicated or mismatched.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use loadtest::plan::Mix;
use loadtest::profile::{Curve, Speedup, DAY_SECS};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Replays launch day against a running kyufu over HTTP and reconciles every accepted application",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Re-check the ledger of an earlier run against the system (e.g. after a restart).
    Reconcile {
        /// The ledger written by a run.
        #[arg(long, default_value = "loadtest-report/ledger.jsonl")]
        ledger: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Seconds to wait for applications that have not settled yet.
        #[arg(long, default_value_t = 60)]
        settle_timeout: u64,
    },
}

#[derive(Args)]
struct TargetArgs {
    /// Base URL of the deployment (gateway).
    #[arg(long, env = "LOADTEST_TARGET", default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Where the deployment serves `/metrics` (its staff or operations address; the all-in-one's
    /// staff port by default).
    #[arg(long, env = "LOADTEST_METRICS", default_value = "http://127.0.0.1:8090")]
    metrics: String,
    /// Allow a target outside this machine's loopback. Only for a deployment you own.
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProfileName {
    /// 70,000 over a day: 15 % in the first five minutes, 40 % in the first hour.
    LaunchDay,
    /// The same rate all day.
    Steady,
    /// A curve from --curve FILE.csv (header `start_s,end_s,weight`).
    Custom,
}

/// Which identity documents the visitors upload.
#[derive(Clone, Copy, ValueEnum)]
enum Documents {
    /// 32×32 images and 3 KB PDFs: the pipeline's own cost.
    Small,
    /// Phone photos of 5–12 megapixels (3–5 MB, EXIF with GPS, every orientation) and PDFs with
    /// object streams: what launch day really uploads.
    Camera,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Traffic profile.
    #[arg(long, value_enum, default_value_t = ProfileName::LaunchDay)]
    profile: ProfileName,
    /// CSV curve for `--profile custom`: `start_s,end_s,weight` rows, seconds since launch.
    #[arg(long)]
    curve: Option<PathBuf>,
    /// Applications to submit in total (correct, wrong and repeated ones together).
    #[arg(long, default_value_t = 70_000)]
    applications: u64,
    /// How many times faster than real time to replay (144 replays a day in 10 minutes).
    #[arg(long, default_value = "1")]
    speedup: Speedup,
    /// Length of the steady profile, seconds of profile time.
    #[arg(long, default_value_t = DAY_SECS)]
    steady_secs: f64,
    /// The target's resident registry CSV (applications are built from it).
    #[arg(long, default_value = "data/registry.csv")]
    registry: PathBuf,
    /// The target's eligibility reference date (defaults to today, as the system's does).
    #[arg(long)]
    reference_date: Option<chrono::NaiveDate>,
    /// The target's age limit.
    #[arg(long, default_value_t = 18)]
    age_limit: u32,
    /// Where the ledger, summary.json and report.html go.
    #[arg(long, default_value = "loadtest-report")]
    out: PathBuf,
    /// Seed of the plan (the same seed and registry give the same crowd).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of visitors who leave the queue without applying.
    #[arg(long, default_value_t = Mix::default().abandon)]
    abandon: f64,
    /// Share of applications sent twice with the same Idempotency-Key.
    #[arg(long, default_value_t = Mix::default().retry)]
    retry: f64,
    /// Share of visitors who also send a bad request.
    #[arg(long, default_value_t = Mix::default().bad_input)]
    bad_input: f64,
    /// Share of correct applications whose child is applied for twice.
    #[arg(long, default_value_t = Mix::default().duplicate)]
    duplicate: f64,
    /// Share of applications with a child that is not in the registry.
    #[arg(long, default_value_t = Mix::default().wrong)]
    wrong: f64,
    /// Shortest wait between two waiting-room polls of one visitor, seconds.
    #[arg(long, default_value_t = 1.0)]
    min_poll: f64,
    /// Seconds an accepted application may take to settle before it counts as lost.
    #[arg(long, default_value_t = 120)]
    settle_timeout: u64,
    /// Seconds the replay may run past the end of the compressed profile (queue drain).
    #[arg(long, default_value_t = 900)]
    drain_timeout: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Documents uploaded: `small` (tiny images and PDFs) or `camera` (phone photos with EXIF/GPS
    /// in varied sizes and orientations, PDFs with object streams).
    #[arg(long, value_enum, default_value_t = Documents::Small)]
    documents: Documents,
}

fn config(a: RunArgs) -> anyhow::Result<loadtest::Config> {
    if matches!(a.documents, Documents::Camera) {
        let set = loadtest::photos::use_camera_documents();
        let mean = set.photos.iter().map(Vec::len).sum::<usize>() / set.photos.len().max(1);
        eprintln!("loadtest: camera documents: {} photos (mean {} bytes, EXIF/GPS), {} PDFs with object streams", set.photos.len(), mean, set.pdfs.len());
    }
    let (profile_name, curve) = match a.profile {
        ProfileName::LaunchDay => ("launch-day".to_owned(), Curve::launch_day()),
        ProfileName::Steady => ("steady".to_owned(), Curve::steady(a.steady_secs).map_err(|e| anyhow::anyhow!("--steady-secs: {e}"))?),
        ProfileName::Custom => {
            let path = a.curve.as_ref().ok_or_else(|| anyhow::anyhow!("--profile custom needs --curve FILE.csv"))?;
            let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("--curve {}: {e}", path.display()))?;
            let curve = Curve::from_csv(file).map_err(|e| anyhow::anyhow!("--curve {}: {e}", path.display()))?;
            (format!("custom ({})", path.display()), curve)
        }
    };
    if a.curve.is_some() && !matches!(a.profile, ProfileName::Custom) {
        anyhow::bail!("--curve is only used with --profile custom");
    }
    anyhow::ensure!(a.applications > 0, "--applications must be at least 1");
    anyhow::ensure!(a.min_poll.is_finite() && (0.05..=60.0).contains(&a.min_poll), "--min-poll must be between 0.05 and 60 seconds");
    anyhow::ensure!(a.settle_timeout > 0, "--settle-timeout must be at least 1");
    let mix = Mix { abandon: a.abandon, retry: a.retry, bad_input: a.bad_input, duplicate: a.duplicate, wrong: a.wrong, ..Mix::default() };
    mix.validate().map_err(anyhow::Error::msg)?;
    Ok(loadtest::Config {
        target: a.target.target,
        metrics: a.target.metrics,
        allow_remote: a.target.allow_remote,
        profile_name: match a.documents {
            Documents::Small => profile_name,
            Documents::Camera => format!("{profile_name}, camera documents"),
        },
        curve,
        applications: a.applications,
        speedup: a.speedup,
        registry: a.registry,
        reference_date: a.reference_date.unwrap_or_else(|| chrono::Local::now().date_naive()),
        age_limit: a.age_limit,
        out_dir: a.out,
        seed: a.seed,
        mix,
        min_poll: Duration::from_secs_f64(a.min_poll),
        settle_timeout: Duration::from_secs(a.settle_timeout),
        drain_timeout: Duration::from_secs(a.drain_timeout),
        progress: !a.quiet,
    })
}

async fn main_inner(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Some(Command::Reconcile { ledger, target, settle_timeout }) => {
            let r = loadtest::reconcile_ledger(&target.target, target.allow_remote, &ledger, Duration::from_secs(settle_timeout)).await?;
            println!("accepted {} settled {} lost {} duplicated {} mismatched {}", r.accepted, r.settled, r.lost.len(), r.duplicated.len(), r.mismatched.len());
            let statuses: Vec<String> = r.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("statuses: {}", statuses.join(", "));
            for f in r.lost.iter().chain(&r.duplicated).chain(&r.mismatched).take(20) {
                println!("  {}: {}", f.application_id.map(|i| i.to_string()).unwrap_or_default(), f.what);
            }
            Ok(r.passed())
        }
        None => {
            let cfg = config(cli.run)?;
            let out = cfg.out_dir.clone();
            eprintln!(
                "loadtest: {} applications, profile {}, speedup {}x ({:.0} s), target {}",
                cfg.applications,
                cfg.profile_name,
                cfg.speedup.factor(),
                cfg.speedup.wall(cfg.curve.duration()).as_secs_f64(),
                cfg.target
            );
            let outcome = loadtest::run(cfg).await?;
            print!("{}", loadtest::report::text(&outcome.summary));
            println!("report       : {}", out.join("report.html").display());
            Ok(outcome.passed())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main_inner(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
