//! Slowing down password guessing, and sparing argon2 for devices that log in often.
//!
//! Failed logins are counted per source address and per username within a window:
//! each failure is answered after a pause that doubles (up to 8× the base), and once
//! either count reaches the limit, AUTH from that address or for that username is
//! refused with `454 4.7.0` until the lockout passes. A verified password is
//! remembered briefly (as a keyed digest, never in clear) together with the stored
//! hash it matched, so a rotated password invalidates it at once.
//!
//! The state is per edge process; with N edge pods an attacker gets at most N times
//! the attempts, still far too few to guess a 24-character password.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use mailbridge_core::config::AuthThrottleSettings;
use sha2::{Digest, Sha256};

/// Entries kept per table before expired ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct FailureRecord {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
struct CachedCredential {
    stored_hash: String,
    digest: [u8; 32],
    expires: Instant,
}

/// Whether a login may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Proceed,
    Locked,
}

#[derive(Debug)]
pub struct AuthGuard {
    settings: AuthThrottleSettings,
    by_address: Mutex<HashMap<IpAddr, FailureRecord>>,
    by_username: Mutex<HashMap<String, FailureRecord>>,
    verified: Mutex<HashMap<String, CachedCredential>>,
    /// Keys the cached digests, so they are useless outside this process.
    key: [u8; 32],
}

fn locked<K: Eq + Hash>(table: &Mutex<HashMap<K, FailureRecord>>, key: &K, now: Instant) -> bool {
    let table = table.lock().unwrap_or_else(|p| p.into_inner());
    table
        .get(key)
        .and_then(|r| r.locked_until)
        .is_some_and(|until| until > now)
}

impl AuthGuard {
    pub fn new(settings: AuthThrottleSettings) -> Self {
        Self {
            settings,
            by_address: Mutex::default(),
            by_username: Mutex::default(),
            verified: Mutex::default(),
            key: rand::random(),
        }
    }

    pub fn admit(&self, address: IpAddr, username: &str) -> Admission {
        let now = Instant::now();
        if locked(&self.by_address, &address, now)
            || locked(&self.by_username, &username.to_ascii_lowercase(), now)
        {
            Admission::Locked
        } else {
            Admission::Proceed
        }
    }

    /// Records a failure; returns how long to wait before answering.
    pub fn failed(&self, address: IpAddr, username: &str) -> Duration {
        let by_address = self.record_failure(&self.by_address, address);
        let by_username = self.record_failure(&self.by_username, username.to_ascii_lowercase());
        let failures = by_address.max(by_username).clamp(1, 4);
        self.settings.failure_delay * 2u32.pow(failures - 1)
    }

    pub fn succeeded(&self, address: IpAddr, username: &str) {
        self.by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&address);
        self.by_username
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&username.to_ascii_lowercase());
    }

    fn record_failure<K: Eq + Hash>(
        &self,
        table: &Mutex<HashMap<K, FailureRecord>>,
        key: K,
    ) -> u32 {
        let now = Instant::now();
        let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= SWEEP_AT {
            let (window, lockout) = (self.settings.window, self.settings.lockout);
            table.retain(|_, r| {
                r.locked_until.is_some_and(|u| u > now)
                    || now.duration_since(r.window_start) < window.max(lockout)
            });
        }
        let record = table.entry(key).or_insert(FailureRecord {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        if now.duration_since(record.window_start) > self.settings.window
            && record.locked_until.is_none_or(|until| until <= now)
        {
            *record = FailureRecord {
                failures: 0,
                window_start: now,
                locked_until: None,
            };
        }
        record.failures += 1;
        if record.failures >= self.settings.lockout_failures {
            record.locked_until = Some(now + self.settings.lockout);
        }
        record.failures
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// Whether `password` was verified against `stored_hash` for `username` recently.
    pub fn recently_verified(&self, username: &str, stored_hash: &str, password: &str) -> bool {
        let digest = self.digest(password);
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(username).is_some_and(|entry| {
            entry.expires > Instant::now()
                && entry.stored_hash == stored_hash
                && entry
                    .digest
                    .iter()
                    .zip(digest.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }

    pub fn remember_verified(&self, username: &str, stored_hash: &str, password: &str) {
        if self.settings.credential_cache.is_zero() {
            return;
        }
        let now = Instant::now();
        let entry = CachedCredential {
            stored_hash: stored_hash.to_owned(),
            digest: self.digest(password),
            expires: now + self.settings.credential_cache,
        };
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= SWEEP_AT {
            cache.retain(|_, e| e.expires > now);
        }
        cache.insert(username.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> AuthGuard {
        AuthGuard::new(AuthThrottleSettings {
            failure_delay: Duration::from_millis(10),
            lockout_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            credential_cache: Duration::from_secs(60),
        })
    }

    #[test]
    fn failures_slow_down_then_lock_out_the_address_and_the_username() {
        let guard = guard();
        let attacker: IpAddr = "192.0.2.66".parse().unwrap();
        assert_eq!(
            guard.failed(attacker, "scanner-1"),
            Duration::from_millis(10)
        );
        assert_eq!(
            guard.failed(attacker, "scanner-2"),
            Duration::from_millis(20)
        );
        assert_eq!(guard.admit(attacker, "scanner-3"), Admission::Proceed);
        guard.failed(attacker, "scanner-3");
        assert_eq!(guard.admit(attacker, "anyone"), Admission::Locked);

        let elsewhere: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(guard.admit(elsewhere, "scanner-1"), Admission::Proceed);
        for _ in 0..3 {
            guard.failed("203.0.113.9".parse().unwrap(), "Scanner-1");
        }
        assert_eq!(
            guard.admit(elsewhere, "scanner-1"),
            Admission::Locked,
            "usernames are locked across addresses"
        );
    }

    #[test]
    fn success_clears_the_count() {
        let guard = guard();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        guard.failed(ip, "a");
        guard.failed(ip, "a");
        guard.succeeded(ip, "a");
        guard.failed(ip, "a");
        assert_eq!(guard.admit(ip, "a"), Admission::Proceed);
    }

    #[test]
    fn the_cache_needs_the_same_password_and_the_same_stored_hash() {
        let guard = guard();
        guard.remember_verified("dev", "$argon2id$hash-1", "secret");
        assert!(guard.recently_verified("dev", "$argon2id$hash-1", "secret"));
        assert!(!guard.recently_verified("dev", "$argon2id$hash-1", "Secret"));
        assert!(
            !guard.recently_verified("dev", "$argon2id$hash-2", "secret"),
            "a rotated password"
        );
        assert!(!guard.recently_verified("other", "$argon2id$hash-1", "secret"));
    }
}
