//! The launch simulation behind `examples/launch_sim.rs` (`make bench-launch`): a million visitors
//! joining within a minute against 200 admissions per second, run on virtual time so the hour and
//! a half of queue drains in seconds.
//!
//! Real: the queue state (`MemoryQueueState`), the admission engine (`Admission::pump_at`: opening
//! and pre-queue draw, session cap, backoff scaling, cursor advance), the governor token bucket
//! (its GCRA on governor's `FakeRelativeClock`), the rate meter and the ETA (`observe_at`,
//! `eta_secs`), the pre-queue places (`Launch`), and the ticket decision (`queue::decide`, signing
//! every join's ticket). Simulated: the clock (a virtual millisecond counter; ticks every 50 ms),
//! the visitors (no HTTP; a join runs the same steps as `POST /queue/join`, a poll runs `decide`
//! on the ticket's claims without re-verifying the signature), and the polls themselves: each
//! visitor is sampled at a few moments rather than every five seconds.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use kyufu_admission::Keyring;
use kyufu_http::Readiness;
use rand::{Rng, SeedableRng};

use crate::admission::{take_tokens, Admission, RateMeter};
use crate::config::GatewayConfig;
use crate::launch::Place;
use crate::metrics::GatewayMetrics;
use crate::state::{MemoryQueueState, QueueState};
use crate::ticket::TicketClaims;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Params {
    pub visitors: u32,
    /// Everyone has joined by then (seconds after the start).
    pub arrival_secs: u32,
    pub rate_per_sec: u32,
    pub burst: u32,
    /// Opening time (seconds after the start) for a pre-queue; `None`: FIFO from the start.
    pub opens_after_secs: Option<u32>,
    /// Seed of the arrival times and of the pre-queue draw.
    pub seed: u64,
    /// Fraction of visitors who close the page right after joining (never poll again); the
    /// liveness ring skips them. Only without a pre-queue (the sim maps places to visitors FIFO).
    pub abandon: f64,
    /// The admission rate drops to `rate` for `secs` from `at_secs` (operator or backoff), as
    /// `set_rate` does it: a new bucket each time.
    pub dip: Option<Dip>,
}

#[derive(Debug, Clone, Copy)]
pub struct Dip {
    pub at_secs: u32,
    pub secs: u32,
    pub rate: u32,
}

/// Poll moments sampled per visitor, seconds after joining (after the draw, for the pre-queue).
pub const POLL_OFFSETS: [u32; 4] = [0, 60, 600, 1800];

const TICK_MS: u32 = 50;
/// Virtual Unix time of the start.
const T0: u64 = 1_800_000_000;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub params: Params,
    pub wall: Duration,
    pub prequeue: u64,
    pub drained_secs: f64,
    /// Of the visitors who joined after opening (all of them without a pre-queue): how many were
    /// admitted before someone who arrived earlier, and the largest difference between arrival
    /// rank and admission rank.
    pub fifo_out_of_order: u64,
    pub fifo_max_displacement: u64,
    /// Mean place (1-based, within the pre-queue) of the earlier and the later half of pre-queue
    /// arrivals, and of the first 1 % of arrivals.
    pub prequeue_mean_place_early_half: f64,
    pub prequeue_mean_place_late_half: f64,
    pub prequeue_mean_place_first_percent: f64,
    pub prequeue_max_displacement: u64,
    /// Per poll offset: (samples with an estimate, samples without one, median APE, p90 APE,
    /// median absolute error in seconds).
    pub eta: Vec<EtaStats>,
    pub wait_median_secs: f64,
    pub wait_max_secs: f64,
    /// Visitors who left, and numbers the cursor skipped as abandoned.
    pub gone: u64,
    pub skipped: u64,
}

#[derive(Debug, Clone)]
pub struct EtaStats {
    pub offset_secs: u32,
    pub with_eta: usize,
    pub without_eta: usize,
    /// Samples whose actual remaining wait was under 10 s: left out of the percentages (a 1 s miss
    /// on a 2 s wait is 50 %), counted in the absolute error.
    pub short: usize,
    pub median_ape: f64,
    pub p90_ape: f64,
    pub median_abs_secs: f64,
}

