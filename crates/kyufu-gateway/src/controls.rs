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

/// One operator change, as the gateway nodes sharing a queue pass it on (`QueueState::
/// publish_controls`): field-wise, so two operators changing different things on different nodes
/// do not undo each other; the last write of a field wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Paused(bool),
    Rate { per_sec: u32, burst: u32 },
    /// `None` clears the message.
    Message(Option<String>),
    QueueEveryone(bool),
    /// Unix seconds; 0 ends fail-open.
    FailOpenUntil(u64),
    SessionCap(u64),
    /// Unix seconds.
    OpensAt(u64),
}

impl Control {
    /// The shared fields this change writes.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        match self {
            Control::Paused(on) => vec![("paused", flag(*on))],
            Control::Rate { per_sec, burst } => vec![("rate", format!("{per_sec}/{burst}"))],
            Control::Message(text) => vec![("message", text.clone().unwrap_or_default())],
            Control::QueueEveryone(on) => vec![("queue_everyone", flag(*on))],
            Control::FailOpenUntil(until) => vec![("fail_open_until", until.to_string())],
            Control::SessionCap(cap) => vec![("session_cap", cap.to_string())],
            Control::OpensAt(at) => vec![("opens_at", at.to_string())],
        }
    }

    /// The changes a set of shared fields holds; unknown or unreadable fields are ignored (a newer
    /// node may share more).
    pub fn parse(fields: &[(String, String)]) -> Vec<Control> {
        let flag = |v: &str| match v {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        };
        fields
            .iter()
            .filter_map(|(name, value)| match name.as_str() {
                "paused" => flag(value).map(Control::Paused),
                "rate" => {
                    let (per_sec, burst) = value.split_once('/')?;
                    Some(Control::Rate { per_sec: per_sec.parse().ok()?, burst: burst.parse().ok()? })
                }
                "message" => Some(Control::Message(Some(value.clone()).filter(|m| !m.is_empty()))),
                "queue_everyone" => flag(value).map(Control::QueueEveryone),
                "fail_open_until" => value.parse().ok().map(Control::FailOpenUntil),
                "session_cap" => value.parse().ok().map(Control::SessionCap),
                "opens_at" => value.parse().ok().map(Control::OpensAt),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn every_change_reads_back_as_itself() {
        let all = [
            Control::Paused(true),
            Control::Paused(false),
            Control::Rate { per_sec: 150, burst: 300 },
            Control::Message(Some("ただいま混み合っています".into())),
            Control::Message(None),
            Control::QueueEveryone(true),
            Control::FailOpenUntil(1_800_000_000),
            Control::SessionCap(5_000),
            Control::OpensAt(1_800_000_000),
        ];
        for c in all {
            let fields: Vec<(String, String)> = c.fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            assert_eq!(Control::parse(&fields), vec![c.clone()], "{fields:?}");
        }
        let junk = [("rate".to_owned(), "x/1".to_owned()), ("paused".to_owned(), "yes".to_owned()), ("future".to_owned(), "1".to_owned())];
        assert_eq!(Control::parse(&junk), Vec::new());
    }
}
