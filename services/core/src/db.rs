//! The PostgreSQL connection pool and the schema migrations (`migrations/`, embedded
//! at build time so every binary carries the schema it was built for).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Connection settings shared by every process.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a caller waits for a connection before it gets an error; the edge
    /// turns that error into `451 4.3.0`, so it must stay well below SMTP timeouts.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 32,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

pub fn connect_options(url: &SecretString) -> Result<PgConnectOptions, sqlx::Error> {
    url.expose_secret().parse()
}

/// What every connection sets first: PostgreSQL's keepalive on its side of the
/// connection. A pod whose node fails (power, kernel, network) never closes its
/// connections; without keepalive their sessions live on in PostgreSQL for the
/// kernel's default of over two hours — and with them what they hold: a worker's
/// mailbox slots (transaction advisory locks: the mailbox could send less, or not
/// at all) and its presence lock (its leases would wait for their expiry). With
/// these, PostgreSQL ends such a session about a minute after the last sign of
/// life. (Ignored on Unix sockets, which cannot be half open.)
pub const SESSION_SETTINGS: &str = "SET tcp_keepalives_idle = 30; \
     SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3";

/// Opens a pool. Connections are made lazily so a process can start (and report
/// itself unready) while the database is still coming up; each runs
/// [`SESSION_SETTINGS`] when it is made.
pub fn pool(url: &SecretString, options: PoolOptions) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .after_connect(|connection, _| {
            Box::pin(async move {
                sqlx::raw_sql(SESSION_SETTINGS).execute(connection).await?;
                Ok(())
            })
        })
        .connect_lazy_with(connect_options(url)?))
}

/// What `migrate` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// The schema is this binary's (pending migrations were applied).
    Current,
    /// A newer release has migrated the database further: every migration this
    /// binary carries is applied, unchanged, and these later ones too. Nothing was
    /// done; the previous release runs on the newer schema (migrations only add
    /// what older code can ignore, dropping a release later).
    Ahead { newer: Vec<i64> },
}

/// Applies every pending migration under sqlx's advisory lock, so pods migrating at
/// once take turns. A database that a newer release has migrated further
/// is accepted when this binary's migrations are a prefix of what is applied (a
/// revert to the previous release); any other difference is an error.
pub async fn migrate(pool: &PgPool) -> Result<Migrated, sqlx::migrate::MigrateError> {
    let applied: Vec<(i64, Vec<u8>)> = match sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        // No migrations table yet: a new database.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if let Some(newer) = ahead_of(&applied) {
        return Ok(Migrated::Ahead { newer });
    }
    // The lock sqlx's migrator would take, taken here without blocking: a session
    // waiting in `pg_advisory_lock` sits in an open transaction, and a migration
    // that builds an index CONCURRENTLY waits for every such transaction — while it
    // holds the lock they wait for: a deadlock. Polling with `pg_try_advisory_lock`
    // leaves no transaction open between tries.
    let mut lock = pool.acquire().await?;
    let database = sqlx::query_scalar!(r#"SELECT current_database() AS "database!""#)
        .fetch_one(&mut *lock)
        .await?;
    let id = migration_lock_id(&database);
    while !sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, id)
        .fetch_one(&mut *lock)
        .await?
    {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let migrator = Migrator {
        locking: false,
        ..Migrator {
            migrations: MIGRATOR.migrations.clone(),
            table_name: MIGRATOR.table_name.clone(),
            create_schemas: MIGRATOR.create_schemas.clone(),
            ..Migrator::DEFAULT
        }
    };
    let ran = migrator.run(pool).await;
    let unlocked = sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", id)
        .fetch_one(&mut *lock)
        .await;
    if unlocked.is_err() {
        // Closing the session releases the lock.
        lock.detach();
    }
    ran?;
    Ok(Migrated::Current)
}

/// The advisory lock id sqlx's PostgreSQL migrator uses for `database` (its
/// `generate_lock_id`: 0x3d32ad9e times the CRC-32 of the name), so that this
/// release and older ones take turns.
fn migration_lock_id(database: &str) -> i64 {
    let mut crc = 0xffff_ffffu32;
    for byte in database.bytes() {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    0x3d32ad9e * i64::from(!crc)
}

/// The applied versions newer than this binary's, if the binary's own migrations are
/// all applied with the same checksums and are older than every unknown one.
fn ahead_of(applied: &[(i64, Vec<u8>)]) -> Option<Vec<i64>> {
    let known: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let newest = known.iter().map(|m| m.version).max()?;
    let unknown: Vec<i64> = applied
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| !known.iter().any(|m| m.version == *v))
        .collect();
    let prefix = known.iter().all(|m| {
        applied
            .iter()
            .any(|(v, checksum)| *v == m.version && checksum[..] == m.checksum[..])
    });
    (!unknown.is_empty() && prefix && unknown.iter().all(|v| *v > newest)).then_some(unknown)
}

/// Whether the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT 1 AS one")
        .fetch_one(pool)
        .await
        .map(drop)
}

/// Creates the database `name` (`dev`'s throwaway server); `name` is a plain
/// identifier chosen by the caller, never user input.
pub async fn create_database(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "a database name of lower-case letters"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(pool)
        .await
        .map(drop)
}

/// What is not yet sealed with the key whose sealed values start with `prefix`:
/// app credentials and message bodies.
pub async fn sealed_with_another_key(
    pool: &PgPool,
    prefix: &[u8],
) -> Result<(i64, i64), sqlx::Error> {
    let left = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM tenants
                    WHERE substring(client_secret_sealed FROM 1 FOR $1) <> $2
                       OR substring(client_certificate_sealed FROM 1 FOR $1) <> $2) AS "secrets!",
                  (SELECT count(*) FROM message_bodies
                    WHERE NOT sealed OR substring(body FROM 1 FOR $1) <> $2) AS "bodies!""#,
        prefix.len() as i32,
        prefix
    )
    .fetch_one(pool)
    .await?;
    Ok((left.secrets, left.bodies))
}

#[cfg(test)]
mod migration_lock_tests {
    #[test]
    fn the_lock_id_is_sqlx_s() {
        // CRC-32 (ISO-HDLC) of "123456789" is 0xCBF43926.
        assert_eq!(
            super::migration_lock_id("123456789"),
            0x3d32ad9e * 0xCBF4_3926_i64
        );
    }
}
