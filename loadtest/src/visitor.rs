//! One visitor's day, over the public HTTP contract only: join the waiting room, poll at the
//! advertised `refresh_after_seconds` (compressed by the speedup, never below a floor) until
//! admitted, maybe send a bad request, submit one application per child with the one pass
//! (retrying transient failures with the same `Idempotency-Key`, and some on purpose), then poll
//! each application with its status token until it settles. Every loop is bounded by attempts and
//! by the run's hard deadline, and nothing the system answers can make it panic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ledger::LedgerEntry;
use crate::plan::{BadInput, DocumentKind, PlannedApplication, RetryMode, Visitor};
use crate::profile::Speedup;
use crate::reconcile::{is_settled, BadInputResult, NotAccepted, Observation, RetryCheck};

/// Live counters for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub joined: AtomicU64,
    pub waiting: AtomicU64,
    pub admitted: AtomicU64,
    pub abandoned: AtomicU64,
    pub gave_up: AtomicU64,
    pub accepted: AtomicU64,
    pub settled: AtomicU64,
    pub refused: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What every visitor shares.
pub struct Ctx {
    pub client: reqwest::Client,
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub speedup: Speedup,
    /// Shortest wait between two polls of the waiting room.
    pub min_poll: Duration,
    pub start: Instant,
    /// How long an accepted application may take to settle.
    pub settle_timeout: Duration,
    /// Nothing runs past this.
    pub hard_deadline: Instant,
    pub ledger: mpsc::UnboundedSender<LedgerEntry>,
    pub live: Arc<Live>,
}

impl Ctx {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    fn out_of_time(&self) -> bool {
        Instant::now() >= self.hard_deadline
    }
    async fn sleep(&self, d: Duration) {
        let until = (Instant::now() + d).min(self.hard_deadline);
        tokio::time::sleep_until(until.into()).await;
    }
}

/// Everything measured about one visitor.
#[derive(Debug, Clone, Default)]
pub struct VisitorRecord {
    pub id: usize,
    /// Seconds since start.
    pub joined_at: Option<f64>,
    pub admitted_at: Option<f64>,
    /// (seconds since start, position) as the waiting room told it.
    pub positions: Vec<(f32, u32)>,
    pub abandoned: bool,
    pub gave_up: Option<String>,
    pub rejoins: u32,
    pub polls: u32,
    /// Latency of every submit answered 202, seconds.
    pub submit_latencies: Vec<f64>,
    /// Submit answers that asked to come back later (429/503) or failed in transport.
    pub submit_transient: u32,
    pub accepted: Vec<LedgerEntry>,
    /// Client-side seconds from the 202 to first seeing a settled status, per accepted id.
    pub settle_seen: Vec<(Uuid, f64)>,
    pub retry_checks: Vec<RetryCheck>,
    pub bad_input: Option<BadInputResult>,
    pub not_accepted: Vec<NotAccepted>,
    /// The pass was spent after the last child, as the citizen form does (204).
    pub spent_pass: bool,
}

/// One HTTP answer, read in full.
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<f64>,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

async fn read(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Answer { status, body, retry_after }
}

