//! Launch day and the operator switches, over HTTP: the pre-queue drawn at opening from the
//! published seed, queue-everyone, fail-open that ends by itself, the session cap changed at
//! runtime, and the admin API that sets them.

mod common;

use std::time::Duration;

use common::*;
use kyufu_gateway::launch::{parse_seed_hex, Shuffle};
use kyufu_gateway::{Gateway, GatewayConfig};
use serde_json::Value;

async fn fairness(h: &Harness) -> Value {
    h.client.get(format!("{}/queue/fairness", h.base)).send().await.expect("fairness").json().await.expect("json")
}

/// Waits (without asserting on time) until the wall clock reaches `at`.
async fn sleep_until(at: u64) {
    while now_secs() < at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn prequeue_is_drawn_at_opening_from_the_published_seed_then_fifo() {
    // Closed door (rate 0): positions then equal places, so each one can be checked.
    let h = start(|c| {
        c.rate_per_sec = 0;
        c.burst = 0;
    })
    .await;
    let opens_at = now_secs() + 2;
    h.handle.set_opening(opens_at).await.expect("not opened");
    let before = fairness(&h).await;
    assert_eq!(before["phase"], "prequeue");
    assert_eq!(before["seed"], Value::Null, "the seed stays secret until opening");
    let commitment = before["seed_sha256"].as_str().unwrap_or_default().to_owned();
    assert_eq!(commitment.len(), 64);

    let mut early = Vec::new();
    for _ in 0..20 {
        let a = join(&h).await;
        assert_eq!((a.state(), a.position()), ("waiting", 0), "{:?}", a.body);
        assert!(a.body["opens_at"].is_string(), "the answer says when the draw happens");
        assert!(claims(&h, &a.ticket()).pq, "the ticket says pre-queue");
        early.push(a.ticket());
    }
    sleep_until(opens_at).await;
    let late: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            let a = join(&h).await;
            assert!(!claims(&h, &a.ticket()).pq);
            v.push(a.ticket());
        }
        v
    };
    let after = fairness(&h).await;
    assert_eq!((after["phase"].as_str(), after["prequeue_size"].as_u64()), (Some("open"), Some(20)));
    let seed = parse_seed_hex(after["seed"].as_str().unwrap_or_default()).expect("seed published");
    assert_eq!(kyufu_gateway::launch::commitment(&seed), commitment, "the seed matches the commitment");
    // Recomputed from the published seed alone: every pre-queue place, and a permutation.
    let shuffle = Shuffle::new(seed, 20);
    let mut places = Vec::new();
    for ticket in &early {
        let seq = claims(&h, ticket).seq;
        let a = status(&h, ticket).await;
        assert_eq!(a.position(), 1 + shuffle.permute(seq - 1), "seq {seq}");
        places.push(a.position());
    }
    places.sort_unstable();
    assert_eq!(places, (1..=20).collect::<Vec<_>>());
    // After opening: behind the whole pre-queue, in arrival order.
    for (i, ticket) in late.iter().enumerate() {
        assert_eq!(status(&h, ticket).await.position(), 21 + i as u64);
    }
    // Opening admits nobody by itself; the rate does.
    h.handle.set_rate(1000, 1000);
    let first_place = early.iter().find(|t| claims(&h, t).seq == 1).cloned().unwrap_or_default();
    until_admitted(&h, &first_place, Duration::from_secs(10)).await;
    assert!(h.handle.set_opening(now_secs() + 60).await.is_err(), "the draw cannot be redone");
}

/// A gateway serving its routes without the admission ticker: only joins admit.
async fn start_without_ticker(tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let keyring = kyufu_admission::Keyring::random();
    let mut config = GatewayConfig::new(EVENT, keyring, "http://127.0.0.1:9");
    config.rate_per_sec = 1000;
    config.burst = 1000;
    tweak(&mut config);
    let keyring = config.keyring.clone();
    let (gateway, handle) = Gateway::new(config, kyufu_telemetry::new_registry()).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let ops = common::serve_ops(gateway.ops_router()).await;
    tokio::spawn(async move { axum::serve(listener, gateway.router()).await });
    Harness { base, ops, handle, keyring, client: reqwest::Client::new() }
}

