//! Holds: a condition of a whole mailbox (throttled, over its sending quota), a
//! whole customer (consent missing or revoked, tenant unknown, SMTP AUTH disabled,
//! access refused) or the whole app (its secret or certificate expired or refused,
//! Entra or Graph down) stops that scope's deliveries as one, in PostgreSQL so that
//! every worker sees it. Its messages stay queued and are not attempted one by one;
//! one of them is tried as a probe on a schedule with backoff (or at the end of
//! Microsoft's `Retry-After`), and the moment a probe gets through the hold goes and
//! every held message is due at once. A change that can clear a hold (a re-consent,
//! a customer setting, "retry now") probes at once.
//!
//! An app hold names the credential that was refused (a fingerprint), so a worker
//! started with a new secret or certificate is not held by its predecessor's
//! refusal. Messages held longer than their maximum age fail with the hold's reason.
//!
//! Over 500 lines: it holds the 13 statements of one table, `delivery_holds` — set,
//! reschedule, release, the probe and expiry leases, the lists — some of which also
//! move the held messages; splitting by statement would scatter the table's rules.

use crate::ids::TenantId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::queue::{LeasedMessage, QUEUE_CHANNEL};

/// How wide a condition is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Scope {
    /// The customer's sender mailbox.
    Mailbox,
    /// The customer (its tenant, its consent, its settings).
    Customer,
    /// The Entra app (its credential), or Microsoft's service as a whole.
    App,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The first probe comes this long after a hold is placed; each failed probe
/// doubles the wait, up to [`PROBE_INTERVAL_MAX`].
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(600);

/// The wait before the next probe after `failures` failed probes, ±10 % jitter so
/// that many customers' holds do not probe as one wave.
pub fn probe_interval(failures: i32) -> Duration {
    let exponent = failures.clamp(0, 16) as u32;
    let base = PROBE_INTERVAL
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(PROBE_INTERVAL_MAX);
    base.mul_f64(rand::random_range(0.9..1.1))
}

/// The MSP's multi-tenant app as a worker knows it: its client id and a fingerprint
/// of the credential it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppIdentity {
    pub client_id: String,
    pub credential: String,
}

/// A hold's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, FromRow, Serialize)]
pub struct HoldKey {
    pub scope: Scope,
    /// The app's client id, the customer's id, or the mailbox.
    pub subject: String,
    /// For an app: the fingerprint of the refused credential.
    #[serde(skip)]
    pub credential: String,
}

/// Whether tenant `t` is held, with `$client`/`$fingerprint` the worker's MSP app
/// (NULL: none). A literal, so that queries stay static strings.
#[macro_export]
#[doc(hidden)]
macro_rules! tenant_held {
    ($t:literal, $client:literal, $fingerprint:literal) => {
        concat!(
            "(EXISTS (SELECT 1 FROM delivery_holds h WHERE h.scope = 'customer' AND h.subject = ", $t, ".id::text AND h.credential = '')",
            " OR EXISTS (SELECT 1 FROM delivery_holds h WHERE h.scope = 'mailbox' AND h.subject = lower(", $t, ".sender_mailbox) AND h.credential = '')",
            " OR EXISTS (SELECT 1 FROM delivery_holds h WHERE h.scope = 'app' AND h.subject = COALESCE(", $t, ".client_id, ", $client, ")",
            " AND h.credential = CASE WHEN ", $t, ".client_id IS NULL THEN ", $fingerprint,
            " ELSE encode(sha256(COALESCE(", $t, ".client_secret_sealed, ", $t, ".client_certificate_sealed)), 'hex') END))"
        )
    };
}

