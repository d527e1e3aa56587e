//! Traffic profiles: when applications arrive, as a piecewise-constant curve over "profile time"
//! (seconds since the launch), and the speedup that maps profile time to wall time so a whole day
//! replays in minutes. The launch-day curve carries the opening surge; `steady` is flat; a custom
//! curve comes from a CSV of segments. Arrival times are laid out deterministically (quantiles of
//! the curve), so the same curve and total always give the same schedule and the counts add up to
//! the total exactly.

use std::io::Read;
use std::time::Duration;

/// Seconds in the profile day.
pub const DAY_SECS: f64 = 86_400.0;

/// One stretch of the curve: `weight` is the relative share of all arrivals in `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub weight: f64,
}

/// An arrival curve: sorted, non-overlapping segments with a positive total weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    segments: Vec<Segment>,
}

/// What is wrong with a curve (for a custom CSV, with the line it is on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurveError {
    #[error("the curve has no segments (expected a header `start_s,end_s,weight` and at least one row)")]
    Empty,
    #[error("the first row must be the header `start_s,end_s,weight`, found `{0}`")]
    Header(String),
    #[error("line {line}: {problem}")]
    Line { line: u64, problem: String },
    #[error("every weight is zero: nobody would arrive")]
    ZeroTotal,
}

impl Curve {
    /// A curve from segments; they must be sorted, non-overlapping, with finite non-negative
    /// weights and a positive total. Problems name the segment's position (1-based) as its line.
    pub fn new(segments: Vec<Segment>) -> Result<Curve, CurveError> {
        let numbered: Vec<(u64, Segment)> = segments.into_iter().enumerate().map(|(i, s)| (i as u64 + 1, s)).collect();
        Curve::validated(numbered)
    }

    fn validated(numbered: Vec<(u64, Segment)>) -> Result<Curve, CurveError> {
        if numbered.is_empty() {
            return Err(CurveError::Empty);
        }
        let mut previous_end = 0.0;
        for &(line, s) in &numbered {
            let bad = |problem: String| Err(CurveError::Line { line, problem });
            if !(s.start.is_finite() && s.end.is_finite() && s.weight.is_finite()) {
                return bad("numbers must be finite".into());
            }
            if s.start < 0.0 {
                return bad(format!("start_s {} is negative", s.start));
            }
            if s.end <= s.start {
                return bad(format!("end_s {} must be after start_s {}", s.end, s.start));
            }
            if s.weight < 0.0 {
                return bad(format!("weight {} is negative", s.weight));
            }
            if s.start < previous_end {
                return bad(format!("start_s {} overlaps the previous segment, which ends at {previous_end}", s.start));
            }
            previous_end = s.end;
        }
        if numbered.iter().map(|(_, s)| s.weight).sum::<f64>() <= 0.0 {
            return Err(CurveError::ZeroTotal);
        }
        Ok(Curve { segments: numbered.into_iter().map(|(_, s)| s).collect() })
    }

    /// Launch day, starting at 09:00: 15 % of all applications in the first five minutes (the crowd
    /// that was waiting for the door to open), 40 % within the first hour, then the rest of the day
    /// with a late-morning and an evening peak and a quiet night.
    pub fn launch_day() -> Curve {
        // Shares of the whole day; they add up to 1.
        let opening = [(0.0, 300.0, 0.15), (300.0, 900.0, 0.10), (900.0, 3_600.0, 0.15)];
        // Hours 1..24 after opening (10:00 .. 09:00 next day): relative weights of the other 60 %.
        let hourly: [f64; 23] =
            [9.0, 8.0, 6.0, 5.0, 5.0, 5.0, 5.0, 6.0, 7.0, 8.0, 8.0, 7.0, 5.0, 3.0, 1.5, 1.0, 0.5, 0.5, 0.5, 0.5, 1.0, 2.0, 3.0];
        let hourly_total: f64 = hourly.iter().sum();
        let mut segments: Vec<Segment> = opening.iter().map(|&(start, end, weight)| Segment { start, end, weight }).collect();
        for (h, w) in hourly.iter().enumerate() {
            let start = (h as f64 + 1.0) * 3_600.0;
            segments.push(Segment { start, end: start + 3_600.0, weight: 0.60 * w / hourly_total });
        }
        Curve { segments }
    }

    /// The same rate all day long (`duration` seconds of profile time).
    pub fn steady(duration: f64) -> Result<Curve, CurveError> {
        Curve::new(vec![Segment { start: 0.0, end: duration, weight: 1.0 }])
    }

