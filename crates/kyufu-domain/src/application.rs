//! A per-child application: one guardian applies once per child, so one sibling's problem never
//! blocks the others. `ApplicationInput::parse` turns the JSON a client sent into a validated,
//! normalised `Application`, or into every field error at once.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ValidationErrors;
use crate::normalize::{digits_only, fold_width_and_space, is_kana_name, normalize_kana, parse_date};

/// Who receives the benefit: a child, or an expectant mother applying for herself (the `child`
/// object then describes her: the form sends her own details, or leaves `child` out and the parser
/// copies them from the guardian, and she states her expected delivery date instead of a child's
/// birth date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BeneficiaryKind {
    #[default]
    Child,
    ExpectantMother,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guardian {
    pub resident_id: Option<String>,
    pub family_name: String,
    pub given_name: String,
    pub family_name_kana: String,
    pub given_name_kana: String,
    pub birth_date: NaiveDate,
    pub email: String,
    pub phone: String,
    pub postal_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub resident_id: Option<String>,
    pub family_name: String,
    pub given_name: String,
    pub family_name_kana: String,
    pub given_name_kana: String,
    pub birth_date: NaiveDate,
}

/// A validated application. Names are width-folded, kana is katakana, digits are plain ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    #[serde(default)]
    pub kind: BeneficiaryKind,
    pub guardian: Guardian,
    pub child: Child,
    /// For an expectant mother: the expected delivery date (today at the earliest, at most
    /// `MAX_DELIVERY_DAYS` ahead). `None` for a child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_delivery_date: Option<NaiveDate>,
    pub consent: bool,
}

/// Why an application body was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("not valid JSON")]
    Json,
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Parser of the public JSON form of an application.
pub struct ApplicationInput;

const MAX_NAME_CHARS: usize = 50;
const MAX_EMAIL_CHARS: usize = 254;
/// Resident ids in the registry are eleven digits (the length of a 住民票コード).
pub const RESIDENT_ID_DIGITS: usize = 11;
/// How far ahead an expected delivery date may lie (a pregnancy is about 280 days, plus margin).
pub const MAX_DELIVERY_DAYS: i64 = 300;

impl ApplicationInput {
    /// Parses and validates `body`. `today` bounds birth dates (none in the future).
    pub fn parse(body: &[u8], today: NaiveDate) -> Result<Application, InputError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| InputError::Json)?;
        let mut errs = ValidationErrors::default();
        let Some(root) = value.as_object() else {
            errs.push("$", "must_be_object");
            return Err(errs.into());
        };
        let kind = match root.get("kind") {
            None | Some(Value::Null) => BeneficiaryKind::Child,
            Some(Value::String(s)) if s == "child" => BeneficiaryKind::Child,
            Some(Value::String(s)) if s == "expectant_mother" => BeneficiaryKind::ExpectantMother,
            Some(_) => {
                errs.push("kind", "invalid_kind");
                BeneficiaryKind::Child
            }
        };
        let consent = match root.get("consent") {
            Some(Value::Bool(true)) => true,
            _ => {
                errs.push("consent", "consent_required");
                false
            }
        };
        let guardian = object(root, "guardian", &mut errs).map(|g| {
            let mut f = Fields { obj: g, prefix: "guardian", errs: &mut errs };
            (
                f.resident_id(),
                f.name("family_name"),
                f.name("given_name"),
                f.kana("family_name_kana"),
                f.kana("given_name_kana"),
                f.birth_date(today),
                f.email(),
                f.phone(),
                f.postal_code(),
            )
        });
        let expected_delivery_date = match kind {
            BeneficiaryKind::Child => None,
            BeneficiaryKind::ExpectantMother => delivery_date(root, today, &mut errs),
        };
        // An expectant mother applies for herself: without a `child` object, she is the guardian.
        let self_applied = kind == BeneficiaryKind::ExpectantMother && matches!(root.get("child"), None | Some(Value::Null));
        let child_obj = if self_applied { root.get("guardian").and_then(Value::as_object) } else { object(root, "child", &mut errs) };
        let child_prefix = if self_applied { "guardian" } else { "child" };
        let mut child_errs = ValidationErrors::default();
        let child = child_obj.map(|c| {
            // Her own fields were checked once as the guardian's: their errors are not repeated.
            let errs = if self_applied { &mut child_errs } else { &mut errs };
            let mut f = Fields { obj: c, prefix: child_prefix, errs };
            (
                f.resident_id(),
                f.name("family_name"),
                f.name("given_name"),
                f.kana("family_name_kana"),
                f.kana("given_name_kana"),
                f.birth_date(today),
            )
        });
        if !errs.is_empty() {
            return Err(errs.into());
        }
        let (Some(g), Some(c)) = (guardian, child) else {
            return Err(errs.into());
        };
        // Every field is Some here: a None always pushed an error above.
        let built = (|| {
            Some(Application {
                kind,
                guardian: Guardian {
                    resident_id: g.0,
                    family_name: g.1?,
                    given_name: g.2?,
                    family_name_kana: g.3?,
                    given_name_kana: g.4?,
                    birth_date: g.5?,
                    email: g.6?,
                    phone: g.7?,
                    postal_code: g.8?,
                },
                child: Child {
                    resident_id: c.0,
                    family_name: c.1?,
                    given_name: c.2?,
                    family_name_kana: c.3?,
                    given_name_kana: c.4?,
                    birth_date: c.5?,
                },
                expected_delivery_date,
                consent,
            })
        })();
        built.ok_or_else(|| {
            let mut e = ValidationErrors::default();
            e.push("$", "invalid");
            InputError::Invalid(e)
        })
    }
}

