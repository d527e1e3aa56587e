//! The waiting room over HTTP: immediate admission of a lone visitor, FIFO order under a slow
//! rate, ETA, pause and resume, ticket refusals, cookies, and the standard error bodies.

mod common;

use std::time::{Duration, Instant};

use common::{claims, join, now_secs, start, status, until_admitted, EVENT};
use kyufu_admission::{verify_pass, Keyring, PassClaims, Purpose};
use kyufu_gateway::TicketClaims;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn a_lone_visitor_is_admitted_at_once_with_a_pass_intake_accepts() {
    let h = start(|_| {}).await;
    let a = join(&h).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.state(), "admitted", "{:?}", a.body);
    assert_eq!(a.position(), 0);
    assert!(a.body["refresh_after_seconds"].as_u64().is_some_and(|s| s >= 1));
    let ticket = a.ticket();
    let pass = a.pass().expect("pass in the join answer").to_owned();
    let claims = verify_pass(&h.keyring, &pass, EVENT, now_secs()).expect("intake would accept the pass");
    assert_eq!(claims.seq, 1);
    assert!(claims.exp >= now_secs() + 29 * 60, "a pass lasts 30 minutes by default");
    assert!(verify_pass(&h.keyring, &pass, "other-event", now_secs()).is_err());
    assert_eq!(a.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let cookies = a.cookies();
    assert!(cookies.contains(&format!("kyufu_ticket={ticket}; Path=/; HttpOnly; SameSite=Lax")), "{cookies:?}");
    assert!(cookies.contains(&format!("kyufu_pass={pass}; Path=/; HttpOnly; SameSite=Lax")), "{cookies:?}");

    // Polling with the ticket, by header or by cookie, gives the very same pass again.
    let again = status(&h, &ticket).await;
    assert_eq!((again.state(), again.pass()), ("admitted", Some(pass.as_str())));
    let by_cookie = h
        .client
        .get(format!("{}/queue/status", h.base))
        .header("Cookie", format!("other=1; kyufu_ticket={ticket}"))
        .send()
        .await
        .expect("status");
    assert_eq!(by_cookie.status(), StatusCode::OK);
    let body: Value = by_cookie.json().await.expect("json");
    assert_eq!(body["pass"].as_str(), Some(pass.as_str()));
}

#[tokio::test]
async fn a_mistyped_page_address_is_an_html_page_in_the_visitors_language() {
    let h = start(|_| {}).await;
    let get = |path: &str, lang: Option<&str>| {
        let mut r = h.client.get(format!("{}{path}", h.base)).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        if let Some(l) = lang {
            r = r.header("cookie", format!("kyufu_lang={l}"));
        }
        r.send()
    };
    let ja = get("/stauts", None).await.expect("get");
    assert_eq!(ja.status().as_u16(), 404);
    assert!(ja.headers()["content-type"].to_str().unwrap_or("").starts_with("text/html"));
    let text = ja.text().await.expect("text");
    assert!(text.contains("ページが見つかりません") && text.contains("href=\"/status\""), "{text}");
    let en = get("/apply/step2", Some("en")).await.expect("get").text().await.expect("text");
    assert!(en.contains("Page not found") && en.contains("<html lang=\"en\""), "{en}");
}

#[tokio::test]
async fn metrics_are_served_on_the_operations_address_only() {
    let h = start(|_| {}).await;
    let public = h.client.get(format!("{}/metrics", h.base)).send().await.expect("get");
    assert_eq!(public.status().as_u16(), 404, "the public port never serves metrics");
    let ops = h.client.get(format!("{}/metrics", h.ops)).send().await.expect("get").text().await.expect("text");
    assert!(ops.contains("kyufu_gateway_"), "{ops}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(h.client.get(format!("{}{path}", h.base)).send().await.expect("get").status().as_u16(), 200, "{path} stays public");
    }
}

#[tokio::test]
async fn cookies_are_secure_when_configured() {
    let h = start(|c| c.secure_cookies = true).await;
    let a = join(&h).await;
    let cookies = a.cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(cookies.iter().all(|c| c.ends_with("; HttpOnly; SameSite=Lax; Secure")), "{cookies:?}");
}