#[tokio::test]
async fn queue_everyone_sends_even_a_lone_visitor_through_the_queue() {
    let h = start_without_ticker(|_| {}).await;
    assert!(join(&h).await.admitted(), "an idle door admits in the join answer");
    h.handle.set_queue_everyone(true);
    let a = join(&h).await;
    assert_eq!((a.state(), a.position()), ("waiting", 1), "{:?}", a.body);
    assert!(a.pass().is_none());
    assert!(h.handle.snapshot().await.expect("snapshot").queue_everyone);
    h.handle.set_queue_everyone(false);
    // The next join pumps again and admits both, in order.
    assert!(join(&h).await.admitted());
    assert!(status(&h, &a.ticket()).await.admitted());
}

#[tokio::test]
async fn fail_open_admits_everyone_until_its_time_then_ends_by_itself() {
    let h = start(|c| {
        c.rate_per_sec = 0;
        c.burst = 0;
    })
    .await;
    let waiting = join(&h).await;
    assert_eq!(waiting.state(), "waiting");
    let until = now_secs() + 2;
    h.handle.set_fail_open_until(until);
    let a = join(&h).await;
    assert!(a.admitted(), "{:?}", a.body);
    let pass = a.pass().unwrap_or_default().to_owned();
    assert!(kyufu_admission::verify_pass(&h.keyring, &pass, EVENT, now_secs()).is_ok(), "a pass intake accepts");
    assert!(status(&h, &waiting.ticket()).await.admitted(), "a waiting visitor is let in on the next poll");
    assert_eq!(h.handle.snapshot().await.expect("snapshot").fail_open_until, Some(until));
    sleep_until(until).await;
    // Nobody switched it off: the door is the queue again.
    assert_eq!(join(&h).await.state(), "waiting");
    assert_eq!(h.handle.snapshot().await.expect("snapshot").fail_open_until, None);
    // A fail-open admission stays valid (same pass) until its pass expires.
    let again = status(&h, &a.ticket()).await;
    assert_eq!(again.pass(), Some(pass.as_str()));
}

#[tokio::test]
async fn session_cap_holds_admissions_and_raising_it_takes_effect_at_runtime() {
    let h = start(|c| {
        c.rate_per_sec = 1000;
        c.burst = 1000;
        c.session_cap = 2;
    })
    .await;
    let answers = [join(&h).await, join(&h).await, join(&h).await, join(&h).await];
    assert!(answers[0].admitted() && answers[1].admitted());
    assert!(!answers[2].admitted() && !answers[3].admitted(), "the cap of 2 holds the rest");
    // Several ticks later they still wait although the bucket is full.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&h, &answers[2].ticket()).await.position(), 1);
    let snap = h.handle.snapshot().await.expect("snapshot");
    assert_eq!((snap.session_cap, snap.admitted_sessions), (Some(2), 2));
    h.handle.set_session_cap(3);
    until_admitted(&h, &answers[2].ticket(), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&h, &answers[3].ticket()).await.position(), 1, "3 is the new cap");
    h.handle.set_session_cap(0);
    until_admitted(&h, &answers[3].ticket(), Duration::from_secs(10)).await;
}

#[tokio::test]
async fn admin_api_sets_the_launch_controls() {
    let h = start(|_| {}).await;
    let token = "a-long-enough-admin-token";
    let router = kyufu_gateway::admin::admin_router(h.handle.clone(), token).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let staff = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let put = |path: &str, body: Value| {
        h.client.put(format!("{staff}{path}")).bearer_auth(token).header("X-Operator", "tester").json(&body).send()
    };
    let v: Value = put("/admin/v1/queue-everyone", serde_json::json!({"enabled": true})).await.expect("put").json().await.expect("json");
    assert_eq!(v["queue_everyone"], true);
    let v: Value = put("/admin/v1/session-cap", serde_json::json!({"max_sessions": 500})).await.expect("put").json().await.expect("json");
    assert_eq!(v["session_cap"], 500);
    let until = kyufu_gateway::launch::rfc3339(now_secs() + 600).unwrap_or_default();
    let v: Value = put("/admin/v1/fail-open", serde_json::json!({"until": until})).await.expect("put").json().await.expect("json");
    assert_eq!(v["fail_open_until"].as_str(), Some(until.as_str()));
    let v: Value = h.client.delete(format!("{staff}/admin/v1/fail-open")).bearer_auth(token).send().await.expect("delete").json().await.expect("json");
    assert_eq!(v["fail_open_until"], Value::Null);
    let past = put("/admin/v1/fail-open", serde_json::json!({"until": "2020-01-01T00:00:00Z"})).await.expect("put");
    assert_eq!(past.status().as_u16(), 422, "a fail-open must end in the future");
    let opens = kyufu_gateway::launch::rfc3339(now_secs() + 3600).unwrap_or_default();
    let v: Value = put("/admin/v1/opening", serde_json::json!({"opens_at": opens})).await.expect("put").json().await.expect("json");
    assert_eq!((v["opens_at"].as_str(), v["opened"].as_bool()), (Some(opens.as_str()), Some(false)));
    assert_eq!(fairness(&h).await["phase"], "prequeue");
    let bad = put("/admin/v1/opening", serde_json::json!({"opens_at": "9am"})).await.expect("put");
    assert_eq!(bad.status().as_u16(), 422);
    let unauth = h.client.put(format!("{staff}/admin/v1/session-cap")).json(&serde_json::json!({"max_sessions": 1})).send().await.expect("put");
    assert_eq!(unauth.status().as_u16(), 401);
    assert_eq!(h.handle.snapshot().await.expect("snapshot").session_cap, Some(500), "refused calls change nothing");
}

