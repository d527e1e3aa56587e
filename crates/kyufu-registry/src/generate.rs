//! The deterministic generator: the same configuration always gives the same registry, byte for
//! byte (one ChaCha8 stream seeded from `seed`, no other source of randomness, no iteration over
//! hash maps). Households have one or two guardians aged 20–55 with one family name, one postal
//! code, and up to four children. The cases that make matching hard are planted on purpose, a
//! fixed number in every block of 50 households (in shuffled positions), so any registry of 1,000
//! or more households has each of them many times: twins, same-name cousins in other households
//! (same birth date, and born on other days), expectant mothers (some with no child yet), children
//! turning 18 just after the reference date, on it, and 18/19-year-olds still living at home.

use std::collections::HashSet;

use chrono::{Duration, Months, NaiveDate};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::names::{FAMILY, GIVEN_F, GIVEN_M};
use crate::{Registry, Relationship, Resident, Sex};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub households: usize,
    /// Ages are counted on this date (the program's reference date).
    pub reference_date: NaiveDate,
    /// Every postal code starts with these digits (the region); the rest is random. Anything but
    /// ASCII digits is dropped and at most seven digits are used.
    pub postal_prefix: String,
}

impl Default for GeneratorConfig {
    /// Seed 1, 1,000 households, reference date 2026-04-01, postal prefix `93`.
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            households: 1_000,
            reference_date: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap_or_default(),
            postal_prefix: "93".to_owned(),
        }
    }
}

/// What a household is planted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Ordinary,
    /// A woman with a due date and no child yet.
    ExpectingFirst,
    /// A woman with a due date and children.
    ExpectingAgain,
    /// The two eldest children born on one day.
    Twins,
    /// A child with the family name, given name and birth date of a child in an earlier household.
    CousinSameBirth,
    /// A child with the full name of a child in an earlier household, born on another day.
    NamesakeOtherBirth,
    /// A child who turns 18 within 30 days after the reference date.
    TurnsEighteenSoon,
    /// A child who turns 18 the day after the reference date (still eligible).
    TurnsEighteenTomorrow,
    /// A child who turns 18 on the reference date (no longer eligible).
    TurnsEighteenOnReference,
    AgeEighteen,
    AgeNineteen,
    SingleFather,
    /// Grandparents (relationship `other`) live in the household too.
    ThreeGenerations,
}

/// The planted cases of one block of households; the rest of the block is ordinary.
const BLOCK_PLANS: &[(Plan, usize)] = &[
    (Plan::ExpectingFirst, 1),
    (Plan::ExpectingAgain, 2),
    (Plan::Twins, 2),
    (Plan::CousinSameBirth, 1),
    (Plan::NamesakeOtherBirth, 1),
    (Plan::TurnsEighteenSoon, 1),
    (Plan::TurnsEighteenTomorrow, 1),
    (Plan::TurnsEighteenOnReference, 1),
    (Plan::AgeEighteen, 1),
    (Plan::AgeNineteen, 1),
    (Plan::SingleFather, 2),
    (Plan::ThreeGenerations, 3),
];
const BLOCK: usize = 50;

/// Generates `config.households` households. Deterministic for a configuration.
pub fn generate(config: &GeneratorConfig) -> Registry {
    let mut prefix: String = config.postal_prefix.chars().filter(char::is_ascii_digit).collect();
    prefix.truncate(7);
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(config.seed),
        reference: config.reference_date,
        prefix,
        resident_ids: HashSet::new(),
        household_ids: HashSet::new(),
        residents: Vec::with_capacity(config.households.saturating_mul(7) / 2),
        name_sources: Vec::new(),
    };
    let mut block: Vec<Plan> = Vec::with_capacity(BLOCK);
    for h in 0..config.households {
        if h % BLOCK == 0 {
            block.clear();
            for &(plan, count) in BLOCK_PLANS {
                block.extend(std::iter::repeat_n(plan, count));
            }
            block.resize(BLOCK, Plan::Ordinary);
            block.shuffle(&mut g.rng);
        }
        g.household(block[h % BLOCK]);
    }
    Registry::build(g.residents)
}

