//! Browser sessions of MSP staff (`web_sessions`): a session is found by the
//! SHA-256 of the random id its cookie holds, lives while used within the idle time
//! and no longer than the maximum, and carries the CSRF token its forms send.

use crate::ids::TenantId;
use std::time::Duration;

use ipnet::IpNet;
use uuid::Uuid;

use super::staff::Role;

/// How long sessions live: idle, and at most.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub max: Duration,
}

/// A live session with the member it belongs to.
#[derive(Debug)]
pub struct Session {
    pub staff_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub csrf_token: String,
    /// The customers the member is limited to; `None`: all.
    pub customers: Option<Vec<TenantId>>,
}

/// Starts a session `id_hash` for `staff_id`; sessions that ended are removed as
/// new ones begin.
pub async fn start(
    pool: &sqlx::PgPool,
    id_hash: &[u8],
    staff_id: Uuid,
    csrf_token: &str,
    client_addr: Option<IpNet>,
    lifetimes: Lifetimes,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO web_sessions (id_hash, staff_id, csrf_token, client_addr)
         VALUES ($1, $2, $3, $4)",
        id_hash,
        staff_id,
        csrf_token,
        client_addr
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "DELETE FROM web_sessions WHERE last_seen_at < now() - make_interval(secs => $1)
             OR created_at < now() - make_interval(secs => $2)",
        lifetimes.idle.as_secs_f64(),
        lifetimes.max.as_secs_f64()
    )
    .execute(pool)
    .await
    .map(drop)
}

pub async fn end(pool: &sqlx::PgPool, id_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM web_sessions WHERE id_hash = $1", id_hash)
        .execute(pool)
        .await
        .map(drop)
}

/// The session `id_hash`, if it is alive and its member enabled. Idle time is
/// counted in minutes: one write a minute, not one per request.
pub async fn find(
    pool: &sqlx::PgPool,
    id_hash: &[u8],
    lifetimes: Lifetimes,
) -> Result<Option<Session>, sqlx::Error> {
    let Some(row) = sqlx::query!(
        r#"SELECT s.staff_id, st.email, st.display_name, st.role AS "role: Role", s.csrf_token,
                  s.last_seen_at < now() - interval '1 minute' AS "refresh!",
                  CASE WHEN st.role IN ('owner', 'admin') OR st.all_customers THEN NULL
                       ELSE ARRAY(SELECT tenant_id FROM staff_customers sc
                                   WHERE sc.staff_id = st.id) END AS customers
             FROM web_sessions s JOIN staff st ON st.id = s.staff_id
            WHERE s.id_hash = $1 AND st.enabled
              AND s.last_seen_at > now() - make_interval(secs => $2)
              AND s.created_at > now() - make_interval(secs => $3)"#,
        id_hash,
        lifetimes.idle.as_secs_f64(),
        lifetimes.max.as_secs_f64()
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    if row.refresh {
        sqlx::query!(
            "UPDATE web_sessions SET last_seen_at = now() WHERE id_hash = $1",
            id_hash
        )
        .execute(pool)
        .await?;
    }
    Ok(Some(Session {
        staff_id: row.staff_id,
        email: row.email,
        display_name: row.display_name,
        role: row.role,
        csrf_token: row.csrf_token,
        customers: row
            .customers
            .map(|ids| ids.into_iter().map(TenantId::from).collect()),
    }))
}
