//! The admission engine: a governor token bucket moves the serving cursor forward, a tick at a time
//! and in batches, while visitors wait; the measured rate of that movement gives the ETA. Also the
//! runtime controls (pause, rate) and the `GatewayHandle` through which an operator reaches them.
//!
//! The bucket is per gateway node. With several nodes sharing one `QueueState`, only the node that
//! drives the cursor (`QueueState::drives_cursor`, the lease holder) takes tokens, so the rate is
//! that node's; the others measure the rate from the cursor they see move.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kyufu_http::Readiness;

use crate::backoff::Backoff;
use crate::controls::{Control, Controls};
use crate::launch::Launch;
use crate::liveness::Liveness;
use crate::metrics::GatewayMetrics;
use crate::state::{Counters, QueueState, StateError};

/// Time constant of the admission-rate average: long enough to smooth the one-token-per-tick
/// steps, short enough to follow a rate change within seconds.
const RATE_TAU_SECS: f64 = 5.0;

/// Upper bound of one advance, so a huge bucket can never make a tick loop for long.
const MAX_BATCH: u64 = 100_000;

/// The admission rate and its bucket. A new bucket starts full, so raising the rate admits up to
/// `burst` visitors at once.
struct RateSetting {
    per_sec: u32,
    burst: u32,
    bucket: Option<Arc<DefaultDirectRateLimiter>>,
}

impl RateSetting {
    fn new(per_sec: u32, burst: u32) -> Self {
        let bucket = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)))
        });
        RateSetting { per_sec, burst, bucket }
    }
}

pub(crate) struct Admission {
    pub(crate) state: Arc<dyn QueueState>,
    paused: AtomicBool,
    rate: RwLock<RateSetting>,
    /// Measured admissions per second as f64 bits; NaN until there is a measurement.
    measured: AtomicU64,
    /// Operator's message to waiting visitors.
    message: RwLock<Option<String>>,
    metrics: GatewayMetrics,
    /// Passes issued within the last pass lifetime (`kyufu_gateway_active_sessions`).
    sessions: Mutex<PassWindow>,
    /// The `queue_state` check: false while ticks cannot reach the queue state.
    readiness: Readiness,
    /// Who is still there just ahead of the cursor; abandoned numbers are skipped.
    pub(crate) liveness: Liveness,
    /// Slows admission while intake answers 5xx or slowly (AIMD on the operator's rate).
    pub(crate) backoff: Backoff,
    /// The opening time and the pre-queue order.
    pub(crate) launch: Launch,
    /// Queue everyone, fail open, session cap.
    pub(crate) controls: Controls,
    /// Visitors the cursor admitted within the last pass lifetime: what the session cap limits.
    admitted: Mutex<PassWindow>,
    /// The shared count of spent passes last seen (epoch, count): its growth is given back to
    /// `admitted` by the node moving the cursor.
    spent_seen: Mutex<Option<(u32, u64)>>,
    /// Shared queue: the highest skipped number learnt from the others, and how far the shared
    /// liveness record was cleared behind the cursor.
    skipped_seen: Mutex<u64>,
    pruned_to: Mutex<u64>,
    /// Version of the shared operator controls last taken over.
    controls_version: Mutex<u64>,
}

/// Numbers ahead of the cursor whose shared liveness the cursor's node reads each tick: the most
/// one tick can judge. Beyond them the walk takes tokens without skipping.
const LIVENESS_FETCH: u64 = 4_096;
/// Most records of passed numbers cleared from the shared liveness per tick.
const LIVENESS_PRUNE: u64 = 10_000;

/// Name of the readiness check the ticker reports.
pub(crate) const QUEUE_STATE_CHECK: &str = "queue_state";

