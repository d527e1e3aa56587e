//! One process per role: `kyufu gateway`, `kyufu intake`, `kyufu worker <stage>`. Each builds only
//! what its role needs and serves `/metrics`, `/healthz` and `/readyz`. Readiness follows the
//! role's dependency: the queue state for the gateway, the status store (probed by
//! `kyufu_intake::monitor`) for intake and the workers; only intake exports the application and
//! review gauges, so each series comes from one process.
//!
//! Storage here is the embedded store, which one process at a time may open: `intake` and `worker`
//! on the same data directory take turns (a second process is refused with a clear message). Run
//! several roles at once on Kafka, Redis and S3 (see the adapters issue); the gateway needs no
//! storage, and several gateway nodes share one queue with `--queue-state redis`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kyufu_intake::monitor::MonitorConfig;
use kyufu_intake::relay::RelayConfig;
use kyufu_intake::IntakeConfig;
use kyufu_pipeline::{PipelineDeps, StageKind, StageMetrics};
use kyufu_ports::events::topics;
use kyufu_registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::all_in_one::{shutdown_signal, stopped};
use crate::backends::{BackendArgs, QueueStateArgs};
use crate::ProgramArgs;

#[derive(Args)]
pub struct GatewayArgs {
    #[arg(long, env = "KYUFU_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Base URL of intake.
    #[arg(long, env = "KYUFU_UPSTREAM", default_value = "http://127.0.0.1:8081")]
    upstream: String,
    #[arg(long, env = "KYUFU_ADMIT_RATE", default_value_t = 50)]
    rate: u32,
    #[arg(long, env = "KYUFU_ADMIT_BURST", default_value_t = 100)]
    burst: u32,
    /// Refresh intervals without a poll after which a ticket near the front is skipped; 0 = never.
    #[arg(long, env = "KYUFU_EXPIRE_AFTER_POLLS", default_value_t = 3)]
    expire_after_polls: u32,
    /// Lowest fraction of the admission rate while intake is overloaded; 1 = never back off.
    #[arg(long, env = "KYUFU_BACKOFF_FLOOR", default_value_t = 0.1)]
    backoff_floor: f64,
    /// Joins per second from one client address (IPv6 /64), burst 10x; 0 = no limit.
    #[arg(long, env = "KYUFU_JOIN_LIMIT", default_value_t = 50)]
    join_limit: u32,
    /// Applications submitted per second from one client address, burst 10x; 0 = no limit.
    #[arg(long, env = "KYUFU_SUBMIT_LIMIT", default_value_t = 5)]
    submit_limit: u32,
    /// Status lookups per second from one client address, burst 10x; 0 = no limit.
    #[arg(long, env = "KYUFU_LOOKUP_LIMIT", default_value_t = 20)]
    lookup_limit: u32,
    #[command(flatten)]
    launch: LaunchArgs,
    #[command(flatten)]
    proxies: ProxyArgs,
    /// Staff address for the operators' admin API (`kyufu admin --url`); needs KYUFU_ADMIN_TOKEN.
    /// With several gateway nodes on a Redis queue, a change sent to one node reaches them all.
    #[arg(long, env = "KYUFU_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Operations address for Prometheus (`/metrics`, with `/healthz` and `/readyz`); the public
    /// `--listen` never serves metrics. Without it the gateway exports no metrics.
    #[arg(long, env = "KYUFU_OPS_LISTEN")]
    ops_listen: Option<SocketAddr>,
    /// Secrets file (tickets and passes); environment variables take precedence.
    #[arg(long, env = "KYUFU_SECRETS_FILE", default_value = "./data/secrets.json")]
    secrets_file: PathBuf,
    #[command(flatten)]
    queue: QueueStateArgs,
    #[command(flatten)]
    program: ProgramArgs,
}

/// The proxies in front of a gateway (also taken by the all-in-one process).
#[derive(Args)]
pub struct ProxyArgs {
    /// Address ranges of the load balancer / ingress in front of the gateway, comma-separated CIDRs
    /// (e.g. `10.0.0.0/8`): for their requests the per-client limits key on the right-most
    /// `X-Forwarded-For` address outside these ranges. Empty: key on the TCP peer.
    #[arg(long, env = "KYUFU_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
}

