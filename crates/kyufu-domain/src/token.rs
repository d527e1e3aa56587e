//! Private status tokens: `base64url(HMAC-SHA256(secret, "status" || application id))`, truncated
//! to 128 bits. Deterministic, so a retried submission returns the same token without the token
//! ever being stored; compared in constant time.
//!
//! The lookup code is the same idea made typeable: `HMAC-SHA256(secret, "code" || id)` truncated
//! to 40 bits and written as eight Crockford symbols (`XXXX-XXXX`), shown on the completion page
//! and in the emails beside the application's short reference. 40 bits are enough against
//! guessing through a rate-limited lookup that answers every miss with the same 404.
//!
//! Rotation: tokens are issued with the current secret and verified against the current one and
//! any previous ones still configured, so applicants' links keep working while a new secret rolls
//! out; once the previous secret is dropped from the configuration its tokens stop working.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

#[derive(Clone)]
pub struct StatusTokens {
    secret: Vec<u8>,
    /// Earlier secrets, still accepted for verification.
    previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for StatusTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusTokens(..)")
    }
}

const TOKEN_BYTES: usize = 16;
/// Bytes of the lookup code (40 bits, eight base-32 symbols).
const CODE_BYTES: usize = 5;

impl StatusTokens {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        StatusTokens { secret: secret.into(), previous: Vec::new() }
    }

    /// Also accepts tokens issued under these earlier secrets (rotation).
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = Vec<u8>>) -> Self {
        self.previous.extend(previous);
        self
    }

    fn mac(secret: &[u8], id: Uuid) -> Option<Hmac<Sha256>> {
        Self::mac_for(b"status\x1e", secret, id)
    }

    fn mac_for(purpose: &[u8], secret: &[u8], id: Uuid) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
        mac.update(purpose);
        mac.update(id.as_bytes());
        Some(mac)
    }

    /// The typeable lookup code for `id` (`XXXX-XXXX`), under the current secret.
    pub fn issue_code(&self, id: Uuid) -> String {
        let tag = Self::mac_for(b"code\x1e", &self.secret, id).map(|m| m.finalize().into_bytes().to_vec()).unwrap_or_default();
        let mut five = [0u8; CODE_BYTES];
        if let Some(t) = tag.get(..CODE_BYTES) {
            five.copy_from_slice(t);
        }
        crate::reference::short_code(&five)
    }

    /// Whether `given` is the status token or the lookup code of `id` (as typed: case, width and
    /// separators do not matter), under any configured secret.
    pub fn verify_token_or_code(&self, id: Uuid, given: &str) -> bool {
        let Some(code) = crate::reference::parse_short_code(given) else { return self.verify(id, given) };
        std::iter::once(&self.secret).chain(&self.previous).fold(false, |found, secret| {
            let ok = Self::mac_for(b"code\x1e", secret, id).is_some_and(|m| m.verify_truncated_left(&code).is_ok());
            found | ok
        })
    }

    /// The token for `id`, under the current secret.
    pub fn issue(&self, id: Uuid) -> String {
        let tag = Self::mac(&self.secret, id).map(|m| m.finalize().into_bytes().to_vec()).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(&tag[..TOKEN_BYTES.min(tag.len())])
    }

    /// Whether `token` belongs to `id` under the current or a previous secret. Each comparison is
    /// constant time, and every configured secret is always tried, so the answer's timing does not
    /// tell which one matched.
    pub fn verify(&self, id: Uuid, token: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(token.trim()) else { return false };
        if given.len() != TOKEN_BYTES {
            return false;
        }
        std::iter::once(&self.secret).chain(&self.previous).fold(false, |found, secret| {
            let ok = Self::mac(secret, id).is_some_and(|m| m.verify_truncated_left(&given).is_ok());
            found | ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_id_and_secret() {
        let t = StatusTokens::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let id = Uuid::new_v4();
        let tok = t.issue(id);
        assert_eq!(tok.len(), 22);
        assert!(t.verify(id, &tok));
        assert!(!t.verify(Uuid::new_v4(), &tok));
        assert!(!StatusTokens::new(b"another secret of enough length!!".to_vec()).verify(id, &tok));
        assert!(!t.verify(id, ""));
        assert!(!t.verify(id, "not base64 ***"));
        assert!(!t.verify(id, &tok[..20]));
    }

    #[test]
    fn lookup_codes_verify_as_typed_and_only_for_their_id() {
        let t = StatusTokens::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let id = Uuid::new_v4();
        let code = t.issue_code(id);
        assert_eq!(code.len(), 9, "{code}");
        assert!(t.verify_token_or_code(id, &code));
        assert!(t.verify_token_or_code(id, &code.to_lowercase().replace('-', " ")));
        assert!(t.verify_token_or_code(id, &t.issue(id)), "the long token still works");
        assert!(!t.verify_token_or_code(Uuid::new_v4(), &code));
        let mut wrong: Vec<char> = code.chars().collect();
        wrong[0] = if wrong[0] == 'A' { 'B' } else { 'A' };
        assert!(!t.verify_token_or_code(id, &wrong.into_iter().collect::<String>()));
        assert!(!t.verify_token_or_code(id, ""));
        let rotated = StatusTokens::new(b"the new status secret, 32 bytes+".to_vec()).with_previous([b"0123456789abcdef0123456789abcdef".to_vec()]);
        assert!(rotated.verify_token_or_code(id, &code), "codes already sent survive a rotation");
    }

    #[test]
    fn rotation_accepts_the_previous_secret_until_it_is_dropped() {
        let old = b"the old status secret, 32 bytes+".to_vec();
        let new = b"the new status secret, 32 bytes+".to_vec();
        let id = Uuid::new_v4();
        let old_token = StatusTokens::new(old.clone()).issue(id);
        let rotating = StatusTokens::new(new.clone()).with_previous([old]);
        assert!(rotating.verify(id, &old_token), "links already sent keep working");
        let new_token = rotating.issue(id);
        assert_ne!(new_token, old_token, "new tokens come from the new secret");
        assert!(rotating.verify(id, &new_token));
        let rotated = StatusTokens::new(new);
        assert!(rotated.verify(id, &new_token));
        assert!(!rotated.verify(id, &old_token), "dropped secret, dropped tokens");
    }
}
