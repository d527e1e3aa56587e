//! Admission slows down when intake is overloaded (AIMD). The proxy reports every exchange with
//! intake: a 5xx, a failed exchange, or a response slower than `slow` (measured from the end of
//! the upload, so a phone's slow upload is not held against intake) halves the admission factor,
//! at most once per `COOLDOWN`, never below `floor`. While intake stays healthy the factor grows back
//! by `RECOVER_PER_SEC` per second up to 1, i.e. to the operator's rate. The effective rate is the
//! operator's rate times the factor; the pump drops the surplus tokens, carrying fractions over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one cut per this interval: one burst of errors is one signal, not twenty.
const COOLDOWN: Duration = Duration::from_secs(1);
/// Additive increase of the factor per healthy second (from 0.5 back to 1 in 2.5 s).
const RECOVER_PER_SEC: f64 = 0.2;

#[derive(Debug)]
struct Inner {
    factor: f64,
    last_cut: Option<Instant>,
    last_tick: Option<Instant>,
    /// Fraction of a token carried to the next pump.
    carry: f64,
}

#[derive(Debug)]
pub(crate) struct Backoff {
    floor: f64,
    slow: Duration,
    inner: Mutex<Inner>,
}

impl Backoff {
    /// `floor` in (0, 1]: the lowest fraction of the operator's rate; 1 turns backing off off.
    pub(crate) fn new(floor: f64, slow: Duration) -> Self {
        let floor = if floor.is_finite() { floor.clamp(0.01, 1.0) } else { 1.0 };
        Backoff { floor, slow, inner: Mutex::new(Inner { factor: 1.0, last_cut: None, last_tick: None, carry: 0.0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain numbers: usable after a panic mid-update.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One exchange with intake: `healthy` is false for a 5xx or a failed exchange; `latency` is
    /// the time intake took to answer once it had the whole request.
    pub(crate) fn observe(&self, healthy: bool, latency: Duration, now: Instant) {
        if healthy && latency <= self.slow {
            return;
        }
        let mut inner = self.lock();
        if inner.last_cut.is_some_and(|t| now.saturating_duration_since(t) < COOLDOWN) {
            return;
        }
        inner.factor = (inner.factor * 0.5).max(self.floor);
        inner.last_cut = Some(now);
    }

    /// Grows the factor back after a healthy spell; called every admission tick.
    pub(crate) fn tick(&self, now: Instant) {
        let mut inner = self.lock();
        let since = inner.last_tick.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        inner.last_tick = Some(now);
        if inner.last_cut.is_some_and(|t| now.saturating_duration_since(t) < COOLDOWN) {
            return;
        }
        inner.factor = (inner.factor + RECOVER_PER_SEC * since.as_secs_f64()).min(1.0);
    }

    /// The fraction of the operator's rate admitted now.
    pub(crate) fn factor(&self) -> f64 {
        self.lock().factor
    }

    /// Of `tokens` taken from the operator's bucket, how many to use now.
    pub(crate) fn scale(&self, tokens: u64) -> u64 {
        let mut inner = self.lock();
        if inner.factor >= 1.0 {
            inner.carry = 0.0;
            return tokens;
        }
        let exact = tokens as f64 * inner.factor + inner.carry;
        let whole = exact.floor();
        inner.carry = exact - whole;
        // `whole <= tokens` since factor < 1 and carry < 1.
        (whole as u64).min(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_halve_down_to_the_floor_and_health_recovers() {
        let b = Backoff::new(0.1, Duration::from_secs(2));
        let t0 = Instant::now();
        b.observe(true, Duration::from_millis(100), t0);
        assert_eq!(b.factor(), 1.0, "fast and healthy changes nothing");
        b.observe(false, Duration::ZERO, t0);
        b.observe(false, Duration::ZERO, t0 + Duration::from_millis(500));
        assert_eq!(b.factor(), 0.5, "one cut per cooldown");
        for i in 1..10 {
            b.observe(true, Duration::from_secs(3), t0 + Duration::from_secs(i));
        }
        assert_eq!(b.factor(), 0.1, "slow answers cut too, down to the floor");
        // Ticks every 100 ms; healthy from t0+10 s on.
        let mut t = t0 + Duration::from_secs(9);
        b.tick(t);
        while t < t0 + Duration::from_secs(16) {
            t += Duration::from_millis(100);
            b.tick(t);
        }
        assert_eq!(b.factor(), 1.0, "back to the operator's rate");
    }

    #[test]
    fn scale_admits_the_fraction_over_time() {
        let b = Backoff::new(0.1, Duration::from_secs(2));
        b.observe(false, Duration::ZERO, Instant::now());
        let used: u64 = (0..100).map(|_| b.scale(1)).sum();
        assert_eq!(used, 50, "half of 100 tokens");
        assert_eq!(Backoff::new(0.1, Duration::from_secs(2)).scale(7), 7);
    }
}