impl ProxyArgs {
    pub fn apply(&self, config: &mut kyufu_gateway::GatewayConfig) -> anyhow::Result<()> {
        config.trusted_proxies = kyufu_gateway::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--trusted-proxies / KYUFU_TRUSTED_PROXIES: {e}"))?;
        Ok(())
    }
}

/// Launch-day settings of a gateway (also taken by the all-in-one process).
#[derive(Args)]
pub struct LaunchArgs {
    /// Opening time (RFC 3339, e.g. 2026-12-01T09:00:00+09:00): earlier visitors join a pre-queue
    /// drawn into a random order at opening.
    #[arg(long, env = "KYUFU_OPENS_AT")]
    opens_at: Option<String>,
    /// Seed of the pre-queue draw, 64 hex digits (random when absent); the same on every node.
    #[arg(long, env = "KYUFU_LAUNCH_SEED", hide_env_values = true)]
    launch_seed: Option<String>,
    /// Most visitors admitted per pass lifetime (concurrent sessions); 0 = no cap.
    #[arg(long, env = "KYUFU_SESSION_CAP", default_value_t = 0)]
    session_cap: u64,
}

impl LaunchArgs {
    /// Writes the settings into `config`; a bad value names its flag.
    pub fn apply(&self, config: &mut kyufu_gateway::GatewayConfig) -> anyhow::Result<()> {
        if let Some(text) = &self.opens_at {
            let at = kyufu_gateway::launch::parse_rfc3339(text)
                .with_context(|| format!("--opens-at: not an RFC 3339 time: {text}"))?;
            config.opens_at = Some(at);
        }
        if let Some(hex) = &self.launch_seed {
            config.launch_seed =
                Some(kyufu_gateway::launch::parse_seed_hex(hex).context("--launch-seed: must be 64 hex digits")?);
        }
        config.session_cap = self.session_cap;
        Ok(())
    }
}

/// How many applications one admission pass may send (taken by intake and the all-in-one).
#[derive(Args)]
pub struct PassArgs {
    /// Applications one admission pass (one household) may send; 0 = no bound.
    #[arg(long, env = "KYUFU_SUBMISSIONS_PER_PASS", default_value_t = kyufu_intake::DEFAULT_SUBMISSIONS_PER_PASS)]
    pub submissions_per_pass: u32,
}

