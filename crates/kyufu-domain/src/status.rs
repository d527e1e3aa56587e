//! The status state machine of an application and the reason codes that explain each decision.
//!
//! ```text
//! received ─┬─> duplicate
//!           ├─> needs_review ─┬─> approved ─> coupon_issued
//!           │                 └─> rejected
//!           └─> approved ─> coupon_issued
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    Duplicate,
    NeedsReview,
    Approved,
    Rejected,
    CouponIssued,
}

impl Status {
    pub const ALL: &'static [Status] = &[
        Status::Received,
        Status::Duplicate,
        Status::NeedsReview,
        Status::Approved,
        Status::Rejected,
        Status::CouponIssued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Duplicate => "duplicate",
            Status::NeedsReview => "needs_review",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::CouponIssued => "coupon_issued",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.iter().copied().find(|st| st.as_str() == s)
    }

    /// Whether the state machine allows `self -> to`.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Received, Duplicate | NeedsReview | Approved)
                | (NeedsReview, Approved | Rejected)
                | (Approved, CouponIssued)
        )
    }

    /// True when no automatic step will move the application any more: it is finished
    /// (duplicate, rejected, coupon issued) or waits for a person (needs review).
    pub fn is_settled(self) -> bool {
        matches!(self, Status::Duplicate | Status::Rejected | Status::CouponIssued | Status::NeedsReview)
    }

    /// True when nothing, not even a person, will move the application any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Duplicate | Status::Rejected | Status::CouponIssued)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an application was held for review, rejected or marked duplicate. Stable wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Another application for the same child came first.
    DuplicateApplication,
    /// Looks like an application already made, but not certainly the same child.
    PossibleDuplicate,
    ChildNotInRegistry,
    GuardianNotInRegistry,
    /// Several registry residents fit the details given; a person must pick.
    RegistryAmbiguous,
    ChildNameMismatch,
    ChildBirthDateMismatch,
    GuardianNameMismatch,
    GuardianBirthDateMismatch,
    PostalCodeMismatch,
    NotSameHousehold,
    GuardianNotAdult,
    ChildOverAgeLimit,
    OutsideRegion,
    NotExpectant,
    DocumentUnreadable,
    DocumentMissing,
    /// The message could not be processed after retries; a person must look.
    ProcessingFailed,
    /// A reviewer rejected the application.
    RejectedByReviewer,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::DuplicateApplication => "duplicate_application",
            ReasonCode::PossibleDuplicate => "possible_duplicate",
            ReasonCode::ChildNotInRegistry => "child_not_in_registry",
            ReasonCode::GuardianNotInRegistry => "guardian_not_in_registry",
            ReasonCode::RegistryAmbiguous => "registry_ambiguous",
            ReasonCode::ChildNameMismatch => "child_name_mismatch",
            ReasonCode::ChildBirthDateMismatch => "child_birth_date_mismatch",
            ReasonCode::GuardianNameMismatch => "guardian_name_mismatch",
            ReasonCode::GuardianBirthDateMismatch => "guardian_birth_date_mismatch",
            ReasonCode::PostalCodeMismatch => "postal_code_mismatch",
            ReasonCode::NotSameHousehold => "not_same_household",
            ReasonCode::GuardianNotAdult => "guardian_not_adult",
            ReasonCode::ChildOverAgeLimit => "child_over_age_limit",
            ReasonCode::OutsideRegion => "outside_region",
            ReasonCode::NotExpectant => "not_expectant",
            ReasonCode::DocumentUnreadable => "document_unreadable",
            ReasonCode::DocumentMissing => "document_missing",
            ReasonCode::ProcessingFailed => "processing_failed",
            ReasonCode::RejectedByReviewer => "rejected_by_reviewer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_matches_the_contract() {
        use Status::*;
        let allowed = [
            (Received, Duplicate),
            (Received, NeedsReview),
            (Received, Approved),
            (NeedsReview, Approved),
            (NeedsReview, Rejected),
            (Approved, CouponIssued),
        ];
        for &from in Status::ALL {
            for &to in Status::ALL {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for &s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("bogus"), None);
    }
}
