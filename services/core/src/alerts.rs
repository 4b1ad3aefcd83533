//! Alerts: the MSP's rules (one per kind, with defaults), the conditions they watch
//! — a device silent or locked out, a customer's consent lost or token refused,
//! Microsoft refusing many messages, a customer's queue growing old, a high bounce
//! rate, the MSP app's secret or certificate or the edge's TLS certificate about to
//! expire — and the alerts those conditions open.
//!
//! An alert is keyed by (kind, subject): it opens once when its condition appears,
//! is updated (its facts, its severity) while the condition lasts, and resolves when
//! it ends; the next occurrence is a new alert. One evaluation per interval runs in
//! the whole cluster (a transaction-level advisory lock and the `housekeeping` row
//! 'alerts'), and every transition writes its events into the webhook outbox and its
//! e-mail into the queue in the same transaction: an event is never sent for a
//! transition that did not commit, and never lost for one that did.
//!
//! Over 500 lines: about 210 of them are the condition queries, one per kind; the
//! rules, settings and the open, update and resolve of `alerts` stay with them because
//! every transition commits with its webhook events and mail in one transaction.

use crate::ids::DeviceId;
use crate::ids::TenantId;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    i18n::{self, Lang},
    tr, webhooks,
};

/// The advisory lock key of the alert evaluation (an arbitrary constant).
const EVALUATION_LOCK: i64 = 0x6d62_616c_6572_7401;
/// A certificate expiry reported longer ago than this no longer counts (its pod is
/// gone).
const REPORT_FRESH_FOR: &str = "2 days";
/// The bounce rate is judged only on at least this many messages in its window.
pub const BOUNCE_RATE_MIN_MESSAGES: i64 = 5;

/// What an alert watches.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    DeviceSilent,
    DeviceLockout,
    CustomerToken,
    Refusals,
    QueueAge,
    BounceRate,
    AppCredential,
    EdgeCertificate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    /// The rule's name, in English (German in the catalogue, `crate::i18n`).
    pub fn title(self) -> &'static str {
        match self {
            Kind::DeviceSilent => tr!("Device silent"),
            Kind::DeviceLockout => tr!("Device locked out"),
            Kind::CustomerToken => tr!("Consent lost or token refused"),
            Kind::Refusals => tr!("Microsoft refuses messages"),
            Kind::QueueAge => tr!("Messages waiting too long"),
            Kind::BounceRate => tr!("High bounce rate"),
            Kind::AppCredential => tr!("MSP app credential expiring"),
            Kind::EdgeCertificate => tr!("Edge TLS certificate expiring"),
        }
    }

    /// Whether the threshold and window are the rule's to set.
    pub fn has_threshold(self) -> bool {
        matches!(
            self,
            Kind::Refusals
                | Kind::QueueAge
                | Kind::BounceRate
                | Kind::AppCredential
                | Kind::EdgeCertificate
        )
    }

    pub fn has_window(self) -> bool {
        matches!(self, Kind::Refusals | Kind::BounceRate)
    }
}

/// A rule as the MSP set it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Rule {
    pub kind: String,
    pub enabled: bool,
    pub threshold: i32,
    pub window_minutes: i32,
}

pub async fn rules(pool: &PgPool) -> Result<Vec<Rule>, sqlx::Error> {
    let mut rules = sqlx::query_as!(
        Rule,
        "SELECT kind, enabled, threshold, window_minutes FROM alert_rules"
    )
    .fetch_all(pool)
    .await?;
    rules.sort_by_key(|r| Kind::parse(&r.kind).map(|k| k as usize));
    Ok(rules)
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("unknown alert kind")]
    UnknownKind,
    #[error("the threshold must be between 1 and 100000 (a bounce rate: 1 to 100 per cent)")]
    Threshold,
    #[error("the window must be between 1 and 43200 minutes (30 days)")]
    Window,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Changes one rule.
