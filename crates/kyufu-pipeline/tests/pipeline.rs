//! The stages on the embedded bus and store, driven by publishing application events the
//! way intake does: decisions, duplicates, replays, poison messages.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use kyufu_domain::application::Application;
use kyufu_domain::identity::{child_identity_key, IdentitySecret};
use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_embedded::EmbeddedStore;
use kyufu_pipeline::notify::{Notification, Notifier, NotifyError};
use kyufu_pipeline::{PipelineDeps, StageKind, StageMetrics};
use kyufu_ports::events::{topics, ApplicationEvent, DeadLetter, DocumentRef};
use kyufu_ports::{ApplicationRecord, Document, Transition};
use kyufu_registry::{generate, GeneratorConfig, Registry, Relationship, Resident};
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

/// Collects emails; while `down` is set it behaves like an unreachable mail server.
#[derive(Default)]
struct Outbox(Mutex<Vec<Notification>>, std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl Notifier for Outbox {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NotifyError::Unavailable("mail server down".into()));
        }
        self.0.lock().await.push(n.clone());
        Ok(())
    }
}

struct World {
    deps: PipelineDeps,
    outbox: Arc<Outbox>,
    registry: Arc<Registry>,
    program: Program,
    secret: IdentitySecret,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn reference() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 4, 1).expect("date")
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let registry = Arc::new(generate(&GeneratorConfig { seed: 11, households: 400, reference_date: reference(), ..GeneratorConfig::default() }));
    let program = Program::demo(reference());
    let outbox = Arc::new(Outbox::default());
    let deps = PipelineDeps {
        bus: store.bus(),
        status: store.status_store(),
        documents: store.document_store(),
        units: store.units(),
        registry: registry.clone(),
        identity_secret: IdentitySecret::new(b"test identity secret".to_vec()),
        program: program.clone(),
        notifier: outbox.clone(),
        mail_links: kyufu_pipeline::notify::MailLinks {
            tokens: kyufu_domain::token::StatusTokens::new(b"status secret for tests, long enough".to_vec()),
            public_url: "https://kyufu.example.jp".into(),
        },
        metrics: StageMetrics::new(&kyufu_telemetry::new_registry()),
    };
    let (stop, rx) = watch::channel(false);
    for kind in StageKind::ALL {
        kyufu_pipeline::spawn_stage(kind, &deps, rx.clone());
    }
    World { deps, outbox, registry, program, secret: IdentitySecret::new(b"test identity secret".to_vec()), stop, _dir: dir }
}

fn app_for(guardian: &Resident, child: &Resident) -> Application {
    kyufu_pipeline::synthetic::application_for(guardian, child)
}

impl World {
    /// Does what intake does: document, record, event.
    async fn submit(&self, app: Application) -> Uuid {
        self.submit_document(app, kyufu_pipeline::synthetic::sample_jpeg()).await
    }

    /// Like `submit`, with the given JPEG as the document.
    async fn submit_document(&self, app: Application, jpeg: bytes::Bytes) -> Uuid {
        let id = Uuid::new_v4();
        let doc = Document { content_type: "image/jpeg".into(), sha256: "a".repeat(64), bytes: jpeg };
        let key = format!("{}/{id}/document", self.program.id);
        self.deps.documents.put(&key, &doc).await.expect("doc");
        self.deps.status.create(&ApplicationRecord::received(id, &self.program.id, Utc::now()), None).await.expect("create");
        let ev = ApplicationEvent {
            v: 1,
            application_id: id,
            program_id: self.program.id.clone(),
            identity_key: child_identity_key(&self.secret, &self.program.id, &app),
            received_at: Utc::now(),
            application: app,
            document: DocumentRef { key, content_type: doc.content_type.clone(), size: doc.bytes.len() as u64, sha256: doc.sha256.clone() },
        };
        self.deps.bus.publish(topics::RECEIVED, ev.identity_key.as_bytes(), &ev.to_json()).await.expect("publish");
        id
    }

