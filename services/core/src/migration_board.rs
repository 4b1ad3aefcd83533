//! The migration board: per customer, every account Microsoft saw sending with SMTP
//! AUTH, and where its move to the relay stands — to migrate → relay device created
//! → relay traffic seen → done, or ignored with a reason — plus the accounts whose
//! mailbox has SMTP AUTH enabled without using it. It owns the imports (each one a
//! single transaction with its audit record: a refused or failed import leaves
//! nothing behind), the state changes staff make, the MSP-wide readiness figures and
//! the board's CSV export.
//!
//! "Relay traffic seen" is derived from the messages mailbridge accepted from the
//! linked device; the first one's time is kept on the account so that purging old
//! messages does not move an account back. "Done" is set by an import (or a
//! sign-in-log read) that no longer shows Basic use by an account whose device
//! exists; Basic use seen again later reopens it.
//!
//! Over 500 lines: it holds one table, `smtp_auth_accounts` (with its imports and
//! sign-in-log reads): the import (about 180 lines, one transaction), the state
//! changes, the readiness figures and the CSV export all keep the same stage rules.

use crate::ids::DeviceId;
use crate::ids::TenantId;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::smtp_auth_report::{AccountUse, ParsedReport, ReportKind};

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct AuditActor {
    pub label: String,
    pub staff_id: Option<Uuid>,
    pub client_addr: Option<IpNet>,
}

impl AuditActor {
    /// mailbridge itself (the sign-in-log reader).
    pub fn system(what: &str) -> Self {
        Self {
            label: what.to_owned(),
            staff_id: None,
            client_addr: None,
        }
    }
}

/// Where an account stands, as the board shows it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Stage {
    ToMigrate,
    DeviceCreated,
    RelayTrafficSeen,
    Done,
    Ignored,
    /// SMTP AUTH enabled on the mailbox, and Microsoft saw no use of it.
    ExposedUnused,
    /// Seen sending, but the latest data shows no Basic use (OAuth only).
    NoBasicUse,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The English label (translated by the web).
    pub fn label(self) -> &'static str {
        match self {
            Self::ToMigrate => "To migrate",
            Self::DeviceCreated => "Relay device created",
            Self::RelayTrafficSeen => "Relay traffic seen",
            Self::Done => "Done",
            Self::Ignored => "Ignored",
            Self::ExposedUnused => "Exposed but unused",
            Self::NoBasicUse => "No Basic use",
        }
    }

    /// Still sending with Basic authentication as far as Microsoft's data shows.
    pub fn open(self) -> bool {
        matches!(
            self,
            Self::ToMigrate | Self::DeviceCreated | Self::RelayTrafficSeen
        )
    }
}

/// One account on a customer's board.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct BoardAccount {
    pub tenant_id: TenantId,
    pub account: String,
    pub basic_messages: i64,
    pub oauth_messages: i64,
    pub first_seen_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_basic_at: Option<DateTime<Utc>>,
    pub sources: Vec<String>,
    pub seen_sending: bool,
    pub smtp_auth_enabled: Option<bool>,
    #[sqlx(rename = "state")]
    #[serde(skip)]
    pub stored_state: String,
    pub device_id: Option<DeviceId>,
    pub device_name: Option<String>,
    pub linked_at: Option<DateTime<Utc>>,
    pub relay_seen_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub ignore_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl BoardAccount {
    pub fn stage(&self) -> Stage {
        match self.stored_state.as_str() {
            "ignored" => Stage::Ignored,
            "done" => Stage::Done,
            "device_created" if self.relay_seen_at.is_some() => Stage::RelayTrafficSeen,
            "device_created" => Stage::DeviceCreated,
            _ if !self.seen_sending && self.smtp_auth_enabled == Some(true) => Stage::ExposedUnused,
            _ if self.basic_messages == 0 => Stage::NoBasicUse,
            _ => Stage::ToMigrate,
        }
    }

    /// Whether the latest data shows Basic use.
    pub fn uses_basic(&self) -> bool {
        self.basic_messages > 0
    }

    /// A device name suggested for the account: its local part.
    pub fn suggested_device_name(&self) -> String {
        let local = self.account.split('@').next().unwrap_or(&self.account);
        format!("{local} (SMTP AUTH)")
    }
}

