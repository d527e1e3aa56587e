//! The waiting-room gateway: what visitors meet first on launch day, and the only public door to
//! intake.
//!
//! Admission is a sequence number per visitor against a serving cursor. `POST /queue/join` takes
//! the next number (`QueueState::join`) and answers with a signed ticket carrying it; a governor
//! token bucket moves the cursor forward at the admission rate, a tick at a time, in batches; a
//! visitor whose number the cursor has reached is admitted on the next `GET /queue/status` and
//! receives a signed admission pass, which intake verifies locally with the same keyring. The
//! ticket carries everything per visitor, so the gateway's memory does not grow with the queue and
//! several nodes can serve one queue once `QueueState` is shared. Everything under `/api/` is
//! proxied to intake (`proxy`); `/metrics`, `/healthz` and `/readyz` come from `kyufu_http`.
//!
//! ```text
//! let (gateway, handle) = Gateway::new(config, registry)?;   // validated; nothing runs yet
//! handle.pause();                                            // e.g. closed until launch
//! gateway.serve(listener, shutdown).await?;                  // admission ticker + HTTP
//! ```
#![forbid(unsafe_code)]

pub mod admin;
mod admission;
mod backoff;
mod config;
mod client_limit;
mod controls;
mod front;
mod json;
pub mod launch;
mod liveness;
mod metrics;
mod pages;
mod proxy;
mod queue;
mod refs;
#[doc(hidden)]
pub mod sim;
pub mod state;
pub mod ticket;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;
use kyufu_domain::ErrorCode;
use kyufu_http::{ApiError, Readiness};
use prometheus::Registry;
use tokio::net::TcpListener;

pub use admission::{GatewayHandle, OpeningError, QueueSnapshot};
pub use config::{ConfigError, GatewayConfig, TrustedProxies};
pub use controls::Control;
pub use state::{Counters, LivenessReport, LivenessShared, MemoryQueueState, QueueState, SharedReference, Slot, StateError};
pub use ticket::TicketClaims;

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) admission: Arc<admission::Admission>,
    pub(crate) metrics: metrics::GatewayMetrics,
    pub(crate) proxy: proxy::Proxy,
    pub(crate) join_limit: client_limit::ClientLimiter,
    pub(crate) submit_limit: client_limit::ClientLimiter,
    pub(crate) lookup_limit: client_limit::ClientLimiter,
    pub(crate) refs: refs::ReferenceBook,
}

/// A built gateway, not yet serving.
pub struct Gateway {
    shared: Arc<Shared>,
    registry: Registry,
    readiness: Readiness,
}

impl Gateway {
    /// A gateway on an in-memory queue (one node), and the handle to steer it.
    pub fn new(config: GatewayConfig, registry: Registry) -> Result<(Gateway, GatewayHandle), ConfigError> {
        Self::with_state(config, registry, Arc::new(MemoryQueueState::new()))
    }

    /// A gateway on the given queue state (e.g. one shared by several nodes).
    pub fn with_state(
        config: GatewayConfig,
        registry: Registry,
        state: Arc<dyn QueueState>,
    ) -> Result<(Gateway, GatewayHandle), ConfigError> {
        Self::build(config, registry, state, Readiness::ready())
    }

    /// A gateway on an in-memory queue whose `/readyz` reports into `readiness`, shared with the
    /// other components of the process (all-in-one: intake's status-store probe). The gateway adds
    /// the check `queue_state`, false while admission ticks cannot reach the queue state.
    pub fn with_readiness(
        config: GatewayConfig,
        registry: Registry,
        readiness: Readiness,
    ) -> Result<(Gateway, GatewayHandle), ConfigError> {
        Self::build(config, registry, Arc::new(MemoryQueueState::new()), readiness)
    }

    /// A gateway on the given queue state whose `/readyz` reports into `readiness` (see
    /// `with_readiness`): several nodes sharing one queue, in a process with other components.
    pub fn with_state_and_readiness(
        config: GatewayConfig,
        registry: Registry,
        state: Arc<dyn QueueState>,
        readiness: Readiness,
    ) -> Result<(Gateway, GatewayHandle), ConfigError> {
        Self::build(config, registry, state, readiness)
    }

