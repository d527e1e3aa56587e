//! The intake service: the one door through which an application enters the pipeline.
//!
//! `POST /api/v1/applications` checks the admission pass locally, reads the multipart body with a
//! streaming size cap, validates the application and the document (type from magic bytes; content
//! by `inspect`: images decode within a pixel cap, PDFs carry no active content; malware by the
//! optional `scan::DocumentScanner`, clamd, failing closed), and then writes in a fixed order: document and application payload to the document store, the `received`
//! record (with the idempotency key, atomically) to the status store — the commit point — and the
//! event to the bus. If publishing fails after the commit point the application is still accepted:
//! the outbox relay (`relay`) republishes records stuck in `received`.
//!
//! `GET /api/v1/applications/{id}` answers the applicant's "where is my application?" given the
//! private status token, which is an HMAC of the id (so a retry with the same Idempotency-Key gets
//! the same token without storing it).
//!
//! `POST /api/v1/funnel` counts form-funnel events from the citizen pages (`funnel`). The status
//! store monitor (`monitor`), started by the composition root, makes `/readyz` follow the status
//! store and exports the application and review-backlog gauges.
#![forbid(unsafe_code)]

pub mod funnel;
pub mod inspect;
mod metrics;
pub mod monitor;
pub mod relay;
mod routes;
pub mod scan;

pub use kyufu_ports::events::payload_key;
mod links;
pub mod token;

use std::future::Future;
use std::sync::Arc;

use kyufu_admission::Keyring;
use kyufu_domain::identity::IdentitySecret;
use kyufu_domain::Program;
use kyufu_http::Readiness;

use prometheus::Registry;
use tokio::net::TcpListener;

pub use kyufu_domain::document::{sniff_content_type, MAX_DOCUMENT_BYTES};
pub use token::StatusTokens;

/// Default of `IntakeConfig::submissions_per_pass`.
pub const DEFAULT_SUBMISSIONS_PER_PASS: u32 = 10;

/// Everything intake needs, built once by the composition root.
#[derive(Clone)]
pub struct IntakeConfig {
    pub program: Program,
    /// Verifies admission passes (same keyring as the gateway).
    pub pass_keyring: Keyring,
    /// When false, no admission pass is required (internal tools, tests of intake alone).
    pub require_pass: bool,
    /// Applications one admission pass may send (one household's children); beyond it 403
    /// `admission_limit_reached`. Counted in the status store, so across intake processes.
    /// 0 = no bound.
    pub submissions_per_pass: u32,
    pub identity_secret: IdentitySecret,
    pub status_tokens: StatusTokens,
    pub max_document_bytes: usize,
    /// Topic new applications are published to.
    pub received_topic: String,
    /// Virus scanner every document passes before it is stored; `None` = no scanning.
    pub scanner: Option<Arc<dyn scan::DocumentScanner>>,
}

/// The ports intake writes through (an accepted application is one unit of work).
pub type IntakePorts = kyufu_ports::Ports;

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct Intake {
    pub(crate) config: Arc<IntakeConfig>,
    pub(crate) ports: IntakePorts,
    pub(crate) metrics: metrics::IntakeMetrics,
    /// Permits for concurrent document checks (bounds the CPU and memory they may take).
    pub(crate) inspectors: Arc<tokio::sync::Semaphore>,
}

/// The intake router (API, metrics, health), for serving or embedding; `/readyz` follows
/// `readiness` (see `monitor`).
pub fn router(config: IntakeConfig, ports: IntakePorts, registry: Registry, readiness: Readiness) -> axum::Router {
    let inspectors = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let intake = Intake {
        config: Arc::new(config),
        ports,
        metrics: metrics::IntakeMetrics::new(&registry),
        inspectors: Arc::new(tokio::sync::Semaphore::new(inspectors)),
    };
    routes::api(intake).merge(kyufu_http::ops_routes(registry, readiness))
}

/// Serves intake on `listener` until `shutdown` resolves, always ready (no dependency probe).
pub async fn run(
    listener: TcpListener,
    config: IntakeConfig,
    ports: IntakePorts,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve(listener, config, ports, registry, Readiness::ready(), shutdown).await
}

/// Serves intake on `listener` until `shutdown` resolves, with `/readyz` following `readiness`
/// (which the composition root hands to `monitor::run` as well).
pub async fn serve(
    listener: TcpListener,
    config: IntakeConfig,
    ports: IntakePorts,
    registry: Registry,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(config, ports, registry, readiness);
    tracing::info!(addr = %listener.local_addr()?, "intake listening");
    kyufu_http::serve(listener, app, shutdown).await?;
    Ok(())
}
