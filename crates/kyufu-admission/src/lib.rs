//! Signed tokens of the waiting room. A token is `<kid>.<payload>.<mac>`: the key id, the claims as
//! base64url JSON, and HMAC-SHA256 over `<kid>.<payload>` with a purpose label so a ticket can
//! never pass as an admission pass. Keys carry ids so they can be rotated: new tokens are signed
//! with the current key, and older keys still verify until they are removed.
//!
//! The gateway issues both kinds; intake verifies passes with the same keyring and never calls the
//! gateway.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Largest token accepted for decoding; anything longer is refused before parsing.
pub const MAX_TOKEN_LEN: usize = 1024;

/// HMAC keys by id. Keys shorter than 32 bytes are refused.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    /// Each key as an HMAC state that has already absorbed the key (both padded key blocks), so a
    /// token costs only the hashing of its own bytes: the gateway verifies and re-signs a ticket
    /// on every poll.
    keys: BTreeMap<String, Hmac<Sha256>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("current", &self.current).field("kids", &self.keys.keys()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("key id {0:?} must be 1-16 letters, digits or '-'")]
    BadKeyId(String),
    #[error("key {0:?} is shorter than 32 bytes")]
    ShortKey(String),
    #[error("current key id {0:?} is not in the keyring")]
    NoCurrent(String),
}

impl Keyring {
    /// A keyring signing with `current`; `keys` must contain it.
    pub fn new(current: &str, keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<Self, KeyringError> {
        let mut map = BTreeMap::new();
        for (kid, key) in keys {
            if kid.is_empty() || kid.len() > 16 || !kid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(KeyringError::BadKeyId(kid));
            }
            if key.len() < 32 {
                return Err(KeyringError::ShortKey(kid));
            }
            // HMAC takes keys of any length; the error exists only for fixed-size MACs.
            let Ok(keyed) = <Hmac<Sha256> as Mac>::new_from_slice(&key) else { return Err(KeyringError::ShortKey(kid)) };
            map.insert(kid, keyed);
        }
        if !map.contains_key(current) {
            return Err(KeyringError::NoCurrent(current.to_owned()));
        }
        Ok(Keyring { current: current.to_owned(), keys: map })
    }

    /// A keyring with one random key; for tests and single-process demos.
    pub fn random() -> Self {
        let key: [u8; 32] = rand::random();
        Keyring::new("k1", [("k1".to_owned(), key.to_vec())]).expect("a 32-byte key under a valid id is accepted")
    }

    /// A keyring from a spec `kid:secret[,kid:secret...]`; the first is current.
    pub fn from_spec(spec: &str) -> Result<Self, KeyringError> {
        let mut keys = Vec::new();
        let mut first = None;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, secret) = part.split_once(':').unwrap_or(("", part));
            first.get_or_insert_with(|| kid.to_owned());
            keys.push((kid.to_owned(), secret.as_bytes().to_vec()));
        }
        Keyring::new(&first.unwrap_or_default(), keys)
    }

    fn mac(&self, kid: &str, purpose: Purpose, signed: &[u8]) -> Option<Hmac<Sha256>> {
        self.mac_labelled(kid, purpose.label(), signed)
    }

    fn mac_labelled(&self, kid: &str, label: &[u8], data: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = self.keys.get(kid)?.clone();
        mac.update(label);
        mac.update(data);
        Some(mac)
    }

    /// A 128-bit id (32 hex digits) derived from `input` with the current key: the same input
    /// always gives the same id, and nobody without the key can predict or steer it. The gateway
    /// derives pass ids from the visitor's place in the queue, so every pass minted for one place
    /// has one id, and spending it covers them all. Ids change when the current key is rotated.
    pub fn derive_id(&self, input: &[u8]) -> String {
        let Some(mac) = self.mac_labelled(&self.current, b"kyufu-id-v1\x1e", input) else { return String::new() };
        hex(mac.finalize().into_bytes().get(..16).unwrap_or_default())
    }

    /// Signs `claims` for `purpose`.
    pub fn sign<T: Serialize>(&self, purpose: Purpose, claims: &T) -> String {
        let mut json = Vec::with_capacity(160);
        if serde_json::to_writer(&mut json, claims).is_err() {
            json.clear();
        }
        self.sign_json(purpose, &json)
    }

    /// Signs claims already written as JSON, for a caller with a faster writer than serde's for
    /// its own claims (the gateway re-signs a ticket on most polls). `sign` is this after
    /// serde_json.
    pub fn sign_json(&self, purpose: Purpose, json: &[u8]) -> String {
        // The token is built in one buffer sized for it: `kid.payload`, signed as it stands, then `.mac`.
        let mut token = Vec::with_capacity(self.current.len() + 2 + json.len().div_ceil(3) * 4 + TAG_B64_LEN);
        token.extend_from_slice(self.current.as_bytes());
        token.push(b'.');
        push_base64(&mut token, json);
        let tag = self.mac(&self.current, purpose, &token).map(|m| m.finalize().into_bytes());
        token.push(b'.');
        if let Some(tag) = tag {
            push_base64(&mut token, &tag);
        }
        // Key ids and base64url are ASCII.
        String::from_utf8(token).unwrap_or_default()
    }

    /// Verifies a token's signature for `purpose` and decodes its claims. Constant-time compare.
    pub fn verify<T: DeserializeOwned>(&self, purpose: Purpose, token: &str) -> Result<T, TokenError> {
        self.verify_json(purpose, token, |json| serde_json::from_slice(json).ok())
    }

    /// Verifies a token's signature for `purpose` and hands its claims, as JSON, to `read`
    /// (`None`: malformed), for a caller with a faster reader than serde's for its own claims.
    /// Nothing reaches `read` unless the signature is good. `verify` is this with serde_json.
    pub fn verify_json<T>(&self, purpose: Purpose, token: &str, read: impl FnOnce(&[u8]) -> Option<T>) -> Result<T, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(kid), Some(payload), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let mut tag_buf = [0u8; 64];
        let tag = decode(tag, &mut tag_buf)?;
        let signed_len = kid.len() + 1 + payload.len();
        let mac = self.mac(kid, purpose, &token.as_bytes()[..signed_len]).ok_or(TokenError::UnknownKey)?;
        // verify_slice compares in constant time.
        mac.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
        let mut json_buf = [0u8; 384];
        read(&decode(payload, &mut json_buf)?).ok_or(TokenError::Malformed)
    }
}