    /// Reads a custom curve: a header `start_s,end_s,weight`, then one segment per row, seconds
    /// since the launch. Lines starting with `#` are comments; gaps between segments mean nobody
    /// arrives then.
    pub fn from_csv(input: impl Read) -> Result<Curve, CurveError> {
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).comment(Some(b'#')).trim(csv::Trim::All).flexible(true).from_reader(input);
        let mut segments = Vec::new();
        let mut header_seen = false;
        for record in rdr.records() {
            let record = record.map_err(|e| CurveError::Line {
                line: e.position().map_or(0, |p| p.line()),
                problem: format!("not readable as CSV: {e}"),
            })?;
            let line = record.position().map_or(0, |p| p.line());
            if !header_seen {
                let header: Vec<&str> = record.iter().collect();
                if header != ["start_s", "end_s", "weight"] {
                    return Err(CurveError::Header(header.join(",")));
                }
                header_seen = true;
                continue;
            }
            if record.len() != 3 {
                return Err(CurveError::Line { line, problem: format!("expected 3 fields (start_s,end_s,weight), found {}", record.len()) });
            }
            let number = |i: usize, name: &str| -> Result<f64, CurveError> {
                let raw = record.get(i).unwrap_or_default();
                raw.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| CurveError::Line { line, problem: format!("{name} `{raw}` is not a number") })
            };
            segments.push((line, Segment { start: number(0, "start_s")?, end: number(1, "end_s")?, weight: number(2, "weight")? }));
        }
        if !header_seen || segments.is_empty() {
            return Err(CurveError::Empty);
        }
        Curve::validated(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Profile time from the launch to the end of the last segment, seconds.
    pub fn duration(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.end)
    }

    fn total_weight(&self) -> f64 {
        self.segments.iter().map(|s| s.weight).sum()
    }

    /// The share of all arrivals that falls in `[from, to)` of profile time.
    pub fn share_between(&self, from: f64, to: f64) -> f64 {
        let total = self.total_weight();
        self.segments
            .iter()
            .map(|s| {
                let overlap = (s.end.min(to) - s.start.max(from)).max(0.0);
                s.weight * overlap / (s.end - s.start)
            })
            .sum::<f64>()
            / total
    }

    /// How many of `total` arrivals fall in each segment, by largest remainder so they add up to
    /// `total` exactly.
    pub fn counts(&self, total: u64) -> Vec<u64> {
        let weight = self.total_weight();
        let exact: Vec<f64> = self.segments.iter().map(|s| total as f64 * s.weight / weight).collect();
        let mut counts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
        let assigned: u64 = counts.iter().sum();
        let mut order: Vec<usize> = (0..exact.len()).collect();
        order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
        for &i in order.iter().cycle().take(total.saturating_sub(assigned) as usize) {
            counts[i] += 1;
        }
        counts
    }

    /// Profile times (seconds since launch, ascending) of `total` arrivals, spread evenly inside
    /// each segment.
    pub fn arrival_times(&self, total: u64) -> Vec<f64> {
        let mut out = Vec::with_capacity(total as usize);
        for (s, n) in self.segments.iter().zip(self.counts(total)) {
            let len = s.end - s.start;
            for k in 0..n {
                out.push(s.start + (k as f64 + 0.5) / n as f64 * len);
            }
        }
        out
    }
}

/// How much faster than real time the profile is replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speedup(f64);

impl Speedup {
    pub fn new(factor: f64) -> Result<Speedup, String> {
        if (1.0..=1_000_000.0).contains(&factor) {
            Ok(Speedup(factor))
        } else {
            Err(format!("speedup must be between 1 and 1000000, got {factor}"))
        }
    }

    pub fn factor(self) -> f64 {
        self.0
    }

    /// Wall time at which something at `profile_secs` of profile time happens.
    pub fn wall(self, profile_secs: f64) -> Duration {
        Duration::from_secs_f64((profile_secs / self.0).max(0.0))
    }

    /// Profile time that `wall` of wall time stands for.
    pub fn profile(self, wall: Duration) -> f64 {
        wall.as_secs_f64() * self.0
    }

    /// A wait the system asked for (`refresh_after_seconds`, `Retry-After`), compressed by the
    /// speedup but never below `floor`, so a compressed crowd does not hammer the system faster
    /// than a real one could be served.
    pub fn wait(self, advertised_secs: f64, floor: Duration) -> Duration {
        let scaled = Duration::from_secs_f64((advertised_secs.max(0.0) / self.0).min(3_600.0));
        scaled.max(floor)
    }
}