/// The expected delivery date of an expectant mother: required, today at the earliest.
fn delivery_date(root: &Map<String, Value>, today: NaiveDate, errs: &mut ValidationErrors) -> Option<NaiveDate> {
    const FIELD: &str = "expected_delivery_date";
    let Some(Value::String(s)) = root.get(FIELD) else {
        errs.push(FIELD, if matches!(root.get(FIELD), None | Some(Value::Null)) { "required" } else { "must_be_string" });
        return None;
    };
    match parse_date(&fold_width_and_space(s)) {
        Some(d) if d < today => errs.push(FIELD, "delivery_date_past"),
        Some(d) if (d - today).num_days() > MAX_DELIVERY_DAYS => errs.push(FIELD, "delivery_date_too_far"),
        Some(d) => return Some(d),
        None if fold_width_and_space(s).is_empty() => errs.push(FIELD, "required"),
        None => errs.push(FIELD, "invalid_date"),
    }
    None
}

fn object<'a>(root: &'a Map<String, Value>, key: &str, errs: &mut ValidationErrors) -> Option<&'a Map<String, Value>> {
    match root.get(key) {
        Some(Value::Object(o)) => Some(o),
        None | Some(Value::Null) => {
            errs.push(key, "required");
            None
        }
        Some(_) => {
            errs.push(key, "must_be_object");
            None
        }
    }
}

struct Fields<'a, 'e> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    errs: &'e mut ValidationErrors,
}

impl Fields<'_, '_> {
    fn path(&self, key: &str) -> String {
        format!("{}.{}", self.prefix, key)
    }

