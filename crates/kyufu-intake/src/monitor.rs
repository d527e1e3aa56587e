//! The status-store monitor: a small background task that probes the status store every few
//! seconds with the cheapest read it has (`count_by_status`) and turns the answer into readiness
//! (check `status_store`: `/readyz` answers 503 while the store cannot be read) and, in the process
//! that owns the applicant-facing numbers (intake or all-in-one), into gauges:
//!
//! - `kyufu_status_applications{status}` — applications in each status;
//! - `kyufu_review_backlog_applications` — applications waiting for a person (`needs_review`);
//! - `kyufu_review_oldest_age_seconds` — how long the oldest of them has waited, from
//!   `list_by_status(NeedsReview, 1)` (oldest first), 0 when there is none.
//!
//! A probe that takes longer than `timeout` counts as a failure: a hung store is as unavailable as
//! a refused one. While the store is down the gauges keep their last values; the readiness alert
//! says they are stale.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kyufu_domain::Status;
use kyufu_http::Readiness;
use kyufu_ports::{AdapterError, StatusStore};
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// Name of the readiness check this monitor reports.
pub const STATUS_STORE_CHECK: &str = "status_store";

#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Time between probes.
    pub interval: Duration,
    /// A probe slower than this counts as a failure.
    pub timeout: Duration,
    /// Also export the application and review gauges (the intake or all-in-one process); workers
    /// only probe, so the gauges come from one process.
    pub gauges: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig { interval: Duration::from_secs(5), timeout: Duration::from_secs(3), gauges: true }
    }
}

/// The gauges, registered only when `MonitorConfig::gauges` is set.
struct Gauges {
    by_status: IntGaugeVec,
    backlog: IntGauge,
    oldest_age: IntGauge,
}

impl Gauges {
    fn new(registry: &Registry) -> Self {
        use kyufu_telemetry::register;
        let by_status = IntGaugeVec::new(
            Opts::new("kyufu_status_applications", "Applications by current status, read from the status store"),
            &["status"],
        )
        .expect("static metric");
        let backlog = IntGauge::new(
            "kyufu_review_backlog_applications",
            "Applications waiting for a person: status needs_review",
        )
        .expect("static metric");
        let oldest_age = IntGauge::new(
            "kyufu_review_oldest_age_seconds",
            "Seconds the oldest application in needs_review has waited since it got there; 0 when none waits",
        )
        .expect("static metric");
        Gauges {
            by_status: register(registry, by_status),
            backlog: register(registry, backlog),
            oldest_age: register(registry, oldest_age),
        }
    }
}

/// What one probe read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading {
    counts: Vec<(Status, u64)>,
    /// When the oldest `needs_review` record got there.
    oldest_review: Option<DateTime<Utc>>,
}

async fn read(status: &dyn StatusStore, gauges: bool) -> Result<Reading, AdapterError> {
    let counts = status.count_by_status().await?;
    let oldest_review = if gauges {
        status.list_by_status(Status::NeedsReview, 1).await?.first().map(|r| r.updated_at)
    } else {
        None
    };
    Ok(Reading { counts, oldest_review })
}

/// Probes every `config.interval` until `shutdown` resolves; the first probe runs at once, so
/// readiness and gauges are right from the first scrape.
pub async fn run(
    status: Arc<dyn StatusStore>,
    registry: Registry,
    readiness: Readiness,
    config: MonitorConfig,
    shutdown: impl Future<Output = ()>,
) {
    let gauges = config.gauges.then(|| Gauges::new(&registry));
    let mut interval = tokio::time::interval(config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = interval.tick() => {}
        }
        let reading = match tokio::time::timeout(config.timeout, read(&*status, gauges.is_some())).await {
            Ok(result) => result,
            Err(_) => Err(AdapterError::Unavailable(format!("no answer within {:?}", config.timeout))),
        };
        let ok = reading.is_ok();
        if readiness.set_check(STATUS_STORE_CHECK, ok) {
            match &reading {
                Ok(_) => tracing::info!("status store reachable: ready"),
                Err(e) => tracing::warn!(error = %e, "status store unreachable: not ready"),
            }
        }
        if let (Some(g), Ok(r)) = (&gauges, &reading) {
            publish(g, r, Utc::now());
        }
    }
}

