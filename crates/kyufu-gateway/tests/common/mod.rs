//! Test harness: starts a gateway on 127.0.0.1:0 in the test's runtime, and small helpers to join
//! and poll the way a visitor's page does.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use kyufu_admission::{Keyring, Purpose};
use kyufu_gateway::{Gateway, GatewayConfig, GatewayHandle, TicketClaims};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

pub const EVENT: &str = "rice-2026";

pub struct Harness {
    pub base: String,
    /// The operations address: `/metrics` (never on the public `base`).
    pub ops: String,
    pub handle: GatewayHandle,
    pub keyring: Keyring,
    pub client: reqwest::Client,
}

/// A gateway with test defaults (fast ticks, an upstream nobody listens on), changed by `tweak`
/// before it is built. The handle is live at once, so pausing before the first join is race-free.
pub async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Harness {
    let keyring = Keyring::random();
    let mut config = GatewayConfig::new(EVENT, keyring, "http://127.0.0.1:9");
    config.tick = Duration::from_millis(20);
    tweak(&mut config);
    let keyring = config.keyring.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (gateway, handle) = Gateway::new(config, kyufu_telemetry::new_registry()).expect("valid config");
    let ops = serve_ops(gateway.ops_router()).await;
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    Harness { base, ops, handle, keyring, client: reqwest::Client::new() }
}

/// Serves a gateway's operations routes on their own loopback port; returns its base URL.
pub async fn serve_ops(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(kyufu_http::serve(listener, router, std::future::pending()));
    ops
}

/// One queue answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn ticket(&self) -> String {
        self.body["ticket"].as_str().unwrap_or_default().to_owned()
    }
    pub fn state(&self) -> &str {
        self.body["state"].as_str().unwrap_or_default()
    }
    pub fn admitted(&self) -> bool {
        self.state() == "admitted"
    }
    pub fn position(&self) -> u64 {
        self.body["position"].as_u64().unwrap_or(u64::MAX)
    }
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
    pub fn pass(&self) -> Option<&str> {
        self.body["pass"].as_str()
    }
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.expect("JSON body");
    Answer { status, headers, body }
}

pub async fn join(h: &Harness) -> Answer {
    answer(h.client.post(format!("{}/queue/join", h.base)).send().await.expect("join")).await
}

pub async fn status(h: &Harness, ticket: &str) -> Answer {
    let req = h.client.get(format!("{}/queue/status", h.base)).header("X-Queue-Ticket", ticket);
    answer(req.send().await.expect("status")).await
}

pub fn claims(h: &Harness, ticket: &str) -> TicketClaims {
    h.keyring.verify(Purpose::Ticket, ticket).expect("ticket signed by the gateway")
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Polls `ticket` until admitted or `deadline` passes; returns the admitted answer.
pub async fn until_admitted(h: &Harness, ticket: &str, deadline: Duration) -> Answer {
    let until = Instant::now() + deadline;
    let mut ticket = ticket.to_owned();
    loop {
        let a = status(h, &ticket).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        if a.admitted() {
            return a;
        }
        assert!(Instant::now() < until, "not admitted within {deadline:?}: {:?}", a.body);
        ticket = a.ticket();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
