//! The resident registry the ID check matches applicants against: residents with an eleven-digit
//! resident id, a household, names in kanji and katakana, birth date, sex, postal code, their place
//! in the household and, for expectant mothers, a due date. Here it is synthetic and deterministic
//! ([`generate`]), written and read as CSV ([`Registry::write_csv`], [`Registry::load_csv`]), and
//! indexed by resident id, by kana name + birth date, and by household ([`Registry`]).
#![forbid(unsafe_code)]

mod csvio;
mod generate;
mod names;
mod registry;

use chrono::NaiveDate;

pub use csvio::{RegistryError, COLUMNS, REQUIRED_COLUMNS};
pub use generate::{generate, GeneratorConfig};
pub use registry::{Household, Registry, SpecialCases};

/// Sex as the registry records it (`F` or `M` in the CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    F,
    M,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::F => "F",
            Sex::M => "M",
        }
    }

    /// `F` or `M`, exactly.
    pub fn parse(s: &str) -> Option<Sex> {
        match s {
            "F" => Some(Sex::F),
            "M" => Some(Sex::M),
            _ => None,
        }
    }
}

/// A resident's place in the household (続柄). Heads and spouses are the guardians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relationship {
    Head,
    Spouse,
    Child,
    /// Anyone else living in the household, e.g. a grandparent.
    Other,
}

impl Relationship {
    /// The lowercase CSV form: `head`, `spouse`, `child`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Head => "head",
            Relationship::Spouse => "spouse",
            Relationship::Child => "child",
            Relationship::Other => "other",
        }
    }

    /// The lowercase CSV form, exactly.
    pub fn parse(s: &str) -> Option<Relationship> {
        [Relationship::Head, Relationship::Spouse, Relationship::Child, Relationship::Other]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Heads and spouses can apply for the children of their household.
    pub fn is_guardian(self) -> bool {
        matches!(self, Relationship::Head | Relationship::Spouse)
    }
}

/// One resident as the registry holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    /// Eleven ASCII digits (the length of a 住民票コード), unique in a registry.
    pub resident_id: String,
    pub household_id: String,
    /// Kanji (or kana, for a few given names), as registered.
    pub family_name: String,
    pub given_name: String,
    /// Full-width katakana without spaces at the ends; a registry stores it normalised
    /// (`kyufu_domain::normalize::normalize_kana`).
    pub family_name_kana: String,
    pub given_name_kana: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    /// Seven ASCII digits; empty only when loaded from a CSV without the `postal_code` column.
    pub postal_code: String,
    pub relationship: Relationship,
    /// Due date, for an expectant mother.
    pub expecting: Option<NaiveDate>,
}
