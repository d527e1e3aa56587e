//! Waiting-room tickets and the passes minted from them. A ticket is a token signed with
//! `Purpose::Ticket` whose claims are everything the gateway knows about a visitor: the event, the
//! queue epoch, the sequence number, when the ticket was issued, when the next poll is worth a new
//! ticket, and — once the visitor was admitted — when that happened. The gateway stores nothing per
//! visitor, so an admitted ticket fixes the pass: the same ticket always yields the same pass.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use kyufu_admission::{Keyring, PassClaims, Purpose, TokenError};
use serde::{Deserialize, Serialize};

use crate::json;

/// Name of the ticket cookie.
pub const TICKET_COOKIE: &str = "kyufu_ticket";
/// Name of the admission-pass cookie (intake reads it too).
pub const PASS_COOKIE: &str = "kyufu_pass";
/// Header a client sends its ticket in.
pub const TICKET_HEADER: &str = "x-queue-ticket";
/// The same as a header name, so looking it up on every poll does not parse the name again.
const TICKET_HEADER_NAME: HeaderName = HeaderName::from_static(TICKET_HEADER);

/// Claims of a ticket. Short names keep the token small: it travels on every poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Event (program) id.
    pub ev: String,
    /// Queue epoch the sequence number belongs to.
    pub ep: u32,
    /// The visitor's place in line.
    pub seq: u64,
    /// When this ticket was issued (joined, or last refreshed), Unix seconds.
    pub iat: u64,
    /// Earliest next refresh, Unix seconds: a poll before it gets this same ticket back.
    pub nxt: u64,
    /// When the visitor was found admitted, Unix seconds; fixes the pass's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adm: Option<u64>,
    /// When the visitor joined, Unix seconds; kept through every refresh, so `adm - jat` is the
    /// wait the `kyufu_gateway_queue_wait_seconds` histogram records. Absent in tickets signed
    /// before it existed, which are then not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jat: Option<u64>,
    /// Joined before the opening time: `seq` is a pre-queue number whose place is drawn at opening.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pq: bool,
    /// A random number in fail-open tickets only: they all hold place 0, and this keeps their
    /// passes apart (one visitor spending a pass must not spend another's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TicketClaims {
    pub fn sign(&self, keyring: &Keyring) -> String {
        let mut json = Vec::with_capacity(160 + self.ev.len());
        self.write_json(&mut json);
        keyring.sign_json(Purpose::Ticket, &json)
    }

    /// Verifies `token` as a ticket signed with `keyring` and reads its claims (the same as
    /// `keyring.verify(Purpose::Ticket, token)`, faster for the tickets the gateway writes).
    pub fn verify(keyring: &Keyring, token: &str) -> Result<TicketClaims, TokenError> {
        keyring.verify_json(Purpose::Ticket, token, Self::read_json)
    }

    /// The claims as JSON: byte for byte what serde_json writes for them (tested), which is what
    /// tickets have always carried.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ev\":");
        json::push_str(out, &self.ev);
        let required = [(&b",\"ep\":"[..], u64::from(self.ep)), (b",\"seq\":", self.seq), (b",\"iat\":", self.iat), (b",\"nxt\":", self.nxt)];
        for (key, value) in required {
            out.extend_from_slice(key);
            json::push_u64(out, value);
        }
        for (key, value) in [(&b",\"adm\":"[..], self.adm), (b",\"jat\":", self.jat)] {
            if let Some(value) = value {
                out.extend_from_slice(key);
                json::push_u64(out, value);
            }
        }
        if self.pq {
            out.extend_from_slice(b",\"pq\":true");
        }
        if let Some(n) = self.n {
            out.extend_from_slice(b",\"n\":");
            json::push_u64(out, n);
        }
        out.push(b'}');
    }

    /// Claims from JSON: what `write_json` writes is read directly; anything else (whitespace,
    /// escapes, another order) goes to serde_json, which decides, so the result is always
    /// serde_json's.
    fn read_json(json: &[u8]) -> Option<TicketClaims> {
        Self::read_exact(json).or_else(|| serde_json::from_slice(json).ok())
    }

    fn read_exact(json: &[u8]) -> Option<TicketClaims> {
        let mut r = json::Exact::new(json);
        let ev = r.str_after(b"{\"ev\":")?.to_owned();
        let ep = u32::try_from(r.uint_after(b",\"ep\":")?).ok()?;
        let seq = r.uint_after(b",\"seq\":")?;
        let iat = r.uint_after(b",\"iat\":")?;
        let nxt = r.uint_after(b",\"nxt\":")?;
        let adm = r.optional_uint_after(b",\"adm\":")?;
        let jat = r.optional_uint_after(b",\"jat\":")?;
        let pq = r.eat(b",\"pq\":true");
        let n = r.optional_uint_after(b",\"n\":")?;
        (r.eat(b"}") && r.is_done()).then_some(TicketClaims { ev, ep, seq, iat, nxt, adm, jat, pq, n })
    }
}

