//! Reconciliation: the proof that nothing was lost. Takes the ledger of accepted applications and
//! what the system says about each of them at the end, and finds every application that was
//! **lost** (404, still unsettled at the deadline, or never looked up), **duplicated** (an
//! idempotent retry that got a second id, a coupon code issued twice, a child with two coupons)
//! or **mismatched** (settled differently from what the plan made certain, a duplicate pointing at
//! the wrong first application, more than one final status, a valid application refused, a bad
//! request not refused as the contract says). Pure: no IO, so it is tested on made-up answers.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use uuid::Uuid;

use crate::ledger::LedgerEntry;

/// The statuses an application ends in without a person.
pub const SETTLED: [&str; 4] = ["coupon_issued", "duplicate", "needs_review", "rejected"];

pub fn is_settled(status: &str) -> bool {
    SETTLED.contains(&status)
}

/// What the system said about one application at the end.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Observation {
    Settled {
        status: String,
        coupon_code: Option<String>,
        duplicate_of: Option<Uuid>,
        /// How many settled statuses the history went through (must be exactly one).
        final_statuses: usize,
        /// Server-side seconds from `received_at` to the first settled status, if the history says.
        settle_secs: Option<f64>,
    },
    /// Still in a non-final status when the deadline passed.
    Pending { status: String },
    NotFound,
    /// No valid answer (transport error, 5xx, unreadable body) until the deadline.
    Unreachable { error: String },
}

/// The ids one `Idempotency-Key` got back (a retry must get the first one again).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryCheck {
    pub idempotency_key: String,
    pub ids: Vec<Uuid>,
}

/// A request built to be refused, and how it was answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadInputResult {
    pub kind: String,
    pub expected_status: u16,
    pub expected_code: String,
    pub status: Option<u16>,
    pub code: Option<String>,
}

impl BadInputResult {
    pub fn as_expected(&self) -> bool {
        self.status == Some(self.expected_status) && self.code.as_deref() == Some(self.expected_code.as_str())
    }
}

/// A planned application that never got its 202.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotAccepted {
    pub visitor: usize,
    pub idempotency_key: String,
    pub reason: String,
}

/// One finding, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<Uuid>,
    pub what: String,
}

fn finding(id: Option<Uuid>, what: impl Into<String>) -> Finding {
    Finding { application_id: id, what: what.into() }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Ledger entries (accepted applications).
    pub accepted: usize,
    /// Accepted applications that reached a settled status.
    pub settled: usize,
    /// Final status counts (plus `pending`, `not_found`, `unreachable`).
    pub by_status: BTreeMap<String, usize>,
    /// What the plan expected, counted.
    pub by_expected: BTreeMap<String, usize>,
    pub lost: Vec<Finding>,
    pub duplicated: Vec<Finding>,
    pub mismatched: Vec<Finding>,
    pub retries_checked: usize,
    pub bad_inputs_sent: usize,
    pub bad_inputs_as_expected: usize,
}

impl Reconciliation {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.mismatched.is_empty()
    }
}

