//! The edge's cache of device credentials and address allow-lists: what every login
//! and every port-25 connection looks up, answered from memory instead of a query
//! per connection (a sequential match of every allow-list, in the address case).
//!
//! Correctness comes from PostgreSQL, not from a timer: a trigger notifies
//! `mailbridge_devices` whenever a device or a tenant field the edge uses changes
//! (disable, delete, rotate, allow-list, sender policy — from the control plane, the
//! CLI or SQL), and the edge empties the cache on that notification, committed changes
//! only. While the edge is not listening (starting, or the database connection was
//! lost) the cache is bypassed, so a change can never be missed. A lookup that started
//! before a change is not stored after it (generation check). Entries also expire
//! after [`MAX_AGE`] as a last resort.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mailbridge_core::devices::{self, AuthenticatedDevice, DEVICES_CHANNEL, StoredCredential};
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

/// How long an entry is trusted at most, notifications notwithstanding.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Entries per map at most (unknown usernames are cached too); full means emptied.
const CAPACITY: usize = 50_000;

struct Entry<T> {
    value: T,
    stored: Instant,
}

/// Device lookups, cached while change notifications arrive.
#[derive(Default)]
pub struct DeviceDirectory {
    listening: AtomicBool,
    /// Bumped by every change notification (and by losing the listener).
    generation: AtomicU64,
    by_username: Mutex<HashMap<String, Entry<Option<StoredCredential>>>>,
    by_address: Mutex<HashMap<IpAddr, Entry<Option<AuthenticatedDevice>>>>,
}

impl std::fmt::Debug for DeviceDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceDirectory")
            .field("listening", &self.listening.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn cached<K: std::hash::Hash + Eq, T: Clone>(
    map: &Mutex<HashMap<K, Entry<T>>>,
    key: &K,
) -> Option<T> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(key)
        .filter(|e| e.stored.elapsed() < MAX_AGE)
        .map(|e| e.value.clone())
}

impl DeviceDirectory {
    /// The stored credential of `username` (None: no such device).
    pub async fn credential(
        &self,
        pool: &PgPool,
        username: &str,
    ) -> Result<Option<StoredCredential>, sqlx::Error> {
        let query = devices::credential(pool, username);
        self.lookup(&self.by_username, username.to_owned(), query)
            .await
    }

    /// The enabled device allow-listed for `addr` (None: no device, or ambiguous).
    /// An unknown source (a PROXY header without an address) matches no allow-list.
    pub async fn by_address(
        &self,
        pool: &PgPool,
        addr: IpAddr,
    ) -> Result<Option<AuthenticatedDevice>, sqlx::Error> {
        if addr.is_unspecified() {
            return Ok(None);
        }
        let query = devices::find_by_address(pool, addr);
        self.lookup(&self.by_address, addr, query).await
    }

    /// The cached answer for `key`, or `query`'s (stored unless a change came in
    /// while it ran). `query` is lazy: it runs only on a miss.
    async fn lookup<K: std::hash::Hash + Eq, T: Clone>(
        &self,
        map: &Mutex<HashMap<K, Entry<T>>>,
        key: K,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        if self.listening.load(Ordering::Acquire)
            && let Some(hit) = cached(map, &key)
        {
            return Ok(hit);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let value = query.await?;
        self.store(map, key, value.clone(), generation);
        Ok(value)
    }

    fn store<K: std::hash::Hash + Eq, T>(
        &self,
        map: &Mutex<HashMap<K, Entry<T>>>,
        key: K,
        value: T,
        generation: u64,
    ) {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock, so that a change that empties the map after this check
        // also empties this entry.
        if !self.listening.load(Ordering::Acquire)
            || self.generation.load(Ordering::Acquire) != generation
        {
            return;
        }
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            key,
            Entry {
                value,
                stored: Instant::now(),
            },
        );
    }

    /// Something changed (or may have): forget everything.
    fn invalidate(&self) {
        let mut by_username = self.by_username.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        by_username.clear();
        by_address.clear();
    }

    fn set_listening(&self, listening: bool) {
        self.invalidate();
        self.listening.store(listening, Ordering::Release);
    }

    /// Listens for device changes until `stop`, reconnecting after a lost
    /// connection; the cache is in use only while listening.
    pub async fn follow_changes(&self, pool: PgPool, stop: CancellationToken) {
        let mut pause = Duration::from_millis(200);
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(DEVICES_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let listener = tokio::select! {
                _ = stop.cancelled() => return,
                listener = listener => listener,
            };
            match listener {
                Ok(mut listener) => {
                    pause = Duration::from_millis(200);
                    self.set_listening(true);
                    let error = loop {
                        tokio::select! {
                            _ = stop.cancelled() => {
                                self.set_listening(false);
                                return;
                            }
                            // `try_recv` reports a lost connection as `None`
                            // instead of reconnecting behind our back: changes
                            // made meanwhile would go unnoticed.
                            notification = listener.try_recv() => match notification {
                                Ok(Some(_)) => self.invalidate(),
                                Ok(None) => break None,
                                Err(e) => break Some(e),
                            }
                        }
                    };
                    self.set_listening(false);
                    tracing::warn!(error = ?error.map(|e| e.to_string()), "device change notifications lost; looking devices up in the database until they are back");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for device changes yet");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}
