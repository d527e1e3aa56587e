//! Configuration of one gateway, checked once before any socket opens. A bad value is reported with
//! the name of its key so the operator knows what to fix.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use kyufu_admission::Keyring;

pub use crate::client_limit::TrustedProxies;

/// Everything the gateway needs, built by the composition root.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Event (program) id bound into every ticket and pass; 1-64 of `A-Za-z0-9._-`.
    pub event_id: String,
    /// Signs tickets and passes; intake verifies passes with the same keyring.
    pub keyring: Keyring,
    /// Base URL of intake, `http://host:port`; everything under `/api/` is proxied there.
    pub upstream: String,
    /// Admissions per second at the start; 0 admits nobody until a rate is set.
    pub rate_per_sec: u32,
    /// Admissions allowed at once after a quiet spell (token bucket size).
    pub burst: u32,
    /// How often a waiting visitor should poll, seconds (the `refresh_after_seconds` ceiling).
    pub refresh_secs: u64,
    /// Lifetime of an admission pass, seconds, counted from admission.
    pub pass_ttl_secs: u64,
    /// A ticket whose turn came while it went unrefreshed longer than this is expired (410), so an
    /// abandoned ticket cannot be cashed in for a pass hours later.
    pub ticket_idle_secs: u64,
    /// A waiting ticket not polled for this many refresh intervals, once it is near the front, is
    /// abandoned: the cursor skips it without using an admission and its ticket is refused (410).
    /// 0 turns skipping off. At least 2, so one lost poll never costs a place.
    pub expire_after_polls: u32,
    /// How many numbers ahead of the cursor are watched for liveness (fixed memory: 16 bytes each).
    pub liveness_window: u64,
    /// While intake answers 5xx or slowly, admission backs off (halving) to no less than this
    /// fraction of the operator's rate, and recovers once intake is healthy; 1 turns it off.
    pub backoff_floor: f64,
    /// An intake answer slower than this (after the upload finished) counts as overload.
    pub backoff_slow: Duration,
    /// Joins per second allowed from one client address (IPv6: one /64); 0 turns the limit off.
    /// Generous, because thousands of phones can share one carrier NAT address.
    pub join_limit_per_sec: u32,
    /// Joins one client address may make at once after a quiet spell.
    pub join_limit_burst: u32,
    /// Applications submitted per second from one client address (through the proxy); 0 = off.
    pub submit_limit_per_sec: u32,
    pub submit_limit_burst: u32,
    /// Status lookups (and other reads under `/api/`) per second from one client address; 0 = off.
    pub lookup_limit_per_sec: u32,
    pub lookup_limit_burst: u32,
    /// Applies every per-client limit to loopback peers too (off by default: a local sidecar or
    /// load test is not a flood).
    pub join_limit_loopback: bool,
    /// Proxies (load balancer, ingress) in front of the gateway whose `X-Forwarded-For` is
    /// believed: for their requests the per-client limits key on the right-most forwarded address
    /// outside these ranges. Empty: every request is keyed on its TCP peer.
    pub trusted_proxies: TrustedProxies,
    /// Adds `Secure` to the cookies (deployments behind TLS).
    pub secure_cookies: bool,
    /// Time allowed to open a TCP connection to intake.
    pub connect_timeout: Duration,
    /// Time allowed for intake's response headers once the request body has been sent.
    pub upstream_timeout: Duration,
    /// A proxied upload that makes no progress this long is abandoned (a stalled phone or a stuck
    /// upstream); a slow but moving 10 MB upload is never cut off.
    pub upload_idle_timeout: Duration,
    /// How often the admission cursor advances.
    pub tick: Duration,
    /// Largest request body passed to intake; larger uploads are refused here with 413
    /// `document_too_large` before they reach intake.
    pub max_body_bytes: u64,
    /// Where coupons are redeemed (shown on the status page once a coupon is issued).
    pub redemption_url: String,
    /// Opening time (Unix seconds): visitors before it join a pre-queue drawn into a random order
    /// at opening (`launch`). `None`: first come, first served from the start.
    pub opens_at: Option<u64>,
    /// Seed of the pre-queue draw; random when not given. Give the same seed to every node.
    pub launch_seed: Option<[u8; 32]>,
    /// Most visitors admitted per pass lifetime (concurrent sessions); 0: no cap.
    pub session_cap: u64,
    /// Applicant reference numbers remembered for one-place-per-person (keyed hashes, about
    /// 50 bytes each); beyond it references are not deduplicated. 0 turns references off.
    pub reference_capacity: usize,
}

