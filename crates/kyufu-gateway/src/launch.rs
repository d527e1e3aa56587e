//! Launch-day fairness: a pre-queue before the opening time, drawn into a random order at opening
//! with a seed committed to in advance.
//!
//! Visitors who join before `opens_at` get ordinary sequence numbers `base+1 ..= base+P` (their
//! tickets say `pq`), but no place yet. At opening the pre-queue is closed (`P` = numbers issued by
//! then) and every pre-queue number gets the place `base + 1 + perm(seq - base - 1)`, where `perm` is
//! a keyed permutation of `[0, P)`; numbers issued after opening keep `place = seq` (FIFO). The cursor
//! then moves over places exactly as it moved over sequence numbers. Nothing per visitor is stored:
//! `perm` is a Feistel network over the smallest even-bit domain holding `P`, keyed by the seed, with
//! cycle walking back into `[0, P)` — O(1) per ticket, no table.
//!
//! The seed (32 random bytes) exists from startup; `GET /queue/fairness` publishes SHA-256(seed)
//! before opening and the seed itself after, so anyone can recompute every place (`ALGORITHM`).

use std::sync::RwLock;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

/// Feistel rounds; eight rounds of a cryptographic round function leave no usable structure.
const ROUNDS: u8 = 8;

/// How to recompute the order from the published seed, for `GET /queue/fairness`.
pub const ALGORITHM: &str = "feistel-sha256-v1: P = prequeue_size, base = prequeue_base. \
For a pre-queue number seq (base < seq <= base + P), k = seq - base - 1 and place = base + 1 + perm(k). \
perm over [0, P): b = bits of (P - 1), at least 2, rounded up to even; h = b / 2; mask = 2^h - 1. \
F(r, x) = first 8 bytes of SHA-256(seed[32] || r as 1 byte || x as 8 bytes big-endian), big-endian, AND mask. \
E(v): L = v >> h, R = v AND mask; for r in 0..8: (L, R) = (R, L XOR F(r, R)); result (L << h) | R. \
perm(k): v = E(k); while v >= P: v = E(v). Numbers issued after opening keep place = seq.";

/// A keyed permutation of `[0, n)`.
#[derive(Debug, Clone)]
pub struct Shuffle {
    seed: [u8; 32],
    n: u64,
    half: u32,
    mask: u64,
}

impl Shuffle {
    pub fn new(seed: [u8; 32], n: u64) -> Self {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        Shuffle { seed, n, half, mask: (1u64 << half) - 1 }
    }

    fn round(&self, r: u8, x: u64) -> u64 {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update([r]);
        h.update(x.to_be_bytes());
        let d = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_be_bytes(first) & self.mask
    }

    fn encrypt(&self, v: u64) -> u64 {
        let (mut l, mut r) = (v >> self.half, v & self.mask);
        for round in 0..ROUNDS {
            (l, r) = (r, l ^ self.round(round, r));
        }
        (l << self.half) | r
    }

    /// The shuffled index of `k` (`k < n`); `k` itself when out of range.
    pub fn permute(&self, k: u64) -> u64 {
        if k >= self.n {
            return k;
        }
        // The domain is below 4n, so the walk ends after fewer than four steps on average; it
        // always ends because `encrypt` is a permutation of the domain and `k` is in range.
        let mut v = self.encrypt(k);
        while v >= self.n {
            v = self.encrypt(v);
        }
        v
    }
}

/// SHA-256 of the seed, hex: the commitment published before opening.
pub fn commitment(seed: &[u8; 32]) -> String {
    hex(&Sha256::digest(seed))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a sequence number stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// In the pre-queue; the place is drawn at `opens_at` (Unix seconds).
    Pending { opens_at: u64 },
    /// The number the cursor must reach.
    At(u64),
}

/// The opening can no longer be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue has already opened; the pre-queue order is fixed")]
pub struct AlreadyOpened;

#[derive(Debug)]
struct State_ {
    opens_at: Option<u64>,
    seed: [u8; 32],
    /// Numbers issued before the opening was set: they keep FIFO places ahead of the pre-queue.
    base: u64,
    /// Set at opening: the pre-queue is `base+1 ..= base + shuffle.n`.
    shuffle: Option<Shuffle>,
}

/// The opening time and the pre-queue order of one gateway node.
#[derive(Debug)]
pub(crate) struct Launch {
    state: RwLock<State_>,
}