struct Visitor {
    seq: u64,
    join_ms: u32,
    jat: u64,
    prequeue: bool,
    /// Closed the page after joining.
    gone: bool,
}

/// A shown estimate: who, when (virtual ms), how many seconds, at which offset.
struct Sample {
    visitor: u32,
    at_ms: u32,
    eta: Option<u32>,
    offset: u8,
}

fn secs_at(ms: u32) -> u64 {
    T0 + u64::from(ms) / 1000
}

/// Runs the simulation to the last admission.
pub async fn run(params: Params) -> Report {
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(params.seed);
    // A rush at the start that thins out: arrival = T * u^2, so half come in the first 15 s of 60.
    let span_ms = f64::from(params.arrival_secs) * 1000.0;
    let mut arrivals: Vec<u32> = (0..params.visitors).map(|_| (rng.gen::<f64>().powi(2) * span_ms) as u32).collect();
    arrivals.sort_unstable();

    let mut config = GatewayConfig::new("launch-sim", Keyring::random(), "http://127.0.0.1:9");
    config.ticket_idle_secs = u64::MAX / 4;
    let launch_seed: [u8; 32] = rng.gen();
    let opens_at = params.opens_after_secs.map(|s| T0 + u64::from(s));
    let state = Arc::new(MemoryQueueState::new());
    let metrics = GatewayMetrics::new(&prometheus::Registry::new());
    let abandon = if params.opens_after_secs.is_some() { 0.0 } else { params.abandon };
    let expire_after = config.refresh_secs * u64::from(config.expire_after_polls);
    let admission = Admission::new(state.clone(), params.rate_per_sec, params.burst, config.pass_ttl_secs, metrics.clone(), Readiness::ready())
        .with_launch(opens_at, launch_seed)
        .with_liveness(config.liveness_window, if abandon > 0.0 { expire_after } else { 0 }, false);
    let clock = FakeRelativeClock::default();
    let new_bucket = |per_sec: u32| {
        let rate = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(params.burst).unwrap_or(NonZeroU32::MIN);
        RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), clock.clone())
    };
    let mut bucket = new_bucket(params.rate_per_sec);
    // Every visitor polls every refresh interval; in ticks.
    let poll_every = (config.refresh_secs * 1000 / u64::from(TICK_MS)).max(1);
    let mut meter = RateMeter::new(5.0);
    let instant0 = Instant::now();

    let mut visitors: Vec<Visitor> = Vec::with_capacity(arrivals.len());
    let mut cursor_by_tick: Vec<u64> = Vec::new();
    // Poll calendar: tick index -> (visitor, offset index).
    let mut calendar: Vec<Vec<(u32, u8)>> = Vec::new();
    let schedule = |calendar: &mut Vec<Vec<(u32, u8)>>, from_ms: u32, visitor: u32, skip_first: bool| {
        for (i, off) in POLL_OFFSETS.iter().enumerate().skip(usize::from(skip_first)) {
            let tick = ((from_ms + off * 1000) / TICK_MS) as usize;
            if calendar.len() <= tick {
                calendar.resize_with(tick + 1, Vec::new);
            }
            calendar[tick].push((visitor, i as u8));
        }
    };
    let mut samples: Vec<Sample> = Vec::with_capacity(arrivals.len() * POLL_OFFSETS.len());
    let mut next_arrival = 0usize;
    let mut opened_tick: Option<usize> = None;
    let mut tick = 0usize;
    loop {
        let now_ms = tick as u32 * TICK_MS;
        let now = secs_at(now_ms);
        // Joins in this tick, in arrival order: the steps of `queue::join_answer`.
        while next_arrival < arrivals.len() && arrivals[next_arrival] <= now_ms {
            let at_ms = arrivals[next_arrival];
            let at = secs_at(at_ms);
            if admission.launch.due(at) {
                if let Ok(c) = state.counters().await {
                    admission.launch.open_if_due(at, c.issued);
                }
            }
            let prequeue = admission.launch.in_prequeue(at).is_some();
            let Ok(slot) = state.join().await else { break };
            if !prequeue {
                let _ = admission.pump_at(at, |max| take_tokens(&bucket, max)).await;
            }
            let Ok(counters) = state.counters().await else { break };
            let claims = TicketClaims {
                ev: config.event_id.clone(),
                ep: slot.epoch,
                seq: slot.seq,
                iat: at,
                nxt: at,
                adm: None,
                jat: Some(at),
                pq: prequeue,
                n: None,
            };
            let place = admission.launch.place(slot.seq);
            let id = visitors.len() as u32;
            let gone = abandon > 0.0 && rng.gen::<f64>() < abandon;
            visitors.push(Visitor { seq: slot.seq, join_ms: at_ms, jat: at, prequeue, gone });
            // Signs the visitor's ticket, exactly as the join answer does.
            let eta = crate::queue::decide(&config, claims, None, counters, place, at, |p| admission.eta_secs(p))
                .ok()
                .and_then(|a| if a.pass.is_some() { Some(0) } else { a.eta });
            if !prequeue && !gone {
                // The first sample is the join answer; later ones from the calendar.
                samples.push(Sample { visitor: id, at_ms, eta: eta.map(|e| e as u32), offset: 0 });
                schedule(&mut calendar, at_ms, id, true);
            }
            next_arrival += 1;
        }
        if let Some(dip) = params.dip {
            if now_ms == dip.at_secs * 1000 {
                bucket = new_bucket(dip.rate);
            } else if now_ms == (dip.at_secs + dip.secs) * 1000 {
                bucket = new_bucket(params.rate_per_sec);
            }
        }
        // Visitors near the front who are still there poll every refresh interval (FIFO: the
        // visitor with place p is the p-th to arrive).
        if abandon > 0.0 {
            if let Ok(c) = state.counters().await {
                let top = c.issued.min(c.cursor + config.liveness_window);
                let phase = tick as u64 % poll_every;
                let mut p = c.cursor + 1 + (phase + poll_every - (c.cursor + 1) % poll_every) % poll_every;
                while p <= top {
                    if visitors.get((p - 1) as usize).is_some_and(|v| !v.gone) {
                        admission.liveness.touch(p, c.cursor, now);
                    }
                    p += poll_every;
                }
            }
        }
        // The ticker: advance and measure.
        let _ = admission.pump_at(now, |max| take_tokens(&bucket, max)).await;
        let Ok(counters) = state.counters().await else { break };
        admission.observe_at(instant0 + Duration::from_millis(u64::from(now_ms)), &mut meter, counters);
        cursor_by_tick.push(counters.cursor);
        if opened_tick.is_none() && admission.launch.is_open() {
            opened_tick = Some(tick);
            // The pre-queue polls from the draw on (its first poll after opening is 5 s late at most).
            let from = now_ms + 5_000;
            for (id, _) in visitors.iter().enumerate().filter(|(_, v)| v.prequeue) {
                schedule(&mut calendar, from, id as u32, false);
            }
        }
        // Polls due now: what `GET /queue/status` would show.
        if let Some(due) = calendar.get_mut(tick) {
            for (id, offset) in std::mem::take(due) {
                let v = &visitors[id as usize];
                let claims = TicketClaims {
                    ev: config.event_id.clone(),
                    ep: counters.epoch,
                    seq: v.seq,
                    iat: now,
                    nxt: now,
                    adm: None,
                    jat: Some(v.jat),
                    pq: false,
                    n: None,
                };
                let place = admission.launch.place(v.seq);
                if let Ok(a) = crate::queue::decide(&config, claims, None, counters, place, now, |p| admission.eta_secs(p)) {
                    if a.pass.is_none() {
                        samples.push(Sample { visitor: id, at_ms: now_ms, eta: a.eta.map(|e| e as u32), offset });
                    }
                }
            }
        }
        tick += 1;
        clock.advance(Duration::from_millis(u64::from(TICK_MS)));
        // Polls still on the calendar would all find their visitor admitted.
        if next_arrival == arrivals.len() && counters.waiting() == 0 {
            break;
        }
    }
    let skipped = metrics.tickets_expired.get();
    let mut r = report(params, started, &visitors, &cursor_by_tick, &samples, &admission);
    r.skipped = skipped;
    r
}