impl Admission {
    pub(crate) fn new(
        state: Arc<dyn QueueState>,
        per_sec: u32,
        burst: u32,
        pass_ttl_secs: u64,
        metrics: GatewayMetrics,
        readiness: Readiness,
    ) -> Self {
        Admission {
            state,
            paused: AtomicBool::new(false),
            rate: RwLock::new(RateSetting::new(per_sec, burst)),
            measured: AtomicU64::new(f64::NAN.to_bits()),
            message: RwLock::new(None),
            metrics,
            sessions: Mutex::new(PassWindow::new(pass_ttl_secs)),
            readiness,
            liveness: Liveness::new(1, 0),
            backoff: Backoff::new(1.0, Duration::MAX),
            launch: Launch::new(None, rand::random()),
            controls: Controls::new(0),
            admitted: Mutex::new(PassWindow::new(pass_ttl_secs)),
            spent_seen: Mutex::new(None),
            skipped_seen: Mutex::new(0),
            pruned_to: Mutex::new(0),
            controls_version: Mutex::new(0),
        }
    }

    /// Holds a pre-queue until `opens_at` (Unix seconds), ordered at opening with `seed`.
    pub(crate) fn with_launch(mut self, opens_at: Option<u64>, seed: [u8; 32]) -> Self {
        self.launch = Launch::new(opens_at, seed);
        self
    }

    /// Admits no more than `cap` visitors per pass lifetime (0: no cap).
    pub(crate) fn with_session_cap(mut self, cap: u64) -> Self {
        self.controls = Controls::new(cap);
        self
    }

    /// Visitors admitted by the cursor whose pass lifetime has not run out at `now`.
    pub(crate) fn admitted_sessions(&self, now: u64) -> u64 {
        self.admitted.lock().unwrap_or_else(|e| e.into_inner()).active(now)
    }

    /// Backs admission off to no less than `floor` of the operator's rate while intake fails or
    /// answers slower than `slow` (see `backoff`).
    pub(crate) fn with_backoff(mut self, floor: f64, slow: Duration) -> Self {
        self.backoff = Backoff::new(floor, slow);
        self
    }

    /// Skips abandoned numbers: no sign of life for `expire_after` seconds, judged within a ring of
    /// `window` numbers ahead of the cursor (see `liveness`). `expire_after == 0` turns it off.
    pub(crate) fn with_liveness(mut self, window: u64, expire_after: u64, shared: bool) -> Self {
        let liveness = Liveness::new(window, expire_after);
        self.liveness = if shared { liveness.shared() } else { liveness };
        self
    }

    /// Shared queue: passes this node's liveness news on and takes the others' in. The cursor's
    /// node reads the last sign of life of the next `LIVENESS_FETCH` numbers and may judge those
    /// in this tick's walk; the others learn which numbers were skipped.
    async fn exchange_liveness(&self, cursor: u64) -> Result<(), StateError> {
        let live = &self.liveness;
        let news = live.take_news();
        let leads = self.state.drives_cursor();
        let mut skipped_seen = self.skipped_seen.lock().unwrap_or_else(|e| e.into_inner()).to_owned();
        let mut pruned = self.pruned_to.lock().unwrap_or_else(|e| e.into_inner()).to_owned();
        let window = live.window();
        let fetch_to = cursor.saturating_add(window.min(LIVENESS_FETCH));
        let prune_from = pruned.max(cursor.saturating_sub(window)).saturating_add(1);
        let prune_to = cursor.min(prune_from.saturating_add(LIVENESS_PRUNE - 1));
        let report = crate::state::LivenessReport {
            seen: news.seen.clone(),
            skipped: news.skipped.clone(),
            fetch: leads.then_some((cursor.saturating_add(1), fetch_to)),
            prune: (leads && prune_from <= prune_to).then_some((prune_from, prune_to)),
            skipped_after: (!leads).then_some(skipped_seen.max(cursor.saturating_sub(window))),
            forget_skipped_below: leads.then(|| cursor.saturating_sub(window)),
        };
        let shared = match self.state.exchange_liveness(report).await {
            Ok(Some(shared)) => shared,
            // The store carries no liveness: judge nothing, keep nothing.
            Ok(None) => {
                live.distrust();
                return Ok(());
            }
            Err(e) => {
                live.restore_news(news);
                live.distrust();
                return Err(e);
            }
        };
        if leads {
            live.merge(&shared.seen, fetch_to);
            if prune_from <= prune_to {
                pruned = prune_to;
            }
        } else {
            live.distrust();
            live.mark_skipped(&shared.skipped);
            skipped_seen = shared.skipped.iter().copied().max().unwrap_or(skipped_seen).max(skipped_seen);
        }
        *self.skipped_seen.lock().unwrap_or_else(|e| e.into_inner()) = skipped_seen;
        *self.pruned_to.lock().unwrap_or_else(|e| e.into_inner()) = pruned;
        Ok(())
    }

