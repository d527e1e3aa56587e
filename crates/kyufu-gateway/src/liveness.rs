//! Which of the visitors just ahead of the serving cursor are still there. A bounded ring of
//! `window` slots covers the sequence numbers `cursor+1 ..= cursor+window`; slot `seq % window`
//! holds `(seq, last_seen)`. Polls and joins within the window record the time; a number that
//! enters the window is given the time it entered, so it has the full grace period from then on.
//! When the bucket moves the cursor, a number whose last sign of life is older than `expire_after`
//! is skipped without using an admission token (and counted as expired); everything else takes a
//! token. Memory is fixed by `window`, whatever the queue length, and the hot path (a poll) is one
//! short lock and one slot write.
//!
//! Why an on-time visitor is never skipped: a number is only judged once it is inside the window,
//! and it enters with a fresh timestamp; from then on every poll (at most `refresh_secs` apart)
//! renews it, and `expire_after` is several refresh intervals. Numbers the ring does not know
//! (not yet entered, or the slot reused) are never skipped.
//!
//! With the queue shared by several gateway nodes (`shared`), a visitor may poll any node, so each
//! node also keeps the signs of life it saw since the last exchange (`take_news`), and every tick
//! the nodes exchange them through the queue state: everyone publishes what it saw, the node moving
//! the cursor reads the last sign of life of the numbers just ahead of it (`merge`) and publishes
//! what it skipped, and the others learn the skipped numbers (`mark_skipped`) so those tickets are
//! refused on every node. The cursor's node judges only numbers it has read from the shared record
//! this tick (`trusted_until`); beyond them it takes tokens as if skipping were off.

use std::collections::HashMap;
use std::sync::Mutex;

/// Slot value marking a number the cursor skipped: its ticket is refused (410) afterwards.
const SKIPPED: u64 = u64::MAX;

#[derive(Debug)]
struct Ring {
    slots: Vec<(u64, u64)>,
    /// Highest sequence number that has entered the window (been given a timestamp).
    entered: u64,
    /// Numbers above this are never skipped: on a shared queue, the highest number whose last sign
    /// of life on every node was read this tick; `u64::MAX` on a node of its own.
    trusted_until: u64,
    /// Shared queue only: signs of life seen here since the last exchange (number → time), and
    /// numbers this node's walks skipped since then.
    seen_news: HashMap<u64, u64>,
    skipped_news: Vec<u64>,
}

/// The liveness window. `expire_after == 0` turns skipping off.
#[derive(Debug)]
pub(crate) struct Liveness {
    window: u64,
    expire_after: u64,
    shared: bool,
    ring: Mutex<Ring>,
}

/// What a node passes on at an exchange: signs of life seen here, and numbers skipped here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct News {
    pub seen: Vec<(u64, u64)>,
    pub skipped: Vec<u64>,
}

/// How a cursor move splits into admitted and skipped numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walk {
    /// How far the cursor moves in total.
    pub moved: u64,
    /// Of which skipped as abandoned.
    pub skipped: u64,
}

impl Liveness {
    pub(crate) fn new(window: u64, expire_after: u64) -> Self {
        let window = window.max(1);
        let len = usize::try_from(window).unwrap_or(usize::MAX);
        let ring = Ring {
            slots: vec![(0, 0); len],
            entered: 0,
            trusted_until: u64::MAX,
            seen_news: HashMap::new(),
            skipped_news: Vec::new(),
        };
        Liveness { window, expire_after, shared: false, ring: Mutex::new(ring) }
    }

    /// The queue is shared with other nodes: keep news for the exchange, and judge nothing until
    /// the shared record was read.
    pub(crate) fn shared(mut self) -> Self {
        self.shared = true;
        self.lock().trusted_until = 0;
        self
    }

    pub(crate) fn is_shared(&self) -> bool {
        self.shared && self.enabled()
    }

    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// The news since the last call, for the other nodes.
    pub(crate) fn take_news(&self) -> News {
        let mut ring = self.lock();
        let mut seen: Vec<(u64, u64)> = ring.seen_news.drain().collect();
        seen.sort_unstable();
        News { seen, skipped: std::mem::take(&mut ring.skipped_news) }
    }

