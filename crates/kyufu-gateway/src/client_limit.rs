//! Per-client limits: a governor token bucket keyed by the client's address, one for joining the
//! queue (so one script cannot take thousands of places), one for submitting applications and one
//! for status lookups (so one script cannot hammer intake or guess tokens at speed). Many phones
//! share one carrier NAT address, so the defaults are generous (joins 50/s, burst 500; submissions
//! 5/s, burst 50; lookups 20/s, burst 200 per address) and the limits only stop floods. IPv6 clients are keyed by their /64 (one subscriber's prefix), so rotating addresses
//! within it does not help. Over the limit: 429 `too_many_requests` with `Retry-After`. The keyed
//! store is pruned of idle addresses every `PRUNE_EVERY` checks, so it does not grow without end.
//! Loopback peers (a sidecar proxy, the local load test) are not limited unless asked to be.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

const PRUNE_EVERY: u64 = 10_000;

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