#[derive(Args)]
pub struct IntakeArgs {
    #[arg(long, env = "KYUFU_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    #[arg(long, env = "KYUFU_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "KYUFU_SECRETS_FILE")]
    secrets_file: Option<PathBuf>,
    /// Seconds an application may sit in `received` before the outbox relay republishes it.
    #[arg(long, default_value_t = 600)]
    relay_after_secs: u64,
    #[command(flatten)]
    passes: PassArgs,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    scan: crate::backends::ScanArgs,
    #[command(flatten)]
    program: ProgramArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// `dedupe`, `documents`, `idcheck`, `coupon`, `notify`, or `all` (every stage in this one
    /// process, each in its own consumer group as in separate processes: fewer processes for a
    /// small deployment).
    stage: String,
    /// Address for `/metrics` and health.
    #[arg(long, env = "KYUFU_METRICS_LISTEN", default_value = "127.0.0.1:9102")]
    listen: SocketAddr,
    #[arg(long, env = "KYUFU_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "KYUFU_REGISTRY")]
    registry: Option<PathBuf>,
    #[arg(long, env = "KYUFU_SECRETS_FILE")]
    secrets_file: Option<PathBuf>,
    #[command(flatten)]
    mail: crate::all_in_one::MailArgs,
    /// Messages handled at once (lanes by key): about arrival rate × time per message.
    #[arg(long, env = "KYUFU_WORKER_LANES", default_value_t = kyufu_pipeline::runner::WORKER_CONCURRENCY)]
    lanes: usize,
    /// Messages polled and not yet committed, at most (what a crash may redo); at least `lanes`.
    #[arg(long, env = "KYUFU_WORKER_WINDOW", default_value_t = kyufu_pipeline::runner::WORKER_CONCURRENCY * 8)]
    window: usize,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    program: ProgramArgs,
}

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let secrets = crate::secrets::load(&args.secrets_file, false)?;
    let program = args.program.program();
    let mut config = kyufu_gateway::GatewayConfig::new(&program.id, secrets.keyring, &args.upstream);
    config.rate_per_sec = args.rate;
    config.burst = args.burst;
    config.expire_after_polls = args.expire_after_polls;
    config.backoff_floor = args.backoff_floor;
    config.join_limit_per_sec = args.join_limit;
    config.join_limit_burst = args.join_limit.saturating_mul(10);
    config.submit_limit_per_sec = args.submit_limit;
    config.submit_limit_burst = args.submit_limit.saturating_mul(10);
    config.lookup_limit_per_sec = args.lookup_limit;
    config.lookup_limit_burst = args.lookup_limit.saturating_mul(10);
    args.launch.apply(&mut config)?;
    args.proxies.apply(&mut config)?;
    config.validate()?;
    let state = args.queue.open(&program.id).await?;
    // Nodes sharing the queue draw the pre-queue with one seed: the first node's, kept in the state.
    let proposed = config.launch_seed.unwrap_or_else(rand::random);
    let agreed = state.agree_launch_seed(proposed).await.map_err(|e| anyhow::anyhow!("launch seed: {e}"))?;
    anyhow::ensure!(
        config.launch_seed.is_none_or(|given| given == agreed),
        "--launch-seed / KYUFU_LAUNCH_SEED differs from the seed the other gateway nodes of this queue use;          give every node the same seed, or none"
    );
    config.launch_seed = Some(agreed);
    let metrics = kyufu_telemetry::new_registry();
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let (gateway, handle) = kyufu_gateway::Gateway::with_state(config, metrics, state)?;
    // The operators' admin API on its own (staff) address, never on the public one.
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_task = match (&args.admin_listen, secrets.admin_token.as_deref()) {
        (Some(addr), Some(token)) => {
            let router = kyufu_gateway::admin::admin_router(handle, token).map_err(|e| anyhow::anyhow!("KYUFU_ADMIN_TOKEN: {e}"))?;
            let admin = TcpListener::bind(addr).await.with_context(|| format!("binding --admin-listen {addr}"))?;
            tracing::info!(addr = %admin.local_addr()?, "admin API listening");
            Some(tokio::spawn(kyufu_http::serve(admin, router, crate::all_in_one::stopped(stop_rx.clone()))))
        }
        (Some(_), None) => anyhow::bail!("--admin-listen needs KYUFU_ADMIN_TOKEN (or KYUFU_ADMIN_TOKEN_FILE)"),
        (None, _) => None,
    };
    let ops_task = match args.ops_listen {
        Some(addr) => {
            let ops = TcpListener::bind(addr).await.with_context(|| format!("binding --ops-listen {addr}"))?;
            tracing::info!(addr = %ops.local_addr()?, "metrics listening (operations address)");
            Some(tokio::spawn(kyufu_http::serve(ops, gateway.ops_router(), crate::all_in_one::stopped(stop_rx.clone()))))
        }
        None => {
            tracing::warn!("no --ops-listen: this gateway exports no metrics (never on the public port)");
            None
        }
    };
    let served = gateway.serve(listener, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    if let Some(task) = ops_task {
        let _ = task.await;
    }
    served
}

