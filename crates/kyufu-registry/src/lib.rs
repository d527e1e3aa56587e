//! The resident registry the ID check matches applicants against: residents with resident id,
//! household, names in kanji and kana, birth date, postal code, and (for expectant mothers) a due
//! date. Here it is synthetic and deterministic (`generate`), written and read as CSV (`csv`), and
//! indexed by resident id, by kana name + birth date, and by household.
#![forbid(unsafe_code)]

mod csvio;
mod generate;
mod names;

use std::collections::HashMap;

use chrono::NaiveDate;
use kyufu_domain::normalize::kana_key;

pub use csvio::RegistryError;
pub use generate::{generate, GeneratorConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    F,
    M,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relationship {
    Head,
    Spouse,
    Child,
    Other,
}

impl Relationship {
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Head => "head",
            Relationship::Spouse => "spouse",
            Relationship::Child => "child",
            Relationship::Other => "other",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Relationship::Head, Relationship::Spouse, Relationship::Child, Relationship::Other].into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    /// Eleven ASCII digits, unique.
    pub resident_id: String,
    pub household_id: String,
    pub family_name: String,
    pub given_name: String,
    /// Full-width katakana.
    pub family_name_kana: String,
    pub given_name_kana: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    /// Seven digits.
    pub postal_code: String,
    pub relationship: Relationship,
    /// Due date, for an expectant mother.
    pub expecting: Option<NaiveDate>,
}

/// Residents with lookup indexes. Indexes hold positions into one `Vec`, so a registry of
/// 1.4 million residents costs one copy of the data plus a few words per resident.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    residents: Vec<Resident>,
    by_id: HashMap<String, u32>,
    by_kana_birth: HashMap<(String, NaiveDate), Vec<u32>>,
    by_household: HashMap<String, Vec<u32>>,
}

/// A household that can apply: one adult guardian and the children eligible on a date.
#[derive(Debug, Clone)]
pub struct Household<'a> {
    pub guardian: &'a Resident,
    pub children: Vec<&'a Resident>,
}

/// Counts of the cases that make matching hard; every generated registry of 1,000 or more
/// households has each of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialCases {
    /// Pairs of children in one household born the same day.
    pub twin_pairs: usize,
    /// Pairs of children in different households with the same kana name and birth date.
    pub same_name_cousin_pairs: usize,
    pub expectant_mothers: usize,
    /// Children living at home who are 18 or older on the reference date.
    pub over_age_children: usize,
}

fn kana_index_key(family_kana: &str, given_kana: &str, birth: NaiveDate) -> (String, NaiveDate) {
    (format!("{}\u{1f}{}", kana_key(family_kana), kana_key(given_kana)), birth)
}

impl Registry {
    /// Builds the indexes over `residents`.
    pub fn from_residents(residents: Vec<Resident>) -> Registry {
        let mut by_id = HashMap::with_capacity(residents.len());
        let mut by_kana_birth: HashMap<(String, NaiveDate), Vec<u32>> = HashMap::with_capacity(residents.len());
        let mut by_household: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, r) in residents.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            by_id.insert(r.resident_id.clone(), i);
            by_kana_birth.entry(kana_index_key(&r.family_name_kana, &r.given_name_kana, r.birth_date)).or_default().push(i);
            by_household.entry(r.household_id.clone()).or_default().push(i);
        }
        Registry { residents, by_id, by_kana_birth, by_household }
    }

    pub fn len(&self) -> usize {
        self.residents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residents.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resident> {
        self.residents.iter()
    }

    pub fn by_id(&self, resident_id: &str) -> Option<&Resident> {
        self.by_id.get(resident_id).and_then(|&i| self.residents.get(i as usize))
    }

    /// Residents with this kana name (any width, hiragana or katakana) born on `birth`.
    pub fn find_by_kana_and_birth(&self, family_kana: &str, given_kana: &str, birth: NaiveDate) -> Vec<&Resident> {
        self.by_kana_birth
            .get(&kana_index_key(family_kana, given_kana, birth))
            .map(|ix| ix.iter().filter_map(|&i| self.residents.get(i as usize)).collect())
            .unwrap_or_default()
    }

    /// Members of a household, in registry order.
    pub fn household(&self, household_id: &str) -> Vec<&Resident> {
        self.by_household
            .get(household_id)
            .map(|ix| ix.iter().filter_map(|&i| self.residents.get(i as usize)).collect())
            .unwrap_or_default()
    }

    /// Households with an adult guardian (18+) and at least one child younger than `age_limit` on
    /// `on`, in a deterministic order; the load tester and tests build valid applications from them.
    pub fn households_with_children(&self, on: NaiveDate, age_limit: u32) -> Vec<Household<'_>> {
        let age = |r: &Resident| kyufu_domain::program::age_on(r.birth_date, on);
        let mut ids: Vec<&String> = self.by_household.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|h| {
                let members = self.household(h);
                let guardian = members
                    .iter()
                    .copied()
                    .find(|r| matches!(r.relationship, Relationship::Head | Relationship::Spouse) && age(r).is_some_and(|a| a >= 18))?;
                let children: Vec<&Resident> = members
                    .iter()
                    .copied()
                    .filter(|r| r.relationship == Relationship::Child && age(r).is_some_and(|a| a < age_limit))
                    .collect();
                (!children.is_empty()).then_some(Household { guardian, children })
            })
            .collect()
    }

    /// How many of the hard cases the registry holds, judged on `on`.
    pub fn special_cases(&self, on: NaiveDate) -> SpecialCases {
        let mut sc = SpecialCases::default();
        for members in self.by_household.values() {
            let kids: Vec<&Resident> = members
                .iter()
                .filter_map(|&i| self.residents.get(i as usize))
                .filter(|r| r.relationship == Relationship::Child)
                .collect();
            for (a, x) in kids.iter().enumerate() {
                sc.twin_pairs += kids[a + 1..].iter().filter(|y| y.birth_date == x.birth_date).count();
            }
        }
        for ix in self.by_kana_birth.values() {
            let rs: Vec<&Resident> = ix.iter().filter_map(|&i| self.residents.get(i as usize)).collect();
            for (a, x) in rs.iter().enumerate() {
                sc.same_name_cousin_pairs += rs[a + 1..].iter().filter(|y| y.household_id != x.household_id).count();
            }
        }
        sc.expectant_mothers = self.residents.iter().filter(|r| r.expecting.is_some()).count();
        sc.over_age_children = self
            .residents
            .iter()
            .filter(|r| r.relationship == Relationship::Child)
            .filter(|r| kyufu_domain::program::age_on(r.birth_date, on).is_some_and(|a| a >= 18))
            .count();
        sc
    }
}
