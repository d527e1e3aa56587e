//! The reference index: each application's short reference (`kyufu_domain::reference`), kept as a
//! claim in the status store (namespace `ref:<program>`, key the reference, owner the application
//! id), so every store that honours the claim contract keeps it unique and findable — the embedded
//! store and Redis alike, with no new store method.
//!
//! The candidates of an application are a fixed sequence derived from its id, so assigning is
//! repeatable: a retried submission (or a second call after a timeout) finds the reference the
//! first call claimed, because claiming again as the same owner wins. A candidate another
//! application holds is skipped for the next one.

use kyufu_domain::reference::Reference;
use uuid::Uuid;

use crate::{AdapterError, Claim, StatusStore};

/// Candidates tried before giving up; with 2^45 references, needing more than a few means the
/// store answers wrongly.
const ATTEMPTS: u64 = 64;

pub fn namespace(program_id: &str) -> String {
    format!("ref:{program_id}")
}

/// SplitMix64: spreads the id's random bits over the candidate.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `attempt`-th candidate of `id` (`None` when its check symbol would fall outside the alphabet).
pub(crate) fn candidate(id: Uuid, attempt: u64) -> Option<Reference> {
    let (hi, lo) = id.as_u64_pair();
    Reference::from_bits(mix(hi ^ mix(lo ^ attempt.wrapping_mul(0x2545_f491_4f6c_dd1d))))
}

/// The reference of application `id`, claimed now or found again: the first candidate that is
/// free or already this application's.
pub async fn assign(store: &dyn StatusStore, program_id: &str, id: Uuid) -> Result<Reference, AdapterError> {
    let ns = namespace(program_id);
    let owner = id.to_string();
    for attempt in 0..ATTEMPTS {
        let Some(r) = candidate(id, attempt) else { continue };
        match store.claim(&ns, r.as_str(), &owner).await? {
            Claim::Won => return Ok(r),
            Claim::Held { .. } => {}
        }
    }
    Err(AdapterError::Unavailable("no free application reference".into()))
}

/// The application a reference belongs to, if any.
pub async fn resolve(store: &dyn StatusStore, program_id: &str, reference: &Reference) -> Result<Option<Uuid>, AdapterError> {
    let owner = store.claimed_by(&namespace(program_id), reference.as_str()).await?;
    Ok(owner.and_then(|o| Uuid::parse_str(&o).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_fixed_per_id_and_differ_between_ids() {
        let id = Uuid::new_v4();
        let a: Vec<_> = (0..8).map(|k| candidate(id, k)).collect();
        let b: Vec<_> = (0..8).map(|k| candidate(id, k)).collect();
        assert_eq!(a, b);
        let issued: std::collections::HashSet<_> = a.iter().flatten().collect();
        assert!(issued.len() >= 4, "{a:?}");
        let other: Vec<_> = (0..8).map(|k| candidate(Uuid::new_v4(), k)).collect();
        assert_ne!(a, other);
    }
}
