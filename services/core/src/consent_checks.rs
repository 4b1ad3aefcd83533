//! Consent checks: verifying a customer's admin consent after the fact. The web
//! records a consent the moment Microsoft sends the admin back (it holds no Microsoft
//! credential); a worker claims the due check (`FOR UPDATE SKIP LOCKED`, a claim that
//! expires if the worker dies), asks Entra for a token, and either connects the
//! customer or schedules the next attempt with backoff, until the check's limit,
//! when it fails with the explanation of the last refusal.

use crate::ids::TenantId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::{
    config::M365Settings,
    ids::EntraTenantId,
    tenants::{DeliveryMethod, Tenant},
};

/// Where a check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Waiting for Microsoft: the next attempt is scheduled.
    Pending,
    /// A token carried every permission delivery needs: the customer is connected.
    Verified,
    /// The limit passed (or Entra refused in a way waiting cannot fix).
    Failed,
}

/// The app role Graph `sendMail` needs.
pub const GRAPH_ROLE: &str = "Mail.Send";
/// The app role SMTP AUTH with XOAUTH2 needs.
pub const SMTP_ROLE: &str = "SMTP.SendAsApp";

/// The resources a customer's delivery needs (the consent asks for them) and the app
/// role a token for each must carry (the check verifies it).
pub fn needed_roles(m365: &M365Settings, tenant: &Tenant) -> Vec<(String, &'static str)> {
    let mut needed = Vec::new();
    if tenant.delivery_method == DeliveryMethod::Graph {
        needed.push((m365.graph_resource.clone(), GRAPH_ROLE));
    }
    if tenant.delivery_method == DeliveryMethod::Smtp || tenant.smtp_for_large_messages {
        needed.push((m365.exchange_resource.clone(), SMTP_ROLE));
    }
    needed
}

/// The NOTIFY channel a new check is announced on (workers LISTEN).
pub const CHANNEL: &str = "mailbridge_consent_checks";

/// The key recorded on a pending check that a newer consent replaced.
pub const SUPERSEDED: &str = "Superseded";

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct ConsentCheck {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub entra_tenant_id: EntraTenantId,
    pub requested_by: String,
    pub staff_id: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub state: CheckState,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The diagnosis key (`diagnosis::by_key`) of the last refusal, or [`SUPERSEDED`].
    pub last_error_code: Option<String>,
    /// Microsoft's answer, or what the token lacked.
    pub last_error_detail: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, entra_tenant_id, requested_by, staff_id, requested_at, state, \
                       attempts, next_attempt_at, last_error_code, last_error_detail, finished_at";

/// Records a consent granted in `entra_tenant_id` for customer `tenant_id` and
/// schedules its verification now. A check still pending for the customer is
/// superseded: the newest consent is the one that counts.
pub async fn record(
    pool: &PgPool,
    tenant_id: TenantId,
    entra_tenant_id: EntraTenantId,
    requested_by: &str,
    staff_id: Option<Uuid>,
) -> Result<ConsentCheck, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "UPDATE consent_checks SET state = 'failed', finished_at = now(), last_error_code = $2,
                last_error_detail = 'a newer consent replaced this one', claimed_by = NULL, claimed_until = NULL
          WHERE tenant_id = $1 AND state = 'pending'",
        tenant_id as TenantId,
        SUPERSEDED
    )
    .execute(&mut *tx)
    .await?;
    let check = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO consent_checks (id, tenant_id, entra_tenant_id, requested_by, staff_id)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(entra_tenant_id)
    .bind(requested_by)
    .bind(staff_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!("SELECT pg_notify($1, $2)", CHANNEL, tenant_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(check)
}

/// A check by its id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ConsentCheck>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM consent_checks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The customer's latest check, if it ever had one.
pub async fn latest(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Option<ConsentCheck>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM consent_checks WHERE tenant_id = $1
          ORDER BY requested_at DESC, id LIMIT 1"
    )))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// Claims one due check for `worker` for `claim_for` (its attempt counted). A check