fn transient(status: u16) -> bool {
    status == 429 || status >= 500
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

/// The waiting room's answer.
struct QueueState {
    ticket: String,
    position: u64,
    refresh_after: f64,
    pass: Option<String>,
}

fn queue_state(a: &Answer) -> Option<QueueState> {
    Some(QueueState {
        ticket: a.str("ticket")?.to_owned(),
        position: a.body.get("position").and_then(Value::as_u64)?,
        refresh_after: a.body.get("refresh_after_seconds").and_then(Value::as_f64).unwrap_or(5.0),
        pass: (a.str("state") == Some("admitted")).then(|| a.str("pass").map(str::to_owned)).flatten(),
    })
}

/// Tries per request before a visitor gives up: with the backoff capped at 5 s, about 100 s of
/// retrying — a parent who keeps pressing "send again" for a minute or two. (12 tries, ~46 s,
/// was shorter than a Redis restart on a loaded 2-core machine in the fault run: three valid
/// applications were given up on while intake answered 503, which is honest but not a loss.)
const MAX_ATTEMPTS: u32 = 20;

async fn join(ctx: &Ctx) -> Result<QueueState, String> {
    let mut attempt = 0;
    loop {
        if ctx.out_of_time() {
            return Err("run deadline passed while joining".into());
        }
        attempt += 1;
        match ctx.client.post(format!("{}/queue/join", ctx.base)).send().await {
            Ok(resp) => {
                let a = read(resp).await;
                if a.status == 200 {
                    return queue_state(&a).ok_or_else(|| format!("join answer lacks ticket/position: {}", a.body));
                }
                if !transient(a.status) || attempt >= MAX_ATTEMPTS {
                    return Err(format!("join answered {} {}", a.status, a.code().unwrap_or("")));
                }
                ctx.sleep(ctx.speedup.wait(a.retry_after.unwrap_or(1.0), ctx.min_poll)).await;
            }
            Err(e) if attempt >= MAX_ATTEMPTS => return Err(format!("join failed: {e}")),
            Err(_) => ctx.sleep(backoff(attempt)).await,
        }
    }
}

/// Joins and polls until admitted; `None` when the visitor abandons or gives up (recorded).
async fn admit(ctx: &Ctx, v: &Visitor, rec: &mut VisitorRecord) -> Option<String> {
    let mut state = match join(ctx).await {
        Ok(s) => s,
        Err(e) => {
            rec.gave_up = Some(e);
            return None;
        }
    };
    if rec.joined_at.is_none() {
        rec.joined_at = Some(ctx.now());
        bump(&ctx.live.joined);
    }
    rec.positions.push((ctx.now() as f32, u32::try_from(state.position).unwrap_or(u32::MAX)));
    ctx.live.waiting.fetch_add(1, Ordering::Relaxed);
    let result = wait_in_queue(ctx, v, rec, &mut state).await;
    ctx.live.waiting.fetch_sub(1, Ordering::Relaxed);
    match &result {
        Some(_) => {
            if rec.admitted_at.is_none() {
                rec.admitted_at = Some(ctx.now());
                bump(&ctx.live.admitted);
            }
        }
        None if rec.abandoned => bump(&ctx.live.abandoned),
        None => bump(&ctx.live.gave_up),
    }
    result
}

async fn wait_in_queue(ctx: &Ctx, v: &Visitor, rec: &mut VisitorRecord, state: &mut QueueState) -> Option<String> {
    let mut errors = 0;
    let mut polls_this_visit = 0;
    loop {
        if let Some(pass) = state.pass.take() {
            if v.abandon_after_polls.is_some() {
                // Admitted at once, but walks away without applying.
                rec.abandoned = true;
                return None;
            }
            return Some(pass);
        }
        if v.abandon_after_polls.is_some_and(|n| polls_this_visit >= n) {
            rec.abandoned = true;
            return None;
        }
        if ctx.out_of_time() {
            rec.gave_up = Some("run deadline passed while waiting in the queue".into());
            return None;
        }
        ctx.sleep(ctx.speedup.wait(state.refresh_after, ctx.min_poll)).await;
        rec.polls += 1;
        polls_this_visit += 1;
        let resp = ctx.client.get(format!("{}/queue/status", ctx.base)).header("X-Queue-Ticket", &state.ticket).send().await;
        let a = match resp {
            Ok(r) => read(r).await,
            Err(e) => {
                errors += 1;
                if errors > MAX_ATTEMPTS {
                    rec.gave_up = Some(format!("queue status failed: {e}"));
                    return None;
                }
                ctx.sleep(backoff(errors)).await;
                continue;
            }
        };
        match a.status {
            200 => match queue_state(&a) {
                Some(s) => {
                    errors = 0;
                    rec.positions.push((ctx.now() as f32, u32::try_from(s.position).unwrap_or(u32::MAX)));
                    *state = s;
                }
                None => {
                    rec.gave_up = Some(format!("queue status lacks ticket/position: {}", a.body));
                    return None;
                }
            },
            // Expired or unknown ticket: join again, a bounded number of times.
            400 | 410 if rec.rejoins < 3 => {
                rec.rejoins += 1;
                match join(ctx).await {
                    Ok(s) => *state = s,
                    Err(e) => {
                        rec.gave_up = Some(e);
                        return None;
                    }
                }
            }
            s if transient(s) && errors < MAX_ATTEMPTS => {
                errors += 1;
                ctx.sleep(ctx.speedup.wait(a.retry_after.unwrap_or(1.0), ctx.min_poll)).await;
            }
            s => {
                rec.gave_up = Some(format!("queue status answered {s} {}", a.code().unwrap_or("")));
                return None;
            }
        }
    }
}

fn form(json: &str, document: Option<(DocumentKind, Vec<u8>)>) -> reqwest::multipart::Form {
    let mut f = reqwest::multipart::Form::new();
    let app = reqwest::multipart::Part::text(json.to_owned());
    f = f.part("application", app.mime_str("application/json").unwrap_or_else(|_| reqwest::multipart::Part::text(json.to_owned())));
    if let Some((kind, bytes)) = document {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(kind.file_name());
        let part = match part.mime_str(kind.mime()) {
            Ok(p) => p,
            Err(_) => return f,
        };
        f = f.part("document", part);
    }
    f
}

enum SubmitError {
    /// The pass expired or was refused: join the queue again.
    NeedPass(String),
    /// A final refusal.
    Refused(String),
}

#[derive(Default)]
struct Trace {
    latencies: Vec<f64>,
    transient: u32,
}

/// Submits `app` with `key`, retrying transient failures with the same key (so a retry can never
/// create a second application). Returns the id and status token of the 202.
async fn submit(ctx: &Ctx, pass: &str, app: &PlannedApplication, trace: &mut Trace) -> Result<(Uuid, String), SubmitError> {
    let mut attempt = 0;
    loop {
        if ctx.out_of_time() {
            return Err(SubmitError::Refused("run deadline passed while submitting".into()));
        }
        attempt += 1;
        let body = form(&app.json, Some((app.document, app.document.bytes(app.document_salt))));
        let sent = Instant::now();
        let resp = ctx
            .client
            .post(format!("{}/api/v1/applications", ctx.base))
            .header("X-Admission-Pass", pass)
            .header("Idempotency-Key", &app.idempotency_key)
            .multipart(body)
            .send()
            .await;
        let a = match resp {
            Ok(r) => read(r).await,
            Err(e) => {
                trace.transient += 1;
                if attempt >= MAX_ATTEMPTS {
                    return Err(SubmitError::Refused(format!("submit failed {attempt} times, last: {e}")));
                }
                ctx.sleep(backoff(attempt)).await;
                continue;
            }
        };
        let latency = sent.elapsed().as_secs_f64();
        match a.status {
            202 => {
                trace.latencies.push(latency);
                let id = a.str("application_id").and_then(|s| Uuid::parse_str(s).ok());
                let token = a.str("status_token").map(str::to_owned);
                return match (id, token) {
                    (Some(id), Some(token)) => Ok((id, token)),
                    _ => Err(SubmitError::Refused(format!("202 without application_id/status_token: {}", a.body))),
                };
            }
            403 if matches!(a.code(), Some("admission_expired" | "admission_spent")) => {
                return Err(SubmitError::NeedPass(a.code().unwrap_or_default().to_owned()))
            }
            s if transient(s) && attempt < MAX_ATTEMPTS => {
                trace.transient += 1;
                ctx.sleep(ctx.speedup.wait(a.retry_after.unwrap_or(1.0), ctx.min_poll).max(backoff(attempt))).await;
            }
            s => return Err(SubmitError::Refused(format!("{s} {}", a.code().unwrap_or("(no code)")))),
        }
    }
}

/// Submits one planned application as planned (once, or retried on purpose) and checks that a
/// retry got the same id.
async fn submit_planned(
    ctx: &Ctx,
    pass: &str,
    app: &PlannedApplication,
    rec: &mut VisitorRecord,
) -> Result<(Uuid, String), SubmitError> {
    let mut t1 = Trace::default();
    let result = match app.retry {
        None => submit(ctx, pass, app, &mut t1).await,
        Some(RetryMode::AfterAnswer) => {
            let first = submit(ctx, pass, app, &mut t1).await;
            if let Ok((id, _)) = &first {
                let mut t2 = Trace::default();
                let again = submit(ctx, pass, app, &mut t2).await;
                merge(&mut t1, t2);
                let mut ids = vec![*id];
                ids.extend(again.as_ref().ok().map(|(i, _)| *i));
                rec.retry_checks.push(RetryCheck { idempotency_key: app.idempotency_key.clone(), ids });
            }
            first
        }
        Some(RetryMode::Concurrent) => {
            let mut t2 = Trace::default();
            let (a, b) = tokio::join!(submit(ctx, pass, app, &mut t1), submit(ctx, pass, app, &mut t2));
            merge(&mut t1, t2);
            let ids: Vec<Uuid> = [&a, &b].iter().filter_map(|r| r.as_ref().ok().map(|(i, _)| *i)).collect();
            if !ids.is_empty() {
                rec.retry_checks.push(RetryCheck { idempotency_key: app.idempotency_key.clone(), ids });
            }
            if a.is_ok() {
                a
            } else {
                b
            }
        }
    };
    rec.submit_latencies.extend(t1.latencies);
    rec.submit_transient += t1.transient;
    result
}

fn merge(into: &mut Trace, from: Trace) {
    into.latencies.extend(from.latencies);
    into.transient += from.transient;
}

async fn send_bad_input(ctx: &Ctx, pass: &str, kind: BadInput, v: &Visitor) -> BadInputResult {
    let (expected_status, expected_code) = kind.expected();
    let valid = v.applications.first().map(|a| a.json.clone()).unwrap_or_else(|| "{}".to_owned());
    let doc = || Some((DocumentKind::Png, DocumentKind::Png.bytes(v.id as u64)));
    let (pass, key, json, document) = match kind {
        BadInput::MalformedJson => (pass.to_owned(), None, "{\"guardian\": ".to_owned(), doc()),
        BadInput::MissingDocument => (pass.to_owned(), None, valid.clone(), None),
        BadInput::UnsupportedDocument => (pass.to_owned(), None, valid.clone(), Some((DocumentKind::Png, b"GIF89a not an identity document".to_vec()))),
        BadInput::InvalidApplication => {
            let mut app: Value = serde_json::from_str(&valid).unwrap_or(Value::Null);
            if let Some(g) = app.get_mut("guardian") {
                g["email"] = Value::from("not-an-email");
            }
            (pass.to_owned(), None, app.to_string(), doc())
        }
        BadInput::BadIdempotencyKey => (pass.to_owned(), Some("bad key!"), valid.clone(), doc()),
        BadInput::ForgedPass => ("v1.forged.pass".to_owned(), None, valid.clone(), doc()),
    };
    // A busy system may answer 429/503 before it looks at the input at all; like any client, come
    // back after `Retry-After` and send the same thing, so the verdict is about the input.
    let mut attempt = 0;
    let (status, code) = loop {
        attempt += 1;
        let mut req = ctx.client.post(format!("{}/api/v1/applications", ctx.base)).header("X-Admission-Pass", &pass).multipart(form(&json, document.clone()));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        match req.send().await {
            Ok(r) => {
                let a = read(r).await;
                if transient(a.status) && attempt < MAX_ATTEMPTS {
                    ctx.sleep(ctx.speedup.wait(a.retry_after.unwrap_or(1.0), ctx.min_poll).max(backoff(attempt))).await;
                    continue;
                }
                break (Some(a.status), a.code().map(str::to_owned));
            }
            Err(_) if attempt < MAX_ATTEMPTS => ctx.sleep(backoff(attempt)).await,
            Err(_) => break (None, None),
        }
    };
    BadInputResult { kind: kind.as_str().to_owned(), expected_status, expected_code: expected_code.to_owned(), status, code }
}

/// Reads one application's status; `None` on a transient failure (retry later).
pub async fn look_up(client: &reqwest::Client, base: &str, id: Uuid, token: &str) -> Result<Observation, String> {
    let resp = client
        .get(format!("{base}/api/v1/applications/{id}"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let a = read(resp).await;
    match a.status {
        200 => Ok(observation(&a.body)),
        404 => Ok(Observation::NotFound),
        s => Err(format!("status lookup answered {s} {}", a.code().unwrap_or(""))),
    }
}

/// Turns a status body into an observation.
pub fn observation(body: &Value) -> Observation {
    let status = body.get("status").and_then(Value::as_str).unwrap_or("").to_owned();
    if !is_settled(&status) {
        return if status.is_empty() {
            Observation::Unreachable { error: format!("status answer without a status: {body}") }
        } else {
            Observation::Pending { status }
        };
    }
    let history: &[Value] = body.get("history").and_then(Value::as_array).map_or(&[], |v| v.as_slice());
    let finals: Vec<&Value> = history.iter().filter(|h| h.get("status").and_then(Value::as_str).is_some_and(is_settled)).collect();
    let time = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let received = time(body.get("received_at"));
    let first_final = time(finals.first().and_then(|h| h.get("at")));
    let settle_secs = match (received, first_final) {
        (Some(r), Some(f)) => Some((f - r).num_microseconds().unwrap_or(0) as f64 / 1e6),
        _ => None,
    };
    Observation::Settled {
        status,
        coupon_code: body.get("coupon_code").and_then(Value::as_str).map(str::to_owned),
        duplicate_of: body.get("duplicate_of").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()),
        // An answer without a history still shows one settled status.
        final_statuses: if history.is_empty() { 1 } else { finals.len() },
        settle_secs,
    }
}

/// Polls an accepted application until it settles (as an applicant refreshing the page would),
/// recording when it was first seen settled.
async fn await_settled(ctx: &Ctx, entry: &LedgerEntry, rec: &mut VisitorRecord) {
    let deadline = (Instant::now() + ctx.settle_timeout).min(ctx.hard_deadline);
    // An applicant refreshing the page: soon at first, then every few seconds.
    let mut wait = Duration::from_millis(500);
    loop {
        if let Ok(obs) = look_up(&ctx.client, &ctx.base, entry.application_id, &entry.status_token).await {
            match obs {
                Observation::Settled { .. } => {
                    rec.settle_seen.push((entry.application_id, ctx.now() - entry.accepted_at_s));
                    bump(&ctx.live.settled);
                    return;
                }
                // 404 is final per the contract; the reconciliation reports it.
                Observation::NotFound => return,
                _ => {}
            }
        }
        if Instant::now() + wait > deadline {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(Duration::from_secs(5));
    }
}

/// Plays one visitor.
/// Every child is in: spend the pass like the form does, so the place goes back at once. Best
/// effort, as in the browser; a failure only means the place returns when the pass expires.
async fn spend_pass(ctx: &Ctx, pass: &str) -> bool {
    let req = ctx.client.post(format!("{}/api/v1/pass/spend", ctx.base)).header("X-Admission-Pass", pass);
    matches!(req.send().await, Ok(resp) if resp.status().as_u16() == 204)
}

pub async fn visit(ctx: Arc<Ctx>, v: Visitor) -> VisitorRecord {
    let mut rec = VisitorRecord { id: v.id, ..Default::default() };
    let Some(mut pass) = admit(&ctx, &v, &mut rec).await else { return rec };
    if let Some(kind) = v.bad_input {
        rec.bad_input = Some(send_bad_input(&ctx, &pass, kind, &v).await);
    }
    let mut ids: Vec<Option<Uuid>> = vec![None; v.applications.len()];
    for (i, app) in v.applications.iter().enumerate() {
        let duplicate_of = app.repeats.and_then(|j| ids.get(j).copied().flatten());
        if app.repeats.is_some() && duplicate_of.is_none() {
            // The first application for this child never got in, so the repeat is not a duplicate.
            continue;
        }
        let mut fresh_passes = 0;
        let outcome = loop {
            match submit_planned(&ctx, &pass, app, &mut rec).await {
                Err(SubmitError::NeedPass(why)) if fresh_passes < 2 => {
                    fresh_passes += 1;
                    let quiet = Visitor { abandon_after_polls: None, ..v.clone() };
                    match admit(&ctx, &quiet, &mut rec).await {
                        Some(p) => pass = p,
                        None => break Err(format!("pass {why}, and could not be admitted again")),
                    }
                }
                Err(SubmitError::NeedPass(why)) => break Err(format!("pass {why} again and again")),
                Err(SubmitError::Refused(why)) => break Err(why),
                Ok(ok) => break Ok(ok),
            }
        };
        match outcome {
            Ok((application_id, status_token)) => {
                ids[i] = Some(application_id);
                let entry = LedgerEntry {
                    application_id,
                    status_token,
                    expected: app.expected,
                    kind: app.kind,
                    child: app.child.clone(),
                    idempotency_key: app.idempotency_key.clone(),
                    duplicate_of,
                    visitor: v.id,
                    accepted_at_s: ctx.now(),
                };
                bump(&ctx.live.accepted);
                // The writer only goes away at the very end of the run.
                let _ = ctx.ledger.send(entry.clone());
                rec.accepted.push(entry);
            }
            Err(reason) => {
                bump(&ctx.live.refused);
                rec.not_accepted.push(NotAccepted { visitor: v.id, idempotency_key: app.idempotency_key.clone(), reason });
            }
        }
    }
    if !rec.accepted.is_empty() && rec.not_accepted.is_empty() {
        rec.spent_pass = spend_pass(&ctx, &pass).await;
    }
    let accepted = rec.accepted.clone();
    for entry in &accepted {
        await_settled(&ctx, entry, &mut rec).await;
    }
    rec
}

/// The status of every ledger entry at the end, waiting (bounded by `deadline`) for stragglers to
/// settle. Looks up at most `parallel` at a time.
pub async fn sweep(
    client: &reqwest::Client,
    base: &str,
    entries: &[LedgerEntry],
    deadline: Instant,
    parallel: usize,
) -> std::collections::HashMap<Uuid, Observation> {
    use futures::stream::{self, StreamExt};
    let mut out = std::collections::HashMap::new();
    let mut todo: Vec<&LedgerEntry> = entries.iter().collect();
    let mut round = 0u32;
    loop {
        round += 1;
        let results: Vec<(Uuid, Observation)> = stream::iter(todo.iter().copied())
            .map(|e| async move {
                let mut last = String::new();
                for attempt in 0..4 {
                    match look_up(client, base, e.application_id, &e.status_token).await {
                        Ok(o) => return (e.application_id, o),
                        Err(err) => last = err,
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                (e.application_id, Observation::Unreachable { error: last })
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let mut again = Vec::new();
        for (id, obs) in results {
            if !matches!(obs, Observation::Settled { .. } | Observation::NotFound) {
                again.push(id);
            }
            out.insert(id, obs);
        }
        if again.is_empty() || Instant::now() >= deadline {
            return out;
        }
        todo.retain(|e| again.contains(&e.application_id));
        let pause = Duration::from_millis(500 * u64::from(round.min(4)));
        tokio::time::sleep_until((Instant::now() + pause).min(deadline).into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn observations_from_status_bodies() {
        let body = json!({
            "application_id": "00000000-0000-0000-0000-000000000001", "status": "duplicate", "reasons": ["duplicate_application"],
            "coupon_code": null, "duplicate_of": "00000000-0000-0000-0000-000000000002",
            "received_at": "2026-04-01T00:00:00Z", "updated_at": "2026-04-01T00:00:01.5Z",
            "history": [{"status": "received", "at": "2026-04-01T00:00:00Z", "actor": "intake"},
                        {"status": "duplicate", "at": "2026-04-01T00:00:01.5Z", "actor": "dedupe"}]
        });
        match observation(&body) {
            Observation::Settled { status, duplicate_of, final_statuses, settle_secs, coupon_code } => {
                assert_eq!(status, "duplicate");
                assert_eq!(duplicate_of, Uuid::parse_str("00000000-0000-0000-0000-000000000002").ok());
                assert_eq!((final_statuses, settle_secs, coupon_code), (1, Some(1.5), None));
            }
            other => panic!("not settled: {other:?}"),
        }
        assert_eq!(observation(&json!({"status": "received"})), Observation::Pending { status: "received".into() });
        assert_eq!(observation(&json!({"status": "approved"})), Observation::Pending { status: "approved".into() });
        assert!(matches!(observation(&json!([1, 2])), Observation::Unreachable { .. }));
        let twice = json!({"status": "rejected", "history": [{"status": "needs_review"}, {"status": "rejected"}]});
        assert!(matches!(observation(&twice), Observation::Settled { final_statuses: 2, .. }));
    }
}
