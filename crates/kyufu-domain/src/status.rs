//! The status state machine of an application and the reason codes that explain each decision.
//!
//! ```text
//! received ─┬─> duplicate
//!           ├─> needs_review ─┬─> approved ─> coupon_issued
//!           │                 └─> rejected
//!           └─> approved ─> coupon_issued
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

    /// The one wording of each status, Japanese and English, used by the status page and the
    /// emails alike so they never contradict each other.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Status::Received => ("受け付けました（確認を待っています）", "Received (waiting to be checked)"),
            Status::NeedsReview => ("担当者が確認しています", "A member of staff is checking"),
            Status::Approved => ("承認されました（クーポンを準備しています）", "Approved (the coupon is being prepared)"),
            Status::CouponIssued => ("クーポンを発行しました", "Coupon issued"),
            Status::Duplicate => (
                "同じ方の申請がすでにあるため、この申請は受け付けませんでした",
                "Not taken: an application for the same person was already received",
            ),
            Status::Rejected => ("申請は承認されませんでした", "The application was not approved"),
        }
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
    /// The stated expected delivery date is far from the one in the pregnancy registration.
    DeliveryDateMismatch,
    DocumentUnreadable,
    DocumentMissing,
    /// The message could not be processed after retries; a person must look.
    ProcessingFailed,
    /// A reviewer rejected the application.
    RejectedByReviewer,
}

impl ReasonCode {
    /// The reason as a citizen reads it, in Japanese and in English.
    pub fn explain(self) -> (&'static str, &'static str) {
        match self {
            ReasonCode::DuplicateApplication => (
                "このお子さまの申請はすでに受け付けています。二重の申請は不要です。",
                "An application for this child has already been received. You do not need to apply again.",
            ),
            ReasonCode::PossibleDuplicate => (
                "よく似た申請がすでにあるため、担当者が同じお子さまかどうか確認しています。",
                "A very similar application exists, so a staff member is checking whether it is the same child.",
            ),
            ReasonCode::ChildNotInRegistry => (
                "お子さまの情報が住民記録と一致しませんでした。担当者が確認しています。",
                "We could not find the child in the resident records. A staff member is checking.",
            ),
            ReasonCode::GuardianNotInRegistry => (
                "保護者の情報が住民記録と一致しませんでした。担当者が確認しています。",
                "We could not find the guardian in the resident records. A staff member is checking.",
            ),
            ReasonCode::RegistryAmbiguous => (
                "同じ情報の方が複数いらっしゃるため、担当者が確認しています。",
                "Several residents match these details, so a staff member is checking.",
            ),
            ReasonCode::ChildNameMismatch => (
                "お子さまのお名前（フリガナ）が住民記録と違います。担当者が確認しています。",
                "The child's name (kana) differs from the resident records. A staff member is checking.",
            ),
            ReasonCode::ChildBirthDateMismatch => (
                "お子さまの生年月日が住民記録と違います。担当者が確認しています。",
                "The child's date of birth differs from the resident records. A staff member is checking.",
            ),
            ReasonCode::GuardianNameMismatch => (
                "保護者のお名前（フリガナ）が住民記録と違います。担当者が確認しています。",
                "The guardian's name (kana) differs from the resident records. A staff member is checking.",
            ),
            ReasonCode::GuardianBirthDateMismatch => (
                "保護者の生年月日が住民記録と違います。担当者が確認しています。",
                "The guardian's date of birth differs from the resident records. A staff member is checking.",
            ),
            ReasonCode::PostalCodeMismatch => (
                "郵便番号が住民記録と違います。担当者が確認しています。",
                "The postal code differs from the resident records. A staff member is checking.",
            ),
            ReasonCode::NotSameHousehold => (
                "保護者とお子さまが同じ世帯として確認できませんでした。担当者が確認しています。",
                "The guardian and the child are not recorded in the same household. A staff member is checking.",
            ),
            ReasonCode::GuardianNotAdult => (
                "申請者が18歳未満のため、担当者が確認しています。",
                "The applicant is under 18, so a staff member is checking.",
            ),
            ReasonCode::ChildOverAgeLimit => (
                "基準日にお子さまが対象年齢を超えているため、担当者が確認しています。",
                "On the reference date the child is over the age limit, so a staff member is checking.",
            ),
            ReasonCode::OutsideRegion => (
                "対象地域外の住所のため、担当者が確認しています。",
                "The address is outside the program's region, so a staff member is checking.",
            ),
            ReasonCode::NotExpectant => (
                "妊娠の届出が確認できませんでした。担当者が確認しています。",
                "We could not find a pregnancy registration. A staff member is checking.",
            ),
            ReasonCode::DeliveryDateMismatch => (
                "出産予定日が妊娠の届出の日付と違います。担当者が確認しています。",
                "The expected delivery date differs from the pregnancy registration. A staff member is checking.",
            ),
            ReasonCode::DocumentUnreadable => (
                "本人確認書類を読み取れませんでした。担当者からご連絡する場合があります。",
                "We could not read the identity document. A staff member may contact you.",
            ),
            ReasonCode::DocumentMissing => (
                "本人確認書類が見つかりませんでした。担当者からご連絡する場合があります。",
                "The identity document is missing. A staff member may contact you.",
            ),
            ReasonCode::ProcessingFailed => (
                "処理中に問題が起きたため、担当者が確認しています。申請は受け付けています。",
                "Something went wrong while processing; a staff member is checking. Your application is kept.",
            ),
            ReasonCode::RejectedByReviewer => (
                "担当者の確認の結果、今回は対象外となりました。詳しくはお問い合わせください。",
                "After review, this application could not be accepted. Please contact us for details.",
            ),
        }
    }

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
            ReasonCode::DeliveryDateMismatch => "delivery_date_mismatch",
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
