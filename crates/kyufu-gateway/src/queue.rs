//! `POST /queue/join` and `GET /queue/status`: the waiting room as a visitor sees it. Joining takes
//! a sequence number and answers with a signed ticket; polling compares the ticket's number with
//! the serving cursor. Everything a visitor needs is in the answer, and everything the gateway
//! needs is in the ticket.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{Either, Full};
use kyufu_domain::ErrorCode;
use kyufu_http::ApiError;

use crate::config::GatewayConfig;
use crate::json;
use crate::launch::Place;
use crate::state::{Counters, SharedReference};
use crate::ticket::{self, Presented, TicketClaims, PASS_COOKIE, TICKET_COOKIE};
use crate::Shared;

/// What a ticket amounts to right now.
#[derive(Debug)]
pub(crate) struct Answer {
    pub ticket: String,
    /// The ticket differs from the one presented (so the cookie must be set again).
    pub ticket_changed: bool,
    pub position: u64,
    pub eta: Option<u64>,
    pub refresh_after: u64,
    /// Present once admitted.
    pub pass: Option<String>,
    /// This answer is the one that admitted the ticket (a pass was issued).
    pub newly_admitted: bool,
    /// Seconds from joining to admission, on the answer that admitted the ticket (when the ticket
    /// knows its join time).
    pub waited_secs: Option<u64>,
    /// In the pre-queue until this opening time (Unix seconds); no place yet.
    pub opens_at: Option<u64>,
}

/// The queue numbers a fail-open ticket (`seq` 0, admitted, epoch 0) is judged against: no store
/// is consulted, so fail-open works while the queue state is down.
const FAIL_OPEN_COUNTERS: Counters = Counters { epoch: 0, issued: 0, cursor: 0, spent: 0 };

/// Decides a ticket against the queue numbers. `presented` is the token the claims came from
/// (`None` for a fresh join); `place` is where its number stands (`launch`); `eta` maps a position
/// to an estimate.
///
/// A waiting ticket is re-signed only once `nxt` has passed, so fast pollers get their own ticket
/// back and the ticket never grows. An admitted ticket is re-signed once, to record the admission
/// time, which fixes the pass; after that it is returned unchanged until the pass would expire.
pub(crate) fn decide(
    config: &GatewayConfig,
    claims: TicketClaims,
    presented: Option<&str>,
    counters: Counters,
    place: Place,
    now: u64,
    eta: impl Fn(u64) -> Option<u64>,
) -> Result<Answer, ErrorCode> {
    // Another event, an earlier queue (restart), or a number never handed out: not ours. Number 0
    // exists only admitted (fail-open).
    let zero_ok = claims.seq == 0 && claims.adm.is_some();
    if claims.ev != config.event_id
        || claims.ep != counters.epoch
        || (claims.seq == 0 && !zero_ok)
        || claims.seq > counters.issued
    {
        return Err(ErrorCode::TicketInvalid);
    }
    let waiting = match place {
        Place::Pending { opens_at } => Some((0, None, Some(opens_at))),
        Place::At(place) if place > counters.cursor => Some((place - counters.cursor, eta(place - counters.cursor), None)),
        Place::At(_) => None,
    };
    if let Some((position, eta, opens_at)) = waiting {
        // Poll sooner when the turn (or the opening) is expected sooner than the usual interval.
        let soon = opens_at.map(|at| at.saturating_sub(now)).or(eta);
        let refresh_after = soon.map_or(config.refresh_secs, |e| e.clamp(1, config.refresh_secs));
        let (ticket, ticket_changed) = match presented {
            Some(token) if now < claims.nxt => (token.to_owned(), false),
            _ => {
                let fresh = TicketClaims { iat: now, nxt: now.saturating_add(refresh_after), adm: None, ..claims };
                (fresh.sign(&config.keyring), true)
            }
        };
        return Ok(Answer {
            ticket,
            ticket_changed,
            position,
            eta,
            refresh_after,
            pass: None,
            newly_admitted: false,
            waited_secs: None,
            opens_at,
        });
    }
    let (claims, ticket, ticket_changed, newly_admitted) = match (claims.adm, presented) {
        (Some(adm), _) if now >= adm.saturating_add(config.pass_ttl_secs) => return Err(ErrorCode::TicketExpired),
        (Some(_), Some(token)) => (claims, token.to_owned(), false, false),
        (Some(_), None) => {
            let token = claims.sign(&config.keyring);
            (claims, token, true, false)
        }
        (None, _) => {
            // The turn came while the ticket went unrefreshed for long: the visitor left, and an
            // old ticket must not be cashed in for a pass much later.
            if now.saturating_sub(claims.iat) > config.ticket_idle_secs {
                return Err(ErrorCode::TicketExpired);
            }
            let admitted =
                TicketClaims { iat: now, nxt: now.saturating_add(config.refresh_secs), adm: Some(now), ..claims };
            let token = admitted.sign(&config.keyring);
            (admitted, token, true, true)
        }
    };
    let adm = claims.adm.unwrap_or(now);
    let waited_secs = claims.jat.filter(|_| newly_admitted).map(|jat| adm.saturating_sub(jat));
    let pass = ticket::pass_for(&config.keyring, &claims, adm, config.pass_ttl_secs);
    Ok(Answer {
        ticket,
        ticket_changed,
        position: 0,
        eta: Some(0),
        refresh_after: config.refresh_secs,
        pass: Some(pass),
        newly_admitted,
        waited_secs,
        opens_at: None,
    })
}