/// The earliest and latest birth dates of someone `age` full years old on `on`.
fn birth_range(on: NaiveDate, age: u32) -> (NaiveDate, NaiveDate) {
    let years_before = |y: u32| on.checked_sub_months(Months::new(12 * y)).unwrap_or(on);
    (years_before(age + 1) + Duration::days(1), years_before(age))
}

struct Gen {
    rng: ChaCha8Rng,
    reference: NaiveDate,
    prefix: String,
    resident_ids: HashSet<u64>,
    household_ids: HashSet<u32>,
    residents: Vec<Resident>,
    /// Positions of children 0–15 years old that a later cousin or namesake can copy.
    name_sources: Vec<usize>,
}

/// One member before ids are drawn.
struct Member {
    given: (&'static str, &'static str),
    birth: NaiveDate,
    sex: Sex,
    relationship: Relationship,
    expecting: Option<NaiveDate>,
    /// Whether a later cousin or namesake may copy this child's name.
    name_source: bool,
}

impl Gen {
    fn resident_id(&mut self) -> String {
        loop {
            let n = self.rng.gen_range(1..100_000_000_000u64);
            if self.resident_ids.insert(n) {
                return format!("{n:011}");
            }
        }
    }

    fn household_id(&mut self) -> String {
        loop {
            let n = self.rng.gen_range(0..1_000_000_000u32);
            if self.household_ids.insert(n) {
                return format!("H{n:09}");
            }
        }
    }

    fn postal_code(&mut self) -> String {
        let free = 7 - self.prefix.len();
        if free == 0 {
            return self.prefix.clone();
        }
        let n = self.rng.gen_range(0..10u32.pow(free as u32));
        format!("{}{n:0free$}", self.prefix)
    }

    /// A birth date making someone exactly `age` on the reference date.
    fn born(&mut self, age: u32) -> NaiveDate {
        let (earliest, latest) = birth_range(self.reference, age);
        earliest + Duration::days(self.rng.gen_range(0..=(latest - earliest).num_days()))
    }

    /// Born `18 years before the reference date` plus `days`: 18 on the reference date for 0,
    /// 17 turning 18 `days` later otherwise.
    fn born_turning_eighteen_in(&mut self, days: i64) -> NaiveDate {
        birth_range(self.reference, 18).1 + Duration::days(days)
    }

    fn sex(&mut self) -> Sex {
        if self.rng.gen_bool(0.5) {
            Sex::F
        } else {
            Sex::M
        }
    }

    /// A given name for `sex` whose reading no one in the household has yet.
    fn given(&mut self, sex: Sex, used: &mut Vec<&'static str>) -> (&'static str, &'static str) {
        let table = if sex == Sex::F { GIVEN_F } else { GIVEN_M };
        loop {
            let name = table[self.rng.gen_range(0..table.len())];
            if !used.contains(&name.1) {
                used.push(name.1);
                return name;
            }
        }
    }