    fn build(
        config: GatewayConfig,
        registry: Registry,
        state: Arc<dyn QueueState>,
        readiness: Readiness,
    ) -> Result<(Gateway, GatewayHandle), ConfigError> {
        config.validate()?;
        // With the queue shared, the nodes exchange the polls they see every tick (`liveness`).
        let expire_after = config.refresh_secs.saturating_mul(u64::from(config.expire_after_polls));
        let shared = state.is_shared();
        let authority = config::upstream_authority(&config.upstream)
            .map_err(|reason| ConfigError { key: "upstream", reason })?;
        let metrics = metrics::GatewayMetrics::new(&registry);
        let admission = Arc::new(admission::Admission::new(
            state,
            config.rate_per_sec,
            config.burst,
            config.pass_ttl_secs,
            metrics.clone(),
            readiness.clone(),
        )
        .with_liveness(config.liveness_window, expire_after, shared)
        .with_backoff(config.backoff_floor, config.backoff_slow)
        .with_launch(config.opens_at, config.launch_seed.unwrap_or_else(rand::random))
        .with_session_cap(config.session_cap));
        let proxy = proxy::Proxy::new(
            authority,
            config.connect_timeout,
            config.upstream_timeout,
            config.upload_idle_timeout,
            config.max_body_bytes,
            metrics.clone(),
        );
        let handle = GatewayHandle { admission: admission.clone() };
        let limit = |per_sec, burst| client_limit::ClientLimiter::new(per_sec, burst, config.join_limit_loopback);
        let join_limit = limit(config.join_limit_per_sec, config.join_limit_burst);
        let submit_limit = limit(config.submit_limit_per_sec, config.submit_limit_burst);
        let lookup_limit = limit(config.lookup_limit_per_sec, config.lookup_limit_burst);
        // Nodes sharing a queue hash references alike (a key from the shared ticket keys).
        let refs = if shared {
            let derived = config.keyring.derive_id(b"kyufu-reference-book-v1");
            refs::ReferenceBook::with_key(config.reference_capacity, <sha2::Sha256 as sha2::Digest>::digest(derived.as_bytes()).into())
        } else {
            refs::ReferenceBook::new(config.reference_capacity)
        };
        let shared = Arc::new(Shared { config, admission, metrics, proxy, join_limit, submit_limit, lookup_limit, refs });
        Ok((Gateway { shared, registry, readiness }, handle))
    }

    /// Sends everything under `/api/` to `intake` (a router) in this process instead of to the
    /// configured upstream URL: for the all-in-one, where intake runs beside the gateway. Call it
    /// before `router` or `serve`.
    pub fn serve_intake_in_process(&mut self, intake: Router) -> Result<(), ConfigError> {
        let shared = Arc::get_mut(&mut self.shared)
            .ok_or(ConfigError { key: "upstream", reason: "set intake in process before serving".to_owned() })?;
        shared.proxy.serve_in_process(intake);
        Ok(())
    }

    /// `/metrics` (with `/healthz`, `/readyz`) for the staff or operations address: the public
    /// port never serves metrics.
    pub fn ops_router(&self) -> Router {
        kyufu_http::ops_routes(self.registry.clone(), self.readiness.clone())
    }

    /// The HTTP routes (public: no `/metrics`). Serving them without `serve` admits only on joins (no ticker), so use
    /// `serve` unless you run the ticker yourself.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/queue/join", post(queue::join))
            .route(front::STATUS_PATH, get(queue::status))
            .route("/queue/fairness", get(launch::fairness))
            .route("/api/{*path}", any(proxy::forward))
            .merge(pages::routes())
            .with_state(self.shared.clone())
            .merge(kyufu_http::health_routes(self.readiness.clone()))
            .fallback(pages::not_found)
            .method_not_allowed_fallback(|| async { ApiError::new(ErrorCode::MethodNotAllowed) })
    }

    /// Serves on `listener` until `shutdown` resolves, with the admission ticker running; then
    /// drains in-flight requests and stops the ticker.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = self.router();
        let ticker = AbortOnDrop(tokio::spawn(self.shared.admission.clone().run_ticker(self.shared.config.tick)));
        tracing::info!(
            addr = %listener.local_addr()?,
            event = %self.shared.config.event_id,
            upstream = %if self.shared.proxy.in_process() { "intake in process" } else { self.shared.config.upstream.as_str() },
            "gateway listening"
        );
        // As `kyufu_http::serve`, with the poll taken before the router (`front`).
        front::serve(listener, self.shared.clone(), router, shutdown).await;
        drop(ticker);
        // A graceful stop hands the cursor to another node now, not when the lease runs out.
        self.shared.admission.state.release().await;
        Ok(())
    }
}

/// Stops the ticker however `serve` ends, including when its future is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Builds a gateway on an in-memory queue and serves it until `shutdown` resolves. For callers
/// that need runtime control, `Gateway::new` returns the `GatewayHandle` too.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_state(listener, config, registry, Arc::new(MemoryQueueState::new()), shutdown).await
}

/// Like `run`, on the given queue state (e.g. `kyufu_redis::RedisQueueState`, shared by several
/// gateway nodes).
pub async fn run_with_state(
    listener: TcpListener,
    config: GatewayConfig,
    registry: Registry,
    state: Arc<dyn QueueState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (gateway, _handle) = Gateway::with_state(config, registry, state)?;
    gateway.serve(listener, shutdown).await
}