/// Length of an HMAC-SHA256 tag in unpadded base64url.
const TAG_B64_LEN: usize = 43;

/// Appends `bytes` in unpadded base64url to `out`, straight into its spare room.
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = out.get_mut(start..).map_or(0, |room| URL_SAFE_NO_PAD.encode_slice(bytes, room).unwrap_or(0));
    out.truncate(start + written);
}

/// Decodes base64url `part` into `buf` when it fits, as the parts of the tokens a keyring signs do,
/// so checking a token allocates nothing; anything longer is decoded onto the heap.
fn decode<'b>(part: &str, buf: &'b mut [u8]) -> Result<Cow<'b, [u8]>, TokenError> {
    match URL_SAFE_NO_PAD.decode_slice(part, buf) {
        Ok(n) => buf.get(..n).map(Cow::Borrowed).ok_or(TokenError::Malformed),
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            URL_SAFE_NO_PAD.decode(part).map(Cow::Owned).map_err(|_| TokenError::Malformed)
        }
        Err(DecodeSliceError::DecodeError(_)) => Err(TokenError::Malformed),
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// What a token is for; part of the MAC, so one kind cannot be replayed as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Ticket,
    Pass,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Ticket => b"kyufu-ticket-v1\x1e",
            Purpose::Pass => b"kyufu-pass-v1\x1e",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token is for another event")]
    WrongEvent,
    #[error("token expired")]
    Expired,
}

/// Claims of an admission pass: the visitor may submit applications for `event` until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassClaims {
    /// Event (program) id the pass is bound to.
    pub ev: String,
    /// Pass id (128 bits, hex), for spending and revocation. `PassClaims::new` draws it at random;
    /// the gateway derives it from the ticket so that polling again returns the same pass.
    pub pid: String,
    /// Queue sequence number the visitor was admitted with.
    pub seq: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

impl PassClaims {
    /// A new pass for `event` valid `ttl_secs` from `now`.
    pub fn new(event: &str, seq: u64, now: u64, ttl_secs: u64) -> Self {
        let id: [u8; 16] = rand::random();
        PassClaims {
            ev: event.to_owned(),
            pid: hex(&id),
            seq,
            iat: now,
            exp: now.saturating_add(ttl_secs),
        }
    }
}

