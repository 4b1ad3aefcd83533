//! Slowing down password guessing, and sparing argon2 for devices that log in often.
//!
//! The lockout state is shared by every edge pod through PostgreSQL
//! (`mailbridge_core::logins`: per (username, source), per source, per username, with
//! familiar sources exempt from the latter two). Each failure is answered after a
//! pause that doubles with the pair's failures (up to 8× the base). A state read is
//! remembered for [`STATE_TTL`], so a device that logs in many times a second costs
//! one query per interval; a lock set by another pod is seen within that time.
//!
//! A verified password is remembered briefly (as a keyed digest, never in clear)
//! together with the stored hash it matched, so a rotated password invalidates it at
//! once. [`AuthGuard::sweep_until`] drops every entry past its lifetime once a
//! minute, so no digest of a password stays in memory after it can no longer be used,
//! however quiet the edge is.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use mailbridge_core::{
    config::AuthThrottleSettings,
    logins::{self, LoginState},
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Entries kept per table before expired ones are swept.
const SWEEP_AT: usize = 10_000;
/// How long a lock state read from PostgreSQL is trusted by this process.
pub const STATE_TTL: Duration = Duration::from_secs(2);
/// How often entries past their lifetime are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct CachedCredential {
    stored_hash: String,
    digest: [u8; 32],
    expires: Instant,
}

#[derive(Debug)]
pub struct AuthGuard {
    settings: AuthThrottleSettings,
    states: Mutex<HashMap<(String, IpNet), (LoginState, Instant)>>,
    verified: Mutex<HashMap<String, CachedCredential>>,
    /// Keys the cached digests, so they are useless outside this process.
    key: [u8; 32],
}

impl AuthGuard {
    pub fn new(settings: AuthThrottleSettings) -> Self {
        Self {
            settings,
            states: Mutex::default(),
            verified: Mutex::default(),
            key: rand::random(),
        }
    }

    fn state_key(address: IpAddr, username: &str) -> (String, IpNet) {
        (username.to_owned(), logins::source_network(address))
    }

    /// The lock state of `username` from `address`. With PostgreSQL unreachable the
    /// login proceeds (the credential lookup will answer that it is unavailable).
    pub async fn admit(&self, pool: &PgPool, address: IpAddr, username: &str) -> LoginState {
        let key = Self::state_key(address, username);
        let now = Instant::now();
        if let Some((state, read)) = self.lock_states().get(&key)
            && now.duration_since(*read) < STATE_TTL
        {
            return *state;
        }
        match logins::state(pool, username, address).await {
            Ok(state) => {
                let mut states = self.lock_states();
                if states.len() >= SWEEP_AT {
                    states.retain(|_, (_, read)| now.duration_since(*read) < STATE_TTL);
                }
                states.insert(key, (state, now));
                state
            }
            Err(e) => {
                tracing::debug!(error = %e, "login state unavailable");
                LoginState::default()
            }
        }
    }

    fn lock_states(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, IpNet), (LoginState, Instant)>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure; returns how long to wait before answering.
    pub async fn failed(
        &self,
        pool: &PgPool,
        address: IpAddr,
        username: &str,
        state: LoginState,
    ) -> Duration {
        self.lock_states()
            .remove(&Self::state_key(address, username));
        let limits = self.settings.limits();
        let failures = match logins::record_failure(
            pool,
            username,
            address,
            state.familiar,
            &limits,
        )
        .await
        {
            Ok(outcome) => {
                let metrics = &mailbridge_core::metrics::metrics().edge;
                for (scope, locked) in ["pair", "source", "username"]
                    .into_iter()
                    .zip(outcome.newly_locked)
                {
                    if locked {
                        metrics.auth_lockouts.with_label_values(&[scope]).inc();
                        tracing::warn!(scope, username = %crate::auth::printable(username), source = %address, "login locked after repeated failures");
                    }
                }
                outcome.pair_failures
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not record a failed login");
                state.pair_failures + 1
            }
        };
        self.settings.failure_delay * 2u32.pow(failures.clamp(1, 4) - 1)
    }

    /// A successful login forgets its pair's failures.
    pub async fn succeeded(
        &self,
        pool: &PgPool,
        address: IpAddr,
        username: &str,
        state: LoginState,
    ) {
        if state.pair_failures == 0 {
            return;
        }
        self.lock_states()
            .remove(&Self::state_key(address, username));
        if let Err(e) = logins::clear_pair(pool, username, address).await {
            tracing::debug!(error = %e, "could not clear a login's failures");
        }
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

    /// Drops verified passwords past their lifetime and lock states no longer trusted.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| e.expires > now);
        self.lock_states()
            .retain(|_, (_, read)| now.duration_since(*read) < STATE_TTL);
    }

    /// Sweeps every [`SWEEP_EVERY`] until `stop`.
    pub async fn sweep_until(&self, stop: CancellationToken) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => self.sweep(),
            }
        }
    }

    /// How many verified passwords are remembered (expired ones included until swept).
    pub fn remembered(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
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
            source_lockout_failures: 30,
            username_lockout_failures: 50,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            credential_cache: Duration::from_secs(60),
        })
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

    #[test]
    fn the_sweep_drops_expired_passwords_and_keeps_live_ones() {
        let mut settings = guard().settings;
        settings.credential_cache = Duration::from_millis(50);
        let short = AuthGuard::new(settings);
        short.remember_verified("printer", "$argon2id$hash-1", "secret");
        short.sweep();
        assert_eq!(short.remembered(), 1, "a live entry stays");
        let deadline = Instant::now() + Duration::from_secs(5);
        while short.recently_verified("printer", "$argon2id$hash-1", "secret") {
            assert!(Instant::now() < deadline, "the entry never expired");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(short.remembered(), 1, "expired, not yet swept");
        short.sweep();
        assert_eq!(short.remembered(), 0, "swept");
    }
}