    fn household(&mut self, plan: Plan) {
        let reference = self.reference;
        // A cousin or namesake copies a child of an earlier household; until one exists (the
        // first few households), the household is ordinary.
        let source = match plan {
            Plan::CousinSameBirth | Plan::NamesakeOtherBirth if !self.name_sources.is_empty() => {
                let i = self.rng.gen_range(0..self.name_sources.len());
                Some(self.residents[self.name_sources[i]].clone())
            }
            _ => None,
        };
        let plan = match (plan, &source) {
            (Plan::CousinSameBirth | Plan::NamesakeOtherBirth, None) => Plan::Ordinary,
            _ => plan,
        };
        let mut used: Vec<&'static str> = Vec::with_capacity(8);
        // The copied given name is taken first, so that no parent or sibling gets its reading.
        let copied_given = source.as_ref().map(|s| {
            let given = given_entry(&s.given_name, &s.given_name_kana, s.sex);
            used.push(given.1);
            given
        });
        let household_id = self.household_id();
        let family: (String, String) = match &source {
            Some(s) => (s.family_name.clone(), s.family_name_kana.clone()),
            None => {
                let (kanji, kana) = FAMILY[self.rng.gen_range(0..FAMILY.len())];
                (kanji.to_owned(), kana.to_owned())
            }
        };
        // Cousins live elsewhere: their postal code is what tells them apart (unless the prefix
        // leaves too few codes to choose from; the tries are bounded).
        let mut postal = self.postal_code();
        for _ in 0..20 {
            if source.as_ref().is_none_or(|s| s.postal_code != postal) {
                break;
            }
            postal = self.postal_code();
        }

        // The eldest child's age bounds the parents' ages and the other way round.
        let source_age = source.as_ref().and_then(|s| kyufu_domain::program::age_on(s.birth_date, reference)).unwrap_or(0);
        let (min_age, max_age) = match plan {
            Plan::ExpectingFirst => (20, 40),
            Plan::ExpectingAgain => (22, 44),
            Plan::TurnsEighteenSoon
            | Plan::TurnsEighteenTomorrow
            | Plan::TurnsEighteenOnReference
            | Plan::AgeEighteen
            | Plan::AgeNineteen => (40, 55),
            Plan::CousinSameBirth | Plan::NamesakeOtherBirth => ((source_age + 20).clamp(20, 55), 55),
            Plan::ThreeGenerations => (25, 50),
            Plan::Ordinary | Plan::Twins | Plan::SingleFather => (20, 55),
        };
        let parent_age: u32 = self.rng.gen_range(min_age..=max_age);
        let max_child_age = parent_age.saturating_sub(20).min(17);

        let mut guardians: Vec<Member> = Vec::with_capacity(2);
        let single = match plan {
            Plan::SingleFather => Some(Sex::M),
            Plan::Ordinary | Plan::ExpectingFirst if self.rng.gen_bool(0.12) => Some(Sex::F),
            _ => None,
        };
        match single {
            Some(sex) => {
                let birth = self.born(parent_age);
                let given = self.given(sex, &mut used);
                guardians.push(Member { given, birth, sex, relationship: Relationship::Head, expecting: None, name_source: false });
            }
            None => {
                // The husband is usually the head of household (世帯主); sometimes the wife.
                let husband_age = parent_age.saturating_add_signed(self.rng.gen_range(-3..=6)).clamp(20, 55);
                let wife_is_head = self.rng.gen_bool(0.1);
                let husband = Member {
                    given: self.given(Sex::M, &mut used),
                    birth: self.born(husband_age),
                    sex: Sex::M,
                    relationship: if wife_is_head { Relationship::Spouse } else { Relationship::Head },
                    expecting: None,
                    name_source: false,
                };
                let wife = Member {
                    given: self.given(Sex::F, &mut used),
                    birth: self.born(parent_age),
                    sex: Sex::F,
                    relationship: if wife_is_head { Relationship::Head } else { Relationship::Spouse },
                    expecting: None,
                    name_source: false,
                };
                if wife_is_head {
                    guardians.extend([wife, husband]);
                } else {
                    guardians.extend([husband, wife]);
                }
            }
        }
        if matches!(plan, Plan::ExpectingFirst | Plan::ExpectingAgain) {
            let due = reference + Duration::days(self.rng.gen_range(14..=280));
            if let Some(mother) = guardians.iter_mut().find(|m| m.sex == Sex::F) {
                mother.expecting = Some(due);
            }
        }

        // Children: the planted one first, then ordinary siblings, at most four in all.
        let mut children: Vec<Member> = Vec::with_capacity(4);
        let planted_birth = match plan {
            Plan::TurnsEighteenSoon => {
                let days = self.rng.gen_range(2..=30);
                Some(self.born_turning_eighteen_in(days))
            }
            Plan::TurnsEighteenTomorrow => Some(self.born_turning_eighteen_in(1)),
            Plan::TurnsEighteenOnReference => Some(self.born_turning_eighteen_in(0)),
            Plan::AgeEighteen => Some(self.born(18)),
            Plan::AgeNineteen => Some(self.born(19)),
            _ => None,
        };
        if let Some(birth) = planted_birth {
            let sex = self.sex();
            let given = self.given(sex, &mut used);
            children.push(Member { given, birth, sex, relationship: Relationship::Child, expecting: None, name_source: false });
        }
        if let (Some(s), Some(given)) = (&source, copied_given) {
            let birth = if plan == Plan::CousinSameBirth {
                s.birth_date
            } else {
                loop {
                    let b = self.born_aged_up_to(max_child_age);
                    if b != s.birth_date {
                        break b;
                    }
                }
            };
            children.push(Member { given, birth, sex: s.sex, relationship: Relationship::Child, expecting: None, name_source: false });
        }
        if plan == Plan::Twins {
            let birth = self.born_aged_up_to(max_child_age);
            for _ in 0..2 {
                let sex = self.sex();
                let given = self.given(sex, &mut used);
                children.push(Member { given, birth, sex, relationship: Relationship::Child, expecting: None, name_source: true });
            }
        }
        let total: usize = match plan {
            Plan::ExpectingFirst => 0,
            Plan::ExpectingAgain | Plan::SingleFather | Plan::ThreeGenerations => self.rng.gen_range(1..=3),
            Plan::Twins => self.rng.gen_range(2..=4),
            Plan::Ordinary => match self.rng.gen_range(0..100) {
                0..12 => 0,
                12..42 => 1,
                42..77 => 2,
                77..94 => 3,
                _ => 4,
            },
            _ => self.rng.gen_range(1..=3),
        };
        while children.len() < total {
            let sex = self.sex();
            let given = self.given(sex, &mut used);
            let birth = self.born_aged_up_to(max_child_age);
            children.push(Member { given, birth, sex, relationship: Relationship::Child, expecting: None, name_source: true });
        }
        // Eldest first, as a registry lists them; ties keep their order.
        children.sort_by_key(|c| c.birth);

        let mut others: Vec<Member> = Vec::new();
        if plan == Plan::ThreeGenerations {
            let both = self.rng.gen_bool(0.5);
            for sex in [Sex::F, Sex::M].into_iter().take(if both { 2 } else { 1 }) {
                let age = self.rng.gen_range((parent_age + 22).min(80)..=(parent_age + 35).min(90));
                let given = self.given(sex, &mut used);
                let birth = self.born(age);
                others.push(Member { given, birth, sex, relationship: Relationship::Other, expecting: None, name_source: false });
            }
        }

        for m in guardians.into_iter().chain(children).chain(others) {
            let position = self.residents.len();
            let young = m.relationship == Relationship::Child
                && kyufu_domain::program::age_on(m.birth, reference).is_some_and(|a| a <= 15);
            if m.name_source && young {
                self.name_sources.push(position);
            }
            let resident = Resident {
                resident_id: self.resident_id(),
                household_id: household_id.clone(),
                family_name: family.0.clone(),
                given_name: m.given.0.to_owned(),
                family_name_kana: family.1.clone(),
                given_name_kana: m.given.1.to_owned(),
                birth_date: m.birth,
                sex: m.sex,
                postal_code: postal.clone(),
                relationship: m.relationship,
                expecting: m.expecting,
            };
            self.residents.push(resident);
        }
    }

