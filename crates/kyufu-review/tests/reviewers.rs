//! Twenty reviewers at once clear a thousand cases through the console's HTTP interface, each
//! with a session of their own, taking the next case and deciding it: no case is decided twice,
//! none is skipped, and the rate is printed (a figure, not an assertion).

mod common;

use std::collections::HashSet;
use std::time::Instant;

use kyufu_domain::{Program, Status};
use kyufu_embedded::EmbeddedStore;
use serde_json::{json, Value};

const REVIEWERS: usize = 20;
const CASES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reviewers_clear_a_thousand_cases_without_collisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let program = Program::demo(common::reference());
    let names: Vec<String> = (0..REVIEWERS).map(|i| format!("reviewer{i:02}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let deps = common::deps(&store, common::registry(300), &program, common::reviewers(&name_refs));
    let t0 = Instant::now();
    let seeded = common::seed_review_cases(&deps, CASES).await;
    println!("seeded {CASES} cases in {:.2} s", t0.elapsed().as_secs_f64());
    let base = common::serve(deps.clone()).await;

    let t0 = Instant::now();
    let logins: Vec<_> = names
        .iter()
        .map(|n| {
            let (base, n) = (base.clone(), n.clone());
            tokio::spawn(async move { (n.clone(), common::login(&base, &n).await) })
        })
        .collect();
    let mut sessions = Vec::new();
    for l in logins {
        sessions.push(l.await.expect("login"));
    }
    println!("{REVIEWERS} logins (argon2id) in {:.2} s", t0.elapsed().as_secs_f64());
    let started = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, (name, c))| {
            let base = base.clone();
            tokio::spawn(async move {
                let mut decided = Vec::new();
                let mut refused = 0u32;
                loop {
                    let resp = c.post(format!("{base}/review/api/next")).send().await.expect("next");
                    assert_eq!(resp.status().as_u16(), 200, "next case for {name}");
                    let next: Value = resp.json().await.expect("json");
                    let Some(id) = next["application_id"].as_str().map(str::to_owned) else { break };
                    let decision = if (i + decided.len()) % 4 == 0 {
                        json!({"decision": "reject", "reason": "not_same_household"})
                    } else {
                        json!({"decision": "approve"})
                    };
                    let resp = c.post(format!("{base}/review/api/cases/{id}/decision")).json(&decision).send().await.expect("decide");
                    if resp.status().is_success() {
                        decided.push(id);
                    } else {
                        refused += 1;
                    }
                }
                (name, decided, refused)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut per_reviewer = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (name, decided, r) = t.await.expect("reviewer");
        per_reviewer.push((name, decided.len()));
        refused += r;
        all.extend(decided);
    }
    let elapsed = started.elapsed();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(refused, 0, "a case taken with 'next' was always the taker's to decide");
    assert_eq!(unique.len(), all.len(), "no case decided twice");
    let want: HashSet<String> = seeded.iter().map(ToString::to_string).collect();
    assert_eq!(unique.len(), CASES, "none skipped");
    assert!(all.iter().all(|id| want.contains(id)));
    // The store agrees: nothing waits, and each case has exactly one reviewer's move.
    let counts = deps.status.count_by_status().await.expect("counts");
    assert!(!counts.iter().any(|(s, n)| *s == Status::NeedsReview && *n > 0), "{counts:?}");
    for id in seeded.iter().step_by(37) {
        let r = deps.status.get(*id).await.expect("get").expect("record");
        assert_eq!(r.history.iter().filter(|h| h.actor.starts_with("reviewer:")).count(), 1, "{:?}", r.history);
    }
    let busiest = per_reviewer.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let idlest = per_reviewer.iter().map(|(_, n)| *n).min().unwrap_or(0);
    println!(
        "review console: {REVIEWERS} reviewers cleared {CASES} cases in {:.2} s = {:.0} cases/minute (per reviewer {idlest}..{busiest})",
        elapsed.as_secs_f64(),
        CASES as f64 / elapsed.as_secs_f64() * 60.0
    );
}
