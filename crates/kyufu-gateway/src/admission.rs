//! Admission: the sequence counter and serving cursor (behind `QueueState`, so several gateway
//! nodes can share them), the token bucket that moves the cursor, the measured admission rate the
//! wait estimates come from, and the operator controls (pause, resume, rate and burst).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::metrics::GatewayMetrics;
use crate::GatewayConfig;

/// The numbers all gateway nodes must agree on.
#[async_trait]
pub trait QueueState: Send + Sync + 'static {
    /// Takes the next sequence number (the first visitor gets 1).
    async fn next_seq(&self) -> u64;
    /// Highest sequence number issued so far.
    async fn issued(&self) -> u64;
    /// Highest sequence number admitted so far.
    async fn cursor(&self) -> u64;
    /// Moves the cursor forward by up to `n`, never past `issued`; returns the new cursor.
    async fn advance(&self, n: u64) -> u64;
}

/// Queue state of a single gateway node.
#[derive(Default)]
pub struct InMemoryQueue {
    issued: AtomicU64,
    cursor: AtomicU64,
}

#[async_trait]
impl QueueState for InMemoryQueue {
    async fn next_seq(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::SeqCst) + 1
    }
    async fn issued(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }
    async fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::SeqCst)
    }
    async fn advance(&self, n: u64) -> u64 {
        let issued = self.issued.load(Ordering::SeqCst);
        let mut cur = self.cursor.load(Ordering::SeqCst);
        loop {
            let next = cur.saturating_add(n).min(issued).max(cur);
            match self.cursor.compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }
}

fn limiter(rate: u32, burst: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// Measured admissions per second (exponentially weighted), counted only while people wait, so it
/// measures capacity rather than demand.
#[derive(Default)]
struct RateMeter {
    rate: Option<f64>,
    window_start: Option<Instant>,
    admitted_in_window: u64,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);
const RATE_WEIGHT: f64 = 0.3;

pub(crate) struct Admission {
    queue: Arc<dyn QueueState>,
    limiter: Mutex<Arc<DefaultDirectRateLimiter>>,
    paused: AtomicBool,
    rate_per_sec: AtomicU64,
    burst: AtomicU64,
    meter: Mutex<RateMeter>,
    /// Serialises cursor moves within this node so token counting and advancing agree.
    advancing: tokio::sync::Mutex<()>,
    metrics: GatewayMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Admission {
    pub(crate) fn new(config: &GatewayConfig, queue: Arc<dyn QueueState>, metrics: GatewayMetrics) -> Self {
        Admission {
            queue,
            limiter: Mutex::new(Arc::new(limiter(config.rate_per_sec, config.burst))),
            paused: AtomicBool::new(false),
            rate_per_sec: AtomicU64::new(u64::from(config.rate_per_sec)),
            burst: AtomicU64::new(u64::from(config.burst)),
            meter: Mutex::new(RateMeter::default()),
            advancing: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    pub(crate) async fn join(&self) -> u64 {
        let seq = self.queue.next_seq().await;
        self.metrics.joins.inc();
        // A visitor arriving to an empty queue with capacity free is admitted at once.
        self.try_advance().await;
        seq
    }

    pub(crate) async fn cursor(&self) -> u64 {
        self.queue.cursor().await
    }

    pub(crate) fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Measured admissions per second; `None` before a measurement or while paused.
    pub(crate) fn measured_rate(&self) -> Option<f64> {
        if self.paused() {
            return None;
        }
        lock(&self.meter).rate.filter(|r| *r > 0.0)
    }

    /// Spends available tokens on waiting visitors.
    async fn try_advance(&self) {
        if self.paused() {
            return;
        }
        let _guard = self.advancing.lock().await;
        let (issued, cursor) = (self.queue.issued().await, self.queue.cursor().await);
        let waiting = issued.saturating_sub(cursor);
        if waiting == 0 {
            return;
        }
        let limiter = lock(&self.limiter).clone();
        let mut tokens = 0u64;
        while tokens < waiting && limiter.check().is_ok() {
            tokens += 1;
        }
        if tokens > 0 {
            let new_cursor = self.queue.advance(tokens).await;
            let moved = new_cursor.saturating_sub(cursor);
            self.metrics.admitted.inc_by(moved);
            lock(&self.meter).admitted_in_window += moved;
        }
    }

    /// Updates the rate measurement and the queue-length gauge.
    async fn measure(&self) {
        let (issued, cursor) = (self.queue.issued().await, self.queue.cursor().await);
        let waiting = issued.saturating_sub(cursor);
        self.metrics.queue_length.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        let mut m = lock(&self.meter);
        let now = Instant::now();
        let start = *m.window_start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed < RATE_WINDOW {
            return;
        }
        // Only a window in which people waited says how fast we can admit.
        if waiting > 0 || m.admitted_in_window > 0 {
            #[allow(clippy::cast_precision_loss)]
            let instant = m.admitted_in_window as f64 / elapsed.as_secs_f64();
            m.rate = Some(match m.rate {
                Some(r) => RATE_WEIGHT * instant + (1.0 - RATE_WEIGHT) * r,
                None => instant,
            });
        }
        m.admitted_in_window = 0;
        m.window_start = Some(now);
    }

    /// Moves the cursor every 50 ms for as long as the gateway runs.
    pub(crate) async fn tick_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.try_advance().await;
            self.measure().await;
        }
    }
}

/// Operator controls of a running gateway.
#[derive(Clone)]
pub struct GatewayHandle {
    admission: Arc<Admission>,
}

impl GatewayHandle {
    pub(crate) fn new(admission: Arc<Admission>) -> Self {
        GatewayHandle { admission }
    }

    /// Stops admitting; waiting visitors keep their places.
    pub fn pause(&self) {
        self.admission.paused.store(true, Ordering::SeqCst);
        tracing::warn!("admission paused by operator");
    }

    pub fn resume(&self) {
        self.admission.paused.store(false, Ordering::SeqCst);
        tracing::warn!("admission resumed by operator");
    }

    pub fn is_paused(&self) -> bool {
        self.admission.paused()
    }

    /// Replaces the token bucket.
    pub fn set_rate(&self, per_sec: u32, burst: u32) {
        *lock(&self.admission.limiter) = Arc::new(limiter(per_sec, burst));
        self.admission.rate_per_sec.store(u64::from(per_sec), Ordering::SeqCst);
        self.admission.burst.store(u64::from(burst), Ordering::SeqCst);
        tracing::warn!(per_sec, burst, "admission rate changed by operator");
    }

    /// (rate per second, burst) in force.
    pub fn rate(&self) -> (u64, u64) {
        (self.admission.rate_per_sec.load(Ordering::SeqCst), self.admission.burst.load(Ordering::SeqCst))
    }

    /// (issued, admitted) sequence numbers.
    pub async fn counters(&self) -> (u64, u64) {
        (self.admission.queue.issued().await, self.admission.queue.cursor().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursor_never_passes_issued_nor_goes_back() {
        let q = InMemoryQueue::default();
        assert_eq!(q.advance(5).await, 0);
        for _ in 0..3 {
            q.next_seq().await;
        }
        assert_eq!(q.advance(2).await, 2);
        assert_eq!(q.advance(10).await, 3);
        assert_eq!(q.cursor().await, 3);
    }
}
