//! Intake on its own, on the embedded store: what is accepted is durable and on the bus, what is
//! refused leaves no record, and the outbox relay recovers an application whose publish failed.
//! Document checks: images must decode within the pixel cap, PDFs must carry no active content, and
//! a configured virus scanner (a fake, and a real clamd) refuses flagged files and fails closed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use kyufu_admission::{Keyring, PassClaims, Purpose};
use kyufu_domain::identity::IdentitySecret;
use kyufu_domain::{Program, Status};
use kyufu_embedded::EmbeddedStore;
use kyufu_intake::relay::{self, RelayConfig};
use kyufu_intake::scan::{Clamd, DocumentScanner, ScanError, Verdict};
use kyufu_intake::{IntakeConfig, IntakePorts, StatusTokens};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{
    AdapterError, ApplicationRecord, Claim, Consumer, CreateOutcome, Document, DocumentStore, EventBus, IdempotencyClaim,
    StatusStore, Transition, TransitionOutcome,
};
use serde_json::{json, Value};

/// A bus that can be switched off, to fail publishes after the commit point.
struct FlakyBus {
    inner: Arc<dyn EventBus>,
    down: AtomicBool,
    published: AtomicUsize,
}

#[async_trait]
impl EventBus for FlakyBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), AdapterError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AdapterError::Unavailable("switched off".into()));
        }
        self.published.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(topic, key, payload).await
    }
    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>, AdapterError> {
        self.inner.subscribe(group, topics).await
    }
    async fn flush(&self, timeout: Duration) -> Result<(), AdapterError> {
        self.inner.flush(timeout).await
    }
}

/// A document store that counts writes, to prove a refused upload stored nothing.
struct CountingDocs {
    inner: Arc<dyn DocumentStore>,
    puts: AtomicUsize,
}

#[async_trait]
impl DocumentStore for CountingDocs {
    async fn put(&self, key: &str, doc: &Document) -> Result<(), AdapterError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, doc).await
    }
    async fn get(&self, key: &str) -> Result<Option<Document>, AdapterError> {
        self.inner.get(key).await
    }
}

/// A status store whose reads can be made to fail (a store still busy after a timeout).
struct BlindReads {
    inner: Arc<dyn StatusStore>,
    blind: AtomicBool,
}

#[async_trait]
impl StatusStore for BlindReads {
    async fn create(&self, r: &ApplicationRecord, i: Option<&IdempotencyClaim>) -> Result<CreateOutcome, AdapterError> {
        self.inner.create(r, i).await
    }
    async fn get(&self, id: uuid::Uuid) -> Result<Option<ApplicationRecord>, AdapterError> {
        if self.blind.load(Ordering::SeqCst) {
            return Err(AdapterError::Unavailable("reads switched off".into()));
        }
        self.inner.get(id).await
    }
    async fn transition(&self, id: uuid::Uuid, t: &Transition) -> Result<TransitionOutcome, AdapterError> {
        self.inner.transition(id, t).await
    }
    async fn claim(&self, ns: &str, key: &str, owner: &str) -> Result<Claim, AdapterError> {
        self.inner.claim(ns, key, owner).await
    }
    async fn claim_expiring(&self, ns: &str, key: &str, owner: &str, ttl: Duration) -> Result<Claim, AdapterError> {
        self.inner.claim_expiring(ns, key, owner, ttl).await
    }
    async fn claimed_by(&self, ns: &str, key: &str) -> Result<Option<String>, AdapterError> {
        self.inner.claimed_by(ns, key).await
    }
    async fn release(&self, ns: &str, key: &str, owner: &str) -> Result<bool, AdapterError> {
        self.inner.release(ns, key, owner).await
    }
    async fn list_by_status(&self, status: Status, limit: usize) -> Result<Vec<ApplicationRecord>, AdapterError> {
        self.inner.list_by_status(status, limit).await
    }
    async fn count_by_status(&self) -> Result<Vec<(Status, u64)>, AdapterError> {
        self.inner.count_by_status().await
    }
}

struct Harness {
    base: String,
    keyring: Keyring,
    ports: IntakePorts,
    bus: Arc<FlakyBus>,
    docs: Arc<CountingDocs>,
    status: Arc<BlindReads>,
    readiness: kyufu_http::Readiness,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Documents written and events published so far.
    fn writes(&self) -> (usize, usize) {
        (self.docs.puts.load(Ordering::SeqCst), self.bus.published.load(Ordering::SeqCst))
    }
}

const TOPIC: &str = "applications.received";

async fn start() -> Harness {
    start_with(None).await
}

