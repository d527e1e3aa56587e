//! The loop every stage shares: poll the stage's input topic in its own consumer group, handle the
//! message, and commit only after the effect is durable (at-least-once; every stage is idempotent,
//! so a redelivery changes nothing).
//!
//! Messages are handled `concurrency` at a time, in lanes chosen by the message key (intake keys
//! every event by the child's identity key): messages with the same key go to the same lane and are
//! handled one after the other in their order on the partition, so "first application for a child
//! wins" keeps its meaning, while different children are checked side by side. Commits still happen
//! in poll order: a message is committed only when it and every message polled before it are done,
//! so a crash never skips one (at most `window` messages are handled again). Messages are polled in
//! batches (as many as the window has room for), and the finished ones are committed together: one
//! commit per partition for the newest finished message, which covers every one before it.
//!
//! Failures are split by who must act:
//! - `Unavailable` (a backing service is down): retried with capped backoff for as long as it takes;
//!   the message is not committed, lag grows and the alert fires. Dead-lettering everything during a
//!   Redis restart would send every application to review.
//! - `Failed` (processing went wrong): retried a bounded number of times, then dead-lettered.
//! - `Poison` (the message can never be processed): dead-lettered at once.
//!
//! Dead-lettering publishes the message with the reason to the dead-letter topic and moves the
//! application, if it is still `received`, to `needs_review` with `processing_failed`, so a person
//! sees it and the applicant is told it is being looked at.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use kyufu_domain::{ReasonCode, Status};
use kyufu_ports::events::{ApplicationEvent, DeadLetter};
use kyufu_ports::{AdapterError, Consumer, EventBus, Message, StatusStore, Transition};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::StageMetrics;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StageError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("processing failed: {0}")]
    Failed(String),
    #[error("poison message: {0}")]
    Poison(String),
}

impl From<AdapterError> for StageError {
    fn from(e: AdapterError) -> Self {
        match e {
            AdapterError::Unavailable(m) => StageError::Unavailable(m),
            // Retried a few times before the dead letter: a read that met a write in progress (a
            // store without atomic puts, such as a test server under overload) reads whole on the
            // next try; data that is really damaged still ends with a person.
            AdapterError::Corrupt(m) => StageError::Failed(format!("corrupt stored data: {m}")),
            AdapterError::AlreadyExists => StageError::Failed("unexpected already-exists".to_owned()),
        }
    }
}

/// What a stage decided about one message, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The stage moved the application or passed it on.
    Done(&'static str),
    /// Nothing to do (a replay of work already done, or a status the stage does not act on).
    Skipped,
}

#[async_trait]
pub trait Stage: Send + Sync + 'static {
    /// Stage name: `dedupe`, `documents`, `idcheck`, `coupon`. Used as the consumer group suffix and label.
    fn name(&self) -> &'static str;
    /// Handles one application event. Must be idempotent.
    async fn handle(&self, event: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError>;
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub group: String,
    pub input_topic: String,
    /// Further topics consumed by the same group (the lag gauge follows `input_topic` only).
    pub extra_topics: Vec<String>,
    pub dead_letter_topic: String,
    /// Attempts for `Failed` before dead-lettering.
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub poll_timeout: Duration,
    /// How often the consumer-lag gauge is refreshed, also while one message is being retried.
    pub lag_every: Duration,
    /// Messages handled at once (lanes by key); 1 handles them strictly one by one.
    pub concurrency: usize,
    /// Messages polled but not yet committed, at most (at least `concurrency`).
    pub window: usize,
}

/// Lanes per stage by default: enough to overlap the round trips of one message (status store,
/// document store, bus) with those of others.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Lanes of a stage worker on the production services by default (`kyufu worker --lanes`). A
/// message there spends most of its time waiting on round trips (a publish waits for every
/// in-sync replica), so a stage keeps about rate × round-trip time messages in hand: 500/s at
/// 30 ms each is 15. Each lane is a task, not a connection, so spare lanes cost nothing.
pub const WORKER_CONCURRENCY: usize = 32;