/// another worker holds is skipped; one whose claim expired (its worker died) is due.
pub async fn claim_due(
    pool: &PgPool,
    worker: &str,
    claim_for: Duration,
) -> Result<Option<ConsentCheck>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE consent_checks SET claimed_by = $1,
                claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1
          WHERE id = (SELECT id FROM consent_checks
                       WHERE state = 'pending' AND next_attempt_at <= now()
                         AND (claimed_until IS NULL OR claimed_until < now())
                       ORDER BY next_attempt_at LIMIT 1
                       FOR UPDATE SKIP LOCKED)
          RETURNING {COLUMNS}"
    )))
    .bind(worker)
    .bind(claim_for.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// When the next pending check is due (to sleep until then).
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT min(greatest(next_attempt_at, coalesce(claimed_until, next_attempt_at)))
           FROM consent_checks WHERE state = 'pending'"
    )
    .fetch_one(pool)
    .await
}

/// The last refusal of an attempt.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: String,
    pub detail: String,
}

/// Schedules the next attempt of a check `worker` holds. `false` when the claim was
/// lost (it expired and another worker took the check, or it was superseded).
pub async fn retry_at(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    next_attempt_at: DateTime<Utc>,
    refusal: &Refusal,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE consent_checks SET next_attempt_at = $3, last_error_code = $4,
                last_error_detail = $5, claimed_by = NULL, claimed_until = NULL
          WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        id,
        worker,
        next_attempt_at,
        &refusal.code,
        &refusal.detail
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails a check `worker` holds for good, with its last refusal, and records it in
/// the audit log. `false` when the claim was lost.
pub async fn fail(
    pool: &PgPool,
    check: &ConsentCheck,
    worker: &str,
    refusal: &Refusal,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query!(
        "UPDATE consent_checks SET state = 'failed', finished_at = now(), last_error_code = $3,
                last_error_detail = $4, claimed_by = NULL, claimed_until = NULL
          WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        check.id,
        worker,
        &refusal.code,
        &refusal.detail
    )
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    audit(
        &mut tx,
        check,
        "customer.consent_failed",
        serde_json::json!({
            "entra_tenant_id": check.entra_tenant_id,
            "reason": refusal.code,
            "detail": refusal.detail,
            "attempts": check.attempts,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Marks a check `worker` holds verified and connects its customer to the Entra
/// tenant, in one transaction, with the audit entry; the customer's waiting messages
/// become due. `false` when the claim was lost
/// (then nothing changed).
pub async fn verify(
    pool: &PgPool,
    check: &ConsentCheck,
    worker: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query!(
        "UPDATE consent_checks SET state = 'verified', finished_at = now(), claimed_by = NULL,
                claimed_until = NULL
          WHERE id = $1 AND claimed_by = $2 AND state = 'pending'",
        check.id,
        worker
    )
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    crate::tenants::record_consent(&mut *tx, check.tenant_id, check.entra_tenant_id).await?;
    // The customer's messages that waited for the connection are due now.
    sqlx::query(
        "WITH due AS (UPDATE queue SET due_at = now()
                       WHERE tenant_id = $1 AND lease_owner IS NULL AND due_at > now())
         SELECT pg_notify($2, $1::text)",
    )
    .bind(check.tenant_id)
    .bind(crate::queue::QUEUE_CHANNEL)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        check,
        "customer.connected",
        serde_json::json!({
            "entra_tenant_id": check.entra_tenant_id,
            "attempts": check.attempts,
            "waited_seconds": (Utc::now() - check.requested_at).num_seconds(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The audit entry of a check's outcome, in the name of whoever started the consent.
async fn audit(
    tx: &mut sqlx::PgConnection,
    check: &ConsentCheck,
    action: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_log (actor, staff_id, action, tenant_id, target, details)
         SELECT $1, $2, $3, t.id, t.name, $5 FROM tenants t WHERE t.id = $4",
        &check.requested_by,
        check.staff_id,
        action,
        check.tenant_id as TenantId,
        details
    )
    .execute(tx)
    .await
    .map(drop)
}

/// The wait before attempt `attempts + 1`: `first`, doubled each time, at most
/// `cap`.
pub fn backoff(attempts: i32, first: Duration, cap: Duration) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    first.saturating_mul(1 << doublings).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs;
        let waits: Vec<_> = (1..=9)
            .map(|n| backoff(n, s(5), s(120)).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 120, 120, 120, 120]);
        assert_eq!(backoff(i32::MAX, s(5), s(120)), s(120));
    }
}
