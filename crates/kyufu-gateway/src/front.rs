//! The public port's front door: `GET /queue/status` goes straight to its handler, every other
//! request through the router. On launch morning every waiting visitor polls every few seconds, so
//! the poll is nearly all of the traffic, and the router's work per request (matching the path,
//! cloning the boxed route, recording the matched path and parameters, boxing the handler's
//! future) cost about as much as the poll's own work. The router keeps the route too, so
//! `Gateway::router` answers the same, and anything the front door does not recognise exactly
//! (another method, another path) gets the router's answer.
//!
//! The client's address is handed to the router's handlers as `ConnectInfo`, as
//! `into_make_service_with_connect_info` would; the poll does not need it, so it is not recorded
//! for the poll.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::serve::IncomingStream;
use axum::Router;
use tokio::net::TcpListener;
use tower::Service;

use crate::Shared;

/// The path that skips the router.
pub(crate) const STATUS_PATH: &str = "/queue/status";

/// Makes one `Front` per connection, knowing the client's address.
#[derive(Clone)]
pub(crate) struct MakeFront {
    shared: Arc<Shared>,
    router: Router,
}

impl MakeFront {
    pub(crate) fn new(shared: Arc<Shared>, router: Router) -> Self {
        MakeFront { shared, router }
    }
}

impl Service<IncomingStream<'_, TcpListener>> for MakeFront {
    type Response = Front;
    type Error = Infallible;
    type Future = Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, TcpListener>) -> Self::Future {
        ready(Ok(Front { shared: self.shared.clone(), router: self.router.clone(), peer: *stream.remote_addr() }))
    }
}

/// One connection's service.
#[derive(Clone)]
pub(crate) struct Front {
    shared: Arc<Shared>,
    router: Router,
    peer: SocketAddr,
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Neither the poll handler nor the router ever waits for capacity.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if request.method() == Method::GET && request.uri().path() == STATUS_PATH {
            let shared = self.shared.clone();
            return Box::pin(async move { Ok(crate::queue::status(State(shared), request).await) });
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(self.router.call(request))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use kyufu_admission::Keyring;
    use tower::ServiceExt;

    use super::*;
    use crate::{Gateway, GatewayConfig};

    fn request(method: Method, uri: &str, ticket: Option<&str>) -> Request {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = ticket {
            builder = builder.header("x-queue-ticket", t);
        }
        builder.body(Body::empty()).expect("request")
    }

    async fn answer(service: impl Service<Request, Response = Response, Error = Infallible>, req: Request) -> (StatusCode, Vec<u8>) {
        let Ok(resp) = service.oneshot(req).await;
        let status = resp.status();
        (status, axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body").to_vec())
    }

    #[tokio::test]
    async fn the_front_door_answers_as_the_router_and_passes_the_client_address_on() {
        let mut config = GatewayConfig::new("rice", Keyring::random(), "http://127.0.0.1:9");
        config.rate_per_sec = 0;
        config.join_limit_per_sec = 1;
        config.join_limit_burst = 2;
        let (gateway, _handle) = Gateway::new(config, prometheus::Registry::new()).expect("gateway");
        let router = gateway.router();
        let peer: SocketAddr = "203.0.113.7:4000".parse().expect("addr");
        let front = Front { shared: gateway.shared.clone(), router: router.clone(), peer };

        // The client address reaches the join handler: its limit counts this address.
        let join = |s: Front| answer(s, request(Method::POST, "/queue/join", None));
        let (first, body) = join(front.clone()).await;
        assert_eq!(first, StatusCode::OK);
        assert_eq!(join(front.clone()).await.0, StatusCode::OK);
        assert_eq!(join(front.clone()).await.0, StatusCode::TOO_MANY_REQUESTS, "burst of 2 spent by 203.0.113.7");
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
            let by_front = answer(front.clone(), request(method.clone(), uri, ticket)).await;
            let by_router = answer(router.clone(), request(method.clone(), uri, ticket)).await;
            assert_eq!(by_front, by_router, "{method} {uri}");
        }
        let (status, body) = answer(front, request(Method::GET, "/queue/status", Some(ticket))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).expect("json")["state"], "waiting");
    }
}
