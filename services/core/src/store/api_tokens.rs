//! API tokens (`api_tokens`): stored as the SHA-256 of the secret with its first
//! characters to recognise it by, a role, who created it, when it expires and
//! whether it was revoked.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::staff::Role;

#[derive(Debug, Serialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub token_prefix: String,
    pub role: Role,
    /// The address of the member who created it, while they are staff.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    pub fn expired(&self) -> bool {
        self.expires_at <= Utc::now()
    }
}

/// Valid tokens first, newest first.
pub async fn list(pool: &sqlx::PgPool) -> Result<Vec<ApiToken>, sqlx::Error> {
    sqlx::query_as!(
        ApiToken,
        r#"SELECT t.id, t.name, t.token_prefix, t.role AS "role: Role",
                  s.email AS "created_by?", t.created_at, t.expires_at, t.last_used_at,
                  t.revoked_at
             FROM api_tokens t LEFT JOIN staff s ON s.id = t.created_by
            ORDER BY t.revoked_at IS NOT NULL OR t.expires_at <= now(), t.created_at DESC"#
    )
    .fetch_all(pool)
    .await
}

/// A token about to be stored.
pub struct NewToken<'a> {
    pub name: &'a str,
    pub secret_hash: &'a [u8],
    pub prefix: &'a str,
    pub role: Role,
    pub created_by: Option<Uuid>,
    pub days: i32,
}

pub async fn insert(pool: &sqlx::PgPool, token: &NewToken<'_>) -> Result<ApiToken, sqlx::Error> {
    sqlx::query_as!(
        ApiToken,
        r#"WITH t AS (
              INSERT INTO api_tokens (name, token_hash, token_prefix, role, created_by, expires_at)
              VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6)) RETURNING *)
           SELECT t.id, t.name, t.token_prefix, t.role AS "role: Role",
                  s.email AS "created_by?", t.created_at, t.expires_at, t.last_used_at,
                  t.revoked_at
             FROM t LEFT JOIN staff s ON s.id = t.created_by"#,
        token.name,
        token.secret_hash,
        token.prefix,
        token.role.as_str(),
        token.created_by,
        token.days
    )
    .fetch_one(pool)
    .await
}

/// The token `id`'s name.
pub async fn name(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT name FROM api_tokens WHERE id = $1", id)
        .fetch_optional(pool)
        .await
}

/// Revokes the token `id` if it is not yet; its name.
pub async fn revoke(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE api_tokens SET revoked_at = now()
          WHERE id = $1 AND revoked_at IS NULL RETURNING name",
        id
    )
    .fetch_optional(pool)
    .await
}

/// A valid token as the API uses it.
#[derive(Debug)]
pub struct UsedToken {
    pub name: String,
    pub role: Role,
    pub created_by: Option<Uuid>,
    /// The customers its creator is limited to now; `None`: all.
    pub customers: Option<Vec<TenantId>>,
}

/// The token whose secret hashes to `secret_hash`, marked used, if it is valid:
/// not revoked, not expired, and its creator enabled and still holding at least the
/// token's role (a pending or unknown role ranks nowhere: refused).
pub async fn use_token(
    pool: &sqlx::PgPool,
    secret_hash: &[u8],
) -> Result<Option<UsedToken>, sqlx::Error> {
    sqlx::query_as!(
        UsedToken,
        r#"UPDATE api_tokens t SET last_used_at = now() FROM staff s
            WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now()
              AND s.id = t.created_by AND s.enabled
              AND array_position(ARRAY['owner', 'admin', 'technician', 'readonly'], s.role)
                  <= array_position(ARRAY['owner', 'admin', 'technician', 'readonly'], t.role)
        RETURNING t.name, t.role AS "role: Role", t.created_by,
                  CASE WHEN s.role IN ('owner', 'admin') OR s.all_customers THEN NULL
                       ELSE ARRAY(SELECT tenant_id FROM staff_customers sc
                                   WHERE sc.staff_id = s.id) END AS "customers: Vec<TenantId>""#,
        secret_hash
    )
    .fetch_optional(pool)
    .await
}