/// Whether hold `h` applies to tenant `t`, with `$client`/`$fingerprint` the
/// worker's MSP app; with `$client` NULL (the control plane, which presents no
/// credential), an MSP app hold applies to every customer without its own app.
macro_rules! hold_applies {
    ($h:literal, $t:literal, $client:literal, $fingerprint:literal) => {
        concat!(
            "CASE ",
            $h,
            ".scope",
            " WHEN 'customer' THEN ",
            $h,
            ".subject = ",
            $t,
            ".id::text",
            " WHEN 'mailbox' THEN ",
            $h,
            ".subject = lower(",
            $t,
            ".sender_mailbox)",
            " ELSE CASE WHEN ",
            $t,
            ".client_id IS NOT NULL THEN ",
            $h,
            ".subject = ",
            $t,
            ".client_id",
            " AND ",
            $h,
            ".credential = encode(sha256(COALESCE(",
            $t,
            ".client_secret_sealed, ",
            $t,
            ".client_certificate_sealed)), 'hex')",
            " ELSE COALESCE(",
            $h,
            ".subject = ",
            $client,
            " AND ",
            $h,
            ".credential = COALESCE(",
            $fingerprint,
            ", ",
            $h,
            ".credential),",
            " NOT EXISTS (SELECT 1 FROM tenants o WHERE o.client_id = ",
            $h,
            ".subject)) END END"
        )
    };
}

/// What a failed attempt tells about its scope.
#[derive(Debug, Clone)]
pub struct Condition<'a> {
    pub scope: Scope,
    pub tenant_id: TenantId,
    /// The worker's MSP app (for a customer without an app of its own).
    pub app: Option<&'a AppIdentity>,
    /// The diagnosis key.
    pub reason: &'a str,
    pub detail: &'a str,
    /// Microsoft's `Retry-After`: the hold's first probe comes no sooner.
    pub retry_after: Option<Duration>,
    /// Heard on a probe of this very hold: the probe failed, the schedule backs off.
    pub probe_failed: bool,
}

/// Puts (or keeps) a hold on the condition's scope; a hold already there keeps its
/// start and its schedule (a probe that failed backs it off). Returns the hold's
/// key, or `None` when the scope does not exist (the customer was deleted, or an
/// app hold without an app).
pub async fn hold(pool: &PgPool, c: &Condition<'_>) -> Result<Option<HoldKey>, sqlx::Error> {
    let first = probe_interval(0).max(c.retry_after.unwrap_or_default());
    sqlx::query_as(
        "INSERT INTO delivery_holds AS d (scope, subject, credential, tenant_id, reason, detail, next_probe_at)
         SELECT $1,
                CASE $1 WHEN 'customer' THEN t.id::text WHEN 'mailbox' THEN lower(t.sender_mailbox)
                        ELSE COALESCE(t.client_id, $3) END,
                CASE WHEN $1 <> 'app' THEN ''
                     WHEN t.client_id IS NULL THEN $4
                     ELSE encode(sha256(COALESCE(t.client_secret_sealed, t.client_certificate_sealed)), 'hex') END,
                CASE WHEN $1 = 'app' THEN NULL ELSE t.id END,
                $5, left($6, 2000), now() + make_interval(secs => $7)
           FROM tenants t
          WHERE t.id = $2 AND ($1 <> 'app' OR t.client_id IS NOT NULL OR $3 IS NOT NULL)
         ON CONFLICT (scope, subject, credential) DO UPDATE
            SET reason = excluded.reason, detail = excluded.detail,
                probe_failures = d.probe_failures + CASE WHEN $8 THEN 1 ELSE 0 END,
                last_probe_at = CASE WHEN $8 THEN now() ELSE d.last_probe_at END,
                next_probe_at = CASE
                    WHEN $8 THEN now() + make_interval(secs => greatest(least($9 * power(2, least(d.probe_failures + 1, 16)), $10) * (0.9 + random() * 0.2), $7))
                    ELSE greatest(d.next_probe_at, excluded.next_probe_at) END
         RETURNING scope, subject, credential",
    )
    .bind(c.scope)
    .bind(c.tenant_id)
    .bind(c.app.map(|a| a.client_id.as_str()))
    .bind(c.app.map(|a| a.credential.as_str()))
    .bind(c.reason)
    .bind(c.detail)
    .bind(first.as_secs_f64())
    .bind(c.probe_failed)
    .bind(PROBE_INTERVAL.as_secs_f64())
    .bind(PROBE_INTERVAL_MAX.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// A probe that told nothing about the hold (its message met another condition or a
/// limit): the hold is probed again after `wait`.
pub async fn reschedule(pool: &PgPool, key: &HoldKey, wait: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery_holds SET next_probe_at = now() + make_interval(secs => $4)
          WHERE scope = $1 AND subject = $2 AND credential = $3",
    )
    .bind(key.scope)
    .bind(&key.subject)
    .bind(&key.credential)
    .bind(wait.as_secs_f64())
    .execute(pool)
    .await
    .map(drop)
}

/// Ends a hold (a probe got through): its messages are due at once, and the workers
/// are woken. Returns whether there was one.
pub async fn release(pool: &PgPool, key: &HoldKey) -> Result<bool, sqlx::Error> {
    let released: Option<i32> = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM delivery_holds WHERE scope = $1 AND subject = $2 AND credential = $3
             RETURNING 1)
         SELECT 1 FROM gone, LATERAL pg_notify($4, 'hold released') LIMIT 1",
    )
    .bind(key.scope)
    .bind(&key.subject)
    .bind(&key.credential)
    .bind(QUEUE_CHANNEL)
    .fetch_optional(pool)
    .await?;
    Ok(released.is_some())
}