/// Checks every ledger entry against its observation, plus the retries, the bad requests and the
/// applications that were never accepted.
pub fn reconcile(
    entries: &[LedgerEntry],
    observed: &HashMap<Uuid, Observation>,
    retries: &[RetryCheck],
    bad_inputs: &[BadInputResult],
    not_accepted: &[NotAccepted],
) -> Reconciliation {
    let mut r = Reconciliation { accepted: entries.len(), ..Default::default() };
    let mut ids: HashMap<Uuid, &LedgerEntry> = HashMap::new();
    let mut coupons: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    let mut coupons_per_child: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    for e in entries {
        *r.by_expected.entry(e.expected.as_str().to_owned()).or_default() += 1;
        let id = e.application_id;
        if let Some(other) = ids.insert(id, e) {
            // Two separate submissions answered with one id: one of them is gone.
            r.lost.push(finding(
                Some(id),
                format!("two submissions (keys {} and {}) were both answered with this id", other.idempotency_key, e.idempotency_key),
            ));
            continue;
        }
        let status_key = |s: &str| s.to_owned();
        match observed.get(&id) {
            None => {
                *r.by_status.entry(status_key("unreachable")).or_default() += 1;
                r.lost.push(finding(Some(id), "accepted but never looked up"));
            }
            Some(Observation::NotFound) => {
                *r.by_status.entry(status_key("not_found")).or_default() += 1;
                r.lost.push(finding(Some(id), "accepted (202) but the status lookup answers 404"));
            }
            Some(Observation::Unreachable { error }) => {
                *r.by_status.entry(status_key("unreachable")).or_default() += 1;
                r.lost.push(finding(Some(id), format!("accepted but its status could not be read: {error}")));
            }
            Some(Observation::Pending { status }) => {
                *r.by_status.entry(status_key("pending")).or_default() += 1;
                r.lost.push(finding(Some(id), format!("accepted but still `{status}` at the deadline")));
            }
            Some(Observation::Settled { status, coupon_code, duplicate_of, final_statuses, .. }) => {
                r.settled += 1;
                *r.by_status.entry(status.clone()).or_default() += 1;
                if status != e.expected.as_str() {
                    r.mismatched.push(finding(Some(id), format!("expected {}, got {status}", e.expected.as_str())));
                }
                if *final_statuses != 1 {
                    r.mismatched.push(finding(Some(id), format!("went through {final_statuses} final statuses")));
                }
                if status == "duplicate" && e.duplicate_of.is_some() && *duplicate_of != e.duplicate_of {
                    let shown = duplicate_of.map_or("nothing".to_owned(), |d| d.to_string());
                    let want = e.duplicate_of.map(|d| d.to_string()).unwrap_or_default();
                    r.mismatched.push(finding(Some(id), format!("duplicate points at {shown}, not at the first application {want}")));
                }
                match (status.as_str(), coupon_code) {
                    ("coupon_issued", Some(code)) => {
                        coupons.entry(code.as_str()).or_default().push(id);
                        coupons_per_child.entry(e.child.as_str()).or_default().push(id);
                    }
                    ("coupon_issued", None) => r.mismatched.push(finding(Some(id), "coupon_issued without a coupon code")),
                    (_, Some(code)) => {
                        coupons.entry(code.as_str()).or_default().push(id);
                        r.mismatched.push(finding(Some(id), format!("{status} but carries coupon code {code}")));
                    }
                    _ => {}
                }
            }
        }
    }
    for (code, holders) in &coupons {
        if holders.len() > 1 {
            r.duplicated.push(finding(holders.first().copied(), format!("coupon code {code} was issued to {} applications", holders.len())));
        }
    }
    for (child, holders) in &coupons_per_child {
        if holders.len() > 1 {
            r.duplicated.push(finding(holders.first().copied(), format!("child {child} got {} coupons", holders.len())));
        }
    }
    r.retries_checked = retries.len();
    for check in retries {
        let mut distinct = check.ids.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            r.duplicated.push(finding(
                distinct.first().copied(),
                format!("Idempotency-Key {} got {} different ids", check.idempotency_key, distinct.len()),
            ));
        }
    }
    r.bad_inputs_sent = bad_inputs.len();
    for b in bad_inputs {
        if b.as_expected() {
            r.bad_inputs_as_expected += 1;
        } else {
            let got = match (b.status, &b.code) {
                (Some(s), Some(c)) => format!("{s} {c}"),
                (Some(s), None) => format!("{s} without a JSON code"),
                (None, _) => "no answer".to_owned(),
            };
            r.mismatched.push(finding(None, format!("bad request `{}` expected {} {}, got {got}", b.kind, b.expected_status, b.expected_code)));
        }
    }
    for n in not_accepted {
        r.mismatched.push(finding(None, format!("a valid application of visitor {} (key {}) was not accepted: {}", n.visitor, n.idempotency_key, n.reason)));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AppKind, Expected};

    fn entry(n: u8, expected: Expected, child: &str) -> LedgerEntry {
        LedgerEntry {
            application_id: Uuid::from_bytes([n; 16]),
            status_token: "t".into(),
            expected,
            kind: AppKind::Correct,
            child: child.into(),
            idempotency_key: format!("key-{n:05}"),
            duplicate_of: None,
            visitor: n as usize,
            accepted_at_s: 0.0,
        }
    }

    fn settled(status: &str, coupon: Option<&str>) -> Observation {
        settled_as(status, coupon, None, 1)
    }

    fn settled_as(status: &str, coupon: Option<&str>, duplicate_of: Option<Uuid>, final_statuses: usize) -> Observation {
        Observation::Settled { status: status.into(), coupon_code: coupon.map(str::to_owned), duplicate_of, final_statuses, settle_secs: Some(0.1) }
    }

    #[test]
    fn a_clean_run_passes_with_counts() {
        let mut dup = entry(3, Expected::Duplicate, "c1");
        dup.duplicate_of = Some(Uuid::from_bytes([1; 16]));
        let entries = vec![entry(1, Expected::CouponIssued, "c1"), entry(2, Expected::NeedsReview, "c2"), dup];
        let mut obs = HashMap::new();
        obs.insert(Uuid::from_bytes([1; 16]), settled("coupon_issued", Some("AAAA")));
        obs.insert(Uuid::from_bytes([2; 16]), settled("needs_review", None));
        obs.insert(
            Uuid::from_bytes([3; 16]),
            settled_as("duplicate", None, Some(Uuid::from_bytes([1; 16])), 1),
        );
        let retries = vec![RetryCheck { idempotency_key: "key-00001".into(), ids: vec![Uuid::from_bytes([1; 16]); 2] }];
        let bad = vec![BadInputResult { kind: "x".into(), expected_status: 415, expected_code: "c".into(), status: Some(415), code: Some("c".into()) }];
        let r = reconcile(&entries, &obs, &retries, &bad, &[]);
        assert!(r.passed(), "{r:?}");
        assert_eq!((r.accepted, r.settled, r.bad_inputs_as_expected, r.retries_checked), (3, 3, 1, 1));
        assert_eq!(r.by_status.get("coupon_issued"), Some(&1));
        assert_eq!(r.by_expected.get("duplicate"), Some(&1));
    }

    #[test]
    fn loss_is_caught_in_every_form() {
        let entries: Vec<LedgerEntry> = (1..=4).map(|n| entry(n, Expected::CouponIssued, &format!("c{n}"))).collect();
        let mut obs = HashMap::new();
        obs.insert(Uuid::from_bytes([1; 16]), Observation::NotFound);
        obs.insert(Uuid::from_bytes([2; 16]), Observation::Pending { status: "received".into() });
        obs.insert(Uuid::from_bytes([3; 16]), Observation::Unreachable { error: "connection refused".into() });
        let r = reconcile(&entries, &obs, &[], &[], &[]);
        assert_eq!(r.lost.len(), 4, "{:?}", r.lost);
        assert!(!r.passed());
        assert!(r.lost.iter().any(|f| f.what.contains("404")));
        assert!(r.lost.iter().any(|f| f.what.contains("still `received`")));
        assert!(r.lost.iter().any(|f| f.what.contains("never looked up")));
        assert_eq!(r.by_status.get("pending"), Some(&1));

        // Two separate submissions collapsed into one id: one is lost.
        let mut twin = entry(5, Expected::CouponIssued, "c5");
        twin.idempotency_key = "other-key".into();
        let entries = vec![entry(5, Expected::CouponIssued, "c6"), twin];
        let mut obs = HashMap::new();
        obs.insert(Uuid::from_bytes([5; 16]), settled("coupon_issued", Some("X")));
        let r = reconcile(&entries, &obs, &[], &[], &[]);
        assert_eq!(r.lost.len(), 1);
    }

    #[test]
    fn duplication_is_caught_in_every_form() {
        let entries = vec![entry(1, Expected::CouponIssued, "c1"), entry(2, Expected::CouponIssued, "c2"), entry(3, Expected::CouponIssued, "c2")];
        let mut obs = HashMap::new();
        obs.insert(Uuid::from_bytes([1; 16]), settled("coupon_issued", Some("SAME")));
        obs.insert(Uuid::from_bytes([2; 16]), settled("coupon_issued", Some("SAME")));
        obs.insert(Uuid::from_bytes([3; 16]), settled("coupon_issued", Some("OTHER")));
        let retries = vec![RetryCheck { idempotency_key: "k".into(), ids: vec![Uuid::from_bytes([1; 16]), Uuid::from_bytes([7; 16])] }];
        let r = reconcile(&entries, &obs, &retries, &[], &[]);
        assert_eq!(r.duplicated.len(), 3, "{:?}", r.duplicated);
        assert!(r.duplicated.iter().any(|f| f.what.contains("coupon code SAME was issued to 2")));
        assert!(r.duplicated.iter().any(|f| f.what.contains("child c2 got 2 coupons")));
        assert!(r.duplicated.iter().any(|f| f.what.contains("Idempotency-Key k got 2 different ids")));
        assert!(r.lost.is_empty());
    }

    #[test]
    fn mismatches_are_caught() {
        let mut dup = entry(2, Expected::Duplicate, "c1");
        dup.duplicate_of = Some(Uuid::from_bytes([1; 16]));
        let entries = vec![entry(1, Expected::CouponIssued, "c1"), dup, entry(3, Expected::NeedsReview, "c3")];
        let mut obs = HashMap::new();
        obs.insert(Uuid::from_bytes([1; 16]), settled_as("needs_review", None, None, 2));
        obs.insert(Uuid::from_bytes([2; 16]), settled_as("duplicate", None, Some(Uuid::from_bytes([9; 16])), 1));
        obs.insert(Uuid::from_bytes([3; 16]), settled("needs_review", Some("LEAK")));
        let bad = vec![
            BadInputResult { kind: "forged_pass".into(), expected_status: 403, expected_code: "admission_invalid".into(), status: Some(202), code: None },
            BadInputResult { kind: "malformed_json".into(), expected_status: 400, expected_code: "invalid_json".into(), status: Some(400), code: Some("invalid_multipart".into()) },
        ];
        let not_accepted = vec![NotAccepted { visitor: 1, idempotency_key: "k".into(), reason: "422 invalid_application".into() }];
        let r = reconcile(&entries, &obs, &[], &bad, &not_accepted);
        let whats: Vec<&str> = r.mismatched.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(r.mismatched.len(), 7, "{whats:#?}");
        assert!(whats.iter().any(|w| w.contains("expected coupon_issued, got needs_review")));
        assert!(whats.iter().any(|w| w.contains("went through 2 final statuses")));
        assert!(whats.iter().any(|w| w.contains("duplicate points at")));
        assert!(whats.iter().any(|w| w.contains("carries coupon code LEAK")));
        assert!(whats.iter().any(|w| w.contains("got 202 without a JSON code")));
        assert!(whats.iter().any(|w| w.contains("got 400 invalid_multipart")));
        assert!(whats.iter().any(|w| w.contains("was not accepted: 422")));
        assert!(r.lost.is_empty() && r.duplicated.is_empty());
    }
}
