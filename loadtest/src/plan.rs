//! The replay plan: who arrives when, and what each visitor will send, decided up front from the
//! target's resident registry and a seed, so every outcome is known before the first request.
//!
//! A visitor is a household: one guardian, one waiting-room visit, one admission pass, and one
//! application per eligible child. A correct application for a registry child must end in
//! `coupon_issued`; the same child sent a second time must end in `duplicate` pointing at the
//! first; an application whose child kana is not in the registry must end in `needs_review`.
//! Some visitors abandon the queue, some retry a submission with the same `Idempotency-Key`, some
//! send a bad request that must be refused with a 4xx and a JSON `code`.

use chrono::{Datelike, NaiveDate};
use kyufu_registry::{Registry, Resident};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::profile::Curve;

/// The settled status an application must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    CouponIssued,
    Duplicate,
    NeedsReview,
}

impl Expected {
    pub fn as_str(self) -> &'static str {
        match self {
            Expected::CouponIssued => "coupon_issued",
            Expected::Duplicate => "duplicate",
            Expected::NeedsReview => "needs_review",
        }
    }
}

/// Why an application was planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// Everything as in the registry.
    Correct,
    /// The child's kana is not in the registry.
    Wrong,
    /// The same child a second time (a separate submission, its own idempotency key).
    SecondForChild,
}

/// How an idempotent retry is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// Again after the first answer (the phone did not see it).
    AfterAnswer,
    /// Twice at once (a double tap).
    Concurrent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Jpeg,
    Png,
    Pdf,
}

impl DocumentKind {
    pub fn mime(self) -> &'static str {
        match self {
            DocumentKind::Jpeg => "image/jpeg",
            DocumentKind::Png => "image/png",
            DocumentKind::Pdf => "application/pdf",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            DocumentKind::Jpeg => "id.jpg",
            DocumentKind::Png => "id.png",
            DocumentKind::Pdf => "id.pdf",
        }
    }

    /// A small real document of this kind (intake decodes images completely and reads PDFs for
    /// active content); `salt` varies the content so two uploads differ, and the same salt gives
    /// the same bytes (a retry sends the same body).
    pub fn bytes(self, salt: u64) -> Vec<u8> {
        if let Some(set) = crate::photos::camera_documents() {
            // `--documents camera`: photos as phones take them and PDFs as tools write them.
            let pick = |v: &Vec<Vec<u8>>| v[(salt % v.len() as u64) as usize].clone();
            match self {
                DocumentKind::Jpeg => return pick(&set.photos),
                DocumentKind::Pdf => return pick(&set.pdfs),
                DocumentKind::Png => {}
            }
        }
        let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut noise = || {
            // xorshift: cheap bytes that do not compress to nothing.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        };
        let format = match self {
            DocumentKind::Jpeg => image::ImageFormat::Jpeg,
            DocumentKind::Png => image::ImageFormat::Png,
            DocumentKind::Pdf => {
                // The noise sits in a stream body, where the active-content check does not look.
                let mut body = Vec::with_capacity(3 * 1024);
                while body.len() < 3 * 1024 {
                    body.extend_from_slice(&noise());
                }
                let mut v = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /XObject /Subtype /Image /Filter /DCTDecode /Length ".to_vec();
                v.extend_from_slice(format!("{} >>\nstream\n", body.len()).as_bytes());
                v.extend_from_slice(&body);
                v.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< /Size 2 >>\n%%EOF\n");
                return v;
            }
        };
        let mut pixels = Vec::with_capacity(32 * 32 * 3);
        while pixels.len() < 32 * 32 * 3 {
            pixels.extend_from_slice(&noise()[..3]);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        // A 32×32 RGB buffer of the right length always encodes; an empty document would be
        // refused by intake loudly, never silently.
        if let Some(img) = image::RgbImage::from_raw(32, 32, pixels) {
            let _ = img.write_to(&mut out, format);
        }
        out.into_inner()
    }
}

/// One application a visitor will submit.
#[derive(Debug, Clone)]
pub struct PlannedApplication {
    pub kind: AppKind,
    pub expected: Expected,
    /// The `application` part, as JSON text.
    pub json: String,
    pub document: DocumentKind,
    /// Varies the document bytes; the same salt gives the same bytes (a retry sends the same body).
    pub document_salt: u64,
    /// The registry resident id of the child it is for (a synthetic id, never sent when omitted).
    pub child: String,
    pub household: String,
    pub idempotency_key: String,
    pub retry: Option<RetryMode>,
    /// For `SecondForChild`: index (within the visitor) of the application it repeats.
    pub repeats: Option<usize>,
}

/// A request that must be refused, with the answer it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadInput {
    MalformedJson,
    MissingDocument,
    UnsupportedDocument,
    InvalidApplication,
    BadIdempotencyKey,
    ForgedPass,
}

