//! The in-memory registry and its indexes. Residents live in one `Vec`, grouped by household, and
//! every index is a sorted `Vec` of small fixed-size entries pointing into it by `u32` position:
//! no per-resident allocation beyond the resident itself, and building the indexes for 1.4 million
//! residents is a few sorts. Hash-keyed indexes verify every candidate, so a hash collision can
//! only cost a comparison, never return a wrong resident.

use std::collections::HashMap;
use std::fmt;

use chrono::{Duration, NaiveDate};
use kyufu_domain::normalize::{kana_key, normalize_kana};
use kyufu_domain::program::age_on;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{RegistryError, Relationship, Resident};

/// Residents with lookup indexes by resident id, by kana name + birth date, and by household.
///
/// Residents are kept grouped by household: members of a household are contiguous, households in
/// the order their first member was given, members in the order given. [`Registry::iter`] yields
/// that order and [`Registry::write_csv`] writes it, so a generated or written registry loads back
/// in the same order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Registry {
    residents: Vec<Resident>,
    /// Start of each household's run in `residents`, then `residents.len()`.
    household_starts: Vec<u32>,
    /// (resident id as a number, position), sorted.
    by_id: Vec<(u64, u32)>,
    /// (hash of kana key and birth date, position), sorted.
    by_kana_birth: Vec<(u64, u32)>,
    /// (hash of household id, household number), sorted.
    by_household: Vec<(u64, u32)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("residents", &self.residents.len())
            .field("households", &self.household_count())
            .finish()
    }
}

impl<'a> IntoIterator for &'a Registry {
    type Item = &'a Resident;
    type IntoIter = std::slice::Iter<'a, Resident>;

    fn into_iter(self) -> Self::IntoIter {
        self.residents.iter()
    }
}

/// A household that can apply on a date: its members, the guardian who applies, and the children
/// within the age limit.
#[derive(Debug, Clone)]
pub struct Household<'a> {
    pub household_id: &'a str,
    /// Every member, head first.
    pub members: &'a [Resident],
    /// The head if an adult (18 or older), else the adult spouse.
    pub guardian: &'a Resident,
    /// Members with relationship `child` born on or before the date and younger than the limit.
    pub children: Vec<&'a Resident>,
}

/// How many of the cases that make matching hard a registry holds, judged on a date. Every
/// generated registry of 1,000 or more households has each of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialCases {
    pub residents: usize,
    pub households: usize,
    /// Pairs of children in one household born on the same day.
    pub twin_pairs: usize,
    /// Pairs of children in different households with the same kanji and kana name and the same
    /// birth date: only the household tells them apart.
    pub same_name_cousin_pairs: usize,
    /// Pairs of children with the same kanji and kana name born on different days.
    pub same_name_other_birth_pairs: usize,
    /// Women with a due date.
    pub expectant_mothers: usize,
    /// Expectant mothers whose household has no child yet.
    pub expectant_mothers_without_children: usize,
    /// Children aged 17 who turn 18 within 30 days after the date: still eligible.
    pub near_limit_children: usize,
    /// Children living at home who are 18 or older: over the limit.
    pub over_age_children: usize,
}

impl fmt::Display for SpecialCases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} residents in {} households; twin pairs {}, same-name cousin pairs {}, same-name pairs born on other days {}, \
             expectant mothers {} ({} without children yet), children turning 18 within 30 days {}, children 18 or older at home {}",
            self.residents,
            self.households,
            self.twin_pairs,
            self.same_name_cousin_pairs,
            self.same_name_other_birth_pairs,
            self.expectant_mothers,
            self.expectant_mothers_without_children,
            self.near_limit_children,
            self.over_age_children
        )
    }
}

