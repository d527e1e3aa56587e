//! The waiting-room gateway: what citizens meet first on launch day.
//!
//! Admission is a sequence number per visitor against a serving cursor. Joining takes the next
//! number; a token bucket (governor) moves the cursor forward at the admission rate; a visitor whose
//! number the cursor has reached is admitted and receives a signed admission pass, which intake
//! verifies locally. The ticket is signed and carries the visitor's number, so the gateway keeps no
//! per-visitor state and its memory does not grow with the queue. Everything under `/api/` is
//! proxied to intake.
#![forbid(unsafe_code)]

mod admission;
mod metrics;
mod proxy;
mod routes;
mod ticket;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kyufu_admission::Keyring;
use prometheus::Registry;
use tokio::net::TcpListener;

pub use admission::{GatewayHandle, InMemoryQueue, QueueState};
pub use ticket::TicketClaims;

/// Settings of one gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Event (program) id; tickets and passes are bound to it.
    pub event_id: String,
    pub keyring: Keyring,
    /// Base URL of intake, e.g. `http://127.0.0.1:9000`.
    pub upstream: String,
    /// Admissions per second.
    pub rate_per_sec: u32,
    /// Admissions that may happen at once after a quiet spell.
    pub burst: u32,
    /// How often a waiting visitor should poll.
    pub refresh_secs: u64,
    /// How long an admission pass is valid (a guardian fills in forms for several children).
    pub pass_ttl_secs: u64,
    /// How long a ticket is honoured at all.
    pub ticket_max_age_secs: u64,
    /// Add `Secure` to cookies (behind TLS).
    pub secure_cookies: bool,
    pub upstream_connect_timeout: Duration,
    /// Until intake's response headers arrive.
    pub upstream_timeout: Duration,
    /// Largest request body passed to intake; larger uploads are refused at the edge with 413.
    pub max_body_bytes: u64,
}

impl GatewayConfig {
    pub fn new(event_id: &str, keyring: Keyring, upstream: &str) -> Self {
        GatewayConfig {
            event_id: event_id.to_owned(),
            keyring,
            upstream: upstream.trim_end_matches('/').to_owned(),
            rate_per_sec: 50,
            burst: 100,
            refresh_secs: 5,
            pass_ttl_secs: 30 * 60,
            ticket_max_age_secs: 24 * 3600,
            secure_cookies: false,
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            max_body_bytes: 10 * 1024 * 1024 + 256 * 1024,
        }
    }
}

/// A gateway ready to serve, and the handle operators use to steer it.
pub struct Gateway {
    router: axum::Router,
    admission: Arc<admission::Admission>,
}

impl Gateway {
    /// Builds the gateway with an in-memory queue state.
    pub fn new(config: GatewayConfig, registry: &Registry) -> anyhow::Result<(Gateway, GatewayHandle)> {
        Self::with_queue(config, registry, Arc::new(InMemoryQueue::default()))
    }

    /// Builds the gateway on a given queue state (shared state for several nodes).
    pub fn with_queue(
        config: GatewayConfig,
        registry: &Registry,
        queue: Arc<dyn QueueState>,
    ) -> anyhow::Result<(Gateway, GatewayHandle)> {
        anyhow::ensure!(config.rate_per_sec > 0 && config.burst > 0, "admission rate and burst must be at least 1");
        anyhow::ensure!(
            config.upstream.starts_with("http://"),
            "upstream must be an http:// URL, got {:?}",
            config.upstream
        );
        let metrics = metrics::GatewayMetrics::new(registry);
        let admission = Arc::new(admission::Admission::new(&config, queue, metrics.clone()));
        let handle = GatewayHandle::new(admission.clone());
        let proxy = proxy::Proxy::new(&config, metrics.clone());
        let state = routes::AppState { config: Arc::new(config), admission: admission.clone(), proxy, metrics };
        let router = routes::router(state).merge(kyufu_http::ops_routes(registry.clone(), kyufu_http::Readiness::ready()));
        Ok((Gateway { router, admission }, handle))
    }

    /// Serves on `listener` until `shutdown` resolves; runs the admission ticker meanwhile.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %listener.local_addr()?, "gateway listening");
        let ticker = tokio::spawn(self.admission.clone().tick_forever());
        let served = kyufu_http::serve(listener, self.router, shutdown).await;
        ticker.abort();
        served?;
        Ok(())
    }
}

/// Builds and serves a gateway until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (gateway, _handle) = Gateway::new(config, &registry)?;
    gateway.serve(listener, shutdown).await
}