impl BadInput {
    pub const ALL: [BadInput; 6] = [
        BadInput::MalformedJson,
        BadInput::MissingDocument,
        BadInput::UnsupportedDocument,
        BadInput::InvalidApplication,
        BadInput::BadIdempotencyKey,
        BadInput::ForgedPass,
    ];

    /// HTTP status and error `code` the contract promises.
    pub fn expected(self) -> (u16, &'static str) {
        match self {
            BadInput::MalformedJson => (400, "invalid_json"),
            BadInput::MissingDocument => (400, "missing_document"),
            BadInput::UnsupportedDocument => (415, "unsupported_document_type"),
            BadInput::InvalidApplication => (422, "invalid_application"),
            BadInput::BadIdempotencyKey => (400, "idempotency_key_invalid"),
            BadInput::ForgedPass => (403, "admission_invalid"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BadInput::MalformedJson => "malformed_json",
            BadInput::MissingDocument => "missing_document",
            BadInput::UnsupportedDocument => "unsupported_document",
            BadInput::InvalidApplication => "invalid_application",
            BadInput::BadIdempotencyKey => "bad_idempotency_key",
            BadInput::ForgedPass => "forged_pass",
        }
    }
}

/// One visitor of the waiting room.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub id: usize,
    /// Profile seconds since launch.
    pub arrival: f64,
    /// Leaves the queue after this many polls (and never applies).
    pub abandon_after_polls: Option<u32>,
    pub applications: Vec<PlannedApplication>,
    /// Sent once admitted, before the real applications, with a valid application as body.
    pub bad_input: Option<BadInput>,
}

/// How the crowd behaves, as shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Visitors who join and leave without applying (extra visitors on top of the appliers).
    pub abandon: f64,
    /// Applications sent twice with the same `Idempotency-Key`.
    pub retry: f64,
    /// Visitors who also send one bad request.
    pub bad_input: f64,
    /// Correct applications whose child is applied for a second time.
    pub duplicate: f64,
    /// Applications with a child kana not in the registry.
    pub wrong: f64,
    /// Correct applications that leave out resident ids (matched by kana and birth date) when the
    /// registry makes that unambiguous.
    pub omit_resident_id: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { abandon: 0.03, retry: 0.05, bad_input: 0.03, duplicate: 0.02, wrong: 0.03, omit_resident_id: 0.5 }
    }
}

impl Mix {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("abandon", self.abandon),
            ("retry", self.retry),
            ("bad-input", self.bad_input),
            ("duplicate", self.duplicate),
            ("wrong", self.wrong),
            ("omit-resident-id", self.omit_resident_id),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("--{name} must be a share between 0 and 1, got {v}"));
            }
        }
        if self.abandon >= 0.9 {
            return Err("--abandon must be below 0.9".into());
        }
        Ok(())
    }
}

/// The whole replay, decided.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Sorted by arrival.
    pub visitors: Vec<Visitor>,
    pub applications: u64,
}

impl Plan {
    pub fn count(&self, kind: AppKind) -> usize {
        self.visitors.iter().flat_map(|v| &v.applications).filter(|a| a.kind == kind).count()
    }
    pub fn retries(&self) -> usize {
        self.visitors.iter().flat_map(|v| &v.applications).filter(|a| a.retry.is_some()).count()
    }
    pub fn abandoners(&self) -> usize {
        self.visitors.iter().filter(|v| v.abandon_after_polls.is_some()).count()
    }
    pub fn bad_inputs(&self) -> usize {
        self.visitors.iter().filter(|v| v.bad_input.is_some()).count()
    }
}

