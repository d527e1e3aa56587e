//! Gateway benchmarks that print figures (not tests): (a) status-poll throughput of a waiting
//! ticket as a ratio to a bare hyper "hello" server, both measured in this run with the same tokio
//! load generator (target >= 0.7); (b) resident memory growth while 1,000,000 tickets are issued
//! (target <= 50 MB). Run with `make bench-gateway`; `BENCH_SECS`, `BENCH_CONNS`, `BENCH_TICKETS`
//! change the run length, the concurrency and the number of tickets.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kyufu_admission::Keyring;
use kyufu_gateway::{Gateway, GatewayConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        })
        .unwrap_or(0)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// `conns` tasks send `method url` back to back for `secs`; returns successful answers per second.
async fn load(client: &HttpClient, method: Method, url: &str, ticket: Option<&str>, conns: u64, secs: u64) -> f64 {
    let ok = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, ok, url, method) = (client.clone(), ok.clone(), url.to_owned(), method.clone());
        let ticket = ticket.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let mut req = Request::builder().method(method.clone()).uri(&url);
                if let Some(t) = &ticket {
                    req = req.header("x-queue-ticket", t);
                }
                let Ok(req) = req.body(Empty::new()) else { return };
                if let Ok(resp) = client.request(req).await {
                    let good = resp.status().is_success();
                    if resp.into_body().collect().await.is_ok() && good {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn hello_server() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = env_u64("BENCH_SECS", 5);
    let conns = env_u64("BENCH_CONNS", 64);
    let tickets = env_u64("BENCH_TICKETS", 1_000_000);
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build_http();

    // Rate 0: nobody is admitted, so every poll takes the waiting path (the launch-morning case).
    let mut config = GatewayConfig::new("bench", Keyring::random(), "http://127.0.0.1:9");
    config.rate_per_sec = 0;
    let (gateway, _handle) = Gateway::new(config, kyufu_telemetry::new_registry())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw = format!("http://{}", listener.local_addr()?);
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    let join = Request::builder().method(Method::POST).uri(format!("{gw}/queue/join")).body(Empty::new())?;
    let body = client.request(join).await?.into_body().collect().await?.to_bytes();
    let joined: serde_json::Value = serde_json::from_slice(&body)?;
    let ticket = joined["ticket"].as_str().context("join answer has a ticket")?.to_owned();

    let hello = hello_server().await?;
    println!("(a) poll throughput, {conns} connections, {secs} s each, same load generator");
    let bare = load(&client, Method::GET, &hello, None, conns, secs).await;
    let polls = load(&client, Method::GET, &format!("{gw}/queue/status"), Some(&ticket), conns, secs).await;
    println!("    bare hyper hello:       {bare:>10.0} req/s");
    println!("    GET /queue/status:      {polls:>10.0} req/s");
    println!("    ratio:                  {:>10.2} (target >= 0.70)", polls / bare);

    println!("(b) resident memory while issuing {tickets} tickets");
    let before = rss_kib();
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, issued, url) = (client.clone(), issued.clone(), format!("{gw}/queue/join"));
        tasks.push(tokio::spawn(async move {
            while issued.fetch_add(1, Ordering::Relaxed) < tickets {
                let Ok(req) = Request::builder().method(Method::POST).uri(&url).body(Empty::new()) else { return };
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let after = rss_kib();
    println!("    joined in {:.1} s ({:.0} joins/s)", started.elapsed().as_secs_f64(), tickets as f64 / started.elapsed().as_secs_f64());
    println!("    RSS before {} MiB, after {} MiB, growth {:.1} MiB (target <= 50)", before / 1024, after / 1024, (after.saturating_sub(before)) as f64 / 1024.0);
    Ok(())
}
