//! Reviewer accounts, logins and sessions.
//!
//! - Accounts come from configuration as `name:<argon2id PHC string>` entries, one per reviewer,
//!   separated by newlines, `;` or spaces (a PHC string has commas of its own). `kyufu
//!   reviewer-entry NAME` makes an entry ([`password_entry`]). Passwords are checked with argon2id
//!   (memory-hard, salted per entry); an unknown name is checked against a dummy entry so the time
//!   taken does not tell which names exist.
//! - Failed logins are throttled ([`Throttle`]) per account and per client address; while a limit
//!   holds, the login is refused with 429 and a message saying how long to wait, without checking
//!   the password.
//! - A login opens a session: a random token in an HttpOnly cookie, kept in the status store as a
//!   lease (`review-session:` namespace, keyed by the token's SHA-256) that runs out after the
//!   session lifetime, so every console replica sees it and logging out ends it everywhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// How long a session lasts after login unless configured otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

#[derive(Clone)]
pub struct Reviewers {
    accounts: Arc<Vec<(String, String)>>,
    /// An entry no name has: checked when the name is unknown.
    dummy: Arc<String>,
    pub throttle: Throttle,
    pub session_ttl: Duration,
}

impl std::fmt::Debug for Reviewers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.accounts.iter().map(|(n, _)| n)).finish()
    }
}

/// The argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes is a valid salt length");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default parameters").to_string()
}

/// A configuration entry for one reviewer: `name:<argon2id PHC string>`.
pub fn password_entry(name: &str, password: &str) -> Result<String, String> {
    check_name(name)?;
    if password.chars().count() < 12 {
        return Err("the password must have at least 12 characters".to_owned());
    }
    Ok(format!("{name}:{}", hash_password(password)))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(format!("reviewer name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

impl Reviewers {
    /// From `name:$argon2id$...` entries separated by newlines, `;` or spaces.
    pub fn from_spec(spec: &str) -> Result<Self, String> {
        let mut accounts: Vec<(String, String)> = Vec::new();
        for entry in spec.split(|c: char| c == ';' || c.is_whitespace()).filter(|e| !e.is_empty()) {
            let (name, phc) = entry.split_once(':').ok_or_else(|| format!("reviewer entry {:?} is not name:<argon2id hash>", cut(entry)))?;
            check_name(name)?;
            if phc.len() >= 64 && phc[..64].bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "reviewer {name}: this is an old unsalted SHA-256 entry; make a new one with `kyufu reviewer-entry {name}`"
                ));
            }
            let parsed = PasswordHash::new(phc).map_err(|_| format!("reviewer {name}: the password entry is not an argon2id hash (make one with `kyufu reviewer-entry {name}`)"))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(format!("reviewer {name}: the password hash must be argon2id, not {}", parsed.algorithm));
            }
            if accounts.iter().any(|(n, _)| n == name) {
                return Err(format!("reviewer {name} is configured twice; each reviewer has one login"));
            }
            accounts.push((name.to_owned(), phc.to_owned()));
        }
        if accounts.is_empty() {
            return Err("no reviewer accounts configured".to_owned());
        }
        Ok(Reviewers {
            accounts: Arc::new(accounts),
            dummy: Arc::new(hash_password("no account has this password")),
            throttle: Throttle::new(ThrottleLimits::default()),
            session_ttl: DEFAULT_SESSION_TTL,
        })
    }

    /// The same accounts with other login limits (tests, or a deployment's own policy).
    pub fn with_limits(mut self, limits: ThrottleLimits) -> Self {
        self.throttle = Throttle::new(limits);
        self
    }

    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Whether `name` is a configured account (a session of a removed account ends with it).
    pub fn knows(&self, name: &str) -> bool {
        self.accounts.iter().any(|(n, _)| n == name)
    }

    /// Checks a name and password (argon2id; the dummy entry for an unknown name). No throttling:
    /// see [`Reviewers::login`].
    fn verify(&self, name: &str, password: &str) -> bool {
        let known = self.accounts.iter().find(|(n, _)| n == name);
        let phc = known.map_or(self.dummy.as_str(), |(_, h)| h.as_str());
        let ok = PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok());
        ok && known.is_some()
    }

    /// A login attempt from `client`: the reviewer's name, or why not.
    pub fn login(&self, name: &str, password: &str, client: Option<IpAddr>) -> Result<String, LoginRefused> {
        let keys = throttle_keys(name, client);
        if let Some(wait) = self.throttle.blocked(&keys) {
            return Err(LoginRefused::Throttled(wait));
        }
        if self.verify(name, password) {
            self.throttle.clear(&keys[0]);
            Ok(name.to_owned())
        } else {
            self.throttle.failed(&keys);
            Err(LoginRefused::Wrong)
        }
    }

    /// The reviewer named by a `Basic` Authorization header (API clients), throttled like a login.
    pub fn basic(&self, authorization: &str, client: Option<IpAddr>) -> Result<String, LoginRefused> {
        let text = authorization
            .strip_prefix("Basic ")
            .and_then(|e| STANDARD.decode(e.trim()).ok())
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or(LoginRefused::Wrong)?;
        let (name, password) = text.split_once(':').ok_or(LoginRefused::Wrong)?;
        self.login(name, password, client)
    }
}

fn cut(s: &str) -> String {
    s.chars().take(12).collect::<String>() + "…"
}

