//! Two real gateway nodes (`Gateway::serve` on 127.0.0.1:0) sharing one queue in a real
//! `redis-server`, with the same ticket keys: visitors join either node and poll the other, and
//! are admitted in join order, each once, as on one node; with Redis killed, waiting visitors keep
//! their place while nobody is admitted, and admission resumes in order once Redis is back;
//! abandoned numbers are skipped while visitors polling only the other node keep their place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kyufu_admission::{Keyring, Purpose};
use kyufu_gateway::{Gateway, GatewayConfig, GatewayHandle, TicketClaims};
use kyufu_redis::{QueueStateConfig, RedisConfig, RedisQueueState};
use kyufu_testservers::redis::RedisServer;
use reqwest::StatusCode;
use serde_json::Value;

const EVENT: &str = "rice-2026";

struct Node {
    base: String,
    /// The operations address serving `/metrics` (never the public `base`).
    ops: String,
    handle: GatewayHandle,
}

async fn start_node(server: &RedisServer, prefix: &str, keyring: &Keyring, rate: u32) -> Node {
    start_node_with(server, prefix, keyring, rate, |_| {}).await
}

async fn start_node_with(
    server: &RedisServer,
    prefix: &str,
    keyring: &Keyring,
    rate: u32,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Node {
    let mut redis = RedisConfig::new(server.url());
    redis.prefix = prefix.to_owned();
    redis.response_timeout = Duration::from_millis(500);
    redis.connect_timeout = Duration::from_millis(500);
    let lease = QueueStateConfig { lease_ttl: Duration::from_millis(800), renew_every: Duration::from_millis(150), ..QueueStateConfig::default() };
    let state = RedisQueueState::connect(&redis, EVENT, lease).await.expect("connect to the test redis-server");
    let mut config = GatewayConfig::new(EVENT, keyring.clone(), "http://127.0.0.1:9");
    config.tick = Duration::from_millis(20);
    config.rate_per_sec = rate;
    config.burst = 1;
    // Every visitor polls its other node: no join limit, and skipping would be wrong anyway.
    config.join_limit_per_sec = 0;
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (gateway, handle) =
        Gateway::with_state(config, kyufu_telemetry::new_registry(), Arc::new(state)).expect("valid config");
    let ops_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = format!("http://{}", ops_listener.local_addr().expect("addr"));
    tokio::spawn(kyufu_http::serve(ops_listener, gateway.ops_router(), std::future::pending()));
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    Node { base, ops, handle }
}

/// A fresh redis-server and two gateway nodes sharing one queue in it at `rate`.
async fn two_nodes(rate: u32) -> (RedisServer, String, Keyring, [Node; 2]) {
    let server = RedisServer::start();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let keyring = Keyring::random();
    let nodes = [start_node(&server, &prefix, &keyring, rate).await, start_node(&server, &prefix, &keyring, rate).await];
    (server, prefix, keyring, nodes)
}

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    Reply { status, retry_after, body }
}

/// A visitor: the node it polls, its current ticket, and its number.
struct Visitor {
    seq: u64,
    ticket: String,
    polls: usize,
    last_position: u64,
    admitted: bool,
}

