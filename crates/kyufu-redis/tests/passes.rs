//! Spending an admission pass across real processes' worth of parts: two gateway nodes sharing one
//! queue in a real `redis-server`, a session cap of one, and the real intake behind them keeping
//! spent pass ids in the Redis status store. The visitor who finishes spends the pass through the
//! node that does *not* move the cursor, and the next visitor is admitted at once — not when the
//! pass would have expired. A replayed (spent) pass is refused, and spending it again returns
//! nothing a second time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kyufu_admission::Keyring;
use kyufu_domain::identity::IdentitySecret;
use kyufu_domain::Program;
use kyufu_embedded::EmbeddedStore;
use kyufu_gateway::{Gateway, GatewayConfig, GatewayHandle};
use kyufu_intake::{IntakeConfig, IntakePorts, StatusTokens};
use kyufu_redis::{QueueStateConfig, RedisConfig, RedisQueueState, RedisStatusStore};
use kyufu_testservers::redis::RedisServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The demo programme's id: gateway event and intake programme must agree.
const EVENT: &str = "rice-demo";

struct Node {
    base: String,
    /// The operations address serving `/metrics` (never the public `base`).
    ops: String,
    handle: GatewayHandle,
}

fn redis_config(server: &RedisServer, prefix: &str) -> RedisConfig {
    let mut redis = RedisConfig::new(server.url());
    redis.prefix = prefix.to_owned();
    redis
}