pub async fn set_rule(
    pool: &PgPool,
    kind: &str,
    enabled: bool,
    threshold: i32,
    window_minutes: i32,
) -> Result<(), RuleError> {
    let kind = Kind::parse(kind).ok_or(RuleError::UnknownKind)?;
    let max = if kind == Kind::BounceRate {
        100
    } else {
        100_000
    };
    if !(1..=max).contains(&threshold) {
        return Err(RuleError::Threshold);
    }
    if !(1..=43_200).contains(&window_minutes) {
        return Err(RuleError::Window);
    }
    sqlx::query!(
        "UPDATE alert_rules SET enabled = $2, threshold = $3, window_minutes = $4, updated_at = now()
          WHERE kind = $1",
        kind.as_str(),
        enabled,
        threshold,
        window_minutes
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Where alert e-mails go, and the MSP app's secret expiry as entered.
#[derive(Debug, Clone, Default, Serialize, FromRow)]
pub struct AlertSettings {
    pub email_to: Option<String>,
    /// The customer whose sender mailbox and delivery path alert e-mails use (the
    /// MSP's own tenant, typically).
    pub email_tenant_id: Option<TenantId>,
    pub app_secret_expires_on: Option<NaiveDate>,
}

pub async fn settings(pool: &PgPool) -> Result<AlertSettings, sqlx::Error> {
    sqlx::query_as!(
        AlertSettings,
        r#"SELECT email_to, email_tenant_id AS "email_tenant_id: TenantId", app_secret_expires_on FROM alert_settings"#
    )
    .fetch_optional(pool)
    .await
    .map(Option::unwrap_or_default)
}

pub async fn save_settings(pool: &PgPool, s: &AlertSettings) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO alert_settings (id, email_to, email_tenant_id, app_secret_expires_on)
         VALUES (true, $1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET email_to = $1, email_tenant_id = $2,
                app_secret_expires_on = $3, updated_at = now()",
        s.email_to.as_deref(),
        s.email_tenant_id as Option<TenantId>,
        s.app_secret_expires_on
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Sets a device's silence alert: `None` turns it off.
pub async fn set_device_silence(
    pool: &PgPool,
    tenant_id: TenantId,
    device_id: DeviceId,
    hours: Option<i32>,
) -> Result<bool, sqlx::Error> {
    sqlx::query!(
        "UPDATE devices SET silent_alert_hours = $3 WHERE id = $2 AND tenant_id = $1",
        tenant_id as TenantId,
        device_id as DeviceId,
        hours
    )
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// The silence a device of `kind` is suggested to alert after, in hours: a fax or
/// lab system sends every day, a scanner perhaps once a week.
pub fn suggested_silence_hours(device_kind: &str) -> i32 {
    match device_kind {
        "medical" | "software" => 24,
        "printer" => 72,
        "scanner" => 168,
        _ => 72,
    }
}

/// Records the expiry of a certificate a process serves or presents (`name`:
/// `edge` or `entra_app`), for the expiry alerts.
pub async fn report_certificate(
    pool: &PgPool,
    name: &str,
    host: &str,
    not_after_unix: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO certificate_expiries (name, host, not_after, reported_at)
         VALUES ($1, $2, to_timestamp($3), now())
         ON CONFLICT (name, host) DO UPDATE SET not_after = EXCLUDED.not_after, reported_at = now()",
        name,
        host,
        not_after_unix as f64
    )
    .execute(pool)
    .await
    .map(drop)
}

/// A condition that holds now: what an open alert of its (kind, subject) shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kind: Kind,
    pub subject: String,
    pub tenant_id: Option<TenantId>,
    pub device_id: Option<DeviceId>,
    pub severity: &'static str,
    pub facts: Value,
}

/// An alert as stored.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Alert {
    pub id: Uuid,
    pub kind: String,
    pub subject: String,
    pub tenant_id: Option<TenantId>,
    pub device_id: Option<DeviceId>,
    pub severity: String,
    #[schema(value_type = Object)]
    pub facts: Value,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
}

const ALERT_COLUMNS: &str = "id, kind, subject, tenant_id, device_id, severity, facts, opened_at, updated_at, resolved_at, acknowledged_at, acknowledged_by";

impl Alert {
    pub fn kind(&self) -> Option<Kind> {
        Kind::parse(&self.kind)
    }

    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }

    fn fact(&self, name: &str) -> String {
        match self.facts.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "—".to_owned(),
            Some(other) => other.to_string(),
        }
    }

    /// The customer's name as it was when the alert was raised.
    pub fn customer_name(&self) -> Option<String> {
        self.facts
            .get("customer")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn device_name(&self) -> Option<String> {
        self.facts
            .get("device")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn title(&self, lang: Lang) -> &'static str {
        self.kind()
            .map_or("?", |k| i18n::translate(lang, k.title()))
    }

    /// What is the matter, in a sentence, in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        let Some(kind) = self.kind() else {
            return self.facts.to_string();
        };
        let english = match kind {
            Kind::DeviceSilent => tr!(
                "{device} ({customer}) has not logged in to send mail for more than {hours} hours; last seen {last_seen_at}."
            ),
            Kind::DeviceLockout => tr!(
                "{device} ({customer}) is locked out after wrong passwords until {locked_until} (last from {source})."
            ),
            Kind::CustomerToken => tr!(
                "Microsoft refuses tokens for {customer}: {error}. Its messages wait; renew the admin consent or check the customer's settings."
            ),
            Kind::Refusals => tr!(
                "Microsoft refused {count} messages of {customer} for good in the last {window_minutes} minutes ({basic_auth} with 5.7.30). Last answer: {last}"
            ),
            Kind::QueueAge => tr!(
                "{waiting} messages of {customer} are waiting; the oldest since {oldest} (more than {minutes} minutes)."
            ),
            Kind::BounceRate => tr!(
                "{percent} % of {customer}'s {messages} messages in the last {window_minutes} minutes bounced or failed."
            ),
            Kind::AppCredential if self.fact("credential") == "certificate" => tr!(
                "The MSP app's certificate expires {expires}. Renew it in Entra ID and give mailbridge the new one before then."
            ),
            Kind::AppCredential => tr!(
                "The MSP app's client secret expires {expires}. Renew it in Entra ID and give mailbridge the new one before then."
            ),
            Kind::EdgeCertificate => tr!(
                "The TLS certificate the edge {host} serves expires {expires}. Renew it before devices refuse it."
            ),
        };
        let facts: Vec<(&str, String)> = [
            "device",
            "customer",
            "hours",
            "last_seen_at",
            "locked_until",
            "source",
            "error",
            "count",
            "window_minutes",
            "basic_auth",
            "last",
            "waiting",
            "oldest",
            "minutes",
            "percent",
            "messages",
            "expires",
            "host",
        ]
        .into_iter()
        .map(|name| (name, self.fact(name)))
        .collect();
        let values: Vec<(&str, &dyn std::fmt::Display)> = facts
            .iter()
            .map(|(name, value)| (*name, value as &dyn std::fmt::Display))
            .collect();
        i18n::format(lang, english, &values)
    }
}

