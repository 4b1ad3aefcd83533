//! Which delivery workers are alive, told by PostgreSQL itself: each worker holds a
//! session-level advisory lock named for it on a connection of its own for as long
//! as it runs. When a worker dies (SIGKILL, OOM, a lost node) its connection closes
//! and the lock is gone at once; the other workers notice on their next sweep and
//! make its leased messages due, so they are delivered within seconds rather than
//! after the lease (minutes).
//!
//! A worker that is alive but lost its lock connection for a moment may have a
//! message re-leased while it delivers it: that is counted as a duplicate when it
//! settles, as with an expired lease. It takes its lock again at once.

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};

/// How long the presence connection may take to answer a ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker's hold on its presence lock.
#[derive(Debug)]
pub struct Presence {
    identity: String,
    lock_key: i64,
    connection: PgConnection,
}

impl Presence {
    /// Takes a fresh lock and registers `identity` under it (the lock first, so
    /// that no other worker ever sees the row without its lock).
    pub async fn register(pool: &PgPool, identity: &str) -> Result<Self, sqlx::Error> {
        let lock_key: i64 = rand::random();
        let connection = Self::lock(pool, lock_key).await?;
        let mut presence = Self {
            identity: identity.to_owned(),
            lock_key,
            connection,
        };
        sqlx::query!(
            "INSERT INTO workers (identity, lock_key) VALUES ($1, $2)",
            presence.identity,
            presence.lock_key
        )
        .execute(&mut presence.connection)
        .await?;
        Ok(presence)
    }

    async fn lock(pool: &PgPool, lock_key: i64) -> Result<PgConnection, sqlx::Error> {
        let mut connection = pool.acquire().await?.detach();
        sqlx::query!("SELECT pg_advisory_lock($1)", lock_key)
            .execute(&mut connection)
            .await?;
        Ok(connection)
    }

    /// Checks the lock connection (bounded: a partition must not hang the check);
    /// after it was lost, takes a lock under a new key and registers it (again,
    /// should another worker have taken this one for dead). Never the old key: the
    /// old connection's server side may still hold it — a half-open connection
    /// after a partition lives on in PostgreSQL until its keepalive gives up — and
    /// waiting for it would hang this worker's presence for as long.
    pub async fn keep(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let ping = tokio::time::timeout(PING_TIMEOUT, self.connection.ping()).await;
        if matches!(ping, Ok(Ok(()))) {
            return Ok(());
        }
        let lock_key: i64 = rand::random();
        let mut connection = Self::lock(pool, lock_key).await?;
        sqlx::query!(
            "INSERT INTO workers (identity, lock_key) VALUES ($1, $2)
             ON CONFLICT (identity) DO UPDATE SET lock_key = EXCLUDED.lock_key",
            self.identity,
            lock_key
        )
        .execute(&mut connection)
        .await?;
        self.connection = connection;
        self.lock_key = lock_key;
        Ok(())
    }

    /// Leaves: the row goes, and the lock with the connection.
    pub async fn leave(mut self) {
        let _ = sqlx::query!("DELETE FROM workers WHERE identity = $1", self.identity)
            .execute(&mut self.connection)
            .await;
        let _ = self.connection.close().await;
    }
}

/// Forgets the workers whose lock is gone and makes their leased messages due at
/// once (and tells the workers so). Returns how many messages were released.
pub async fn release_the_departed(pool: &PgPool, me: &str) -> Result<u64, sqlx::Error> {
    let released = sqlx::query_scalar!(
        r#"WITH departed AS (
             DELETE FROM workers w
              WHERE w.identity <> $1
                AND NOT EXISTS (
                    SELECT 1 FROM pg_locks l
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND l.classid = ((w.lock_key >> 32) & 4294967295)::oid
                       AND l.objid = (w.lock_key & 4294967295)::oid)
             RETURNING identity)
         , released AS (
             UPDATE queue SET due_at = now() - interval '1 second'
              WHERE lease_owner IN (SELECT identity FROM departed)
             RETURNING tenant_id)
         SELECT count(*) AS "released!"
           FROM released, LATERAL (SELECT pg_notify($2, tenant_id::text)) n"#,
        me,
        crate::queue::QUEUE_CHANNEL
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(released).unwrap_or(0))
}