async fn start_with(scanner: Option<Arc<dyn DocumentScanner>>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let bus = Arc::new(FlakyBus { inner: store.bus(), down: AtomicBool::new(false), published: AtomicUsize::new(0) });
    let docs = Arc::new(CountingDocs { inner: store.document_store(), puts: AtomicUsize::new(0) });
    let status = Arc::new(BlindReads { inner: store.status_store(), blind: AtomicBool::new(false) });
    // Flaky bus, counting documents, reads that can fail: the sequence the production adapters use.
    let ports = IntakePorts::sequential(bus.clone(), status.clone(), docs.clone());
    let keyring = Keyring::random();
    let config = IntakeConfig {
        program: Program::demo(Utc::now().date_naive()),
        pass_keyring: keyring.clone(),
        require_pass: true,
        submissions_per_pass: kyufu_intake::DEFAULT_SUBMISSIONS_PER_PASS,
        identity_secret: IdentitySecret::new(b"identity secret for tests, long enough".to_vec()),
        status_tokens: StatusTokens::new(b"status secret for tests, long enough".to_vec()),
        max_document_bytes: 1024 * 1024,
        received_topic: TOPIC.to_owned(),
        scanner,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let registry = kyufu_telemetry::new_registry();
    let readiness = kyufu_http::Readiness::ready();
    tokio::spawn(kyufu_intake::serve(listener, config, ports.clone(), registry, readiness.clone(), std::future::pending()));
    Harness { base, keyring, ports, bus, docs, status, readiness, _dir: dir }
}

/// A real image of `w` × `h` pixels in `format`.
fn image(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A real JPEG carrying `payload` in a comment segment (COM, right after SOI): decodes cleanly.
fn jpeg_with_comment(payload: &[u8]) -> Vec<u8> {
    let jpeg = image(16, 16, image::ImageFormat::Jpeg);
    let len = u16::try_from(payload.len() + 2).expect("short comment");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A PNG whose header claims `w` × `h` (CRC fixed) over a 1×1 image's data: a bomb's shape.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = image(1, 1, image::ImageFormat::Png);
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let mut c = 0xFFFF_FFFFu32;
    for &b in &png[12..29] {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    png[29..33].copy_from_slice(&(!c).to_be_bytes());
    png
}

fn pass(h: &Harness, event: &str) -> String {
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    h.keyring.sign(Purpose::Pass, &PassClaims::new(event, 1, now, 600))
}

fn application() -> Value {
    json!({
        "guardian": {"family_name": "山田", "given_name": "花子", "family_name_kana": "ヤマダ", "given_name_kana": "ハナコ",
            "birth_date": "1990-01-02", "email": "a@example.jp", "phone": "0312345678", "postal_code": "9300001"},
        "child": {"family_name": "山田", "given_name": "太郎", "family_name_kana": "やまだ", "given_name_kana": "たろう",
            "birth_date": "2019-03-04"},
        "consent": true
    })
}

fn form(app: &str, doc: &[u8]) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part("application", reqwest::multipart::Part::text(app.to_owned()))
        .part("document", reqwest::multipart::Part::bytes(doc.to_vec()))
}

async fn send(h: &Harness, pass: Option<&str>, f: reqwest::multipart::Form) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(format!("{}/api/v1/applications", h.base)).multipart(f);
    if let Some(p) = pass {
        req = req.header("X-Admission-Pass", p);
    }
    req.send().await.expect("send")
}

async fn post(h: &Harness, pass: Option<&str>, f: reqwest::multipart::Form) -> (u16, Value) {
    let resp = send(h, pass, f).await;
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

async fn counts(h: &Harness) -> u64 {
    h.ports.status.count_by_status().await.expect("counts").iter().map(|(_, n)| n).sum()
}

#[tokio::test]
async fn accepted_application_is_recorded_and_published() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let (code, body) = post(&h, Some(&p), form(&application().to_string(), b"%PDF-1.4 test")).await;
    assert_eq!(code, 202, "{body}");
    let id: uuid::Uuid = body["application_id"].as_str().expect("id").parse().expect("uuid");
    let rec = h.ports.status.get(id).await.expect("get").expect("record");
    assert_eq!(rec.status, Status::Received);
    let mut c = h.ports.bus.subscribe("test", &[TOPIC]).await.expect("sub");
    let m = c.poll(Duration::from_secs(2)).await.expect("poll").expect("published");
    let ev = ApplicationEvent::from_json(&m.payload).expect("event");
    assert_eq!(ev.application_id, id);
    assert_eq!(ev.application.child.given_name_kana, "タロウ", "normalised before publishing");
    assert_eq!(m.key, ev.identity_key.as_bytes(), "partitioned by the child's keyed identity");
    assert!(!String::from_utf8_lossy(&m.key).contains("タロウ"), "no name in the key");
    let doc = h.ports.documents.get(&ev.document.key).await.expect("get").expect("document stored");
    assert_eq!(doc.content_type, "application/pdf");

    // The status lookup answers with the token and only with it.
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/applications/{id}", h.base);
    let token = body["status_token"].as_str().expect("token");
    let ok: Value = client.get(&url).bearer_auth(token).send().await.expect("get").json().await.expect("json");
    assert_eq!(ok["status"], "received");
    let wrong = client.get(&url).bearer_auth("x".repeat(22)).send().await.expect("get");
    assert_eq!(wrong.status().as_u16(), 404);
    let none = client.get(&url).send().await.expect("get");
    assert_eq!(none.status().as_u16(), 404);
    let junk = client.get(format!("{}/api/v1/applications/..%2f..%2fetc", h.base)).bearer_auth(token).send().await.expect("get");
    assert_eq!(junk.status().as_u16(), 404);
    // Lookups are counted by outcome: the status shown, or not_found without saying why.
    let text = client.get(format!("{}/metrics", h.base)).send().await.expect("get").text().await.expect("text");
    for line in [
        "kyufu_intake_status_lookups_total{outcome=\"received\"} 1",
        "kyufu_intake_status_lookups_total{outcome=\"not_found\"} 3",
        "kyufu_intake_status_lookups_total{outcome=\"coupon_issued\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    assert!(!text.contains(&id.to_string()), "no application id in metrics");

    // The short reference and the typeable code open the same status, however they are typed.
    let reference = body["reference"].as_str().expect("reference");
    let code = body["lookup_code"].as_str().expect("lookup code");
    assert!(reference.len() == 11 && code.len() == 9, "{reference} {code}");
    let by_ref = |r: String, t: String| {
        let client = client.clone();
        let url = format!("{}/api/v1/applications/{}", h.base, r);
        async move { client.get(url).bearer_auth(t).send().await.expect("get") }
    };
    let ok: Value = by_ref(reference.to_owned(), code.to_owned()).await.json().await.expect("json");
    assert_eq!(ok["application_id"], id.to_string());
    let typed = by_ref(reference.to_lowercase().replace('-', ""), code.to_lowercase().replace('-', "")).await;
    assert_eq!(typed.status().as_u16(), 200, "lower case, no hyphens");
    let wrong_check = if reference.ends_with('X') { 'Y' } else { 'X' };
    assert_eq!(by_ref(format!("{}{wrong_check}", &reference[..10]), code.to_owned()).await.status().as_u16(), 404, "wrong check symbol");
    assert_eq!(by_ref(reference.to_owned(), "AAAA-AAAA".into()).await.status().as_u16(), 404, "wrong code");
    assert_eq!(by_ref(id.to_string(), code.to_owned()).await.status().as_u16(), 200, "the code works with the id too");
}

#[tokio::test]
async fn lost_links_are_sent_again_only_to_the_address_that_applied_and_the_answer_never_tells() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let (code, body) = post(&h, Some(&p), form(&application().to_string(), b"%PDF-1.4 test")).await;
    assert_eq!(code, 202, "{body}");
    let id = body["application_id"].as_str().expect("id").to_owned();
    let email = application()["guardian"]["email"].as_str().expect("email").to_owned();
    let mut resent = h.ports.bus.subscribe("test-resend", &[kyufu_ports::events::topics::RESEND]).await.expect("sub");
    let ask = |email: String| {
        let url = format!("{}/api/v1/links", h.base);
        async move {
            let r = reqwest::Client::new().post(url).json(&serde_json::json!({ "email": email })).send().await.expect("post");
            (r.status().as_u16(), r.text().await.expect("text"))
        }
    };
    let unknown = ask("nobody@example.jp".into()).await;
    let known = ask(format!("  {}  ", email.to_uppercase())).await;
    assert_eq!(known.0, 202);
    assert_eq!(unknown, known, "the same answer for a known and an unknown address");
    let m = resent.poll(Duration::from_secs(2)).await.expect("poll").expect("the application is sent again");
    assert_eq!(ApplicationEvent::from_json(&m.payload).expect("event").application_id.to_string(), id);
    assert!(resent.poll(Duration::from_millis(300)).await.expect("poll").is_none(), "only that one, and nothing for the unknown address");
    // Asking again at once sends nothing more (one request per address per quarter hour).
    assert_eq!(ask(email.clone()).await.0, 202);
    assert!(resent.poll(Duration::from_millis(500)).await.expect("poll").is_none(), "rate limited per address");
    assert_eq!(ask("not an address".into()).await.0, 422);
}

#[tokio::test]
async fn refused_submissions_leave_no_record() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let app = application().to_string();
    let cases: Vec<(Option<String>, reqwest::multipart::Form, u16, &str)> = vec![
        (None, form(&app, b"%PDF-"), 403, "admission_required"),
        (Some(pass(&h, "other-event")), form(&app, b"%PDF-"), 403, "admission_invalid"),
        (Some(Keyring::random().sign(Purpose::Pass, &PassClaims::new("rice-demo", 1, 0, u64::MAX / 2))), form(&app, b"%PDF-"), 403, "admission_invalid"),
        (Some(h.keyring.sign(Purpose::Pass, &PassClaims::new("rice-demo", 1, 0, 1))), form(&app, b"%PDF-"), 403, "admission_expired"),
        (Some(p.clone()), form("{", b"%PDF-"), 400, "invalid_json"),
        (Some(p.clone()), form(&app, b""), 400, "empty_document"),
        (Some(p.clone()), form(&app, b"MZ\x90\x00 an exe"), 415, "unsupported_document_type"),
        (Some(p.clone()), form(&app, &vec![0xFF; 2 * 1024 * 1024]), 413, "document_too_large"),
        (Some(p.clone()), reqwest::multipart::Form::new().part("document", reqwest::multipart::Part::bytes(b"%PDF-".to_vec())), 400, "missing_application"),
        (Some(p.clone()), form(&json!({"consent": false}).to_string(), b"%PDF-"), 422, "invalid_application"),
    ];
    for (pass, f, want_status, want_code) in cases {
        let (code, body) = post(&h, pass.as_deref(), f).await;
        assert_eq!((code, body["code"].as_str().unwrap_or_default()), (want_status, want_code), "{body}");
    }
    // Not multipart at all.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/applications", h.base))
        .header("X-Admission-Pass", &p)
        .json(&application())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 415);
    // A bad idempotency key.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/applications", h.base))
        .header("X-Admission-Pass", &p)
        .header("Idempotency-Key", "short")
        .multipart(form(&app, b"%PDF-"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(counts(&h).await, 0, "no record from any refused submission");
}

async fn spend(h: &Harness, pass: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(format!("{}/api/v1/pass/spend", h.base));
    if let Some(p) = pass {
        req = req.header("X-Admission-Pass", p);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_spent_pass_is_refused_and_only_the_first_spend_counts() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let app = application().to_string();
    // One pass serves a household: several children before it is spent.
    let mut second_child = application();
    second_child["child"]["given_name"] = json!("次郎");
    second_child["child"]["given_name_kana"] = json!("ジロウ");
    for app in [app.clone(), second_child.to_string()] {
        let (code, body) = post(&h, Some(&p), form(&app, b"%PDF-1.4 test")).await;
        assert_eq!(code, 202, "{body}");
    }
    assert_eq!(h.writes().1, 2);

    // Spending needs a valid pass of this event, like submitting.
    assert_eq!(spend(&h, None).await, (403, "admission_required".to_owned()));
    assert_eq!(spend(&h, Some(&pass(&h, "other-event"))).await, (403, "admission_invalid".to_owned()));
    let forged = Keyring::random().sign(Purpose::Pass, &PassClaims::new("rice-demo", 1, 0, u64::MAX / 2));
    assert_eq!(spend(&h, Some(&forged)).await, (403, "admission_invalid".to_owned()));
    let expired = h.keyring.sign(Purpose::Pass, &PassClaims::new("rice-demo", 1, 0, 1));
    assert_eq!(spend(&h, Some(&expired)).await, (403, "admission_expired".to_owned()));

    // The first spend answers 204; every later one (the same pass replayed) 403 admission_spent,
    // so the gateway gives the place back exactly once.
    assert_eq!(spend(&h, Some(&p)).await, (204, String::new()));
    assert_eq!(spend(&h, Some(&p)).await, (403, "admission_spent".to_owned()));

    // The spent pass submits nothing more: refused before anything is stored or published.
    let mut third_child = application();
    third_child["child"]["given_name"] = json!("三郎");
    third_child["child"]["given_name_kana"] = json!("サブロウ");
    let (code, body) = post(&h, Some(&p), form(&third_child.to_string(), b"%PDF-1.4 test")).await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (403, "admission_spent"), "{body}");
    assert_eq!(counts(&h).await, 2, "no record from the spent pass");
    assert_eq!(h.writes(), (4, 2), "two documents and two events, nothing more");

    // A pass with the same id, minted again (another poll of the same place), is spent too; a
    // pass of another place is not.
    let claims: PassClaims = h.keyring.verify(Purpose::Pass, &p).expect("pass");
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let again = h.keyring.sign(Purpose::Pass, &PassClaims { iat: now, exp: now + 900, ..claims.clone() });
    let (code, body) = post(&h, Some(&again), form(&third_child.to_string(), b"%PDF-1.4 test")).await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (403, "admission_spent"), "{body}");
    let other = pass(&h, "rice-demo");
    let (code, body) = post(&h, Some(&other), form(&third_child.to_string(), b"%PDF-1.4 test")).await;
    assert_eq!(code, 202, "{body}");

    let text = reqwest::get(format!("{}/metrics", h.base)).await.expect("get").text().await.expect("text");
    for line in [
        "kyufu_intake_passes_spent_total 1",
        "kyufu_intake_requests_total{code=\"\",route=\"spend\",status=\"204\"} 1",
        "kyufu_intake_requests_total{code=\"admission_spent\",route=\"spend\",status=\"403\"} 1",
        "kyufu_intake_requests_total{code=\"admission_spent\",route=\"submit\",status=\"403\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
}

/// One pass, one household: the default bound of ten applications per pass, a clear refusal
/// beyond it that stores nothing, a retry with the same idempotency key that still answers, and
/// another household's pass untouched.
#[tokio::test]
async fn one_pass_sends_at_most_ten_applications() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let app = application().to_string();
    let with_key = |key: &str| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/applications", h.base))
            .header("X-Admission-Pass", &p)
            .header("Idempotency-Key", key)
            .multipart(form(&app, b"%PDF-1.4 test"))
    };
    let first = with_key("household-child-0001").send().await.expect("send");
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.expect("json");
    for n in 2..=10 {
        let (code, body) = post(&h, Some(&p), form(&app, b"%PDF-1.4 test")).await;
        assert_eq!(code, 202, "application {n} of the pass: {body}");
    }
    assert_eq!((counts(&h).await, h.writes()), (10, (20, 10)));

    let (code, body) = post(&h, Some(&p), form(&app, b"%PDF-1.4 test")).await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (403, "admission_limit_reached"), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("household"), "{body}");
    assert_eq!((counts(&h).await, h.writes()), (10, (20, 10)), "the eleventh stores nothing");

    // The first application's retry holds its own slot: the same answer, no new record.
    let again = with_key("household-child-0001").send().await.expect("send");
    assert_eq!(again.status().as_u16(), 202);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["application_id"], first["application_id"]);
    // A new key is an eleventh application.
    let (code, body) = (|r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null)) })(
        with_key("household-child-0011").send().await.expect("send"),
    )
    .await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (403, "admission_limit_reached"), "{body}");

    let other = pass(&h, "rice-demo");
    let (code, body) = post(&h, Some(&other), form(&app, b"%PDF-1.4 test")).await;
    assert_eq!(code, 202, "another household's pass has its own ten: {body}");
    assert_eq!(counts(&h).await, 11);
}

