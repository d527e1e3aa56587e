//! The synthetic registry from the outside: deterministic bytes for a seed, unique well-formed
//! ids, the hard cases present (checked by brute force, not only by the crate's own report), a
//! lossless CSV round trip, loader errors that name line and column, kana lookups that normalise,
//! applicable households for building applications, and a 300,000-resident generate + load.

use std::collections::{HashMap, HashSet};

use chrono::{Duration, NaiveDate};
use kyufu_domain::normalize::is_kana_name;
use kyufu_domain::program::age_on;
use kyufu_registry::{generate, GeneratorConfig, Registry, RegistryError, Relationship, Resident, Sex, COLUMNS};

fn reference() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 4, 1).expect("date")
}

fn config(seed: u64, households: usize) -> GeneratorConfig {
    GeneratorConfig { seed, households, reference_date: reference(), postal_prefix: "93".to_owned() }
}

fn csv_bytes(r: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    r.write_csv(&mut out).expect("write");
    out
}

fn load_err(text: &str) -> String {
    match Registry::load_csv(text.as_bytes()) {
        Ok(r) => panic!("expected an error, loaded {} residents from {text:?}", r.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = csv_bytes(&generate(&config(7, 1_000)));
    assert_eq!(a, csv_bytes(&generate(&config(7, 1_000))));
    assert_ne!(a, csv_bytes(&generate(&config(8, 1_000))));
    let header = String::from_utf8_lossy(a.split(|b| *b == b'\n').next().expect("header"));
    assert_eq!(
        header,
        "resident_id,household_id,family_name,given_name,family_name_kana,given_name_kana,birth_date,sex,postal_code,relationship,expecting"
    );
}

#[test]
fn ids_are_unique_and_well_formed() {
    let r = generate(&config(1, 2_000));
    assert!(r.len() > 6_000, "{} residents", r.len());
    let mut ids = HashSet::new();
    let mut households = HashSet::new();
    for p in r.iter() {
        assert_eq!(p.resident_id.len(), 11, "{}", p.resident_id);
        assert!(p.resident_id.bytes().all(|b| b.is_ascii_digit()));
        assert!(ids.insert(p.resident_id.as_str()), "duplicate id {}", p.resident_id);
        assert!(p.household_id.len() == 10 && p.household_id.starts_with('H'), "{}", p.household_id);
        households.insert(p.household_id.as_str());
        assert!(p.postal_code.len() == 7 && p.postal_code.starts_with("93"), "{}", p.postal_code);
        assert!(is_kana_name(&p.family_name_kana) && is_kana_name(&p.given_name_kana), "{p:?}");
        assert_eq!(r.by_id(&p.resident_id).map(|q| q as *const Resident), Some(p as *const Resident));
    }
    assert_eq!(households.len(), 2_000);
    assert_eq!(r.household_count(), 2_000);
    // Not sequential: consecutive residents' ids are far apart.
    let sorted: Vec<u64> = r.iter().map(|p| p.resident_id.parse().expect("digits")).collect();
    let close = sorted.windows(2).filter(|w| w[0].abs_diff(w[1]) < 1_000).count();
    assert!(close < 5, "{close} consecutive residents have ids closer than 1000");
    assert!(r.by_id("00000000000").is_none());
    assert!(r.by_id("not an id").is_none());
}

/// Brute-force counts of the hard cases, independent of `Registry::special_cases`.
#[test]
fn hard_cases_are_present_in_2000_households() {
    let on = reference();
    let r = generate(&config(1, 2_000));
    let children: Vec<&Resident> = r.iter().filter(|p| p.relationship == Relationship::Child).collect();

    let mut twins = 0;
    let mut cousins = 0;
    let mut namesakes_other_day = 0;
    for (i, a) in children.iter().enumerate() {
        for b in &children[i + 1..] {
            let same_name = (&a.family_name, &a.given_name, &a.family_name_kana, &a.given_name_kana)
                == (&b.family_name, &b.given_name, &b.family_name_kana, &b.given_name_kana);
            if a.household_id == b.household_id && a.birth_date == b.birth_date {
                assert_ne!(a.given_name_kana, b.given_name_kana, "twins have different names");
                twins += 1;
            }
            if same_name && a.household_id != b.household_id && a.birth_date == b.birth_date {
                assert_ne!(a.postal_code, b.postal_code, "planted cousins live elsewhere");
                cousins += 1;
            }
            if same_name && a.birth_date != b.birth_date {
                namesakes_other_day += 1;
            }
        }
    }
    let expecting: Vec<&Resident> = r.iter().filter(|p| p.expecting.is_some()).collect();
    let expecting_first = expecting
        .iter()
        .filter(|m| r.household(&m.household_id).iter().all(|x| x.relationship != Relationship::Child))
        .count();
    let age = |p: &Resident| age_on(p.birth_date, on).unwrap_or(0);
    let over_age: Vec<&&Resident> = children.iter().filter(|c| age(c) >= 18).collect();
    let nineteen = children.iter().filter(|c| age(c) == 19).count();
    let turns_tomorrow = children.iter().filter(|c| age(c) == 17 && age_on(c.birth_date, on + Duration::days(1)) == Some(18)).count();
    let turns_on_reference = over_age.iter().filter(|c| age_on(c.birth_date, on - Duration::days(1)) == Some(17)).count();
    let near = children.iter().filter(|c| age(c) == 17 && age_on(c.birth_date, on + Duration::days(30)) == Some(18)).count();

    // 40 blocks of 50 households, each with 2 twin households, 1 cousin, 1 namesake, ...
    assert!(twins >= 80, "twins {twins}");
    assert!(cousins >= 40, "cousins {cousins}");
    assert!(namesakes_other_day >= 40, "namesakes {namesakes_other_day}");
    assert!(expecting.len() >= 120, "expecting {}", expecting.len());
    assert!(expecting.iter().all(|m| m.sex == Sex::F && m.expecting > Some(on)));
    assert!(expecting_first >= 40, "expecting first {expecting_first}");
    assert!(over_age.len() >= 120, "over age {}", over_age.len());
    assert!(nineteen >= 40, "nineteen {nineteen}");
    assert!(turns_tomorrow >= 40, "turns 18 tomorrow {turns_tomorrow}");
    assert!(turns_on_reference >= 40, "turns 18 on the reference date {turns_on_reference}");
    assert!(near >= 80, "near {near}");

    // The crate's own report says the same.
    let sc = r.special_cases(on);
    assert_eq!(sc.twin_pairs, twins);
    assert_eq!(sc.same_name_cousin_pairs, cousins);
    assert_eq!(sc.same_name_other_birth_pairs, namesakes_other_day);
    assert_eq!(sc.expectant_mothers, expecting.len());
    assert_eq!(sc.expectant_mothers_without_children, expecting_first);
    assert_eq!(sc.over_age_children, over_age.len());
    assert_eq!(sc.near_limit_children, near);
    assert_eq!((sc.residents, sc.households), (r.len(), 2_000));

    // A kana lookup for a cousin finds both children, in different households.
    let cousin = children
        .iter()
        .find(|c| r.find_by_kana_and_birth(&c.family_name_kana, &c.given_name_kana, c.birth_date).len() >= 2)
        .expect("a same-name pair");
    let both = r.find_by_kana_and_birth(&cousin.family_name_kana, &cousin.given_name_kana, cousin.birth_date);
    assert!(both.iter().any(|p| p.household_id != cousin.household_id));
}

#[test]
fn small_registries_have_the_cases_too() {
    for seed in 0..5 {
        let sc = generate(&config(seed, 1_000)).special_cases(reference());
        assert!(sc.twin_pairs >= 40 && sc.same_name_cousin_pairs >= 19 && sc.same_name_other_birth_pairs >= 19, "{seed}: {sc}");
        assert!(sc.expectant_mothers_without_children >= 20 && sc.over_age_children >= 60 && sc.near_limit_children >= 40, "{seed}: {sc}");
    }
}

#[test]
fn csv_round_trip_is_lossless() {
    let r = generate(&config(3, 1_000));
    let bytes = csv_bytes(&r);
    let loaded = Registry::load_csv(bytes.as_slice()).expect("load");
    assert_eq!(loaded, r);
    assert_eq!(csv_bytes(&loaded), bytes);
    assert!(loaded.iter().any(|p| p.expecting.is_some()) && loaded.iter().any(|p| p.relationship == Relationship::Other));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.csv");
    r.write_path(&path).expect("write");
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert_eq!(Registry::load_path(&path).expect("load"), r);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "no temporary file left behind");
}

#[test]
fn loader_accepts_any_column_order_and_optional_columns() {
    let text = "\u{FEFF}sex,birth_date,given_name_kana,family_name_kana,given_name,family_name,household_id,resident_id,note\n\
                M,2019-04-01,たろう,ﾔﾏﾀﾞ,太郎,山田,H1,12345678901,ignored\n\
                F,1990-05-06,ハナコ,ヤマダ,花子,山田,H1,12345678902,\n";
    let r = Registry::load_csv(text.as_bytes()).expect("load");
    let taro = r.by_id("12345678901").expect("taro");
    assert_eq!((taro.family_name_kana.as_str(), taro.given_name_kana.as_str()), ("ヤマダ", "タロウ"));
    assert_eq!(taro.birth_date, NaiveDate::from_ymd_opt(2019, 4, 1).expect("date"));
    assert_eq!((taro.postal_code.as_str(), taro.relationship, taro.expecting), ("", Relationship::Other, None));
    assert_eq!(r.by_id("12345678902").map(|p| p.sex), Some(Sex::F));
    assert_eq!(r.household("H1").len(), 2);

    let shuffled = "expecting,relationship,postal_code,sex,birth_date,given_name_kana,family_name_kana,given_name,family_name,household_id,resident_id\n\
                    2026-09-01,spouse,9300001,F,1990-05-06,ハナコ,ヤマダ,花子,山田,H1,12345678902\n";
    let r = Registry::load_csv(shuffled.as_bytes()).expect("load");
    let hanako = r.by_id("12345678902").expect("hanako");
    assert_eq!(hanako.expecting, NaiveDate::from_ymd_opt(2026, 9, 1));
    assert_eq!((hanako.relationship, hanako.postal_code.as_str()), (Relationship::Spouse, "9300001"));
}

#[test]
fn loader_errors_name_line_and_column() {
    let header = COLUMNS.join(",");
    let row = |id: &str, birth: &str| format!("{id},H1,山田,太郎,ヤマダ,タロウ,{birth},M,9300001,child,\n");
    let good = row("12345678901", "2019-04-01");
    let cases: Vec<(String, &str)> = vec![
        (format!("{header}\n{good}{}", row("12345678902", "2019-02-30")), "line 3, column `birth_date`"),
        (format!("{header}\n{good}{}", row("12345678902", "2019/02/03")), "line 3, column `birth_date`"),
        (format!("{header}\n{good}{good}{}", row("1234567890", "2019-02-03")), "line 4, column `resident_id`"),
        (format!("{header}\n{good}12345678902,H1,山田\n"), "line 3: 3 fields, but the header has 11"),
        (format!("{header}\n{good}{},extra\n", row("12345678902", "2019-02-03").trim_end()), "line 3: 12 fields"),
        (format!("{header}\n{good}{good}"), "line 3, column `resident_id`: the resident id is already used on line 2"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace(",M,", ",X,")), "line 2, column `sex`"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace("ヤマダ", "Yamada")), "line 2, column `family_name_kana`"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace("9300001", "930-0001")), "line 2, column `postal_code`"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace("child", "Child")), "line 2, column `relationship`"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace("child,", "child,soon")), "line 2, column `expecting`"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace("H1", " ")), "line 2, column `household_id`"),
        (format!("{header}\n{}", row("12345678902", "2019-02-03").replace("太郎", "")), "line 2, column `given_name`"),
        ("resident_id,household_id,family_name,given_name,family_name_kana,given_name_kana,birth_date\n".to_owned(), "missing"),
        (format!("{header},sex\n"), "`sex` appears more than once"),
        (String::new(), "`resident_id` is missing"),
    ];
    for (text, expected) in cases {
        let err = load_err(&text);
        assert!(err.contains(expected), "{err:?} should contain {expected:?}");
    }
    // The missing column is named.
    assert!(load_err("resident_id,household_id,family_name,given_name,family_name_kana,given_name_kana,sex\n").contains("`birth_date`"));
    // Values are not repeated in errors (they may be personal data).
    let err = load_err(&format!("{header}\n{}", row("12345678902", "1999-99-99")));
    assert!(!err.contains("1999-99-99") && !err.contains("12345678902"), "{err}");
    // Invalid UTF-8 names the line.
    let mut bytes = format!("{header}\n{good}").into_bytes();
    bytes.extend_from_slice(b"12345678902,H1,\xFF\xFE,x,y,z,2019-01-01,M,9300001,child,\n");
    let err = Registry::load_csv(bytes.as_slice()).expect_err("bad utf-8");
    assert!(matches!(err, RegistryError::Csv { line: Some(3), .. }), "{err:?}");
}

