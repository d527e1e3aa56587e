//! A realistic day of applications with a known, labelled share of defects, made from the
//! synthetic registry: what the triage is measured against. Every application is for a different
//! child except the deliberate duplicates, so each label has one right outcome:
//! correct → approved (then `coupon_issued`), duplicate → `duplicate`, any defect → `needs_review`.

use chrono::NaiveDate;
use kyufu_domain::application::{Application, BeneficiaryKind, Child, Guardian};
use kyufu_registry::{Registry, Relationship, Resident};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What an application really is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Correct,
    Duplicate,
    /// One kana character of the child's name mistyped.
    ChildKanaTypo,
    /// Day and month of the child's birth date swapped.
    SwappedBirthDate,
    /// The guardian's birth date off by a day.
    GuardianBirthTypo,
    /// A child of another household.
    WrongChild,
    /// A child who is not in the registry at all.
    NotInRegistry,
    /// A child at or past the age limit.
    OverAge,
    /// No readable identity document.
    MissingDocument,
}

impl Label {
    pub const ALL: [Label; 9] = [
        Label::Correct,
        Label::Duplicate,
        Label::ChildKanaTypo,
        Label::SwappedBirthDate,
        Label::GuardianBirthTypo,
        Label::WrongChild,
        Label::NotInRegistry,
        Label::OverAge,
        Label::MissingDocument,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Correct => "correct",
            Label::Duplicate => "duplicate",
            Label::ChildKanaTypo => "child_kana_typo",
            Label::SwappedBirthDate => "swapped_birth_date",
            Label::GuardianBirthTypo => "guardian_birth_typo",
            Label::WrongChild => "wrong_child",
            Label::NotInRegistry => "not_in_registry",
            Label::OverAge => "over_age",
            Label::MissingDocument => "missing_document",
        }
    }

    pub fn is_defect(self) -> bool {
        !matches!(self, Label::Correct | Label::Duplicate)
    }
}

#[derive(Debug, Clone)]
pub struct LabelledApplication {
    pub application: Application,
    pub label: Label,
    /// Whether a readable document is uploaded with it.
    pub document: bool,
}

/// Shares of each label (the rest is correct).
#[derive(Debug, Clone)]
pub struct DayMix {
    pub duplicate: f64,
    pub defect_each: f64,
}

impl Default for DayMix {
    /// 5 % duplicates and 2 % of each of the seven defects: 19 % not plainly correct.
    fn default() -> Self {
        DayMix { duplicate: 0.05, defect_each: 0.02 }
    }
}

/// A correct application by guardian `g` for child `c`, exactly as the registry has them.
pub fn application_for(g: &Resident, c: &Resident) -> Application {
    Application {
        kind: BeneficiaryKind::Child,
        expected_delivery_date: None,
        guardian: Guardian {
            resident_id: None,
            family_name: g.family_name.clone(),
            given_name: g.given_name.clone(),
            family_name_kana: g.family_name_kana.clone(),
            given_name_kana: g.given_name_kana.clone(),
            birth_date: g.birth_date,
            email: "guardian@example.jp".to_owned(),
            phone: "09012345678".to_owned(),
            postal_code: g.postal_code.clone(),
        },
        child: Child {
            resident_id: None,
            family_name: c.family_name.clone(),
            given_name: c.given_name.clone(),
            family_name_kana: c.family_name_kana.clone(),
            given_name_kana: c.given_name_kana.clone(),
            birth_date: c.birth_date,
        },
        consent: true,
    }
}

const TYPO_KANA: [char; 8] = ['ア', 'カ', 'サ', 'タ', 'ナ', 'ハ', 'マ', 'ラ'];