    /// A non-empty string field; pushes `required` or `must_be_string`.
    fn string(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            Some(Value::String(s)) if !fold_width_and_space(s).is_empty() => Some(fold_width_and_space(s)),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                self.errs.push(self.path(key), "required");
                None
            }
            Some(_) => {
                self.errs.push(self.path(key), "must_be_string");
                None
            }
        }
    }

    fn name(&mut self, key: &str) -> Option<String> {
        let s = self.string(key)?;
        if s.chars().count() > MAX_NAME_CHARS {
            self.errs.push(self.path(key), "too_long");
            return None;
        }
        if s.chars().any(|c| c.is_control() || c.is_ascii_digit() || "<>{}[]\\@#$%^*=+|~\"".contains(c)) {
            self.errs.push(self.path(key), "invalid_characters");
            return None;
        }
        Some(s)
    }

    fn kana(&mut self, key: &str) -> Option<String> {
        let s = self.string(key)?;
        let kana = normalize_kana(&s);
        if kana.chars().count() > MAX_NAME_CHARS {
            self.errs.push(self.path(key), "too_long");
            return None;
        }
        if !is_kana_name(&kana) {
            self.errs.push(self.path(key), "must_be_kana");
            return None;
        }
        Some(kana)
    }

    fn birth_date(&mut self, today: NaiveDate) -> Option<NaiveDate> {
        let s = self.string("birth_date")?;
        match parse_date(&s) {
            Some(d) if d > today => {
                self.errs.push(self.path("birth_date"), "in_future");
                None
            }
            Some(d) if d < NaiveDate::from_ymd_opt(1900, 1, 1)? => {
                self.errs.push(self.path("birth_date"), "invalid_date");
                None
            }
            Some(d) => Some(d),
            None => {
                self.errs.push(self.path("birth_date"), "invalid_date");
                None
            }
        }
    }

    fn resident_id(&mut self) -> Option<String> {
        match self.obj.get("resident_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if fold_width_and_space(s).is_empty() => None,
            Some(Value::String(s)) => match digits_only(s) {
                Some(d) if d.len() == RESIDENT_ID_DIGITS => Some(d),
                _ => {
                    self.errs.push(self.path("resident_id"), "invalid_resident_id");
                    None
                }
            },
            Some(_) => {
                self.errs.push(self.path("resident_id"), "must_be_string");
                None
            }
        }
    }

    fn email(&mut self) -> Option<String> {
        let s = self.string("email")?;
        let valid = s.chars().count() <= MAX_EMAIL_CHARS
            && !s.contains(' ')
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            })
            && s.is_ascii();
        if valid {
            Some(s)
        } else {
            self.errs.push(self.path("email"), "invalid_email");
            None
        }
    }

    fn phone(&mut self) -> Option<String> {
        let s = self.string("phone")?;
        match digits_only(&s) {
            Some(d) if (10..=11).contains(&d.len()) && d.starts_with('0') => Some(d),
            _ => {
                self.errs.push(self.path("phone"), "invalid_phone");
                None
            }
        }
    }

    fn postal_code(&mut self) -> Option<String> {
        let s = self.string("postal_code")?;
        let s = s.trim_start_matches('〒').to_owned();
        match digits_only(&s) {
            Some(d) if d.len() == 7 => Some(d),
            _ => {
                self.errs.push(self.path("postal_code"), "invalid_postal_code");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 22).expect("date")
    }

    fn valid() -> Value {
        json!({
            "guardian": {
                "resident_id": "12345678901",
                "family_name": "山田", "given_name": "花子",
                "family_name_kana": "やまだ", "given_name_kana": "ﾊﾅｺ",
                "birth_date": "1990/05/06", "email": "hanako@example.jp",
                "phone": "０９０－１２３４－５６７８", "postal_code": "〒930-0001"
            },
            "child": {
                "family_name": "山田", "given_name": "太郎",
                "family_name_kana": "ヤマダ", "given_name_kana": "タロウ",
                "birth_date": "2018-04-01"
            },
            "consent": true
        })
    }

    fn parse(v: &Value) -> Result<Application, InputError> {
        ApplicationInput::parse(v.to_string().as_bytes(), today())
    }

    fn field_codes(v: &Value) -> Vec<(String, &'static str)> {
        match parse(v) {
            Err(InputError::Invalid(e)) => e.errors.into_iter().map(|f| (f.field, f.code)).collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn valid_application_is_normalised() {
        let app = parse(&valid()).expect("valid");
        assert_eq!(app.guardian.family_name_kana, "ヤマダ");
        assert_eq!(app.guardian.given_name_kana, "ハナコ");
        assert_eq!(app.guardian.phone, "09012345678");
        assert_eq!(app.guardian.postal_code, "9300001");
        assert_eq!(app.guardian.birth_date, NaiveDate::from_ymd_opt(1990, 5, 6).expect("date"));
        assert_eq!(app.child.resident_id, None);
        assert_eq!(app.kind, BeneficiaryKind::Child);
    }

    #[test]
    fn malformed_json_is_json_error() {
        assert!(matches!(ApplicationInput::parse(b"{not json", today()), Err(InputError::Json)));
        assert!(matches!(ApplicationInput::parse(b"", today()), Err(InputError::Json)));
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut v = valid();
        v["consent"] = json!(false);
        v["guardian"]["email"] = json!("not-an-email");
        v["guardian"]["postal_code"] = json!("12");
        v["child"]["given_name_kana"] = json!("Taro");
        v["child"]["birth_date"] = json!("2030-01-01");
        v["child"]["family_name"] = json!(42);
        let codes = field_codes(&v);
        for expected in [
            ("consent", "consent_required"),
            ("guardian.email", "invalid_email"),
            ("guardian.postal_code", "invalid_postal_code"),
            ("child.given_name_kana", "must_be_kana"),
            ("child.birth_date", "in_future"),
            ("child.family_name", "must_be_string"),
        ] {
            assert!(codes.contains(&(expected.0.to_owned(), expected.1)), "{expected:?} missing in {codes:?}");
        }
        assert_eq!(codes.len(), 6);
    }

    #[test]
    fn missing_objects_and_fields() {
        let codes = field_codes(&json!({"consent": true}));
        assert!(codes.contains(&("guardian".to_owned(), "required")));
        assert!(codes.contains(&("child".to_owned(), "required")));
        let mut v = valid();
        v["guardian"]["given_name"] = json!("   ");
        assert_eq!(field_codes(&v), vec![("guardian.given_name".to_owned(), "required")]);
        assert_eq!(field_codes(&json!([1, 2])), vec![("$".to_owned(), "must_be_object")]);
    }

    #[test]
    fn resident_id_must_be_eleven_digits() {
        let mut v = valid();
        v["child"]["resident_id"] = json!("１２３４５６７８９０１");
        assert_eq!(parse(&v).expect("valid").child.resident_id.as_deref(), Some("12345678901"));
        v["child"]["resident_id"] = json!("123");
        assert_eq!(field_codes(&v), vec![("child.resident_id".to_owned(), "invalid_resident_id")]);
    }

    #[test]
    fn expectant_mother_states_a_delivery_date_and_applies_for_herself() {
        let mut v = valid();
        v["kind"] = json!("expectant_mother");
        v["child"] = Value::Null;
        v["expected_delivery_date"] = json!("2027-03-01");
        let app = parse(&v).expect("valid");
        assert_eq!(app.kind, BeneficiaryKind::ExpectantMother);
        assert_eq!(app.expected_delivery_date, NaiveDate::from_ymd_opt(2027, 3, 1));
        assert_eq!(app.child.given_name_kana, "ハナコ", "she is the beneficiary");
        assert_eq!(app.child.birth_date, app.guardian.birth_date);

        v["expected_delivery_date"] = json!("2026-11-21");
        assert_eq!(field_codes(&v), vec![("expected_delivery_date".to_owned(), "delivery_date_past")]);
        v["expected_delivery_date"] = json!("2027-12-01");
        assert_eq!(field_codes(&v), vec![("expected_delivery_date".to_owned(), "delivery_date_too_far")]);
        v["expected_delivery_date"] = json!("soon");
        assert_eq!(field_codes(&v), vec![("expected_delivery_date".to_owned(), "invalid_date")]);
        v.as_object_mut().expect("object").remove("expected_delivery_date");
        assert_eq!(field_codes(&v), vec![("expected_delivery_date".to_owned(), "required")]);

        // Her own errors are reported once, at the guardian's fields.
        v["expected_delivery_date"] = json!("2026-11-22");
        v["guardian"]["given_name_kana"] = json!("Hanako");
        assert_eq!(field_codes(&v), vec![("guardian.given_name_kana".to_owned(), "must_be_kana")]);

        // A child's application ignores the date; a child's future birth date is still refused.
        let mut c = valid();
        c["expected_delivery_date"] = json!("2027-01-01");
        assert_eq!(parse(&c).expect("valid").expected_delivery_date, None);
        let json = serde_json::to_string(&parse(&c).expect("valid")).expect("json");
        assert!(!json.contains("expected_delivery_date"), "old readers see the event unchanged");
    }

    #[test]
    fn hostile_strings_do_not_panic() {
        for s in ["\u{0}", "<script>", "\u{FFFF}", &"あ".repeat(10_000), "🙂"] {
            let mut v = valid();
            v["child"]["given_name"] = json!(s);
            v["child"]["given_name_kana"] = json!(s);
            v["child"]["birth_date"] = json!(s);
            let _ = parse(&v);
        }
    }
}