#[test]
fn loader_never_panics_on_garbage() {
    use rand::{Rng, SeedableRng};
    let header = COLUMNS.join(",");
    let base = csv_bytes(&generate(&config(2, 30)));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let damage: &[u8] = b",\n\"\r- 9a\xFF\xEF";
    let mut refused = 0;
    for _ in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(header.len() + 1..bytes.len());
            bytes[i] = damage[rng.gen_range(0..damage.len())];
        }
        if let Err(e) = Registry::load_csv(bytes.as_slice()) {
            assert!(e.to_string().contains("line "), "{e}");
            refused += 1;
        }
    }
    assert!(refused > 100, "only {refused} of 300 damaged files were refused");
}

#[test]
fn kana_lookup_accepts_hiragana_half_width_and_spaces() {
    let r = generate(&config(5, 500));
    let to_hiragana = |s: &str| -> String {
        s.chars().map(|c| if ('\u{30A1}'..='\u{30F6}').contains(&c) { char::from_u32(c as u32 - 0x60).unwrap_or(c) } else { c }).collect()
    };
    let mut checked = 0;
    for c in r.iter().filter(|p| p.relationship == Relationship::Child).take(200) {
        let found = r.find_by_kana_and_birth(&format!("　{} ", to_hiragana(&c.family_name_kana)), &to_hiragana(&c.given_name_kana), c.birth_date);
        assert!(found.iter().any(|p| p.resident_id == c.resident_id), "{c:?}");
        assert!(found.iter().all(|p| p.birth_date == c.birth_date && p.given_name_kana == c.given_name_kana));
        let next_day = c.birth_date + Duration::days(1);
        assert!(r.find_by_kana_and_birth(&c.family_name_kana, &c.given_name_kana, next_day).iter().all(|p| p.resident_id != c.resident_id));
        checked += 1;
    }
    assert_eq!(checked, 200);

    // Half-width kana with voiced marks and small kana, a dash typed for the long-vowel mark.
    let text = format!(
        "{}\n12345678901,H1,斎藤,翔太,サイトウ,ショウタ,2015-06-07,M,9300001,child,\n12345678902,H1,斎藤,優子,サイトウ,ユーコ,1985-01-02,F,9300001,head,\n",
        COLUMNS.join(",")
    );
    let small = Registry::load_csv(text.as_bytes()).expect("load");
    let birth = NaiveDate::from_ymd_opt(2015, 6, 7).expect("date");
    assert_eq!(small.find_by_kana_and_birth("ｻｲﾄｳ", "ｼｮｳﾀ", birth).len(), 1);
    assert_eq!(small.find_by_kana_and_birth("さいとう", "しょうた", birth).len(), 1);
    assert!(small.find_by_kana_and_birth("サイトウ", "シヨウタ", birth).is_empty(), "a big ヨ is another name");
    let mother = NaiveDate::from_ymd_opt(1985, 1, 2).expect("date");
    assert_eq!(small.find_by_kana_and_birth("サイトウ", "ユ-コ", mother).len(), 1);
    assert_eq!(small.find_by_kana_and_birth("ｻｲﾄｳ", "ﾕｰｺ", mother).len(), 1);
}

