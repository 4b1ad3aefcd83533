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

/// Opens a pool. Connections are made lazily so a process can start (and report
/// itself unready) while the database is still coming up.
pub fn pool(url: &SecretString, options: PoolOptions) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(connect_options(url)?))
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