impl GatewayConfig {
    /// A configuration with working defaults: 10 admissions per second, burst 10, refresh every
    /// 5 s, passes for 30 minutes.
    pub fn new(event_id: impl Into<String>, keyring: Keyring, upstream: impl Into<String>) -> Self {
        GatewayConfig {
            event_id: event_id.into(),
            keyring,
            upstream: upstream.into(),
            rate_per_sec: 10,
            burst: 10,
            refresh_secs: 5,
            pass_ttl_secs: 30 * 60,
            ticket_idle_secs: 15 * 60,
            expire_after_polls: 3,
            liveness_window: 65_536,
            backoff_floor: 0.1,
            join_limit_per_sec: 50,
            join_limit_burst: 500,
            submit_limit_per_sec: 5,
            submit_limit_burst: 50,
            lookup_limit_per_sec: 20,
            lookup_limit_burst: 200,
            join_limit_loopback: false,
            trusted_proxies: TrustedProxies::default(),
            backoff_slow: Duration::from_secs(2),
            secure_cookies: false,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            upload_idle_timeout: Duration::from_secs(30),
            tick: Duration::from_millis(50),
            max_body_bytes: 10 * 1024 * 1024 + 256 * 1024,
            redemption_url: "https://coupon.example.jp/redeem".to_owned(),
            opens_at: None,
            launch_seed: None,
            session_cap: 0,
            reference_capacity: 1_000_000,
        }
    }

    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &str| Err(ConfigError { key, reason: reason.to_owned() });
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.event_id.is_empty() || self.event_id.len() > 64 || !self.event_id.chars().all(id_ok) {
            return bad("event_id", "must be 1-64 of A-Za-z0-9._-");
        }
        upstream_authority(&self.upstream).map_err(|reason| ConfigError { key: "upstream", reason })?;
        if self.rate_per_sec > 0 && self.burst == 0 {
            return bad("burst", "must be at least 1 when rate_per_sec is set");
        }
        if self.refresh_secs == 0 || self.refresh_secs > 300 {
            return bad("refresh_secs", "must be 1-300");
        }
        if self.pass_ttl_secs == 0 {
            return bad("pass_ttl_secs", "must be at least 1");
        }
        if self.ticket_idle_secs < self.refresh_secs {
            return bad("ticket_idle_secs", "must be at least refresh_secs");
        }
        if self.expire_after_polls == 1 {
            return bad("expire_after_polls", "must be 0 (off) or at least 2");
        }
        if self.liveness_window == 0 || self.liveness_window > 1 << 22 {
            return bad("liveness_window", "must be 1-4194304");
        }
        if self.join_limit_per_sec > 0 && self.join_limit_burst == 0 {
            return bad("join_limit_burst", "must be at least 1 when join_limit_per_sec is set");
        }
        if self.submit_limit_per_sec > 0 && self.submit_limit_burst == 0 {
            return bad("submit_limit_burst", "must be at least 1 when submit_limit_per_sec is set");
        }
        if self.lookup_limit_per_sec > 0 && self.lookup_limit_burst == 0 {
            return bad("lookup_limit_burst", "must be at least 1 when lookup_limit_per_sec is set");
        }
        if !(self.backoff_floor > 0.0 && self.backoff_floor <= 1.0) {
            return bad("backoff_floor", "must be in (0, 1]");
        }
        for (key, d) in [
            ("backoff_slow", self.backoff_slow),
            ("connect_timeout", self.connect_timeout),
            ("upstream_timeout", self.upstream_timeout),
            ("upload_idle_timeout", self.upload_idle_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be positive");
            }
        }
        if self.tick.is_zero() || self.tick > Duration::from_secs(1) {
            return bad("tick", "must be between 1 ms and 1 s");
        }
        Ok(())
    }
}

/// A configuration value the operator must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad gateway config `{key}`: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// The `host:port` of an `http://host:port` base URL. Paths, queries and https are refused: the
/// proxy forwards the visitor's path as is, and TLS to intake is not supported.
pub(crate) fn upstream_authority(upstream: &str) -> Result<Authority, String> {
    let uri: Uri = upstream.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err("must start with http://".to_owned());
    }
    let Some(authority) = uri.authority() else {
        return Err("must name a host".to_owned());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".to_owned());
    }
    match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => Ok(authority.clone()),
        Some(_) => Err("must be a bare http://host:port without path or query".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig::new("rice-2026", Keyring::random(), "http://127.0.0.1:9090")
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
        let with_slash = GatewayConfig { upstream: "http://intake:8081/".into(), ..config() };
        assert_eq!(with_slash.validate(), Ok(()));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(GatewayConfig, &str)> = vec![
            (GatewayConfig { event_id: String::new(), ..config() }, "event_id"),
            (GatewayConfig { event_id: "a b".into(), ..config() }, "event_id"),
            (GatewayConfig { upstream: "https://intake:443".into(), ..config() }, "upstream"),
            (GatewayConfig { upstream: "http://intake:80/api".into(), ..config() }, "upstream"),
            (GatewayConfig { upstream: "intake:80".into(), ..config() }, "upstream"),
            (GatewayConfig { burst: 0, ..config() }, "burst"),
            (GatewayConfig { refresh_secs: 0, ..config() }, "refresh_secs"),
            (GatewayConfig { pass_ttl_secs: 0, ..config() }, "pass_ttl_secs"),
            (GatewayConfig { ticket_idle_secs: 1, ..config() }, "ticket_idle_secs"),
            (GatewayConfig { expire_after_polls: 1, ..config() }, "expire_after_polls"),
            (GatewayConfig { liveness_window: 0, ..config() }, "liveness_window"),
            (GatewayConfig { backoff_floor: 0.0, ..config() }, "backoff_floor"),
            (GatewayConfig { join_limit_burst: 0, ..config() }, "join_limit_burst"),
            (GatewayConfig { submit_limit_burst: 0, ..config() }, "submit_limit_burst"),
            (GatewayConfig { lookup_limit_burst: 0, ..config() }, "lookup_limit_burst"),
            (GatewayConfig { upstream_timeout: Duration::ZERO, ..config() }, "upstream_timeout"),
            (GatewayConfig { tick: Duration::ZERO, ..config() }, "tick"),
        ];
        for (cfg, key) in cases {
            assert_eq!(cfg.validate().map_err(|e| e.key), Err(key));
        }
        // A closed door (rate 0) is a valid start: the operator opens it at launch.
        assert_eq!(GatewayConfig { rate_per_sec: 0, burst: 0, ..config() }.validate(), Ok(()));
    }
}