impl RunnerConfig {
    pub fn new(group: &str, input_topic: &str, dead_letter_topic: &str) -> Self {
        RunnerConfig {
            group: group.to_owned(),
            input_topic: input_topic.to_owned(),
            extra_topics: Vec::new(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            poll_timeout: Duration::from_millis(500),
            lag_every: Duration::from_secs(2),
            concurrency: DEFAULT_CONCURRENCY,
            window: DEFAULT_CONCURRENCY * 4,
        }
    }
}

/// One message handed to a lane; the lane answers on `done` with the outcome (`None`: shut down
/// before it finished) and the time the stage spent on it.
struct Job {
    msg: Arc<Message>,
    /// When it was polled: the wait for its lane is `kyufu_pipeline_queue_wait_seconds`.
    polled: Instant,
    done: oneshot::Sender<(Option<&'static str>, Duration)>,
}

/// A message polled and not yet committed, in poll order.
struct InFlight {
    msg: Arc<Message>,
    done: oneshot::Receiver<(Option<&'static str>, Duration)>,
}

fn lane_of(key: &[u8], lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    usize::try_from(h.finish() % u64::try_from(lanes.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Handles the jobs of one lane one after the other.
#[allow(clippy::too_many_arguments)]
async fn run_lane(
    stage: Arc<dyn Stage>,
    config: Arc<RunnerConfig>,
    bus: Arc<dyn EventBus>,
    status: Arc<dyn StatusStore>,
    metrics: StageMetrics,
    mut jobs: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = stage.name();
    while let Some(job) = jobs.recv().await {
        let started = Instant::now();
        metrics.queue_wait.with_label_values(&[name]).observe(started.duration_since(job.polled).as_secs_f64());
        let outcome = process(&*stage, &config, &*bus, &*status, &metrics, &job.msg, &mut shutdown).await;
        let _ = job.done.send((outcome, started.elapsed()));
    }
}

/// Runs `stage` until `shutdown` turns true. Returns an error only if it cannot subscribe.
pub async fn run_stage(
    stage: Arc<dyn Stage>,
    config: RunnerConfig,
    bus: Arc<dyn EventBus>,
    status: Arc<dyn StatusStore>,
    metrics: StageMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AdapterError> {
    let name = stage.name();
    let topics: Vec<&str> = std::iter::once(config.input_topic.as_str()).chain(config.extra_topics.iter().map(String::as_str)).collect();
    let mut consumer = bus.subscribe(&config.group, &topics).await?;
    tracing::info!(stage = name, group = %config.group, topic = %config.input_topic, "stage consuming");
    // The series alerts watch exist from the start at zero, so the first retry or dead letter is an
    // increase that `increase()` can see.
    metrics.retries.with_label_values(&[name]);
    metrics.dead_letters.with_label_values(&[name]);
    metrics.duration.with_label_values(&[name]);
    metrics.queue_wait.with_label_values(&[name]);
    refresh_lag(&mut *consumer, &metrics, name).await;
    let config = Arc::new(config);
    let lanes: Vec<(mpsc::Sender<Job>, tokio::task::JoinHandle<()>)> = (0..config.concurrency.max(1))
        .map(|_| {
            let (tx, rx) = mpsc::channel(config.window.max(1));
            let lane = run_lane(stage.clone(), config.clone(), bus.clone(), status.clone(), metrics.clone(), rx, shutdown.clone());
            (tx, tokio::spawn(lane))
        })
        .collect();
    let window = config.window.max(lanes.len());
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
    let mut lag_timer = tokio::time::interval(config.lag_every);
    lag_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'run: while !*shutdown.borrow() {
        let room = window.saturating_sub(in_flight.len());
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            // The oldest message is done: take it and every finished one right behind it, then
            // commit the last of them per partition (every earlier one is then committed too).
            done = async { (&mut in_flight.front_mut()?.done).await.ok() }, if !in_flight.is_empty() => {
                let (finished, stopped) = take_finished(&mut in_flight, done);
                for (_, outcome, spent) in &finished {
                    metrics.processed.with_label_values(&[name, outcome]).inc();
                    metrics.duration.with_label_values(&[name]).observe(spent.as_secs_f64());
                }
                // Commit; if the bus refuses, retry: the effect is durable and a redelivery is harmless.
                for msg in last_per_partition(finished.iter().map(|(m, _, _)| m)) {
                    let mut backoff = config.backoff;
                    while let Err(e) = consumer.commit(msg).await {
                        tracing::warn!(stage = name, error = %e, "commit failed");
                        if !sleep_or_shutdown(backoff, &mut shutdown).await {
                            break 'run;
                        }
                        backoff = (backoff * 2).min(config.max_backoff);
                    }
                }
                if stopped {
                    break; // shut down mid-message: not committed, so it is delivered again
                }
            }
            // The lag gauge keeps moving while messages take long (a backend outage retries them for
            // as long as it takes), so the lag alert sees the outage.
            _ = lag_timer.tick() => refresh_lag(&mut *consumer, &metrics, name).await,
            polled = consumer.poll_batch(room, config.poll_timeout), if room > 0 => {
                let batch = match polled {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(stage = name, error = %e, "poll failed");
                        sleep_or_shutdown(config.backoff * 10, &mut shutdown).await;
                        continue;
                    }
                };
                let polled = Instant::now();
                for msg in batch {
                    let msg = Arc::new(msg);
                    let (done_tx, done_rx) = oneshot::channel();
                    let lane = &lanes[lane_of(&msg.key, lanes.len())].0;
                    if lane.send(Job { msg: msg.clone(), polled, done: done_tx }).await.is_err() {
                        break 'run; // a lane ended: only on shutdown
                    }
                    in_flight.push_back(InFlight { msg, done: done_rx });
                }
            }
        }
    }
    // Let the lanes finish what they hold (their effects are idempotent either way; uncommitted
    // messages are delivered again), but do not wait on a stuck backend forever.
    drop(in_flight);
    let handles: Vec<_> = lanes.into_iter().map(|(_, handle)| handle).collect();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for handle in handles {
            let _ = handle.await;
        }
    })
    .await;
    tracing::info!(stage = name, "stage stopped");
    Ok(())
}

type Finished = (Arc<Message>, &'static str, Duration);

/// Pops the front (whose answer is `front`) and every message right behind it that is finished
/// too, in poll order. `true` if one of them was cut off by shutdown: it and everything after it
/// stay uncommitted.
fn take_finished(
    in_flight: &mut VecDeque<InFlight>,
    front: Option<(Option<&'static str>, Duration)>,
) -> (Vec<Finished>, bool) {
    let mut out = Vec::new();
    let mut answer = front;
    while let Some(job) = in_flight.pop_front() {
        match answer {
            Some((Some(outcome), spent)) => out.push((job.msg, outcome, spent)),
            _ => return (out, true),
        }
        let Some(next) = in_flight.front_mut() else { break };
        answer = match next.done.try_recv() {
            Ok(a) => Some(a),
            Err(oneshot::error::TryRecvError::Empty) => break,
            Err(oneshot::error::TryRecvError::Closed) => None,
        };
    }
    (out, false)
}

/// The last message of each partition among `done` (in poll order, so the highest offset).
fn last_per_partition<'a>(done: impl Iterator<Item = &'a Arc<Message>>) -> Vec<&'a Message> {
    let mut last: Vec<&Message> = Vec::new();
    for msg in done {
        match last.iter_mut().find(|m| m.topic == msg.topic && m.partition == msg.partition) {
            Some(slot) => *slot = msg,
            None => last.push(msg),
        }
    }
    last
}

/// Sets `kyufu_pipeline_consumer_lag_messages{stage}` from the bus, when the bus knows it.
async fn refresh_lag(consumer: &mut dyn Consumer, metrics: &StageMetrics, name: &str) {
    match consumer.lag().await {
        Ok(Some(lag)) => metrics.lag.with_label_values(&[name]).set(i64::try_from(lag).unwrap_or(i64::MAX)),
        Ok(None) => {}
        Err(e) => tracing::debug!(stage = name, error = %e, "lag unknown"),
    }
}

/// Sleeps for `d`; false if shutdown was requested meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.changed() => false,
        _ = tokio::time::sleep(d) => !*shutdown.borrow(),
    }
}

