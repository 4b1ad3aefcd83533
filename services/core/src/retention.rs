//! The cluster's one purge: what is kept only for a while is removed after it, by
//! one process at a time and once per interval between all replicas — finished
//! messages (their attempts go with them), mailbox usage older than the daily limit
//! looks at, ended web sessions, sign-in and consent flows that were never finished,
//! the audit log and the edge's session transcripts past their retention, login
//! failures and familiar sources that have lapsed, one-time secrets never picked up
//! (bulk credential downloads, secrets shown once after a form) once expired, and
//! (see `alerts::purge`) the usage hours rolled into days, resolved alerts and old
//! webhook deliveries.
//!
//! Any worker may run it: a session-level advisory lock keeps two runs from
//! overlapping, and the `housekeeping` row claims the interval, so N replicas purge
//! once per interval, not N times. A process that dies mid-run drops its connection
//! and with it the lock.

use std::time::Duration;

use sqlx::PgPool;

use crate::{config::Settings, logins};

/// The advisory lock key of the purge (an arbitrary constant of mailbridge's).
const PURGE_LOCK: i64 = 0x6d62_7075_7267_6501;
/// Messages deleted per statement (short transactions, bounded WAL bursts).
const BATCH: i64 = 10_000;
/// How long a sign-in or consent flow may be finished at most.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(3_600);

/// What is kept how long.
#[derive(Debug, Clone)]
pub struct Retention {
    pub messages: Duration,
    pub audit: Duration,
    pub transcripts: Duration,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub login_window: Duration,
    pub interval: Duration,
}

impl Retention {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            messages: settings.worker.retention,
            audit: settings.worker.audit_retention,
            transcripts: settings.worker.transcript_retention,
            session_idle: settings.web.session_idle,
            session_max: settings.web.session_max,
            login_window: settings
                .edge
                .auth_throttle
                .window
                .max(settings.edge.auth_throttle.lockout),
            interval: settings.worker.purge_interval,
        }
    }
}

/// Records removed by one run, per table.
pub type Purged = Vec<(&'static str, u64)>;

/// Runs the purge if no other process is running it and it has not run within the
/// interval; `None` when it was not this process's turn.
pub async fn purge_if_due(
    pool: &PgPool,
    retention: &Retention,
) -> Result<Option<Purged>, sqlx::Error> {
    let mut lock = pool.acquire().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1) AS "locked!""#,
        PURGE_LOCK
    )
    .fetch_one(&mut *lock)
    .await?;
    if !locked {
        return Ok(None);
    }
    let outcome = claim_and_purge(pool, retention).await;
    let unlocked = sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", PURGE_LOCK)
        .fetch_one(&mut *lock)
        .await;
    if unlocked.is_err() {
        // The connection is in doubt: drop it rather than return it holding the lock.
        lock.detach();
    }
    outcome
}

async fn claim_and_purge(
    pool: &PgPool,
    retention: &Retention,
) -> Result<Option<Purged>, sqlx::Error> {
    // Slightly less than the interval, so that a process whose timer fires a little
    // early still finds its turn.
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO housekeeping AS h (job, last_run_at) VALUES ('purge', now())
           ON CONFLICT (job) DO UPDATE SET last_run_at = now(), runs = h.runs + 1
            WHERE h.last_run_at < now() - $1::interval * 0.9
           RETURNING true AS "claimed!""#,
        retention.interval as _
    )
    .fetch_optional(pool)
    .await?
    .is_some();
    if !claimed {
        return Ok(None);
    }
    purge(pool, retention).await.map(Some)
}

/// Removes everything past its retention now (the purge without its turn-taking).
pub async fn purge(pool: &PgPool, retention: &Retention) -> Result<Purged, sqlx::Error> {
    let mut messages = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM messages
                  WHERE state IN ('accepted', 'bounced', 'failed') AND finished_at < now() - $1
                  LIMIT $2)",
        )
        .bind(retention.messages)
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        messages += n;
        if n < BATCH as u64 {
            break;
        }
    }
    let usage = sqlx::query!("DELETE FROM mailbox_usage WHERE hour < now() - interval '2 days'")
        .execute(pool)
        .await?
        .rows_affected();
    // Graph's budgets look back ten minutes at most.
    let graph_usage =
        sqlx::query!("DELETE FROM graph_usage WHERE minute < now() - interval '1 hour'")
            .execute(pool)
            .await?
            .rows_affected();
    let sessions = sqlx::query!(
        "DELETE FROM web_sessions
          WHERE last_seen_at < now() - $1::interval OR created_at < now() - $2::interval",
        retention.session_idle as _,
        retention.session_max as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    let flows = sqlx::query!(
        "DELETE FROM oauth_flows WHERE created_at < now() - $1::interval",
        FLOW_LIFETIME as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    let audit = sqlx::query!(
        "DELETE FROM audit_log WHERE at < now() - $1::interval",
        retention.audit as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    let transcripts = sqlx::query!(
        "DELETE FROM session_transcripts WHERE ended_at < now() - $1::interval",
        retention.transcripts as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    let logins = logins::purge(pool, retention.login_window).await?;
    // A customer's consent checks are kept as long as the audit log, but never its
    // latest: its page shows how the last consent ended.
    let consent_checks = sqlx::query!(
        "DELETE FROM consent_checks c WHERE c.finished_at < now() - $1::interval
            AND EXISTS (SELECT 1 FROM consent_checks n
                         WHERE n.tenant_id = c.tenant_id AND n.requested_at > c.requested_at)",
        retention.audit as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    // One-time secrets, sealed until their one use: an expired one can no longer
    // be used (the web also sweeps them when it makes new ones, but a quiet control
    // plane makes none).
    let credential_downloads =
        sqlx::query!("DELETE FROM credential_downloads WHERE expires_at < now()")
            .execute(pool)
            .await?
            .rows_affected();
    let secret_reveals = sqlx::query!("DELETE FROM secret_reveals WHERE expires_at < now()")
        .execute(pool)
        .await?
        .rows_affected();
    let outlived = crate::alerts::purge(pool, retention.audit).await?;
    Ok(vec![
        ("messages", messages),
        ("mailbox_usage", usage),
        ("graph_usage", graph_usage),
        ("web_sessions", sessions),
        ("oauth_flows", flows),
        ("audit_log", audit),
        ("session_transcripts", transcripts),
        ("login_failures", logins),
        ("consent_checks", consent_checks),
        ("credential_downloads", credential_downloads),
        ("secret_reveals", secret_reveals),
        ("usage_hours", outlived.usage_hours),
        ("alerts", outlived.alerts),
        ("webhook_outbox", outlived.webhook_outbox),
        ("webhook_deliveries", outlived.webhook_deliveries),
    ])
}