#[tokio::test]
async fn visitors_are_admitted_in_join_order() {
    let h = start(|c| {
        c.rate_per_sec = 2;
        c.burst = 1;
    })
    .await;
    const N: usize = 10;
    let mut tickets = Vec::new();
    let mut seqs = Vec::new();
    let mut join_positions = Vec::new();
    for _ in 0..N {
        let a = join(&h).await;
        assert_eq!(a.status, StatusCode::OK);
        seqs.push(claims(&h, &a.ticket()).seq);
        join_positions.push(if a.admitted() { 0 } else { a.position() });
        tickets.push(a.ticket());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "numbers follow join order: {seqs:?}");
    assert_eq!(join_positions[0], 0, "the first visitor meets a full bucket");
    assert!(join_positions[1] >= 1, "{join_positions:?}");
    assert!(join_positions.windows(2).all(|w| w[0] <= w[1]), "{join_positions:?}");

    // Rounds of polls, latest joiner first: the cursor only grows during a round, so once a later
    // visitor is seen admitted every earlier one must be too, and waiting positions must shrink
    // strictly towards the front.
    let mut admitted_in_round: [Option<usize>; N] = [None; N];
    let mut last_position = [u64::MAX; N];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sped_up = false;
    for round in 0.. {
        let mut later_admitted = false;
        let mut later_position = u64::MAX;
        for i in (0..N).rev() {
            let a = status(&h, &tickets[i]).await;
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
            tickets[i] = a.ticket();
            if a.admitted() {
                later_admitted = true;
                admitted_in_round[i].get_or_insert(round);
                let pass = verify_pass(&h.keyring, a.pass().unwrap_or_default(), EVENT, now_secs()).expect("pass");
                assert_eq!(pass.seq, seqs[i]);
            } else {
                assert!(!later_admitted, "visitor {i} waits while a later one is admitted");
                assert!(admitted_in_round[i].is_none(), "visitor {i} went back to waiting");
                let p = a.position();
                assert!(p >= 1 && p < later_position, "positions grow in join order: {i} at {p}");
                assert!(p <= last_position[i], "visitor {i} moved back from {} to {p}", last_position[i]);
                last_position[i] = p;
                later_position = p;
            }
        }
        let admitted = admitted_in_round.iter().filter(|r| r.is_some()).count();
        if admitted == N {
            break;
        }
        // Order is shown at the slow rate; the rest is drained fast to keep the test short.
        if admitted >= 4 && !sped_up {
            h.handle.set_rate(200, 20);
            sped_up = true;
        }
        assert!(Instant::now() < deadline, "not all admitted: {admitted_in_round:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rounds: Vec<usize> = admitted_in_round.iter().map(|r| r.unwrap_or(usize::MAX)).collect();
    assert!(rounds.windows(2).all(|w| w[0] <= w[1]), "FIFO: {rounds:?}");
    assert!(rounds[N - 1] > rounds[0], "the last visitor was not admitted with the first: {rounds:?}");
}

#[tokio::test]
async fn eta_is_null_before_any_measurement() {
    let h = start(|c| {
        c.rate_per_sec = 1;
        c.burst = 1;
    })
    .await;
    assert!(join(&h).await.admitted());
    // The next token is a second away: visitors wait, but no admission has been measured yet.
    let b = join(&h).await;
    assert_eq!(b.state(), "waiting");
    assert_eq!(b.body["eta_seconds"], Value::Null, "{:?}", b.body);
    assert_eq!(b.body["refresh_after_seconds"].as_u64(), Some(5));
}

#[tokio::test]
async fn eta_appears_once_admissions_are_measured_and_goes_while_paused() {
    let h = start(|c| {
        c.rate_per_sec = 2;
        c.burst = 1;
    })
    .await;
    h.handle.pause();
    let mut last = None;
    for _ in 0..6 {
        let a = join(&h).await;
        assert_eq!(a.state(), "waiting", "paused: nobody is admitted, not even the first");
        assert_eq!(a.body["eta_seconds"], Value::Null);
        assert!(a.body["message"].as_str().is_some_and(|m| m.contains("paused")), "{:?}", a.body);
        last = Some(a.ticket());
    }
    let mut ticket = last.unwrap_or_default();
    h.handle.resume();
    let deadline = Instant::now() + Duration::from_secs(3);
    let eta = loop {
        let a = status(&h, &ticket).await;
        assert_eq!(a.state(), "waiting", "the sixth visitor waits for seconds at 2/s");
        assert!(a.body.get("message").is_none(), "no pause message after resume");
        ticket = a.ticket();
        if let Some(eta) = a.body["eta_seconds"].as_u64() {
            break eta;
        }
        assert!(Instant::now() < deadline, "no ETA after resuming: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(eta >= 1);
    h.handle.pause();
    let a = status(&h, &ticket).await;
    assert_eq!(a.state(), "waiting");
    assert_eq!(a.body["eta_seconds"], Value::Null, "no ETA while paused");
}

#[tokio::test]
async fn pause_holds_the_queue_and_resume_releases_it() {
    let h = start(|c| {
        c.rate_per_sec = 50;
        c.burst = 5;
    })
    .await;
    h.handle.pause();
    assert!(h.handle.is_paused());
    let mut tickets = Vec::new();
    for expected in 1..=3 {
        let a = join(&h).await;
        assert_eq!((a.state(), a.position()), ("waiting", expected));
        tickets.push(a.ticket());
    }
    // At 50/s all three would be in within a few ticks if the pause leaked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, t) in tickets.iter().enumerate() {
        let a = status(&h, t).await;
        assert_eq!((a.state(), a.position()), ("waiting", i as u64 + 1), "paused queue moved");
    }
    let snap = h.handle.snapshot().await.expect("snapshot");
    assert_eq!((snap.counters.issued, snap.counters.cursor, snap.paused), (3, 0, true));
    h.handle.resume();
    for t in &tickets {
        until_admitted(&h, t, Duration::from_secs(3)).await;
    }
}

#[tokio::test]
async fn fast_polls_get_their_own_ticket_back() {
    let h = start(|_| {}).await;
    h.handle.pause();
    let a = join(&h).await;
    let ticket = a.ticket();
    for _ in 0..3 {
        let b = status(&h, &ticket).await;
        assert_eq!((b.status, b.state()), (StatusCode::OK, "waiting"));
        assert_eq!(b.ticket(), ticket, "polled before refresh_after: same ticket, not an error");
        assert!(b.cookies().is_empty(), "nothing changed, no cookie to set");
    }
}

#[tokio::test]
async fn bad_tickets_get_the_right_codes() {
    let h = start(|c| {
        c.rate_per_sec = 1;
        c.burst = 1;
    })
    .await;
    let a = join(&h).await;
    let b = join(&h).await;
    assert!(a.admitted() && !b.admitted());
    let (ta, tb) = (a.ticket(), b.ticket());
    let pa: Vec<&str> = ta.split('.').collect();
    let pb: Vec<&str> = tb.split('.').collect();
    let cb = claims(&h, &tb);
    let now = now_secs();

    let missing = h.client.get(format!("{}/queue/status", h.base)).send().await.expect("status");
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["code"], "ticket_required");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let other_keyring = Keyring::random();
    let mut refused = vec![
        ("garbage", "not-a-ticket".to_owned()),
        ("too long", "x".repeat(5000)),
        // Visitor B takes A's payload (an earlier, admitted number) and keeps its own MAC.
        ("queue jump", format!("{}.{}.{}", pb[0], pa[1], pb[2])),
        ("tampered", format!("{}.{}A.{}", pb[0], pb[1], pb[2])),
        ("other keyring", other_keyring.sign(Purpose::Ticket, &cb)),
        ("other event", h.keyring.sign(Purpose::Ticket, &TicketClaims { ev: "other-event".into(), ..cb.clone() })),
        ("never issued", h.keyring.sign(Purpose::Ticket, &TicketClaims { seq: 99, ..cb.clone() })),
        ("a pass", a.pass().unwrap_or_default().to_owned()),
        ("pass claims as ticket", h.keyring.sign(Purpose::Pass, &PassClaims::new(EVENT, 1, now, 60))),
    ];
    // A ticket from another queue (another gateway, or before a restart) with the same keyring.
    let h2 = start(|c| c.keyring = h.keyring.clone()).await;
    refused.push(("other queue", join(&h2).await.ticket()));
    for (what, ticket) in &refused {
        let r = status(&h, ticket).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "ticket_invalid"), "{what}: {:?}", r.body);
    }

    // Expired: admitted long ago (the pass would be dead), or never refreshed while the turn came.
    let ca = claims(&h, &ta);
    let expired = [
        TicketClaims { adm: Some(now - 3 * 3600), ..ca.clone() },
        TicketClaims { adm: None, iat: now - 3 * 3600, nxt: now - 3 * 3600 + 5, ..ca },
    ];
    for c in &expired {
        let r = status(&h, &h.keyring.sign(Purpose::Ticket, c)).await;
        assert_eq!((r.status, r.code()), (StatusCode::GONE, "ticket_expired"), "{c:?}: {:?}", r.body);
    }
    // The genuine tickets still work after all that.
    assert_eq!(status(&h, &ta).await.state(), "admitted");
    assert_eq!(status(&h, &tb).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_standard_body() {
    let h = start(|_| {}).await;
    let r = h.client.get(format!("{}/nope", h.base)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "not_found");
    let r = h.client.get(format!("{}/queue/join", h.base)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "method_not_allowed");
    for path in ["/healthz", "/readyz"] {
        let r = h.client.get(format!("{}{path}", h.base)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_joins_polls_and_passes() {
    let h = start(|_| {}).await;
    let a = join(&h).await;
    status(&h, &a.ticket()).await;
    status(&h, "garbage").await;
    let text = h.client.get(format!("{}/metrics", h.ops)).send().await.expect("get").text().await.expect("text");
    for line in [
        "kyufu_gateway_joins_total 1",
        "kyufu_gateway_passes_issued_total 1",
        "kyufu_gateway_admitted_total 1",
        "kyufu_gateway_status_polls_total{outcome=\"admitted\"} 1",
        "kyufu_gateway_status_polls_total{outcome=\"invalid\"} 1",
        "kyufu_gateway_queue_length 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
    }
    assert!(!text.contains(&a.ticket()));
}

#[tokio::test]
async fn queue_wait_and_active_sessions_follow_admissions() {
    let h = start(|_| {}).await;
    // Admitted in the join answer: a wait of zero.
    let first = join(&h).await;
    assert!(first.admitted());
    // A second visitor waits while admission is paused, for at least a second of wall clock.
    h.handle.pause();
    let second = join(&h).await;
    assert!(!second.admitted());
    assert_eq!(claims(&h, &second.ticket()).jat, Some(claims(&h, &second.ticket()).iat), "join time signed in");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    h.handle.resume();
    let admitted = until_admitted(&h, &second.ticket(), Duration::from_secs(3)).await;
    // Polling the admitted ticket again must not count the wait twice.
    status(&h, &admitted.ticket()).await;
    let text = h.client.get(format!("{}/metrics", h.ops)).send().await.expect("get").text().await.expect("text");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
    };
    assert_eq!(value("kyufu_gateway_queue_wait_seconds_count"), 2.0);
    let sum = value("kyufu_gateway_queue_wait_seconds_sum");
    assert!((1.0..10.0).contains(&sum), "waits: 0 s and about 1 s, sum {sum}");
    assert_eq!(value("kyufu_gateway_queue_wait_seconds_bucket{le=\"1\"}"), 1.0 + f64::from(sum < 2.0));
    assert_eq!(value("kyufu_gateway_active_sessions"), 2.0, "both passes are within their lifetime");
    assert_eq!(value("kyufu_ready"), 1.0);
    assert_eq!(value("kyufu_dependency_up{dependency=\"queue_state\"}"), 1.0);
}

#[tokio::test]
async fn abandoned_tickets_are_skipped_and_on_time_pollers_keep_their_place() {
    // Expiry after 2 refresh intervals of 1 s: a ticket silent for more than 2 s near the front is gone.
    let h = common::start(|c| {
        c.refresh_secs = 1;
        c.expire_after_polls = 2;
    })
    .await;
    h.handle.pause();
    let mut a = common::join(&h).await.ticket();
    let b = common::join(&h).await.ticket();
    let mut c = common::join(&h).await.ticket();
    // A and C poll every 300 ms for 3.5 s; B has closed the tab.
    let until = std::time::Instant::now() + Duration::from_millis(3_500);
    while std::time::Instant::now() < until {
        for t in [&mut a, &mut c] {
            let ans = common::status(&h, t).await;
            assert_eq!(ans.status, StatusCode::OK, "{:?}", ans.body);
            assert!(!ans.admitted(), "paused");
            *t = ans.ticket();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.handle.resume();
    assert!(common::until_admitted(&h, &a, Duration::from_secs(5)).await.admitted());
    assert!(common::until_admitted(&h, &c, Duration::from_secs(5)).await.admitted());
    let late = common::status(&h, &b).await;
    assert_eq!((late.status, late.code()), (StatusCode::GONE, "ticket_expired"), "{:?}", late.body);
    let text = h.client.get(format!("{}/metrics", h.ops)).send().await.expect("get").text().await.expect("text");
    let value = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned())).unwrap_or_default()
    };
    assert_eq!(value("kyufu_gateway_tickets_expired_total "), "1", "{text}");
    // B was passed over without using an admission: only A and C count as admitted.
    assert_eq!(value("kyufu_gateway_admitted_total "), "2", "{text}");
}

#[tokio::test]
async fn one_address_joining_too_often_gets_429_with_retry_after() {
    let h = start(|c| {
        c.join_limit_per_sec = 1;
        c.join_limit_burst = 3;
        c.join_limit_loopback = true;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(join(&h).await.status, StatusCode::OK);
    }
    let refused = join(&h).await;
    assert_eq!((refused.status, refused.code()), (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"));
    let retry: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(join(&h).await.status, StatusCode::OK, "allowed again after Retry-After");
    let text = h.client.get(format!("{}/metrics", h.ops)).send().await.expect("get").text().await.expect("text");
    assert!(text.contains("kyufu_gateway_joins_rate_limited_total 1"), "{text}");
}