fn report(
    params: Params,
    started: Instant,
    visitors: &[Visitor],
    cursor_by_tick: &[u64],
    samples: &[Sample],
    admission: &Admission,
) -> Report {
    let place_of = |seq: u64| match admission.launch.place(seq) {
        Place::At(p) => p,
        Place::Pending { .. } => u64::MAX,
    };
    // When the cursor reached a place: the end of the first tick whose cursor covers it.
    let reached_ms = |place: u64| {
        let tick = cursor_by_tick.partition_point(|&c| c < place);
        (tick as u64 + 1) * u64::from(TICK_MS)
    };
    let (pq_base, pq_n) = admission.launch.prequeue_range().unwrap_or((0, 0));
    // Visitors are in arrival order; seq follows it.
    let mut fifo_out = 0u64;
    let mut fifo_disp = 0u64;
    let mut max_place_so_far = 0u64;
    let mut pq_places = Vec::new();
    let mut pq_disp = 0u64;
    let mut waits = Vec::with_capacity(visitors.len());
    let mut gone = 0u64;
    for (rank, v) in visitors.iter().enumerate() {
        if v.gone {
            gone += 1;
            continue;
        }
        let place = place_of(v.seq);
        waits.push((reached_ms(place).saturating_sub(u64::from(v.join_ms))) as f64 / 1000.0);
        if v.seq > pq_base && v.seq <= pq_base + pq_n {
            let within = place - pq_base;
            pq_places.push(within as f64);
            pq_disp = pq_disp.max(within.abs_diff(v.seq - pq_base));
            continue;
        }
        if place < max_place_so_far {
            fifo_out += 1;
        }
        max_place_so_far = max_place_so_far.max(place);
        fifo_disp = fifo_disp.max(place.abs_diff(rank as u64 + 1));
    }
    let mean = |xs: &[f64]| if xs.is_empty() { f64::NAN } else { xs.iter().sum::<f64>() / xs.len() as f64 };
    let half = pq_places.len() / 2;
    let first = (pq_places.len() / 100).max(1).min(pq_places.len());
    waits.sort_by(f64::total_cmp);
    let eta = POLL_OFFSETS
        .iter()
        .enumerate()
        .map(|(i, &offset_secs)| {
            let mut ape = Vec::new();
            let mut abs = Vec::new();
            let (mut without, mut short) = (0, 0);
            for s in samples.iter().filter(|s| usize::from(s.offset) == i) {
                let v = &visitors[s.visitor as usize];
                let actual = reached_ms(place_of(v.seq)).saturating_sub(u64::from(s.at_ms)) as f64 / 1000.0;
                let Some(eta) = s.eta else {
                    without += 1;
                    continue;
                };
                let err = (f64::from(eta) - actual).abs();
                abs.push(err);
                if actual < 10.0 {
                    short += 1;
                } else {
                    ape.push(err / actual);
                }
            }
            ape.sort_by(f64::total_cmp);
            abs.sort_by(f64::total_cmp);
            EtaStats {
                offset_secs,
                with_eta: abs.len(),
                without_eta: without,
                short,
                median_ape: quantile(&ape, 0.5),
                p90_ape: quantile(&ape, 0.9),
                median_abs_secs: quantile(&abs, 0.5),
            }
        })
        .collect();
    Report {
        drained_secs: cursor_by_tick.len() as f64 * f64::from(TICK_MS) / 1000.0,
        wall: started.elapsed(),
        prequeue: pq_n,
        fifo_out_of_order: fifo_out,
        fifo_max_displacement: fifo_disp,
        prequeue_mean_place_early_half: mean(&pq_places[..half]),
        prequeue_mean_place_late_half: mean(&pq_places[half..]),
        prequeue_mean_place_first_percent: mean(&pq_places[..first]),
        prequeue_max_displacement: pq_disp,
        eta,
        wait_median_secs: quantile(&waits, 0.5),
        wait_max_secs: waits.last().copied().unwrap_or(0.0),
        gone,
        skipped: 0,
        params,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.params;
        writeln!(f, "visitors {} arriving within {} s (rush: arrival = {} s x u^2), admission {}/s burst {}, ticks {} ms",
            p.visitors, p.arrival_secs, p.arrival_secs, p.rate_per_sec, p.burst, TICK_MS)?;
        match p.opens_after_secs {
            Some(s) => writeln!(f, "pre-queue: opens at t={s} s; {} visitors in the pre-queue, drawn with a seeded Feistel shuffle", self.prequeue)?,
            None => writeln!(f, "no pre-queue: first come, first served from t=0")?,
        }
        if let Some(d) = p.dip {
            writeln!(f, "rate dip: {}/s from t={} s for {} s (a new bucket each change, as set_rate)", d.rate, d.at_secs, d.secs)?;
        }
        if self.gone > 0 {
            writeln!(f, "abandonment: {} visitors ({:.0} %) closed the page after joining; the cursor skipped {} numbers as abandoned (liveness ring, expire after 15 s silent)",
                self.gone, 100.0 * self.gone as f64 / p.visitors as f64, self.skipped)?;
        }
        writeln!(f, "queue drained at t={:.0} s (virtual); simulation took {:.1} s wall", self.drained_secs, self.wall.as_secs_f64())?;
        writeln!(f, "order, FIFO visitors: {} admitted before an earlier arrival, max displacement {} places",
            self.fifo_out_of_order, self.fifo_max_displacement)?;
        if self.prequeue > 0 {
            writeln!(f, "order, pre-queue: mean place of earlier half {:.0}, later half {:.0}, first 1 % {:.0} (uniform: {:.0}); max displacement {}",
                self.prequeue_mean_place_early_half, self.prequeue_mean_place_late_half,
                self.prequeue_mean_place_first_percent, (self.prequeue as f64 + 1.0) / 2.0, self.prequeue_max_displacement)?;
        }
        writeln!(f, "actual wait (join to cursor): median {:.0} s, max {:.0} s", self.wait_median_secs, self.wait_max_secs)?;
        writeln!(f, "ETA shown vs actual remaining wait (percentage error over waits >= 10 s):")?;
        for e in &self.eta {
            let when = if e.offset_secs == 0 { "at join (pre-queue: first poll after the draw)".to_owned() } else { format!("+{} s", e.offset_secs) };
            writeln!(f, "  {when:<48} n={:>7} no-estimate={:>6} short={:>5}  median APE {:>5.1} %  p90 APE {:>5.1} %  median |err| {:.1} s",
                e.with_eta, e.without_eta, e.short, e.median_ape * 100.0, e.p90_ape * 100.0, e.median_abs_secs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            visitors: 12_000,
            arrival_secs: 10,
            rate_per_sec: 200,
            burst: 400,
            opens_after_secs: None,
            seed: 7,
            abandon: 0.0,
            dip: None,
        }
    }

    #[tokio::test]
    async fn simulated_launch_keeps_order_and_estimates_within_the_target() {
        // Virtual time and fixed seeds: the same figures on every run.
        let fifo = run(params()).await;
        assert_eq!((fifo.fifo_out_of_order, fifo.fifo_max_displacement, fifo.prequeue), (0, 0, 0));
        assert!(fifo.eta[0].median_ape <= 0.15, "{fifo}");
        // Everyone is admitted at 200/s after the 400 burst: about 58 s of virtual time.
        assert!((50.0..70.0).contains(&fifo.drained_secs), "{fifo}");
        let pre = run(Params { opens_after_secs: Some(5), ..params() }).await;
        assert!(pre.prequeue > 5_000, "{pre}");
        assert_eq!(pre.fifo_out_of_order, 0, "FIFO after opening");
        let n = pre.prequeue as f64;
        assert!((pre.prequeue_mean_place_early_half - pre.prequeue_mean_place_late_half).abs() < 0.1 * n, "{pre}");
        let gone = run(Params { abandon: 0.2, ..params() }).await;
        assert!(gone.gone > 2_000 && gone.skipped > 0 && gone.skipped <= gone.gone, "{gone}");
    }
}