/// The resident id as a number, if it is exactly eleven ASCII digits.
pub(crate) fn parse_resident_id(id: &str) -> Option<u64> {
    if id.len() != kyufu_domain::application::RESIDENT_ID_DIGITS || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// Stored kana: normalised katakana. Names that are already plain full-width katakana (nearly all)
/// are copied without running the full normalisation.
pub(crate) fn stored_kana(s: &str) -> String {
    if s.chars().all(|c| matches!(c, '\u{30A1}'..='\u{30FC}')) {
        s.to_owned()
    } else {
        normalize_kana(s)
    }
}

/// FNV-1a over bytes, skipping ASCII spaces (a space byte never occurs inside a multi-byte UTF-8
/// character, so this hashes the text without its spaces).
fn fnv_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        if b != b' ' {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// Final mix so that similar keys spread over the whole range (splitmix64's finaliser).
fn finish(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Hash of a kana key (`kana_key(family) + kana_key(given)`, spaces ignored) and a birth date.
fn kana_birth_hash(family: &str, given: &str, birth: NaiveDate) -> u64 {
    let h = fnv_bytes(fnv_bytes(FNV_OFFSET, family.as_bytes()), given.as_bytes());
    finish(h ^ (days(birth) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn days(d: NaiveDate) -> i64 {
    i64::from(chrono::Datelike::num_days_from_ce(&d))
}

fn household_hash(id: &str) -> u64 {
    // Hashes every byte, spaces included: household ids are compared exactly.
    let mut h = FNV_OFFSET;
    for &b in id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    finish(h)
}

/// The entries of a sorted `(key, position)` index whose key is `key`.
fn equal_range(index: &[(u64, u32)], key: u64) -> &[(u64, u32)] {
    let start = index.partition_point(|e| e.0 < key);
    let len = index[start..].partition_point(|e| e.0 == key);
    &index[start..start + len]
}

/// Whether the stored kana of `r`, spaces removed, is exactly `key`.
fn kana_matches(r: &Resident, key: &str) -> bool {
    r.family_name_kana.chars().chain(r.given_name_kana.chars()).filter(|c| *c != ' ').eq(key.chars())
}

fn pos(i: usize) -> u32 {
    // Callers have checked the size (`from_residents`) or cannot reach it (the generator).
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Registry {
    /// Builds a registry from residents in any order. Kana is stored normalised; households are
    /// grouped (members keep their relative order, households the order of their first member).
    ///
    /// Fails when a resident id is not eleven digits or appears twice (`index` is the position in
    /// `residents`), or when there are more residents than a `u32` can count.
    pub fn from_residents(residents: Vec<Resident>) -> Result<Registry, RegistryError> {
        if u32::try_from(residents.len()).is_err() {
            return Err(RegistryError::TooLarge { residents: residents.len() });
        }
        let mut ids = Vec::with_capacity(residents.len());
        for (i, r) in residents.iter().enumerate() {
            let id = parse_resident_id(&r.resident_id).ok_or(RegistryError::InvalidResidentId { index: i })?;
            ids.push((id, pos(i)));
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RegistryError::DuplicateResidentId { index: w[1].1 as usize, first_index: w[0].1 as usize });
        }
        drop(ids);
        Ok(Registry::build(residents))
    }

    /// Builds the indexes; resident ids must be valid and unique (checked by `from_residents`,
    /// guaranteed by the generator).
    pub(crate) fn build(mut residents: Vec<Resident>) -> Registry {
        for r in &mut residents {
            if !r.family_name_kana.chars().all(|c| matches!(c, '\u{30A1}'..='\u{30FC}')) {
                r.family_name_kana = stored_kana(&r.family_name_kana);
            }
            if !r.given_name_kana.chars().all(|c| matches!(c, '\u{30A1}'..='\u{30FC}')) {
                r.given_name_kana = stored_kana(&r.given_name_kana);
            }
        }
        let residents = group_by_household(residents);
        let mut household_starts = Vec::new();
        let mut by_household = Vec::new();
        for (i, r) in residents.iter().enumerate() {
            if i == 0 || residents[i - 1].household_id != r.household_id {
                by_household.push((household_hash(&r.household_id), pos(household_starts.len())));
                household_starts.push(pos(i));
            }
        }
        household_starts.push(pos(residents.len()));
        by_household.sort_unstable();
        let mut by_id: Vec<(u64, u32)> = residents
            .iter()
            .enumerate()
            .map(|(i, r)| (parse_resident_id(&r.resident_id).unwrap_or(u64::MAX), pos(i)))
            .collect();
        by_id.sort_unstable();
        let mut by_kana_birth: Vec<(u64, u32)> = residents
            .iter()
            .enumerate()
            .map(|(i, r)| (kana_birth_hash(&r.family_name_kana, &r.given_name_kana, r.birth_date), pos(i)))
            .collect();
        by_kana_birth.sort_unstable();
        Registry { residents, household_starts, by_id, by_kana_birth, by_household }
    }

    pub fn len(&self) -> usize {
        self.residents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residents.is_empty()
    }

    /// Residents grouped by household (see the type's documentation for the order).
    pub fn iter(&self) -> std::slice::Iter<'_, Resident> {
        self.residents.iter()
    }

    /// All residents as one slice, in the order of [`Registry::iter`].
    pub fn residents(&self) -> &[Resident] {
        &self.residents
    }

    pub fn household_count(&self) -> usize {
        self.household_starts.len().saturating_sub(1)
    }

    /// Every household's members, households in registry order.
    pub fn households(&self) -> impl Iterator<Item = &[Resident]> + '_ {
        self.household_starts.windows(2).map(|w| &self.residents[w[0] as usize..w[1] as usize])
    }

    /// The resident with this id (eleven ASCII digits, compared exactly).
    pub fn by_id(&self, resident_id: &str) -> Option<&Resident> {
        let id = parse_resident_id(resident_id)?;
        let i = self.by_id.binary_search_by_key(&id, |e| e.0).ok()?;
        self.residents.get(self.by_id[i].1 as usize).filter(|r| r.resident_id == resident_id)
    }

    /// Residents born on `birth` whose kana name is `family_kana` + `given_kana` after
    /// `kyufu_domain::normalize::kana_key` (hiragana, half-width kana, spaces and dashes for the
    /// long-vowel mark are all accepted). The key is the family and given readings joined, so a
    /// name split at another place (`ヤマ` + `ダタロウ`) still finds `ヤマダ タロウ`. Registry order.
    pub fn find_by_kana_and_birth(&self, family_kana: &str, given_kana: &str, birth: NaiveDate) -> Vec<&Resident> {
        let key = kana_key(family_kana) + &kana_key(given_kana);
        if key.is_empty() {
            return Vec::new();
        }
        // Entries with one hash are in position order, so this is registry order.
        equal_range(&self.by_kana_birth, kana_birth_hash(&key, "", birth))
            .iter()
            .map(|e| &self.residents[e.1 as usize])
            .filter(|r| r.birth_date == birth && kana_matches(r, &key))
            .collect()
    }

    /// The members of a household, head first; empty for an unknown household id.
    pub fn household(&self, household_id: &str) -> &[Resident] {
        equal_range(&self.by_household, household_hash(household_id))
            .iter()
            .map(|e| self.household_members(e.1 as usize))
            .find(|members| members.first().is_some_and(|r| r.household_id == household_id))
            .unwrap_or(&[])
    }

    fn household_members(&self, number: usize) -> &[Resident] {
        match (self.household_starts.get(number), self.household_starts.get(number + 1)) {
            (Some(&start), Some(&end)) => &self.residents[start as usize..end as usize],
            _ => &[],
        }
    }

    /// Women with a due date, in registry order.
    pub fn expectant_mothers(&self) -> impl Iterator<Item = &Resident> + '_ {
        self.residents.iter().filter(|r| r.expecting.is_some())
    }

    /// Every household that can apply on `on` for a benefit limited to children younger than
    /// `age_limit`: it has an adult (18+) head or spouse, and at least one member with relationship
    /// `child` born on or before `on` and younger than `age_limit` then. In registry order.
    ///
    /// With `Program::reference_date` and `Program::age_limit` this gives the households from which
    /// tests and the load tester build valid applications (guardian + one of `children`).
    pub fn households_with_children(&self, on: NaiveDate, age_limit: u32) -> Vec<Household<'_>> {
        self.households().filter_map(|members| applicable(members, on, age_limit)).collect()
    }

    /// `n` households drawn without repetition from [`Registry::households_with_children`]
    /// (all of them, shuffled, if there are fewer), the same for the same registry and `seed`.
    pub fn sample_households(&self, on: NaiveDate, age_limit: u32, n: usize, seed: u64) -> Vec<Household<'_>> {
        let mut all = self.households_with_children(on, age_limit);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let amount = n.min(all.len());
        let picked = rand::seq::index::sample(&mut rng, all.len(), amount).into_vec();
        let mut slots: Vec<Option<Household<'_>>> = all.drain(..).map(Some).collect();
        picked.into_iter().filter_map(|i| slots.get_mut(i).and_then(Option::take)).collect()
    }

    /// Counts the hard cases, judged on `on` (the program's reference date).
    pub fn special_cases(&self, on: NaiveDate) -> SpecialCases {
        let is_child = |r: &&Resident| r.relationship == Relationship::Child;
        let mut sc = SpecialCases { residents: self.len(), households: self.household_count(), ..SpecialCases::default() };
        for members in self.households() {
            let kids: Vec<&Resident> = members.iter().filter(is_child).collect();
            for (a, x) in kids.iter().enumerate() {
                sc.twin_pairs += kids[a + 1..].iter().filter(|y| y.birth_date == x.birth_date).count();
            }
            let expecting = members.iter().filter(|m| m.expecting.is_some()).count();
            sc.expectant_mothers += expecting;
            if kids.is_empty() {
                sc.expectant_mothers_without_children += expecting;
            }
        }
        // Same kanji, kana and birth date in different households: within one kana+birth hash run.
        let mut start = 0;
        while start < self.by_kana_birth.len() {
            let key = self.by_kana_birth[start].0;
            let run = equal_range(&self.by_kana_birth[start..], key);
            let rs: Vec<&Resident> = run.iter().map(|e| &self.residents[e.1 as usize]).filter(is_child).collect();
            for (a, x) in rs.iter().enumerate() {
                sc.same_name_cousin_pairs += rs[a + 1..].iter().filter(|y| same_name(x, y) && y.birth_date == x.birth_date && y.household_id != x.household_id).count();
            }
            start += run.len();
        }
        // Same name, other birth date: sort children by name, count pairs per name minus pairs
        // born on one day.
        let mut kids: Vec<&Resident> = self.residents.iter().filter(is_child).collect();
        kids.sort_unstable_by(|x, y| name_tuple(x).cmp(&name_tuple(y)).then(x.birth_date.cmp(&y.birth_date)));
        for group in kids.chunk_by(|x, y| same_name(x, y)) {
            let pairs = |n: usize| n * n.saturating_sub(1) / 2;
            let same_day: usize = group.chunk_by(|x, y| x.birth_date == y.birth_date).map(|g| pairs(g.len())).sum();
            sc.same_name_other_birth_pairs += pairs(group.len()) - same_day;
        }
        let soon = on + Duration::days(30);
        for r in self.residents.iter().filter(is_child) {
            match age_on(r.birth_date, on) {
                Some(a) if a >= 18 => sc.over_age_children += 1,
                Some(17) if age_on(r.birth_date, soon).is_some_and(|a| a >= 18) => sc.near_limit_children += 1,
                _ => {}
            }
        }
        sc
    }
}

fn name_tuple(r: &Resident) -> (&str, &str, &str, &str) {
    (&r.family_name, &r.given_name, &r.family_name_kana, &r.given_name_kana)
}

fn same_name(x: &Resident, y: &Resident) -> bool {
    name_tuple(x) == name_tuple(y)
}

fn applicable(members: &[Resident], on: NaiveDate, age_limit: u32) -> Option<Household<'_>> {
    let adult = |r: &&Resident| r.relationship.is_guardian() && age_on(r.birth_date, on).is_some_and(|a| a >= 18);
    let guardian = members
        .iter()
        .filter(adult)
        .find(|r| r.relationship == Relationship::Head)
        .or_else(|| members.iter().find(adult))?;
    let children: Vec<&Resident> = members
        .iter()
        .filter(|r| r.relationship == Relationship::Child && age_on(r.birth_date, on).is_some_and(|a| a < age_limit))
        .collect();
    (!children.is_empty()).then(|| Household { household_id: &guardian.household_id, members, guardian, children })
}