fn when(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |t| {
        Value::String(t.format("%Y-%m-%d %H:%M UTC").to_string())
    })
}

fn expiry_severity(not_after: DateTime<Utc>) -> &'static str {
    if not_after < Utc::now() + chrono::Duration::days(3) {
        "critical"
    } else {
        "warning"
    }
}

/// Every condition that holds now under `rules`.
pub async fn conditions(
    executor: &mut sqlx::PgConnection,
    rules: &[Rule],
) -> Result<Vec<Condition>, sqlx::Error> {
    let rule = |kind: Kind| rules.iter().find(|r| r.kind == kind.as_str() && r.enabled);
    let mut found = Vec::new();
    if rule(Kind::DeviceSilent).is_some() {
        // A device silent for longer than its alert allows.
        let rows = sqlx::query!(
            r#"SELECT d.id, d.tenant_id, d.name AS device, t.name AS customer,
                      d.silent_alert_hours AS "hours!", d.last_seen_at
                 FROM devices d JOIN tenants t ON t.id = d.tenant_id
                WHERE d.enabled AND d.silent_alert_hours IS NOT NULL
                  AND coalesce(d.last_seen_at, d.created_at) < now() - make_interval(hours => d.silent_alert_hours)"#
        )
        .fetch_all(&mut *executor)
        .await?;
        found.extend(rows.into_iter().map(|r| Condition {
            kind: Kind::DeviceSilent,
            subject: r.id.to_string(),
            tenant_id: Some(r.tenant_id.into()),
            device_id: Some(r.id.into()),
            severity: "warning",
            facts: json!({"device": r.device, "customer": r.customer, "hours": r.hours,
                          "last_seen_at": when(r.last_seen_at)}),
        }));
    }
    if rule(Kind::DeviceLockout).is_some() {
        let rows = sqlx::query!(
            r#"SELECT DISTINCT ON (d.id) d.id, d.tenant_id, d.name AS device, t.name AS customer,
                      f.locked_until AS "locked_until!", host(f.last_source) AS "source!"
                 FROM login_failures f
                 JOIN devices d ON d.username = f.username
                 JOIN tenants t ON t.id = d.tenant_id
                WHERE f.scope IN ('pair', 'username') AND f.locked_until > now()
                ORDER BY d.id, f.locked_until DESC"#
        )
        .fetch_all(&mut *executor)
        .await?;
        found.extend(rows.into_iter().map(|r| Condition {
            kind: Kind::DeviceLockout,
            subject: r.id.to_string(),
            tenant_id: Some(r.tenant_id.into()),
            device_id: Some(r.id.into()),
            severity: "warning",
            facts: json!({"device": r.device, "customer": r.customer,
                          "locked_until": when(Some(r.locked_until)), "source": r.source}),
        }));
    }
    if rule(Kind::CustomerToken).is_some() {
        let rows = sqlx::query!(
            r#"SELECT t.id, t.name,
                      coalesce((SELECT h.reason || CASE WHEN h.detail <> '' THEN ': ' || h.detail ELSE '' END
                                  FROM delivery_holds h
                                 WHERE h.scope = 'customer' AND h.tenant_id = t.id
                                 ORDER BY h.since LIMIT 1),
                               t.last_token_error, 'token refused') AS "error!"
                 FROM tenants t
                WHERE t.entra_tenant_id IS NOT NULL
                  AND ((t.last_token_error_at IS NOT NULL
                        AND t.last_token_error_at > coalesce(t.last_token_ok_at, '-infinity'))
                       OR EXISTS (SELECT 1 FROM delivery_holds h
                                   WHERE h.scope = 'customer' AND h.tenant_id = t.id))"#
        )
        .fetch_all(&mut *executor)
        .await?;
        found.extend(rows.into_iter().map(|r| Condition {
            kind: Kind::CustomerToken,
            subject: r.id.to_string(),
            tenant_id: Some(r.id.into()),
            device_id: None,
            severity: "critical",
            facts: json!({"customer": r.name, "error": r.error}),
        }));
    }
    if let Some(r) = rule(Kind::Refusals) {
        let rows: Vec<(Uuid, String, i64, i64, Option<String>)> = sqlx::query_as(
            "SELECT m.tenant_id, t.name, count(*),
                    count(*) FILTER (WHERE a.upstream_code LIKE '5.7.30%' OR a.upstream_message LIKE '%5.7.30%'),
                    (array_agg(concat_ws(' ', a.upstream_code, a.upstream_message) ORDER BY a.started_at DESC))[1]
               FROM delivery_attempts a
               JOIN messages m ON m.id = a.message_id
               JOIN tenants t ON t.id = m.tenant_id
              WHERE a.outcome = 'permanent' AND a.started_at > now() - make_interval(mins => $1)
                AND m.kind = 'device'
              GROUP BY m.tenant_id, t.name HAVING count(*) >= $2",
        )
        .bind(r.window_minutes)
        .bind(i64::from(r.threshold))
        .fetch_all(&mut *executor)
        .await?;
        found.extend(
            rows.into_iter()
                .map(|(id, customer, count, basic, last)| Condition {
                    kind: Kind::Refusals,
                    subject: id.to_string(),
                    tenant_id: Some(id.into()),
                    device_id: None,
                    severity: "critical",
                    facts: json!({"customer": customer, "count": count, "basic_auth": basic,
                                  "window_minutes": r.window_minutes, "last": last}),
                }),
        );
    }
    if let Some(r) = rule(Kind::QueueAge) {
        let rows: Vec<(Uuid, String, DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT m.tenant_id, t.name, min(m.received_at), count(*)
               FROM messages m JOIN tenants t ON t.id = m.tenant_id
              WHERE m.state = 'queued'
              GROUP BY m.tenant_id, t.name
             HAVING min(m.received_at) < now() - make_interval(mins => $1)",
        )
        .bind(r.threshold)
        .fetch_all(&mut *executor)
        .await?;
        found.extend(
            rows.into_iter()
                .map(|(id, customer, oldest, waiting)| Condition {
                    kind: Kind::QueueAge,
                    subject: id.to_string(),
                    tenant_id: Some(id.into()),
                    device_id: None,
                    severity: "warning",
                    facts: json!({"customer": customer, "oldest": when(Some(oldest)),
                                  "waiting": waiting, "minutes": r.threshold}),
                }),
        );
    }
    if let Some(r) = rule(Kind::BounceRate) {
        let rows = sqlx::query!(
            r#"SELECT u.tenant_id, t.name, sum(u.accepted)::bigint AS "messages!",
                      sum(u.bounced + u.failed)::bigint AS "bad!"
                 FROM usage_hours u JOIN tenants t ON t.id = u.tenant_id
                WHERE u.hour >= date_trunc('hour', now() - make_interval(mins => $1), 'UTC')
                GROUP BY u.tenant_id, t.name
               HAVING sum(u.accepted) >= $2::bigint
                  AND sum(u.bounced + u.failed) * 100 >= $3::bigint * sum(u.accepted)"#,
            r.window_minutes,
            BOUNCE_RATE_MIN_MESSAGES,
            i64::from(r.threshold)
        )
        .fetch_all(&mut *executor)
        .await?;
        found.extend(rows.into_iter().map(|row| Condition {
            kind: Kind::BounceRate,
            subject: row.tenant_id.to_string(),
            tenant_id: Some(row.tenant_id.into()),
            device_id: None,
            severity: "warning",
            facts: json!({"customer": row.name, "messages": row.messages, "not_delivered": row.bad,
                          "percent": row.bad * 100 / row.messages.max(1), "window_minutes": r.window_minutes}),
        }));
    }
    if let Some(r) = rule(Kind::AppCredential) {
        let certificate: Option<DateTime<Utc>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT min(not_after) FROM certificate_expiries
              WHERE name = 'entra_app' AND reported_at > now() - interval '{REPORT_FRESH_FOR}'"
        )))
        .fetch_one(&mut *executor)
        .await?;
        let secret: Option<NaiveDate> =
            sqlx::query_scalar!("SELECT app_secret_expires_on FROM alert_settings")
                .fetch_optional(&mut *executor)
                .await?
                .flatten();
        let soon = Utc::now() + chrono::Duration::days(r.threshold.into());
        let secret = secret
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc());
        for (credential, expiry) in [("certificate", certificate), ("secret", secret)] {
            if let Some(expiry) = expiry.filter(|e| *e < soon) {
                found.push(Condition {
                    kind: Kind::AppCredential,
                    subject: credential.to_owned(),
                    tenant_id: None,
                    device_id: None,
                    severity: expiry_severity(expiry),
                    facts: json!({"credential": credential, "expires": when(Some(expiry))}),
                });
            }
        }
    }
    if let Some(r) = rule(Kind::EdgeCertificate) {
        let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT host, not_after FROM certificate_expiries
              WHERE name = 'edge' AND reported_at > now() - interval '{REPORT_FRESH_FOR}'
                AND not_after < now() + make_interval(days => $1)"
        )))
        .bind(r.threshold)
        .fetch_all(&mut *executor)
        .await?;
        found.extend(rows.into_iter().map(|(host, not_after)| Condition {
            kind: Kind::EdgeCertificate,
            subject: host.clone(),
            tenant_id: None,
            device_id: None,
            severity: expiry_severity(not_after),
            facts: json!({"host": host, "expires": when(Some(not_after))}),
        }));
    }
    Ok(found)
}

