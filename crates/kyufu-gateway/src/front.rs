//! The public port's server: hyper's HTTP/1 connections, where `GET /queue/status` goes straight
//! to its handler and every other request through the router. On launch morning every waiting
//! visitor polls every few seconds, so the poll is nearly all of the traffic, and what a general
//! server does around each request (axum's `serve` wrapping every connection and request, the
//! router matching the path, cloning the boxed route, recording the matched path and parameters,
//! boxing the request body and the handler's future) cost about as much as the poll's own work.
//! The router keeps the route too, so `Gateway::router` answers the same, and anything the front
//! door does not recognise exactly (another method, another path) gets the router's answer.
//!
//! Otherwise it serves as `kyufu_http::serve` (axum's `serve`) does: HTTP/1 with keep-alive, the
//! client's address handed to the router's handlers as `ConnectInfo`, a failed accept retried
//! (after a second unless the error only concerned that connection), and on shutdown no new
//! connections while the open ones finish the request they are on.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Method;
use axum::Router;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::queue::PollResponse;
use crate::Shared;

/// The path that skips the router.
pub(crate) const STATUS_PATH: &str = "/queue/status";

/// Serves `router`, with the poll in front of it, on `listener` until `shutdown` resolves; then
/// accepts nothing more and returns once every open connection has finished.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    // `stopping` tells the connections to finish; each holds an `open` receiver, so `open_tx`
    // closes once the last one is gone.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let front = Front { shared: shared.clone(), router: router.clone(), peer };
        let (mut stopping, open) = (stopping_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), front);
            let mut conn = std::pin::pin!(conn);
            let stop = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            // Biased: the connection first, with no coin toss on every wake-up.
            tokio::select! {
                biased;
                _ = conn.as_mut() => {}
                () = stop => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
}

/// A failed accept: one connection's trouble is passed over; anything else (out of file
/// descriptors, say) is logged and retried after a second, so the loop does not spin on it.
async fn accept_failed(e: io::Error) {
    if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's service.
#[derive(Clone)]
pub(crate) struct Front {
    shared: Arc<Shared>,
    router: Router,
    peer: SocketAddr,
}

type Answer = Pin<Box<dyn Future<Output = Result<PollResponse, Infallible>> + Send>>;

impl Front {
    fn answer<B>(&self, request: axum::http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.method() == Method::GET && request.uri().path() == STATUS_PATH {
            let shared = self.shared.clone();
            return Box::pin(async move { Ok(crate::queue::poll(&shared, request.headers()).await) });
        }
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let routed = self.router.clone().oneshot(request);
        Box::pin(async move { Ok(routed.await.map_or_else(|never| match never {}, |r| r.map(Either::Right))) })
    }
}

impl hyper::service::Service<axum::http::Request<Incoming>> for Front {
    type Response = PollResponse;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: axum::http::Request<Incoming>) -> Answer {
        self.answer(request)
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::Request;
    use axum::http::StatusCode;
    use kyufu_admission::Keyring;

    use super::*;
    use crate::{Gateway, GatewayConfig};

    fn request(method: Method, uri: &str, ticket: Option<&str>) -> Request {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = ticket {
            builder = builder.header("x-queue-ticket", t);
        }
        builder.body(Body::empty()).expect("request")
    }

    async fn read<B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static>(
        answer: impl Future<Output = Result<axum::http::Response<B>, Infallible>>,
    ) -> (StatusCode, Vec<u8>)
    where
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Ok(resp) = answer.await;
        let status = resp.status();
        (status, axum::body::to_bytes(Body::new(resp.into_body()), 1 << 16).await.expect("body").to_vec())
    }

    fn gateway() -> Gateway {
        let mut config = GatewayConfig::new("rice", Keyring::random(), "http://127.0.0.1:9");
        config.rate_per_sec = 0;
        config.join_limit_per_sec = 1;
        config.join_limit_burst = 2;
        Gateway::new(config, prometheus::Registry::new()).expect("gateway").0
    }

    #[tokio::test]
    async fn the_front_door_answers_as_the_router_and_passes_the_client_address_on() {
        let gateway = gateway();
        let router = gateway.router();
        let peer: SocketAddr = "203.0.113.7:4000".parse().expect("addr");
        let front = Front { shared: gateway.shared.clone(), router: router.clone(), peer };

        // The client address reaches the join handler: its limit counts this address.
        let join = || read(front.answer(request(Method::POST, "/queue/join", None)));
        let (first, body) = join().await;
        assert_eq!(first, StatusCode::OK);
        assert_eq!(join().await.0, StatusCode::OK);
        assert_eq!(join().await.0, StatusCode::TOO_MANY_REQUESTS, "burst of 2 spent by 203.0.113.7");
        let joined: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let ticket = joined["ticket"].as_str().expect("ticket");

        // Polls, refusals and everything the front door does not take answer as the router does.
        for (method, uri, ticket) in [
            (Method::GET, "/queue/status", Some(ticket)),
            (Method::GET, "/queue/status?lang=en", Some(ticket)),
            (Method::GET, "/queue/status", None),
            (Method::GET, "/queue/status", Some("k1.forged.ticket")),
            (Method::HEAD, "/queue/status", Some(ticket)),
            (Method::POST, "/queue/status", Some(ticket)),
            (Method::GET, "/queue/status/", Some(ticket)),
            (Method::GET, "/queue/STATUS", Some(ticket)),
        ] {
            let by_front = read(front.answer(request(method.clone(), uri, ticket))).await;
            let by_router = read(router.clone().oneshot(request(method.clone(), uri, ticket))).await;
            assert_eq!(by_front, by_router, "{method} {uri}");
        }
        let (status, body) = read(front.answer(request(Method::GET, "/queue/status", Some(ticket)))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).expect("json")["state"], "waiting");
    }

    #[tokio::test]
    async fn shutdown_closes_the_door_and_ends_once_connections_are_done() {
        let gateway = gateway();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, gateway.shared.clone(), gateway.router(), async {
            let _ = stopped.await;
        }));
        // A keep-alive client that stays connected after its answer.
        let client = reqwest::Client::new();
        let answer = client.get(format!("http://{addr}/healthz")).send().await.expect("answer");
        assert_eq!(answer.status(), StatusCode::OK);
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), served).await.expect("serve ended").expect("no panic");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens any more");
    }
}
