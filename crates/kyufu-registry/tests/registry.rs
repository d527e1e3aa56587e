//! The synthetic registry: deterministic, unique ids, the hard cases present, a lossless CSV
//! round trip, loader errors that name the line, and lookups that normalise kana.

use chrono::NaiveDate;
use kyufu_registry::{generate, GeneratorConfig, Registry, Relationship};

fn config(seed: u64, households: usize) -> GeneratorConfig {
    GeneratorConfig { seed, households, reference_date: NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"), ..GeneratorConfig::default() }
}

fn csv_bytes(r: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    r.write_csv(&mut out).expect("write");
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = csv_bytes(&generate(&config(7, 300)));
    assert_eq!(a, csv_bytes(&generate(&config(7, 300))));
    assert_ne!(a, csv_bytes(&generate(&config(8, 300))));
}

#[test]
fn ids_unique_and_well_formed() {
    let r = generate(&config(1, 2_000));
    let mut ids = std::collections::HashSet::new();
    for p in r.iter() {
        assert_eq!(p.resident_id.len(), 11);
        assert!(p.resident_id.bytes().all(|b| b.is_ascii_digit()));
        assert!(ids.insert(p.resident_id.clone()), "duplicate id");
        assert_eq!(p.postal_code.len(), 7);
        assert!(p.postal_code.starts_with("93"));
        assert!(kyufu_domain::normalize::is_kana_name(&p.family_name_kana), "{}", p.family_name_kana);
    }
    assert!(r.len() > 4_000, "{} residents", r.len());
}

#[test]
fn hard_cases_are_present() {
    let on = NaiveDate::from_ymd_opt(2026, 4, 1).expect("date");
    let r = generate(&config(1, 2_000));
    let sc = r.special_cases(on);
    assert!(sc.twin_pairs >= 10, "{sc:?}");
    assert!(sc.same_name_cousin_pairs >= 10, "{sc:?}");
    assert!(sc.expectant_mothers >= 20, "{sc:?}");
    assert!(sc.over_age_children >= 10, "{sc:?}");
    // Some expectant mothers have no children yet.
    let childless_expecting = r
        .iter()
        .filter(|m| m.expecting.is_some())
        .filter(|m| r.household(&m.household_id).iter().all(|x| x.relationship != Relationship::Child))
        .count();
    assert!(childless_expecting > 0);
    // A same-name cousin pair really lives in two households.
    let cousins = r
        .iter()
        .filter(|c| c.relationship == Relationship::Child)
        .find(|c| r.find_by_kana_and_birth(&c.family_name_kana, &c.given_name_kana, c.birth_date).len() > 1)
        .expect("a same-name pair");
    let both = r.find_by_kana_and_birth(&cousins.family_name_kana, &cousins.given_name_kana, cousins.birth_date);
    assert_ne!(both[0].household_id, both[1].household_id);
}

#[test]
fn csv_round_trip_is_lossless() {
    let r = generate(&config(3, 500));
    let loaded = Registry::load_csv(csv_bytes(&r).as_slice()).expect("load");
    assert_eq!(loaded.iter().cloned().collect::<Vec<_>>(), r.iter().cloned().collect::<Vec<_>>());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.csv");
    r.write_path(&path).expect("write");
    assert_eq!(Registry::load_path(&path).expect("load").len(), r.len());
}

#[test]
fn loader_accepts_any_column_order_and_names_bad_lines() {
    let ok = "postal_code,birth_date,given_name_kana,family_name_kana,given_name,family_name,household_id,resident_id\n\
              9300001,2019-04-01,たろう,ヤマダ,太郎,山田,H1,12345678901\n";
    let r = Registry::load_csv(ok.as_bytes()).expect("load");
    assert_eq!(r.by_id("12345678901").map(|p| p.given_name.as_str()), Some("太郎"));
    let header = "resident_id,household_id,family_name,given_name,family_name_kana,given_name_kana,birth_date,postal_code\n";
    let good_row = "12345678901,H1,山田,太郎,ヤマダ,タロウ,2019-04-01,9300001\n";
    let cases = [
        (format!("{header}{good_row}12345678902,H1,山田,花子,ヤマダ,ハナコ,2019-02-30,9300001\n"), "line 3", "birth_date"),
        (format!("{header}{good_row}123,H1,山田,花子,ヤマダ,ハナコ,2019-02-03,9300001\n"), "line 3", "resident_id"),
        (format!("{header}{good_row}12345678902,H1,山田\n"), "line 3", ""),
    ];
    for (text, line, column) in cases {
        let err = Registry::load_csv(text.as_bytes()).expect_err("must fail").to_string();
        assert!(err.contains(line) && err.contains(column), "{err}");
    }
    let missing = "resident_id,household_id\n1,2\n";
    assert!(Registry::load_csv(missing.as_bytes()).expect_err("missing").to_string().contains("family_name"));
}

#[test]
fn kana_lookup_normalises_input() {
    let r = generate(&config(5, 200));
    let c = r.iter().find(|p| p.relationship == Relationship::Child).expect("a child");
    let hira: String = c
        .given_name_kana
        .chars()
        .map(|ch| if ('\u{30A1}'..='\u{30F6}').contains(&ch) { char::from_u32(ch as u32 - 0x60).unwrap_or(ch) } else { ch })
        .collect();
    let found = r.find_by_kana_and_birth(&format!(" {} ", c.family_name_kana), &hira, c.birth_date);
    assert!(found.iter().any(|p| p.resident_id == c.resident_id));
    assert!(r.find_by_kana_and_birth(&c.family_name_kana, &c.given_name_kana, c.birth_date.succ_opt().expect("d")).iter().all(|p| p.resident_id != c.resident_id));
}

#[test]
fn households_with_children_are_applicable() {
    let on = NaiveDate::from_ymd_opt(2026, 4, 1).expect("date");
    let r = generate(&config(2, 300));
    let hs = r.households_with_children(on, 18);
    assert!(hs.len() > 200, "{}", hs.len());
    for h in &hs {
        assert!(kyufu_domain::program::age_on(h.guardian.birth_date, on).is_some_and(|a| a >= 18));
        for c in &h.children {
            assert_eq!(c.household_id, h.guardian.household_id);
            assert!(kyufu_domain::program::age_on(c.birth_date, on).is_some_and(|a| a < 18));
        }
    }
}

#[test]
fn large_registry_generates_and_loads() {
    let r = generate(&config(9, 100_000));
    let bytes = csv_bytes(&r);
    let loaded = Registry::load_csv(bytes.as_slice()).expect("load");
    assert_eq!(loaded.len(), r.len());
    assert!(r.len() > 250_000, "{}", r.len());
}