/// What happened to an alert, as events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Transition {
    Opened,
    Updated,
    Resolved,
    Acknowledged,
}

impl Transition {
    pub fn event_type(self) -> &'static str {
        match self {
            Transition::Opened => "alert.opened",
            Transition::Updated => "alert.updated",
            Transition::Resolved => "alert.resolved",
            Transition::Acknowledged => "alert.acknowledged",
        }
    }
}

/// What one evaluation changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evaluated {
    pub opened: u64,
    pub updated: u64,
    pub resolved: u64,
}

/// How alert events reach the MSP besides the pages: the control plane's address
/// (for links), and the fallback address for alert e-mails.
#[derive(Debug, Clone)]
pub struct Channels {
    pub public_url: String,
    pub fallback_email: Option<String>,
    pub key: crate::crypto::MasterKey,
}

/// Runs the evaluation if no other process is running it and it has not run
/// within `interval`; `None` when it was not this process's turn.
pub async fn evaluate_if_due(
    pool: &PgPool,
    interval: std::time::Duration,
    channels: &Channels,
) -> Result<Option<Evaluated>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        EVALUATION_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO housekeeping AS h (job, last_run_at) VALUES ('alerts', now())
           ON CONFLICT (job) DO UPDATE SET last_run_at = now(), runs = h.runs + 1
            WHERE h.last_run_at < now() - $1::interval * 0.9
           RETURNING true AS "claimed!""#,
        interval as _
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !claimed {
        return Ok(None);
    }
    let evaluated = evaluate(&mut tx, channels).await?;
    tx.commit().await?;
    Ok(Some(evaluated))
}