/// The holds of `client_id` on credentials other than `credential`: a worker got a
/// token with `credential`, so those are stale (a worker still using an old one puts
/// its hold back at its next refusal).
pub async fn release_other_credentials(
    pool: &PgPool,
    app: &AppIdentity,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "WITH gone AS (
             DELETE FROM delivery_holds
              WHERE scope = 'app' AND subject = $1 AND credential <> $2
              RETURNING 1)
         SELECT pg_notify($3, 'hold released') FROM (SELECT 1 FROM gone LIMIT 1) g",
    )
    .bind(&app.client_id)
    .bind(&app.credential)
    .bind(QUEUE_CHANNEL)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// Probes the customer's holds (its own, its mailbox's, its own app's) at once: its
/// consent or settings changed.
pub async fn probe_customer_now(pool: &PgPool, tenant_id: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery_holds h SET next_probe_at = now()
           FROM tenants t
          WHERE t.id = $1 AND h.next_probe_at > now() AND (h.tenant_id = t.id OR (h.scope = 'app' AND h.subject = t.client_id))",
    )
    .bind(tenant_id)
    .execute(pool)
    .await
    .map(drop)
}

/// Probes one hold at once ("retry now"). Returns the hold's customer (for a
/// customer or mailbox hold), or `None` when there is no such hold.
pub async fn probe_now(pool: &PgPool, id: Uuid) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE delivery_holds SET next_probe_at = least(next_probe_at, now())
          WHERE id = $1 RETURNING tenant_id",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Probes the MSP app's holds at once: a worker started with a credential that
/// may clear them.
pub async fn probe_app_now(pool: &PgPool, client_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery_holds SET next_probe_at = now()
          WHERE scope = 'app' AND subject = $1 AND next_probe_at > now()",
    )
    .bind(client_id)
    .execute(pool)
    .await
    .map(drop)
}

/// A held message leased to probe its hold.
#[derive(Debug, Clone)]
pub struct Probe {
    pub hold: HoldKey,
    pub message: LeasedMessage,
}