#[tokio::test]
async fn relay_republishes_an_application_whose_publish_failed() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    h.bus.down.store(true, Ordering::SeqCst);
    let (code, body) = post(&h, Some(&p), form(&application().to_string(), &image(4, 3, image::ImageFormat::Png))).await;
    assert_eq!(code, 202, "accepted at the commit point even though the bus failed: {body}");
    let id: uuid::Uuid = body["application_id"].as_str().expect("id").parse().expect("uuid");
    let mut c = h.ports.bus.subscribe("test", &[TOPIC]).await.expect("sub");
    assert!(c.poll(Duration::from_millis(200)).await.expect("poll").is_none(), "nothing reached the bus");
    h.bus.down.store(false, Ordering::SeqCst);

    let mut config = RelayConfig::new(TOPIC);
    config.after = Duration::from_secs(3600);
    assert_eq!(relay::round(&h.ports, &config).await.expect("round"), 0, "too young to republish");
    config.after = Duration::ZERO;
    assert_eq!(relay::round(&h.ports, &config).await.expect("round"), 1);
    let m = c.poll(Duration::from_secs(2)).await.expect("poll").expect("republished");
    assert_eq!(ApplicationEvent::from_json(&m.payload).expect("event").application_id, id);
}

#[tokio::test]
async fn a_retry_publishes_again_an_application_still_waiting_to_be_checked() {
    // The first attempt reaches the commit point but not the bus (as when the store applied a
    // write whose answer timed out and intake answered 503); the applicant's retry with the same
    // Idempotency-Key puts it on the bus at once instead of leaving it to the relay minutes later.
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let doc = image(4, 3, image::ImageFormat::Png);
    let send = || {
        reqwest::Client::new()
            .post(format!("{}/api/v1/applications", h.base))
            .header("X-Admission-Pass", &p)
            .header("Idempotency-Key", "retry-after-a-timeout-0001")
            .multipart(form(&application().to_string(), &doc))
            .send()
    };
    let mut c = h.ports.bus.subscribe("test", &[TOPIC]).await.expect("sub");
    h.bus.down.store(true, Ordering::SeqCst);
    let first: Value = send().await.expect("send").json().await.expect("json");
    assert!(c.poll(Duration::from_millis(200)).await.expect("poll").is_none(), "nothing reached the bus");
    h.bus.down.store(false, Ordering::SeqCst);
    let retry = send().await.expect("send");
    assert_eq!(retry.status().as_u16(), 202);
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["application_id"], first["application_id"], "the same application");
    assert_eq!(retry["reference"], first["reference"], "and the same reference");
    assert!(retry["reference"].as_str().is_some_and(|r| r.len() == 11), "{retry}");
    let m = c.poll(Duration::from_secs(2)).await.expect("poll").expect("published by the retry");
    let ev = ApplicationEvent::from_json(&m.payload).expect("event");
    assert_eq!(ev.application_id.to_string(), first["application_id"].as_str().expect("id"));

    // A retry that cannot read the status (the store still busy) publishes again to be sure,
    // rather than leaving the application to the relay for minutes.
    h.status.blind.store(true, Ordering::SeqCst);
    assert_eq!(send().await.expect("send").status().as_u16(), 202);
    h.status.blind.store(false, Ordering::SeqCst);
    let m = c.poll(Duration::from_secs(2)).await.expect("poll").expect("published again without a status");
    assert_eq!(ApplicationEvent::from_json(&m.payload).expect("event").application_id, ev.application_id);

    // Once a stage has moved it on, a further retry publishes nothing more.
    let id = ev.application_id;
    let t = kyufu_ports::Transition::new(&[Status::Received], Status::Approved, "test");
    h.ports.status.transition(id, &t).await.expect("moved on");
    let again = send().await.expect("send");
    assert_eq!(again.status().as_u16(), 202);
    assert!(c.poll(Duration::from_millis(300)).await.expect("poll").is_none(), "not published again once past received");
}

