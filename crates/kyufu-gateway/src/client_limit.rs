//! Per-client limits: a governor token bucket keyed by the client's address, one for joining the
//! queue (so one script cannot take thousands of places), one for submitting applications and one
//! for status lookups (so one script cannot hammer intake or guess tokens at speed). Many phones
//! share one carrier NAT address, so the defaults are generous (joins 50/s, burst 500; submissions
//! 5/s, burst 50; lookups 20/s, burst 200 per address) and the limits only stop floods. IPv6 clients are keyed by their /64 (one subscriber's prefix), so rotating addresses
//! within it does not help. Over the limit: 429 `too_many_requests` with `Retry-After`. The keyed
//! store is pruned of idle addresses every `PRUNE_EVERY` checks, so it does not grow without end.
//! Loopback peers (a sidecar proxy, the local load test) are not limited unless asked to be.
//!
//! Behind a load balancer or ingress every visitor's TCP peer is the balancer, so the whole crowd
//! would share one bucket. With `trusted_proxies` configured, the client address of a request from
//! a trusted peer is taken from `X-Forwarded-For`: the right-most address that is not itself a
//! trusted proxy (each trusted hop appends the address it saw, so everything to the left of the
//! first untrusted hop may be made up by the client). A request from an untrusted peer is keyed on
//! the peer, whatever its `X-Forwarded-For` says.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use governor::clock::Clock;
use ipnet::IpNet;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

const PRUNE_EVERY: u64 = 10_000;
/// At most this many `X-Forwarded-For` entries are read, from the right.
const MAX_HOPS: usize = 32;

/// The proxies (load balancer, ingress) whose `X-Forwarded-For` is believed, as address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Ranges from `10.0.0.0/8,192.168.1.7,fd00::/8` (a bare address is one host); empty = none.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => part.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("{part:?} is not an address or CIDR range"))?,
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request that came from `peer` with `headers`.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = unmapped(peer);
        if !self.trusts(client) {
            return client;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev().take(MAX_HOPS) {
            // An entry a trusted hop wrote but we cannot read: the hop itself is all we know.
            let Some(ip) = forwarded_addr(entry) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`[v6]:port`, `v4:port`).
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).and_then(|e| e.parse().ok()))?;
    Some(unmapped(ip))
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(crate) struct ClientLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU64,
    limit_loopback: bool,
}

/// The key for an address: IPv4 as is, IPv6 by its /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl ClientLimiter {
    /// `per_sec == 0` turns the limit off.
    pub(crate) fn new(per_sec: u32, burst: u32, limit_loopback: bool) -> Self {
        let limiter = NonZeroU32::new(per_sec).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        ClientLimiter { limiter, checks: AtomicU64::new(0), limit_loopback }
    }

    /// `Ok` if a request from `ip` may go ahead; otherwise the seconds to wait (at least 1). A request
    /// without a known peer address is not limited.
    pub(crate) fn check(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        let (Some(limiter), Some(ip)) = (&self.limiter, ip) else { return Ok(()) };
        if ip.is_loopback() && !self.limit_loopback {
            return Ok(());
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&client_key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_owns() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7 ,fd00::/8").expect("parse");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let lb = ip("10.1.2.3");
        // Through one trusted hop: the address it appended.
        assert_eq!(trusted.client(lb, &xff(&["198.51.100.4"])), ip("198.51.100.4"));
        // A forged entry on the left is not believed; two trusted hops are walked past.
        assert_eq!(trusted.client(lb, &xff(&["6.6.6.6, 198.51.100.4, 192.168.1.7"])), ip("198.51.100.4"));
        assert_eq!(trusted.client(lb, &xff(&["6.6.6.6", "198.51.100.4:5555"])), ip("198.51.100.4"), "entries over several lines, ports dropped");
        assert_eq!(trusted.client(lb, &xff(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(trusted.client(lb, &xff(&["::ffff:198.51.100.9"])), ip("198.51.100.9"));
        // An untrusted peer's header is ignored.
        let stranger = ip("203.0.113.5");
        assert_eq!(trusted.client(stranger, &xff(&["198.51.100.4"])), stranger);
        // Nothing usable: the trusted hop nearest the unreadable entry, or the peer.
        assert_eq!(trusted.client(lb, &xff(&["not-an-address"])), lb);
        assert_eq!(trusted.client(lb, &xff(&["198.51.100.4, junk, 10.9.9.9"])), ip("10.9.9.9"));
        assert_eq!(trusted.client(lb, &HeaderMap::new()), lb);
        assert_eq!(trusted.client(lb, &xff(&["10.4.4.4"])), ip("10.4.4.4"), "all trusted: the left-most");
        // No trusted proxies: always the peer.
        assert_eq!(TrustedProxies::default().client(lb, &xff(&["198.51.100.4"])), lb);
        assert_eq!(TrustedProxies::parse("").expect("empty"), TrustedProxies::default());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("ingress").is_err());
    }

    #[test]
    fn each_address_has_its_own_bucket_and_v6_is_keyed_by_its_64() {
        let limit = ClientLimiter::new(1, 2, false);
        for _ in 0..5 {
            assert_eq!(limit.check(Some(IpAddr::from([127, 0, 0, 1]))), Ok(()), "loopback not limited");
        }
        let a: IpAddr = "203.0.113.7".parse().expect("ip");
        let b: IpAddr = "203.0.113.8".parse().expect("ip");
        assert_eq!((limit.check(Some(a)), limit.check(Some(a))), (Ok(()), Ok(())));
        assert_eq!(limit.check(Some(a)), Err(1), "burst spent: wait a second");
        assert_eq!(limit.check(Some(b)), Ok(()), "another address is not affected");
        assert_eq!(limit.check(None), Ok(()));
        let p1: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let p2: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(client_key(p1), client_key(p2));
        assert_eq!((limit.check(Some(p1)), limit.check(Some(p2))), (Ok(()), Ok(())));
        assert!(limit.check(Some(p2)).is_err(), "same /64, same bucket");
        assert_eq!(ClientLimiter::new(0, 0, true).check(Some(a)), Ok(()), "off");
    }
}