/// Why a board change was refused.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("The account is not on this customer's board.")]
    UnknownAccount,
    #[error("The device does not belong to this customer.")]
    ForeignDevice,
    #[error("Give a reason for ignoring the account (at most 500 characters).")]
    Reason,
    #[error("{0}")]
    Database(#[from] sqlx::Error),
}

/// What an import did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    pub import_id: i64,
    pub kind: ReportKind,
    pub rows: usize,
    pub accounts: usize,
    /// Accounts new on the board.
    pub added: Vec<String>,
    /// Accounts moved to done: no Basic use any more.
    pub done: Vec<String>,
    /// Done accounts whose Basic use came back.
    pub reopened: Vec<String>,
}

struct Existing {
    account: String,
    state: String,
    linked_at: Option<DateTime<Utc>>,
}

/// Serialises imports of one customer (two uploads, or an upload and a sign-in
/// read, at the same time).
async fn lock_tenant(tx: &mut Transaction<'_, Postgres>, tenant_id: TenantId) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('smtp_auth_board:' || $1::uuid::text, 0))",
        tenant_id as TenantId
    )
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// Writes an audit record in the same transaction as the change.
pub async fn audit(
    tx: &mut Transaction<'_, Postgres>,
    actor: &AuditActor,
    action: &str,
    tenant_id: TenantId,
    target: &str,
    details: serde_json::Value,
) -> sqlx::Result<()> {
    let who = crate::store::audit_log::Who {
        label: &actor.label,
        staff_id: actor.staff_id,
        client_addr: actor.client_addr,
    };
    crate::store::audit_log::record(
        &mut **tx,
        who,
        action,
        Some(tenant_id),
        Some(target),
        details,
    )
    .await
}

/// Whether `used` shows Basic use after the account's device was linked (a details
/// export knows the day; a summary export does not, so any Basic use counts).
fn basic_after_link(used: &AccountUse, linked_at: Option<DateTime<Utc>>) -> bool {
    if !used.uses_basic() {
        return false;
    }
    match (used.last_basic, linked_at) {
        (Some(last), Some(linked)) => last.date_naive() >= linked.date_naive(),
        _ => true,
    }
}