#[tokio::test]
async fn funnel_counts_known_steps_and_refuses_everything_else() {
    let h = start().await;
    let client = reqwest::Client::new();
    let send = |body: String| {
        let req = client.post(format!("{}/api/v1/funnel", h.base)).header("content-type", "text/plain").body(body);
        async move {
            let resp = req.send().await.expect("send");
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // No pass needed: the first step happens before admission. Any content type, for sendBeacon.
    for _ in 0..2 {
        assert_eq!(send(json!({"step": "form_started", "lang": "ja"}).to_string()).await.0, 204);
    }
    assert_eq!(send(json!({"step": "error", "error_code": "document_too_large", "lang": "en"}).to_string()).await.0, 204);
    let (code, body) = send(json!({"step": "stolen_data", "lang": "ja"}).to_string()).await;
    assert_eq!((code, body["code"].as_str()), (422, Some("invalid_funnel_event")), "{body}");
    assert_eq!(body["errors"], json!([{"field": "step", "code": "unknown"}]));
    let (code, body) = send(json!({"step": "error", "error_code": "made_up"}).to_string()).await;
    assert_eq!((code, body["errors"][0]["field"].as_str()), (422, Some("error_code")), "{body}");
    let (code, body) = send(json!({"step": "submitted", "name": "山田花子"}).to_string()).await;
    assert_eq!((code, body["errors"][0]["code"].as_str()), (422, Some("unknown_field")), "{body}");
    let (code, body) = send(format!(r#"{{"step":"submitted","pad":"{}"}}"#, "x".repeat(4096))).await;
    assert_eq!((code, body["errors"][0]["code"].as_str()), (422, Some("too_large")), "{body}");
    assert_eq!(send("not json".to_owned()).await.0, 400);

    let text = client.get(format!("{}/metrics", h.base)).send().await.expect("get").text().await.expect("text");
    for line in [
        "kyufu_funnel_steps_total{error_code=\"\",step=\"form_started\"} 2",
        "kyufu_funnel_steps_total{error_code=\"document_too_large\",step=\"error\"} 1",
        "kyufu_funnel_steps_total{error_code=\"\",step=\"submitted\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    for never in ["stolen_data", "made_up", "山田", "name="] {
        assert!(!text.contains(never), "refused value {never} became a label:\n{text}");
    }
}

#[tokio::test]
async fn document_content_is_checked_before_anything_is_stored() {
    let h = start().await;
    let p = pass(&h, "rice-demo");
    let app = application().to_string();
    let png = image(40, 30, image::ImageFormat::Png);
    let jpeg = image(40, 30, image::ImageFormat::Jpeg);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (png[..png.len() / 2].to_vec(), "document_unreadable"),
        (jpeg[..jpeg.len() / 2].to_vec(), "document_unreadable"),
        (b"\xFF\xD8\xFF\xE0 only the magic of a JPEG".to_vec(), "document_unreadable"),
        (png_claiming(100_000, 100_000), "document_too_many_pixels"),
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /OpenAction 2 0 R >>\nendobj\n".to_vec(), "document_active_content"),
        (b"%PDF-1.4\n2 0 obj\n<< /S /J#61vaScript /JS (app.alert(1)) >>\nendobj\n".to_vec(), "document_active_content"),
        (b"%PDF-1.7\n<< /Names << /EmbeddedFiles 3 0 R >> >>\n".to_vec(), "document_active_content"),
        (pdf_with_script_in_an_object_stream(), "document_active_content"),
    ];
    for (doc, want) in cases {
        let (code, body) = post(&h, Some(&p), form(&app, &doc)).await;
        assert_eq!((code, body["code"].as_str().unwrap_or_default()), (422, want), "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "a message the applicant can act on");
    }
    assert_eq!(counts(&h).await, 0, "no record from a refused document");
    assert_eq!(h.writes(), (0, 0), "nothing stored, nothing published");

    // Real images and a plain PDF pass and are stored with the sniffed type.
    for (doc, content_type) in [(png, "image/png"), (jpeg, "image/jpeg"), (b"%PDF-1.4\n<< /Type /Catalog >>\n%%EOF\n".to_vec(), "application/pdf")] {
        let (code, body) = post(&h, Some(&p), form(&app, &doc)).await;
        assert_eq!(code, 202, "{content_type}: {body}");
        let id: uuid::Uuid = body["application_id"].as_str().expect("id").parse().expect("uuid");
        let stored = h.ports.documents.get(&format!("rice-demo/{id}/document")).await.expect("get").expect("stored");
        assert_eq!((stored.content_type.as_str(), stored.bytes.len()), (content_type, doc.len()));
    }

    // A phone photo: stored without its location or camera tags, its orientation kept.
    let photo = loadtest::photos::camera_jpeg(1200, 900, 6, 9);
    let found = kyufu_domain::imagefile::metadata_kinds(&photo);
    assert!(found.contains(&"gps") && found.contains(&"xmp") && found.contains(&"exif"), "{found:?}");
    let (code, body) = post(&h, Some(&p), form(&app, &photo)).await;
    assert_eq!(code, 202, "{body}");
    let id: uuid::Uuid = body["application_id"].as_str().expect("id").parse().expect("uuid");
    let stored = h.ports.documents.get(&format!("rice-demo/{id}/document")).await.expect("get").expect("stored");
    assert_eq!(kyufu_domain::imagefile::metadata_kinds(&stored.bytes), Vec::<&str>::new(), "no EXIF, XMP or GPS stored");
    assert!(!stored.bytes.windows(11).any(|w| w == b"Kyufu Phone"), "no camera make");
    let walked = kyufu_domain::imagefile::strip_jpeg(&stored.bytes, u64::MAX).expect("still a well-formed JPEG");
    assert_eq!((walked.facts.width, walked.facts.height, walked.facts.orientation), (900, 1200, 6));
    let pixels_before = image::load_from_memory(&photo).expect("decode").to_rgb8();
    let pixels_after = image::load_from_memory(&stored.bytes).expect("decode").to_rgb8();
    assert!(pixels_before == pixels_after, "the pixels are untouched");
}

/// A PDF 1.5 written by lopdf with its catalog (and the `/OpenAction` JavaScript in it) inside a
/// compressed object stream, where a byte scan cannot see it.
fn pdf_with_script_in_an_object_stream() -> Vec<u8> {
    use lopdf::{dictionary, Document, Object};
    let mut doc = Document::with_version("1.5");
    let pages = doc.add_object(dictionary! { "Type" => "Pages", "Kids" => Vec::<Object>::new(), "Count" => 0 });
    let js = dictionary! { "S" => "JavaScript", "JS" => Object::string_literal("app.alert(1)") };
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages, "OpenAction" => js });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_modern(&mut out).expect("save");
    assert!(kyufu_domain::pdf::active_content(&out).is_none(), "hidden from the byte scan");
    out
}

/// A scanner whose answer the test sets.
struct FakeScanner {
    answer: std::sync::Mutex<Result<Verdict, &'static str>>,
    scanned: AtomicUsize,
}

#[async_trait]
impl DocumentScanner for FakeScanner {
    async fn scan(&self, _bytes: &[u8]) -> Result<Verdict, ScanError> {
        self.scanned.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().expect("lock").clone();
        answer.map_err(|e| ScanError::Failed(e.to_owned()))
    }
    async fn ping(&self) -> Result<(), ScanError> {
        Ok(())
    }
}

async fn scanned_metric(h: &Harness, outcome: &str) -> String {
    let text = reqwest::get(format!("{}/metrics", h.base)).await.expect("metrics").text().await.expect("text");
    let series = format!("kyufu_intake_documents_scanned_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(series.as_str())).unwrap_or("missing").to_owned()
}

#[tokio::test]
async fn flagged_documents_are_refused_and_an_unavailable_scanner_fails_closed() {
    let scanner = Arc::new(FakeScanner { answer: std::sync::Mutex::new(Ok(Verdict::Infected("Test.Sig".into()))), scanned: AtomicUsize::new(0) });
    let h = start_with(Some(scanner.clone())).await;
    let p = pass(&h, "rice-demo");
    let app = application().to_string();
    let doc = image(8, 8, image::ImageFormat::Png);

    let (code, body) = post(&h, Some(&p), form(&app, &doc)).await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (422, "document_infected"), "{body}");
    assert!(!body.to_string().contains("Test.Sig"), "the signature is not echoed to the client");

    *scanner.answer.lock().expect("lock") = Err("connection refused");
    let resp = send(&h, Some(&p), form(&app, &doc)).await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some(), "503 carries Retry-After");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "scanner_unavailable");
    assert_eq!(counts(&h).await, 0);
    assert_eq!(h.writes(), (0, 0), "nothing stored, nothing published while infected or unscanned");

    // Documents refused by the content checks never reach the scanner.
    let before = scanner.scanned.load(Ordering::SeqCst);
    let (code, _) = post(&h, Some(&p), form(&app, &doc[..doc.len() / 2])).await;
    assert_eq!(code, 422);
    assert_eq!(scanner.scanned.load(Ordering::SeqCst), before);

    *scanner.answer.lock().expect("lock") = Ok(Verdict::Clean);
    let (code, body) = post(&h, Some(&p), form(&app, &doc)).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(counts(&h).await, 1);
    assert_eq!(h.writes().1, 1, "the clean one is published");
    for (outcome, n) in [("clean", "1"), ("infected", "1"), ("error", "1")] {
        assert_eq!(scanned_metric(&h, outcome).await, n, "documents scanned, outcome={outcome}");
    }
}