impl Launch {
    pub(crate) fn new(opens_at: Option<u64>, seed: [u8; 32]) -> Self {
        Launch { state: RwLock::new(State_ { opens_at, seed, base: 0, shuffle: None }) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State_> {
        // Plain values assigned whole: a panicking writer cannot leave them half-changed.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State_> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (or moves) the opening time; `issued` numbers handed out so far keep FIFO places ahead
    /// of the pre-queue. Refused once the pre-queue has been drawn.
    pub(crate) fn set_opening(&self, opens_at: u64, issued: u64) -> Result<(), AlreadyOpened> {
        let mut s = self.write();
        if s.shuffle.is_some() {
            return Err(AlreadyOpened);
        }
        if s.opens_at.is_none() {
            s.base = issued;
        }
        s.opens_at = Some(opens_at);
        Ok(())
    }

    pub(crate) fn opens_at(&self) -> Option<u64> {
        self.read().opens_at
    }

    /// Whether a visitor joining at `now` joins the pre-queue.
    pub(crate) fn in_prequeue(&self, now: u64) -> Option<u64> {
        let s = self.read();
        match (s.opens_at, &s.shuffle) {
            (Some(at), None) if now < at => Some(at),
            _ => None,
        }
    }

    /// Whether the opening time has come at `now` and the pre-queue is still to be drawn.
    pub(crate) fn due(&self, now: u64) -> bool {
        let s = self.read();
        s.shuffle.is_none() && s.opens_at.is_some_and(|at| now >= at)
    }

    /// `(base, P)` once drawn: the pre-queue is the numbers `base+1 ..= base+P`.
    pub(crate) fn prequeue_range(&self) -> Option<(u64, u64)> {
        let s = self.read();
        s.shuffle.as_ref().map(|sh| (s.base, sh.n))
    }

    /// Whether the pre-queue has been drawn (or there is none): the cursor may move.
    pub(crate) fn is_open(&self) -> bool {
        let s = self.read();
        s.opens_at.is_none() || s.shuffle.is_some()
    }

    /// Whether the queue is open at `now`; at the first call at or after the opening time, draws
    /// the pre-queue as the numbers up to `issued`.
    pub(crate) fn open_if_due(&self, now: u64, issued: u64) -> bool {
        if self.due(now) {
            let base = self.base();
            self.open_with(base, issued.saturating_sub(base));
        }
        self.is_open()
    }

    /// Numbers issued before the opening was set (the pre-queue starts after them).
    pub(crate) fn base(&self) -> u64 {
        self.read().base
    }

    /// Draws the pre-queue as `base+1 ..= base+size`, as fixed in the shared queue state by
    /// whichever node closed it first, so every node computes the same places. Nothing changes
    /// once drawn.
    pub(crate) fn open_with(&self, base: u64, size: u64) {
        let mut s = self.write();
        if s.shuffle.is_none() && s.opens_at.is_some() {
            s.base = base;
            s.shuffle = Some(Shuffle::new(s.seed, size));
            tracing::info!(prequeue = size, base, "queue opened; pre-queue order drawn");
        }
    }

    /// The place of sequence number `seq`.
    pub(crate) fn place(&self, seq: u64) -> Place {
        let s = self.read();
        match (&s.shuffle, s.opens_at) {
            (Some(shuffle), _) if seq > s.base && seq - s.base <= shuffle.n => {
                Place::At(s.base + 1 + shuffle.permute(seq - s.base - 1))
            }
            (None, Some(opens_at)) if seq > s.base => Place::Pending { opens_at },
            _ => Place::At(seq),
        }
    }

    /// What `GET /queue/fairness` shows at `now`; `issued` for the pre-queue size so far.
    pub(crate) fn fairness(&self, issued: u64) -> serde_json::Value {
        let s = self.read();
        let opened = s.shuffle.is_some();
        let size = s.shuffle.as_ref().map_or(issued.saturating_sub(s.base), |sh| sh.n);
        let phase = match (s.opens_at, opened) {
            (None, _) => "no_prequeue",
            (Some(_), false) => "prequeue",
            (Some(_), true) => "open",
        };
        serde_json::json!({
            "phase": phase,
            "opens_at": s.opens_at.and_then(rfc3339),
            "opens_at_unix": s.opens_at,
            "prequeue_base": s.base,
            "prequeue_size": s.opens_at.map(|_| size),
            "prequeue_size_final": opened,
            "seed_sha256": commitment(&s.seed),
            "seed": opened.then(|| hex(&s.seed)),
            "algorithm": ALGORITHM,
            "after_opening": "first come, first served",
        })
    }
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> Option<String> {
    let secs = i64::try_from(secs).ok()?;
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// RFC 3339 as Unix seconds (times before 1970 are refused).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    u64::try_from(t.timestamp()).ok()
}

/// A 32-byte seed as 64 hex digits (what `parse_seed_hex` reads).
pub fn seed_hex(seed: &[u8; 32]) -> String {
    hex(seed)
}

/// A 32-byte seed from 64 hex digits.
pub fn parse_seed_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(seed)
}

/// `GET /queue/fairness`: public, cacheable for a second.
pub(crate) async fn fairness(State(gw): State<std::sync::Arc<crate::Shared>>) -> Response {
    let issued = match gw.admission.state.counters().await {
        Ok(c) => c.issued,
        Err(_) => return kyufu_http::ApiError::new(kyufu_domain::ErrorCode::ServiceUnavailable).into_response(),
    };
    let mut resp = Json(gw.admission.launch.fairness(issued)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];

    #[test]
    fn shuffle_is_a_permutation_for_every_size() {
        for n in [0u64, 1, 2, 3, 4, 5, 17, 64, 1000, 4097] {
            let s = Shuffle::new(SEED, n);
            let mut seen = vec![false; n as usize];
            for k in 0..n {
                let v = s.permute(k);
                assert!(v < n, "n={n} k={k} -> {v}");
                assert!(!seen[v as usize], "n={n}: {v} hit twice");
                seen[v as usize] = true;
            }
        }
    }

    #[test]
    fn order_is_recomputed_from_the_published_seed_alone() {
        let launch = Launch::new(Some(1_000), SEED);
        assert_eq!(launch.place(3), Place::Pending { opens_at: 1_000 });
        assert!(!launch.open_if_due(999, 500));
        assert!(launch.open_if_due(1_000, 500));
        let published = launch.fairness(510);
        assert_eq!(published["phase"], "open");
        assert_eq!(published["prequeue_size"], 500);
        // What an outsider does: decode the seed, check it against the commitment, recompute.
        let seed_hex = published["seed"].as_str().unwrap_or_default();
        let seed = parse_seed_hex(seed_hex).unwrap_or([0; 32]);
        assert_eq!(published["seed_sha256"].as_str(), Some(commitment(&seed).as_str()));
        let outsider = Shuffle::new(seed, 500);
        for seq in 1..=500 {
            assert_eq!(launch.place(seq), Place::At(1 + outsider.permute(seq - 1)), "seq {seq}");
        }
        assert_ne!((1..=500).map(|s| launch.place(s)).collect::<Vec<_>>(), (1..=500).map(Place::At).collect::<Vec<_>>());
        // After opening: first come, first served.
        assert_eq!(launch.place(501), Place::At(501));
        assert_eq!(launch.place(9_999), Place::At(9_999));
        assert_eq!(launch.set_opening(2_000, 510), Err(AlreadyOpened));
    }

    #[test]
    fn the_seed_is_hidden_until_opening_but_committed_to() {
        let launch = Launch::new(Some(1_000), SEED);
        let before = launch.fairness(42);
        assert_eq!(before["phase"], "prequeue");
        assert_eq!(before["seed"], serde_json::Value::Null);
        assert_eq!(before["prequeue_size"], 42);
        assert_eq!(before["seed_sha256"].as_str(), Some(commitment(&SEED).as_str()));
        assert_eq!(before["opens_at"], "1970-01-01T00:16:40Z");
        assert_eq!(Launch::new(None, SEED).fairness(3)["phase"], "no_prequeue");
    }

    #[test]
    fn arriving_early_gives_no_advantage() {
        // Fixed seed: the figures are the same on every run, so the bounds cannot flake. With a
        // uniform shuffle of 100 000 the half means differ by about 0.4 % of n (sd); the bound is
        // 2 %. FIFO would put them 50 % apart.
        let n = 100_000u64;
        let s = Shuffle::new(SEED, n);
        let mean = |r: std::ops::Range<u64>| r.clone().map(|k| s.permute(k) as f64).sum::<f64>() / (r.end - r.start) as f64;
        let (early, late) = (mean(0..n / 2), mean(n / 2..n));
        assert!((early - late).abs() < 0.02 * n as f64, "early {early} late {late}");
        // The very first arrivals are not favoured either: the first 1000 land all over the line.
        let first: Vec<u64> = (0..1000).map(|k| s.permute(k)).collect();
        let in_front_tenth = first.iter().filter(|&&p| p < n / 10).count();
        assert!((50..150).contains(&in_front_tenth), "{in_front_tenth} of the first 1000 in the front tenth");
    }

    #[test]
    fn numbers_issued_before_the_opening_was_set_keep_their_place() {
        let launch = Launch::new(None, SEED);
        assert_eq!(launch.place(5), Place::At(5));
        assert_eq!(launch.in_prequeue(10), None);
        launch.set_opening(100, 5).expect("not opened yet");
        assert_eq!(launch.in_prequeue(10), Some(100));
        assert_eq!(launch.place(5), Place::At(5), "joined before the opening was set");
        assert_eq!(launch.place(6), Place::Pending { opens_at: 100 });
        assert!(launch.open_if_due(100, 15));
        let places: std::collections::BTreeSet<u64> =
            (6..=15).filter_map(|s| if let Place::At(p) = launch.place(s) { Some(p) } else { None }).collect();
        assert_eq!(places, (6..=15).collect(), "the pre-queue shuffles among its own places only");
        assert_eq!(launch.in_prequeue(99), None, "drawn: nobody joins the pre-queue any more");
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(parse_rfc3339("2026-12-01T09:00:00+09:00"), Some(1_796_083_200));
        assert_eq!(rfc3339(1_796_083_200).as_deref(), Some("2026-12-01T00:00:00Z"));
        assert_eq!(parse_rfc3339("tomorrow"), None);
        assert_eq!(parse_rfc3339("1960-01-01T00:00:00Z"), None);
    }
}