    fn born_aged_up_to(&mut self, max_age: u32) -> NaiveDate {
        let age = self.rng.gen_range(0..=max_age);
        self.born(age)
    }
}

/// The table entry of a given name copied from an earlier resident (generated names always come
/// from the tables, so the fallback is never taken).
fn given_entry(kanji: &str, kana: &str, sex: Sex) -> (&'static str, &'static str) {
    let table = if sex == Sex::F { GIVEN_F } else { GIVEN_M };
    table.iter().copied().find(|e| e.0 == kanji && e.1 == kana).unwrap_or(table[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyufu_domain::program::age_on;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    #[test]
    fn born_gives_exactly_the_age_asked_for() {
        for reference in [d(2026, 4, 1), d(2028, 2, 29), d(2027, 3, 1), d(2026, 12, 31)] {
            let mut g = Gen {
                rng: ChaCha8Rng::seed_from_u64(3),
                reference,
                prefix: "93".into(),
                resident_ids: HashSet::new(),
                household_ids: HashSet::new(),
                residents: Vec::new(),
                name_sources: Vec::new(),
            };
            for age in 0..=90 {
                let (earliest, latest) = birth_range(reference, age);
                assert_eq!(age_on(earliest, reference), Some(age), "{reference} {age}");
                assert_eq!(age_on(latest, reference), Some(age), "{reference} {age}");
                assert_eq!(age_on(earliest - Duration::days(1), reference), Some(age + 1), "{reference} {age}");
                for _ in 0..20 {
                    assert_eq!(age_on(g.born(age), reference), Some(age));
                }
            }
            let tomorrow = g.born_turning_eighteen_in(1);
            assert_eq!(age_on(tomorrow, reference), Some(17));
            assert_eq!(age_on(tomorrow, reference + Duration::days(1)), Some(18), "{reference}");
            assert_eq!(age_on(g.born_turning_eighteen_in(0), reference), Some(18));
        }
    }

    #[test]
    fn households_are_plausible() {
        let reference = d(2026, 4, 1);
        let r = generate(&GeneratorConfig { seed: 4, households: 1_500, reference_date: reference, postal_prefix: "9".into() });
        assert_eq!(r.household_count(), 1_500);
        let mut sizes = [0usize; 5];
        for members in r.households() {
            let head = &members[0];
            assert_eq!(head.relationship, Relationship::Head, "head first");
            let guardians: Vec<&Resident> = members.iter().filter(|m| m.relationship.is_guardian()).collect();
            assert!((1..=2).contains(&guardians.len()));
            for g in &guardians {
                assert!(age_on(g.birth_date, reference).is_some_and(|a| (20..=55).contains(&a)), "{g:?}");
            }
            let children: Vec<&Resident> = members.iter().filter(|m| m.relationship == Relationship::Child).collect();
            assert!(children.len() <= 4);
            sizes[children.len()] += 1;
            let youngest_guardian = guardians.iter().filter_map(|g| age_on(g.birth_date, reference)).min().unwrap_or(0);
            for c in &children {
                let age = age_on(c.birth_date, reference).unwrap_or(99);
                assert!(age <= 19, "{c:?}");
                assert!(age + 20 <= youngest_guardian + 3, "a parent is at least about 20 years older: {c:?}");
            }
            assert!(children.windows(2).all(|w| w[0].birth_date <= w[1].birth_date), "eldest first");
            let mut readings: Vec<&str> = members.iter().map(|m| m.given_name_kana.as_str()).collect();
            readings.sort_unstable();
            readings.dedup();
            assert_eq!(readings.len(), members.len(), "no two members share a given-name reading");
            for m in members {
                assert_eq!(m.family_name, head.family_name);
                assert_eq!(m.family_name_kana, head.family_name_kana);
                assert_eq!(m.postal_code, head.postal_code);
                assert_eq!(m.postal_code.len(), 7);
                assert!(m.postal_code.starts_with('9'));
                if m.expecting.is_some() {
                    assert_eq!(m.sex, Sex::F);
                    assert!(m.relationship.is_guardian());
                    assert!(m.expecting > Some(reference));
                }
            }
        }
        assert!(sizes.iter().all(|&n| n > 0), "every number of children 0..=4 occurs: {sizes:?}");
        assert!(r.iter().any(|m| m.relationship == Relationship::Other), "three-generation households");
    }

    #[test]
    fn odd_postal_prefixes_still_give_seven_digits() {
        for prefix in ["", "9", "93", "930-12", "12345678"] {
            let r = generate(&GeneratorConfig { households: 20, postal_prefix: prefix.into(), ..GeneratorConfig::default() });
            let digits: String = prefix.chars().filter(char::is_ascii_digit).take(7).collect();
            for m in r.iter() {
                assert_eq!(m.postal_code.len(), 7, "{prefix}");
                assert!(m.postal_code.bytes().all(|b| b.is_ascii_digit()));
                assert!(m.postal_code.starts_with(&digits), "{prefix}");
            }
        }
    }
}
