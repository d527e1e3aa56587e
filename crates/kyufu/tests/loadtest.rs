//! The launch-day load tester against the real binary: a compressed launch day of 200
//! applications (surge, waiting room with a low admission rate, siblings on one pass, retries,
//! repeats, wrong children, bad requests, abandoners) through `kyufu all-in-one`, reconciled at the
//! end. Nothing may be lost, duplicated or settle differently from the plan.

mod common;

use std::time::Duration;

use common::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_launch_day_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A slow door (10 admissions/s, burst 2) so the opening crowd (about 40 households within the
    // first half second) really waits in the queue for a few seconds, long enough for the
    // once-a-second metrics scrape to see it.
    let sys = System::start(dir.path(), &["--households", "300", "--rate", "10", "--burst", "2"]);
    let out = dir.path().join("loadtest-report");
    let today = chrono::Local::now().date_naive();
    let config = loadtest::Config {
        target: sys.base.clone(),
        metrics: sys.staff.clone(),
        allow_remote: false,
        profile_name: "launch-day".into(),
        curve: loadtest::profile::Curve::launch_day(),
        applications: 200,
        // A day in ten seconds.
        speedup: loadtest::profile::Speedup::new(8_640.0).expect("speedup"),
        registry: dir.path().join("registry.csv"),
        reference_date: today,
        age_limit: 18,
        out_dir: out.clone(),
        seed: 11,
        mix: loadtest::plan::Mix { retry: 0.1, duplicate: 0.05, wrong: 0.05, bad_input: 0.1, abandon: 0.05, omit_resident_id: 0.5 },
        min_poll: Duration::from_millis(200),
        settle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(40),
        progress: false,
    };
    let outcome = loadtest::run(config).await.expect("load run");
    let s = &outcome.summary;
    let text = loadtest::report::text(s);
    eprintln!("{text}");
    assert_eq!((s.lost, s.duplicated, s.mismatched), (0, 0, 0), "{text}");
    assert!(outcome.passed());
    assert_eq!(s.reconciliation.accepted, 200, "{text}");
    assert_eq!(s.reconciliation.settled, 200, "{text}");
    for status in ["coupon_issued", "duplicate", "needs_review"] {
        assert!(s.reconciliation.by_status.get(status).copied().unwrap_or(0) > 0, "no {status}: {text}");
    }
    assert!(s.reconciliation.retries_checked > 0 && s.reconciliation.bad_inputs_sent > 0, "{text}");
    // The opening crowd queued: someone was told a position, and the gauge saw a queue.
    assert!(s.queue.max_position_seen > 0, "{text}");
    assert!(s.queue.max_length.is_some_and(|q| q > 0.0), "{text}");
    assert!(s.intake_latency_s.p50.is_some() && s.submit_to_final_s.p99.is_some(), "{text}");
    assert!(s.stages.contains_key("dedupe"), "consumer lag metric scraped: {:?}", s.stages.keys());
    assert!(out.join("report.html").exists() && out.join("ledger.jsonl").exists());
}
