//! Private status tokens: `base64url(HMAC-SHA256(secret, "status" || application id))`, truncated
//! to 128 bits. Deterministic, so a retried submission returns the same token without the token
//! ever being stored; compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

#[derive(Clone)]
pub struct StatusTokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for StatusTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusTokens(..)")
    }
}

const TOKEN_BYTES: usize = 16;

impl StatusTokens {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        StatusTokens { secret: secret.into() }
    }

    fn mac(&self, id: Uuid) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).ok()?;
        mac.update(b"status\x1e");
        mac.update(id.as_bytes());
        Some(mac)
    }

    /// The token for `id`.
    pub fn issue(&self, id: Uuid) -> String {
        let tag = self.mac(id).map(|m| m.finalize().into_bytes().to_vec()).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(&tag[..TOKEN_BYTES.min(tag.len())])
    }

    /// Whether `token` belongs to `id`, in constant time.
    pub fn verify(&self, id: Uuid, token: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(token.trim()) else { return false };
        if given.len() != TOKEN_BYTES {
            return false;
        }
        self.mac(id).is_some_and(|m| m.verify_truncated_left(&given).is_ok())
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
}