/// Katakana to hiragana (applicants type either; the system must treat them alike).
fn hiragana(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// A kana name that no registry holds: a fixed stem plus the number spelt in katakana.
fn unknown_kana(n: usize) -> String {
    const DIGITS: [char; 10] = ['ア', 'カ', 'サ', 'タ', 'ナ', 'ハ', 'マ', 'ヤ', 'ラ', 'ワ'];
    let mut s = String::from("ミトウロク");
    for d in n.to_string().chars() {
        s.push(d.to_digit(10).map_or('ン', |d| DIGITS[d as usize]));
    }
    s
}

fn date_text(d: NaiveDate, slashes: bool) -> String {
    if slashes {
        format!("{}/{}/{}", d.year(), d.month(), d.day())
    } else {
        d.to_string()
    }
}

fn unique_in_registry(registry: &Registry, r: &Resident) -> bool {
    registry.find_by_kana_and_birth(&r.family_name_kana, &r.given_name_kana, r.birth_date).len() == 1
}

struct Builder<'a> {
    registry: &'a Registry,
    mix: Mix,
    rng: ChaCha8Rng,
    /// Differs on every build, so a second run against the same system never replays the first
    /// run's submissions through their idempotency keys (it would get the old ids back and test
    /// nothing).
    run_nonce: u64,
    next_key: u64,
}

impl Builder<'_> {
    fn idempotency_key(&mut self) -> String {
        self.next_key += 1;
        format!("lt-{:016x}-{:08x}", self.run_nonce, self.next_key)
    }

    fn document(&mut self) -> (DocumentKind, u64) {
        let kind = match self.rng.gen_range(0..10) {
            0..=5 => DocumentKind::Jpeg,
            6..=7 => DocumentKind::Png,
            _ => DocumentKind::Pdf,
        };
        (kind, self.rng.gen())
    }

    fn person(&mut self, r: &Resident, with_id: bool, kana_style_hiragana: bool, slashes: bool) -> Value {
        let kana = |s: &str| if kana_style_hiragana { hiragana(s) } else { s.to_owned() };
        let mut p = json!({
            "family_name": r.family_name,
            "given_name": r.given_name,
            "family_name_kana": kana(&r.family_name_kana),
            "given_name_kana": kana(&r.given_name_kana),
            "birth_date": date_text(r.birth_date, slashes),
        });
        if with_id {
            p["resident_id"] = json!(r.resident_id);
        }
        p
    }

    fn application(&mut self, visitor: usize, guardian: &Resident, child: &Resident, wrong: Option<usize>) -> (String, Value) {
        let omit = self.rng.gen_bool(self.mix.omit_resident_id);
        let hira = self.rng.gen_bool(0.2);
        let slashes = self.rng.gen_bool(0.2);
        let guardian_id = !(omit && unique_in_registry(self.registry, guardian));
        let mut g = self.person(guardian, guardian_id, hira, slashes);
        g["email"] = json!(format!("guardian{visitor}@example.jp"));
        g["phone"] = json!(format!("090-{:04}-{:04}", self.rng.gen_range(0..10_000), self.rng.gen_range(0..10_000)));
        g["postal_code"] = json!(guardian.postal_code);
        let c = match wrong {
            None => {
                let child_id = !(omit && unique_in_registry(self.registry, child));
                self.person(child, child_id, hira, slashes)
            }
            Some(n) => {
                // Not in the registry: no resident id, a kana name nobody has.
                let mut c = self.person(child, false, false, false);
                c["given_name_kana"] = json!(unknown_kana(n));
                c
            }
        };
        let app = json!({ "kind": "child", "guardian": g, "child": c, "consent": true });
        (app.to_string(), app)
    }
}