fn throttle_keys(name: &str, client: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![format!("account:{}", cut_name(name))];
    if let Some(ip) = client {
        keys.push(format!("address:{ip}"));
    }
    keys
}

/// Names as typed can be anything: bound what the throttle keeps.
fn cut_name(name: &str) -> String {
    name.chars().take(64).collect()
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// Wrong name or password (which one is not told).
    Wrong,
    /// Too many failures lately; try again after this long.
    Throttled(Duration),
}

/// How many failed logins are allowed within `window` before logins are refused, per account and
/// per client address. The address limit is generous by default: a city's reviewers often share
/// one office address (or a proxy's), and one colleague's typos must not lock out the rest.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub per_account: usize,
    pub per_address: usize,
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits { per_account: 5, per_address: 100, window: Duration::from_secs(15 * 60) }
    }
}

/// Failed-login counters of this process (each console replica throttles on its own, so the
/// limits a deployment sees are at most replicas × these).
#[derive(Clone)]
pub struct Throttle {
    limits: ThrottleLimits,
    failures: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Throttle { limits, failures: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn limit(&self, key: &str) -> usize {
        if key.starts_with("account:") {
            self.limits.per_account
        } else {
            self.limits.per_address
        }
    }

    /// How long until a login may be tried again, if any of `keys` is over its limit.
    fn blocked(&self, keys: &[String]) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut wait = None::<Duration>;
        for k in keys {
            let Some(times) = map.get_mut(k) else { continue };
            times.retain(|t| now.duration_since(*t) < self.limits.window);
            let limit = self.limit(k);
            if times.len() >= limit {
                // Free again when the oldest failure that counts leaves the window.
                let oldest = times[times.len() - limit];
                let w = self.limits.window.saturating_sub(now.duration_since(oldest));
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        wait
    }

    fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            let window = self.limits.window;
            map.retain(|_, v| v.last().is_some_and(|t| now.duration_since(*t) < window));
        }
        for k in keys {
            let v = map.entry(k.clone()).or_default();
            v.push(now);
            let keep = self.limit(k);
            if v.len() > keep {
                v.drain(..v.len() - keep);
            }
        }
    }

    fn clear(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

/// A fresh session token (hex of 32 random bytes) for the cookie.
pub fn new_session_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store key of a session: the token's SHA-256, so a store dump holds no usable token.
pub fn session_key(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_entries_check_name_and_password() {
        let spec = format!("{}\n{}", password_entry("alice", "alice-password").expect("entry"), password_entry("bob", "bob-password!").expect("entry"));
        let r = Reviewers::from_spec(&spec).expect("spec");
        assert!(spec.contains("$argon2id$"), "{spec}");
        assert_eq!(r.login("alice", "alice-password", None), Ok("alice".into()));
        assert_eq!(r.login("alice", "bob-password!", None), Err(LoginRefused::Wrong), "bob's password is not alice's");
        assert_eq!(r.login("carol", "alice-password", None), Err(LoginRefused::Wrong));
        let header = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));
        assert_eq!(r.basic(&header("bob", "bob-password!"), None), Ok("bob".into()));
        assert_eq!(r.basic("Bearer x", None), Err(LoginRefused::Wrong));
        assert_eq!(r.basic("Basic !!!", None), Err(LoginRefused::Wrong));
        // Two entries with the same salt-free password still differ: salted.
        assert_ne!(hash_password("same password"), hash_password("same password"));
    }

    #[test]
    fn bad_entries_are_refused_with_the_way_out() {
        assert!(Reviewers::from_spec("").is_err());
        let old = Reviewers::from_spec(&format!("alice:{}", "ab".repeat(32))).expect_err("sha256");
        assert!(old.contains("kyufu reviewer-entry alice"), "{old}");
        assert!(Reviewers::from_spec("alice:short").is_err());
        let e = password_entry("alice", "pw-one-long!").expect("entry");
        let twice = Reviewers::from_spec(&format!("{e};{e}")).expect_err("twice");
        assert!(twice.contains("twice"), "{twice}");
        assert!(password_entry("alice", "short").is_err());
        assert!(password_entry("a|b", "long enough password").is_err(), "no '|' in names (leases use it)");
    }

    #[test]
    fn failed_logins_are_throttled_per_account_and_per_address() {
        let spec = format!("{} {}", password_entry("alice", "alice-password").expect("e"), password_entry("bob", "bob-password!").expect("e"));
        let limits = ThrottleLimits { per_account: 3, per_address: 5, window: Duration::from_secs(60) };
        let r = Reviewers::from_spec(&spec).expect("spec").with_limits(limits);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(r.login("alice", "guess", Some(a)), Err(LoginRefused::Wrong));
        }
        // Alice's account is held, even with her right password and from another address.
        assert!(matches!(r.login("alice", "alice-password", Some(b)), Err(LoginRefused::Throttled(w)) if w > Duration::from_secs(50)));
        // Bob from address a is still fine, until a has used up its own limit.
        assert_eq!(r.login("bob", "bob-password!", Some(a)), Ok("bob".into()));
        assert_eq!(r.login("bob", "guess", Some(a)), Err(LoginRefused::Wrong));
        assert_eq!(r.login("carol", "guess", Some(a)), Err(LoginRefused::Wrong));
        assert!(matches!(r.login("bob", "bob-password!", Some(a)), Err(LoginRefused::Throttled(_))), "address a is over its limit");
        assert_eq!(r.login("bob", "bob-password!", Some(b)), Ok("bob".into()), "bob from elsewhere");
    }
}