    async fn settled(&self, id: Uuid) -> ApplicationRecord {
        for _ in 0..300 {
            let rec = self.deps.status.get(id).await.expect("get").expect("record");
            if rec.status.is_settled() {
                return rec;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{id} did not settle");
    }

    fn families(&self) -> Vec<(Resident, Vec<Resident>)> {
        self.registry
            .households_with_children(reference(), 18)
            .into_iter()
            .map(|h| (h.guardian.clone(), h.children.into_iter().cloned().collect()))
            .collect()
    }
}

impl World {
    /// The emails sent about `id`, once there are at least `n` (or after a few seconds).
    async fn mails_of(&self, id: uuid::Uuid, n: usize) -> Vec<Notification> {
        let mut mails = Vec::new();
        for _ in 0..200 {
            mails = self.outbox.0.lock().await.iter().filter(|m| m.application_id == id).cloned().collect();
            if mails.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        mails
    }

    fn deps_links(&self) -> &kyufu_pipeline::notify::MailLinks {
        &self.deps.mail_links
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_child_gets_one_coupon_and_an_email() {
    let w = world().await;
    let (g, kids) = &w.families()[0];
    let id = w.submit(app_for(g, &kids[0])).await;
    let rec = w.settled(id).await;
    assert_eq!(rec.status, Status::CouponIssued, "{rec:?}");
    let code = rec.coupon_code.clone().expect("code");
    assert_eq!(kyufu_pipeline::coupon_code::normalize(&code).as_deref(), Some(code.as_str()));
    let statuses: Vec<Status> = rec.history.iter().map(|h| h.status).collect();
    assert_eq!(statuses, vec![Status::Received, Status::Approved, Status::CouponIssued]);
    // The emails are the notify stage's job, a moment later: the receipt, then the coupon.
    let mails = w.mails_of(id, 2).await;
    let kinds: Vec<&str> = mails.iter().map(|m| m.kind).collect();
    assert!(kinds.contains(&"receipt") && kinds.contains(&"coupon_issued"), "{kinds:?}");
    let coupon = mails.iter().find(|m| m.kind == "coupon_issued").expect("coupon email");
    for part in [&coupon.text, &coupon.html] {
        assert!(part.contains(&code) && part.contains("クーポン") && part.contains("Coupon code"), "{part}");
    }
    assert_eq!(coupon.to, "guardian@example.jp");
    // Every email carries the short reference, the code and the link, the same in each.
    let reference = kyufu_ports::reference::assign(&*w.deps.status, &w.program.id, id).await.expect("reference");
    let code = w.deps_links().tokens.issue_code(id);
    for m in &mails {
        assert!(m.text.contains(&reference.display()) && m.text.contains(&code), "{}", m.text);
        assert!(m.text.contains(&format!("https://kyufu.example.jp/status#id={id}&token=")), "{}", m.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_child_twice_is_duplicate_but_twins_and_siblings_are_not() {
    let w = world().await;
    let fams = w.families();
    let (g, kids) = fams.iter().find(|(_, k)| k.len() >= 2).expect("siblings");
    let first = w.submit(app_for(g, &kids[0])).await;
    assert_eq!(w.settled(first).await.status, Status::CouponIssued);
    let again = w.submit(app_for(g, &kids[0])).await;
    let sibling = w.submit(app_for(g, &kids[1])).await;
    let dup = w.settled(again).await;
    assert_eq!(dup.status, Status::Duplicate);
    assert_eq!(dup.duplicate_of, Some(first));
    // The duplicate is told plainly, by email too.
    let told = w.mails_of(again, 2).await;
    let dup_mail = told.iter().find(|m| m.kind == "duplicate").expect("a duplicate email");
    assert!(dup_mail.text.contains(Status::Duplicate.label().0), "{}", dup_mail.text);
    assert_eq!(dup.reasons, vec![ReasonCode::DuplicateApplication]);
    assert_eq!(w.settled(sibling).await.status, Status::CouponIssued);

    // Twins: same birth date, different names: two coupons.
    let twins = fams.iter().find(|(_, k)| k.iter().enumerate().any(|(i, a)| k[i + 1..].iter().any(|b| b.birth_date == a.birth_date)));
    let (tg, tk) = twins.expect("the registry has twins");
    let pair: Vec<&Resident> = tk.iter().filter(|c| tk.iter().filter(|d| d.birth_date == c.birth_date).count() == 2).take(2).collect();
    let a = w.submit(app_for(tg, pair[0])).await;
    let b = w.submit(app_for(tg, pair[1])).await;
    assert_eq!(w.settled(a).await.status, Status::CouponIssued);
    assert_eq!(w.settled(b).await.status, Status::CouponIssued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_cousins_are_told_apart_by_household() {
    let w = world().await;
    let cousins: Vec<&Resident> = w
        .registry
        .iter()
        .filter(|c| c.relationship == Relationship::Child)
        .find_map(|c| {
            let same = w.registry.find_by_kana_and_birth(&c.family_name_kana, &c.given_name_kana, c.birth_date);
            (same.len() == 2 && same[0].household_id != same[1].household_id).then_some(same)
        })
        .expect("same-name cousins");
    let mut ids = Vec::new();
    for c in &cousins {
        let guardian = w
            .registry
            .household(&c.household_id)
            .iter()
            .find(|r| matches!(r.relationship, Relationship::Head | Relationship::Spouse))
            .expect("guardian")
            .clone();
        ids.push(w.submit(app_for(&guardian, c)).await);
    }
    for id in ids {
        let rec = w.settled(id).await;
        // Different postal codes make these different children: neither is a duplicate.
        assert_ne!(rec.status, Status::Duplicate, "{rec:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubtful_applications_go_to_review_with_every_reason() {
    let w = world().await;
    let fams = w.families();
    let (g, kids) = &fams[1];

    let mut unknown = app_for(g, &kids[0]);
    unknown.child.given_name_kana = "ダレデモナイ".into();
    let (g8, kids8) = &fams[8];
    let mut wrong_guardian_birth = app_for(g8, &kids8[0]);
    wrong_guardian_birth.guardian.resident_id = Some(g8.resident_id.clone());
    wrong_guardian_birth.guardian.birth_date = g8.birth_date.succ_opt().expect("date");
    let over_age = w
        .registry
        .iter()
        .find(|r| r.relationship == Relationship::Child && kyufu_domain::program::age_on(r.birth_date, reference()).is_some_and(|a| a >= 18))
        .expect("over-age child")
        .clone();
    let og = w.registry.household(&over_age.household_id).iter().find(|r| r.relationship != Relationship::Child).expect("g").clone();
    // Each case is a different child: the same child twice would be an exact duplicate.
    let (other_g, _) = &fams[5];
    let not_household = app_for(other_g, &fams[7].1[0]);

    let cases = [
        (unknown, vec![ReasonCode::ChildNotInRegistry]),
        (wrong_guardian_birth, vec![ReasonCode::GuardianBirthDateMismatch]),
        (app_for(&og, &over_age), vec![ReasonCode::ChildOverAgeLimit]),
        (not_household, vec![ReasonCode::NotSameHousehold]),
    ];
    for (app, want) in cases {
        let id = w.submit(app).await;
        let rec = w.settled(id).await;
        assert_eq!(rec.status, Status::NeedsReview, "{rec:?}");
        for r in &want {
            assert!(rec.reasons.contains(r), "want {r:?} in {:?}", rec.reasons);
        }
        assert!(rec.coupon_code.is_none());
        // The citizen is told a person is checking, by email.
        let told = w.mails_of(id, 2).await;
        let review = told.iter().find(|m| m.kind == "needs_review").expect("a review email");
        assert!(review.text.contains(Status::NeedsReview.label().0), "{}", review.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_approval_flows_to_a_coupon_and_a_rejection_frees_the_child() {
    let w = world().await;
    let (g, kids) = &w.families()[2];
    let mut app = app_for(g, &kids[0]);
    app.guardian.given_name_kana = "タイプミス".into(); // a typo in the guardian's name: same child
    let id = w.submit(app.clone()).await;
    let rec = w.settled(id).await;
    assert_eq!(rec.status, Status::NeedsReview);

    // While the first is open, the same child again is a duplicate.
    let again = w.submit(app_for(g, &kids[0])).await;
    assert_eq!(w.settled(again).await.status, Status::Duplicate);

    // A reviewer rejects the first; the corrected application for the same child then goes through.
    let mut reject = Transition::new(&[Status::NeedsReview], Status::Rejected, "reviewer:test");
    reject.reasons = vec![ReasonCode::RejectedByReviewer];
    w.deps.status.transition(id, &reject).await.expect("reject");
    // The console then hands the event to notify through `applications.settled`: a rejection email.
    let rejected_ev = ApplicationEvent {
        v: 1,
        application_id: id,
        program_id: w.program.id.clone(),
        identity_key: child_identity_key(&w.secret, &w.program.id, &app),
        received_at: Utc::now(),
        application: app,
        document: DocumentRef { key: "x".into(), content_type: "image/jpeg".into(), size: 1, sha256: "a".repeat(64) },
    };
    w.deps.bus.publish(topics::SETTLED, rejected_ev.identity_key.as_bytes(), &rejected_ev.to_json()).await.expect("publish");
    let told = w.mails_of(id, 3).await;
    let kinds: Vec<&str> = told.iter().map(|m| m.kind).collect();
    assert!(["receipt", "needs_review", "rejected"].iter().all(|k| kinds.contains(k)), "{kinds:?}");
    let rejection = told.iter().find(|m| m.kind == "rejected").expect("rejection email");
    assert!(!rejection.text.contains(Status::NeedsReview.label().0), "a rejection never says a person is still checking");
    let corrected = w.submit(app_for(g, &kids[0])).await;
    assert_eq!(w.settled(corrected).await.status, Status::CouponIssued);

    // Reviewer approval: move to approved and publish to the coupon topic, as the console does.
    let (g2, kids2) = &w.families()[3];
    let mut app2 = app_for(g2, &kids2[0]);
    app2.guardian.given_name_kana = "マチガイ".into();
    let id2 = w.submit(app2.clone()).await;
    assert_eq!(w.settled(id2).await.status, Status::NeedsReview);
    w.deps.status.transition(id2, &Transition::new(&[Status::NeedsReview], Status::Approved, "reviewer:test")).await.expect("approve");
    let ev = ApplicationEvent {
        v: 1,
        application_id: id2,
        program_id: w.program.id.clone(),
        identity_key: child_identity_key(&w.secret, &w.program.id, &app2),
        received_at: Utc::now(),
        application: app2,
        document: DocumentRef { key: "x".into(), content_type: "image/jpeg".into(), size: 1, sha256: "a".repeat(64) },
    };
    w.deps.bus.publish(topics::APPROVED, ev.identity_key.as_bytes(), &ev.to_json()).await.expect("publish");
    assert_eq!(w.settled(id2).await.status, Status::CouponIssued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_messages_change_nothing() {
    let w = world().await;
    let (g, kids) = &w.families()[4];
    let id = w.submit(app_for(g, &kids[0])).await;
    let rec = w.settled(id).await;
    let code = rec.coupon_code.clone().expect("coupon");
    // Replay the event into every stage's topic.
    let mut c = w.deps.bus.subscribe("replayer", &[topics::RECEIVED]).await.expect("sub");
    let m = c.poll(Duration::from_secs(2)).await.expect("poll").expect("original message");
    for topic in [topics::RECEIVED, topics::UNIQUE, topics::APPROVED, topics::ISSUED] {
        w.deps.bus.publish(topic, &m.key, &m.payload).await.expect("replay");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let kinds: Vec<&str> = w.outbox.0.lock().await.iter().map(|m| m.kind).collect();
    assert_eq!(kinds.len(), 2, "one email of each kind, however often the message comes: {kinds:?}");
    let after = w.deps.status.get(id).await.expect("get").expect("rec");
    assert_eq!(after.status, Status::CouponIssued);
    assert_eq!(after.coupon_code.as_deref(), Some(code.as_str()), "same code after replays");
    assert_eq!(after.history.len(), rec.history.len(), "no new transitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_sent_to_review() {
    let w = world().await;
    let mut dlq = w.deps.bus.subscribe("dlq-reader", &[topics::DEAD_LETTER]).await.expect("sub");
    // Undecodable payload.
    w.deps.bus.publish(topics::RECEIVED, b"junk", b"{not json").await.expect("publish");
    // Both consumers of the topic give up on it: dedupe, and notify (which sends receipts).
    let mut stages = Vec::new();
    for _ in 0..2 {
        let m = dlq.poll(Duration::from_secs(5)).await.expect("poll").expect("dead letter");
        let letter: DeadLetter = serde_json::from_slice(&m.payload).expect("dead letter json");
        assert!(letter.error.contains("undecodable"), "{}", letter.error);
        assert_eq!(letter.payload, b"{not json");
        stages.push(letter.stage);
    }
    stages.sort();
    assert_eq!(stages, ["dedupe", "notify"]);

    // A decodable event whose record is missing: dead-lettered with its id.
    let (g, kids) = &w.families()[0];
    let app = app_for(g, &kids[0]);
    let ev = ApplicationEvent {
        v: 1,
        application_id: Uuid::new_v4(),
        program_id: w.program.id.clone(),
        identity_key: "k".into(),
        received_at: Utc::now(),
        application: app,
        document: DocumentRef { key: "x".into(), content_type: "image/jpeg".into(), size: 1, sha256: "a".repeat(64) },
    };
    w.deps.bus.publish(topics::UNIQUE, b"k", &ev.to_json()).await.expect("publish");
    let m = dlq.poll(Duration::from_secs(5)).await.expect("poll").expect("dead letter");
    let letter: DeadLetter = serde_json::from_slice(&m.payload).expect("json");
    assert_eq!((letter.stage.as_str(), letter.application_id), ("documents", Some(ev.application_id)));

    // A document that is missing sends the application to review (not the dead-letter topic).
    let (g, kids) = &w.families()[6];
    let id = Uuid::new_v4();
    w.deps.status.create(&ApplicationRecord::received(id, &w.program.id, Utc::now()), None).await.expect("create");
    let ev = ApplicationEvent { application_id: id, identity_key: "k2".into(), application: app_for(g, &kids[0]), ..ev };
    w.deps.bus.publish(topics::RECEIVED, b"k2", &ev.to_json()).await.expect("publish");
    let rec = w.settled(id).await;
    assert_eq!(rec.status, Status::NeedsReview);
    assert_eq!(rec.reasons, vec![ReasonCode::DocumentMissing]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_duplicates_go_to_review_not_to_rejection() {
    let w = world().await;
    let fams = w.families();
    // One kana character off: the correct application first, then the typo.
    let (g, kids) = &fams[0];
    let first = w.submit(app_for(g, &kids[0])).await;
    assert_eq!(w.settled(first).await.status, Status::CouponIssued);
    let mut typo = app_for(g, &kids[0]);
    let mut given: Vec<char> = typo.child.given_name_kana.chars().collect();
    let last = given.len() - 1;
    given[last] = if given[last] == 'ア' { 'イ' } else { 'ア' };
    typo.child.given_name_kana = given.into_iter().collect();
    let second = w.submit(typo).await;
    let rec = w.settled(second).await;
    assert_eq!(rec.status, Status::NeedsReview, "{rec:?}");
    assert_eq!(rec.reasons, vec![ReasonCode::PossibleDuplicate]);
    assert_eq!(rec.duplicate_of, Some(first), "points the reviewer at the first");

    // Day and month swapped, the typo first this time.
    let (g2, kids2) = fams
        .iter()
        .skip(1)
        .find(|(_, k)| {
            use chrono::Datelike;
            let d = k[0].birth_date;
            d.day() <= 12 && d.day() != d.month()
        })
        .expect("a child whose birth date can be swapped");
    let mut swapped = app_for(g2, &kids2[0]);
    {
        use chrono::Datelike;
        let d = swapped.child.birth_date;
        swapped.child.birth_date = NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()).expect("valid swap");
    }
    let typo_first = w.submit(swapped).await;
    assert_eq!(w.settled(typo_first).await.status, Status::NeedsReview, "the swapped date matches no resident");
    let correct = w.submit(app_for(g2, &kids2[0])).await;
    let rec = w.settled(correct).await;
    assert_eq!(rec.status, Status::NeedsReview, "a resolved application near an unresolved one is held too: {rec:?}");
    assert_eq!(rec.reasons, vec![ReasonCode::PossibleDuplicate]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_meets_its_targets_on_a_labelled_day() {
    use kyufu_pipeline::synthetic::{evaluate, generate_day, DayMix, Label};
    let w = world().await;
    let apps = generate_day(&w.registry, reference(), 18, 400, 3, &DayMix { duplicate: 0.05, defect_each: 0.03 });
    assert_eq!(apps.len(), 400);
    for l in Label::ALL {
        assert!(apps.iter().any(|a| a.label == l), "no {l:?} in the day");
    }
    let c = evaluate(&w.deps, &w.secret, &apps, Duration::from_secs(60)).await.expect("evaluate");
    println!("{}", c.table());
    assert_eq!(c.unsettled, 0);
    assert!(c.correct_auto_approved() >= 0.90, "correct approved automatically: {}", c.correct_auto_approved());
    assert!((c.defects_to_review() - 1.0).abs() < f64::EPSILON, "every defect to review: {}\n{}", c.defects_to_review(), c.table());
    assert!((c.duplicates_caught() - 1.0).abs() < f64::EPSILON, "{}", c.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_outage_never_holds_back_issuance() {
    let w = world().await;
    w.outbox.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let fams = w.families();
    let mut ids = Vec::new();
    for (g, kids) in fams.iter().take(3) {
        ids.push(w.submit(app_for(g, &kids[0])).await);
    }
    for id in &ids {
        assert_eq!(w.settled(*id).await.status, Status::CouponIssued, "issued while mail is down");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.outbox.0.lock().await.is_empty());
    w.outbox.1.store(false, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..300 {
        if w.outbox.0.lock().await.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = w.outbox.0.lock().await.clone();
    assert_eq!(mails.len(), 6, "each receipt and coupon email exactly once after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendition_keeps_no_metadata_and_an_undecodable_photo_goes_to_review() {
    use kyufu_domain::imagefile::metadata_kinds;
    use loadtest::photos::{camera_jpeg, looks_upright};
    let w = world().await;
    let fams = w.families();
    // A phone photo as it was taken (orientation 6, GPS in EXIF and XMP), even unstripped.
    let photo = camera_jpeg(2400, 1800, 6, 5);
    assert!(metadata_kinds(&photo).contains(&"gps") && metadata_kinds(&photo).contains(&"xmp"));
    let (g, kids) = &fams[0];
    let id = w.submit_document(app_for(g, &kids[0]), photo.into()).await;
    assert_eq!(w.settled(id).await.status, Status::CouponIssued);
    let stored = w.deps.documents.get(&kyufu_ports::events::rendition_key(&w.program.id, id)).await.expect("get").expect("a rendition");
    assert_eq!(stored.content_type, "image/jpeg");
    assert_eq!(metadata_kinds(&stored.bytes), Vec::<&str>::new(), "no EXIF, XMP or GPS in what reviewers see");
    for needle in [&b"Kyufu Phone"[..], b"GPSLatitude", b"Exif\0\0"] {
        assert!(!stored.bytes.windows(needle.len()).any(|w| w == needle), "{} anywhere in the file", String::from_utf8_lossy(needle));
    }
    let img = image::load_from_memory(&stored.bytes).expect("decodes").to_rgb8();
    assert_eq!(img.dimensions(), (2000, 1500));
    assert!(looks_upright(&img));

    // Well-formed segment by segment, but its Huffman table cannot be read: review, never lost.
    let mut broken = camera_jpeg(64, 48, 1, 6);
    let dht = broken.windows(2).position(|w| w == [0xFF, 0xC4]).expect("DHT");
    broken[dht + 5..dht + 21].fill(0xFF);
    let (g, kids) = &fams[1];
    let id = w.submit_document(app_for(g, &kids[0]), broken.into()).await;
    let rec = w.settled(id).await;
    assert_eq!(rec.status, Status::NeedsReview, "{rec:?}");
    assert_eq!(rec.reasons, vec![ReasonCode::DocumentUnreadable]);
    assert!(w.deps.documents.get(&kyufu_ports::events::rendition_key(&w.program.id, id)).await.expect("get").is_none());
}