    /// The operator's message for waiting visitors, if any.
    pub(crate) fn message(&self) -> Option<String> {
        self.message.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts a pass issued at `now` (Unix seconds) towards the active sessions.
    pub(crate) fn record_pass(&self, now: u64) {
        // A poisoned lock only means a panic mid-update of plain counters; they stay usable.
        let mut window = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        window.record(now);
        self.metrics.active_sessions.set(i64::try_from(window.active(now)).unwrap_or(i64::MAX));
    }

    /// A visitor finished and intake spent their pass (the gateway saw it answer the spend call):
    /// the session ends here at once instead of at pass expiry, and the place goes back to the
    /// session cap on whichever node moves the cursor (through the shared spent count).
    pub(crate) async fn pass_spent(&self, now: u64) {
        {
            let mut window = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            window.release(now, 1);
            self.metrics.active_sessions.set(i64::try_from(window.active(now)).unwrap_or(i64::MAX));
        }
        self.metrics.passes_spent.inc();
        if let Err(e) = self.state.spend().await {
            // The place still comes back when the pass expires.
            tracing::warn!(error = %e, "spent pass not counted in the queue state");
            return;
        }
        if let Err(e) = self.pump().await {
            tracing::warn!(error = %e, "admission after a spent pass failed");
        }
    }

    /// Whether the queue is open at `now`; at the first call at or after the opening time, draws
    /// the pre-queue as the queue state fixed it (the same for every node sharing the queue).
    pub(crate) async fn open_if_due(&self, now: u64) -> Result<bool, StateError> {
        if self.launch.due(now) {
            let (base, size) = self.state.close_prequeue(self.launch.base()).await?;
            self.launch.open_with(base, size);
        }
        Ok(self.launch.is_open())
    }

    /// Gives back to the session cap the passes spent since the last look.
    fn give_back_spent(&self, now: u64, counters: &Counters) {
        let mut seen = self.spent_seen.lock().unwrap_or_else(|e| e.into_inner());
        let (fresh, base) = match *seen {
            Some((epoch, before)) if epoch == counters.epoch => {
                (counters.spent.saturating_sub(before), before.max(counters.spent))
            }
            // First look, or a new numbering: a baseline, nothing to give back yet.
            _ => (0, counters.spent),
        };
        *seen = Some((counters.epoch, base));
        if fresh > 0 {
            self.admitted.lock().unwrap_or_else(|e| e.into_inner()).release(now, fresh);
        }
    }

    fn refresh_sessions(&self, now: u64) {
        let mut window = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.metrics.active_sessions.set(i64::try_from(window.active(now)).unwrap_or(i64::MAX));
    }

    fn bucket(&self) -> Option<Arc<DefaultDirectRateLimiter>> {
        // A poisoned lock only means a writer panicked mid-assignment of a whole value; the value
        // is still consistent.
        self.rate.read().unwrap_or_else(|e| e.into_inner()).bucket.clone()
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Whether the cursor can move at all right now. Asked on every waiting poll (for its ETA), so
    /// it looks at the bucket without taking a reference to it.
    fn admitting(&self) -> bool {
        let has_bucket = || self.rate.read().unwrap_or_else(|e| e.into_inner()).bucket.is_some();
        !self.is_paused() && has_bucket() && self.launch.is_open()
    }

    /// Takes what the bucket holds, up to the number waiting, and advances the cursor by it.
    /// Called every tick, and on join so that a lone visitor is admitted in the join answer.
    pub(crate) async fn pump(&self) -> Result<(), StateError> {
        let bucket = self.bucket();
        self.pump_at(crate::queue::now_secs(), |max| bucket.as_deref().map_or(0, |b| take_tokens(b, max))).await
    }

    /// `pump` at `now` (Unix seconds) with tokens from `take(max)`: the bucket's clock and the
    /// wall clock are the only things the launch simulation replaces.
    pub(crate) async fn pump_at(&self, now: u64, take: impl FnOnce(u64) -> u64) -> Result<(), StateError> {
        let counters = self.state.counters().await?;
        self.give_back_spent(now, &counters);
        // Before the opening time nobody is admitted; the first pump after it draws the pre-queue.
        // Another node holds the shared cursor: spending tokens here would admit nobody.
        if !self.open_if_due(now).await? || self.is_paused() || !self.state.drives_cursor() {
            return Ok(());
        }
        let headroom = self.controls.headroom(self.admitted_sessions(now));
        let waiting = counters.waiting().min(MAX_BATCH).min(headroom);
        // Intake overloaded: only the backed-off fraction of the operator's rate is used.
        let tokens = self.backoff.scale(take(waiting));
        if tokens > 0 {
            // Abandoned numbers just ahead of the cursor are passed over without a token.
            let walk = self.liveness.walk(counters.cursor, counters.issued, tokens, now);
            // Concurrent pumps may both take a token for the last visitor; the store clips the
            // cursor at `issued` and the spare token is simply lost.
            let moved = self.state.advance(walk.moved).await?;
            let skipped = walk.skipped.min(moved);
            self.metrics.tickets_expired.inc_by(skipped);
            self.metrics.admitted.inc_by(moved - skipped);
            self.admitted.lock().unwrap_or_else(|e| e.into_inner()).record_n(now, moved - skipped);
        }
        Ok(())
    }

    /// Measured admissions per second, if known.
    pub(crate) fn measured_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.measured.load(Ordering::Relaxed));
        rate.is_finite().then_some(rate)
    }

