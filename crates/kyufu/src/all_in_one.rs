//! `kyufu all-in-one`: the whole system in one process on embedded storage, for `make run`, demos
//! and tests. Built in a fixed order: data directory, secrets, registry, program, storage, intake
//! (in process, behind the gateway), gateway (public port), the pipeline stages, the outbox relay,
//! the status-store monitor; then it runs until Ctrl-C or SIGTERM and shuts down in reverse.
//!
//! Gateway and intake share one `Readiness`, so the public `/readyz` is 503 while either the queue
//! state or the status store is unreachable, and one `/metrics` carries every component's series.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kyufu_domain::Program;
use kyufu_intake::monitor::MonitorConfig;
use kyufu_intake::relay::RelayConfig;
use kyufu_intake::IntakeConfig;
use kyufu_pipeline::notify::OutboxNotifier;
use kyufu_pipeline::{PipelineDeps, StageKind, StageMetrics};
use kyufu_ports::events::topics;
use kyufu_registry::{GeneratorConfig, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ProgramArgs;

#[derive(Args)]
pub struct AllInOneArgs {
    /// Public address of the gateway (waiting room and API).
    #[arg(long, env = "KYUFU_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where all data lives: storage, registry, secrets, email outbox.
    #[arg(long, env = "KYUFU_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Resident registry CSV; generated there on first start when missing.
    #[arg(long, env = "KYUFU_REGISTRY")]
    registry: Option<PathBuf>,
    /// Households in a generated demo registry.
    #[arg(long, default_value_t = 2_000)]
    households: usize,
    /// Seed of a generated demo registry.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Admissions per second from the waiting room.
    #[arg(long, env = "KYUFU_ADMIT_RATE", default_value_t = 50)]
    rate: u32,
    /// Admission burst.
    #[arg(long, env = "KYUFU_ADMIT_BURST", default_value_t = 100)]
    burst: u32,
    #[command(flatten)]
    launch: crate::roles::LaunchArgs,
    #[command(flatten)]
    proxies: crate::roles::ProxyArgs,
    /// Seconds an application may sit in `received` before the outbox relay republishes it.
    #[arg(long, default_value_t = 600)]
    relay_after_secs: u64,
    #[command(flatten)]
    passes: crate::roles::PassArgs,
    #[command(flatten)]
    mail: MailArgs,
    #[command(flatten)]
    scan: crate::backends::ScanArgs,
    /// Address of the staff review console (not the public one).
    #[arg(long, env = "KYUFU_REVIEW_LISTEN", default_value = "127.0.0.1:8090")]
    review_listen: SocketAddr,
    /// Write the bound public address, then the staff address, one a line, to this file once
    /// serving (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    #[command(flatten)]
    program: ProgramArgs,
}

/// Where coupon emails go.
#[derive(Args, Clone)]
pub struct MailArgs {
    /// SMTP server: `smtp://[user:password@]host[:port]` (plain, to a relay beside the process),
    /// `smtp://…:587?tls=required` (STARTTLS, never in the clear) or `smtps://…[:465]` (implicit
    /// TLS); without it emails are written to `<data-dir>/outbox/` as complete `.eml` messages.
    #[arg(long, env = "KYUFU_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Sender of coupon emails.
    #[arg(long, env = "KYUFU_MAIL_FROM", default_value = "kyufu <noreply@example.jp>")]
    pub mail_from: String,
    /// The public site the links in emails point to (`https://kyufu.example.jp`); the all-in-one
    /// defaults to its own public address.
    #[arg(long, env = "KYUFU_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl MailArgs {
    pub fn notifier(&self, data_dir: &std::path::Path) -> anyhow::Result<Arc<dyn kyufu_pipeline::notify::Notifier>> {
        // The URL may carry the relay's password, so it may also come from KYUFU_SMTP_URL_FILE.
        let smtp_url = match &self.smtp_url {
            Some(url) => Some(url.clone()),
            None => crate::secrets::env_or_file("KYUFU_SMTP_URL")?,
        };
        Ok(match &smtp_url {
            Some(url) => Arc::new(
                kyufu_pipeline::notify::SmtpNotifier::new(url, &self.mail_from).map_err(|e| anyhow::anyhow!("--smtp-url / --mail-from: {e}"))?,
            ),
            None => Arc::new(
                OutboxNotifier::new(data_dir.join("outbox"), &self.mail_from).map_err(|e| anyhow::anyhow!("--mail-from: {e}"))?,
            ),
        })
    }
}

/// Resolves when `rx` turns true.
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The demo registry for `program`.
pub fn generate_registry(program: &Program, households: usize, seed: u64) -> Registry {
    kyufu_registry::generate(&GeneratorConfig {
        seed,
        households,
        reference_date: program.reference_date,
        ..GeneratorConfig::default()
    })
}

pub async fn run(args: AllInOneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(args.burst > 0, "--burst must be at least 1");
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let secrets = crate::secrets::load(&args.data_dir.join("secrets.json"), true)?;
    let program = args.program.program();

    let registry_path = args.registry.clone().unwrap_or_else(|| args.data_dir.join("registry.csv"));
    let registry = if registry_path.exists() {
        Registry::load_path(&registry_path).with_context(|| format!("loading registry {}", registry_path.display()))?
    } else {
        let r = generate_registry(&program, args.households, args.seed);
        r.write_path(&registry_path).with_context(|| format!("writing registry {}", registry_path.display()))?;
        tracing::info!(path = %registry_path.display(), residents = r.len(), "generated demo resident registry");
        r
    };
    let registry = Arc::new(registry);

    let store = kyufu_embedded::EmbeddedStore::open(&args.data_dir)
        .map_err(|e| anyhow::anyhow!("opening embedded storage in {}: {e}", args.data_dir.display()))?;
    let (bus, status, documents) = (store.bus(), store.status_store(), store.document_store());
    let metrics = kyufu_telemetry::new_registry();
    crate::storage_metrics::register(&metrics, store.clone());
    let readiness = kyufu_http::Readiness::ready();
    let (stop_tx, stop_rx) = watch::channel(false);

    // Intake runs in this process behind the gateway, which hands it every `/api/` request
    // directly (no loopback hop); only the gateway is public.
    let ports = store.ports();
    let scanner = args.scan.scanner();
    let scan_watcher = crate::backends::ScanArgs::watch(scanner.as_ref(), &readiness, stop_rx.clone());
    let intake_config = IntakeConfig {
        program: program.clone(),
        pass_keyring: secrets.keyring.clone(),
        require_pass: true,
        submissions_per_pass: args.passes.submissions_per_pass,
        identity_secret: secrets.identity.clone(),
        status_tokens: secrets.status_tokens.clone(),
        max_document_bytes: kyufu_intake::MAX_DOCUMENT_BYTES,
        received_topic: topics::RECEIVED.to_owned(),
        scanner,
    };
    let intake = kyufu_intake::router(intake_config, ports.clone(), metrics.clone(), readiness.clone());

    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let public = listener.local_addr()?;
    // The upstream URL is not dialled: intake is served in process.
    let mut gateway_config = kyufu_gateway::GatewayConfig::new(&program.id, secrets.keyring.clone(), "http://127.0.0.1:9");
    gateway_config.rate_per_sec = args.rate;
    gateway_config.burst = args.burst;
    args.launch.apply(&mut gateway_config)?;
    args.proxies.apply(&mut gateway_config)?;
    let (mut gateway, gateway_handle) = kyufu_gateway::Gateway::with_readiness(gateway_config, metrics.clone(), readiness.clone())?;
    gateway.serve_intake_in_process(intake)?;
    let gateway_task = tokio::spawn(gateway.serve(listener, stopped(stop_rx.clone())));

    // The staff port carries the review console (with reviewer accounts) and the operators' admin
    // API (with an admin token); a data directory made before either existed still runs the rest.
    let review_listener = TcpListener::bind(args.review_listen).await.with_context(|| format!("binding {}", args.review_listen))?;
    let review_addr = review_listener.local_addr()?;
    // Metrics only on the staff port: the public one never serves them.
    let mut staff = kyufu_http::metrics_routes(metrics.clone());
    match kyufu_review::Reviewers::from_spec(secrets.reviewers.as_deref().unwrap_or("")) {
        Ok(reviewers) => {
            staff = staff.merge(kyufu_review::router(
                kyufu_review::ReviewDeps {
                    bus: bus.clone(),
                    status: status.clone(),
                    documents: documents.clone(),
                    registry: registry.clone(),
                    program: program.clone(),
                    reviewers,
                },
                &metrics,
            ));
        }
        Err(e) => tracing::warn!(error = %e, "review console off: set KYUFU_REVIEWERS (entries from `kyufu reviewer-entry NAME`)"),
    }
    match secrets.admin_token.as_deref().map(|t| kyufu_gateway::admin::admin_router(gateway_handle.clone(), t)) {
        Some(Ok(admin)) => staff = staff.merge(admin),
        Some(Err(e)) => anyhow::bail!("KYUFU_ADMIN_TOKEN / admin_token: {e}"),
        None => tracing::warn!("admin API off: set KYUFU_ADMIN_TOKEN"),
    }
    let review_task = Some(tokio::spawn(kyufu_http::serve(review_listener, staff, stopped(stop_rx.clone()))));

    let deps = PipelineDeps {
        bus: bus.clone(),
        status: status.clone(),
        documents,
        units: store.units(),
        registry: registry.clone(),
        identity_secret: secrets.identity.clone(),
        program: program.clone(),
        notifier: args.mail.notifier(&args.data_dir)?,
        mail_links: kyufu_pipeline::notify::MailLinks {
            tokens: secrets.status_tokens.clone(),
            public_url: args.mail.public_url.clone().unwrap_or_else(|| format!("http://{public}")),
        },
        metrics: StageMetrics::new(&metrics),
    };
    let stages: Vec<_> = StageKind::ALL.into_iter().map(|k| kyufu_pipeline::spawn_stage(k, &deps, stop_rx.clone())).collect();
    let mut relay_config = RelayConfig::new(topics::RECEIVED);
    relay_config.after = Duration::from_secs(args.relay_after_secs);
    relay_config.interval = Duration::from_secs(args.relay_after_secs.clamp(1, 60));
    let relay_task = tokio::spawn(kyufu_intake::relay::run(ports, relay_config, metrics.clone(), stopped(stop_rx.clone())));
    let monitor_task = tokio::spawn(kyufu_intake::monitor::run(
        status.clone(),
        metrics.clone(),
        readiness,
        MonitorConfig::default(),
        stopped(stop_rx.clone()),
    ));

    if let Some(path) = &args.addr_file {
        // The public address, then the staff address (metrics, review console, admin API).
        std::fs::write(path, format!("{public}\n{review_addr}\n")).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%public, data_dir = %args.data_dir.display(), "kyufu all-in-one running");
    println!(
        "\nkyufu is running.\n  waiting room + API : http://{public}/queue/join  (POST)\n  metrics            : http://{review_addr}/metrics  (staff port)\n  review console     : http://{review_addr}/review  (staff; login {})\n  operators' API     : http://{review_addr}/admin/v1/queue  (kyufu admin --help; token in secrets.json)\n  resident registry  : {}\n                       {}\n  data directory     : {}\n  coupon emails      : {}\nStop with Ctrl-C.\n",
        secrets.demo_reviewer_password.as_deref().map_or_else(|| "from KYUFU_REVIEWERS".to_owned(), |p| format!("reviewer / {p}")),
        registry_path.display(),
        registry.special_cases(program.reference_date),
        args.data_dir.display(),
        args.data_dir.join("outbox").display(),
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for stage in stages {
        let _ = stage.await;
    }
    let _ = relay_task.await;
    let _ = monitor_task.await;
    let _ = gateway_task.await;
    if let Some(t) = review_task {
        let _ = t.await;
    }
    if let Some(t) = scan_watcher {
        let _ = t.await;
    }
    bus.flush(Duration::from_secs(5)).await.ok();
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
