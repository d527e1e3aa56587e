//! Property tests of what applicants type: the parser and the normalisers never panic on any
//! input, normalising twice changes nothing, and every well-formed application parses.

use chrono::NaiveDate;
use kyufu_domain::application::{ApplicationInput, InputError};
use kyufu_domain::normalize::{digits_only, fold_width_and_space, kana_key, name_key, normalize_kana, parse_date};
use proptest::prelude::*;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 22).expect("date")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ApplicationInput::parse(&bytes, today());
    }

    #[test]
    fn parser_never_panics_on_json_shaped_input(
        keys in proptest::collection::vec("[a-z_]{0,12}", 0..8),
        values in proptest::collection::vec(any::<String>(), 0..8),
        consent in any::<bool>(),
    ) {
        let mut guardian = serde_json::Map::new();
        let mut child = serde_json::Map::new();
        for (k, v) in keys.iter().zip(values.iter()) {
            guardian.insert(k.clone(), serde_json::Value::String(v.clone()));
            child.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let body = serde_json::json!({"guardian": guardian, "child": child, "consent": consent}).to_string();
        match ApplicationInput::parse(body.as_bytes(), today()) {
            Ok(_) | Err(InputError::Invalid(_)) => {}
            Err(InputError::Json) => prop_assert!(false, "valid JSON reported as invalid JSON"),
        }
    }

    #[test]
    fn normalisers_never_panic_and_are_idempotent(s in any::<String>()) {
        let k = normalize_kana(&s);
        prop_assert_eq!(normalize_kana(&k), k.clone());
        prop_assert_eq!(kana_key(&k), kana_key(&s));
        let f = fold_width_and_space(&s);
        prop_assert_eq!(fold_width_and_space(&f), f.clone());
        let _ = name_key(&s);
        let _ = digits_only(&s);
        let _ = parse_date(&s);
    }

    #[test]
    fn well_formed_applications_parse(
        year in 1950i32..2025, month in 1u32..13, day in 1u32..29,
        kana in "[ァ-ヶ]{1,10}", email_local in "[a-z0-9]{1,12}",
        phone in "0[0-9]{9,10}", postal in "[0-9]{7}",
    ) {
        let birth = format!("{year:04}-{month:02}-{day:02}");
        let body = serde_json::json!({
            "guardian": {"family_name": "山田", "given_name": "花子", "family_name_kana": kana, "given_name_kana": kana,
                "birth_date": birth, "email": format!("{email_local}@example.jp"), "phone": phone, "postal_code": postal},
            "child": {"family_name": "山田", "given_name": "太郎", "family_name_kana": kana, "given_name_kana": kana,
                "birth_date": birth},
            "consent": true
        }).to_string();
        let parsed = ApplicationInput::parse(body.as_bytes(), today());
        prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
    }
}