async fn start_intake(server: &RedisServer, prefix: &str, keyring: &Keyring, dir: &std::path::Path, per_pass: u32) -> String {
    let store = EmbeddedStore::open(dir).expect("open the embedded store");
    let status = RedisStatusStore::connect(redis_config(server, prefix)).await.expect("connect the status store");
    let ports = IntakePorts::sequential(store.bus(), Arc::new(status), store.document_store());
    let config = IntakeConfig {
        program: Program::demo(Utc::now().date_naive()),
        pass_keyring: keyring.clone(),
        require_pass: true,
        submissions_per_pass: per_pass,
        identity_secret: IdentitySecret::new(b"identity secret for the pass test, long enough".to_vec()),
        status_tokens: StatusTokens::new(b"status secret for the pass test, long enough".to_vec()),
        max_document_bytes: 1024 * 1024,
        received_topic: "applications.received".to_owned(),
        scanner: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let registry = kyufu_telemetry::new_registry();
    tokio::spawn(kyufu_intake::serve(listener, config, ports, registry, kyufu_http::Readiness::ready(), std::future::pending()));
    base
}

async fn start_node(server: &RedisServer, prefix: &str, keyring: &Keyring, intake: &str) -> Node {
    let lease = QueueStateConfig { lease_ttl: Duration::from_millis(800), renew_every: Duration::from_millis(150), ..QueueStateConfig::default() };
    let state = RedisQueueState::connect(&redis_config(server, prefix), EVENT, lease).await.expect("connect the queue state");
    let mut config = GatewayConfig::new(EVENT, keyring.clone(), intake);
    config.tick = Duration::from_millis(20);
    config.rate_per_sec = 100;
    config.burst = 10;
    // One visitor in the form at a time; a pass would last an hour.
    config.session_cap = 1;
    config.pass_ttl_secs = 3600;
    config.join_limit_per_sec = 0;
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

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

async fn join(client: &reqwest::Client, node: &Node) -> Value {
    let (status, body) = json_of(client.post(format!("{}/queue/join", node.base)).send().await.expect("join")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn poll(client: &reqwest::Client, node: &Node, ticket: &str) -> Value {
    let req = client.get(format!("{}/queue/status", node.base)).header("X-Queue-Ticket", ticket);
    let (status, body) = json_of(req.send().await.expect("status")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn application(given: &str, kana: &str) -> String {
    json!({
        "guardian": {"family_name": "山田", "given_name": "花子", "family_name_kana": "ヤマダ", "given_name_kana": "ハナコ",
            "birth_date": "1990-01-02", "email": "a@example.jp", "phone": "0312345678", "postal_code": "9300001"},
        "child": {"family_name": "山田", "given_name": given, "family_name_kana": "ヤマダ", "given_name_kana": kana,
            "birth_date": "2019-03-04"},
        "consent": true
    })
    .to_string()
}

async fn submit(client: &reqwest::Client, node: &Node, pass: &str, app: String) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new()
        .part("application", reqwest::multipart::Part::text(app))
        .part("document", reqwest::multipart::Part::bytes(b"%PDF-1.4 test".to_vec()));
    let req = client.post(format!("{}/api/v1/applications", node.base)).header("X-Admission-Pass", pass).multipart(form);
    json_of(req.send().await.expect("submit")).await
}

async fn spend(client: &reqwest::Client, node: &Node, pass: &str) -> reqwest::Response {
    client.post(format!("{}/api/v1/pass/spend", node.base)).header("X-Admission-Pass", pass).send().await.expect("spend")
}

async fn metric(client: &reqwest::Client, node: &Node, name: &str) -> u64 {
    let text = client.get(format!("{}/metrics", node.ops)).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_spent_on_either_node_frees_its_place_at_once_and_is_never_used_again() {
    let server = RedisServer::start();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let keyring = Keyring::random();
    let dir = tempfile::tempdir().expect("tempdir");
    let intake = start_intake(&server, &prefix, &keyring, dir.path(), kyufu_intake::DEFAULT_SUBMISSIONS_PER_PASS).await;
    let nodes = [start_node(&server, &prefix, &keyring, &intake).await, start_node(&server, &prefix, &keyring, &intake).await];
    let client = reqwest::Client::new();

    // A joins and is admitted: the one session the cap allows.
    let a = join(&client, &nodes[0]).await;
    let a_ticket = a["ticket"].as_str().expect("ticket").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let a_pass = loop {
        let s = poll(&client, &nodes[0], &a_ticket).await;
        if let Some(p) = s["pass"].as_str() {
            break p.to_owned();
        }
        assert!(Instant::now() < deadline, "A never admitted: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The node holding the cursor counts A's session; the other does not move the cursor.
    let mut sessions = [0; 2];
    for (i, node) in nodes.iter().enumerate() {
        sessions[i] = node.handle.snapshot().await.expect("snapshot").admitted_sessions;
    }
    assert_eq!(sessions.iter().sum::<u64>(), 1, "one session, counted by the cursor's node: {sessions:?}");
    let follower = &nodes[if sessions[0] == 1 { 1 } else { 0 }];

    // B joins and waits: the cap is reached, however long we wait.
    let b = join(&client, &nodes[1]).await;
    let mut b_ticket = b["ticket"].as_str().expect("ticket").to_owned();
    for _ in 0..10 {
        let s = poll(&client, &nodes[1], &b_ticket).await;
        assert_eq!(s["state"], "waiting", "B admitted past the session cap: {s}");
        b_ticket = s["ticket"].as_str().expect("ticket").to_owned();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A sends two children with the one pass, then spends it through the follower node.
    for (given, kana) in [("太郎", "タロウ"), ("次郎", "ジロウ")] {
        let (status, body) = submit(&client, follower, &a_pass, application(given, kana)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let spent_at = Instant::now();
    let resp = spend(&client, follower, &a_pass).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cookies: Vec<String> =
        resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect();
    for name in ["kyufu_pass=;", "kyufu_ticket=;"] {
        assert!(cookies.iter().any(|c| c.starts_with(name) && c.contains("Max-Age=0")), "{name} not cleared: {cookies:?}");
    }

    // B is admitted at once: the place came back through the shared count to the cursor's node.
    let b_pass = loop {
        let s = poll(&client, &nodes[1], &b_ticket).await;
        if let Some(p) = s["pass"].as_str() {
            break p.to_owned();
        }
        b_ticket = s["ticket"].as_str().expect("ticket").to_owned();
        assert!(spent_at.elapsed() < Duration::from_secs(5), "B still waiting after A finished: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let freed_in = spent_at.elapsed();

    // The spent pass is refused on either node, polling A's old ticket again yields a pass with
    // the same id (still spent), and spending it again frees nothing.
    for node in &nodes {
        let (status, body) = submit(&client, node, &a_pass, application("三郎", "サブロウ")).await;
        assert_eq!((status, body["code"].as_str().unwrap_or_default()), (StatusCode::FORBIDDEN, "admission_spent"), "{body}");
    }
    let again = poll(&client, &nodes[1], &a_ticket).await;
    let again_pass = again["pass"].as_str().expect("an admitted ticket still shows its pass");
    let (status, body) = submit(&client, &nodes[1], again_pass, application("三郎", "サブロウ")).await;
    assert_eq!((status, body["code"].as_str().unwrap_or_default()), (StatusCode::FORBIDDEN, "admission_spent"), "{body}");
    let resp = spend(&client, &nodes[0], &a_pass).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("set-cookie").is_none(), "a refused spend changes nothing");

    // C waits behind B: the replayed spend gave nothing back.
    let c = join(&client, &nodes[0]).await;
    let mut c_ticket = c["ticket"].as_str().expect("ticket").to_owned();
    for _ in 0..10 {
        let s = poll(&client, &nodes[0], &c_ticket).await;
        assert_eq!(s["state"], "waiting", "C admitted past the cap after a replayed spend: {s}");
        c_ticket = s["ticket"].as_str().expect("ticket").to_owned();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B's pass works, and B finishing frees C.
    let (status, body) = submit(&client, &nodes[0], &b_pass, application("花", "ハナ")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(spend(&client, &nodes[0], &b_pass).await.status(), StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = poll(&client, &nodes[0], &c_ticket).await;
        if s["state"] == "admitted" {
            break;
        }
        c_ticket = s["ticket"].as_str().expect("ticket").to_owned();
        assert!(Instant::now() < deadline, "C still waiting after B finished: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let spent = metric(&client, &nodes[0], "kyufu_gateway_passes_spent_total").await
        + metric(&client, &nodes[1], "kyufu_gateway_passes_spent_total").await;
    let rejected = metric(&client, &nodes[0], "kyufu_gateway_passes_rejected_total").await
        + metric(&client, &nodes[1], "kyufu_gateway_passes_rejected_total").await;
    assert_eq!((spent, rejected), (2, 4), "two spends; three refused submissions and one refused spend");
    println!("place freed {freed_in:?} after the spend (the pass had an hour left)");
}

/// One pass, one household, across intake processes: two intakes on one Redis status store, a
/// bound of three applications per pass, eight submissions of one pass raced over both. Exactly
/// three are accepted, whichever intake they reached; the rest are refused with
/// `admission_limit_reached`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_sends_at_most_its_bound_however_the_intakes_race() {
    let server = RedisServer::start();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let keyring = Keyring::random();
    let dirs = [tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir")];
    let mut intakes = Vec::new();
    for dir in &dirs {
        intakes.push(start_intake(&server, &prefix, &keyring, dir.path(), 3).await);
    }
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let pass = keyring.sign(kyufu_admission::Purpose::Pass, &kyufu_admission::PassClaims::new(EVENT, 1, now, 600));
    let client = reqwest::Client::new();
    let sends = (0..8).map(|i| {
        let (client, pass, base) = (client.clone(), pass.clone(), intakes[i % 2].clone());
        async move {
            let form = reqwest::multipart::Form::new()
                .part("application", reqwest::multipart::Part::text(application("太郎", "タロウ")))
                .part("document", reqwest::multipart::Part::bytes(b"%PDF-1.4 test".to_vec()));
            let req = client.post(format!("{base}/api/v1/applications")).header("X-Admission-Pass", pass).multipart(form);
            json_of(req.send().await.expect("submit")).await
        }
    });
    let answers = futures::future::join_all(sends).await;
    let accepted = answers.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::FORBIDDEN && b["code"] == "admission_limit_reached")
        .count();
    assert_eq!((accepted, refused), (3, 5), "{answers:?}");
}
