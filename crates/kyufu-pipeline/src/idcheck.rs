//! ID-check triage: match guardian and child against the resident registry and check the uploaded
//! document (stored, intact, and for an image decoded by the documents step into a rendition). Every failed check becomes a reason code; no reasons means `approved`, any reason
//! means `needs_review`. Nothing is rejected without a person.
//!
//! Safe to redo: the decision is a pure function of the event, the registry and the document; the
//! status move and its hand-over to coupon issuance are one unit of work (one commit on the
//! embedded store); an application already approved is forwarded again (with separate stores the
//! crash may have come between the move and the publish).

use std::sync::Arc;

use async_trait::async_trait;
use kyufu_domain::application::{BeneficiaryKind, Child, Guardian};
use kyufu_domain::document::sniff_content_type;
use kyufu_domain::normalize::kana_key;
use kyufu_domain::program::age_on;
use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_ports::events::{rendition_key, topics, ApplicationEvent};
use kyufu_ports::{DocumentStore, EventBus, Message, Publication, StatusStore, Transition, TransitionOutcome, UnitOfWork};
use kyufu_registry::{Registry, Resident};

use crate::matching::{find, Match};
use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "idcheck";

/// Age from which a guardian counts as an adult (Civil Code, since 2022).
const ADULT_AGE: u32 = 18;
/// How far the stated expected delivery date may lie from the registered one: due dates are
/// revised during a pregnancy, and a month's difference is normal.
const DELIVERY_DATE_TOLERANCE_DAYS: i64 = 31;

pub struct IdCheck {
    pub bus: Arc<dyn EventBus>,
    pub status: Arc<dyn StatusStore>,
    /// The move and the hand-over to coupon issuance as one unit.
    pub units: Arc<dyn UnitOfWork>,
    pub documents: Arc<dyn DocumentStore>,
    pub registry: Arc<Registry>,
    pub program: Program,
    pub output_topic: String,
    pub metrics: StageMetrics,
}

fn same_kana(r: &Resident, family: &str, given: &str) -> bool {
    kana_key(&r.family_name_kana) == kana_key(family) && kana_key(&r.given_name_kana) == kana_key(given)
}

/// The reasons an application needs a person; empty when it can be approved automatically.
pub fn decide(program: &Program, registry: &Registry, ev: &ApplicationEvent, document_ok: Result<(), ReasonCode>) -> Vec<ReasonCode> {
    let mut reasons = Vec::new();
    let app = &ev.application;
    let g: &Guardian = &app.guardian;
    let c: &Child = &app.child;
    let guardian = find(registry, g.resident_id.as_deref(), &g.family_name_kana, &g.given_name_kana, g.birth_date, &g.postal_code);
    let child = find(registry, c.resident_id.as_deref(), &c.family_name_kana, &c.given_name_kana, c.birth_date, &g.postal_code);

    match &guardian {
        Match::Found(r) => {
            if !same_kana(r, &g.family_name_kana, &g.given_name_kana) {
                reasons.push(ReasonCode::GuardianNameMismatch);
            }
            if r.birth_date != g.birth_date {
                reasons.push(ReasonCode::GuardianBirthDateMismatch);
            }
            if r.postal_code != g.postal_code {
                reasons.push(ReasonCode::PostalCodeMismatch);
            }
            if age_on(r.birth_date, program.reference_date).is_none_or(|a| a < ADULT_AGE) {
                reasons.push(ReasonCode::GuardianNotAdult);
            }
        }
        Match::NotFound => reasons.push(ReasonCode::GuardianNotInRegistry),
        Match::Ambiguous => reasons.push(ReasonCode::RegistryAmbiguous),
    }
    match &child {
        Match::Found(r) => {
            if !same_kana(r, &c.family_name_kana, &c.given_name_kana) {
                reasons.push(ReasonCode::ChildNameMismatch);
            }
            if r.birth_date != c.birth_date {
                reasons.push(ReasonCode::ChildBirthDateMismatch);
            }
            match app.kind {
                BeneficiaryKind::Child => {
                    if !program.child_within_age_limit(r.birth_date) {
                        reasons.push(ReasonCode::ChildOverAgeLimit);
                    }
                }
                BeneficiaryKind::ExpectantMother => match (r.expecting, app.expected_delivery_date) {
                    (None, _) => reasons.push(ReasonCode::NotExpectant),
                    (Some(due), Some(stated)) if (stated - due).num_days().abs() <= DELIVERY_DATE_TOLERANCE_DAYS => {}
                    (Some(_), _) => reasons.push(ReasonCode::DeliveryDateMismatch),
                },
            }
            if !program.postal_code_in_region(&r.postal_code) {
                reasons.push(ReasonCode::OutsideRegion);
            }
        }
        Match::NotFound => reasons.push(ReasonCode::ChildNotInRegistry),
        Match::Ambiguous => reasons.push(ReasonCode::RegistryAmbiguous),
    }
    if let (Match::Found(gr), Match::Found(cr)) = (&guardian, &child) {
        if gr.household_id != cr.household_id {
            reasons.push(ReasonCode::NotSameHousehold);
        }
    }
    if let Err(reason) = document_ok {
        reasons.push(reason);
    }
    reasons.sort();
    reasons.dedup();
    reasons
}

