//! Operator switches beside pause and rate: "queue everyone", "fail open until", and the session
//! cap. Plain atomics read on the hot path; changed through `GatewayHandle` (the admin API).
//!
//! - **Queue everyone**: a join never admits in its own answer, so even at an idle door every
//!   visitor gets a ticket and is admitted by the ticker in cursor order.
//! - **Fail open until T**: until T every join and every waiting poll gets a pass at once, without
//!   touching the queue state (for when the waiting room itself is the problem). Ends by itself.
//! - **Session cap**: the cursor admits no more than `cap` visitors per pass lifetime (admissions
//!   whose pass would still be valid), the second guard beside the token bucket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Controls {
    queue_everyone: AtomicBool,
    /// Unix seconds; fail-open while `now < fail_open_until`.
    fail_open_until: AtomicU64,
    /// 0: no cap.
    session_cap: AtomicU64,
}

impl Controls {
    pub(crate) fn new(session_cap: u64) -> Self {
        let c = Controls::default();
        c.session_cap.store(session_cap, Ordering::Relaxed);
        c
    }

    pub(crate) fn queue_everyone(&self) -> bool {
        self.queue_everyone.load(Ordering::Relaxed)
    }

    pub(crate) fn set_queue_everyone(&self, on: bool) {
        self.queue_everyone.store(on, Ordering::Relaxed);
    }

    /// Whether admission fails open at `now`.
    pub(crate) fn fail_open(&self, now: u64) -> bool {
        now < self.fail_open_until.load(Ordering::Relaxed)
    }

    /// The end of fail-open, if it is still on at `now`.
    pub(crate) fn fail_open_until(&self, now: u64) -> Option<u64> {
        let until = self.fail_open_until.load(Ordering::Relaxed);
        (now < until).then_some(until)
    }

    /// Fails open until `until` (0 or a past time: off).
    pub(crate) fn set_fail_open_until(&self, until: u64) {
        self.fail_open_until.store(until, Ordering::Relaxed);
    }

    /// The session cap, `None` when there is none.
    pub(crate) fn session_cap(&self) -> Option<u64> {
        Some(self.session_cap.load(Ordering::Relaxed)).filter(|&c| c > 0)
    }

    pub(crate) fn set_session_cap(&self, cap: u64) {
        self.session_cap.store(cap, Ordering::Relaxed);
    }

    /// How many more visitors the cap allows with `active` sessions (unbounded without a cap).
    pub(crate) fn headroom(&self, active: u64) -> u64 {
        self.session_cap().map_or(u64::MAX, |cap| cap.saturating_sub(active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_open_ends_by_itself() {
        let c = Controls::new(0);
        assert!(!c.fail_open(1_000));
        c.set_fail_open_until(1_060);
        assert!(c.fail_open(1_000) && c.fail_open(1_059));
        assert_eq!(c.fail_open_until(1_000), Some(1_060));
        assert!(!c.fail_open(1_060), "expired at the time given, with nobody switching it off");
        assert_eq!(c.fail_open_until(1_060), None);
    }

    #[test]
    fn session_cap_headroom() {
        let c = Controls::new(0);
        assert_eq!(c.headroom(1_000_000), u64::MAX, "no cap");
        c.set_session_cap(100);
        assert_eq!((c.headroom(40), c.headroom(100), c.headroom(150)), (60, 0, 0));
        c.set_session_cap(0);
        assert_eq!(c.session_cap(), None);
    }
}
