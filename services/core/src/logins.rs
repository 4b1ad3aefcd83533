//! Failed device logins and familiar sources: the state of the edge's smart lockout,
//! kept in PostgreSQL so that every edge pod counts the same failures.
//!
//! A wrong password counts three ways: against the pair (username, source), against
//! the source across usernames, and against the username from sources that are not
//! familiar to it. A source is *familiar* to a device when the device has logged in
//! from it within [`FAMILIAR_FOR_DAYS`] days (written with the device's last-seen
//! time). A pair that reaches its limit is locked for that pair only: a printer with a
//! stale password locks itself out, not the other devices behind the same NAT
//! address. A source or username lock never applies to a familiar source, so failures
//! from elsewhere cannot lock a clinic's printer out of its own network. IPv6 sources
//! are counted per /64 (one host can own a whole /64).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use sqlx::{FromRow, PgPool};

/// How long a successful login keeps a source familiar.
pub const FAMILIAR_FOR_DAYS: i32 = 30;

/// The network a source address is counted as: the address itself for IPv4, its /64
/// for IPv6.
pub fn source_network(addr: IpAddr) -> IpNet {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64)
            .expect("64 is a valid prefix")
            .trunc()
            .into(),
    }
}

/// Failure limits within one window.
#[derive(Debug, Clone, Copy)]
pub struct LockoutLimits {
    /// Failures of one username from one source before that pair is locked.
    pub pair: u32,
    /// Failures from one source, any username, before the source is locked.
    pub source: u32,
    /// Failures of one username from unfamiliar sources before it is locked there.
    pub username: u32,
    pub window: std::time::Duration,
    pub lockout: std::time::Duration,
}

/// What the shared state says about a login about to be tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginState {
    /// The source is familiar to the device of this username.
    pub familiar: bool,
    pub pair_locked: bool,
    pub source_locked: bool,
    pub username_locked: bool,
    /// Failures of this pair in the current window (for the answer's pause).
    pub pair_failures: u32,
}

impl LoginState {
    /// Whether the login is refused without checking the password.
    pub fn locked(&self) -> bool {
        self.pair_locked || (!self.familiar && (self.source_locked || self.username_locked))
    }
}

/// The lock state of `username` from `source`.
pub async fn state(
    pool: &PgPool,
    username: &str,
    source: IpAddr,
) -> Result<LoginState, sqlx::Error> {
    let source = source_network(source);
    let row = sqlx::query!(
        r#"SELECT
            EXISTS (SELECT 1 FROM device_sources s JOIN devices d ON d.id = s.device_id
                     WHERE d.username = $1 AND s.source = $2
                       AND s.last_seen_at > now() - make_interval(days => $3)) AS "familiar!",
            EXISTS (SELECT 1 FROM login_failures WHERE scope = 'pair' AND username = $1
                       AND source = $2 AND locked_until > now()) AS "pair_locked!",
            EXISTS (SELECT 1 FROM login_failures WHERE scope = 'source' AND username = ''
                       AND source = $2 AND locked_until > now()) AS "source_locked!",
            EXISTS (SELECT 1 FROM login_failures WHERE scope = 'username' AND username = $1
                       AND source = '0.0.0.0/0' AND locked_until > now()) AS "username_locked!",
            COALESCE((SELECT failures FROM login_failures WHERE scope = 'pair' AND username = $1
                       AND source = $2), 0) AS "pair_failures!""#,
        username,
        source,
        FAMILIAR_FOR_DAYS
    )
    .fetch_one(pool)
    .await?;
    Ok(LoginState {
        familiar: row.familiar,
        pair_locked: row.pair_locked,
        source_locked: row.source_locked,
        username_locked: row.username_locked,
        pair_failures: u32::try_from(row.pair_failures).unwrap_or(0),
    })
}

/// What one more failure did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureOutcome {
    /// Failures of the pair in the current window, this one included.
    pub pair_failures: u32,
    /// Scopes this failure locked (pair, source, username).
    pub newly_locked: [bool; 3],
}