pub async fn intake(args: IntakeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let secrets_path = args.secrets_file.clone().unwrap_or_else(|| args.data_dir.join("secrets.json"));
    let secrets = crate::secrets::load(&secrets_path, false)?;
    let program = args.program.program();
    let metrics = kyufu_telemetry::new_registry();
    let backends = args.backends.open(&args.data_dir, &metrics).await?;
    let ports = backends.ports();
    let scanner = args.scan.scanner();
    let config = IntakeConfig {
        program,
        pass_keyring: secrets.keyring,
        require_pass: true,
        submissions_per_pass: args.passes.submissions_per_pass,
        identity_secret: secrets.identity,
        status_tokens: secrets.status_tokens,
        max_document_bytes: kyufu_intake::MAX_DOCUMENT_BYTES,
        received_topic: topics::RECEIVED.to_owned(),
        scanner: scanner.clone(),
    };
    let readiness = kyufu_http::Readiness::ready();
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = backends.watch(&readiness, stop_rx.clone());
    let scan_watcher = crate::backends::ScanArgs::watch(scanner.as_ref(), &readiness, stop_rx.clone());
    let mut relay_config = RelayConfig::new(topics::RECEIVED);
    relay_config.after = Duration::from_secs(args.relay_after_secs);
    let relay = tokio::spawn(kyufu_intake::relay::run(ports.clone(), relay_config, metrics.clone(), stopped(stop_rx.clone())));
    let monitor = tokio::spawn(kyufu_intake::monitor::run(
        ports.status.clone(),
        metrics.clone(),
        readiness.clone(),
        MonitorConfig::default(),
        stopped(stop_rx.clone()),
    ));
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let served = kyufu_intake::serve(listener, config, ports, metrics, readiness, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await;
    let _ = relay.await;
    let _ = monitor.await;
    for w in [watcher, scan_watcher].into_iter().flatten() {
        let _ = w.await;
    }
    backends.bus.flush(Duration::from_secs(5)).await.ok();
    served
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let kinds: Vec<StageKind> = if args.stage == "all" {
        StageKind::ALL.to_vec()
    } else {
        vec![StageKind::parse(&args.stage)
            .with_context(|| format!("unknown stage {:?}: expected dedupe, documents, idcheck, coupon, notify or all", args.stage))?]
    };
    anyhow::ensure!((1..=1024).contains(&args.lanes), "--lanes / KYUFU_WORKER_LANES: 1-1024");
    anyhow::ensure!(
        (args.lanes..=65_536).contains(&args.window),
        "--window / KYUFU_WORKER_WINDOW: at least --lanes, at most 65536"
    );
    let program = args.program.program();
    let registry_path = args.registry.clone().unwrap_or_else(|| args.data_dir.join("registry.csv"));
    let secrets_path = args.secrets_file.clone().unwrap_or_else(|| args.data_dir.join("secrets.json"));
    let secrets = crate::secrets::load(&secrets_path, false)?;
    let registry = if kinds.iter().any(|k| matches!(k, StageKind::IdCheck | StageKind::Dedupe)) {
        Registry::load_path(&registry_path).with_context(|| format!("loading registry {}", registry_path.display()))?
    } else {
        Registry::default()
    };
    let metrics = kyufu_telemetry::new_registry();
    let backends = args.backends.open(&args.data_dir, &metrics).await?;
    let deps = PipelineDeps {
        bus: backends.bus.clone(),
        status: backends.status.clone(),
        documents: backends.documents.clone(),
        units: backends.units.clone(),
        registry: Arc::new(registry),
        identity_secret: secrets.identity,
        program,
        notifier: args.mail.notifier(&args.data_dir)?,
        mail_links: kyufu_pipeline::notify::MailLinks {
            tokens: secrets.status_tokens.clone(),
            public_url: args.mail.public_url.clone().unwrap_or_else(|| "http://localhost:8080".to_owned()),
        },
        metrics: StageMetrics::new(&metrics),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stages: Vec<_> =
        kinds.iter().map(|&kind| kyufu_pipeline::spawn_stage_with(kind, &deps, args.lanes, args.window, stop_rx.clone())).collect();
    let readiness = kyufu_http::Readiness::ready();
    let watcher = backends.watch(&readiness, stop_rx.clone());
    let probe = MonitorConfig { gauges: false, ..MonitorConfig::default() };
    let monitor = tokio::spawn(kyufu_intake::monitor::run(
        deps.status.clone(),
        metrics.clone(),
        readiness.clone(),
        probe,
        stopped(stop_rx.clone()),
    ));
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(stage = %args.stage, metrics = %listener.local_addr()?, "worker running");
    let ops = kyufu_http::ops_routes(metrics, readiness);
    kyufu_http::serve(listener, ops, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await?;
    for stage in stages {
        let _ = stage.await;
    }
    let _ = monitor.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    deps.bus.flush(Duration::from_secs(5)).await.ok();
    Ok(())
}

#[derive(Args)]
pub struct ReviewArgs {
    /// Staff address for the review console, `/metrics` and health (never the public port).
    #[arg(long, env = "KYUFU_REVIEW_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[arg(long, env = "KYUFU_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "KYUFU_REGISTRY")]
    registry: Option<PathBuf>,
    #[arg(long, env = "KYUFU_SECRETS_FILE")]
    secrets_file: Option<PathBuf>,
    /// How long a reviewer's login lasts, in hours.
    #[arg(long, env = "KYUFU_REVIEW_SESSION_HOURS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=24))]
    session_hours: u64,
    /// Failed logins for one reviewer name within 15 minutes before its logins are paused.
    #[arg(long, env = "KYUFU_REVIEW_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    login_failures_per_account: u64,
    /// Failed logins from one client address within 15 minutes before its logins are paused.
    #[arg(long, env = "KYUFU_REVIEW_LOGIN_FAILURES_PER_ADDRESS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    login_failures_per_address: u64,
    #[command(flatten)]
    backends: BackendArgs,
    #[command(flatten)]
    program: ProgramArgs,
}

/// The review console alone: reviewers' decisions go through the same status store and bus as the
/// workers', so any number of consoles can serve the staff.
pub async fn review(args: ReviewArgs) -> anyhow::Result<()> {
    let program = args.program.program();
    let registry_path = args.registry.clone().unwrap_or_else(|| args.data_dir.join("registry.csv"));
    let secrets_path = args.secrets_file.clone().unwrap_or_else(|| args.data_dir.join("secrets.json"));
    let secrets = crate::secrets::load(&secrets_path, false)?;
    let reviewers = kyufu_review::Reviewers::from_spec(secrets.reviewers.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("KYUFU_REVIEWERS / reviewers: {e}"))?
        .with_session_ttl(std::time::Duration::from_secs(args.session_hours * 3600))
        .with_limits(kyufu_review::auth::ThrottleLimits {
            per_account: usize::try_from(args.login_failures_per_account).unwrap_or(usize::MAX),
            per_address: usize::try_from(args.login_failures_per_address).unwrap_or(usize::MAX),
            ..kyufu_review::auth::ThrottleLimits::default()
        });
    let registry =
        Registry::load_path(&registry_path).with_context(|| format!("loading registry {}", registry_path.display()))?;
    let metrics = kyufu_telemetry::new_registry();
    let backends = args.backends.open(&args.data_dir, &metrics).await?;
    let readiness = kyufu_http::Readiness::ready();
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = backends.watch(&readiness, stop_rx.clone());
    let probe = MonitorConfig { gauges: false, ..MonitorConfig::default() };
    let monitor = tokio::spawn(kyufu_intake::monitor::run(
        backends.status.clone(),
        metrics.clone(),
        readiness.clone(),
        probe,
        stopped(stop_rx.clone()),
    ));
    let console = kyufu_review::router(
        kyufu_review::ReviewDeps {
            bus: backends.bus.clone(),
            status: backends.status.clone(),
            documents: backends.documents.clone(),
            registry: Arc::new(registry),
            program,
            reviewers,
        },
        &metrics,
    );
    let routes = console.merge(kyufu_http::ops_routes(metrics, readiness));
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "review console running");
    kyufu_http::serve(listener, routes, async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    })
    .await?;
    let _ = monitor.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    backends.bus.flush(Duration::from_secs(5)).await.ok();
    Ok(())
}