/// Opens, updates and resolves alerts to match the conditions now, in `tx`, with
/// their events.
async fn evaluate(
    tx: &mut Transaction<'_, Postgres>,
    channels: &Channels,
) -> Result<Evaluated, sqlx::Error> {
    let rules = sqlx::query_as!(
        Rule,
        "SELECT kind, enabled, threshold, window_minutes FROM alert_rules"
    )
    .fetch_all(&mut **tx)
    .await?;
    let now = conditions(tx, &rules).await?;
    let open: Vec<Alert> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE resolved_at IS NULL FOR UPDATE"
    )))
    .fetch_all(&mut **tx)
    .await?;
    let mut open: HashMap<(String, String), Alert> = open
        .into_iter()
        .map(|a| ((a.kind.clone(), a.subject.clone()), a))
        .collect();
    let mut done = Evaluated::default();
    for c in now {
        match open.remove(&(c.kind.as_str().to_owned(), c.subject.clone())) {
            None => {
                let alert: Alert = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO alerts (kind, subject, tenant_id, device_id, severity, facts)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {ALERT_COLUMNS}"
                )))
                .bind(c.kind.as_str())
                .bind(&c.subject)
                .bind(c.tenant_id)
                .bind(c.device_id)
                .bind(c.severity)
                .bind(&c.facts)
                .fetch_one(&mut **tx)
                .await?;
                announce(tx, channels, &alert, Transition::Opened).await?;
                done.opened += 1;
            }
            Some(alert) if alert.facts != c.facts || alert.severity != c.severity => {
                let updated: Alert = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "UPDATE alerts SET facts = $2, severity = $3, updated_at = now()
                      WHERE id = $1 RETURNING {ALERT_COLUMNS}"
                )))
                .bind(alert.id)
                .bind(&c.facts)
                .bind(c.severity)
                .fetch_one(&mut **tx)
                .await?;
                // Only a change of severity is news; new numbers are on the pages.
                if alert.severity != c.severity {
                    announce(tx, channels, &updated, Transition::Updated).await?;
                }
                done.updated += 1;
            }
            Some(_) => {}
        }
    }
    for alert in open.into_values() {
        let resolved: Alert = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE alerts SET resolved_at = now(), updated_at = now() WHERE id = $1 RETURNING {ALERT_COLUMNS}"
        )))
        .bind(alert.id)
        .fetch_one(&mut **tx)
        .await?;
        announce(tx, channels, &resolved, Transition::Resolved).await?;
        done.resolved += 1;
    }
    Ok(done)
}