/// The admission pass of an admitted ticket (`claims.adm` set): valid from admission for `ttl`.
/// Its id is derived from the visitor's place (event, queue epoch, number, and the fail-open
/// nonce), so every pass minted for that place — whichever ticket of the visitor's asked, on
/// whichever node — has the same id, and spending it in intake covers all of them.
pub(crate) fn pass_for(keyring: &Keyring, claims: &TicketClaims, adm: u64, ttl: u64) -> String {
    let pass = PassClaims {
        ev: claims.ev.clone(),
        pid: pass_id(keyring, claims),
        seq: claims.seq,
        iat: adm,
        exp: adm.saturating_add(ttl),
    };
    keyring.sign(Purpose::Pass, &pass)
}

/// The pass id of a place in the queue.
pub(crate) fn pass_id(keyring: &Keyring, claims: &TicketClaims) -> String {
    let place = format!("{}\x1f{}\x1f{}\x1f{}", claims.ev, claims.ep, claims.seq, claims.n.unwrap_or(0));
    keyring.derive_id(place.as_bytes())
}

/// Where the client sent its ticket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    Missing,
    /// A header value that is not even text.
    Unreadable,
    Token(&'a str),
}

/// The ticket from `X-Queue-Ticket`, else from the `kyufu_ticket` cookie. An empty header counts as
/// absent, so a client that always sends the header still falls back to its cookie.
pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    if let Some(value) = headers.get(&TICKET_HEADER_NAME) {
        match value.to_str().map(str::trim) {
            Ok("") => {}
            Ok(token) => return Presented::Token(token),
            Err(_) => return Presented::Unreadable,
        }
    }
    match cookie(headers, TICKET_COOKIE) {
        Some(token) if !token.is_empty() => Presented::Token(token),
        _ => Presented::Missing,
    }
}

/// The first cookie called `name` in any `Cookie` header.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// `name=value; Path=/; HttpOnly; SameSite=Lax[; Secure]`. A session cookie: the ticket and pass
/// carry their own expiry, so the browser needs none. Built in one buffer that becomes the header
/// value without a copy: every poll that refreshes a ticket sets it.
pub(crate) fn set_cookie(name: &str, value: &str, secure: bool) -> Option<HeaderValue> {
    const ATTRIBUTES: &str = "; Path=/; HttpOnly; SameSite=Lax";
    const SECURE: &str = "; Secure";
    // Exactly the length, so the header value takes the buffer over without another allocation.
    let secure_len = if secure { SECURE.len() } else { 0 };
    let mut cookie = String::with_capacity(name.len() + 1 + value.len() + ATTRIBUTES.len() + secure_len);
    cookie.push_str(name);
    cookie.push('=');
    cookie.push_str(value);
    cookie.push_str(ATTRIBUTES);
    if secure {
        cookie.push_str(SECURE);
    }
    HeaderValue::try_from(cookie).ok()
}