#[tokio::test]
async fn waiting_page_before_opening_says_early_arrival_gives_no_advantage() {
    // 09:00 JST tomorrow-ish: any time an hour ahead works; the page shows it in Japan time.
    let opens_at = now_secs() + 3600;
    let h = start(|c| c.opens_at = Some(opens_at)).await;
    let ticket = join(&h).await.ticket();
    let hhmm = {
        let day = (opens_at + 9 * 3600) % 86_400;
        format!("{:02}:{:02}", day / 3600, day % 3600 / 60)
    };
    for (lang, text) in [("ja", "無作為に順番が決まります"), ("en", "Arriving early gives no advantage")] {
        let page = h
            .client
            .get(format!("{}/wait?lang={lang}", h.base))
            .header("X-Queue-Ticket", &ticket)
            .send()
            .await
            .expect("wait page")
            .text()
            .await
            .expect("html");
        assert!(page.contains(text), "{lang}: {page}");
        assert!(page.contains(&hhmm), "{lang}: the opening time {hhmm}");
        assert!(page.contains("data-prequeue"), "the script knows to reload at the draw");
        // Without JavaScript the page refreshes itself; with it, the script polls and the refresh
        // (inside <noscript>) is never scheduled, so it cannot reload the page under the script.
        assert!(page.contains("<noscript><meta http-equiv=\"refresh\""), "{lang}: {page}");
        assert!(!page.replace("<noscript><meta http-equiv=\"refresh\"", "").contains("http-equiv=\"refresh\""), "{lang}: a bare refresh");
    }
}

#[tokio::test]
async fn the_same_applicant_reference_gets_the_same_place_back() {
    let h = start_without_ticker(|c| {
        c.rate_per_sec = 0;
        c.burst = 0;
    })
    .await;
    let join_with = |body: Value| h.client.post(format!("{}/queue/join", h.base)).json(&body).send();
    let first: Value = join_with(serde_json::json!({"reference": "AB-1234"})).await.expect("join").json().await.expect("json");
    let other: Value = join_with(serde_json::json!({"reference": "CD-5678"})).await.expect("join").json().await.expect("json");
    let again: Value = join_with(serde_json::json!({"reference": "ab1234"})).await.expect("join").json().await.expect("json");
    let seq = |v: &Value| claims(&h, v["ticket"].as_str().unwrap_or_default()).seq;
    assert_eq!(seq(&again), seq(&first), "same reference, same number");
    assert_eq!((again["position"].as_u64(), first["position"].as_u64()), (Some(1), Some(1)));
    assert_eq!(seq(&other), 2);
    assert_eq!(h.handle.snapshot().await.expect("snapshot").counters.issued, 2, "no second place was issued");
    assert_eq!(seq(&join(&h).await.body), 3, "without a reference: a new place as always");
    let bad = join_with(serde_json::json!({"reference": "AB 12; DROP"})).await.expect("join");
    assert_eq!(bad.status().as_u16(), 422);
    assert_eq!(bad.json::<Value>().await.expect("json")["code"], "invalid_reference");
}
