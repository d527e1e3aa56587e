//! The child identity key: which child an application is for, as a keyed hash (HMAC-SHA256 with a
//! secret from config), so dedupe and partitioning never hold a resident id or a name in clear.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::application::Application;
use crate::normalize::kana_key;

/// Secret for identity keys. Rotating it re-keys the dedupe index, so it is rotated only between
/// programs.
#[derive(Clone)]
pub struct IdentitySecret(Vec<u8>);

impl IdentitySecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        IdentitySecret(bytes.into())
    }
}

impl std::fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitySecret(..)")
    }
}

/// Hex HMAC of the child's identity within one program: from the resident id when the applicant
/// gave one, otherwise from kana name, birth date and postal code.
pub fn child_identity_key(secret: &IdentitySecret, program_id: &str, app: &Application) -> String {
    let material = match &app.child.resident_id {
        Some(rid) => format!("rid\u{1f}{rid}"),
        None => format!(
            "attr\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            kana_key(&app.child.family_name_kana),
            kana_key(&app.child.given_name_kana),
            app.child.birth_date,
            app.guardian.postal_code
        ),
    };
    keyed_hash(secret, program_id, &material)
}

/// Hex HMAC-SHA256 of `material` under `secret`, domain-separated by program.
pub fn keyed_hash(secret: &IdentitySecret, program_id: &str, material: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key anyway.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new_from_slice(b"").expect("empty HMAC key"));
    mac.update(program_id.as_bytes());
    mac.update(b"\x1e");
    mac.update(material.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
