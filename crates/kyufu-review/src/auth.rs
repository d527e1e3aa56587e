//! Reviewer accounts: HTTP Basic authentication against `name:sha256(password)` entries from
//! configuration (a deployment puts an SSO proxy in front and keeps these for break-glass).
//! Passwords are compared as hashes in constant time; a missing or wrong login is 401 with a
//! `WWW-Authenticate` challenge so browsers ask for it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Default)]
pub struct Reviewers {
    accounts: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Reviewers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.accounts.iter().map(|(n, _)| n)).finish()
    }
}

/// SHA-256 of a password, hex.
pub fn hash_password(password: &str) -> String {
    Sha256::digest(password.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Reviewers {
    /// From `name:sha256hex[,name:sha256hex...]`.
    pub fn from_spec(spec: &str) -> Result<Self, String> {
        let mut accounts = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, hex) = entry.split_once(':').ok_or_else(|| format!("reviewer entry {entry:?} is not name:sha256"))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
                return Err(format!("reviewer name {name:?} must be letters, digits, '-', '_' or '.'"));
            }
            let mut hash = [0u8; 32];
            if hex.len() != 64 {
                return Err(format!("reviewer {name}: the password hash must be 64 hex digits"));
            }
            for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
                let s = std::str::from_utf8(chunk).map_err(|_| format!("reviewer {name}: bad hash"))?;
                hash[i] = u8::from_str_radix(s, 16).map_err(|_| format!("reviewer {name}: bad hash"))?;
            }
            accounts.push((name.to_owned(), hash));
        }
        if accounts.is_empty() {
            return Err("no reviewer accounts configured".to_owned());
        }
        Ok(Reviewers { accounts })
    }

    /// The reviewer named by a `Basic` Authorization header, if the password is right.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<String> {
        let encoded = authorization?.strip_prefix("Basic ")?;
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        // Every account is compared, so timing does not tell which names exist.
        let mut found = None;
        for (n, hash) in &self.accounts {
            let ok = bool::from(given.ct_eq(hash)) & (n == name);
            if ok {
                found = Some(n.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_name_and_password() {
        let r = Reviewers::from_spec(&format!("alice:{},bob:{}", hash_password("s3cret"), hash_password("other"))).expect("spec");
        let header = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));
        assert_eq!(r.authenticate(Some(&header("alice", "s3cret"))).as_deref(), Some("alice"));
        assert_eq!(r.authenticate(Some(&header("alice", "other"))), None, "bob's password is not alice's");
        assert_eq!(r.authenticate(Some(&header("carol", "s3cret"))), None);
        assert_eq!(r.authenticate(Some("Bearer x")), None);
        assert_eq!(r.authenticate(Some("Basic !!!")), None);
        assert_eq!(r.authenticate(None), None);
        assert!(Reviewers::from_spec("").is_err());
        assert!(Reviewers::from_spec("alice:short").is_err());
    }
}
