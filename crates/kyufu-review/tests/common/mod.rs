//! What the console's tests share: a console over the embedded store, cases to review, and
//! reviewers logged in with their own sessions.
#![allow(dead_code)] // each test file uses part of it

use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use kyufu_domain::application::Application;
use kyufu_domain::identity::{child_identity_key, IdentitySecret};
use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_embedded::EmbeddedStore;
use kyufu_ports::events::{payload_key, ApplicationEvent, DocumentRef};
use kyufu_ports::{ApplicationRecord, Document, Transition};
use kyufu_registry::{generate, GeneratorConfig, Registry};
use kyufu_review::auth::password_entry;
use kyufu_review::{ReviewDeps, Reviewers};
use uuid::Uuid;

pub fn reference() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 4, 1).expect("date")
}

pub fn secret() -> IdentitySecret {
    IdentitySecret::new(b"review test identity secret".to_vec())
}

pub fn registry(households: usize) -> Arc<Registry> {
    Arc::new(generate(&GeneratorConfig { seed: 4, households, reference_date: reference(), ..GeneratorConfig::default() }))
}

/// The password of reviewer `name` in these tests.
pub fn password(name: &str) -> String {
    format!("{name}-long-password")
}

pub fn reviewers(names: &[&str]) -> Reviewers {
    let spec: Vec<String> = names.iter().map(|n| password_entry(n, &password(n)).expect("entry")).collect();
    Reviewers::from_spec(&spec.join("\n")).expect("reviewers")
}

/// Serves the console on a loopback port (with client addresses, as `kyufu_http::serve` does);
/// its base URL.
pub async fn serve(deps: ReviewDeps) -> String {
    let app = kyufu_review::router(deps, &kyufu_telemetry::new_registry());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await });
    base
}

pub fn deps(store: &EmbeddedStore, registry: Arc<Registry>, program: &Program, reviewers: Reviewers) -> ReviewDeps {
    ReviewDeps { bus: store.bus(), status: store.status_store(), documents: store.document_store(), registry, program: program.clone(), reviewers }
}

/// Stores an application's document, payload and `received` record; returns its event.
pub async fn store_application(deps: &ReviewDeps, app: Application) -> ApplicationEvent {
    let program = &deps.program;
    let id = Uuid::new_v4();
    let doc_key = format!("{}/{id}/document", program.id);
    let png = card_png();
    let doc = Document { content_type: "image/png".into(), sha256: "0".repeat(64), bytes: png.clone().into() };
    deps.documents.put(&doc_key, &doc).await.expect("doc");
    let ev = ApplicationEvent {
        v: 1,
        application_id: id,
        program_id: program.id.clone(),
        identity_key: child_identity_key(&secret(), &program.id, &app),
        received_at: Utc::now(),
        application: app,
        document: DocumentRef { key: doc_key, content_type: "image/png".into(), size: png.len() as u64, sha256: "0".repeat(64) },
    };
    let payload = Document { content_type: "application/json".into(), sha256: "0".repeat(64), bytes: ev.to_json().into() };
    deps.documents.put(&payload_key(&program.id, id), &payload).await.expect("payload");
    deps.status.create(&ApplicationRecord::received(id, &program.id, Utc::now()), None).await.expect("create");
    ev
}

/// The application as submitted.
pub async fn load_event(deps: &ReviewDeps, id: Uuid) -> ApplicationEvent {
    let doc = deps.documents.get(&payload_key(&deps.program.id, id)).await.expect("get").expect("payload");
    ApplicationEvent::from_json(&doc.bytes).expect("event")
}

/// A drawn identity card (a real PNG, lopsided so a quarter turn shows); drawn once.
pub fn card_png() -> Vec<u8> {
    static CARD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CARD.get_or_init(draw_card).clone()
}

fn draw_card() -> Vec<u8> {
    let (w, h) = (640u32, 400u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let px = if y < 70 {
            [11, 79, 138] // header band
        } else if (40..220).contains(&x) && (110..350).contains(&y) {
            [170, 180, 190] // photo
        } else if x > 260 && x < 600 && y > 120 && (y - 120) % 40 < 8 {
            [60, 60, 60] // text lines
        } else if x > 560 && y > 330 {
            [200, 40, 40] // a seal in one corner
        } else {
            [245, 240, 228]
        };
        image::Rgb(px)
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

/// `n` cases waiting for review, stored directly (no pipeline, many at once so the embedded
/// store commits them in groups); their ids in the order the console lists them (oldest first).
pub async fn seed_review_cases(deps: &ReviewDeps, n: usize) -> Vec<Uuid> {
    let households = deps.registry.households_with_children(reference(), 18);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let h = &households[i % households.len()];
        let mut app = kyufu_pipeline::synthetic::application_for(h.guardian, h.children[0]);
        app.guardian.given_name_kana = "マチガイ".into();
        let deps = deps.clone();
        tasks.spawn(async move {
            let ev = store_application(&deps, app).await;
            let mut t = Transition::new(&[Status::Received], Status::NeedsReview, "idcheck");
            t.reasons = vec![ReasonCode::GuardianNotInRegistry];
            deps.status.transition(ev.application_id, &t).await.expect("to review");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("seed task");
    }
    let listed = deps.status.list_by_status(Status::NeedsReview, n + 1).await.expect("list");
    assert_eq!(listed.len(), n);
    listed.into_iter().map(|r| r.application_id).collect()
}

/// A client that does not follow redirects (so tests see where the console sends them).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Logs `name` in through the form; a client that sends the session cookie on every request.
pub async fn login(base: &str, name: &str) -> reqwest::Client {
    let resp = client()
        .post(format!("{base}/review/login"))
        .form(&[("name", name), ("password", password(name).as_str()), ("next", "/review")])
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 303, "a login redirects: {}", resp.status());
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookie.parse().expect("cookie header"));
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).default_headers(headers).build().expect("client")
}