impl IdCheck {
    async fn check_document(&self, ev: &ApplicationEvent) -> Result<Result<(), ReasonCode>, StageError> {
        let Some(doc) = self.documents.get(&ev.document.key).await? else {
            return Ok(Err(ReasonCode::DocumentMissing));
        };
        let readable = !doc.bytes.is_empty()
            && doc.sha256 == ev.document.sha256
            && sniff_content_type(&doc.bytes) == Some(doc.content_type.as_str());
        // An image the documents step could not decode has no rendition (that step runs first).
        let rendered = !doc.content_type.starts_with("image/")
            || self.documents.get(&rendition_key(&ev.program_id, ev.application_id)).await?.is_some();
        Ok(if readable && rendered { Ok(()) } else { Err(ReasonCode::DocumentUnreadable) })
    }
}

#[async_trait]
impl Stage for IdCheck {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        match record.status {
            Status::Received => {}
            Status::Approved => {
                self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
                return Ok(Handled::Skipped);
            }
            // Moved by an earlier run whose publish to `applications.settled` may not have happened.
            Status::NeedsReview if record.history.last().is_some_and(|h| h.actor == NAME) => {
                self.bus.publish(topics::SETTLED, &raw.key, &raw.payload).await?;
                return Ok(Handled::Skipped);
            }
            _ => return Ok(Handled::Skipped),
        }
        let document_ok = self.check_document(ev).await?;
        let reasons = decide(&self.program, &self.registry, ev, document_ok);
        let to = if reasons.is_empty() { Status::Approved } else { Status::NeedsReview };
        let mut t = Transition::new(&[Status::Received], to, NAME);
        t.reasons = reasons.clone();
        // An approval is handed on in the same unit as the move; a review needs no message.
        let outcome = if to == Status::Approved {
            let then = Publication { topic: self.output_topic.clone(), key: raw.key.clone(), payload: raw.payload.clone() };
            self.units.transition_and_publish(ev.application_id, &t, &then).await?
        } else {
            self.status.transition(ev.application_id, &t).await?
        };
        // A review is told to the citizen (notify, through `applications.settled`), also on a redo;
        // notify's sent-record keeps it to one email.
        if to == Status::NeedsReview && matches!(outcome, TransitionOutcome::Applied(_) | TransitionOutcome::AlreadyIn(_)) {
            self.bus.publish(topics::SETTLED, &raw.key, &raw.payload).await?;
        }
        match outcome {
            TransitionOutcome::Applied(record) => {
                self.metrics.observe_final(&record);
                self.metrics.decisions.with_label_values(&[NAME, to.as_str()]).inc();
                for r in &reasons {
                    self.metrics.reasons.with_label_values(&[r.as_str()]).inc();
                }
            }
            // Approved meanwhile by a racing run, whose publish may not have happened yet.
            TransitionOutcome::AlreadyIn(_) if to == Status::Approved => {
                self.bus.publish(&self.output_topic, &raw.key, &raw.payload).await?;
            }
            TransitionOutcome::AlreadyIn(_) => {}
            TransitionOutcome::Refused(_) => return Ok(Handled::Skipped),
            TransitionOutcome::NotFound => return Err(StageError::Poison("no status record".into())),
        }
        Ok(Handled::Done(to.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use kyufu_domain::application::Application;
    use kyufu_ports::events::DocumentRef;
    use kyufu_registry::{Relationship, Sex};

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("date")
    }

    #[allow(clippy::too_many_arguments)]
    fn person(id: &str, hh: &str, kana: (&str, &str), birth: NaiveDate, sex: Sex, postal: &str, rel: Relationship, expecting: Option<NaiveDate>) -> Resident {
        Resident {
            resident_id: id.to_owned(),
            household_id: hh.to_owned(),
            family_name: "山田".to_owned(),
            given_name: "名".to_owned(),
            family_name_kana: kana.0.to_owned(),
            given_name_kana: kana.1.to_owned(),
            birth_date: birth,
            sex,
            postal_code: postal.to_owned(),
            relationship: rel,
            expecting,
        }
    }

    fn registry() -> Registry {
        use Relationship::*;
        use Sex::*;
        Registry::from_residents(vec![
            person("10000000001", "H1", ("ヤマダ", "ハナコ"), d(1990, 1, 1), F, "9300001", Head, None),
            person("10000000002", "H1", ("ヤマダ", "タロウ"), d(2020, 5, 5), M, "9300001", Child, None),
            person("10000000003", "H1", ("ヤマダ", "ジロウ"), d(2007, 1, 1), M, "9300001", Child, None),
            person("10000000004", "H2", ("サトウ", "ミキ"), d(2010, 3, 3), F, "9300002", Head, None),
            person("10000000005", "H2", ("サトウ", "ケン"), d(2025, 9, 9), M, "9300002", Child, None),
            person("10000000006", "H3", ("スズキ", "アイ"), d(1995, 2, 2), F, "9300003", Head, Some(d(2026, 8, 1))),
            person("10000000007", "H4", ("タナカ", "ユイ"), d(1993, 4, 4), F, "9300004", Head, None),
            person("10000000008", "H5", ("イトウ", "マリ"), d(1988, 6, 6), F, "1000001", Head, None),
            person("10000000009", "H5", ("イトウ", "ソラ"), d(2019, 7, 7), M, "1000001", Child, None),
            person("10000000010", "H6", ("コバヤシ", "エミ"), d(1985, 8, 8), F, "9300006", Head, None),
            person("10000000011", "H6", ("コバヤシ", "リク"), d(2018, 1, 2), M, "9300006", Child, None),
            person("10000000012", "H7", ("コバヤシ", "ナオ"), d(1984, 8, 8), F, "9300006", Head, None),
            person("10000000013", "H7", ("コバヤシ", "リク"), d(2018, 1, 2), M, "9300006", Child, None),
        ])
        .expect("registry")
    }

    fn app(g: &Resident, c: &Resident) -> Application {
        crate::synthetic::application_for(g, c)
    }

    fn event(application: Application) -> ApplicationEvent {
        ApplicationEvent {
            v: 1,
            application_id: uuid::Uuid::nil(),
            program_id: "p".into(),
            identity_key: "k".into(),
            received_at: chrono::Utc::now(),
            application,
            document: DocumentRef { key: "d".into(), content_type: "image/png".into(), size: 1, sha256: String::new() },
        }
    }

    fn reasons(r: &Registry, a: Application) -> Vec<ReasonCode> {
        decide(&Program::demo(d(2026, 4, 1)), r, &event(a), Ok(()))
    }

    #[test]
    fn each_check_has_its_reason() {
        use ReasonCode::*;
        let r = registry();
        let p = |id: &str| r.by_id(id).expect("resident").clone();
        let (hanako, taro, jiro) = (p("10000000001"), p("10000000002"), p("10000000003"));
        assert_eq!(reasons(&r, app(&hanako, &taro)), vec![], "a correct application passes every check");

        let mut a = app(&hanako, &taro);
        a.child.given_name_kana = "ハナオ".into();
        assert_eq!(reasons(&r, a), vec![ChildNotInRegistry]);
        let mut a = app(&hanako, &taro);
        a.child.resident_id = Some("10000000002".into());
        a.child.given_name_kana = "タロ".into();
        assert_eq!(reasons(&r, a), vec![ChildNameMismatch]);
        let mut a = app(&hanako, &taro);
        a.child.resident_id = Some("10000000002".into());
        a.child.birth_date = d(2020, 5, 6);
        assert_eq!(reasons(&r, a), vec![ChildBirthDateMismatch]);
        let mut a = app(&hanako, &taro);
        a.guardian.resident_id = Some("10000000001".into());
        a.guardian.given_name_kana = "ハナ".into();
        assert_eq!(reasons(&r, a), vec![GuardianNameMismatch]);
        let mut a = app(&hanako, &taro);
        a.guardian.resident_id = Some("10000000001".into());
        a.guardian.birth_date = d(1990, 1, 2);
        assert_eq!(reasons(&r, a), vec![GuardianBirthDateMismatch]);
        let mut a = app(&hanako, &taro);
        a.guardian.given_name_kana = "ダレカ".into();
        assert_eq!(reasons(&r, a), vec![GuardianNotInRegistry]);
        let mut a = app(&hanako, &taro);
        a.guardian.resident_id = Some("10000000001".into());
        a.guardian.postal_code = "9300009".into();
        assert_eq!(reasons(&r, a), vec![PostalCodeMismatch]);
        assert_eq!(reasons(&r, app(&hanako, &jiro)), vec![ChildOverAgeLimit], "19 on the reference date");
        assert_eq!(reasons(&r, app(&p("10000000004"), &p("10000000005"))), vec![GuardianNotAdult], "a 16-year-old parent");
        assert_eq!(reasons(&r, app(&hanako, &p("10000000005"))), vec![NotSameHousehold]);
        assert_eq!(reasons(&r, app(&p("10000000008"), &p("10000000009"))), vec![OutsideRegion]);

        // Expectant mothers apply for themselves.
        let expectant = |m: &Resident, due: NaiveDate| {
            let mut a = app(m, m);
            a.kind = BeneficiaryKind::ExpectantMother;
            a.expected_delivery_date = Some(due);
            a
        };
        let aoi = p("10000000006");
        assert_eq!(reasons(&r, expectant(&aoi, d(2026, 8, 1))), vec![], "registered due date");
        assert_eq!(reasons(&r, expectant(&aoi, d(2026, 8, 29))), vec![], "a revised due date");
        assert_eq!(reasons(&r, expectant(&aoi, d(2026, 10, 1))), vec![DeliveryDateMismatch]);
        let mut no_date = expectant(&aoi, d(2026, 8, 1));
        no_date.expected_delivery_date = None;
        assert_eq!(reasons(&r, no_date), vec![DeliveryDateMismatch], "an event without the date is never approved alone");
        let yui = p("10000000007");
        assert_eq!(reasons(&r, expectant(&yui, d(2026, 8, 1))), vec![NotExpectant]);

        // Same-name cousins at one address: nothing tells them apart without an id.
        let mut a = app(&p("10000000010"), &p("10000000011"));
        assert_eq!(reasons(&r, a.clone()), vec![RegistryAmbiguous]);
        a.child.resident_id = Some("10000000011".into());
        assert_eq!(reasons(&r, a), vec![], "the resident id settles it");

        // The document check adds its reason to the rest.
        let got = decide(&Program::demo(d(2026, 4, 1)), &r, &event(app(&hanako, &jiro)), Err(DocumentUnreadable));
        assert_eq!(got, vec![ChildOverAgeLimit, DocumentUnreadable]);
    }
}