/// Decides the replay: `total` applications (correct, wrong and second-for-the-same-child) from
/// the registry's households eligible on `reference_date`, arriving along `curve`, plus abandoning
/// visitors. Fails when the registry has too few eligible children for `total`.
pub fn build(
    registry: &Registry,
    reference_date: NaiveDate,
    age_limit: u32,
    total: u64,
    curve: &Curve,
    mix: Mix,
    seed: u64,
) -> Result<Plan, String> {
    mix.validate()?;
    let mut households = registry.households_with_children(reference_date, age_limit);
    let mut b = Builder { registry, mix, rng: ChaCha8Rng::seed_from_u64(seed), run_nonce: rand::random(), next_key: 0 };
    households.shuffle(&mut b.rng);

    let mut visitors: Vec<Visitor> = Vec::new();
    let mut remaining = total;
    let mut wrong_serial = 0;
    for h in &households {
        if remaining == 0 {
            break;
        }
        let id = visitors.len();
        let mut apps: Vec<PlannedApplication> = Vec::new();
        for child in &h.children {
            if remaining == 0 {
                break;
            }
            let wrong = b.rng.gen_bool(mix.wrong);
            let (json, _) = if wrong {
                wrong_serial += 1;
                b.application(id, h.guardian, child, Some(wrong_serial))
            } else {
                b.application(id, h.guardian, child, None)
            };
            let (document, document_salt) = b.document();
            let retry = b.rng.gen_bool(mix.retry).then(|| if b.rng.gen_bool(0.5) { RetryMode::AfterAnswer } else { RetryMode::Concurrent });
            let first = PlannedApplication {
                kind: if wrong { AppKind::Wrong } else { AppKind::Correct },
                expected: if wrong { Expected::NeedsReview } else { Expected::CouponIssued },
                json,
                document,
                document_salt,
                child: child.resident_id.clone(),
                household: h.guardian.household_id.clone(),
                idempotency_key: b.idempotency_key(),
                retry,
                repeats: None,
            };
            remaining -= 1;
            let repeat = !wrong && remaining > 0 && b.rng.gen_bool(mix.duplicate);
            let index = apps.len();
            apps.push(first.clone());
            if repeat {
                let (document, document_salt) = b.document();
                apps.push(PlannedApplication {
                    kind: AppKind::SecondForChild,
                    expected: Expected::Duplicate,
                    document,
                    document_salt,
                    idempotency_key: b.idempotency_key(),
                    retry: None,
                    repeats: Some(index),
                    ..first
                });
                remaining -= 1;
            }
        }
        let bad_input = b.rng.gen_bool(mix.bad_input).then(|| BadInput::ALL[b.rng.gen_range(0..BadInput::ALL.len())]);
        visitors.push(Visitor { id, arrival: 0.0, abandon_after_polls: None, applications: apps, bad_input });
    }
    if remaining > 0 {
        let eligible: usize = households.iter().map(|h| h.children.len()).sum();
        return Err(format!(
            "the registry has {eligible} eligible children in {} households, too few for {total} applications; \
             use a larger registry (kyufu all-in-one --households N) or fewer --applications",
            households.len()
        ));
    }

    // Arrival: each household comes when its first application is due on the curve.
    let slots = curve.arrival_times(total);
    let mut slot = 0;
    for v in &mut visitors {
        v.arrival = slots.get(slot).copied().unwrap_or(0.0);
        slot += v.applications.len();
    }
    // Abandoners are extra visitors spread along the same curve.
    let appliers = visitors.len();
    let abandoners = ((appliers as f64) * mix.abandon / (1.0 - mix.abandon)).round() as u64;
    for t in curve.arrival_times(abandoners) {
        let polls = b.rng.gen_range(0..=3);
        visitors.push(Visitor { id: visitors.len(), arrival: t, abandon_after_polls: Some(polls), applications: Vec::new(), bad_input: None });
    }
    visitors.sort_by(|a, b| a.arrival.total_cmp(&b.arrival).then(a.id.cmp(&b.id)));
    Ok(Plan { visitors, applications: total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn registry() -> (Registry, NaiveDate) {
        let date = NaiveDate::from_ymd_opt(2026, 4, 1).expect("date");
        let r = kyufu_registry::generate(&kyufu_registry::GeneratorConfig { seed: 3, households: 400, reference_date: date, ..Default::default() });
        (r, date)
    }

    #[test]
    fn plan_has_exactly_the_total_and_predictable_outcomes() {
        let (reg, date) = registry();
        let mix = Mix { duplicate: 0.2, wrong: 0.1, retry: 0.2, abandon: 0.1, bad_input: 0.2, omit_resident_id: 0.5 };
        let plan = build(&reg, date, 18, 300, &Curve::steady(600.0).expect("curve"), mix, 7).expect("plan");
        let apps: Vec<&PlannedApplication> = plan.visitors.iter().flat_map(|v| &v.applications).collect();
        assert_eq!(apps.len(), 300);
        assert!(plan.count(AppKind::SecondForChild) > 10 && plan.count(AppKind::Wrong) > 5, "{:?}", (plan.count(AppKind::SecondForChild), plan.count(AppKind::Wrong)));
        assert!(plan.abandoners() > 0 && plan.retries() > 0 && plan.bad_inputs() > 0);
        assert!(plan.visitors.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        // Each child has at most one correct-or-wrong application; repeats only for correct ones.
        let mut per_child: HashMap<&str, Vec<&PlannedApplication>> = HashMap::new();
        for a in &apps {
            per_child.entry(a.child.as_str()).or_default().push(a);
        }
        for list in per_child.values() {
            let firsts = list.iter().filter(|a| a.kind != AppKind::SecondForChild).count();
            assert_eq!(firsts, 1);
            if list.len() == 2 {
                assert_eq!((list[0].kind, list[1].kind), (AppKind::Correct, AppKind::SecondForChild));
                assert_eq!(list[0].json, list[1].json, "a repeat is the same application");
                assert_ne!(list[0].idempotency_key, list[1].idempotency_key);
            }
        }
        // A wrong application's child kana matches nobody in the registry, and it carries no id.
        for a in apps.iter().filter(|a| a.kind == AppKind::Wrong) {
            let v: Value = serde_json::from_str(&a.json).expect("json");
            assert!(v["child"].get("resident_id").is_none());
            let child = reg.by_id(&a.child).expect("registry child");
            let kana = v["child"]["given_name_kana"].as_str().expect("kana");
            assert!(reg.find_by_kana_and_birth(&child.family_name_kana, kana, child.birth_date).is_empty());
        }
        // Idempotency keys are unique and valid (8-128 of A-Za-z0-9_-).
        let mut keys: Vec<&str> = apps.iter().map(|a| a.idempotency_key.as_str()).collect();
        assert!(keys.iter().all(|k| (8..=128).contains(&k.len()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')));
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 300);
        // The same seed gives the same plan.
        let again = build(&reg, date, 18, 300, &Curve::steady(600.0).expect("curve"), mix, 7).expect("plan");
        assert_eq!(again.visitors.len(), plan.visitors.len());
        let first_app = |p: &Plan| p.visitors.iter().flat_map(|v| &v.applications).next().cloned().expect("an application");
        assert_eq!(first_app(&again).json, first_app(&plan).json);
        // ... but never the same idempotency keys: a rerun must not replay the first run's requests.
        assert_ne!(first_app(&again).idempotency_key, first_app(&plan).idempotency_key);
    }

    #[test]
    fn resident_ids_are_left_out_only_when_unambiguous() {
        let (reg, date) = registry();
        let mix = Mix { omit_resident_id: 1.0, wrong: 0.0, duplicate: 0.0, ..Mix::default() };
        let plan = build(&reg, date, 18, 500, &Curve::steady(60.0).expect("curve"), mix, 1).expect("plan");
        let mut omitted = 0;
        for a in plan.visitors.iter().flat_map(|v| &v.applications) {
            let v: Value = serde_json::from_str(&a.json).expect("json");
            let child = reg.by_id(&a.child).expect("child");
            if v["child"].get("resident_id").is_none() {
                omitted += 1;
                assert!(unique_in_registry(&reg, child));
            } else {
                assert_eq!(v["child"]["resident_id"], json!(child.resident_id));
            }
        }
        assert!(omitted > 400, "{omitted}");
    }

    #[test]
    fn too_small_a_registry_is_refused_with_advice() {
        let (reg, date) = registry();
        let err = build(&reg, date, 18, 1_000_000, &Curve::launch_day(), Mix::default(), 1).expect_err("too small");
        assert!(err.contains("too few for 1000000 applications") && err.contains("--households"), "{err}");
    }

    #[test]
    fn documents_start_with_their_magic_bytes() {
        assert!(DocumentKind::Jpeg.bytes(1).starts_with(&[0xFF, 0xD8, 0xFF]));
        // Real images that decode, different per salt and the same for the same salt.
        for kind in [DocumentKind::Jpeg, DocumentKind::Png] {
            let img = image::load_from_memory(&kind.bytes(7)).expect("decodes");
            assert_eq!((img.width(), img.height()), (32, 32));
            assert_ne!(kind.bytes(7), kind.bytes(8));
            assert_eq!(kind.bytes(7), kind.bytes(7));
        }
        assert_eq!(kyufu_domain::pdf::active_content(&DocumentKind::Pdf.bytes(7)), None);
        assert!(DocumentKind::Png.bytes(1).starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(DocumentKind::Pdf.bytes(1).starts_with(b"%PDF-"));
        assert_eq!(DocumentKind::Pdf.bytes(5), DocumentKind::Pdf.bytes(5));
        assert_ne!(DocumentKind::Pdf.bytes(5), DocumentKind::Pdf.bytes(6));
        assert_eq!(hiragana("サトウ ハナコ"), "さとう はなこ");
        assert_eq!(unknown_kana(109), "ミトウロクカアワ");
    }
}