/// Verifies an admission pass locally: signature, event binding and expiry.
pub fn verify_pass(keyring: &Keyring, token: &str, event: &str, now: u64) -> Result<PassClaims, TokenError> {
    let claims: PassClaims = keyring.verify(Purpose::Pass, token)?;
    if claims.ev != event {
        return Err(TokenError::WrongEvent);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_round_trip_and_rejections() {
        let kr = Keyring::random();
        let claims = PassClaims::new("rice", 7, 1_000, 600);
        let token = kr.sign(Purpose::Pass, &claims);
        assert_eq!(verify_pass(&kr, &token, "rice", 1_001), Ok(claims.clone()));
        assert_eq!(verify_pass(&kr, &token, "other", 1_001), Err(TokenError::WrongEvent));
        assert_eq!(verify_pass(&kr, &token, "rice", 1_600), Err(TokenError::Expired));
        assert_eq!(verify_pass(&Keyring::random(), &token, "rice", 1_001), Err(TokenError::BadSignature));
        // A ticket signed with the same key is not a pass.
        let as_ticket = kr.sign(Purpose::Ticket, &claims);
        assert_eq!(verify_pass(&kr, &as_ticket, "rice", 1_001), Err(TokenError::BadSignature));
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = PassClaims { exp: 9_999_999, ..claims };
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap_or_default());
        parts[1] = &forged;
        assert_eq!(verify_pass(&kr, &parts.join("."), "rice", 1_001), Err(TokenError::BadSignature));
        for junk in ["", "a", "a.b", "a.b.c.d", "k1.!!.??", &"x".repeat(5000)] {
            assert!(verify_pass(&kr, junk, "rice", 1_001).is_err(), "{junk}");
        }
    }

    #[test]
    fn tokens_and_ids_keep_their_exact_format() {
        // Expected values computed outside Rust (Python's hmac, hashlib, base64 and compact json),
        // so a faster signer can only pass by producing the same bytes.
        let kr = Keyring::from_spec("a:0123456789abcdef0123456789abcdef").expect("keyring");
        let claims = PassClaims { ev: "rice".into(), pid: "00112233445566778899aabbccddeeff".into(), seq: 7, iat: 1_000, exp: 1_600 };
        let token = kr.sign(Purpose::Pass, &claims);
        assert_eq!(
            token,
            "a.eyJldiI6InJpY2UiLCJwaWQiOiIwMDExMjIzMzQ0NTU2Njc3ODg5OWFhYmJjY2RkZWVmZiIsInNlcSI6NywiaWF0IjoxMDAwLCJleHAiOjE2MDB9.E8Jw7nyG4jC2WPqddwKyu_YTOrRv2xgvS6s5RxitDOM"
        );
        assert_eq!(verify_pass(&kr, &token, "rice", 1_001), Ok(claims));
        assert_eq!(kr.derive_id(b"rice\x1f1\x1f42"), "c7ed0972254e7a439952145ad773704a");
        // The JSON-level pair: the reader sees exactly the signed JSON, and only when it is signed.
        let json = br#"{"ev":"rice","seq":7}"#;
        let signed = kr.sign_json(Purpose::Ticket, json);
        assert_eq!(kr.verify_json(Purpose::Ticket, &signed, |read| Some(read.to_vec())), Ok(json.to_vec()));
        assert_eq!(kr.verify_json(Purpose::Ticket, &signed, |_| None::<()>), Err(TokenError::Malformed));
        assert_eq!(kr.verify_json(Purpose::Pass, &signed, |_| Some(())), Err(TokenError::BadSignature));
    }

    #[test]
    fn parts_too_long_for_the_stack_buffers_are_still_judged() {
        let kr = Keyring::random();
        // Claims longer than any ticket: decoded on the heap, verified all the same.
        let long = PassClaims { ev: "e".repeat(400), ..PassClaims::new("x", 1, 0, 100) };
        let token = kr.sign(Purpose::Pass, &long);
        assert!(token.len() < MAX_TOKEN_LEN);
        assert_eq!(kr.verify::<PassClaims>(Purpose::Pass, &token), Ok(long));
        // A tag of another length is a bad signature, not a malformed token, as before, however long.
        let (signed, tag) = token.rsplit_once('.').unwrap_or_default();
        for other in ["A".repeat(64), "A".repeat(100)] {
            assert_eq!(kr.verify::<PassClaims>(Purpose::Pass, &format!("{signed}.{other}")), Err(TokenError::BadSignature));
        }
        assert_eq!(kr.verify::<PassClaims>(Purpose::Pass, &format!("{signed}.{tag}!")), Err(TokenError::Malformed));
    }

    #[test]
    fn derived_ids_are_fixed_per_input_and_key() {
        let kr = Keyring::random();
        let a = kr.derive_id(b"rice\x1f1\x1f42");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, kr.derive_id(b"rice\x1f1\x1f42"), "same input, same id");
        assert_ne!(a, kr.derive_id(b"rice\x1f1\x1f43"), "another place, another id");
        assert_ne!(a, Keyring::random().derive_id(b"rice\x1f1\x1f42"), "another key, another id");
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_removed() {
        let old = Keyring::from_spec("a:0123456789abcdef0123456789abcdef").expect("keyring");
        let token = old.sign(Purpose::Pass, &PassClaims::new("ev", 1, 0, 100));
        let rotated =
            Keyring::from_spec("b:fedcba9876543210fedcba9876543210,a:0123456789abcdef0123456789abcdef").expect("keyring");
        assert!(verify_pass(&rotated, &token, "ev", 1).is_ok());
        assert!(rotated.sign(Purpose::Pass, &PassClaims::new("ev", 1, 0, 100)).starts_with("b."));
        let removed = Keyring::from_spec("b:fedcba9876543210fedcba9876543210").expect("keyring");
        assert_eq!(verify_pass(&removed, &token, "ev", 1), Err(TokenError::UnknownKey));
    }

    #[test]
    fn keyring_refuses_weak_config() {
        assert!(matches!(Keyring::from_spec("a:short"), Err(KeyringError::ShortKey(_))));
        assert!(matches!(Keyring::from_spec(""), Err(KeyringError::NoCurrent(_))));
        assert!(matches!(
            Keyring::from_spec("bad kid:0123456789abcdef0123456789abcdef"),
            Err(KeyringError::BadKeyId(_))
        ));
    }
}