#[tokio::test]
async fn real_clamd_refuses_eicar_and_the_test_marker_and_fails_closed_when_killed() {
    use kyufu_testservers::clamd::{ClamdServer, EICAR, MARKER};
    let mut server = ClamdServer::start();
    let clamd: Arc<dyn DocumentScanner> = Arc::new(Clamd::new(server.address().parse().expect("address")));
    let h = start_with(Some(clamd.clone())).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(kyufu_intake::scan::watch(clamd, h.readiness.clone(), Duration::from_millis(100), stop_rx));
    let p = pass(&h, "rice-demo");
    let app = application().to_string();

    let mut eicar_pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n% ".to_vec();
    eicar_pdf.extend_from_slice(EICAR);
    eicar_pdf.extend_from_slice(b"\n%%EOF\n");
    for doc in [eicar_pdf, jpeg_with_comment(EICAR), jpeg_with_comment(MARKER)] {
        let (code, body) = post(&h, Some(&p), form(&app, &doc)).await;
        assert_eq!((code, body["code"].as_str().unwrap_or_default()), (422, "document_infected"), "{body}");
    }
    assert_eq!(counts(&h).await, 0);
    assert_eq!(h.writes(), (0, 0), "nothing stored, nothing published");

    let clean = jpeg_with_comment(b"an ordinary comment");
    let (code, body) = post(&h, Some(&p), form(&app, &clean)).await;
    assert_eq!(code, 202, "a clean upload passes: {body}");
    let id: uuid::Uuid = body["application_id"].as_str().expect("id").parse().expect("uuid");
    let stored = h.ports.documents.get(&format!("rice-demo/{id}/document")).await.expect("get").expect("stored");
    // Stored without its comment, the rest byte for byte.
    assert_eq!(stored.bytes.len(), clean.len() - 4 - b"an ordinary comment".len());
    assert!(kyufu_domain::imagefile::metadata_kinds(&clean).contains(&"comment"));
    assert!(kyufu_domain::imagefile::metadata_kinds(&stored.bytes).is_empty());
    let writes = h.writes();

    server.kill();
    let resp = send(&h, Some(&p), form(&app, &clean)).await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "scanner_unavailable");
    assert_eq!(h.writes(), writes, "nothing stored or published while the scanner is down");
    assert_eq!(counts(&h).await, 1);

    // /readyz follows the scanner: 503 naming it while down (bounded wait for the next ping).
    let mut failing = Value::Null;
    for _ in 0..100 {
        let resp = reqwest::get(format!("{}/readyz", h.base)).await.expect("readyz");
        if resp.status().as_u16() == 503 {
            failing = resp.json().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failing.to_string().contains("virus_scanner"), "readyz names the scanner: {failing}");
    let _ = stop_tx.send(true);
}