/// Writes an alert's event for every enabled webhook, and (opened or resolved) its
/// e-mail into the queue, in `tx`.
async fn announce(
    tx: &mut Transaction<'_, Postgres>,
    channels: &Channels,
    alert: &Alert,
    transition: Transition,
) -> Result<(), sqlx::Error> {
    let event = webhooks::Event::of_alert(alert, transition, &channels.public_url);
    webhooks::enqueue_event(&mut **tx, &event).await?;
    if matches!(transition, Transition::Opened | Transition::Resolved) {
        crate::alert_mail::queue(tx, channels, alert, &event).await?;
    }
    Ok(())
}

/// Acknowledges an open alert (someone is on it): the event goes to the webhooks.
/// Returns the alert, or `None` if there is no such open alert.
pub async fn acknowledge(
    pool: &PgPool,
    id: Uuid,
    by: &str,
    public_url: &str,
) -> Result<Option<Alert>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let alert: Option<Alert> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $2
          WHERE id = $1 AND resolved_at IS NULL AND acknowledged_at IS NULL
         RETURNING {ALERT_COLUMNS}"
    )))
    .bind(id)
    .bind(by)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(alert) = &alert {
        let event = webhooks::Event::of_alert(alert, Transition::Acknowledged, public_url);
        webhooks::enqueue_event(&mut *tx, &event).await?;
    }
    tx.commit().await?;
    Ok(alert)
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant_id: Option<TenantId>,
    pub device_id: Option<DeviceId>,
    /// Only open ones.
    pub open: bool,
    /// Limited to these customers (MSP-wide alerts included); `None`: all.
    pub only: Option<Vec<TenantId>>,
}