/// Groups members of a household together, keeping relative order; a no-op (no move) when the
/// input is already grouped, as generated and written registries are.
fn group_by_household(residents: Vec<Resident>) -> Vec<Resident> {
    let mut grouped = true;
    let groups: Vec<u32> = {
        let mut number: HashMap<&str, u32> = HashMap::new();
        let mut last = None;
        residents
            .iter()
            .map(|r| {
                let next = pos(number.len());
                let g = *number.entry(r.household_id.as_str()).or_insert(next);
                grouped &= last == Some(g) || g == next;
                last = Some(g);
                g
            })
            .collect()
    };
    if grouped {
        return residents;
    }
    let mut tagged: Vec<(u32, Resident)> = groups.into_iter().zip(residents).collect();
    tagged.sort_by_key(|t| t.0);
    tagged.into_iter().map(|t| t.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sex;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn person(id: &str, household: &str, family_kana: &str, given_kana: &str, birth: NaiveDate, rel: Relationship) -> Resident {
        Resident {
            resident_id: id.to_owned(),
            household_id: household.to_owned(),
            family_name: "山田".to_owned(),
            given_name: "太郎".to_owned(),
            family_name_kana: family_kana.to_owned(),
            given_name_kana: given_kana.to_owned(),
            birth_date: birth,
            sex: Sex::M,
            postal_code: "9300001".to_owned(),
            relationship: rel,
            expecting: None,
        }
    }

    #[test]
    fn households_are_grouped_keeping_order() {
        let r = Registry::from_residents(vec![
            person("00000000001", "HA", "ヤマダ", "イチロウ", d(1980, 1, 1), Relationship::Head),
            person("00000000002", "HB", "ヤマダ", "ジロウ", d(1982, 1, 1), Relationship::Head),
            person("00000000003", "HA", "ヤマダ", "タロウ", d(2015, 1, 1), Relationship::Child),
            person("00000000004", "HB", "ヤマダ", "ハナコ", d(2016, 1, 1), Relationship::Child),
            person("00000000005", "HA", "ヤマダ", "サブロウ", d(2017, 1, 1), Relationship::Child),
        ])
        .expect("valid");
        let ids = |h: &str| r.household(h).iter().map(|p| p.resident_id.as_str()).collect::<Vec<_>>();
        assert_eq!(ids("HA"), ["00000000001", "00000000003", "00000000005"]);
        assert_eq!(ids("HB"), ["00000000002", "00000000004"]);
        assert!(r.household("HC").is_empty());
        assert_eq!(r.household_count(), 2);
        let order: Vec<&str> = r.iter().map(|p| p.resident_id.as_str()).collect();
        assert_eq!(order, ["00000000001", "00000000003", "00000000005", "00000000002", "00000000004"]);
        // Indexes point at the moved positions.
        assert_eq!(r.by_id("00000000004").map(|p| p.given_name_kana.as_str()), Some("ハナコ"));
        assert_eq!(r.find_by_kana_and_birth("ヤマダ", "サブロウ", d(2017, 1, 1)).len(), 1);
    }

    #[test]
    fn bad_and_duplicate_ids_are_refused() {
        let ok = person("12345678901", "H", "ヤマダ", "タロウ", d(2015, 1, 1), Relationship::Child);
        let mut short = ok.clone();
        short.resident_id = "1234567890".to_owned();
        assert!(matches!(Registry::from_residents(vec![ok.clone(), short]), Err(RegistryError::InvalidResidentId { index: 1 })));
        let other = person("99999999999", "H", "ヤマダ", "ジロウ", d(2016, 1, 1), Relationship::Child);
        let dup = Registry::from_residents(vec![ok.clone(), other, ok]);
        assert!(matches!(dup, Err(RegistryError::DuplicateResidentId { index: 2, first_index: 0 })), "{dup:?}");
    }

    #[test]
    fn kana_is_stored_normalised_and_looked_up_by_joined_key() {
        let r = Registry::from_residents(vec![person("12345678901", "H", "やまだ", "ﾀﾛｳ", d(2015, 1, 1), Relationship::Child)])
            .expect("valid");
        let p = r.by_id("12345678901").expect("present");
        assert_eq!((p.family_name_kana.as_str(), p.given_name_kana.as_str()), ("ヤマダ", "タロウ"));
        assert_eq!(r.find_by_kana_and_birth("ヤマ", "ダタロウ", d(2015, 1, 1)).len(), 1);
        assert!(r.find_by_kana_and_birth("ヤマダ", "タロ", d(2015, 1, 1)).is_empty());
        assert!(r.find_by_kana_and_birth("", "", d(2015, 1, 1)).is_empty());
        assert!(r.by_id("1234567890１").is_none(), "ids are compared exactly");
        assert!(r.by_id("").is_none());
    }

    #[test]
    fn special_cases_count_what_they_say() {
        let on = d(2026, 4, 1);
        let mut twin_a = person("00000000001", "H1", "ヤマダ", "タロウ", d(2015, 5, 5), Relationship::Child);
        let mut twin_b = person("00000000002", "H1", "ヤマダ", "ジロウ", d(2015, 5, 5), Relationship::Child);
        twin_a.given_name = "太郎".into();
        twin_b.given_name = "次郎".into();
        let cousin = person("00000000003", "H2", "ヤマダ", "タロウ", d(2015, 5, 5), Relationship::Child);
        let namesake = person("00000000004", "H3", "ヤマダ", "タロウ", d(2016, 5, 5), Relationship::Child);
        let near = person("00000000005", "H4", "ヤマダ", "ケン", d(2008, 4, 20), Relationship::Child);
        let over = person("00000000006", "H4", "ヤマダ", "ジュン", d(2008, 4, 1), Relationship::Child);
        let mut mother = person("00000000007", "H5", "ヤマダ", "ハナコ", d(1995, 1, 1), Relationship::Head);
        mother.expecting = Some(d(2026, 7, 1));
        let r = Registry::from_residents(vec![twin_a, twin_b, cousin, namesake, near, over, mother]).expect("valid");
        let sc = r.special_cases(on);
        assert_eq!(
            sc,
            SpecialCases {
                residents: 7,
                households: 5,
                twin_pairs: 1,
                same_name_cousin_pairs: 1,
                same_name_other_birth_pairs: 2,
                expectant_mothers: 1,
                expectant_mothers_without_children: 1,
                near_limit_children: 1,
                over_age_children: 1,
            }
        );
        assert!(sc.to_string().contains("twin pairs 1"));
    }
}