/// `n` applications judged on `reference`, deterministic for `seed`.
pub fn generate_day(registry: &Registry, reference: NaiveDate, age_limit: u32, n: usize, seed: u64, mix: &DayMix) -> Vec<LabelledApplication> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Each (guardian, child) pair is used once, so labels never collide on one child.
    let mut pairs: Vec<(&Resident, &Resident)> = registry
        .households_with_children(reference, age_limit)
        .into_iter()
        .flat_map(|h| h.children.into_iter().map(move |c| (h.guardian, c)))
        .collect();
    pairs.shuffle(&mut rng);
    let over_age: Vec<(&Resident, &Resident)> = registry
        .iter()
        .filter(|r| r.relationship == Relationship::Child)
        .filter(|r| kyufu_domain::program::age_on(r.birth_date, reference).is_some_and(|a| a >= age_limit))
        .filter_map(|c| registry.household(&c.household_id).iter().find(|g| matches!(g.relationship, Relationship::Head | Relationship::Spouse)).map(|g| (g, c)))
        .collect();
    let mut out: Vec<LabelledApplication> = Vec::with_capacity(n);
    let mut next_pair = pairs.into_iter();
    let mut over_age = over_age.into_iter();
    let mut correct_so_far: Vec<usize> = Vec::new();
    while out.len() < n {
        let roll: f64 = rng.gen();
        let label = if roll < mix.duplicate && !correct_so_far.is_empty() {
            Label::Duplicate
        } else {
            let r = (roll - mix.duplicate) / mix.defect_each;
            match r as i64 {
                0 => Label::ChildKanaTypo,
                1 => Label::SwappedBirthDate,
                2 => Label::GuardianBirthTypo,
                3 => Label::WrongChild,
                4 => Label::NotInRegistry,
                5 => Label::OverAge,
                6 => Label::MissingDocument,
                _ => Label::Correct,
            }
        };
        let labelled = match label {
            Label::Duplicate => {
                let i = correct_so_far[rng.gen_range(0..correct_so_far.len())];
                LabelledApplication { label, ..out[i].clone() }
            }
            Label::OverAge => match over_age.next() {
                Some((g, c)) => LabelledApplication { application: application_for(g, c), label, document: true },
                None => continue,
            },
            Label::WrongChild => {
                let (Some((g, _)), Some((_, other))) = (next_pair.next(), next_pair.next()) else { break };
                LabelledApplication { application: application_for(g, other), label, document: true }
            }
            _ => {
                let Some((g, c)) = next_pair.next() else { break };
                let mut app = application_for(g, c);
                match label {
                    Label::ChildKanaTypo => {
                        let mut chars: Vec<char> = app.child.given_name_kana.chars().collect();
                        let i = rng.gen_range(0..chars.len());
                        let replacement = TYPO_KANA.iter().copied().find(|k| *k != chars[i]).unwrap_or('ア');
                        chars[i] = replacement;
                        app.child.given_name_kana = chars.into_iter().collect();
                    }
                    Label::SwappedBirthDate => {
                        use chrono::Datelike;
                        let d = app.child.birth_date;
                        match NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()).filter(|s| *s != d) {
                            Some(s) => app.child.birth_date = s,
                            None => continue, // this child's date cannot be swapped; draw again
                        }
                    }
                    Label::GuardianBirthTypo => {
                        app.guardian.birth_date = app.guardian.birth_date.succ_opt().unwrap_or(app.guardian.birth_date);
                    }
                    Label::NotInRegistry => {
                        app.child.given_name = "架空".to_owned();
                        app.child.given_name_kana = "カクウノコ".to_owned();
                    }
                    _ => {}
                }
                LabelledApplication { application: app, label, document: label != Label::MissingDocument }
            }
        };
        if labelled.label == Label::Correct {
            correct_so_far.push(out.len());
        }
        out.push(labelled);
    }
    out
}

/// Outcomes of a run: counts per (label, final status).
#[derive(Debug, Default, Clone)]
pub struct Confusion {
    pub cells: std::collections::BTreeMap<(Label, kyufu_domain::Status), u64>,
    pub unsettled: u64,
    pub seconds: f64,
}

impl Confusion {
    fn count(&self, f: impl Fn(Label, kyufu_domain::Status) -> bool) -> u64 {
        self.cells.iter().filter(|((l, s), _)| f(*l, *s)).map(|(_, n)| n).sum()
    }

    /// Share of correct applications decided without a person (approved and issued).
    pub fn correct_auto_approved(&self) -> f64 {
        use kyufu_domain::Status::*;
        ratio(self.count(|l, s| l == Label::Correct && matches!(s, Approved | CouponIssued)), self.count(|l, _| l == Label::Correct))
    }

    /// Share of injected defects that reached a person (needs review).
    pub fn defects_to_review(&self) -> f64 {
        ratio(self.count(|l, s| l.is_defect() && s == kyufu_domain::Status::NeedsReview), self.count(|l, _| l.is_defect()))
    }

