//! The target's Prometheus `/metrics`, read once a second during the run: the waiting-room queue
//! length, admissions, per-stage consumer lag and busy time, and the system's CPU time, so the
//! report can show what the system itself saw and where its time went.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One series of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text format; lines that do not parse are skipped (a scrape is never a
/// reason to stop the run).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut key = String::new();
        let end;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    end = i + 1;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
        rest = &after[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// What one scrape showed, at `t` seconds since the run started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub t: f64,
    pub queue_length: Option<f64>,
    pub admitted_total: Option<f64>,
    /// `kyufu_pipeline_consumer_lag_messages` by stage.
    pub lag: BTreeMap<String, f64>,
    /// Sum of `kyufu_pipeline_processing_duration_seconds` by stage: time spent handling messages.
    pub stage_busy_seconds: BTreeMap<String, f64>,
    /// Sum of `kyufu_intake_request_duration_seconds` by route.
    pub intake_busy_seconds: BTreeMap<String, f64>,
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
}

impl Snapshot {
    pub fn from_samples(t: f64, samples: &[Sample]) -> Snapshot {
        let mut s = Snapshot { t, ..Default::default() };
        for m in samples {
            match m.name.as_str() {
                "kyufu_gateway_queue_length" => s.queue_length = Some(m.value),
                "kyufu_gateway_admitted_total" => s.admitted_total = Some(m.value),
                "process_cpu_seconds_total" => s.cpu_seconds = Some(m.value),
                "process_resident_memory_bytes" => s.resident_bytes = Some(m.value),
                "kyufu_pipeline_consumer_lag_messages" => {
                    if let Some(stage) = m.label("stage") {
                        *s.lag.entry(stage.to_owned()).or_default() += m.value;
                    }
                }
                "kyufu_pipeline_processing_duration_seconds_sum" => {
                    if let Some(stage) = m.label("stage") {
                        *s.stage_busy_seconds.entry(stage.to_owned()).or_default() += m.value;
                    }
                }
                "kyufu_intake_request_duration_seconds_sum" => {
                    if let Some(route) = m.label("route") {
                        *s.intake_busy_seconds.entry(route.to_owned()).or_default() += m.value;
                    }
                }
                _ => {}
            }
        }
        s
    }
}

/// Scrapes `url` every `every` until `stop` turns true, keeping every snapshot.
pub async fn sample(
    client: reqwest::Client,
    url: String,
    start: Instant,
    every: Duration,
    out: Arc<Mutex<Vec<Snapshot>>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let t = start.elapsed().as_secs_f64();
        let resp = client.get(&url).timeout(every.max(Duration::from_secs(2))).send().await;
        let Ok(resp) = resp else { continue };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(text) = resp.text().await else { continue };
        let snap = Snapshot::from_samples(t, &parse(&text));
        out.lock().unwrap_or_else(|e| e.into_inner()).push(snap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exposition_format() {
        let text = r#"# HELP kyufu_gateway_queue_length Visitors waiting
# TYPE kyufu_gateway_queue_length gauge
kyufu_gateway_queue_length 42
kyufu_pipeline_consumer_lag_messages{stage="dedupe"} 7
kyufu_pipeline_consumer_lag_messages{stage="idcheck",x="a,b\"c"} 3
kyufu_pipeline_processing_duration_seconds_sum{stage="coupon"} 1.5e0
kyufu_pipeline_processing_duration_seconds_bucket{stage="coupon",le="+Inf"} 9
process_cpu_seconds_total 12.25
garbage{ line
"#;
        let samples = parse(text);
        assert_eq!(samples.len(), 6);
        assert_eq!(samples[2].label("x"), Some("a,b\"c"));
        assert_eq!((samples[4].label("le"), samples[4].value), (Some("+Inf"), 9.0));
        assert_eq!(parse("x_max +Inf").first().map(|s| s.value), Some(f64::INFINITY));
        let s = Snapshot::from_samples(3.0, &samples);
        assert_eq!(s.queue_length, Some(42.0));
        assert_eq!(s.lag.get("dedupe"), Some(&7.0));
        assert_eq!(s.lag.get("idcheck"), Some(&3.0));
        assert_eq!(s.stage_busy_seconds.get("coupon"), Some(&1.5));
        assert_eq!(s.cpu_seconds, Some(12.25));
    }
}