    /// Seconds until `position` visitors have been admitted at the measured rate; `None` while
    /// paused, closed, or before anything was measured.
    pub(crate) fn eta_secs(&self, position: u64) -> Option<u64> {
        if !self.admitting() {
            return None;
        }
        eta_from_rate(position, self.measured_rate()?)
    }

    /// Advances the cursor every `tick` and measures how fast it moves, until the task is dropped.
    pub(crate) async fn run_ticker(self: Arc<Self>, tick: Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut meter = RateMeter::new(RATE_TAU_SECS);
        let mut failing = false;
        loop {
            interval.tick().await;
            self.backoff.tick(Instant::now());
            let per_sec = self.rate.read().unwrap_or_else(|e| e.into_inner()).per_sec;
            let effective = if self.is_paused() { 0.0 } else { f64::from(per_sec) * self.backoff.factor() };
            self.metrics.effective_rate.set(effective);
            let result = match self.pump().await {
                Ok(()) => self.state.refresh().await,
                Err(e) => Err(e),
            };
            // Liveness news go out (and come in, for the next walk) only while the store answers,
            // so an outage costs one failing call per tick, as before; likewise operator changes
            // made on other nodes come in.
            let result = match result {
                Ok(counters) => match self.tick_liveness(counters.cursor).await {
                    Ok(()) => self.sync_controls().await.map(|()| counters),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            self.readiness.set_check(QUEUE_STATE_CHECK, result.is_ok());
            self.refresh_sessions(crate::queue::now_secs());
            match result {
                Ok(counters) => {
                    if failing {
                        tracing::info!("queue state reachable again");
                        failing = false;
                    }
                    self.observe(&mut meter, counters);
                }
                // Logged once per outage rather than twenty times a second.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "admission tick failed");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Takes over operator changes made on other nodes sharing the queue (and, on the first tick,
    /// whatever the operators set before this node started).
    async fn sync_controls(self: &Arc<Self>) -> Result<(), StateError> {
        if !self.state.is_shared() {
            return Ok(());
        }
        let known = *self.controls_version.lock().unwrap_or_else(|e| e.into_inner());
        let Some((version, fields)) = self.state.shared_controls(known).await? else { return Ok(()) };
        let handle = GatewayHandle { admission: self.clone() };
        for change in Control::parse(&fields) {
            if handle.apply(&change).await {
                tracing::info!(?change, "operator change taken over from the shared queue state");
            }
        }
        *self.controls_version.lock().unwrap_or_else(|e| e.into_inner()) = version;
        Ok(())
    }

    /// The liveness exchange of a shared queue, after the tick's walk: what it reads serves the
    /// next walks (their numbers are judged against records at most a tick old).
    async fn tick_liveness(&self, cursor: u64) -> Result<(), StateError> {
        if !self.liveness.is_shared() {
            return Ok(());
        }
        self.exchange_liveness(cursor).await
    }

    fn observe(&self, meter: &mut RateMeter, counters: Counters) {
        self.observe_at(Instant::now(), meter, counters);
    }

    /// Feeds the rate meter the cursor at `now` and publishes the measured rate.
    pub(crate) fn observe_at(&self, now: Instant, meter: &mut RateMeter, counters: Counters) {
        meter.observe(now, counters.cursor, counters.waiting() > 0, self.admitting());
        let rate = meter.rate();
        self.measured.store(rate.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
        self.metrics.admission_rate.set(rate.unwrap_or(0.0));
        self.metrics.queue_length.set(i64::try_from(counters.waiting()).unwrap_or(i64::MAX));
    }
}

/// Takes up to `max` tokens from `bucket`, one cell at a time; generic over the clock so the launch
/// simulation runs the same bucket on virtual time.
pub(crate) fn take_tokens<C>(
    bucket: &RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, C, governor::middleware::NoOpMiddleware<C::Instant>>,
    max: u64,
) -> u64
where
    C: governor::clock::Clock,
{
    let mut tokens = 0;
    while tokens < max && bucket.check().is_ok() {
        tokens += 1;
    }
    tokens
}

fn eta_from_rate(position: u64, rate: f64) -> Option<u64> {
    // Below one admission a day the estimate means nothing to a visitor (NaN is refused too).
    if rate.is_nan() || rate <= 1e-5 {
        return None;
    }
    let secs = (position as f64 / rate).ceil();
    (secs.is_finite() && secs < 1e9).then_some(secs as u64)
}

/// Passes issued per second over the last pass lifetime: the number still valid (used up or
/// abandoned passes included) is the sum. The gateway keeps no per-visitor state, so this is the
/// exact count of passes this node issued that have not expired, in at most `ttl` small entries.
#[derive(Debug)]
pub(crate) struct PassWindow {
    ttl: u64,
    /// (second, passes issued in it), oldest first.
    seconds: VecDeque<(u64, u64)>,
    total: u64,
}

impl PassWindow {
    pub(crate) fn new(ttl: u64) -> Self {
        PassWindow { ttl, seconds: VecDeque::new(), total: 0 }
    }

    pub(crate) fn record(&mut self, now: u64) {
        self.record_n(now, 1);
    }

    /// Records `count` passes (or admissions) at `now`.
    pub(crate) fn record_n(&mut self, now: u64, count: u64) {
        self.prune(now);
        if count == 0 {
            return;
        }
        match self.seconds.back_mut() {
            Some((sec, n)) if *sec >= now => *n += count,
            _ => self.seconds.push_back((now, count)),
        }
        self.total += count;
    }

    /// Takes back up to `count` passes that ended early (spent), oldest first: they would have
    /// expired first, so the window never frees a place later than it would have.
    pub(crate) fn release(&mut self, now: u64, count: u64) {
        self.prune(now);
        let mut left = count;
        while left > 0 {
            let Some((_, n)) = self.seconds.front_mut() else { break };
            let take = left.min(*n);
            *n -= take;
            self.total -= take;
            left -= take;
            if *n == 0 {
                self.seconds.pop_front();
            }
        }
    }

    /// Passes issued at `s` with `now < s + ttl`, i.e. not yet expired.
    pub(crate) fn active(&mut self, now: u64) -> u64 {
        self.prune(now);
        self.total
    }

    fn prune(&mut self, now: u64) {
        while let Some(&(sec, n)) = self.seconds.front() {
            if sec.saturating_add(self.ttl) > now {
                break;
            }
            self.seconds.pop_front();
            self.total -= n;
        }
    }
}

/// Exponentially weighted admissions per second, sampled only over intervals in which visitors
/// were waiting and admission was open: an empty queue or a pause says nothing about capacity.
/// Bias-corrected (divided by the accumulated weight) so the first samples are not pulled to zero.
#[derive(Debug)]
pub(crate) struct RateMeter {
    tau_secs: f64,
    weighted: f64,
    weight: f64,
    last: Option<(Instant, u64, bool)>,
}

impl RateMeter {
    pub(crate) fn new(tau_secs: f64) -> Self {
        RateMeter { tau_secs, weighted: 0.0, weight: 0.0, last: None }
    }

    /// Records the cursor at `now`. `backlog`: visitors are waiting now; `open`: admission is
    /// neither paused nor closed.
    pub(crate) fn observe(&mut self, now: Instant, cursor: u64, backlog: bool, open: bool) {
        if let Some((then, then_cursor, then_backlog)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if then_backlog && open && dt > 0.0 {
                let sample = cursor.saturating_sub(then_cursor) as f64 / dt;
                let alpha = 1.0 - (-dt / self.tau_secs).exp();
                self.weighted += alpha * (sample - self.weighted);
                self.weight += alpha * (1.0 - self.weight);
            }
        }
        self.last = Some((now, cursor, backlog && open));
    }

    pub(crate) fn rate(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.weighted / self.weight)
    }
}

/// Runtime control of a running gateway: pause, resume, change the rate, read the numbers. Cheap
/// to clone; every clone controls the same gateway. An operator API (authenticated) is meant to
/// sit on top of this.
#[derive(Clone)]
pub struct GatewayHandle {
    pub(crate) admission: Arc<Admission>,
}

/// What an operator sees of the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub counters: Counters,
    pub paused: bool,
    pub rate_per_sec: u32,
    pub burst: u32,
    /// Measured admissions per second while visitors wait; `None` before any measurement.
    pub measured_rate: Option<f64>,
    /// Joins are never admitted in their own answer.
    pub queue_everyone: bool,
    /// Everyone is admitted without queuing until then (Unix seconds); `None` when off.
    pub fail_open_until: Option<u64>,
    /// Most visitors admitted per pass lifetime; `None`: no cap.
    pub session_cap: Option<u64>,
    /// Visitors admitted by the cursor within the last pass lifetime (what the cap counts).
    pub admitted_sessions: u64,
    /// Opening time of the pre-queue (Unix seconds), if one was set.
    pub opens_at: Option<u64>,
    /// The cursor may move: no opening time, or the pre-queue was drawn.
    pub opened: bool,
}

/// Why the opening time could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpeningError {
    #[error(transparent)]
    AlreadyOpened(#[from] crate::launch::AlreadyOpened),
    #[error(transparent)]
    State(#[from] StateError),
}

impl GatewayHandle {
    /// Stops admitting: the cursor stays where it is; joins and polls still answer.
    pub fn pause(&self) {
        self.admission.paused.store(true, Ordering::Relaxed);
        self.admission.metrics.paused.set(1);
        tracing::info!("admission paused");
    }

    /// Admits again at the configured rate.
    pub fn resume(&self) {
        self.admission.paused.store(false, Ordering::Relaxed);
        self.admission.metrics.paused.set(0);
        tracing::info!("admission resumed");
    }

    pub fn is_paused(&self) -> bool {
        self.admission.is_paused()
    }

    /// Sets the admission rate; `per_sec` 0 closes admission (ETA unknown), `burst` 0 counts as 1.
    /// The new bucket starts full, so up to `burst` waiting visitors are admitted at once.
    pub fn set_rate(&self, per_sec: u32, burst: u32) {
        *self.admission.rate.write().unwrap_or_else(|e| e.into_inner()) = RateSetting::new(per_sec, burst);
        tracing::info!(per_sec, burst, "admission rate set");
    }

    /// The current rate setting, `(per_sec, burst)`.
    pub fn rate(&self) -> (u32, u32) {
        let setting = self.admission.rate.read().unwrap_or_else(|e| e.into_inner());
        (setting.per_sec, setting.burst)
    }

    /// Shows `message` to every waiting visitor (None clears it).
    pub fn set_message(&self, message: Option<String>) {
        *self.admission.message.write().unwrap_or_else(|e| e.into_inner()) = message;
        tracing::info!("operator message changed");
    }

    pub fn message(&self) -> Option<String> {
        self.admission.message()
    }

    /// Queue everyone (`true`): no join is admitted in its own answer, even at an idle door.
    pub fn set_queue_everyone(&self, on: bool) {
        self.admission.controls.set_queue_everyone(on);
        tracing::info!(on, "queue-everyone changed");
    }

    /// Admits everyone at once, without the queue state, until `until` (Unix seconds); it ends by
    /// itself then. 0 ends it now.
    pub fn set_fail_open_until(&self, until: u64) {
        self.admission.controls.set_fail_open_until(until);
        tracing::info!(until, "fail-open changed");
    }

    /// Admits no more than `cap` visitors per pass lifetime from now on (0: no cap).
    pub fn set_session_cap(&self, cap: u64) {
        self.admission.controls.set_session_cap(cap);
        tracing::info!(cap, "session cap changed");
    }

    /// Sets the opening time (Unix seconds): until then visitors join the pre-queue. Refused once
    /// the pre-queue has been drawn.
    pub async fn set_opening(&self, opens_at: u64) -> Result<(), OpeningError> {
        let issued = self.admission.state.counters().await?.issued;
        self.admission.launch.set_opening(opens_at, issued)?;
        tracing::info!(opens_at, "opening time set");
        Ok(())
    }

    /// Passes an operator change (already made on this node) to every node sharing the queue;
    /// they take it over at their next tick. On a queue of its own there is no one to tell.
    pub async fn share(&self, change: &Control) -> Result<(), StateError> {
        self.admission.state.publish_controls(&change.fields()).await
    }

    /// Makes `change` on this node, unless it is already so (re-applying a rate would refill the
    /// bucket). Returns whether anything changed.
    pub(crate) async fn apply(&self, change: &Control) -> bool {
        let now = crate::queue::now_secs();
        let controls = &self.admission.controls;
        match change {
            Control::Paused(on) if *on != self.is_paused() => {
                if *on {
                    self.pause();
                } else {
                    self.resume();
                }
            }
            Control::Rate { per_sec, burst } if (*per_sec, *burst) != self.rate() => self.set_rate(*per_sec, *burst),
            Control::Message(text) if *text != self.message() => self.set_message(text.clone()),
            Control::QueueEveryone(on) if *on != controls.queue_everyone() => self.set_queue_everyone(*on),
            Control::FailOpenUntil(until) if controls.fail_open_until(now) != Some(*until).filter(|u| *u > now) => {
                self.set_fail_open_until(*until);
            }
            Control::SessionCap(cap) if controls.session_cap() != Some(*cap).filter(|c| *c > 0) => self.set_session_cap(*cap),
            Control::OpensAt(at) if self.admission.launch.opens_at() != Some(*at) => {
                if let Err(e) = self.set_opening(*at).await {
                    tracing::warn!(error = %e, "shared opening time not taken over");
                    return false;
                }
            }
            _ => return false,
        }
        true
    }

    /// The queue numbers and controls now.
    pub async fn snapshot(&self) -> Result<QueueSnapshot, StateError> {
        let counters = self.admission.state.counters().await?;
        let (rate_per_sec, burst) = self.rate();
        let now = crate::queue::now_secs();
        let controls = &self.admission.controls;
        Ok(QueueSnapshot {
            counters,
            paused: self.is_paused(),
            rate_per_sec,
            burst,
            measured_rate: self.admission.measured_rate(),
            queue_everyone: controls.queue_everyone(),
            fail_open_until: controls.fail_open_until(now),
            session_cap: controls.session_cap(),
            admitted_sessions: self.admission.admitted_sessions(now),
            opens_at: self.admission.launch.opens_at(),
            opened: self.admission.launch.is_open(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_knows_nothing_until_visitors_wait_under_open_admission() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = RateMeter::new(5.0);
        assert_eq!(m.rate(), None);
        m.observe(at(0), 0, false, true);
        m.observe(at(1000), 0, false, true);
        assert_eq!(m.rate(), None, "an empty queue measures nothing");
        m.observe(at(2000), 0, true, false);
        m.observe(at(3000), 0, true, false);
        assert_eq!(m.rate(), None, "a paused queue measures nothing");
        m.observe(at(4000), 0, true, true);
        m.observe(at(4100), 0, true, true);
        assert_eq!(m.rate(), Some(0.0), "waiting without movement measures zero");
        assert_eq!(eta_from_rate(3, 0.0), None, "and zero gives no ETA");
    }

    #[test]
    fn meter_converges_on_the_cursor_rate() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(5.0);
        // Two admissions per second in single steps every 500 ms, sampled every 50 ms for 10 s.
        let mut cursor = 0;
        for tick in 0..=200u64 {
            if tick > 0 && tick % 10 == 0 {
                cursor += 1;
            }
            m.observe(t0 + Duration::from_millis(tick * 50), cursor, true, true);
        }
        let rate = m.rate().unwrap_or(0.0);
        assert!((1.6..2.4).contains(&rate), "{rate}");
        assert_eq!(eta_from_rate(10, 2.0), Some(5));
        assert_eq!(eta_from_rate(1, 3.0), Some(1), "rounded up: never promise sooner than likely");
    }

    #[test]
    fn pass_window_counts_passes_until_they_expire() {
        let mut w = PassWindow::new(100);
        assert_eq!(w.active(1_000), 0);
        w.record(1_000);
        w.record(1_000);
        w.record(1_050);
        assert_eq!(w.active(1_050), 3);
        assert_eq!(w.active(1_099), 3, "a pass from 1000 is valid until 1100");
        assert_eq!(w.active(1_100), 1, "the two from 1000 expired");
        // A clock step backwards does not lose or double count.
        w.record(1_040);
        assert_eq!(w.active(1_100), 2);
        assert_eq!(w.active(10_000), 0);
        assert!(w.seconds.is_empty());
    }

    #[tokio::test]
    async fn ticker_reports_queue_state_readiness() {
        let state = Arc::new(FailingState::default());
        let metrics = GatewayMetrics::new(&prometheus::Registry::new());
        let readiness = Readiness::ready();
        let admission = Arc::new(Admission::new(state.clone(), 10, 10, 600, metrics, readiness.clone()));
        let ticker = tokio::spawn(admission.clone().run_ticker(Duration::from_millis(5)));
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
        assert!(wait_for(true).await);
        state.down.store(true, Ordering::Relaxed);
        assert!(wait_for(false).await, "not ready while the queue state is unreachable");
        assert_eq!(readiness.failing(), vec![QUEUE_STATE_CHECK]);
        state.down.store(false, Ordering::Relaxed);
        assert!(wait_for(true).await, "ready again once it answers");
        ticker.abort();
    }

    /// An in-memory queue state that can be switched off.
    #[derive(Default)]
    struct FailingState {
        inner: crate::state::MemoryQueueState,
        down: AtomicBool,
    }

    #[async_trait::async_trait]
    impl QueueState for FailingState {
        async fn join(&self) -> Result<crate::state::Slot, StateError> {
            self.check()?;
            self.inner.join().await
        }
        async fn counters(&self) -> Result<Counters, StateError> {
            self.check()?;
            self.inner.counters().await
        }
        async fn advance(&self, n: u64) -> Result<u64, StateError> {
            self.check()?;
            self.inner.advance(n).await
        }
        async fn spend(&self) -> Result<(), StateError> {
            self.check()?;
            self.inner.spend().await
        }
    }

    impl FailingState {
        fn check(&self) -> Result<(), StateError> {
            if self.down.load(Ordering::Relaxed) {
                Err(StateError::Unavailable("switched off".into()))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn pump_admits_what_the_bucket_holds_and_stops_when_paused() {
        let state = Arc::new(crate::state::MemoryQueueState::new());
        let metrics = GatewayMetrics::new(&prometheus::Registry::new());
        let admission = Arc::new(Admission::new(state.clone(), 1, 3, 600, metrics, Readiness::ready()));
        let handle = GatewayHandle { admission: admission.clone() };
        for _ in 0..5 {
            state.join().await.expect("join");
        }
        handle.pause();
        admission.pump().await.expect("pump");
        assert_eq!(state.counters().await.expect("counters").cursor, 0, "paused");
        handle.resume();
        admission.pump().await.expect("pump");
        assert_eq!(state.counters().await.expect("counters").cursor, 3, "the full bucket, in one batch");
        handle.set_rate(0, 0);
        assert_eq!(admission.eta_secs(1), None, "closed");
        handle.set_rate(1000, 10);
        admission.pump().await.expect("pump");
        assert_eq!(state.counters().await.expect("counters").cursor, 5, "never past issued");
    }
}
