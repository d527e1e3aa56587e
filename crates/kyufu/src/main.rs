//! The `kyufu` binary: one composition root per role. `main` parses and validates configuration,
//! sets up telemetry, binds sockets and hands them to the libraries' `run` functions; bad
//! configuration exits non-zero, naming the setting, before any socket opens.
#![forbid(unsafe_code)]

mod admin;
mod all_in_one;
mod backends;
mod eval;
mod roles;
mod secrets;
mod storage_metrics;
mod timed;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kyufu_domain::Program;

#[derive(Parser)]
#[command(name = "kyufu", version, about = "Benefit intake with a virtual waiting room")]
struct Cli {
    /// Log format: `text` for people, `json` for log shippers.
    #[arg(long, global = true, env = "KYUFU_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system in one process with embedded storage (what `make run` starts).
    AllInOne(all_in_one::AllInOneArgs),
    /// The waiting-room gateway alone, proxying to an intake.
    Gateway(roles::GatewayArgs),
    /// The intake service alone.
    Intake(roles::IntakeArgs),
    /// One pipeline stage: `worker dedupe`, `worker documents`, `worker idcheck`, `worker coupon` or
    /// `worker notify`.
    Worker(roles::WorkerArgs),
    /// The staff review console alone.
    Review(roles::ReviewArgs),
    /// Operators' controls of the waiting room (pause, resume, rate, message, queue-everyone, fail-open, session cap, opening).
    Admin(admin::AdminArgs),
    /// Measures the automatic triage on a labelled synthetic day; prints the confusion matrix.
    EvalTriage(eval::EvalArgs),
    /// Health probe for containers without curl: GET the URL, exit 0 on a 2xx answer.
    Probe {
        /// e.g. `http://127.0.0.1:8081/readyz`.
        url: String,
    },
    /// Resident registry tools.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Makes a review console account entry `NAME:<argon2id hash>` for `KYUFU_REVIEWERS` (entries
    /// separated by newlines or `;`). Reads the password (12 characters or more) from the first
    /// line of standard input, or makes one with `--generate` and prints it on standard error.
    ReviewerEntry {
        /// The reviewer's login name: letters, digits, '-', '_' or '.'.
        name: String,
        /// Make a random password instead of reading one.
        #[arg(long)]
        generate: bool,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Writes a deterministic synthetic registry as CSV.
    Generate {
        /// Output CSV path.
        #[arg(long)]
        out: PathBuf,
        /// Number of households.
        #[arg(long, default_value_t = 2_000)]
        households: usize,
        /// Random seed; the same seed gives the same registry.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        program: ProgramArgs,
    },
}

/// The benefit program this deployment serves.
#[derive(Args, Clone)]
pub struct ProgramArgs {
    /// Program id, used in keys, tickets and passes.
    #[arg(long, env = "KYUFU_PROGRAM_ID", default_value = "rice-demo")]
    pub program_id: String,
    /// Reference date for eligibility (YYYY-MM-DD); defaults to the day the system starts.
    #[arg(long, env = "KYUFU_REFERENCE_DATE")]
    pub reference_date: Option<chrono::NaiveDate>,
    /// Age limit: children younger than this on the reference date are eligible.
    #[arg(long, env = "KYUFU_AGE_LIMIT", default_value_t = 18)]
    pub age_limit: u32,
}

impl ProgramArgs {
    pub fn program(&self) -> Program {
        let mut p = Program::demo(self.reference_date.unwrap_or_else(|| chrono::Local::now().date_naive()));
        p.id.clone_from(&self.program_id);
        p.age_limit = self.age_limit;
        p
    }
}

fn reviewer_entry(name: &str, generate: bool) -> anyhow::Result<()> {
    let password = if generate {
        let bytes: [u8; 12] = rand::random();
        let p: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("password for {name}: {p}");
        p
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    let entry = kyufu_review::auth::password_entry(name, &password).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{entry}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => kyufu_telemetry::LogFormat::Text,
        LogFormat::Json => kyufu_telemetry::LogFormat::Json,
    };
    kyufu_telemetry::init_tracing(format, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kyufu: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::AllInOne(args) => all_in_one::run(args).await,
            Command::Gateway(args) => roles::gateway(args).await,
            Command::Intake(args) => roles::intake(args).await,
            Command::Worker(args) => roles::worker(args).await,
            Command::Review(args) => roles::review(args).await,
            Command::Probe { url } => {
                let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build()?;
                let status = client.get(&url).send().await?.status();
                anyhow::ensure!(status.is_success(), "{url} answered {status}");
                Ok(())
            }
            Command::EvalTriage(args) => eval::run(args).await,
            Command::ReviewerEntry { name, generate } => reviewer_entry(&name, generate),
            Command::Admin(args) => admin::run(args).await,
            Command::Registry(RegistryCommand::Generate { out, households, seed, program }) => {
                let registry = all_in_one::generate_registry(&program.program(), households, seed);
                registry.write_path(&out)?;
                println!("wrote {} residents in {} households to {}", registry.len(), households, out.display());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kyufu: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
