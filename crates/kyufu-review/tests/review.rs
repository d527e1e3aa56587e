//! The review console over HTTP with the real stages on embedded storage: logins, the queue, case
//! leases that keep two reviewers off one case, approvals that flow on to a coupon, rejections
//! with a reason, and the audit trail in the application's history.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use kyufu_domain::application::Application;
use kyufu_domain::identity::{child_identity_key, IdentitySecret};
use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_embedded::EmbeddedStore;
use kyufu_pipeline::notify::OutboxNotifier;
use kyufu_pipeline::{PipelineDeps, StageKind, StageMetrics};
use kyufu_ports::events::{payload_key, topics, ApplicationEvent, DocumentRef};
use kyufu_ports::{ApplicationRecord, Document};
use kyufu_registry::{generate, GeneratorConfig, Resident};
use kyufu_review::auth::hash_password;
use kyufu_review::{ReviewDeps, Reviewers};
use serde_json::{json, Value};
use uuid::Uuid;

fn reference() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 4, 1).expect("date")
}

fn app_for(g: &Resident, c: &Resident) -> Application {
    kyufu_pipeline::synthetic::application_for(g, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_decide_cases_once_and_approvals_become_coupons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let registry = Arc::new(generate(&GeneratorConfig { seed: 4, households: 200, reference_date: reference(), ..GeneratorConfig::default() }));
    let program = Program::demo(reference());
    let secret = IdentitySecret::new(b"review test identity secret".to_vec());
    let deps = PipelineDeps {
        bus: store.bus(),
        status: store.status_store(),
        documents: store.document_store(),
        units: store.units(),
        registry: registry.clone(),
        identity_secret: secret.clone(),
        program: program.clone(),
        notifier: Arc::new(OutboxNotifier { dir: dir.path().join("outbox") }),
        mail_links: kyufu_pipeline::notify::MailLinks {
            tokens: kyufu_domain::token::StatusTokens::new(b"status secret for tests, long enough".to_vec()),
            public_url: "http://localhost".into(),
        },
        metrics: StageMetrics::new(&kyufu_telemetry::new_registry()),
    };
    let (_stop, rx) = tokio::sync::watch::channel(false);
    for k in StageKind::ALL {
        kyufu_pipeline::spawn_stage(k, &deps, rx.clone());
    }
    let reviewers = Reviewers::from_spec(&format!("alice:{},bob:{}", hash_password("alice-pw"), hash_password("bob-pw"))).expect("reviewers");
    let review = kyufu_review::router(
        ReviewDeps {
            bus: deps.bus.clone(),
            status: deps.status.clone(),
            documents: deps.documents.clone(),
            registry: registry.clone(),
            program: program.clone(),
            reviewers,
        },
        &kyufu_telemetry::new_registry(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, review).await });

    // Two applications held for review: the guardian's kana name mistyped.
    let households = registry.households_with_children(reference(), 18);
    let mut ids = Vec::new();
    for h in households.iter().take(2) {
        let mut app = app_for(h.guardian, h.children[0]);
        app.guardian.given_name_kana = "マチガイ".into();
        let id = Uuid::new_v4();
        let doc_key = format!("{}/{id}/document", program.id);
        let png = b"\x89PNG\r\n\x1a\nreview-test".to_vec();
        deps.documents.put(&doc_key, &Document { content_type: "image/png".into(), sha256: "0".repeat(64), bytes: png.clone().into() }).await.expect("doc");
        let ev = ApplicationEvent {
            v: 1,
            application_id: id,
            program_id: program.id.clone(),
            identity_key: child_identity_key(&secret, &program.id, &app),
            received_at: Utc::now(),
            application: app,
            document: DocumentRef { key: doc_key, content_type: "image/png".into(), size: png.len() as u64, sha256: "0".repeat(64) },
        };
        let payload = ev.to_json();
        deps.documents.put(&payload_key(&program.id, id), &Document { content_type: "application/json".into(), sha256: "0".repeat(64), bytes: payload.clone().into() }).await.expect("payload");
        deps.status.create(&ApplicationRecord::received(id, &program.id, Utc::now()), None).await.expect("create");
        deps.bus.publish(topics::RECEIVED, ev.identity_key.as_bytes(), &payload).await.expect("publish");
        ids.push(id);
    }
    let settled = |id: Uuid, want: Status| {
        let status = deps.status.clone();
        async move {
            for _ in 0..200 {
                let r = status.get(id).await.expect("get").expect("record");
                if r.status == want {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("{id} never reached {want}");
        }
    };
    for id in &ids {
        let r = settled(*id, Status::NeedsReview).await;
        assert!(r.reasons.contains(&ReasonCode::GuardianNotInRegistry), "{r:?}");
    }

    let c = reqwest::Client::new();
    let alice = |rb: reqwest::RequestBuilder| rb.basic_auth("alice", Some("alice-pw"));
    let bob = |rb: reqwest::RequestBuilder| rb.basic_auth("bob", Some("bob-pw"));

    // No login, a wrong password: 401 with a challenge.
    let resp = c.get(format!("{base}/review")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    let resp = c.get(format!("{base}/review")).basic_auth("alice", Some("bob-pw")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 401);

    // The queue, oldest first, as HTML and JSON.
    let page = alice(c.get(format!("{base}/review"))).send().await.expect("get").text().await.expect("html");
    assert!(page.contains(&ids[0].to_string()) && page.contains("審査待ち 2 件"), "{page}");
    let queue: Value = alice(c.get(format!("{base}/review/api/queue"))).send().await.expect("get").json().await.expect("json");
    let listed: Vec<&str> = queue["items"].as_array().expect("items").iter().filter_map(|i| i["application_id"].as_str()).collect();
    assert_eq!(listed, vec![ids[0].to_string(), ids[1].to_string()]);

    // Alice opens the first case: she sees the registry comparison and the document, and holds it.
    let case = alice(c.get(format!("{base}/review/cases/{}", ids[0]))).send().await.expect("get").text().await.expect("html");
    assert!(case.contains("住民記録との照合") && case.contains("承認する"), "{case}");
    let doc = alice(c.get(format!("{base}/review/cases/{}/document", ids[0]))).send().await.expect("get");
    assert_eq!(doc.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("image/png"));
    assert!(doc.bytes().await.expect("bytes").starts_with(b"\x89PNG"));

    // Bob cannot decide it while Alice holds it, and his page says who does.
    let bob_case = bob(c.get(format!("{base}/review/cases/{}", ids[0]))).send().await.expect("get").text().await.expect("html");
    assert!(bob_case.contains("alice さんが審査中") && !bob_case.contains("承認する"), "{bob_case}");
    let resp = bob(c.post(format!("{base}/review/api/cases/{}/decision", ids[0]))).json(&json!({"decision": "approve"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "case_locked");

    // Alice approves: the application flows on to a coupon, and the history names her.
    let resp = alice(c.post(format!("{base}/review/api/cases/{}/decision", ids[0]))).json(&json!({"decision": "approve"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let done = settled(ids[0], Status::CouponIssued).await;
    assert!(done.coupon_code.is_some());
    assert!(done.history.iter().any(|h| h.status == Status::Approved && h.actor == "reviewer:alice"), "{:?}", done.history);
    // Deciding it again is refused.
    let resp = bob(c.post(format!("{base}/review/api/cases/{}/decision", ids[0]))).json(&json!({"decision": "reject"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "case_not_pending");

    // Bob rejects the second with a reason, through the HTML form.
    let resp = bob(c.post(format!("{base}/review/api/cases/{}/decision", ids[1]))).json(&json!({"decision": "maybe"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 422);
    let resp = bob(c.post(format!("{base}/review/cases/{}/decision", ids[1])))
        .form(&[("decision", "reject"), ("reason", "not_same_household")])
        .send()
        .await
        .expect("post");
    assert!(resp.status().is_success(), "redirected to the queue: {}", resp.status());
    let rejected = settled(ids[1], Status::Rejected).await;
    assert_eq!(rejected.reasons, vec![ReasonCode::RejectedByReviewer, ReasonCode::NotSameHousehold]);
    assert!(rejected.coupon_code.is_none());
    assert!(rejected.history.iter().any(|h| h.actor == "reviewer:bob"));
}