/// Claims up to `limit` holds whose probe is due and leases one message of each
/// (the oldest due) to `owner`; the hold's next probe moves past the lease, so that
/// no other worker probes it meanwhile (a worker that dies mid-probe leaves it to
/// the lease's end). A hold with no message left is gone: nothing is held. App holds
/// of the MSP app on a credential other than `app`'s are left to the workers that
/// present it.
pub async fn lease_probes(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    app: Option<&AppIdentity>,
    limit: i64,
) -> Result<Vec<Probe>, sqlx::Error> {
    let client = app.map(|a| a.client_id.as_str());
    let fingerprint = app.map(|a| a.credential.as_str());
    let mut transaction = pool.begin().await?;
    let holds: Vec<HoldKey> = sqlx::query_as(
        "SELECT scope, subject, credential FROM delivery_holds h
          WHERE next_probe_at <= now()
            AND (scope <> 'app'
                 OR (subject = $1 AND credential = $2)
                 OR EXISTS (SELECT 1 FROM tenants t WHERE t.client_id = h.subject))
          ORDER BY next_probe_at
          LIMIT $3
          FOR UPDATE SKIP LOCKED",
    )
    .bind(client)
    .bind(fingerprint)
    .bind(limit)
    .fetch_all(&mut *transaction)
    .await?;
    let mut probes = Vec::with_capacity(holds.len());
    for hold in holds {
        let message: Option<LeasedMessage> = sqlx::query_as(concat!(
            "WITH lease AS (UPDATE queue q
                SET ",
            crate::queue_lease!("q", "$5", "$6"),
            "
               FROM (SELECT w.message_id, w.lease_owner IS NOT NULL AS recovered
                       FROM queue w JOIN tenants t ON t.id = w.tenant_id
                       JOIN (SELECT $1::text AS scope, $2::text AS subject, $3::text AS credential) h ON true
                      WHERE (w.lease_owner IS NULL OR w.due_at < now())
                        AND ($8::uuid IS NULL OR w.tenant_id = $8)
                        AND ",
            hold_applies!("h", "t", "$4", "$7"),
            "
                      ORDER BY w.due_at LIMIT 1
                      FOR UPDATE OF w SKIP LOCKED) taken
              WHERE q.message_id = taken.message_id",
            crate::lease_end!("taken", "", "")
        ))
        .bind(hold.scope)
        .bind(&hold.subject)
        .bind(&hold.credential)
        .bind(client)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .bind(fingerprint)
        .bind(match hold.scope {
            Scope::Customer => hold.subject.parse::<Uuid>().ok(),
            _ => None,
        })
        .fetch_optional(&mut *transaction)
        .await?;
        let key = (hold.scope, &hold.subject, &hold.credential);
        match message {
            Some(message) => {
                sqlx::query(
                    "UPDATE delivery_holds SET next_probe_at = now() + make_interval(secs => $4)
                      WHERE scope = $1 AND subject = $2 AND credential = $3",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .bind(lease.as_secs_f64())
                .execute(&mut *transaction)
                .await?;
                probes.push(Probe { hold, message });
            }
            None => {
                // Nothing waits in the scope (or every message is leased to a probe
                // or taken by another worker): the hold ends; the next message
                // finds out afresh.
                sqlx::query(concat!(
                    "DELETE FROM delivery_holds h
                      WHERE scope = $1 AND subject = $2 AND credential = $3
                        AND NOT EXISTS (
                            SELECT 1 FROM queue q JOIN tenants t ON t.id = q.tenant_id
                             WHERE ",
                    hold_applies!("h", "t", "$4", "$5"),
                    ")"
                ))
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .bind(client)
                .bind(fingerprint)
                .execute(&mut *transaction)
                .await?;
            }
        }
    }
    transaction.commit().await?;
    Ok(probes)
}

/// A held message past its maximum age, leased to be failed with its hold's reason.
#[derive(Debug, Clone, FromRow)]
pub struct Expired {
    #[sqlx(flatten)]
    pub message: LeasedMessage,
    pub reason: String,
    pub detail: String,
    pub method: String,
}

/// Leases up to `limit` held messages received more than `max_age` ago, with the
/// reason of the widest hold that keeps them, to fail them.
pub async fn lease_expired(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    max_age: Duration,
    app: Option<&AppIdentity>,
    limit: i64,
) -> Result<Vec<Expired>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH lease AS (UPDATE queue q
            SET ",
        crate::queue_lease!("q", "$1", "$2"),
        "
           FROM (SELECT w.message_id, w.lease_owner IS NOT NULL AS recovered, held.reason, held.detail,
                        t.delivery_method
                   FROM queue w JOIN messages l ON l.id = w.message_id JOIN tenants t ON t.id = w.tenant_id
                   CROSS JOIN LATERAL (
                        SELECT h.reason, h.detail FROM delivery_holds h
                         WHERE ",
        hold_applies!("h", "t", "$5", "$6"),
        "
                         ORDER BY CASE h.scope WHEN 'app' THEN 0 WHEN 'customer' THEN 1 ELSE 2 END
                         LIMIT 1) held
                  WHERE l.received_at < now() - make_interval(secs => $3)
                    AND (w.lease_owner IS NULL OR w.due_at < now())
                  ORDER BY l.received_at LIMIT $4
                  FOR UPDATE OF w SKIP LOCKED) taken
          WHERE q.message_id = taken.message_id",
        crate::lease_end!(
            "taken",
            ", taken.reason, taken.detail, taken.delivery_method",
            ", l.reason, l.detail, l.delivery_method AS method"
        )
    ))
    .bind(owner)
    .bind(lease.as_secs_f64())
    .bind(max_age.as_secs_f64())
    .bind(limit)
    .bind(app.map(|a| a.client_id.as_str()))
    .bind(app.map(|a| a.credential.as_str()))
    .fetch_all(pool)
    .await
}