/// Imports a parsed file into a customer's board, all or nothing.
pub async fn import(
    pool: &PgPool,
    tenant_id: TenantId,
    report: &ParsedReport,
    file_name: Option<&str>,
    actor: &AuditActor,
) -> sqlx::Result<ImportOutcome> {
    let mut tx = pool.begin().await?;
    lock_tenant(&mut tx, tenant_id).await?;
    let outcome = import_in(&mut tx, tenant_id, report, file_name, actor).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn import_in(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: TenantId,
    report: &ParsedReport,
    file_name: Option<&str>,
    actor: &AuditActor,
) -> sqlx::Result<ImportOutcome> {
    let accounts = match report.kind {
        ReportKind::Exposure => report.exposures.len(),
        _ => report.accounts.len(),
    };
    let import_id = sqlx::query_scalar!(
        "INSERT INTO smtp_auth_imports (tenant_id, kind, file_name, rows, accounts, imported_by)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        tenant_id as TenantId,
        report.kind.as_str(),
        file_name,
        i32::try_from(report.rows).unwrap_or(i32::MAX),
        i32::try_from(accounts).unwrap_or(i32::MAX),
        &actor.label
    )
    .fetch_one(&mut **tx)
    .await?;
    let existing: HashMap<String, Existing> = sqlx::query_as!(
        Existing,
        "SELECT account, state, linked_at FROM smtp_auth_accounts WHERE tenant_id = $1",
        tenant_id as TenantId
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|e| (e.account.clone(), e))
    .collect();
    let mut outcome = ImportOutcome {
        import_id,
        kind: report.kind,
        rows: report.rows,
        accounts,
        added: Vec::new(),
        done: Vec::new(),
        reopened: Vec::new(),
    };
    if report.kind == ReportKind::Exposure {
        let listed: Vec<&str> = report
            .exposures
            .iter()
            .map(|e| e.account.as_str())
            .collect();
        let enabled: Vec<bool> = report
            .exposures
            .iter()
            .map(|e| e.smtp_auth_enabled)
            .collect();
        sqlx::query!(
            "UPDATE smtp_auth_accounts SET smtp_auth_enabled = NULL, updated_at = now()
              WHERE tenant_id = $1 AND smtp_auth_enabled IS NOT NULL AND account <> ALL($2)",
            tenant_id as TenantId,
            &listed as &[&str]
        )
        .execute(&mut **tx)
        .await?;
        sqlx::query!(
            "INSERT INTO smtp_auth_accounts (tenant_id, account, smtp_auth_enabled, last_import_id)
             SELECT $1, a, e, $4 FROM unnest($2::text[], $3::boolean[]) AS x(a, e)
              -- A mailbox new to the board only when SMTP AUTH is in effect for it.
              WHERE e OR EXISTS (SELECT 1 FROM smtp_auth_accounts s
                                  WHERE s.tenant_id = $1 AND s.account = x.a)
             ON CONFLICT (tenant_id, account) DO UPDATE
                SET smtp_auth_enabled = EXCLUDED.smtp_auth_enabled, updated_at = now()",
            tenant_id as TenantId,
            &listed as &[&str],
            &enabled,
            import_id
        )
        .execute(&mut **tx)
        .await?;
        outcome.added = report
            .exposures
            .iter()
            .filter(|e| e.smtp_auth_enabled && !existing.contains_key(&e.account))
            .map(|e| e.account.clone())
            .collect();
    } else {
        let seen: BTreeMap<&str, &AccountUse> = report
            .accounts
            .iter()
            .map(|a| (a.account.as_str(), a))
            .collect();
        // Accounts the file no longer shows: nothing counted in its period.
        sqlx::query!(
            "UPDATE smtp_auth_accounts SET basic_messages = 0, oauth_messages = 0, updated_at = now()
              WHERE tenant_id = $1 AND account <> ALL($2)",
            tenant_id as TenantId,
            &seen.keys().copied().collect::<Vec<_>>() as &[&str]
        )
        .execute(&mut **tx)
        .await?;
        for used in &report.accounts {
            sqlx::query!(
                "INSERT INTO smtp_auth_accounts
                    (tenant_id, account, basic_messages, oauth_messages, first_seen_at,
                     last_seen_at, last_basic_at, sources, seen_sending, last_import_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, true, $9)
                 ON CONFLICT (tenant_id, account) DO UPDATE SET
                    basic_messages = EXCLUDED.basic_messages,
                    oauth_messages = EXCLUDED.oauth_messages,
                    first_seen_at = LEAST(smtp_auth_accounts.first_seen_at, EXCLUDED.first_seen_at),
                    last_seen_at = GREATEST(smtp_auth_accounts.last_seen_at, EXCLUDED.last_seen_at),
                    last_basic_at = GREATEST(smtp_auth_accounts.last_basic_at, EXCLUDED.last_basic_at),
                    sources = ARRAY(SELECT DISTINCT s FROM unnest(smtp_auth_accounts.sources || EXCLUDED.sources) s ORDER BY s),
                    seen_sending = true,
                    last_import_id = EXCLUDED.last_import_id,
                    updated_at = now()",
                tenant_id as TenantId,
                &used.account,
                used.basic_messages + used.unknown_messages,
                used.oauth_messages,
                used.first_seen,
                used.last_seen,
                used.last_basic,
                &used.sources,
                import_id
            )
            .execute(&mut **tx)
            .await?;
            if !existing.contains_key(&used.account) {
                outcome.added.push(used.account.clone());
            }
        }
        for (account, row) in &existing {
            let used = seen.get(account.as_str());
            let basic = used.is_some_and(|u| basic_after_link(u, row.linked_at));
            let next = match row.state.as_str() {
                "device_created" if !basic => Some(("done", &mut outcome.done)),
                "done" if basic => Some(("device_created", &mut outcome.reopened)),
                _ => None,
            };
            if let Some((state, list)) = next {
                sqlx::query!(
                    "UPDATE smtp_auth_accounts
                        SET state = $3, done_at = CASE WHEN $3 = 'done' THEN now() END,
                            updated_at = now()
                      WHERE tenant_id = $1 AND account = $2",
                    tenant_id as TenantId,
                    account,
                    state
                )
                .execute(&mut **tx)
                .await?;
                list.push(account.clone());
            }
        }
        outcome.done.sort();
        outcome.reopened.sort();
    }
    // A scheduled sign-in-log read is recorded when it changed something; a file
    // import always.
    let changed =
        !(outcome.added.is_empty() && outcome.done.is_empty() && outcome.reopened.is_empty());
    if report.kind == ReportKind::SignIns && !changed {
        return Ok(outcome);
    }
    audit(
        tx,
        actor,
        "board.import",
        tenant_id,
        file_name.unwrap_or(report.kind.as_str()),
        serde_json::json!({
            "import_id": import_id,
            "kind": report.kind,
            "rows": report.rows,
            "accounts": accounts,
            "added": outcome.added,
            "done": outcome.done,
            "reopened": outcome.reopened,
        }),
    )
    .await?;
    Ok(outcome)
}

/// Stamps the first relay message of every linked device that has not been seen yet
/// (of one customer, or all).
pub async fn record_relay_traffic(pool: &PgPool, tenant_id: Option<TenantId>) -> sqlx::Result<u64> {
    sqlx::query(
        "UPDATE smtp_auth_accounts a SET relay_seen_at = m.first, updated_at = now()
           FROM (SELECT a2.tenant_id, a2.account,
                        (SELECT min(m.received_at) FROM messages m
                          WHERE m.tenant_id = a2.tenant_id AND m.device_id = a2.device_id
                            AND m.kind = 'device') AS first
                   FROM smtp_auth_accounts a2
                  WHERE a2.device_id IS NOT NULL AND a2.relay_seen_at IS NULL
                    AND ($1::uuid IS NULL OR a2.tenant_id = $1)) m
          WHERE a.tenant_id = m.tenant_id AND a.account = m.account AND m.first IS NOT NULL",
    )
    .bind(tenant_id)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

macro_rules! account_columns {
    () => {
        "a.tenant_id, a.account, a.basic_messages, a.oauth_messages, \
         a.first_seen_at, a.last_seen_at, a.last_basic_at, a.sources, a.seen_sending, \
         a.smtp_auth_enabled, a.state, a.device_id, d.name AS device_name, a.linked_at, \
         a.relay_seen_at, a.done_at, a.ignore_reason, a.updated_at"
    };
}

/// A customer's board, most urgent first (open Basic use by messages, then the rest).
pub async fn board(pool: &PgPool, tenant_id: TenantId) -> sqlx::Result<Vec<BoardAccount>> {
    record_relay_traffic(pool, Some(tenant_id)).await?;
    let mut accounts: Vec<BoardAccount> = sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM smtp_auth_accounts a LEFT JOIN devices d ON d.id = a.device_id
          WHERE a.tenant_id = $1"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    accounts.sort_by(|a, b| {
        (a.stage(), std::cmp::Reverse(a.basic_messages), &a.account).cmp(&(
            b.stage(),
            std::cmp::Reverse(b.basic_messages),
            &b.account,
        ))
    });
    Ok(accounts)
}

