//! The review console over HTTP with the real stages on embedded storage: logins and sessions,
//! "take the next case" that never gives one case to two reviewers, leases that are shown, renewed
//! and given back, approvals that flow on to a coupon, rejections with a reason in the history,
//! clear pages for refused decisions, filters, search and paging.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{client, login, password};
use kyufu_domain::{Program, ReasonCode, Status};
use kyufu_embedded::EmbeddedStore;
use kyufu_pipeline::notify::OutboxNotifier;
use kyufu_pipeline::{PipelineDeps, StageKind, StageMetrics};
use kyufu_ports::events::topics;
use kyufu_review::auth::ThrottleLimits;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_take_cases_once_and_approvals_become_coupons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let registry = common::registry(200);
    let program = Program::demo(common::reference());
    let deps = common::deps(&store, registry.clone(), &program, common::reviewers(&["alice", "bob"]));
    let pipeline = PipelineDeps {
        bus: deps.bus.clone(),
        status: deps.status.clone(),
        documents: deps.documents.clone(),
        units: store.units(),
        registry: registry.clone(),
        identity_secret: common::secret(),
        program: program.clone(),
        notifier: Arc::new(OutboxNotifier::new(dir.path().join("outbox"), "noreply@example.jp").expect("sender")),
        mail_links: kyufu_pipeline::notify::MailLinks {
            tokens: kyufu_domain::token::StatusTokens::new(b"status secret for tests, long enough".to_vec()),
            public_url: "http://localhost".into(),
        },
        metrics: StageMetrics::new(&kyufu_telemetry::new_registry()),
    };
    let (_stop, rx) = tokio::sync::watch::channel(false);
    for k in StageKind::ALL {
        kyufu_pipeline::spawn_stage(k, &pipeline, rx.clone());
    }
    let base = common::serve(deps.clone()).await;

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
    // Two applications held for review by the real stages: the guardian's kana name mistyped.
    let households = registry.households_with_children(common::reference(), 18);
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for (i, h) in households.iter().take(2).enumerate() {
        let mut app = kyufu_pipeline::synthetic::application_for(h.guardian, h.children[0]);
        app.guardian.given_name_kana = "マチガイ".into();
        app.guardian.email = format!("Parent.{i}@Example.jp");
        app.guardian.phone = format!("080-1111-22{i:02}");
        let ev = common::store_application(&deps, app).await;
        deps.bus.publish(topics::RECEIVED, ev.identity_key.as_bytes(), &ev.to_json()).await.expect("publish");
        // The queue is oldest first by the time a case reached review: the first is there
        // before the second is sent.
        settled(ev.application_id, Status::NeedsReview).await;
        ids.push(ev.application_id);
        events.push(ev);
    }
    for id in &ids {
        let r = settled(*id, Status::NeedsReview).await;
        assert!(r.reasons.contains(&ReasonCode::GuardianNotInRegistry), "{r:?}");
    }

    // No login: pages send to the login form, the API answers 401 with a challenge.
    let anon = client();
    let resp = anon.get(format!("{base}/review/cases/{}", ids[0])).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], format!("/review/login?next=/review/cases/{}", ids[0]).as_str());
    let resp = anon.get(format!("{base}/review/api/queue")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    let resp = anon.post(format!("{base}/review/login")).form(&[("name", "alice"), ("password", "bob-long-password")]).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.text().await.expect("html").contains("名前またはパスワードが違います"));
    // An API client may still log in with HTTP Basic.
    let resp = anon.get(format!("{base}/review/api/queue")).basic_auth("bob", Some(password("bob"))).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    // Pages and their forms want the session: a browser's remembered Basic login decides nothing.
    let resp = anon.post(format!("{base}/review/cases/{}/decision", ids[0])).basic_auth("bob", Some(password("bob"))).form(&[("decision", "approve")]).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 303, "to the login form");

    let alice = login(&base, "alice").await;
    let bob = login(&base, "bob").await;

    // The queue, oldest first, as HTML (with Japan times) and JSON, nobody holding anything.
    let page = alice.get(format!("{base}/review")).send().await.expect("get").text().await.expect("html");
    assert!(page.contains(&ids[0].to_string()[..8]) && page.contains("審査待ち 2 件"), "{page}");
    let jst = ids_received_jst(&deps, ids[0]).await;
    assert!(page.contains(&jst), "received time in Japan time {jst}: {page}");
    let queue: Value = alice.get(format!("{base}/review/api/queue")).send().await.expect("get").json().await.expect("json");
    let listed: Vec<&str> = queue["items"].as_array().expect("items").iter().filter_map(|i| i["application_id"].as_str()).collect();
    assert_eq!(listed, vec![ids[0].to_string(), ids[1].to_string()]);
    assert!(queue["items"].as_array().expect("items").iter().all(|i| i["held_by"].is_null()));

    // Looking at a case takes nothing: the document, the registry comparison, a "take" button.
    let case = alice.get(format!("{base}/review/cases/{}", ids[0])).send().await.expect("get").text().await.expect("html");
    assert!(case.contains("住民記録との照合") && case.contains("未担当です") && case.contains("承認する"), "{case}");
    assert!(case.contains("種別 お子さん"), "the kind in the reviewer's language: {case}");
    let doc = alice.get(format!("{base}/review/cases/{}/document", ids[0])).send().await.expect("get");
    // The documents step ran before the ID check sent the case here: its rendition (a JPEG, no
    // metadata) is what the reviewer sees, not the uploaded PNG.
    assert_eq!(doc.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("image/jpeg"));
    assert!(doc.bytes().await.expect("bytes").starts_with(b"\xff\xd8"));

    // Bob takes the next case: the oldest, since Alice only looked. Alice then gets the other one.
    let next = |c: &reqwest::Client| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            let v: Value = c.post(format!("{base}/review/api/next")).send().await.expect("post").json().await.expect("json");
            v["application_id"].as_str().map(|s| Uuid::parse_str(s).expect("uuid"))
        }
    };
    assert_eq!(next(&bob).await, Some(ids[0]));
    let resp = alice.post(format!("{base}/review/next")).send().await.expect("post");
    assert_eq!(resp.headers()["location"], format!("/review/cases/{}", ids[1]).as_str(), "the page form opens the taken case");
    assert_eq!(next(&alice).await, None, "nothing left that nobody holds");
    let resp = alice.post(format!("{base}/review/next")).send().await.expect("post");
    assert_eq!(resp.headers()["location"], "/review?none=1");

    // The list shows who holds what until when; so does the case page, without a decision form.
    let page = alice.get(format!("{base}/review")).send().await.expect("get").text().await.expect("html");
    assert!(page.contains("bob さんが担当（") && page.contains("あなた（"), "{page}");
    let queue: Value = alice.get(format!("{base}/review/api/queue")).send().await.expect("get").json().await.expect("json");
    assert_eq!(queue["items"][0]["held_by"], "bob");
    let case = alice.get(format!("{base}/review/cases/{}", ids[0])).send().await.expect("get").text().await.expect("html");
    assert!(case.contains("bob さんが担当しています") && !case.contains("承認する"), "{case}");
    let mine = alice.get(format!("{base}/review/cases/{}", ids[1])).send().await.expect("get").text().await.expect("html");
    assert!(mine.contains("あなたが担当しています") && mine.contains("data-holding=\"1\""), "{mine}");

    // Alice cannot decide Bob's case: JSON for the API, a page in words for the form.
    let resp = alice.post(format!("{base}/review/api/cases/{}/decision", ids[0])).json(&json!({"decision": "approve"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "case_locked");
    let resp = alice.post(format!("{base}/review/cases/{}/decision", ids[0])).form(&[("decision", "approve")]).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    assert!(resp.headers()["content-type"].to_str().expect("ct").starts_with("text/html"));
    assert!(resp.text().await.expect("html").contains("bob さんが"), "says who holds it");
    // Nor renew his lease.
    let resp = alice.post(format!("{base}/review/api/cases/{}/lease", ids[0])).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);

    // Bob renews (what his open page does), then approves: on to a coupon, his name in the history.
    let renewed: Value = bob.post(format!("{base}/review/api/cases/{}/lease", ids[0])).send().await.expect("post").json().await.expect("json");
    assert!(renewed["lease_until"].is_string(), "{renewed}");
    let resp = bob.post(format!("{base}/review/api/cases/{}/decision", ids[0])).json(&json!({"decision": "approve"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let done = settled(ids[0], Status::CouponIssued).await;
    assert!(done.coupon_code.is_some());
    assert!(done.history.iter().any(|h| h.status == Status::Approved && h.actor == "reviewer:bob"), "{:?}", done.history);
    // A second decision is refused: JSON for the API, an HTML page in words for the form.
    let resp = alice.post(format!("{base}/review/api/cases/{}/decision", ids[0])).json(&json!({"decision": "reject"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "case_not_pending");
    let resp = alice.post(format!("{base}/review/cases/{}/decision", ids[0])).form(&[("decision", "reject"), ("reason", "not_same_household")]).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 409);
    assert!(resp.headers()["content-type"].to_str().expect("ct").starts_with("text/html"));
    let text = resp.text().await.expect("html");
    assert!(text.contains("すでに判定されています") && text.contains("bob さんが") && !text.contains("\"code\""), "{text}");

    // Alice leaves her case without deciding (what the page does on leaving): Bob can take it.
    let resp = alice.post(format!("{base}/review/api/cases/{}/release", ids[1])).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(next(&bob).await, Some(ids[1]));
    // Bob rejects it with a reason through the form, and is sent on to the next case (none left).
    let resp = bob.post(format!("{base}/review/api/cases/{}/decision", ids[1])).json(&json!({"decision": "maybe"})).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 422);
    let resp = bob
        .post(format!("{base}/review/cases/{}/decision", ids[1]))
        .form(&[("decision", "reject"), ("reason", "not_same_household"), ("then", "next")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.headers()["location"], "/review?none=1");
    let rejected = settled(ids[1], Status::Rejected).await;
    assert_eq!(rejected.reasons, vec![ReasonCode::RejectedByReviewer, ReasonCode::NotSameHousehold]);
    assert!(rejected.coupon_code.is_none());
    // The history says who rejected it and why, in Japan time.
    let case = alice.get(format!("{base}/review/cases/{}", ids[1])).send().await.expect("get").text().await.expect("html");
    let history = &case[case.find("<h2>履歴</h2>").expect("history")..];
    assert!(history.contains("審査者 bob") && history.contains("同一世帯でない") && history.contains("却下"), "{history}");

    // Filters and search (any width, hiragana or katakana, phone, e-mail, number).
    let g = &events[1].application.guardian;
    let child = &events[1].application.child;
    let hiragana: String = format!("{} {}", child.family_name_kana, child.given_name_kana)
        .chars()
        .map(|c| if ('\u{30A1}'..='\u{30F6}').contains(&c) { char::from_u32(c as u32 - 0x60).unwrap_or(c) } else { c })
        .collect();
    let found = |q: String, status: &'static str| {
        let (c, base) = (alice.clone(), base.clone());
        async move {
            let v: Value = c.get(format!("{base}/review/api/queue")).query(&[("status", status), ("q", q.as_str())]).send().await.expect("get").json().await.expect("json");
            v["items"].as_array().expect("items").iter().filter_map(|i| i["application_id"].as_str().map(str::to_owned)).collect::<Vec<_>>()
        }
    };
    let one = vec![ids[1].to_string()];
    assert_eq!(found(hiragana, "all").await, one, "kana in hiragana");
    assert_eq!(found(g.phone.replace('-', ""), "rejected").await, one, "phone without hyphens");
    assert_eq!(found(g.email.to_uppercase(), "all").await, one, "e-mail in any case");
    assert_eq!(found(ids[1].to_string()[..8].to_owned(), "all").await, one, "number prefix");
    // The short reference from the completion page and the emails, typed in lower case without
    // its hyphen (assign finds the one the application already holds).
    let reference = kyufu_ports::reference::assign(&*deps.status, &program.id, ids[1]).await.expect("reference");
    assert_eq!(found(reference.as_str().to_lowercase(), "all").await, one, "reference {}", reference.display());
    assert_eq!(found(reference.display(), "rejected").await, one, "reference with its hyphen");
    assert!(found(g.phone.clone(), "needs_review").await.is_empty(), "the status filter applies");
    assert!(found("ソンザイシナイ".into(), "all").await.is_empty());
    let resp = alice.get(format!("{base}/review/api/queue?status=bogus")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "invalid_status");

    // Logging out ends the session.
    let resp = alice.post(format!("{base}/review/logout")).send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 303);
    let resp = alice.get(format!("{base}/review/api/queue")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 401);
}

/// The received time of a case as the list shows it (Japan time).
async fn ids_received_jst(deps: &kyufu_review::ReviewDeps, id: Uuid) -> String {
    let r = deps.status.get(id).await.expect("get").expect("record");
    let jst = chrono::FixedOffset::east_opt(9 * 3600).expect("offset");
    r.created_at.with_timezone(&jst).format("%Y-%m-%d %H:%M").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_and_sessions_run_out_and_failed_logins_are_throttled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let program = Program::demo(common::reference());
    let limits = ThrottleLimits { per_account: 3, per_address: 6, window: Duration::from_secs(600) };
    let reviewers = common::reviewers(&["alice", "bob", "carol"]).with_limits(limits).with_session_ttl(Duration::from_secs(3));
    let deps = common::deps(&store, common::registry(60), &program, reviewers);
    let ids = common::seed_review_cases(&deps, 30).await;
    let base = common::serve(deps).await;

    // 30 cases: two pages.
    let alice = login(&base, "alice").await;
    let first = alice.get(format!("{base}/review")).send().await.expect("get").text().await.expect("html");
    assert!(first.contains("30 件中 1–25 件目") && first.contains("1 / 2 ページ") && first.contains(&ids[24].to_string()[..8]), "{first}");
    assert!(!first.contains(&ids[25].to_string()[..8]));
    let second = alice.get(format!("{base}/review?page=2")).send().await.expect("get").text().await.expect("html");
    assert!(second.contains("26–30 件目") && second.contains(&ids[29].to_string()[..8]) && !second.contains(&ids[0].to_string()[..8]), "{second}");

    // The session runs out.
    assert_eq!(alice.get(format!("{base}/review/api/queue")).send().await.expect("get").status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(alice.get(format!("{base}/review/api/queue")).send().await.expect("get").status().as_u16(), 401, "expired");
    let resp = alice.get(format!("{base}/review")).send().await.expect("get");
    assert_eq!(resp.headers()["location"], "/review/login?next=/review", "back to the login form");

    // Three wrong passwords for bob: bob is held, with a message saying how long, even with
    // the right password; carol from the same address is still let in, until the address has
    // used up its own limit.
    let c = client();
    let try_login = |name: &'static str, pw: String| {
        let (c, base) = (c.clone(), base.clone());
        async move { c.post(format!("{base}/review/login")).form(&[("name", name), ("password", pw.as_str())]).send().await.expect("post") }
    };
    for _ in 0..3 {
        assert_eq!(try_login("bob", "guess".into()).await.status().as_u16(), 401);
    }
    let resp = try_login("bob", password("bob")).await;
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((500..=600).contains(&wait), "{wait}");
    let text = resp.text().await.expect("html");
    assert!(text.contains("約 10 分後にもう一度お試しください") && text.contains("Try again in about 10 minutes"), "{text}");
    // The API's Basic logins count the same way.
    let resp = c.get(format!("{base}/review/api/queue")).basic_auth("bob", Some(password("bob"))).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.json::<Value>().await.expect("json")["code"], "login_throttled");
    assert_eq!(try_login("carol", password("carol")).await.status().as_u16(), 303);
    for _ in 0..3 {
        assert_eq!(try_login("carol", "guess".into()).await.status().as_u16(), 401);
    }
    assert_eq!(try_login("alice", password("alice")).await.status().as_u16(), 429, "this address has failed six times");
}
