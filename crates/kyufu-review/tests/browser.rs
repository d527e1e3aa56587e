//! A reviewer's shift in a real browser: headless Debian Chromium driven by playwright-core
//! (`e2e/review.mjs`) against the console on the embedded store. Logs in, then by keyboard only
//! takes the next case, zooms and rotates the document, approves, rejects with a reason, and
//! leaves a case (given back); the list shows another reviewer's lock.
//!
//! Needs `node`, `chromium` and `e2e/node_modules` (all installed by `make deps`); fails loudly
//! without them. `KYUFU_SCREENSHOTS=docs/screenshots` keeps the screenshots.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_embedded::EmbeddedStore;
use serde_json::json;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_takes_zooms_and_decides_cases_with_the_keyboard() {
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: run `make deps` (scripts/install-deps.sh)");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: run `make deps` (scripts/install-deps.sh)");
    assert!(repo().join("e2e/node_modules/playwright-core").exists(), "e2e/node_modules is missing: run `make deps` (npm ci in e2e/)");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let program = Program::demo(common::reference());
    let registry = common::registry(60);
    let deps = common::deps(&store, registry.clone(), &program, common::reviewers(&["alice", "bob"]));
    let cases = common::seed_review_cases(&deps, 4).await;
    let base = common::serve(deps.clone()).await;

    // Bob holds the newest case.
    let bob = common::login(&base, "bob").await;
    let resp = bob.post(format!("{base}/review/cases/{}/take", cases[3])).send().await.expect("take");
    assert_eq!(resp.status().as_u16(), 303);

    let first = common::load_event(&deps, cases[0]).await;
    let child_resident_id = registry
        .find_by_kana_and_birth(&first.application.child.family_name_kana, &first.application.child.given_name_kana, first.application.child.birth_date)
        .first()
        .map(|r| r.resident_id.clone())
        .expect("the child is in the registry");
    let input = json!({
        "base": base,
        "name": "alice",
        "password": common::password("alice"),
        "cases": cases.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "held_by_bob": cases[3].to_string(),
        "child_resident_id": child_resident_id,
    });
    let input_path = dir.path().join("review.json");
    std::fs::write(&input_path, input.to_string()).expect("write input");
    let shots = std::env::var("KYUFU_SCREENSHOTS").map(|p| repo().join(p)).unwrap_or_else(|_| dir.path().join("shots"));
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(repo().join("e2e/review.mjs")).arg(&input_path).env("SHOTS", &shots).env("CHROMIUM", &chromium).output().expect("run node")
    })
    .await
    .expect("join");
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{log}");
    assert!(out.status.success(), "browser walk failed:\n{log}");
    assert!(log.contains("review walk passed"));

    // What the keyboard did is what the store says.
    let get = |i: usize| {
        let status = deps.status.clone();
        let id = cases[i];
        async move { status.get(id).await.expect("get").expect("record") }
    };
    let approved = get(0).await;
    assert_eq!(approved.status, Status::Approved);
    assert!(approved.history.iter().any(|h| h.actor == "reviewer:alice"));
    let rejected = get(1).await;
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(rejected.reasons, vec![ReasonCode::RejectedByReviewer, ReasonCode::NotSameHousehold]);
    assert_eq!(get(2).await.status, Status::NeedsReview, "left undecided");
    assert_eq!(get(3).await.status, Status::NeedsReview, "bob's");
}
