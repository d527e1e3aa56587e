//! Finding the registry resident an applicant's details point at, shared by dedupe (which keys a
//! child by resident id when the registry knows it) and ID-check (which compares every field).

use chrono::NaiveDate;
use kyufu_registry::{Registry, Resident};

/// Which resident the details point at.
pub enum Match<'a> {
    Found(&'a Resident),
    NotFound,
    /// Several residents fit and nothing tells them apart.
    Ambiguous,
}

/// By resident id if given, else by kana name and birth date, narrowed by postal code when several
/// fit (same-name cousins live at different addresses).
pub fn find<'a>(
    registry: &'a Registry,
    resident_id: Option<&str>,
    family_kana: &str,
    given_kana: &str,
    birth: NaiveDate,
    postal_code: &str,
) -> Match<'a> {
    if let Some(rid) = resident_id {
        return registry.by_id(rid).map_or(Match::NotFound, Match::Found);
    }
    let candidates = registry.find_by_kana_and_birth(family_kana, given_kana, birth);
    let local: Vec<&Resident> = candidates.iter().copied().filter(|r| r.postal_code == postal_code).collect();
    match (candidates.len(), local.len()) {
        (0, _) => Match::NotFound,
        (1, _) => Match::Found(candidates[0]),
        (_, 1) => Match::Found(local[0]),
        _ => Match::Ambiguous,
    }
}
