//! The figures of a run, and the two files that carry them: `summary.json` (every figure, for CI
//! and for comparing runs) and `report.html` (one self-contained page with hand-drawn SVG plots:
//! queue length, admissions per second, wait times, intake latency, submit-to-final latency,
//! per-stage lag, and the reconciliation verdict). Also the short text printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::metrics::Snapshot;
use crate::reconcile::{Finding, Observation, Reconciliation};
use crate::stats::{histogram, per_second, Distribution};
use crate::svg::{bar_chart, esc, line_chart, Series};
use crate::visitor::VisitorRecord;

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub target: String,
    pub profile: String,
    pub planned_applications: u64,
    pub planned_visitors: usize,
    pub speedup: f64,
    pub profile_duration_s: f64,
    pub seed: u64,
    pub registry: String,
    pub reference_date: String,
    pub started_at: String,
    /// Applications the target had accepted before the run (its metric), if it said.
    pub target_accepted_before: Option<f64>,
    pub wall_time_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VisitorCounts {
    pub joined: usize,
    pub admitted: usize,
    pub abandoned: usize,
    pub gave_up: usize,
    pub rejoins: u64,
    pub queue_polls: u64,
    /// Visitors who spent their pass after their last child (as the form does).
    pub passes_spent: usize,
    /// Why visitors gave up, counted (first words of the reason).
    pub gave_up_reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Accepted applications per second between the first and the last 202.
    pub accepted_per_s: f64,
    /// Applications settled per second between the first 202 and the last settlement seen.
    pub settled_per_s: f64,
    pub peak_accepted_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueFigures {
    /// Largest `kyufu_gateway_queue_length` scraped.
    pub max_length: Option<f64>,
    /// Largest position a visitor was told.
    pub max_position_seen: u32,
    pub peak_admissions_per_s: f64,
    pub mean_admissions_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StageFigures {
    pub max_lag: f64,
    /// Seconds spent handling messages (sum of the processing-duration histogram) during the run.
    pub busy_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemFigures {
    /// CPU seconds the target process used during the run (`process_cpu_seconds_total`).
    pub cpu_s: Option<f64>,
    /// The same as a share of one core, averaged over the run.
    pub cpu_cores: Option<f64>,
    pub peak_resident_bytes: Option<f64>,
    /// Seconds intake spent in requests during the run, by route.
    pub intake_busy_s: BTreeMap<String, f64>,
    /// CPU seconds of this load tester (it shares the machine with the target).
    pub tester_cpu_s: Option<f64>,
}

/// The plotted time series (seconds since start, value).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeSeries {
    pub queue_length: Vec<(f64, f64)>,
    pub max_position_seen: Vec<(f64, f64)>,
    pub admissions_per_s: Vec<(f64, f64)>,
    pub gateway_admissions_per_s: Vec<(f64, f64)>,
    pub accepted_per_s: Vec<(f64, f64)>,
    pub settled_per_s: Vec<(f64, f64)>,
    pub lag: BTreeMap<String, Vec<(f64, f64)>>,
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `pass` when nothing was lost, duplicated or mismatched.
    pub verdict: &'static str,
    pub run: RunInfo,
    pub lost: usize,
    pub duplicated: usize,
    pub mismatched: usize,
    pub reconciliation: Reconciliation,
    pub visitors: VisitorCounts,
    pub throughput: Throughput,
    pub queue: QueueFigures,
    /// Join to admitted, seconds.
    pub wait_s: Distribution,
    /// Submit request to its 202, seconds.
    pub intake_latency_s: Distribution,
    /// Submit answers that were 429/503 or failed in transport (retried with the same key).
    pub submit_transient_answers: u64,
    /// Server side: `received_at` to the first settled status in the history, seconds.
    pub submit_to_final_s: Distribution,
    /// Client side: 202 to first seeing the settled status while polling, seconds.
    pub submit_to_final_seen_s: Distribution,
    pub stages: BTreeMap<String, StageFigures>,
    pub system: SystemFigures,
    pub series: TimeSeries,
}

/// At most this many findings of each kind go into the files.
const MAX_FINDINGS: usize = 200;

/// Inputs to the summary.
pub struct Inputs<'a> {
    pub run: RunInfo,
    pub records: &'a [VisitorRecord],
    pub snapshots: &'a [Snapshot],
    pub observed: &'a std::collections::HashMap<uuid::Uuid, Observation>,
    pub reconciliation: Reconciliation,
    pub tester_cpu_s: Option<f64>,
}

fn delta(first: Option<f64>, last: Option<f64>) -> Option<f64> {
    Some(last? - first?)
}

pub fn summarize(i: Inputs<'_>) -> (Summary, Raw) {
    let records = i.records;
    let wall = i.run.wall_time_s;
    let mut v = VisitorCounts::default();
    let mut waits = Vec::new();
    let mut admitted_times = Vec::new();
    let mut latencies = Vec::new();
    let mut transient = 0u64;
    let mut accepted_times = Vec::new();
    let mut settled_times = Vec::new();
    let mut seen = Vec::new();
    let mut max_position = 0u32;
    let mut position_by_second: BTreeMap<u64, u32> = BTreeMap::new();
    for r in records {
        v.joined += usize::from(r.joined_at.is_some());
        v.admitted += usize::from(r.admitted_at.is_some());
        v.abandoned += usize::from(r.abandoned);
        if let Some(reason) = &r.gave_up {
            v.gave_up += 1;
            let short: String = reason.split(':').next().unwrap_or("").chars().take(60).collect();
            *v.gave_up_reasons.entry(short).or_default() += 1;
        }
        v.rejoins += u64::from(r.rejoins);
        v.passes_spent += usize::from(r.spent_pass);
        v.queue_polls += u64::from(r.polls);
        if let (Some(j), Some(a)) = (r.joined_at, r.admitted_at) {
            waits.push(a - j);
            admitted_times.push(a);
        }
        for &(t, p) in &r.positions {
            max_position = max_position.max(p);
            let e = position_by_second.entry(t.max(0.0) as u64).or_default();
            *e = (*e).max(p);
        }
        latencies.extend(&r.submit_latencies);
        transient += u64::from(r.submit_transient);
        for e in &r.accepted {
            accepted_times.push(e.accepted_at_s);
        }
        for &(id, s) in &r.settle_seen {
            seen.push(s);
            if let Some(e) = r.accepted.iter().find(|e| e.application_id == id) {
                settled_times.push(e.accepted_at_s + s);
            }
        }
    }
    let server_settle: Vec<f64> = i
        .observed
        .values()
        .filter_map(|o| match o {
            Observation::Settled { settle_secs, .. } => *settle_secs,
            _ => None,
        })
        .collect();

    let span = |times: &[f64], end: Option<f64>| -> f64 {
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let last = end.unwrap_or_else(|| times.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        if times.is_empty() || last.partial_cmp(&first) != Some(std::cmp::Ordering::Greater) {
            0.0
        } else {
            times.len() as f64 / (last - first)
        }
    };
    let last_settled = settled_times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let accepted_ps = per_second(&accepted_times, wall);
    let admissions_ps = per_second(&admitted_times, wall);
    let throughput = Throughput {
        accepted_per_s: span(&accepted_times, None),
        settled_per_s: if settled_times.is_empty() {
            0.0
        } else {
            let first = accepted_times.iter().copied().fold(f64::INFINITY, f64::min);
            if last_settled > first {
                settled_times.len() as f64 / (last_settled - first)
            } else {
                0.0
            }
        },
        peak_accepted_per_s: accepted_ps.iter().map(|p| p.1).fold(0.0, f64::max),
    };

    let snaps = i.snapshots;
    let mut gateway_admissions = Vec::new();
    for w in snaps.windows(2) {
        if let (Some(a), Some(b)) = (w[0].admitted_total, w[1].admitted_total) {
            let dt = w[1].t - w[0].t;
            if dt > 0.0 {
                gateway_admissions.push((w[1].t, (b - a).max(0.0) / dt));
            }
        }
    }
    let active: Vec<f64> = admissions_ps.iter().map(|p| p.1).filter(|c| *c > 0.0).collect();
    let queue = QueueFigures {
        max_length: snaps.iter().filter_map(|s| s.queue_length).reduce(f64::max),
        max_position_seen: max_position,
        peak_admissions_per_s: admissions_ps.iter().map(|p| p.1).fold(0.0, f64::max),
        mean_admissions_per_s: if active.is_empty() { 0.0 } else { active.iter().sum::<f64>() / active.len() as f64 },
    };

    let mut stages: BTreeMap<String, StageFigures> = BTreeMap::new();
    let mut lag_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in snaps {
        for (stage, lag) in &s.lag {
            let f = stages.entry(stage.clone()).or_default();
            f.max_lag = f.max_lag.max(*lag);
            lag_series.entry(stage.clone()).or_default().push((s.t, *lag));
        }
    }
    let (first, last) = (snaps.first(), snaps.last());
    if let (Some(first), Some(last)) = (first, last) {
        for (stage, busy) in &last.stage_busy_seconds {
            let before = first.stage_busy_seconds.get(stage).copied().unwrap_or(0.0);
            stages.entry(stage.clone()).or_default().busy_s = busy - before;
        }
    }
    let system = SystemFigures {
        cpu_s: delta(first.and_then(|s| s.cpu_seconds), last.and_then(|s| s.cpu_seconds)),
        cpu_cores: delta(first.and_then(|s| s.cpu_seconds), last.and_then(|s| s.cpu_seconds)).and_then(|c| {
            let dt = last.map_or(0.0, |l| l.t) - first.map_or(0.0, |f| f.t);
            (dt > 0.0).then(|| c / dt)
        }),
        peak_resident_bytes: snaps.iter().filter_map(|s| s.resident_bytes).reduce(f64::max),
        intake_busy_s: match (first, last) {
            (Some(f), Some(l)) => l
                .intake_busy_seconds
                .iter()
                .map(|(route, v)| (route.clone(), v - f.intake_busy_seconds.get(route).copied().unwrap_or(0.0)))
                .collect(),
            _ => BTreeMap::new(),
        },
        tester_cpu_s: i.tester_cpu_s,
    };

    let mut reconciliation = i.reconciliation;
    let (lost, duplicated, mismatched) = (reconciliation.lost.len(), reconciliation.duplicated.len(), reconciliation.mismatched.len());
    for list in [&mut reconciliation.lost, &mut reconciliation.duplicated, &mut reconciliation.mismatched] {
        list.truncate(MAX_FINDINGS);
    }
    let summary = Summary {
        verdict: if lost + duplicated + mismatched == 0 { "pass" } else { "fail" },
        run: i.run,
        lost,
        duplicated,
        mismatched,
        reconciliation,
        visitors: v,
        throughput,
        queue,
        wait_s: Distribution::of(&waits),
        intake_latency_s: Distribution::of(&latencies),
        submit_transient_answers: transient,
        submit_to_final_s: Distribution::of(&server_settle),
        submit_to_final_seen_s: Distribution::of(&seen),
        stages,
        system,
        series: TimeSeries {
            queue_length: snaps.iter().filter_map(|s| s.queue_length.map(|q| (s.t, q))).collect(),
            max_position_seen: position_by_second.into_iter().map(|(t, p)| (t as f64, f64::from(p))).collect(),
            admissions_per_s: admissions_ps,
            gateway_admissions_per_s: gateway_admissions,
            accepted_per_s: accepted_ps,
            settled_per_s: per_second(&settled_times, wall),
            lag: lag_series,
        },
    };
    (summary, Raw { waits, latencies, settle: server_settle })
}

/// Raw samples kept beside the summary for the histograms (not serialised).
pub struct Raw {
    pub waits: Vec<f64>,
    pub latencies: Vec<f64>,
    pub settle: Vec<f64>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |s| if s < 1.0 { format!("{:.0} ms", s * 1000.0) } else { format!("{s:.2} s") })
}

fn dist_row(name: &str, d: &Distribution) -> String {
    format!(
        "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(name),
        d.count,
        ms(d.p50),
        ms(d.p90),
        ms(d.p99),
        ms(d.max)
    )
}

fn findings_html(title: &str, list: &[Finding], total: usize) -> String {
    if total == 0 {
        return format!("<p><b>{}</b>: none.</p>", esc(title));
    }
    let mut s = format!("<p><b>{}</b>: {total}</p><ul>", esc(title));
    for f in list.iter().take(50) {
        let id = f.application_id.map(|i| format!("<code>{i}</code> ")).unwrap_or_default();
        let _ = write!(s, "<li>{id}{}</li>", esc(&f.what));
    }
    if total > 50 {
        let _ = write!(s, "<li>… {} more in summary.json</li>", total - 50);
    }
    s.push_str("</ul>");
    s
}

/// The HTML page.
pub fn html(s: &Summary, raw: Option<&Raw>) -> String {
    let r = &s.run;
    let verdict = if s.verdict == "pass" { "<span class=pass>PASS</span>" } else { "<span class=fail>FAIL</span>" };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>kyufu load test: {}</title><style>\
         body{{font-family:sans-serif;max-width:920px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:.5em 0}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{text-align:left;background:#f6f6f6}}\
         .pass{{color:#fff;background:#2a7;padding:2px 8px}}.fail{{color:#fff;background:#c33;padding:2px 8px}}svg{{display:block;margin:1em 0}}\
         </style></head><body>",
        s.verdict
    );
    let _ = write!(
        out,
        "<h1>Launch-day replay {verdict}</h1><p>{} applications planned, profile <b>{}</b> ({:.0} s of profile time) at speedup {}×, \
         against <code>{}</code>, started {}, took {:.0} s.</p>",
        r.planned_applications,
        esc(&r.profile),
        r.profile_duration_s,
        r.speedup,
        esc(&r.target),
        esc(&r.started_at),
        r.wall_time_s
    );
    let rc = &s.reconciliation;
    let _ = write!(
        out,
        "<h2>Reconciliation</h2><table><tr><th>accepted</th><td>{}</td></tr><tr><th>settled</th><td>{}</td></tr>\
         <tr><th>lost</th><td>{}</td></tr><tr><th>duplicated</th><td>{}</td></tr><tr><th>mismatched</th><td>{}</td></tr>\
         <tr><th>idempotent retries checked</th><td>{}</td></tr><tr><th>bad requests refused as specified</th><td>{} of {}</td></tr></table>",
        rc.accepted, rc.settled, s.lost, s.duplicated, s.mismatched, rc.retries_checked, rc.bad_inputs_as_expected, rc.bad_inputs_sent
    );
    out.push_str("<table><tr><th>status</th><th>final</th><th>expected</th></tr>");
    let mut keys: Vec<&String> = rc.by_status.keys().chain(rc.by_expected.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", esc(k), rc.by_status.get(k).copied().unwrap_or(0), rc.by_expected.get(k).copied().unwrap_or(0));
    }
    out.push_str("</table>");
    out.push_str(&findings_html("Lost", &rc.lost, s.lost));
    out.push_str(&findings_html("Duplicated", &rc.duplicated, s.duplicated));
    out.push_str(&findings_html("Mismatched", &rc.mismatched, s.mismatched));

    let v = &s.visitors;
    let _ = write!(
        out,
        "<h2>Figures</h2><table><tr><th>visitors joined / admitted / abandoned / gave up</th><td>{} / {} / {} / {}</td></tr>\
         <tr><th>visitors who spent their pass when done</th><td>{}</td></tr>\
         <tr><th>throughput (accepted applications/s)</th><td>{:.1}</td></tr><tr><th>settled applications/s</th><td>{:.1}</td></tr>\
         <tr><th>max queue length (gauge) / max position seen</th><td>{} / {}</td></tr>\
         <tr><th>admissions/s peak / mean while admitting</th><td>{:.0} / {:.1}</td></tr>\
         <tr><th>submit answers 429/503 or failed (retried)</th><td>{}</td></tr>\
         <tr><th>system CPU (s, cores)</th><td>{} / {}</td></tr><tr><th>tester CPU (s)</th><td>{}</td></tr></table>",
        v.joined,
        v.admitted,
        v.abandoned,
        v.gave_up,
        v.passes_spent,
        s.throughput.accepted_per_s,
        s.throughput.settled_per_s,
        s.queue.max_length.map_or("–".into(), |q| format!("{q:.0}")),
        s.queue.max_position_seen,
        s.queue.peak_admissions_per_s,
        s.queue.mean_admissions_per_s,
        s.submit_transient_answers,
        s.system.cpu_s.map_or("–".into(), |c| format!("{c:.0}")),
        s.system.cpu_cores.map_or("–".into(), |c| format!("{c:.2}")),
        s.system.tester_cpu_s.map_or("–".into(), |c| format!("{c:.0}")),
    );
    out.push_str("<table><tr><th>latency</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>");
    out.push_str(&dist_row("wait in queue (join → admitted)", &s.wait_s));
    out.push_str(&dist_row("intake (submit → 202)", &s.intake_latency_s));
    out.push_str(&dist_row("submit → final status (server)", &s.submit_to_final_s));
    out.push_str(&dist_row("submit → final status (seen by poller)", &s.submit_to_final_seen_s));
    out.push_str("</table>");
    if !s.stages.is_empty() {
        out.push_str("<table><tr><th>stage</th><th>max lag (messages)</th><th>busy (s)</th></tr>");
        for (stage, f) in &s.stages {
            let _ = write!(out, "<tr><th>{}</th><td>{:.0}</td><td>{:.1}</td></tr>", esc(stage), f.max_lag, f.busy_s);
        }
        out.push_str("</table>");
    }

    let se = &s.series;
    out.push_str("<h2>Plots</h2>");
    out.push_str(&line_chart(
        "Queue length over time",
        "seconds since start",
        "visitors",
        &[Series::line("kyufu_gateway_queue_length", se.queue_length.clone()), Series::dots("largest position told", se.max_position_seen.clone())],
    ));
    out.push_str(&line_chart(
        "Admissions per second",
        "seconds since start",
        "visitors/s",
        &[Series::line("admitted (seen by visitors)", se.admissions_per_s.clone()), Series::line("gateway cursor", se.gateway_admissions_per_s.clone())],
    ));
    out.push_str(&line_chart(
        "Applications accepted and settled per second",
        "seconds since start",
        "applications/s",
        &[Series::line("accepted (202)", se.accepted_per_s.clone()), Series::line("settled (seen)", se.settled_per_s.clone())],
    ));
    if let Some(raw) = raw {
        out.push_str(&bar_chart("Wait in the queue (join → admitted)", "seconds", "visitors", &histogram(&raw.waits, 40)));
        out.push_str(&bar_chart("Intake latency (submit → 202)", "seconds", "requests", &histogram(&raw.latencies, 40)));
        out.push_str(&bar_chart("Submit → final status (server history)", "seconds", "applications", &histogram(&raw.settle, 40)));
    }
    let lag: Vec<Series> = se.lag.iter().map(|(stage, pts)| Series::line(stage.clone(), pts.clone())).collect();
    out.push_str(&line_chart("Consumer lag per stage", "seconds since start", "messages", &lag));
    out.push_str("<p>All figures are in <code>summary.json</code>; every accepted application is in <code>ledger.jsonl</code>.</p></body></html>");
    out
}

/// Writes `summary.json` and `report.html` into `dir`.
pub fn write(dir: &Path, s: &Summary, raw: &Raw) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(s)?;
    std::fs::write(dir.join("summary.json"), json).with_context(|| format!("writing {}", dir.join("summary.json").display()))?;
    std::fs::write(dir.join("report.html"), html(s, Some(raw))).with_context(|| format!("writing {}", dir.join("report.html").display()))?;
    Ok(())
}

/// The short text printed at the end.
pub fn text(s: &Summary) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "verdict      : {}", s.verdict.to_uppercase());
    let _ = writeln!(t, "applications : {} planned, {} accepted, {} settled", s.run.planned_applications, s.reconciliation.accepted, s.reconciliation.settled);
    let _ = writeln!(t, "lost         : {}", s.lost);
    let _ = writeln!(t, "duplicated   : {}", s.duplicated);
    let _ = writeln!(t, "mismatched   : {}", s.mismatched);
    let statuses: Vec<String> = s.reconciliation.by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(t, "statuses     : {}", statuses.join(", "));
    let _ = writeln!(t, "throughput   : {:.1} applications/s accepted, {:.1}/s settled", s.throughput.accepted_per_s, s.throughput.settled_per_s);
    let d = &s.intake_latency_s;
    let _ = writeln!(t, "intake       : p50 {} p90 {} p99 {}", ms(d.p50), ms(d.p90), ms(d.p99));
    let d = &s.submit_to_final_s;
    let _ = writeln!(t, "to final     : p50 {} p99 {} (server history)", ms(d.p50), ms(d.p99));
    let d = &s.wait_s;
    let _ = writeln!(t, "queue wait   : p50 {} p99 {} max {}", ms(d.p50), ms(d.p99), ms(d.max));
    let _ = writeln!(t, "max queue    : {} (gauge), position {} (seen)", s.queue.max_length.map_or("–".into(), |q| format!("{q:.0}")), s.queue.max_position_seen);
    let _ = writeln!(t, "visitors     : {} joined, {} admitted, {} abandoned, {} gave up, {} spent their pass when done", s.visitors.joined, s.visitors.admitted, s.visitors.abandoned, s.visitors.gave_up, s.visitors.passes_spent);
    let _ = writeln!(t, "wall time    : {:.0} s", s.run.wall_time_s);
    for (kind, list) in [("lost", &s.reconciliation.lost), ("duplicated", &s.reconciliation.duplicated), ("mismatched", &s.reconciliation.mismatched)] {
        for f in list.iter().take(5) {
            let id = f.application_id.map(|i| format!("{i}: ")).unwrap_or_default();
            let _ = writeln!(t, "  {kind}: {id}{}", f.what);
        }
    }
    t
}