#[test]
fn households_with_children_can_apply_and_samples_are_deterministic() {
    let on = reference();
    let r = generate(&config(2, 1_000));
    let all = r.households_with_children(on, 18);
    assert!(all.len() > 700 && all.len() < 1_000, "{}", all.len());
    for h in &all {
        assert!(h.guardian.relationship.is_guardian());
        assert!(age_on(h.guardian.birth_date, on).is_some_and(|a| a >= 18));
        assert!(!h.children.is_empty());
        assert_eq!(h.members, r.household(h.household_id));
        for c in &h.children {
            assert_eq!(c.household_id, h.household_id);
            assert_eq!(c.relationship, Relationship::Child);
            assert!(age_on(c.birth_date, on).is_some_and(|a| a < 18), "{c:?}");
        }
    }
    // Over-age children are never offered, and a household with only over-age children is left out.
    let offered: HashSet<&str> = all.iter().flat_map(|h| h.children.iter().map(|c| c.resident_id.as_str())).collect();
    assert!(r.iter().filter(|p| age_on(p.birth_date, on).is_some_and(|a| a >= 18)).all(|p| !offered.contains(p.resident_id.as_str())));
    let expecting_first: Vec<&Resident> =
        r.expectant_mothers().filter(|m| r.household(&m.household_id).iter().all(|x| x.relationship != Relationship::Child)).collect();
    assert!(!expecting_first.is_empty());
    assert!(expecting_first.iter().all(|m| all.iter().all(|h| h.household_id != m.household_id)));

    let ids = |hs: &[kyufu_registry::Household<'_>]| hs.iter().map(|h| h.household_id.to_owned()).collect::<Vec<_>>();
    let a = r.sample_households(on, 18, 50, 1);
    assert_eq!(a.len(), 50);
    assert_eq!(ids(&a), ids(&r.sample_households(on, 18, 50, 1)));
    assert_ne!(ids(&a), ids(&r.sample_households(on, 18, 50, 2)));
    assert_eq!(ids(&a).into_iter().collect::<HashSet<_>>().len(), 50, "no household twice");
    assert!(a.iter().all(|h| all.iter().any(|x| x.household_id == h.household_id)));
    assert_eq!(r.sample_households(on, 18, 100_000, 1).len(), all.len());
    // A stricter age limit offers fewer children.
    let young: usize = r.households_with_children(on, 6).iter().map(|h| h.children.len()).sum();
    let every: usize = all.iter().map(|h| h.children.len()).sum();
    assert!(young < every);
}

#[test]
fn three_hundred_thousand_residents_generate_write_and_load() {
    let started = std::time::Instant::now();
    let r = generate(&config(9, 90_000));
    let generated = started.elapsed();
    assert!(r.len() >= 300_000, "{}", r.len());
    let bytes = csv_bytes(&r);
    let written = started.elapsed();
    let loaded = Registry::load_csv(bytes.as_slice()).expect("load");
    let done = started.elapsed();
    eprintln!(
        "{} residents: generate {generated:?}, write {:?} ({} MB), load {:?}",
        r.len(),
        written - generated,
        bytes.len() / 1_000_000,
        done - written
    );
    assert_eq!(loaded.len(), r.len());
    assert!(loaded == r, "the loaded registry differs");
    // Every index answers for every resident.
    let mut by_household: HashMap<&str, usize> = HashMap::new();
    for p in loaded.iter() {
        *by_household.entry(&p.household_id).or_default() += 1;
    }
    for p in loaded.iter().step_by(97) {
        assert_eq!(loaded.by_id(&p.resident_id).map(|q| &q.resident_id), Some(&p.resident_id));
        assert!(loaded.find_by_kana_and_birth(&p.family_name_kana, &p.given_name_kana, p.birth_date).iter().any(|q| q.resident_id == p.resident_id));
        assert_eq!(loaded.household(&p.household_id).len(), by_household[p.household_id.as_str()]);
    }
}