impl std::str::FromStr for Speedup {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: f64 = s.trim().parse().map_err(|_| format!("speedup `{s}` is not a number"))?;
        Speedup::new(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_day_has_the_surge_and_sums_to_the_total() {
        let c = Curve::launch_day();
        assert_eq!(c.duration(), DAY_SECS);
        assert!((c.share_between(0.0, DAY_SECS) - 1.0).abs() < 1e-9);
        assert!((c.share_between(0.0, 3_600.0) - 0.40).abs() < 1e-9, "first hour {}", c.share_between(0.0, 3_600.0));
        assert!((c.share_between(0.0, 300.0) - 0.15).abs() < 1e-9);
        let times = c.arrival_times(70_000);
        assert_eq!(times.len(), 70_000);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "ascending");
        let first_hour = times.iter().filter(|&&t| t < 3_600.0).count();
        let first_minutes = times.iter().filter(|&&t| t < 300.0).count();
        assert_eq!(first_hour, 28_000);
        assert_eq!(first_minutes, 10_500);
        // The opening rate is far above the night rate.
        let night = times.iter().filter(|&&t| (16.0 * 3_600.0..17.0 * 3_600.0).contains(&t)).count();
        assert!(first_minutes as f64 / 300.0 > 50.0 * night as f64 / 3_600.0, "night {night}");
        assert!(times.iter().all(|&t| (0.0..DAY_SECS).contains(&t)));
    }

    #[test]
    fn counts_add_up_for_awkward_totals() {
        let c = Curve::launch_day();
        for total in [0, 1, 7, 199, 1_001, 69_999] {
            assert_eq!(c.counts(total).iter().sum::<u64>(), total, "total {total}");
            assert_eq!(c.arrival_times(total).len() as u64, total);
        }
        let steady = Curve::steady(100.0).expect("curve");
        let t = steady.arrival_times(4);
        assert_eq!(t, vec![12.5, 37.5, 62.5, 87.5]);
    }

    #[test]
    fn custom_csv_is_read_with_comments_and_gaps() {
        let csv = "# opening, then nothing, then a trickle\nstart_s,end_s,weight\n0,60,3\n# lunch\n120, 180 ,1\n";
        let c = Curve::from_csv(csv.as_bytes()).expect("valid curve");
        assert_eq!(c.segments().len(), 2);
        assert_eq!(c.duration(), 180.0);
        assert!((c.share_between(0.0, 60.0) - 0.75).abs() < 1e-9);
        assert_eq!(c.share_between(60.0, 120.0), 0.0);
        let times = c.arrival_times(8);
        assert_eq!(times.iter().filter(|&&t| t < 60.0).count(), 6);
    }

    #[test]
    fn custom_csv_errors_say_what_and_where() {
        let err = |s: &str| Curve::from_csv(s.as_bytes()).expect_err("must be refused").to_string();
        assert!(err("").contains("no segments"), "{}", err(""));
        assert!(err("start,end,w\n0,1,1\n").contains("header `start_s,end_s,weight`"));
        assert!(err("start_s,end_s,weight\n").contains("no segments"));
        let e = err("start_s,end_s,weight\n0,60,1\n60,abc,1\n");
        assert!(e.contains("line 3") && e.contains("end_s `abc` is not a number"), "{e}");
        let e = err("start_s,end_s,weight\n0,60,1\n30,90,1\n");
        assert!(e.contains("line 3") && e.contains("overlaps"), "{e}");
        let e = err("start_s,end_s,weight\n10,5,1\n");
        assert!(e.contains("line 2") && e.contains("must be after"), "{e}");
        let e = err("start_s,end_s,weight\n0,5,-1\n");
        assert!(e.contains("negative"), "{e}");
        let e = err("start_s,end_s,weight\n0,5\n");
        assert!(e.contains("line 2") && e.contains("expected 3 fields"), "{e}");
        assert!(err("start_s,end_s,weight\n0,5,0\n").contains("every weight is zero"));
        assert!(err("start_s,end_s,weight\n0,NaN,1\n").contains("not a number"));
    }

    #[test]
    fn speedup_maths() {
        let s = Speedup::new(144.0).expect("valid");
        assert_eq!(s.wall(DAY_SECS), Duration::from_secs(600));
        assert!((s.profile(Duration::from_secs(600)) - DAY_SECS).abs() < 1e-6);
        // refresh_after 5 s at 144x is 35 ms: the floor wins.
        assert_eq!(s.wait(5.0, Duration::from_millis(500)), Duration::from_millis(500));
        // A long advertised wait is compressed.
        assert_eq!(s.wait(1_440.0, Duration::from_millis(500)), Duration::from_secs(10));
        assert_eq!(Speedup::new(1.0).map(|s| s.wait(5.0, Duration::ZERO)), Ok(Duration::from_secs(5)));
        assert!(Speedup::new(0.5).is_err());
        assert!(Speedup::new(f64::NAN).is_err());
        assert!("abc".parse::<Speedup>().is_err());
        assert_eq!("200".parse::<Speedup>().map(Speedup::factor), Ok(200.0));
    }
}
