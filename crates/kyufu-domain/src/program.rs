//! A benefit program: what is given, to whom, in which region, judged on which reference date.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Stable id, used in keys, tickets and passes (`rice-2026`).
    pub id: String,
    /// Name shown to citizens.
    pub name: String,
    /// Eligibility (age, residence) is judged on this date.
    pub reference_date: NaiveDate,
    /// A child is eligible while younger than this many full years on the reference date.
    pub age_limit: u32,
    /// Region the program covers.
    pub region: Region,
    /// Where coupons are redeemed; printed in the notification.
    pub redemption_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    /// Postal code prefixes (first digits) inside the region; empty means everywhere.
    pub postal_prefixes: Vec<String>,
}

impl Program {
    /// The demo program `make run` starts with, judged on `reference_date`.
    pub fn demo(reference_date: NaiveDate) -> Program {
        Program {
            id: "rice-demo".to_owned(),
            name: "子育て世帯 お米・食品支援 (demo)".to_owned(),
            reference_date,
            age_limit: 18,
            region: Region { name: "Demo Prefecture".to_owned(), postal_prefixes: vec!["9".to_owned()] },
            redemption_url: "https://coupon.example.jp/redeem".to_owned(),
        }
    }

    /// Whether a child born on `birth_date` is within the age limit on the reference date:
    /// born on or before it, and not yet `age_limit` years old.
    pub fn child_within_age_limit(&self, birth_date: NaiveDate) -> bool {
        birth_date <= self.reference_date
            && age_on(birth_date, self.reference_date).is_some_and(|a| a < self.age_limit)
    }

    /// Whether a postal code (seven digits) lies in the region.
    pub fn postal_code_in_region(&self, postal_code: &str) -> bool {
        self.region.postal_prefixes.is_empty()
            || self.region.postal_prefixes.iter().any(|p| postal_code.starts_with(p.as_str()))
    }
}

/// Full years of age on `on`, counted the civil way (a birthday on 29 February is reached on
/// 1 March in common years); `None` before birth.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> Option<u32> {
    if on < birth {
        return None;
    }
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    #[test]
    fn age_counts_full_years() {
        assert_eq!(age_on(d(2008, 4, 2), d(2026, 4, 1)), Some(17));
        assert_eq!(age_on(d(2008, 4, 1), d(2026, 4, 1)), Some(18));
        assert_eq!(age_on(d(2008, 2, 29), d(2026, 2, 28)), Some(17));
        assert_eq!(age_on(d(2008, 2, 29), d(2026, 3, 1)), Some(18));
        assert_eq!(age_on(d(2027, 1, 1), d(2026, 4, 1)), None);
    }

    #[test]
    fn age_limit_edges_on_reference_date() {
        let p = Program::demo(d(2026, 4, 1));
        assert!(p.child_within_age_limit(d(2008, 4, 2)), "turns 18 the day after");
        assert!(!p.child_within_age_limit(d(2008, 4, 1)), "18th birthday on the reference date");
        assert!(p.child_within_age_limit(d(2026, 4, 1)), "born on the reference date");
        assert!(!p.child_within_age_limit(d(2026, 4, 2)), "not born yet");
    }

    #[test]
    fn region_by_postal_prefix() {
        let p = Program::demo(d(2026, 4, 1));
        assert!(p.postal_code_in_region("9300001"));
        assert!(!p.postal_code_in_region("1000001"));
    }
}
