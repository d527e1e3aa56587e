//! Pipeline workers. Each stage is its own consumer group on its own input topic:
//!
//! ```text
//! applications.received --dedupe--> applications.unique --documents--> applications.documented
//!                          └─> duplicate                     (rendition)
//!   applications.documented --idcheck--> applications.approved --coupon-->
//!                              └─> needs_review (reasons)
//!   coupon_issued, applications.issued --notify--> email
//! dedupe (duplicate), idcheck (needs_review), reviewers (rejected) --> applications.settled --notify--> email
//! applications.received (receipt), applications.resend (links again) --notify--> email
//! ```
//!
//! Results land in the status store. Every stage is idempotent, so at-least-once delivery never
//! changes an outcome (see each stage's "safe to redo" note).
#![forbid(unsafe_code)]

pub mod coupon;
pub mod coupon_code;
pub mod dedupe;
pub mod documents;
pub mod idcheck;
pub mod matching;
pub mod metrics;
pub mod notify;
pub mod runner;
pub mod synthetic;

use std::sync::Arc;

use kyufu_domain::Program;
use kyufu_ports::events::topics;
use kyufu_ports::{DocumentStore, EventBus, StatusStore};
use kyufu_registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use metrics::StageMetrics;
pub use runner::{run_stage, RunnerConfig, Stage, StageError};

/// The stages, by the name used on the command line (`kyufu worker <stage>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Dedupe,
    Documents,
    IdCheck,
    Coupon,
    Notify,
}

impl StageKind {
    pub const ALL: [StageKind; 5] = [StageKind::Dedupe, StageKind::Documents, StageKind::IdCheck, StageKind::Coupon, StageKind::Notify];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Dedupe => dedupe::NAME,
            StageKind::Documents => documents::NAME,
            StageKind::IdCheck => idcheck::NAME,
            StageKind::Coupon => coupon::NAME,
            StageKind::Notify => notify::NAME,
        }
    }

    pub fn parse(s: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Further topics the stage consumes (notify: receipts, other outcomes, links asked again).
    pub fn extra_topics(self) -> &'static [&'static str] {
        match self {
            StageKind::Notify => &[topics::RECEIVED, topics::SETTLED, topics::RESEND],
            _ => &[],
        }
    }

    /// The topic the stage consumes.
    pub fn input_topic(self) -> &'static str {
        match self {
            StageKind::Dedupe => topics::RECEIVED,
            StageKind::Documents => topics::UNIQUE,
            StageKind::IdCheck => topics::DOCUMENTED,
            StageKind::Coupon => topics::APPROVED,
            StageKind::Notify => topics::ISSUED,
        }
    }
}

/// What the stages need.
#[derive(Clone)]
pub struct PipelineDeps {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    pub documents: Arc<dyn DocumentStore>,
    /// A move and its publish as one unit (atomic on the embedded store).
    pub units: Arc<dyn kyufu_ports::UnitOfWork>,
    pub registry: Arc<Registry>,
    /// Secret of the keyed identity hashes (the same as intake's).
    pub identity_secret: kyufu_domain::identity::IdentitySecret,
    pub program: Program,
    pub notifier: Arc<dyn notify::Notifier>,
    /// The public site and the status secret, for the links and codes in emails.
    pub mail_links: notify::MailLinks,
    pub metrics: StageMetrics,
}

/// Builds a stage.
pub fn build_stage(kind: StageKind, deps: &PipelineDeps) -> Arc<dyn Stage> {
    match kind {
        StageKind::Dedupe => Arc::new(dedupe::Dedupe {
            bus: deps.bus.clone(),
            status: deps.status.clone(),
            registry: deps.registry.clone(),
            secret: deps.identity_secret.clone(),
            output_topic: topics::UNIQUE.to_owned(),
            metrics: deps.metrics.clone(),
        }),
        StageKind::Documents => Arc::new(documents::Documents {
            bus: deps.bus.clone(),
            status: deps.status.clone(),
            documents: deps.documents.clone(),
            output_topic: topics::DOCUMENTED.to_owned(),
            metrics: deps.metrics.clone(),
            decoders: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            )),
        }),
        StageKind::IdCheck => Arc::new(idcheck::IdCheck {
            bus: deps.bus.clone(),
            status: deps.status.clone(),
            units: deps.units.clone(),
            documents: deps.documents.clone(),
            registry: deps.registry.clone(),
            program: deps.program.clone(),
            output_topic: topics::APPROVED.to_owned(),
            metrics: deps.metrics.clone(),
        }),
        StageKind::Coupon => Arc::new(coupon::CouponIssuer {
            bus: deps.bus.clone(),
            status: deps.status.clone(),
            units: deps.units.clone(),
            program: deps.program.clone(),
            output_topic: topics::ISSUED.to_owned(),
            metrics: deps.metrics.clone(),
        }),
        StageKind::Notify => Arc::new(notify::NotifyStage {
            status: deps.status.clone(),
            notifier: deps.notifier.clone(),
            links: deps.mail_links.clone(),
            program: deps.program.clone(),
            metrics: deps.metrics.clone(),
        }),
    }
}

/// Consumer group of a stage: one group per stage, so each stage sees every message of its topic.
pub fn group_name(program_id: &str, kind: StageKind) -> String {
    format!("kyufu.{program_id}.{}", kind.name())
}

/// Starts one consumer for `kind`; it stops when `shutdown` turns true.
pub fn spawn_stage(kind: StageKind, deps: &PipelineDeps, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    spawn_stage_with(kind, deps, runner::DEFAULT_CONCURRENCY, runner::DEFAULT_CONCURRENCY * 4, shutdown)
}

/// `spawn_stage` with `lanes` messages handled at once and at most `window` polled and not yet
/// committed (at least `lanes`).
pub fn spawn_stage_with(
    kind: StageKind,
    deps: &PipelineDeps,
    lanes: usize,
    window: usize,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let stage = build_stage(kind, deps);
    let mut config = RunnerConfig::new(&group_name(&deps.program.id, kind), kind.input_topic(), topics::DEAD_LETTER);
    config.concurrency = lanes.max(1);
    config.window = window.max(config.concurrency);
    config.extra_topics = kind.extra_topics().iter().map(|t| (*t).to_owned()).collect();
    let (bus, status, metrics) = (deps.bus.clone(), deps.status.clone(), deps.metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = run_stage(stage, config, bus, status, metrics, shutdown).await {
            tracing::error!(stage = kind.name(), error = %e, "stage could not start");
        }
    })
}