/// A cookie that removes `name` from the browser.
pub(crate) fn clear_cookie(name: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}")).ok()
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use proptest::prelude::*;

    use super::*;

    fn claims() -> TicketClaims {
        TicketClaims { ev: "rice".into(), ep: 7, seq: 42, iat: 1_000, nxt: 1_005, adm: None, jat: Some(990), pq: false, n: None }
    }

    #[test]
    fn ticket_round_trips_and_stays_small() {
        let kr = Keyring::random();
        let c = TicketClaims { adm: Some(1_003), ..claims() };
        let token = c.sign(&kr);
        assert_eq!(kr.verify::<TicketClaims>(Purpose::Ticket, &token), Ok(c));
        assert!(token.len() < 200, "{}", token.len());
        // A waiting ticket omits `adm` altogether.
        let waiting = claims().sign(&kr);
        let payload = waiting.split('.').nth(1).unwrap_or_default();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap_or_default()).unwrap_or_default();
        assert!(!json.contains("adm"), "{json}");
    }

    fn any_claims() -> impl Strategy<Value = TicketClaims> {
        let ev = prop_oneof![Just("rice-2026".to_owned()), any::<String>(), "[a-z\"\\\\ \t\u{0}-\u{1f}é東]{0,12}"];
        let numbers = (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>());
        let optional = (any::<Option<u64>>(), any::<Option<u64>>(), any::<bool>(), any::<Option<u64>>());
        (ev, numbers, optional).prop_map(|(ev, (ep, seq, iat, nxt), (adm, jat, pq, n))| TicketClaims {
            ev,
            ep,
            seq,
            iat,
            nxt,
            adm,
            jat,
            pq,
            n,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn claims_json_is_serde_json_both_ways(claims in any_claims(), edit in any::<(prop::sample::Index, u8, u8)>()) {
            let mut json = Vec::new();
            claims.write_json(&mut json);
            prop_assert_eq!(&json, &serde_json::to_vec(&claims).expect("json"));
            prop_assert_eq!(TicketClaims::read_json(&json), Some(claims));
            // Whatever the bytes (a ticket of an older writer, or damage), the result is serde_json's.
            let (at, byte, how) = edit;
            let i = at.index(json.len());
            match how % 3 {
                0 => json[i] = byte,
                1 => json.insert(i, byte),
                _ => { json.remove(i); }
            }
            prop_assert_eq!(TicketClaims::read_json(&json), serde_json::from_slice::<TicketClaims>(&json).ok());
        }
    }

    #[test]
    fn tickets_of_other_writers_still_verify() {
        let kr = Keyring::random();
        let c = TicketClaims { adm: Some(1_003), pq: true, n: Some(9), ..claims() };
        let by_serde = kr.sign(Purpose::Ticket, &c);
        assert_eq!(by_serde, c.sign(&kr), "the same token as serde_json's");
        // Another key order and whitespace: not the exact shape, read by serde_json.
        let reordered = r#"{ "seq": 42, "ev": "rice", "ep": 7, "iat": 1000, "nxt": 1005 }"#;
        let token = kr.sign_json(Purpose::Ticket, reordered.as_bytes());
        assert_eq!(TicketClaims::verify(&kr, &token), Ok(TicketClaims { jat: None, ..claims() }));
        assert_eq!(TicketClaims::verify(&Keyring::random(), &token), Err(TokenError::BadSignature));
        assert_eq!(TicketClaims::verify(&kr, &kr.sign_json(Purpose::Ticket, b"{}")), Err(TokenError::Malformed));
    }

    #[test]
    fn every_pass_of_one_place_has_one_id() {
        let kr = Keyring::random();
        let c = TicketClaims { adm: Some(1_003), ..claims() };
        let a = pass_for(&kr, &c, 1_003, 600);
        assert_eq!(a, pass_for(&kr, &c, 1_003, 600));
        let pass = kyufu_admission::verify_pass(&kr, &a, "rice", 1_100).expect("valid pass");
        assert_eq!((pass.seq, pass.iat, pass.exp, pass.pid.len()), (42, 1_003, 1_603, 32));
        // The same place admitted at another time (an older ticket of the same visitor polled
        // again) gets another pass, but with the same id: spending one spends both.
        let c2 = TicketClaims { adm: Some(1_004), iat: 1_004, ..claims() };
        let again = kyufu_admission::verify_pass(&kr, &pass_for(&kr, &c2, 1_004, 600), "rice", 1_100).expect("valid");
        assert_eq!(pass.pid, again.pid);
        // Other places, epochs and fail-open nonces get other ids.
        for other in [
            TicketClaims { seq: 43, ..c.clone() },
            TicketClaims { ep: 8, ..c.clone() },
            TicketClaims { seq: 0, n: Some(1), ..c.clone() },
            TicketClaims { seq: 0, n: Some(2), ..c.clone() },
        ] {
            assert_ne!(pass_id(&kr, &other), pass.pid, "{other:?}");
        }
        assert_ne!(pass_id(&kr, &TicketClaims { seq: 0, n: Some(1), ..c.clone() }), pass_id(&kr, &TicketClaims { seq: 0, n: Some(2), ..c }));
    }

    #[test]
    fn ticket_is_read_from_header_then_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), Presented::Missing);
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; kyufu_ticket=from-cookie; c=d"));
        assert_eq!(presented(&h), Presented::Token("from-cookie"));
        h.insert(TICKET_HEADER, HeaderValue::from_static("  "));
        assert_eq!(presented(&h), Presented::Token("from-cookie"), "blank header falls back");
        h.insert(TICKET_HEADER, HeaderValue::from_static("from-header"));
        assert_eq!(presented(&h), Presented::Token("from-header"));
        h.insert(TICKET_HEADER, HeaderValue::from_bytes(b"\xff").unwrap_or(HeaderValue::from_static("x")));
        assert_eq!(presented(&h), Presented::Unreadable);
    }

    #[test]
    fn cookies_have_the_contract_attributes() {
        let c = set_cookie(TICKET_COOKIE, "abc.def.ghi", false).expect("cookie");
        assert_eq!(c, "kyufu_ticket=abc.def.ghi; Path=/; HttpOnly; SameSite=Lax");
        let c = set_cookie(PASS_COOKIE, "p", true).expect("cookie");
        assert_eq!(c, "kyufu_pass=p; Path=/; HttpOnly; SameSite=Lax; Secure");
        assert!(set_cookie(PASS_COOKIE, "bad\nvalue", false).is_none());
        let c = clear_cookie(PASS_COOKIE, true).expect("cookie");
        assert_eq!(c, "kyufu_pass=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure");
    }
}