/// Alerts, open first, newest first; at most 200.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Alert>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts
          WHERE ($1::uuid IS NULL OR tenant_id = $1)
            AND ($2::uuid IS NULL OR device_id = $2)
            AND (NOT $3 OR resolved_at IS NULL)
            AND ($4::uuid[] IS NULL OR tenant_id IS NULL OR tenant_id = ANY($4))
          ORDER BY resolved_at IS NOT NULL, opened_at DESC LIMIT 200"
    )))
    .bind(filter.tenant_id)
    .bind(filter.device_id)
    .bind(filter.open)
    .bind(filter.only.clone())
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Alert>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// What the purge removed of this module's tables.
#[derive(Debug, Default)]
pub struct Outlived {
    pub usage_hours: u64,
    pub alerts: u64,
    pub webhook_outbox: u64,
    pub webhook_deliveries: u64,
}

/// The purge's share: usage hours rolled into days, resolved alerts past
/// `retention`, finished outbox rows after a week, and all but the last 100
/// deliveries of each webhook.
pub async fn purge(pool: &PgPool, retention: std::time::Duration) -> Result<Outlived, sqlx::Error> {
    let usage_hours = crate::usage::roll_up(pool).await?;
    let alerts = sqlx::query!(
        "DELETE FROM alerts WHERE resolved_at < now() - $1::interval",
        retention as _
    )
    .execute(pool)
    .await?
    .rows_affected();
    let webhook_outbox = sqlx::query!(
        "DELETE FROM webhook_outbox WHERE state <> 'pending' AND finished_at < now() - interval '7 days'"
    )
    .execute(pool)
    .await?
    .rows_affected();
    let webhook_deliveries = sqlx::query!(
        "DELETE FROM webhook_deliveries d USING (
             SELECT id, row_number() OVER (PARTITION BY webhook_id ORDER BY id DESC) AS n
               FROM webhook_deliveries) o
          WHERE d.id = o.id AND o.n > 100"
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(Outlived {
        usage_hours,
        alerts,
        webhook_outbox,
        webhook_deliveries,
    })
}