/// Admits at once without the queue (fail-open): a ticket numbered 0, admitted now, whose pass is
/// fixed like any other. Needs no queue state.
fn fail_open_answer(config: &GatewayConfig, now: u64) -> Result<Answer, ErrorCode> {
    let claims = TicketClaims {
        ev: config.event_id.clone(),
        ep: FAIL_OPEN_COUNTERS.epoch,
        seq: 0,
        iat: now,
        nxt: now.saturating_add(config.refresh_secs),
        adm: Some(now),
        jat: None,
        pq: false,
        n: Some(rand::random()),
    };
    let mut answer = decide(config, claims, None, FAIL_OPEN_COUNTERS, Place::At(0), now, |_| None)?;
    answer.newly_admitted = true;
    Ok(answer)
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn unavailable(e: crate::state::StateError) -> ApiError {
    tracing::warn!(error = %e, "queue state unavailable");
    ApiError::new(ErrorCode::ServiceUnavailable)
}

/// The optional body of `POST /queue/join`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinInput {
    reference: Option<String>,
}

/// `POST /queue/join`, optionally with `{"reference": "..."}`.
pub(crate) async fn join(
    State(gw): State<Arc<Shared>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: bytes::Bytes,
) -> Response {
    join_inner(&gw, client_of(&gw, &extensions, &headers), &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn join_inner(gw: &Shared, peer: Option<std::net::IpAddr>, body: &[u8]) -> Result<Response, ApiError> {
    let reference = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let input: JoinInput =
            serde_json::from_slice(body).map_err(|_| ApiError::new(ErrorCode::InvalidReference))?;
        input.reference
    };
    Ok(render(gw, &join_answer(gw, peer, reference.as_deref()).await?))
}

/// The client address of a request, when the server recorded its peer: the peer, or behind a
/// trusted proxy the address `X-Forwarded-For` gives (`TrustedProxies::client`).
pub(crate) fn client_of(gw: &Shared, extensions: &axum::http::Extensions, headers: &HeaderMap) -> Option<std::net::IpAddr> {
    let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?.0.ip();
    Some(gw.config.trusted_proxies.client(peer, headers))
}

/// Joins the queue: a new ticket, admitted at once when the door is free; 429 for a client
/// address over its join limit. A `reference` seen before gets its first number back.
pub(crate) async fn join_answer(
    gw: &Shared,
    peer: Option<std::net::IpAddr>,
    reference: Option<&str>,
) -> Result<Answer, ApiError> {
    if let Err(wait_secs) = gw.join_limit.check(peer) {
        gw.metrics.joins_limited.inc();
        return Err(ApiError::new(ErrorCode::TooManyRequests).retry_after(wait_secs));
    }
    let admission = &gw.admission;
    let now = now_secs();
    if admission.controls.fail_open(now) {
        gw.metrics.joins.inc();
        let answer = fail_open_answer(&gw.config, now)?;
        count_admission(gw, &answer, now);
        return Ok(answer);
    }
    // The first visitor after the opening time closes the pre-queue before taking a number.
    admission.open_if_due(now).await.map_err(unavailable)?;
    let prequeue = admission.launch.in_prequeue(now).is_some();
    let (slot, jat) = take_number(gw, reference, now).await?;
    gw.metrics.joins.inc();
    // A join is also a tick: a visitor arriving at an idle queue is admitted in this very answer,
    // unless the operator queues everyone.
    if !admission.controls.queue_everyone() && !prequeue {
        if let Err(e) = admission.pump().await {
            tracing::warn!(error = %e, "admission on join failed");
        }
    }
    let counters = admission.state.counters().await.map_err(unavailable)?;
    let claims = TicketClaims {
        ev: gw.config.event_id.clone(),
        ep: slot.epoch,
        seq: slot.seq,
        iat: now,
        nxt: now,
        adm: None,
        jat: Some(jat),
        pq: prequeue || matches!(admission.launch.place(slot.seq), Place::Pending { .. }),
        n: None,
    };
    let place = admission.launch.place(slot.seq);
    if let Place::At(p) = place {
        admission.liveness.touch(p, counters.cursor, now);
    }
    let answer = decide(&gw.config, claims, None, counters, place, now, |p| admission.eta_secs(p))?;
    count_admission(gw, &answer, now);
    Ok(answer)
}

/// A new sequence number, or — for an applicant reference seen before in this queue — the one it
/// got first, with its join time.
async fn take_number(gw: &Shared, reference: Option<&str>, now: u64) -> Result<(crate::state::Slot, u64), ApiError> {
    let state = &gw.admission.state;
    let hash = match reference {
        Some(r) if gw.config.reference_capacity > 0 => {
            Some(gw.refs.hash(r).map_err(|_| ApiError::new(ErrorCode::InvalidReference))?)
        }
        _ => None,
    };
    let Some(hash) = hash else { return Ok((state.join().await.map_err(unavailable)?, now)) };
    let epoch = state.counters().await.map_err(unavailable)?.epoch;
    if state.is_shared() {
        let key = crate::launch::hex(&hash);
        let capacity = u64::try_from(gw.refs.capacity()).unwrap_or(u64::MAX);
        match state.reference(&key, epoch, 0, 0, capacity).await.map_err(unavailable)? {
            SharedReference::Known { seq, jat } => return Ok((crate::state::Slot { epoch, seq }, jat)),
            SharedReference::Unsupported => {}
            SharedReference::Unknown | SharedReference::Full => {
                let slot = state.join().await.map_err(unavailable)?;
                // A concurrent join with the same reference may have been quicker: its number
                // wins, and this one stays unused (skipped as abandoned when the cursor gets there).
                return match state.reference(&key, slot.epoch, slot.seq, now, capacity).await.map_err(unavailable)? {
                    SharedReference::Known { seq, jat } => Ok((crate::state::Slot { epoch: slot.epoch, seq }, jat)),
                    _ => Ok((slot, now)),
                };
            }
        }
    }
    match gw.refs.lookup(hash, epoch) {
        crate::refs::Lookup::Known { seq, jat } => Ok((crate::state::Slot { epoch, seq }, jat)),
        crate::refs::Lookup::New(hash) => {
            let slot = state.join().await.map_err(unavailable)?;
            let (seq, jat) = gw.refs.remember(hash, slot.epoch, slot.seq, now);
            Ok((crate::state::Slot { epoch: slot.epoch, seq }, jat))
        }
        crate::refs::Lookup::Full => Ok((state.join().await.map_err(unavailable)?, now)),
    }
}

/// `GET /queue/status`. Takes the whole request, not a `HeaderMap`, which axum would copy. The
/// public port's server calls `poll` itself (`front`).
pub(crate) async fn status(State(gw): State<Arc<Shared>>, request: Request) -> Response {
    poll(&gw, request.headers()).await.map(Body::new)
}

/// A poll's answer: the queue answer's own body, or an error's axum body. The public port's server
/// sends it as it is, without boxing the body as an axum `Response` would.
pub(crate) type PollResponse = http::Response<Either<Full<Bytes>, Body>>;

/// The answer to a poll presenting `headers`, counted by outcome.
pub(crate) async fn poll(gw: &Shared, headers: &HeaderMap) -> PollResponse {
    let result = status_inner(gw, headers).await;
    let polls = &gw.metrics.polls;
    let outcome = match &result {
        Ok(a) if a.pass.is_some() => &polls.admitted,
        Ok(_) => &polls.waiting,
        Err(e) if e.code == ErrorCode::TicketExpired => &polls.expired,
        Err(e) if e.code == ErrorCode::ServiceUnavailable => &polls.unavailable,
        Err(_) => &polls.invalid,
    };
    outcome.inc();
    match result {
        Ok(answer) => answer_response(gw, &answer).map(Either::Left),
        Err(e) => e.into_response().map(Either::Right),
    }
}

pub(crate) async fn status_inner(gw: &Shared, headers: &HeaderMap) -> Result<Answer, ApiError> {
    let token = match ticket::presented(headers) {
        Presented::Missing => return Err(ApiError::new(ErrorCode::TicketRequired)),
        Presented::Unreadable => return Err(ApiError::new(ErrorCode::TicketInvalid)),
        Presented::Token(t) => t,
    };
    // Any verification failure (garbage, forged, unknown key, a pass sent as a ticket) is the
    // same answer to the visitor: join again.
    let claims = TicketClaims::verify(&gw.config.keyring, token).map_err(|_| ApiError::new(ErrorCode::TicketInvalid))?;
    if claims.ev != gw.config.event_id {
        return Err(ApiError::new(ErrorCode::TicketInvalid));
    }
    let admission = &gw.admission;
    let now = now_secs();
    // Admitted by fail-open: valid until its pass expires, whatever the queue state says.
    if claims.seq == 0 {
        return Ok(decide(&gw.config, claims, Some(token), FAIL_OPEN_COUNTERS, Place::At(0), now, |_| None)?);
    }
    if claims.adm.is_none() && admission.controls.fail_open(now) {
        let answer = fail_open_answer(&gw.config, now)?;
        count_admission(gw, &answer, now);
        return Ok(answer);
    }
    let mut counters = admission.state.counters().await.map_err(unavailable)?;
    if claims.seq > counters.issued {
        // Numbers may be cached for a tick; a number another node issued since is checked afresh.
        counters = admission.state.refresh().await.map_err(unavailable)?;
    }
    let place = admission.launch.place(claims.seq);
    if let Place::At(p) = place {
        // The cursor passed this number over as abandoned: its place is gone, join again.
        if claims.adm.is_none() && p <= counters.cursor && admission.liveness.was_skipped(p) {
            return Err(ApiError::new(ErrorCode::TicketExpired));
        }
        admission.liveness.touch(p, counters.cursor, now);
    }
    let answer = decide(&gw.config, claims, Some(token), counters, place, now, |p| admission.eta_secs(p))?;
    count_admission(gw, &answer, now);
    Ok(answer)
}

/// Metrics of the answer that admitted a ticket: the pass, the wait it ended, the new session.
fn count_admission(gw: &Shared, answer: &Answer, now: u64) {
    if !answer.newly_admitted {
        return;
    }
    gw.metrics.passes.inc();
    if let Some(waited) = answer.waited_secs {
        gw.metrics.queue_wait.observe(waited as f64);
    }
    gw.admission.record_pass(now);
}

/// What waiting visitors are told: the operator's message, or that the queue is paused.
pub(crate) fn visitor_message(gw: &Shared) -> Option<String> {
    gw.admission.message().or_else(|| gw.admission.is_paused().then(|| ErrorCode::QueuePaused.message().to_owned()))
}

fn render(gw: &Shared, answer: &Answer) -> Response {
    answer_response(gw, answer).map(Body::new)
}

/// The answer with its headers, its body not boxed (see `PollResponse`).
fn answer_response(gw: &Shared, answer: &Answer) -> http::Response<Full<Bytes>> {
    let message = if answer.pass.is_some() { None } else { visitor_message(gw) };
    let opens_at = answer.opens_at.and_then(crate::launch::rfc3339);
    let body = view_json(answer, message.as_deref(), opens_at.as_deref());
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_cookies(gw, answer, resp.headers_mut());
    resp
}

/// The answer to a join or a poll as JSON: `ticket`, `state` (`waiting` or `admitted`),
/// `position` (visitors ahead, counting this one; 0 once admitted), `eta_seconds` (or null),
/// `refresh_after_seconds`, and when they apply `pass`, `message` and `opens_at` (in the
/// pre-queue: when the place is drawn, RFC 3339; `position` is 0 until then).
///
/// Written by hand (`json`) into one buffer sized for it, because every poll sends it: byte for
/// byte what serde_json writes for these fields (the tests compare the two).
fn view_json(answer: &Answer, message: Option<&str>, opens_at: Option<&str>) -> Vec<u8> {
    let pass = answer.pass.as_deref();
    let strings = answer.ticket.len() + pass.map_or(0, str::len) + message.map_or(0, str::len);
    let mut out = Vec::with_capacity(strings + 192);
    out.extend_from_slice(b"{\"ticket\":");
    json::push_str(&mut out, &answer.ticket);
    out.extend_from_slice(if pass.is_some() { b",\"state\":\"admitted\"" } else { b",\"state\":\"waiting\"" });
    out.extend_from_slice(b",\"position\":");
    json::push_u64(&mut out, answer.position);
    out.extend_from_slice(b",\"eta_seconds\":");
    match answer.eta {
        Some(eta) => json::push_u64(&mut out, eta),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"refresh_after_seconds\":");
    json::push_u64(&mut out, answer.refresh_after);
    for (key, value) in [(&b",\"pass\":"[..], pass), (b",\"message\":", message), (b",\"opens_at\":", opens_at)] {
        if let Some(value) = value {
            out.extend_from_slice(key);
            json::push_str(&mut out, value);
        }
    }
    out.push(b'}');
    out
}

/// The ticket and pass cookies of an answer, and `no-store`: tickets and passes are personal, no
/// shared cache may keep them.
pub(crate) fn set_cookies(gw: &Shared, answer: &Answer, headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let secure = gw.config.secure_cookies;
    if answer.ticket_changed {
        if let Some(c) = ticket::set_cookie(TICKET_COOKIE, &answer.ticket, secure) {
            headers.append(header::SET_COOKIE, c);
        }
    }
    if let Some(pass) = &answer.pass {
        if let Some(c) = ticket::set_cookie(PASS_COOKIE, pass, secure) {
            headers.append(header::SET_COOKIE, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kyufu_admission::{Keyring, Purpose};

    fn config() -> GatewayConfig {
        GatewayConfig::new("rice", Keyring::random(), "http://127.0.0.1:1")
    }

    fn claims(seq: u64, iat: u64, nxt: u64, adm: Option<u64>) -> TicketClaims {
        TicketClaims { ev: "rice".into(), ep: 9, seq, iat, nxt, adm, jat: Some(900), pq: false, n: None }
    }

    const COUNTERS: Counters = Counters { epoch: 9, issued: 10, cursor: 4, spent: 0 };

    /// The answer's JSON as serde_json writes it: the reference `view_json` must match.
    #[derive(serde::Serialize)]
    struct QueueView<'a> {
        ticket: &'a str,
        state: &'static str,
        position: u64,
        eta_seconds: Option<u64>,
        refresh_after_seconds: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pass: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        opens_at: Option<&'a str>,
    }

    #[test]
    fn answers_are_written_as_serde_json_writes_them() {
        let cfg = config();
        let c = claims(7, 1_000, 1_005, None);
        let waiting = decide(&cfg, c.clone(), None, COUNTERS, Place::At(7), 1_002, |p| Some(p * 2)).expect("answer");
        let no_eta = decide(&cfg, c.clone(), None, COUNTERS, Place::At(7), 1_002, |_| None).expect("answer");
        let pending = decide(&cfg, c.clone(), None, COUNTERS, Place::Pending { opens_at: 1_796_083_200 }, 1_002, |_| None)
            .expect("answer");
        let admitted = decide(&cfg, claims(3, 1_000, 1_005, None), None, COUNTERS, Place::At(3), 1_010, |_| None).expect("answer");
        let odd_ticket = Answer { ticket: "not \"a\" token\n".into(), ..decide(&cfg, c, None, COUNTERS, Place::At(7), 1_002, |_| None).expect("answer") };
        let messages = [None, Some("Back at 10:00 — お待ちください \"soon\" \\ </script>\u{1}\t")];
        for answer in [&waiting, &no_eta, &pending, &admitted, &odd_ticket] {
            for message in messages {
                let opens_at = answer.opens_at.and_then(crate::launch::rfc3339);
                let view = QueueView {
                    ticket: &answer.ticket,
                    state: if answer.pass.is_some() { "admitted" } else { "waiting" },
                    position: answer.position,
                    eta_seconds: answer.eta,
                    refresh_after_seconds: answer.refresh_after,
                    pass: answer.pass.as_deref(),
                    message,
                    opens_at: opens_at.as_deref(),
                };
                let expected = serde_json::to_string(&view).expect("json");
                let written = String::from_utf8(view_json(answer, message, opens_at.as_deref())).expect("utf-8");
                assert_eq!(written, expected);
            }
        }
    }

    #[test]
    fn waiting_ticket_is_reused_before_nxt_and_refreshed_after() {
        let cfg = config();
        let c = claims(7, 1_000, 1_005, None);
        let token = c.sign(&cfg.keyring);
        let a = decide(&cfg, c.clone(), Some(&token), COUNTERS, Place::At(7), 1_002, |_| None).expect("answer");
        assert_eq!((a.ticket.as_str(), a.ticket_changed, a.position, a.eta), (token.as_str(), false, 3, None));
        let b = decide(&cfg, c, Some(&token), COUNTERS, Place::At(7), 1_005, |p| Some(p * 2)).expect("answer");
        assert!(b.ticket_changed);
        let fresh: TicketClaims = cfg.keyring.verify(Purpose::Ticket, &b.ticket).expect("signed");
        assert_eq!((fresh.seq, fresh.iat, fresh.nxt, fresh.adm, fresh.jat), (7, 1_005, 1_010, None, Some(900)));
        assert_eq!((b.eta, b.refresh_after), (Some(6), 5), "refresh capped at refresh_secs");
        assert_eq!(b.ticket.len(), token.len(), "the ticket does not grow");
    }

    #[test]
    fn admission_is_recorded_once_and_fixes_the_pass() {
        let cfg = config();
        let c = claims(3, 1_000, 1_005, None);
        let first = decide(&cfg, c.clone(), Some(&c.sign(&cfg.keyring)), COUNTERS, Place::At(3), 1_010, |_| None).expect("answer");
        assert!(first.newly_admitted && first.ticket_changed);
        assert_eq!(first.position, 0);
        let admitted: TicketClaims = cfg.keyring.verify(Purpose::Ticket, &first.ticket).expect("signed");
        assert_eq!((admitted.adm, admitted.jat), (Some(1_010), Some(900)), "the join time survives admission");
        assert_eq!(first.waited_secs, Some(110), "joined at 900, admitted at 1010");
        let again = decide(&cfg, admitted.clone(), Some(&first.ticket), COUNTERS, Place::At(3), 1_500, |_| None).expect("answer");
        assert!(!again.newly_admitted && !again.ticket_changed);
        assert_eq!(again.waited_secs, None, "the wait is measured once per admission");
        // A ticket signed before `jat` existed is admitted all the same, just not measured.
        let old = decide(&cfg, TicketClaims { jat: None, ..c }, None, COUNTERS, Place::At(3), 1_010, |_| None).expect("answer");
        assert!(old.newly_admitted);
        assert_eq!(old.waited_secs, None);
        assert_eq!(again.pass, first.pass, "same ticket, same pass");
        let pass = kyufu_admission::verify_pass(&cfg.keyring, first.pass.as_deref().unwrap_or(""), "rice", 1_500);
        assert_eq!(pass.map(|p| (p.seq, p.exp)), Ok((3, 1_010 + 1_800)));
        // Once the pass would have expired, the ticket is spent.
        let late = decide(&cfg, admitted, Some(&first.ticket), COUNTERS, Place::At(3), 1_010 + 1_800, |_| None);
        assert_eq!(late.map(|a| a.position), Err(ErrorCode::TicketExpired));
    }

    #[test]
    fn stale_and_foreign_tickets_are_refused() {
        let cfg = config();
        let stale = claims(3, 1_000, 1_005, None);
        let idle = 1_000 + cfg.ticket_idle_secs + 1;
        assert_eq!(decide(&cfg, stale.clone(), None, COUNTERS, Place::At(3), idle, |_| None).err(), Some(ErrorCode::TicketExpired));
        // Still waiting: an idle ticket keeps its place.
        let waiting = TicketClaims { seq: 8, ..stale.clone() };
        assert!(decide(&cfg, waiting, None, COUNTERS, Place::At(8), idle, |_| None).is_ok());
        for bad in [
            TicketClaims { ev: "other".into(), ..stale.clone() },
            TicketClaims { ep: 8, ..stale.clone() },
            TicketClaims { seq: 11, ..stale.clone() },
            TicketClaims { seq: 0, ..stale },
        ] {
            assert_eq!(decide(&cfg, bad, None, COUNTERS, Place::At(3), 1_001, |_| None).err(), Some(ErrorCode::TicketInvalid));
        }
    }
}