/// Handles one message to the end (done, skipped or dead-lettered). `None` on shutdown.
async fn process(
    stage: &dyn Stage,
    config: &RunnerConfig,
    bus: &dyn EventBus,
    status: &dyn StatusStore,
    metrics: &StageMetrics,
    msg: &Message,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<&'static str> {
    let name = stage.name();
    let event = match ApplicationEvent::from_json(&msg.payload) {
        Ok(ev) => ev,
        Err(e) => {
            let err = StageError::Poison(format!("undecodable payload: {}", e.classify_name()));
            return dead_letter(stage, config, bus, status, metrics, msg, None, &err, shutdown).await;
        }
    };
    let mut attempts = 0u32;
    let mut backoff = config.backoff;
    loop {
        let err = match stage.handle(&event, msg).await {
            Ok(Handled::Done(outcome)) => return Some(outcome),
            Ok(Handled::Skipped) => return Some("skipped"),
            Err(e) => e,
        };
        match &err {
            StageError::Unavailable(_) => {}
            StageError::Failed(_) => {
                attempts += 1;
                if attempts >= config.max_attempts {
                    return dead_letter(stage, config, bus, status, metrics, msg, Some(&event), &err, shutdown).await;
                }
            }
            StageError::Poison(_) => {
                return dead_letter(stage, config, bus, status, metrics, msg, Some(&event), &err, shutdown).await;
            }
        }
        metrics.retries.with_label_values(&[name]).inc();
        tracing::warn!(stage = name, application_id = %event.application_id, error = %err, "retrying");
        if !sleep_or_shutdown(backoff, shutdown).await {
            return None;
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    stage: &dyn Stage,
    config: &RunnerConfig,
    bus: &dyn EventBus,
    status: &dyn StatusStore,
    metrics: &StageMetrics,
    msg: &Message,
    event: Option<&ApplicationEvent>,
    err: &StageError,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<&'static str> {
    let name = stage.name();
    let letter = DeadLetter {
        v: 1,
        stage: name.to_owned(),
        topic: msg.topic.clone(),
        partition: msg.partition,
        offset: msg.offset,
        error: err.to_string(),
        reason: ReasonCode::ProcessingFailed,
        application_id: event.map(|e| e.application_id),
        failed_at: Utc::now(),
        payload: msg.payload.clone(),
    };
    let bytes = serde_json::to_vec(&letter).unwrap_or_default();
    let mut backoff = config.backoff;
    // The dead letter must be durable before the message is committed; never drop it.
    while let Err(e) = bus.publish(&config.dead_letter_topic, &msg.key, &bytes).await {
        tracing::warn!(stage = name, error = %e, "dead-letter publish failed");
        if !sleep_or_shutdown(backoff, shutdown).await {
            return None;
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
    metrics.dead_letters.with_label_values(&[name]).inc();
    tracing::error!(stage = name, application_id = ?event.map(|e| e.application_id), error = %err, "message dead-lettered");
    if let Some(ev) = event {
        let mut t = Transition::new(&[Status::Received], Status::NeedsReview, name);
        t.reasons = vec![ReasonCode::ProcessingFailed];
        loop {
            match status.transition(ev.application_id, &t).await {
                Ok(outcome) => {
                    if let kyufu_ports::TransitionOutcome::Applied(record) = &outcome {
                        metrics.observe_final(record);
                    }
                    break;
                }
                Err(AdapterError::Unavailable(e)) => {
                    tracing::warn!(stage = name, error = %e, "status store unavailable while dead-lettering");
                    if !sleep_or_shutdown(backoff, shutdown).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                }
                Err(e) => {
                    tracing::error!(stage = name, error = %e, "could not mark dead-lettered application");
                    break;
                }
            }
        }
    }
    Some("dead_lettered")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A stage whose backend is down until `up` is set.
    struct Blocked {
        up: AtomicBool,
    }

    #[async_trait]
    impl Stage for Blocked {
        fn name(&self) -> &'static str {
            "dedupe"
        }
        async fn handle(&self, _: &ApplicationEvent, _: &Message) -> Result<Handled, StageError> {
            if self.up.load(Ordering::Relaxed) {
                Ok(Handled::Done("unique"))
            } else {
                Err(StageError::Unavailable("backend switched off".into()))
            }
        }
    }

    fn value(registry: &prometheus::Registry, series: &str) -> Option<f64> {
        let text = kyufu_telemetry::encode(registry);
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
        for _ in 0..500 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lag_keeps_moving_while_a_backend_outage_blocks_the_stage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = kyufu_embedded::EmbeddedStore::open(dir.path()).expect("open");
        let registry = kyufu_telemetry::new_registry();
        let metrics = StageMetrics::new(&registry);
        let stage = Arc::new(Blocked { up: AtomicBool::new(false) });
        let mut config = RunnerConfig::new("g", "in", "dlq");
        config.lag_every = Duration::from_millis(20);
        config.poll_timeout = Duration::from_millis(20);
        config.backoff = Duration::from_millis(5);
        config.max_backoff = Duration::from_millis(20);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run_stage(stage.clone(), config, store.bus(), store.status_store(), metrics, rx));
        // The series alerts watch exist at zero before anything happens.
        eventually("zeroed series", || value(&registry, "kyufu_pipeline_dead_letters_total{stage=\"dedupe\"}") == Some(0.0)).await;
        assert_eq!(value(&registry, "kyufu_pipeline_retries_total{stage=\"dedupe\"}"), Some(0.0));

        // Valid events, so the stage (not the decoder) is what blocks.
        let bus = store.bus();
        let ev = sample_event();
        for _ in 0..5 {
            bus.publish("in", b"k", &ev.to_json()).await.expect("publish");
        }
        // Stuck on the first message: retries climb, and lag shows all five, not a frozen 0.
        let lag = "kyufu_pipeline_consumer_lag_messages{stage=\"dedupe\"}";
        eventually("lag 5 during the outage", || value(&registry, lag) == Some(5.0)).await;
        assert!(value(&registry, "kyufu_pipeline_retries_total{stage=\"dedupe\"}").unwrap_or(0.0) > 0.0);
        stage.up.store(true, Ordering::Relaxed);
        eventually("lag back to 0", || value(&registry, lag) == Some(0.0)).await;
        assert_eq!(value(&registry, "kyufu_pipeline_dead_letters_total{stage=\"dedupe\"}"), Some(0.0), "an outage dead-letters nothing");
        let _ = stop.send(true);
        task.await.expect("join").expect("stage ran");
    }

    /// Records what it handled; the message keyed `blocked` never finishes (backend down for it),
    /// the first keyed `slow` takes a while, the second one with that key must come after it.
    struct Lanes {
        handled: std::sync::Mutex<Vec<(Vec<u8>, u32, u64)>>,
        slow_seen: std::sync::atomic::AtomicU32,
        slow_done: AtomicBool,
    }

    #[async_trait]
    impl Stage for Lanes {
        fn name(&self) -> &'static str {
            "dedupe"
        }
        async fn handle(&self, _: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
            match raw.key.as_slice() {
                b"blocked" => return Err(StageError::Unavailable("down for this one".into())),
                b"slow" if self.slow_seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    self.slow_done.store(true, Ordering::SeqCst);
                }
                b"slow" => assert!(self.slow_done.load(Ordering::SeqCst), "same key overtook an earlier message"),
                _ => {}
            }
            self.handled.lock().expect("lock").push((raw.key.clone(), raw.partition, raw.offset));
            Ok(Handled::Done("unique"))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_go_side_by_side_in_order_per_key_and_commits_never_pass_an_unfinished_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = kyufu_embedded::EmbeddedStore::open(dir.path()).expect("open");
        let metrics = StageMetrics::new(&kyufu_telemetry::new_registry());
        let stage = Arc::new(Lanes {
            handled: std::sync::Mutex::new(Vec::new()),
            slow_seen: std::sync::atomic::AtomicU32::new(0),
            slow_done: AtomicBool::new(false),
        });
        let mut config = RunnerConfig::new("g", "in", "dlq");
        config.poll_timeout = Duration::from_millis(20);
        config.backoff = Duration::from_millis(5);
        config.max_backoff = Duration::from_millis(20);
        assert_ne!(lane_of(b"slow", config.concurrency), lane_of(b"blocked", config.concurrency), "the test needs them in different lanes");
        let bus = store.bus();
        let payload = sample_event().to_json();
        for key in ["slow", "blocked", "slow"] {
            bus.publish("in", key.as_bytes(), &payload).await.expect("publish");
        }
        for i in 0..40 {
            bus.publish("in", format!("child-{i}").as_bytes(), &payload).await.expect("publish");
        }
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run_stage(stage.clone(), config, bus.clone(), store.status_store(), metrics, rx));
        // `blocked` never finishes; everything in other lanes within the window goes on meanwhile.
        eventually("both slow ones and most children handled", || {
            let h = stage.handled.lock().expect("lock");
            h.iter().filter(|(k, _, _)| k == b"slow").count() == 2 && h.len() >= 20
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let handled = stage.handled.lock().expect("lock").clone();
        let slow: Vec<_> = handled.iter().filter(|(k, _, _)| k == b"slow").collect();
        assert!(slow[0].2 < slow[1].2, "same key, in partition order");
        let first_slow = handled.iter().position(|(k, _, _)| k == b"slow").unwrap_or(0);
        let children_before_slow = handled[..first_slow].iter().filter(|(k, _, _)| k.starts_with(b"child-")).count();
        assert!(children_before_slow >= 10, "other children were not held up by the slow one: {children_before_slow}");
        let _ = stop.send(true);
        task.await.expect("join").expect("stage ran");

        // Nothing unfinished was committed past: a new member of the group gets the stuck message
        // and every message the stage did not finish again.
        let mut again = bus.subscribe("g", &["in"]).await.expect("subscribe");
        let mut redelivered = Vec::new();
        while let Ok(Some(m)) = again.poll(Duration::from_millis(200)).await {
            redelivered.push((m.key.clone(), m.partition, m.offset));
        }
        let (_, stuck_partition, stuck_offset) =
            redelivered.iter().find(|(k, _, _)| k == b"blocked").cloned().expect("the stuck message is delivered again");
        assert!(
            handled.iter().any(|(_, p, o)| *p == stuck_partition && *o > stuck_offset),
            "the test needs a finished message after the stuck one on its partition"
        );
        let keys_handled: std::collections::HashSet<&[u8]> = handled.iter().map(|(k, _, _)| k.as_slice()).collect();
        let mut all = vec![b"slow".to_vec(), b"blocked".to_vec()];
        all.extend((0..40).map(|i| format!("child-{i}").into_bytes()));
        for key in all.iter().filter(|k| !keys_handled.contains(k.as_slice())) {
            assert!(redelivered.iter().any(|(k, _, _)| k == key), "{} was skipped", String::from_utf8_lossy(key));
        }
    }

    fn sample_event() -> ApplicationEvent {
        use kyufu_domain::application::{Application, BeneficiaryKind, Child, Guardian};
        let date = chrono::NaiveDate::from_ymd_opt(2019, 4, 1).unwrap_or_default();
        let person = |name: &str| (name.to_owned(), "ヤマダ".to_owned());
        let (family, kana) = person("山田");
        ApplicationEvent {
            v: ApplicationEvent::VERSION,
            application_id: uuid::Uuid::new_v4(),
            program_id: "p".into(),
            identity_key: "k".into(),
            received_at: Utc::now(),
            application: Application {
                kind: BeneficiaryKind::Child,
                expected_delivery_date: None,
                guardian: Guardian {
                    resident_id: None,
                    family_name: family.clone(),
                    given_name: "花子".into(),
                    family_name_kana: kana.clone(),
                    given_name_kana: "ハナコ".into(),
                    birth_date: date,
                    email: "g@example.jp".into(),
                    phone: "0312345678".into(),
                    postal_code: "9300001".into(),
                },
                child: Child {
                    resident_id: None,
                    family_name: family,
                    given_name: "太郎".into(),
                    family_name_kana: kana,
                    given_name_kana: "タロウ".into(),
                    birth_date: date,
                },
                consent: true,
            },
            document: kyufu_ports::events::DocumentRef {
                key: "d".into(),
                content_type: "image/png".into(),
                size: 1,
                sha256: "a".repeat(64),
            },
        }
    }
}