/// A hold as the control plane shows it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Hold {
    pub id: Uuid,
    pub scope: Scope,
    pub subject: String,
    /// The customer a customer or mailbox hold belongs to.
    pub tenant_id: Option<TenantId>,
    pub tenant_name: Option<String>,
    /// The diagnosis key.
    pub reason: String,
    pub detail: String,
    pub since: DateTime<Utc>,
    pub next_probe_at: DateTime<Utc>,
    pub last_probe_at: Option<DateTime<Utc>>,
    pub probe_failures: i32,
    /// Messages waiting for it (queued or in a lease that expired).
    pub messages_held: i64,
    /// Identifies the hold for "retry now" (the credential fingerprint is not shown).
    #[serde(skip)]
    pub credential: String,
}

impl Hold {
    pub fn key(&self) -> HoldKey {
        HoldKey {
            scope: self.scope,
            subject: self.subject.clone(),
            credential: self.credential.clone(),
        }
    }

    /// Whether this hold keeps the messages of customer `tenant_id` with its own app
    /// `client_id` (if any); `own_apps`: every customer's own app, so that an MSP
    /// app hold is told from a customer app's.
    pub fn applies_to(
        &self,
        tenant_id: TenantId,
        client_id: Option<&str>,
        own_apps: &std::collections::HashSet<&str>,
    ) -> bool {
        match self.scope {
            Scope::Customer | Scope::Mailbox => self.tenant_id == Some(tenant_id),
            Scope::App => match client_id {
                Some(own) => own == self.subject,
                None => !own_apps.contains(self.subject.as_str()),
            },
        }
    }

    /// What the reason means, in plain words.
    pub fn explained(&self) -> Option<&'static crate::diagnosis::Diagnosis> {
        crate::diagnosis::by_key(&self.reason)
    }
}

/// Every hold (`tenant`: only those that keep this customer's messages), widest
/// first, with the messages each one holds.
pub async fn list(pool: &PgPool, tenant: Option<TenantId>) -> Result<Vec<Hold>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT h.id, h.scope, h.subject, h.credential, h.tenant_id, owner.name AS tenant_name, h.reason, h.detail,
                h.since, h.next_probe_at, h.last_probe_at, h.probe_failures,
                (SELECT count(*) FROM queue q JOIN tenants t ON t.id = q.tenant_id
                  WHERE (h.scope <> 'customer' OR q.tenant_id = h.tenant_id)
                    AND (q.lease_owner IS NULL OR q.due_at < now()) AND ",
        hold_applies!("h", "t", "NULL::text", "NULL::text"),
        ") AS messages_held
           FROM delivery_holds h LEFT JOIN tenants owner ON owner.id = h.tenant_id
          WHERE $1::uuid IS NULL OR h.tenant_id = $1
                OR (h.scope = 'app' AND EXISTS (
                    SELECT 1 FROM tenants t WHERE t.id = $1 AND ",
        hold_applies!("h", "t", "NULL::text", "NULL::text"),
        "))
          ORDER BY CASE h.scope WHEN 'app' THEN 0 WHEN 'customer' THEN 1 ELSE 2 END, h.since"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Held messages and the age of the oldest hold, by scope and reason, for the
/// metrics.
pub async fn by_reason(pool: &PgPool) -> Result<Vec<HeldByReason>, sqlx::Error> {
    let mut counts: Vec<HeldByReason> = Vec::new();
    for hold in list(pool, None).await? {
        let age = (Utc::now() - hold.since).num_seconds().max(0);
        match counts
            .iter_mut()
            .find(|c| c.scope == hold.scope && c.reason == hold.reason)
        {
            Some(c) => {
                c.messages += hold.messages_held;
                c.oldest_seconds = c.oldest_seconds.max(age);
            }
            None => counts.push(HeldByReason {
                scope: hold.scope,
                reason: hold.reason,
                messages: hold.messages_held,
                oldest_seconds: age,
            }),
        }
    }
    Ok(counts)
}

/// One scope and reason's held messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldByReason {
    pub scope: Scope,
    pub reason: String,
    pub messages: i64,
    pub oldest_seconds: i64,
}