    /// Puts news back that could not be sent (the queue state was unreachable); newer news wins.
    pub(crate) fn restore_news(&self, news: News) {
        let mut ring = self.lock();
        for (seq, at) in news.seen {
            let e = ring.seen_news.entry(seq).or_insert(at);
            *e = (*e).max(at);
        }
        let mut skipped = news.skipped;
        skipped.append(&mut ring.skipped_news);
        ring.skipped_news = skipped;
    }

    /// The last signs of life every node reported for the numbers up to `trusted_until` (the
    /// cursor's node read them all just now): the walk may judge those numbers, no others.
    pub(crate) fn merge(&self, seen: &[(u64, u64)], trusted_until: u64) {
        let mut ring = self.lock();
        for &(seq, at) in seen {
            let i = self.index(seq);
            let (held, last) = ring.slots[i];
            if held != seq || (last != SKIPPED && last < at) {
                ring.slots[i] = (seq, at);
            }
        }
        ring.trusted_until = trusted_until;
    }

    /// Not moving the cursor: judge nothing (if this node takes over, it reads first).
    pub(crate) fn distrust(&self) {
        self.lock().trusted_until = 0;
    }

    /// Numbers another node skipped: their tickets are refused here too.
    pub(crate) fn mark_skipped(&self, skipped: &[u64]) {
        let mut ring = self.lock();
        for &seq in skipped {
            let i = self.index(seq);
            ring.slots[i] = (seq, SKIPPED);
        }
    }

    fn enabled(&self) -> bool {
        self.expire_after > 0
    }