fn publish(g: &Gauges, r: &Reading, now: DateTime<Utc>) {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for (status, n) in &r.counts {
        g.by_status.with_label_values(&[status.as_str()]).set(as_i64(*n));
        if *status == Status::NeedsReview {
            g.backlog.set(as_i64(*n));
        }
    }
    let age = r.oldest_review.map_or(0, |at| (now - at).num_seconds().max(0));
    g.oldest_age.set(age);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyufu_ports::{ApplicationRecord, Claim, CreateOutcome, IdempotencyClaim, Transition, TransitionOutcome};
    use std::sync::atomic::{AtomicBool, Ordering};
    use uuid::Uuid;

    /// A store with two applications in review since fixed times, that can be switched off.
    #[derive(Default)]
    struct FakeStore {
        down: AtomicBool,
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[async_trait::async_trait]
    impl StatusStore for FakeStore {
        async fn create(&self, _: &ApplicationRecord, _: Option<&IdempotencyClaim>) -> Result<CreateOutcome, AdapterError> {
            Err(AdapterError::Unavailable("read only".into()))
        }
        async fn get(&self, _: Uuid) -> Result<Option<ApplicationRecord>, AdapterError> {
            Ok(None)
        }
        async fn transition(&self, _: Uuid, _: &Transition) -> Result<TransitionOutcome, AdapterError> {
            Ok(TransitionOutcome::NotFound)
        }
        async fn claim(&self, _: &str, _: &str, owner: &str) -> Result<Claim, AdapterError> {
            Ok(Claim::Held { owner: owner.to_owned() })
        }
        async fn claimed_by(&self, _: &str, _: &str) -> Result<Option<String>, AdapterError> {
            Ok(None)
        }
        async fn release(&self, _: &str, _: &str, _: &str) -> Result<bool, AdapterError> {
            Ok(false)
        }
        async fn list_by_status(&self, status: Status, limit: usize) -> Result<Vec<ApplicationRecord>, AdapterError> {
            self.check()?;
            assert_eq!((status, limit), (Status::NeedsReview, 1));
            let mut r = ApplicationRecord::received(Uuid::nil(), "p", at(1_000));
            r.status = Status::NeedsReview;
            r.updated_at = at(1_000);
            Ok(vec![r])
        }
        async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, AdapterError> {
            self.check()?;
            Ok(vec![(Status::Received, 3), (Status::NeedsReview, 2), (Status::CouponIssued, 40)])
        }
    }

    impl FakeStore {
        fn check(&self) -> Result<(), AdapterError> {
            if self.down.load(Ordering::Relaxed) {
                Err(AdapterError::Unavailable("switched off".into()))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn gauges_show_counts_backlog_and_oldest_age() {
        let registry = Registry::new();
        let g = Gauges::new(&registry);
        let reading = Reading {
            counts: vec![(Status::Received, 3), (Status::NeedsReview, 2)],
            oldest_review: Some(at(1_000)),
        };
        publish(&g, &reading, at(1_000 + 90_000));
        let text = kyufu_telemetry::encode(&registry);
        for line in [
            "kyufu_status_applications{status=\"received\"} 3",
            "kyufu_status_applications{status=\"needs_review\"} 2",
            "kyufu_review_backlog_applications 2",
            "kyufu_review_oldest_age_seconds 90000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        publish(&g, &Reading { counts: vec![(Status::NeedsReview, 0)], oldest_review: None }, at(5_000));
        let text = kyufu_telemetry::encode(&registry);
        assert!(text.contains("kyufu_review_oldest_age_seconds 0"), "{text}");
        assert!(text.contains("kyufu_review_backlog_applications 0"), "{text}");
    }

    #[tokio::test]
    async fn readiness_follows_the_store() {
        let store = Arc::new(FakeStore::default());
        let registry = Registry::new();
        let readiness = Readiness::ready();
        let config = MonitorConfig { interval: Duration::from_millis(5), ..MonitorConfig::default() };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(store.clone(), registry.clone(), readiness.clone(), config, async {
            let _ = stop_rx.await;
        }));
        let wait_for = |want: bool| {
            let readiness = readiness.clone();
            async move {
                for _ in 0..400 {
                    if readiness.get() == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                false
            }
        };
        // The first probe runs at once and fills the gauges.
        assert!(wait_for(true).await);
        for _ in 0..400 {
            if kyufu_telemetry::encode(&registry).contains("kyufu_review_backlog_applications 2") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(kyufu_telemetry::encode(&registry).contains("kyufu_status_applications{status=\"coupon_issued\"} 40"));
        store.down.store(true, Ordering::Relaxed);
        assert!(wait_for(false).await, "not ready while the store is down");
        assert_eq!(readiness.failing(), vec![STATUS_STORE_CHECK]);
        assert!(kyufu_telemetry::encode(&registry).contains("kyufu_review_backlog_applications 2"), "last values kept");
        store.down.store(false, Ordering::Relaxed);
        assert!(wait_for(true).await, "ready again once the store answers");
        let _ = stop_tx.send(());
        task.await.expect("monitor stops on shutdown");
    }
}
