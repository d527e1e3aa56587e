//! `kyufu reviewer-entry NAME` makes an account entry the review console accepts: argon2id, the
//! password read from standard input (or generated), short passwords and bad names refused.

use std::io::Write;
use std::process::{Command, Stdio};

use kyufu_review::auth::LoginRefused;
use kyufu_review::Reviewers;

fn run(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kyufu"))
        .arg("reviewer-entry")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kyufu runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    child.wait_with_output().expect("output")
}

#[test]
fn reviewer_entries_are_argon2id_and_log_in() {
    let out = run(&["alice"], "correct horse battery\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alice = String::from_utf8(out.stdout).expect("utf-8");
    assert!(alice.starts_with("alice:$argon2id$v=19$"), "{alice}");

    let out = run(&["bob", "--generate"], "");
    assert!(out.status.success());
    let bob = String::from_utf8(out.stdout).expect("utf-8");
    let said = String::from_utf8(out.stderr).expect("utf-8");
    let password = said.trim().rsplit(' ').next().expect("the generated password");

    let reviewers = Reviewers::from_spec(&format!("{alice}{bob}")).expect("both entries load");
    assert_eq!(reviewers.login("alice", "correct horse battery", None), Ok("alice".into()));
    assert_eq!(reviewers.login("alice", "correct horse batter", None), Err(LoginRefused::Wrong));
    assert_eq!(reviewers.login("bob", password, None), Ok("bob".into()));

    let short = run(&["carol"], "short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
    let bad = run(&["carol;x"], "long enough password\n");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("reviewer name"));
}