    fn index(&self, seq: u64) -> usize {
        // `seq % window < window`, which was a usize on construction.
        usize::try_from(seq % self.window).unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Plain numbers only: a panic mid-update leaves them usable.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sign of life from `seq` at `now`: recorded if `seq` is inside the window.
    pub(crate) fn touch(&self, seq: u64, cursor: u64, now: u64) {
        if !self.enabled() || seq <= cursor || seq - cursor > self.window {
            return;
        }
        let i = self.index(seq);
        let mut ring = self.lock();
        ring.slots[i] = (seq, now);
        if self.shared {
            ring.seen_news.insert(seq, now);
        }
    }

    /// Whether the cursor skipped `seq` (as long as the ring still remembers it).
    pub(crate) fn was_skipped(&self, seq: u64) -> bool {
        if !self.enabled() {
            return false;
        }
        let i = self.index(seq);
        self.lock().slots[i] == (seq, SKIPPED)
    }

    /// Plans a cursor move from `cursor` with `tokens` admissions available and `issued` numbers
    /// handed out: abandoned numbers are skipped for free, the others take a token. Numbers entering
    /// the window get `now` first. Skipped numbers are marked, so their tickets are refused later.
    pub(crate) fn walk(&self, cursor: u64, issued: u64, tokens: u64, now: u64) -> Walk {
        if !self.enabled() {
            return Walk { moved: tokens.min(issued.saturating_sub(cursor)), skipped: 0 };
        }
        let mut ring = self.lock();
        let top = issued.min(cursor.saturating_add(self.window));
        let mut seq = ring.entered.max(cursor);
        while seq < top {
            seq += 1;
            let i = self.index(seq);
            // A join may already have recorded a time; keep the newer one.
            if ring.slots[i].0 != seq {
                ring.slots[i] = (seq, now);
            }
        }
        ring.entered = ring.entered.max(top);
        let (mut moved, mut skipped, mut used) = (0u64, 0u64, 0u64);
        let mut seq = cursor;
        // Walk at most one window per move, so a tick stays short.
        while seq < top && used < tokens {
            seq += 1;
            moved += 1;
            let i = self.index(seq);
            let (held, seen) = ring.slots[i];
            let judged = seq <= ring.trusted_until;
            if judged && held == seq && seen != SKIPPED && now.saturating_sub(seen) > self.expire_after {
                ring.slots[i] = (seq, SKIPPED);
                skipped += 1;
                if self.shared {
                    ring.skipped_news.push(seq);
                }
            } else {
                used += 1;
            }
        }
        // Beyond the window (window smaller than the batch): plain token use.
        let rest = (tokens - used).min(issued.saturating_sub(seq));
        Walk { moved: moved + rest, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoned_numbers_are_skipped_without_a_token_and_on_time_pollers_never() {
        let live = Liveness::new(8, 15);
        // Ten visitors joined; the window (8) covers 1..=8, entering at t=100.
        let w = live.walk(0, 10, 0, 100);
        assert_eq!(w, Walk { moved: 0, skipped: 0 });
        // Visitors 2 and 5 poll on time; the others go quiet.
        for t in [105, 110, 115, 120] {
            live.touch(2, 0, t);
            live.touch(5, 0, t);
        }
        // At t=120 two tokens: 1 abandoned (skipped), 2 alive (token), 3 and 4 abandoned, 5 alive.
        let w = live.walk(0, 10, 2, 120);
        assert_eq!(w, Walk { moved: 5, skipped: 3 });
        assert!(live.was_skipped(1) && live.was_skipped(3) && live.was_skipped(4));
        assert!(!live.was_skipped(2) && !live.was_skipped(5));
        // 9 and 10 entered the window only now: they get the full grace period.
        let w = live.walk(5, 10, 5, 130);
        assert_eq!(w, Walk { moved: 5, skipped: 3 }, "6,7,8 abandoned; 9,10 just entered");
        assert!(!live.was_skipped(9) && !live.was_skipped(10));
    }

    #[test]
    fn a_number_outside_the_window_is_never_judged() {
        let live = Liveness::new(4, 15);
        // 100 waiting, the window holds only 1..=4; far later, a batch of 10 tokens.
        live.walk(0, 100, 0, 0);
        let w = live.walk(0, 100, 10, 1_000);
        // 1..=4 are stale and skipped; 5.. never entered the window, so they take tokens.
        assert_eq!(w, Walk { moved: 14, skipped: 4 });
    }

    #[test]
    fn on_a_shared_queue_only_numbers_read_from_every_node_are_judged() {
        let live = Liveness::new(8, 15).shared();
        live.walk(0, 8, 0, 100);
        // Nothing read from the shared record yet: nobody is skipped, however quiet.
        assert_eq!(live.walk(0, 8, 2, 200), Walk { moved: 2, skipped: 0 });
        // Read for 3..=6: 4 polled elsewhere at 195, the rest were silent since entering at 100.
        live.merge(&[(4, 195)], 6);
        let w = live.walk(2, 8, 2, 200);
        assert_eq!(w, Walk { moved: 5, skipped: 3 }, "3, 5, 6 skipped; 4 and 7 take the tokens");
        assert!(!live.was_skipped(7), "7 was beyond what was read: taken, not judged");
        // What this node saw and skipped goes out once.
        live.touch(8, 7, 201);
        let news = live.take_news();
        assert_eq!(news, News { seen: vec![(8, 201)], skipped: vec![3, 5, 6] });
        assert_eq!(live.take_news(), News::default());
        // Unsent news comes back, and newer signs of life win.
        live.touch(8, 7, 202);
        live.restore_news(news);
        assert_eq!(live.take_news(), News { seen: vec![(8, 202)], skipped: vec![3, 5, 6] });
        // Another node's skips are refused here too; a node that stops leading judges nothing.
        let other = Liveness::new(8, 15).shared();
        other.mark_skipped(&[3, 5]);
        assert!(other.was_skipped(3) && other.was_skipped(5) && !other.was_skipped(4));
        live.distrust();
        live.walk(8, 20, 0, 300);
        assert_eq!(live.walk(8, 20, 3, 400), Walk { moved: 3, skipped: 0 });
    }

    #[test]
    fn switched_off_moves_like_a_plain_bucket() {
        let live = Liveness::new(4, 0);
        assert_eq!(live.walk(0, 3, 10, 1_000), Walk { moved: 3, skipped: 0 });
        live.touch(1, 0, 5);
        assert!(!live.was_skipped(1));
    }
}