/// Counts a wrong password of `username` from `source`. Failures from a familiar
/// source do not count against the username (they cannot lock it elsewhere). An
/// empty username (a malformed login) counts against the source only.
pub async fn record_failure(
    pool: &PgPool,
    username: &str,
    source: IpAddr,
    familiar: bool,
    limits: &LockoutLimits,
) -> Result<FailureOutcome, sqlx::Error> {
    let client = IpNet::from(source.to_canonical());
    let source = source_network(source);
    let any: IpNet = "0.0.0.0/0".parse().expect("a network");
    let mut scopes = vec![("source", String::new(), source, limits.source)];
    if !username.is_empty() {
        scopes.push(("pair", username.to_owned(), source, limits.pair));
        if !familiar {
            scopes.push(("username", username.to_owned(), any, limits.username));
        }
    }
    let rows = sqlx::query!(
        r#"INSERT INTO login_failures AS f (scope, username, source, failures, last_source)
         SELECT scope, username, source, 1, $4 FROM unnest($1::text[], $2::text[], $3::inet[])
                AS v(scope, username, source)
         ON CONFLICT (scope, username, source) DO UPDATE SET
             failures = CASE WHEN f.window_start < now() - $5::interval AND COALESCE(f.locked_until <= now(), true)
                             THEN 1 ELSE f.failures + 1 END,
             window_start = CASE WHEN f.window_start < now() - $5::interval AND COALESCE(f.locked_until <= now(), true)
                                 THEN now() ELSE f.window_start END,
             locked_until = CASE WHEN f.window_start < now() - $5::interval AND COALESCE(f.locked_until <= now(), true)
                                 THEN NULL ELSE f.locked_until END,
             last_failure_at = now(),
             last_source = $4
         RETURNING f.scope, f.failures,
                   f.locked_until IS NOT NULL AND f.locked_until > now() AS "already_locked!""#,
        &scopes.iter().map(|s| s.0).collect::<Vec<_>>() as &[&str],
        &scopes.iter().map(|s| s.1.clone()).collect::<Vec<_>>(),
        &scopes.iter().map(|s| s.2).collect::<Vec<_>>(),
        client,
        limits.window as _
    )
    .fetch_all(pool)
    .await?;
    let mut outcome = FailureOutcome::default();
    let mut to_lock = Vec::new();
    for row in rows {
        let (scope, failures, already_locked) = (row.scope, row.failures, row.already_locked);
        let Some((index, limit)) = scopes
            .iter()
            .position(|s| s.0 == scope)
            .map(|i| (i, scopes[i].3))
        else {
            continue;
        };
        let failures = u32::try_from(failures).unwrap_or(0);
        if scope == "pair" {
            outcome.pair_failures = failures;
        }
        if !already_locked && failures >= limit {
            to_lock.push(index);
            let slot = match scope.as_str() {
                "pair" => 0,
                "source" => 1,
                _ => 2,
            };
            outcome.newly_locked[slot] = true;
        }
    }
    if !to_lock.is_empty() {
        sqlx::query!(
            "UPDATE login_failures SET locked_until = now() + $4::interval
              WHERE (scope, username, source) IN
                    (SELECT * FROM unnest($1::text[], $2::text[], $3::inet[]))",
            &to_lock.iter().map(|&i| scopes[i].0).collect::<Vec<_>>() as &[&str],
            &to_lock
                .iter()
                .map(|&i| scopes[i].1.clone())
                .collect::<Vec<_>>(),
            &to_lock.iter().map(|&i| scopes[i].2).collect::<Vec<_>>(),
            limits.lockout as _
        )
        .execute(pool)
        .await?;
    }
    Ok(outcome)
}

/// A successful login forgets the failures of its pair.
pub async fn clear_pair(pool: &PgPool, username: &str, source: IpAddr) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM login_failures WHERE scope = 'pair' AND username = $1 AND source = $2",
        username,
        source_network(source)
    )
    .execute(pool)
    .await
    .map(drop)
}

/// A lock or a count of failures, as the control plane shows it for a device.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct LoginFailures {
    /// `pair` (this username from this source) or `username` (from unfamiliar sources).
    pub scope: String,
    /// The source network, for a pair.
    #[schema(value_type = Option<String>)]
    pub source: Option<IpNet>,
    pub failures: i32,
    pub last_failure_at: DateTime<Utc>,
    /// The address the last failure came from.
    #[schema(value_type = String)]
    pub last_source: IpNet,
    /// Set while locked.
    pub locked_until: Option<DateTime<Utc>>,
}

/// Recent failures and current locks of `username`, newest first.
pub async fn for_username(
    pool: &PgPool,
    username: &str,
    window: std::time::Duration,
) -> Result<Vec<LoginFailures>, sqlx::Error> {
    sqlx::query_as!(
        LoginFailures,
        "SELECT scope, CASE WHEN scope = 'pair' THEN source END AS source, failures,
                last_failure_at, last_source,
                CASE WHEN locked_until > now() THEN locked_until END AS locked_until
           FROM login_failures
          WHERE username = $1 AND (locked_until > now() OR last_failure_at > now() - $2::interval)
          ORDER BY last_failure_at DESC",
        username,
        window as _
    )
    .fetch_all(pool)
    .await
}

/// Lifts every lock of `username` and forgets its failures, with the source locks of
/// the sources it failed from, so that the device can log in at once. Returns
/// whether anything was locked or counted.
pub async fn unlock(pool: &PgPool, username: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let sources = sqlx::query_scalar!(
        "DELETE FROM login_failures WHERE username = $1 RETURNING source",
        username
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM login_failures WHERE scope = 'source' AND source = ANY($1)",
        &sources
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(!sources.is_empty())
}

/// Usernames locked now, per scope, for the metrics.
pub async fn locked_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT scope, count(*) AS "count!" FROM login_failures WHERE locked_until > now() GROUP BY scope"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.scope, r.count)).collect())
}

/// Removes failure records whose window and lock have passed, and familiar sources
/// not seen for longer than they stay familiar. Returns the rows removed.
pub async fn purge(pool: &PgPool, window: std::time::Duration) -> Result<u64, sqlx::Error> {
    let failures = sqlx::query!(
        "DELETE FROM login_failures
          WHERE last_failure_at < now() - $1::interval AND COALESCE(locked_until < now(), true)",
        window as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    let sources = sqlx::query!(
        "DELETE FROM device_sources WHERE last_seen_at < now() - make_interval(days => $1)",
        FAMILIAR_FOR_DAYS
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(failures + sources)
}