    /// Share of deliberate duplicates marked duplicate.
    pub fn duplicates_caught(&self) -> f64 {
        ratio(self.count(|l, s| l == Label::Duplicate && s == kyufu_domain::Status::Duplicate), self.count(|l, _| l == Label::Duplicate))
    }

    /// The matrix as a text table.
    pub fn table(&self) -> String {
        use kyufu_domain::Status;
        let cols = [Status::CouponIssued, Status::Approved, Status::Duplicate, Status::NeedsReview, Status::Received, Status::Rejected];
        let mut out = format!("{:<22}", "label \\ outcome");
        for c in cols {
            out.push_str(&format!("{:>15}", c.as_str()));
        }
        out.push_str(&format!("{:>10}\n", "total"));
        for l in Label::ALL {
            let total = self.count(|x, _| x == l);
            if total == 0 {
                continue;
            }
            out.push_str(&format!("{:<22}", l.as_str()));
            for c in cols {
                out.push_str(&format!("{:>15}", self.cells.get(&(l, c)).copied().unwrap_or(0)));
            }
            out.push_str(&format!("{total:>10}\n"));
        }
        out
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Feeds `apps` into the pipeline the way intake does (document, `received` record, event) and
/// waits until every one has settled or `within` passes. The stages must already be running on
/// `deps`.
pub async fn evaluate(
    deps: &crate::PipelineDeps,
    identity: &kyufu_domain::identity::IdentitySecret,
    apps: &[LabelledApplication],
    within: std::time::Duration,
) -> Result<Confusion, kyufu_ports::AdapterError> {
    use kyufu_ports::events::{topics, ApplicationEvent, DocumentRef};
    use kyufu_ports::{ApplicationRecord, Document};
    let started = std::time::Instant::now();
    let jpeg = sample_jpeg();
    let sha = "0".repeat(64);
    let mut ids = Vec::with_capacity(apps.len());
    for a in apps {
        let id = uuid::Uuid::new_v4();
        let key = format!("{}/{id}/document", deps.program.id);
        if a.document {
            let doc = Document { content_type: "image/jpeg".into(), sha256: sha.clone(), bytes: jpeg.clone() };
            deps.documents.put(&key, &doc).await?;
        }
        deps.status.create(&ApplicationRecord::received(id, &deps.program.id, chrono::Utc::now()), None).await?;
        let ev = ApplicationEvent {
            v: ApplicationEvent::VERSION,
            application_id: id,
            program_id: deps.program.id.clone(),
            identity_key: kyufu_domain::identity::child_identity_key(identity, &deps.program.id, &a.application),
            received_at: chrono::Utc::now(),
            application: a.application.clone(),
            document: DocumentRef { key, content_type: "image/jpeg".into(), size: jpeg.len() as u64, sha256: sha.clone() },
        };
        deps.bus.publish(topics::RECEIVED, ev.identity_key.as_bytes(), &ev.to_json()).await?;
        ids.push((id, a.label));
    }
    let deadline = std::time::Instant::now() + within;
    loop {
        let counts = deps.status.count_by_status().await?;
        let pending: u64 = counts
            .iter()
            .filter(|(s, _)| matches!(s, kyufu_domain::Status::Received | kyufu_domain::Status::Approved))
            .map(|(_, n)| n)
            .sum();
        if pending == 0 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut confusion = Confusion::default();
    for (id, label) in ids {
        match deps.status.get(id).await? {
            Some(r) => *confusion.cells.entry((label, r.status)).or_default() += 1,
            None => confusion.unsettled += 1,
        }
    }
    confusion.unsettled += confusion.count(|_, s| matches!(s, kyufu_domain::Status::Received));
    confusion.seconds = started.elapsed().as_secs_f64();
    Ok(confusion)
}

/// A small real JPEG (a 32×24 gradient) that decodes: the identity document of synthetic
/// applications.
pub fn sample_jpeg() -> bytes::Bytes {
    let img = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 7) as u8, (y * 9) as u8, 120]));
    let mut out = std::io::Cursor::new(Vec::new());
    // Encoding a small RGB buffer into memory cannot fail; an empty document would be found
    // missing by ID-check, loudly.
    let _ = img.write_to(&mut out, image::ImageFormat::Jpeg);
    bytes::Bytes::from(out.into_inner())
}
