//! A small token bucket per client address, in memory and per process: what an
//! unauthenticated request may start (a sign-in inserts a flow row) is limited so that
//! one address cannot fill the table. Addresses count as the edge's login lockout
//! counts them (`logins::source_network`: IPv6 per /64, as one host usually holds a
//! whole /64).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Sign-ins one client address may start in a burst, and per minute after it.
pub const SIGN_IN_STARTS_PER_MINUTE: u32 = 20;

/// Past this many addresses, idle ones (whose buckets are full again) are forgotten.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<ipnet::IpNet, (f64, Instant)>>,
}

impl RateLimiter {
    /// `capacity` requests at once, refilled at `capacity` per `period`.
    pub fn new(capacity: u32, period: Duration) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_second: f64::from(capacity) / period.as_secs_f64(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `addr`; `false` when its bucket is empty.
    pub fn allow(&self, addr: IpAddr) -> bool {
        self.allow_at(addr, Instant::now())
    }

    fn allow_at(&self, addr: IpAddr, now: Instant) -> bool {
        let key = mailbridge_core::logins::source_network(addr);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (capacity, rate) = (self.capacity, self.per_second);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < capacity
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.capacity, now));
        let refilled = *tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = refilled.min(self.capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_address() {
        let limiter = RateLimiter::new(20, Duration::from_secs(60));
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..20 {
            assert!(limiter.allow_at(a, start));
        }
        assert!(!limiter.allow_at(a, start), "the 21st at once is refused");
        assert!(
            limiter.allow_at("192.0.2.2".parse().unwrap(), start),
            "another address has its own bucket"
        );
        assert!(!limiter.allow_at(a, start + Duration::from_secs(2)));
        assert!(
            limiter.allow_at(a, start + Duration::from_secs(4)),
            "one per 3 s"
        );
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        let now = Instant::now();
        assert!(limiter.allow_at("2001:db8:1:2::1".parse().unwrap(), now));
        assert!(!limiter.allow_at("2001:db8:1:2::ffff".parse().unwrap(), now));
        assert!(limiter.allow_at("2001:db8:1:3::1".parse().unwrap(), now));
    }
}
