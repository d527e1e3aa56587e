//! The deterministic generator: the same seed always gives the same registry, byte for byte.
//! Households have one or two guardians and up to four children, one postal code each, and the
//! cases that make matching hard are planted on purpose: twins, same-name cousins in other
//! households, expectant mothers (some with no children yet), and children at and past the age
//! limit living at home.

use std::collections::HashSet;

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::names::{FAMILY, GIVEN_F, GIVEN_M};
use crate::{Registry, Relationship, Resident, Sex};

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub households: usize,
    /// Ages are computed against this date.
    pub reference_date: NaiveDate,
    /// Every postal code starts with this (the region).
    pub postal_prefix: String,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            households: 1_000,
            reference_date: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap_or_default(),
            postal_prefix: "93".to_owned(),
        }
    }
}

struct Gen {
    rng: ChaCha8Rng,
    ids: HashSet<u64>,
    reference: NaiveDate,
}

impl Gen {
    fn resident_id(&mut self) -> String {
        loop {
            let n = self.rng.gen_range(10_000_000_000u64..100_000_000_000);
            if self.ids.insert(n) {
                return n.to_string();
            }
        }
    }

    /// A birth date making the person `years` old (plus a random part of a year) on the reference date.
    fn born(&mut self, years: u32) -> NaiveDate {
        let days = i64::from(years) * 365 + i64::from(years / 4) + self.rng.gen_range(0..365);
        self.reference - Duration::days(days)
    }

    fn given(&mut self, sex: Sex) -> (&'static str, &'static str) {
        let table = if sex == Sex::F { GIVEN_F } else { GIVEN_M };
        table[self.rng.gen_range(0..table.len())]
    }

    fn sex(&mut self) -> Sex {
        if self.rng.gen_bool(0.5) {
            Sex::F
        } else {
            Sex::M
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn person(
    g: &mut Gen,
    household: &str,
    family: (&str, &str),
    given: (&str, &str),
    birth: NaiveDate,
    sex: Sex,
    postal: &str,
    relationship: Relationship,
) -> Resident {
    Resident {
        resident_id: g.resident_id(),
        household_id: household.to_owned(),
        family_name: family.0.to_owned(),
        given_name: given.0.to_owned(),
        family_name_kana: family.1.to_owned(),
        given_name_kana: given.1.to_owned(),
        birth_date: birth,
        sex,
        postal_code: postal.to_owned(),
        relationship,
        expecting: None,
    }
}

/// Generates a registry of `config.households` households.
pub fn generate(config: &GeneratorConfig) -> Registry {
    let mut g = Gen { rng: ChaCha8Rng::seed_from_u64(config.seed), ids: HashSet::new(), reference: config.reference_date };
    let mut residents: Vec<Resident> = Vec::with_capacity(config.households * 4);
    let mut household_ids = HashSet::new();
    for h in 0..config.households {
        let household = loop {
            let id = format!("H{:09}", g.rng.gen_range(0..1_000_000_000u64));
            if household_ids.insert(id.clone()) {
                break id;
            }
        };
        let family = FAMILY[g.rng.gen_range(0..FAMILY.len())];
        let postal = format!("{}{:05}", config.postal_prefix, g.rng.gen_range(0..100_000u32));
        let postal = postal.chars().take(7).collect::<String>();
        // Guardians: a mother (head or spouse) and, in most households, a second guardian.
        let mother_age = g.rng.gen_range(22..=52);
        let two_parents = g.rng.gen_bool(0.8);
        let mother_rel = if two_parents { Relationship::Spouse } else { Relationship::Head };
        if two_parents {
            let age = (mother_age + g.rng.gen_range(0..=5)).min(60);
            let birth = g.born(age);
            let given = g.given(Sex::M);
            residents.push(person(&mut g, &household, family, given, birth, Sex::M, &postal, Relationship::Head));
        }
        let birth = g.born(mother_age);
        let given = g.given(Sex::F);
        let mut mother = person(&mut g, &household, family, given, birth, Sex::F, &postal, mother_rel);
        // Every 25th household is expecting; some of them have no children yet.
        let expecting = h % 25 == 3 && mother_age < 45;
        if expecting {
            mother.expecting = Some(config.reference_date + Duration::days(g.rng.gen_range(30..250)));
        }
        residents.push(mother);
        let max_children = if expecting && h % 50 == 3 { 0 } else { 4 };
        let children = if max_children == 0 { 0 } else { g.rng.gen_range(1..=max_children) };
        let mut used_given = HashSet::new();
        let mut previous_birth: Option<NaiveDate> = None;
        for c in 0..children {
            // Ages 0..=17 mostly; every 40th household also has a child at or past the limit.
            let age = if c == 0 && h % 40 == 7 {
                g.rng.gen_range(18..=19)
            } else if c == 0 && h % 40 == 8 {
                17
            } else {
                g.rng.gen_range(0..=(mother_age - 18).clamp(1, 17))
            };
            // Every 30th household's second child is a twin of the first.
            let birth = match previous_birth {
                Some(b) if c == 1 && h % 30 == 5 => b,
                _ => g.born(age),
            };
            let (sex, given) = loop {
                let sex = g.sex();
                let given = g.given(sex);
                if used_given.insert(given.1) {
                    break (sex, given);
                }
            };
            residents.push(person(&mut g, &household, family, given, birth, sex, &postal, Relationship::Child));
            previous_birth = Some(birth);
        }
    }
    plant_same_name_cousins(&mut residents);
    Registry::from_residents(residents)
}

/// Gives every 100th child household's first child the name and birth date of a child in the
/// household before it that has the same family name reading; if none matches, copies the
/// family name too (cousins who share a grandparent's surname).
fn plant_same_name_cousins(residents: &mut [Resident]) {
    let child_ix: Vec<usize> = residents.iter().enumerate().filter(|(_, r)| r.relationship == Relationship::Child).map(|(i, _)| i).collect();
    let mut last_household = String::new();
    let mut firsts = Vec::new();
    for &i in &child_ix {
        if residents[i].household_id != last_household {
            last_household.clone_from(&residents[i].household_id);
            firsts.push(i);
        }
    }
    for pair in firsts.chunks(100) {
        if let [a, b, ..] = pair {
            let src = residents[*a].clone();
            let dst = &mut residents[*b];
            dst.family_name = src.family_name;
            dst.family_name_kana = src.family_name_kana;
            dst.given_name = src.given_name;
            dst.given_name_kana = src.given_name_kana;
            dst.birth_date = src.birth_date;
            dst.sex = src.sex;
        }
    }
}