async fn join(client: &reqwest::Client, node: &Node, keyring: &Keyring) -> Visitor {
    let r = send(client.post(format!("{}/queue/join", node.base))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let ticket = r.body["ticket"].as_str().unwrap_or_default().to_owned();
    let claims: TicketClaims = keyring.verify(Purpose::Ticket, &ticket).expect("ticket signed with the shared keys");
    Visitor { seq: claims.seq, ticket, polls: 0, last_position: u64::MAX, admitted: r.body["state"] == "admitted" }
}

async fn poll(client: &reqwest::Client, node: &Node, ticket: &str) -> Reply {
    send(client.get(format!("{}/queue/status", node.base)).header("X-Queue-Ticket", ticket)).await
}

/// One round: every visitor polls the node it did not join, highest number first. The shared cursor
/// only grows, so if admission follows join order, the admitted visitors are always exactly the
/// lowest numbers (a lower number is polled after a higher one and cannot have fallen behind).
/// Returns how many waiting answers carried an ETA, per node.
async fn poll_round(client: &reqwest::Client, nodes: &[Node; 2], visitors: &mut [Visitor]) -> [usize; 2] {
    let mut etas = [0; 2];
    let mut saw_admitted = false;
    for (i, v) in visitors.iter_mut().enumerate().rev() {
        let other = (i + 1) % 2;
        let r = poll(client, &nodes[other], &v.ticket).await;
        assert_eq!(r.status, StatusCode::OK, "visitor {} on node {other}: {:?}", v.seq, r.body);
        v.polls += 1;
        let position = r.body["position"].as_u64().expect("position");
        assert!(position <= v.last_position, "visitor {}: position went back from {} to {position}", v.seq, v.last_position);
        v.last_position = position;
        if r.body["state"] == "admitted" {
            assert!(r.body["pass"].is_string(), "an admitted answer carries the pass");
            v.admitted = true;
            saw_admitted = true;
        } else {
            assert!(!v.admitted, "visitor {} was admitted and is waiting again", v.seq);
            assert!(!saw_admitted, "visitor {} waits while a later number was admitted", v.seq);
            if !r.body["eta_seconds"].is_null() {
                etas[other] += 1;
            }
        }
        if let Some(t) = r.body["ticket"].as_str() {
            v.ticket = t.to_owned();
        }
    }
    // Admitted visitors are exactly the lowest numbers.
    let admitted = visitors.iter().filter(|v| v.admitted).count();
    assert!(visitors.iter().take(admitted).all(|v| v.admitted), "admission skipped a number");
    etas
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

async fn admitted_total(client: &reqwest::Client, node: &Node) -> u64 {
    let text = client.get(format!("{}/metrics", node.ops)).send().await.expect("metrics").text().await.expect("text");
    metric(&text, "kyufu_gateway_admitted_total ")
}

async fn ready(client: &reqwest::Client, node: &Node) -> StatusCode {
    client.get(format!("{}/readyz", node.base)).send().await.expect("readyz").status()
}

/// Waits (bounded) until `node`'s readiness is `want`.
async fn until_ready(client: &reqwest::Client, node: &Node, want: StatusCode) {
    let until = Instant::now() + Duration::from_secs(20);
    while ready(client, node).await != want {
        assert!(Instant::now() < until, "{} /readyz did not become {want} within 20 s", node.base);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Visitors join alternately on the two nodes, one after the other (so join order is known).
async fn join_alternately(client: &reqwest::Client, nodes: &[Node; 2], keyring: &Keyring, n: usize) -> Vec<Visitor> {
    let mut visitors = Vec::with_capacity(n);
    for i in 0..n {
        visitors.push(join(client, &nodes[i % 2], keyring).await);
    }
    let seqs: Vec<u64> = visitors.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>(), "numbers follow join order across both nodes");
    visitors
}

/// Polls rounds until everyone is admitted (bounded); returns the ETA answers per node.
async fn until_all_admitted(client: &reqwest::Client, nodes: &[Node; 2], visitors: &mut [Visitor]) -> [usize; 2] {
    let until = Instant::now() + Duration::from_secs(60);
    let mut etas = [0; 2];
    while visitors.iter().any(|v| !v.admitted) {
        assert!(Instant::now() < until, "not everyone admitted within 60 s");
        let round = poll_round(client, nodes, visitors).await;
        etas = [etas[0] + round[0], etas[1] + round[1]];
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    etas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_admit_in_join_order_as_one_node_would() {
    let (_server, _prefix, keyring, nodes) = two_nodes(15).await;
    for node in &nodes {
        node.handle.pause();
    }
    let client = reqwest::Client::new();
    const VISITORS: usize = 30;
    let mut visitors = join_alternately(&client, &nodes, &keyring, VISITORS).await;
    // Paused: everyone waits, and either node tells each visitor the same place.
    poll_round(&client, &nodes, &mut visitors).await;
    assert!(visitors.iter().all(|v| !v.admitted && v.last_position == v.seq));
    for node in &nodes {
        node.handle.resume();
    }
    let etas = until_all_admitted(&client, &nodes, &mut visitors).await;
    // Each visitor admitted exactly once: the cursor moved once per visitor, by one node only.
    let counts = [admitted_total(&client, &nodes[0]).await, admitted_total(&client, &nodes[1]).await];
    assert_eq!(counts[0] + counts[1], VISITORS as u64, "admissions counted across nodes: {counts:?}");
    assert!(counts.contains(&0), "only the lease holder admits: {counts:?}");
    // The follower measures the rate from the cursor it sees move, so it gives ETAs too.
    assert!(etas[0] > 0 && etas[1] > 0, "waiting answers with an ETA per node: {etas:?}");
    let snapshot = nodes[1].handle.snapshot().await.expect("snapshot");
    assert_eq!((snapshot.counters.issued, snapshot.counters.cursor), (VISITORS as u64, VISITORS as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_visitors_keep_their_place_and_nobody_is_admitted() {
    let (mut server, _prefix, keyring, nodes) = two_nodes(10).await;
    for node in &nodes {
        node.handle.pause();
    }
    let client = reqwest::Client::new();
    const VISITORS: usize = 12;
    let mut visitors = join_alternately(&client, &nodes, &keyring, VISITORS).await;
    for node in &nodes {
        node.handle.resume();
        until_ready(&client, node, StatusCode::OK).await;
    }
    // Let a few in, then take Redis away while the rest wait.
    let until = Instant::now() + Duration::from_secs(30);
    while visitors.iter().filter(|v| v.admitted).count() < 2 {
        assert!(Instant::now() < until, "nobody admitted within 30 s");
        poll_round(&client, &nodes, &mut visitors).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    server.kill();
    for node in &nodes {
        until_ready(&client, node, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    // Admission has stopped: from here every answer shows the same place.
    poll_round(&client, &nodes, &mut visitors).await;
    let places: Vec<(u64, bool)> = visitors.iter().map(|v| (v.last_position, v.admitted)).collect();
    assert!(places.iter().any(|&(_, admitted)| !admitted), "someone is still waiting: {places:?}");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        poll_round(&client, &nodes, &mut visitors).await;
        let now: Vec<(u64, bool)> = visitors.iter().map(|v| (v.last_position, v.admitted)).collect();
        assert_eq!(now, places, "nobody is admitted while the shared cursor cannot be written");
    }
    // New visitors are turned away for now, with a time to come back.
    for node in &nodes {
        let r = send(client.post(format!("{}/queue/join", node.base))).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(r.body["code"], "service_unavailable");
        assert!(r.retry_after.is_some(), "503 carries Retry-After");
        assert_eq!(ready(&client, node).await, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Redis back with its append-only file: same epoch, the waiting tickets still count, and
    // admission resumes in order.
    server.restart();
    for node in &nodes {
        until_ready(&client, node, StatusCode::OK).await;
    }
    until_all_admitted(&client, &nodes, &mut visitors).await;
    let late = join(&client, &nodes[0], &keyring).await;
    assert_eq!(late.seq, VISITORS as u64 + 1, "numbering continues where it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_numbers_are_skipped_while_visitors_polling_the_other_node_keep_their_place() {
    let server = RedisServer::start();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let keyring = Keyring::random();
    // Poll every second; silent for more than 2 s counts as gone.
    let fast = |c: &mut GatewayConfig| {
        c.refresh_secs = 1;
        c.expire_after_polls = 2;
    };
    let nodes = [
        start_node_with(&server, &prefix, &keyring, 4, fast).await,
        start_node_with(&server, &prefix, &keyring, 4, fast).await,
    ];
    for node in &nodes {
        node.handle.pause();
    }
    let client = reqwest::Client::new();
    // Every third visitor leaves right after joining; the others only ever poll the node they did
    // not join, so the node moving the cursor sees half of them only through Redis.
    const VISITORS: usize = 15;
    let mut visitors = join_alternately(&client, &nodes, &keyring, VISITORS).await;
    let gone = |seq: u64| seq % 3 == 0;
    let poll_live = |visitors: &mut Vec<Visitor>| {
        let client = client.clone();
        let nodes = &nodes;
        let mut jobs = Vec::new();
        for (i, v) in visitors.iter().enumerate() {
            if !gone(v.seq) && !v.admitted {
                let other = (i + 1) % 2;
                jobs.push((i, client.get(format!("{}/queue/status", nodes[other].base)).header("X-Queue-Ticket", v.ticket.clone())));
            }
        }
        async move { futures::future::join_all(jobs.into_iter().map(|(i, req)| async move { (i, send(req).await) })).await }
    };
    // Paused for 3 s: the leavers' last sign of life (their join) grows old; the others poll.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for (i, r) in poll_live(&mut visitors).await {
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            visitors[i].ticket = r.body["ticket"].as_str().unwrap_or_default().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for node in &nodes {
        node.handle.resume();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut admitted_order = Vec::new();
    while visitors.iter().any(|v| !gone(v.seq) && !v.admitted) {
        assert!(Instant::now() < deadline, "live visitors not admitted within 30 s");
        for (i, r) in poll_live(&mut visitors).await {
            // A visitor who kept polling is never passed over, whichever node it polls.
            assert_eq!(r.status, StatusCode::OK, "visitor {} skipped while polling: {:?}", visitors[i].seq, r.body);
            visitors[i].ticket = r.body["ticket"].as_str().unwrap_or_default().to_owned();
            if r.body["state"] == "admitted" {
                visitors[i].admitted = true;
                admitted_order.push(visitors[i].seq);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cursor passes the last leaver too (skipping needs no token, but waits for a tick).
    while nodes[0].handle.snapshot().await.expect("snapshot").counters.cursor < VISITORS as u64 {
        assert!(Instant::now() < deadline, "the cursor did not pass every number within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The leavers were skipped without an admission: their tickets are refused on both nodes. The
    // other node learns a skip at its next exchange, a tick or two (here 20 ms each) later; a
    // leaver coming back inside that gap would still be let in there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for v in visitors.iter().filter(|v| gone(v.seq)) {
        for node in &nodes {
            let r = poll(&client, node, &v.ticket).await;
            assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::GONE, Some("ticket_expired")), "leaver {} on {}: {:?}", v.seq, node.base, r.body);
        }
    }
    let mut expired = 0;
    let mut admitted = 0;
    for node in &nodes {
        let text = client.get(format!("{}/metrics", node.ops)).send().await.expect("metrics").text().await.expect("text");
        expired += metric(&text, "kyufu_gateway_tickets_expired_total ");
        admitted += metric(&text, "kyufu_gateway_admitted_total ");
    }
    let leavers = visitors.iter().filter(|v| gone(v.seq)).count() as u64;
    assert_eq!((expired, admitted), (leavers, VISITORS as u64 - leavers), "skipped and admitted across both nodes");
    let mut sorted = admitted_order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted.len(), VISITORS - leavers as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prequeue_shared_by_two_nodes_is_drawn_once_and_each_visitor_has_one_place() {
    let server = RedisServer::start();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let keyring = Keyring::random();
    let seed: [u8; 32] = rand::random();
    let opens_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 2;
    // A closed door (rate 0): positions are places. Node B ticks slowly, so it draws late, after
    // visitors who came after the opening already took numbers on node A.
    let launch = move |c: &mut GatewayConfig| {
        c.opens_at = Some(opens_at);
        c.launch_seed = Some(seed);
        c.burst = 0;
    };
    let nodes = [
        start_node_with(&server, &prefix, &keyring, 0, launch).await,
        start_node_with(&server, &prefix, &keyring, 0, move |c| {
            launch(c);
            c.tick = Duration::from_millis(1000);
        })
        .await,
    ];
    let client = reqwest::Client::new();
    const EARLY: usize = 12;
    let mut visitors = join_alternately(&client, &nodes, &keyring, EARLY).await;
    // After the opening time, five more join on node A; node B hears of their numbers at once
    // (each polls B first) but has not drawn yet.
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) < opens_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let v = join(&client, &nodes[0], &keyring).await;
        let r = poll(&client, &nodes[1], &v.ticket).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        visitors.push(v);
    }
    // Every visitor, asked on either node once both have drawn, has one and the same place.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut places = Vec::new();
    for v in &visitors {
        let place = loop {
            let a = poll(&client, &nodes[0], &v.ticket).await;
            let b = poll(&client, &nodes[1], &v.ticket).await;
            let (pa, pb) = (a.body["position"].as_u64().unwrap_or(0), b.body["position"].as_u64().unwrap_or(0));
            if pa > 0 && pb > 0 {
                assert_eq!(pa, pb, "visitor {} has place {pa} on node A and {pb} on node B", v.seq);
                break pa;
            }
            assert!(Instant::now() < deadline, "visitor {} not placed on both nodes: {:?} / {:?}", v.seq, a.body, b.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        places.push(place);
    }
    // The early ones are the published permutation of 1..=12; the late ones follow, first come
    // first served.
    let shuffle = kyufu_gateway::launch::Shuffle::new(seed, EARLY as u64);
    let expected: Vec<u64> = (0..EARLY as u64).map(|k| 1 + shuffle.permute(k)).chain(13..=17).collect();
    assert_eq!(places, expected);
    for node in &nodes {
        let f: Value = client.get(format!("{}/queue/fairness", node.base)).send().await.expect("fairness").json().await.expect("json");
        assert_eq!((f["phase"].as_str(), f["prequeue_size"].as_u64()), (Some("open"), Some(EARLY as u64)), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_change_sent_to_one_node_reaches_every_node() {
    let (server, prefix, keyring, nodes) = two_nodes(10).await;
    // The admin API of node A only.
    let token = "admin-token-for-the-shared-controls-test";
    let router = kyufu_gateway::admin::admin_router(nodes[0].handle.clone(), token).expect("admin router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let staff = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let admin = |req: reqwest::RequestBuilder| async move {
        let resp = req.bearer_auth(token).header("X-Operator", "test-operator").send().await.expect("admin");
        assert_eq!(resp.status(), StatusCode::OK);
    };
    admin(client.post(format!("{staff}/admin/v1/pause"))).await;
    admin(client.put(format!("{staff}/admin/v1/message")).json(&serde_json::json!({"message": "ただいま点検中です"}))).await;
    admin(client.put(format!("{staff}/admin/v1/rate")).json(&serde_json::json!({"per_sec": 3, "burst": 6}))).await;
    admin(client.put(format!("{staff}/admin/v1/session-cap")).json(&serde_json::json!({"max_sessions": 40}))).await;
    // Node B takes every change over within a few ticks, and a visitor there sees the message.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let b = nodes[1].handle.snapshot().await.expect("snapshot");
        if b.paused && (b.rate_per_sec, b.burst) == (3, 6) && b.session_cap == Some(40) {
            break;
        }
        assert!(Instant::now() < until, "node B did not take the changes over: {b:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = send(client.post(format!("{}/queue/join", nodes[1].base))).await;
    assert_eq!((v.body["state"].as_str(), v.body["message"].as_str()), (Some("waiting"), Some("ただいま点検中です")), "{:?}", v.body);
    // A node started later begins with what the operators set, not with its own flags.
    let late = start_node(&server, &prefix, &keyring, 10).await;
    let until = Instant::now() + Duration::from_secs(5);
    while !(late.handle.is_paused() && late.handle.rate() == (3, 6) && late.handle.message().is_some()) {
        assert!(Instant::now() < until, "the late node did not take the operators' settings over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Resume on node A lets the visitor in through whichever node moves the cursor.
    admin(client.post(format!("{staff}/admin/v1/resume"))).await;
    admin(client.delete(format!("{staff}/admin/v1/message"))).await;
    let ticket = v.body["ticket"].as_str().unwrap_or_default().to_owned();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let r = poll(&client, &nodes[1], &ticket).await;
        if r.body["state"] == "admitted" {
            assert!(r.body["message"].is_null(), "{:?}", r.body);
            break;
        }
        assert!(Instant::now() < until, "not admitted after resume on the other node: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!late.handle.is_paused() && !nodes[1].handle.is_paused());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_applicant_reference_holds_one_place_across_nodes() {
    let (_server, _prefix, keyring, nodes) = two_nodes(0).await;
    let client = reqwest::Client::new();
    let keyring = &keyring;
    let join_with = |node: usize, reference: &str| {
        let req = client.post(format!("{}/queue/join", nodes[node].base)).json(&serde_json::json!({"reference": reference}));
        async move {
            let r = send(req).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            let claims: TicketClaims = keyring.verify(Purpose::Ticket, r.body["ticket"].as_str().unwrap_or_default()).expect("ticket");
            (claims.seq, claims.jat)
        }
    };
    let first = join_with(0, "AB-1234").await;
    let other = join_with(1, "CD-5678").await;
    // The same person on the other node (written differently) gets the first place back, with its
    // join time, so the wait it shows is the whole wait.
    assert_eq!(join_with(1, "ab1234").await, first);
    assert_eq!(join_with(0, "AB1234").await, first);
    assert_ne!(other.0, first.0);
    // Numbers are cached for a tick: read them after the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(nodes[0].handle.snapshot().await.expect("snapshot").counters.issued, 2, "no second place was issued");
}