/// Every customer's board (for the CSV export), by customer then urgency.
pub async fn all_accounts(pool: &PgPool) -> sqlx::Result<Vec<(String, BoardAccount)>> {
    record_relay_traffic(pool, None).await?;
    #[derive(FromRow)]
    struct Row {
        tenant_name: String,
        #[sqlx(flatten)]
        account: BoardAccount,
    }
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT t.name AS tenant_name, ",
        account_columns!(),
        " FROM smtp_auth_accounts a JOIN tenants t ON t.id = a.tenant_id
           LEFT JOIN devices d ON d.id = a.device_id
          ORDER BY lower(t.name), a.account"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant_name, r.account))
        .collect())
}

pub async fn account(
    pool: &PgPool,
    tenant_id: TenantId,
    account: &str,
) -> sqlx::Result<Option<BoardAccount>> {
    sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM smtp_auth_accounts a LEFT JOIN devices d ON d.id = a.device_id
          WHERE a.tenant_id = $1 AND a.account = $2"
    ))
    .bind(tenant_id)
    .bind(account.trim().to_lowercase())
    .fetch_optional(pool)
    .await
}

/// Links an account to a device of the same customer: it moves to "relay device
/// created" (or stays done if it already is).
pub async fn link_device(
    pool: &PgPool,
    tenant_id: TenantId,
    account: &str,
    device_id: DeviceId,
    actor: &AuditActor,
) -> Result<(), BoardError> {
    let mut tx = pool.begin().await?;
    lock_tenant(&mut tx, tenant_id).await?;
    let device = sqlx::query!(
        "SELECT tenant_id, name FROM devices WHERE id = $1",
        device_id as DeviceId
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(device) = device else {
        return Err(BoardError::ForeignDevice);
    };
    if TenantId::from(device.tenant_id) != tenant_id {
        return Err(BoardError::ForeignDevice);
    }
    let device_name = device.name;
    let before = sqlx::query_scalar!(
        r#"UPDATE smtp_auth_accounts a SET device_id = $3, linked_at = now(),
                  relay_seen_at = NULL, ignore_reason = NULL, done_at = NULL,
                  state = 'device_created', updated_at = now()
             FROM (SELECT state FROM smtp_auth_accounts
                    WHERE tenant_id = $1 AND account = $2 FOR UPDATE) old
            WHERE a.tenant_id = $1 AND a.account = $2
        RETURNING old.state AS "state!""#,
        tenant_id as TenantId,
        account,
        device_id as DeviceId
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(before) = before else {
        return Err(BoardError::UnknownAccount);
    };
    audit(
        &mut tx,
        actor,
        "board.link_device",
        tenant_id,
        account,
        serde_json::json!({ "device_id": device_id, "device": device_name, "state": [before, "device_created"] }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Sets an account aside with a reason (e.g. "switched to OAuth natively").
pub async fn ignore(
    pool: &PgPool,
    tenant_id: TenantId,
    account: &str,
    reason: &str,
    actor: &AuditActor,
) -> Result<(), BoardError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(BoardError::Reason);
    }
    set_state(
        pool,
        tenant_id,
        account,
        "ignored",
        Some(reason),
        actor,
        "board.ignore",
    )
    .await
}

/// Takes an ignored or done account back: to "relay device created" when it has a
/// device, else "to migrate".
pub async fn reopen(
    pool: &PgPool,
    tenant_id: TenantId,
    account: &str,
    actor: &AuditActor,
) -> Result<(), BoardError> {
    set_state(
        pool,
        tenant_id,
        account,
        "reopen",
        None,
        actor,
        "board.reopen",
    )
    .await
}

async fn set_state(
    pool: &PgPool,
    tenant_id: TenantId,
    account: &str,
    state: &str,
    reason: Option<&str>,
    actor: &AuditActor,
    action: &str,
) -> Result<(), BoardError> {
    let mut tx = pool.begin().await?;
    lock_tenant(&mut tx, tenant_id).await?;
    let change = sqlx::query!(
        r#"UPDATE smtp_auth_accounts a SET
                  state = CASE WHEN $3 <> 'reopen' THEN $3
                               WHEN a.device_id IS NOT NULL THEN 'device_created'
                               ELSE 'to_migrate' END,
                  ignore_reason = $4, done_at = NULL, updated_at = now()
             FROM (SELECT state FROM smtp_auth_accounts
                    WHERE tenant_id = $1 AND account = $2 FOR UPDATE) old
            WHERE a.tenant_id = $1 AND a.account = $2
        RETURNING old.state AS "before!", a.state AS "after!""#,
        tenant_id as TenantId,
        account,
        state,
        reason
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(change) = change else {
        return Err(BoardError::UnknownAccount);
    };
    let (before, after) = (change.before, change.after);
    audit(
        &mut tx,
        actor,
        action,
        tenant_id,
        account,
        serde_json::json!({ "state": [before, after], "reason": reason }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One customer's standing, for the MSP-wide overview.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Readiness {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    /// Connected to Microsoft 365 by admin consent.
    pub connected: bool,
    /// Accounts still sending with Basic, not yet on a relay device.
    pub to_migrate: i64,
    /// Accounts with a relay device whose Basic use is not gone yet.
    pub in_progress: i64,
    pub done: i64,
    pub ignored: i64,
    pub exposed_unused: i64,
    /// Basic messages of the open accounts in the latest data.
    pub basic_messages: i64,
    pub last_import_at: Option<DateTime<Utc>>,
}

impl Readiness {
    /// No report imported and no sign-in log read: nothing is known.
    pub fn unknown(&self) -> bool {
        self.last_import_at.is_none()
    }

    pub fn open(&self) -> i64 {
        self.to_migrate + self.in_progress
    }

    /// Higher is more at risk: unknown customers first (nothing is known about
    /// them), then by open accounts and their Basic messages.
    pub fn risk(&self) -> (bool, i64, i64) {
        (self.unknown(), self.open(), self.basic_messages)
    }
}

/// Every customer's readiness, most at risk first.
pub async fn readiness(pool: &PgPool) -> sqlx::Result<Vec<Readiness>> {
    let mut all = sqlx::query_as!(
        Readiness,
        r#"SELECT t.id AS tenant_id, t.name AS tenant_name,
                  -- As the customers' overview says it: a verified consent, or a token issued.
                  (t.entra_tenant_id IS NOT NULL
                   AND (t.consented_at IS NOT NULL OR t.last_token_ok_at IS NOT NULL)) AS "connected!",
                  count(a.account) FILTER (WHERE a.seen_sending AND a.state = 'to_migrate'
                                             AND a.basic_messages > 0) AS "to_migrate!",
                  count(a.account) FILTER (WHERE a.state = 'device_created') AS "in_progress!",
                  count(a.account) FILTER (WHERE a.state = 'done') AS "done!",
                  count(a.account) FILTER (WHERE a.state = 'ignored') AS "ignored!",
                  count(a.account) FILTER (WHERE NOT a.seen_sending AND a.state = 'to_migrate'
                                             AND a.smtp_auth_enabled) AS "exposed_unused!",
                  COALESCE(sum(a.basic_messages) FILTER (WHERE a.state IN ('to_migrate', 'device_created')), 0)::bigint
                      AS "basic_messages!",
                  (SELECT max(i.imported_at) FROM smtp_auth_imports i
                    WHERE i.tenant_id = t.id AND i.kind <> 'exposure') AS last_import_at
             FROM tenants t LEFT JOIN smtp_auth_accounts a ON a.tenant_id = t.id
            GROUP BY t.id"#
    )
    .fetch_all(pool)
    .await?;
    all.sort_by(|a, b| {
        b.risk().cmp(&a.risk()).then_with(|| {
            a.tenant_name
                .to_lowercase()
                .cmp(&b.tenant_name.to_lowercase())
        })
    });
    Ok(all)
}

/// The board as CSV for an MSP's project tracking: one row per account.
pub fn to_csv(rows: &[(String, BoardAccount)]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let time = |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    writer
        .write_record([
            "customer",
            "account",
            "state",
            "basic_messages",
            "oauth_messages",
            "first_seen",
            "last_seen",
            "sources",
            "smtp_auth_enabled",
            "device",
            "relay_traffic_seen",
            "done_at",
            "ignore_reason",
        ])
        .expect("writing to memory");
    for (customer, a) in rows {
        writer
            .write_record([
                customer.as_str(),
                a.account.as_str(),
                a.stage().as_str(),
                &a.basic_messages.to_string(),
                &a.oauth_messages.to_string(),
                &time(&a.first_seen_at),
                &time(&a.last_seen_at),
                &a.sources.join(" "),
                a.smtp_auth_enabled
                    .map_or("", |e| if e { "true" } else { "false" }),
                a.device_name.as_deref().unwrap_or(""),
                &time(&a.relay_seen_at),
                &time(&a.done_at),
                a.ignore_reason.as_deref().unwrap_or(""),
            ])
            .expect("writing to memory");
    }
    String::from_utf8(writer.into_inner().expect("flushing to memory")).expect("CSV of UTF-8 text")
}

/// Where the reading of a customer's sign-in log stands.
#[derive(Debug)]
pub struct SignInRead {
    pub last_read_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub next_read_at: DateTime<Utc>,
}

/// The reading of `tenant_id`'s sign-in log, once it started.
pub async fn sign_in_read(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Option<SignInRead>, sqlx::Error> {
    sqlx::query_as!(
        SignInRead,
        "SELECT last_read_at, last_error, next_read_at
           FROM smtp_auth_signin_reads WHERE tenant_id = $1",
        tenant_id as TenantId
    )
    .fetch_optional(pool)
    .await
}

/// Claims, for `reader` and `claim` long, the connected customer whose sign-in-log
/// read is most overdue, if any: one worker of many reads each customer's log.
pub async fn claim_sign_in_read(
    pool: &PgPool,
    reader: &str,
    claim: std::time::Duration,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "WITH due AS (
            SELECT t.id FROM tenants t
              LEFT JOIN smtp_auth_signin_reads r ON r.tenant_id = t.id
             WHERE t.entra_tenant_id IS NOT NULL
               AND (r.tenant_id IS NULL
                    OR (r.next_read_at <= now()
                        AND (r.lease_expires_at IS NULL OR r.lease_expires_at < now())))
             ORDER BY r.next_read_at NULLS FIRST
             LIMIT 1)
         INSERT INTO smtp_auth_signin_reads (tenant_id, lease_owner, lease_expires_at)
         SELECT id, $1, now() + make_interval(secs => $2) FROM due
         ON CONFLICT (tenant_id) DO UPDATE
            SET lease_owner = EXCLUDED.lease_owner, lease_expires_at = EXCLUDED.lease_expires_at
          WHERE smtp_auth_signin_reads.next_read_at <= now()
            AND (smtp_auth_signin_reads.lease_expires_at IS NULL
                 OR smtp_auth_signin_reads.lease_expires_at < now())
         RETURNING tenant_id",
        reader,
        claim.as_secs_f64()
    )
    .fetch_optional(pool)
    .await
}

/// Records how `reader`'s read of `tenant_id`'s sign-in log went (`error` is `None`
/// when it succeeded) and when the next one is due; frees the claim.
pub async fn record_sign_in_read(
    pool: &PgPool,
    tenant_id: TenantId,
    reader: &str,
    next_in: std::time::Duration,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE smtp_auth_signin_reads
            SET next_read_at = now() + make_interval(secs => $3),
                lease_owner = NULL, lease_expires_at = NULL,
                last_read_at = CASE WHEN $4::text IS NULL THEN now() ELSE last_read_at END,
                last_error = $4,
                last_error_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END
          WHERE tenant_id = $1 AND lease_owner = $2",
        tenant_id as TenantId,
        reader,
        next_in.as_secs_f64(),
        error
    )
    .execute(pool)
    .await
    .map(drop)
}
