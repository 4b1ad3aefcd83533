//! Least privilege per customer: the permission mode of the Graph path ("limited" to
//! the sender mailbox with Exchange Online RBAC for Applications, or "tenant-wide"
//! Entra application permissions), what the consent check learnt from the tenant's
//! tokens (the service principal's object id, tenant-wide mail roles), the proof that
//! the Exchange grant works (a message sent as the sender mailbox accepted), and the
//! Exchange Online PowerShell script the customer's admin runs for the limited mode.
//!
//! A customer without a row (created before this existed, or by the CLI) is
//! tenant-wide: that is how it was onboarded.

use crate::ids::MessageId;
use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    i18n::{self, Lang},
    own_mail::OwnMail,
    queue::{self, MessageKind, NewMessage},
    tenants::{DeliveryMethod, Tenant},
};

/// How the MSP app may reach a customer's mailboxes on the Graph path.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PermissionMode {
    /// No tenant-wide mail permission; RBAC for Applications scoped to the sender
    /// mailbox (recommended).
    Limited,
    /// Entra application permissions for every mailbox of the tenant (quick).
    TenantWide,
}

impl PermissionMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for PermissionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "limited" => Ok(Self::Limited),
            "tenant_wide" | "tenant-wide" => Ok(Self::TenantWide),
            other => Err(format!(
                "unknown permission mode {other:?} (expected limited or tenant_wide)"
            )),
        }
    }
}

/// The tenant-wide mail app roles a token may carry, and what each allows on every
/// mailbox of the tenant.
pub const TENANT_WIDE_MAIL_ROLES: &[&str] = &[
    "Mail.Send",
    "Mail.ReadWrite",
    "Mail.Read",
    "Mail.ReadBasic",
    "Mail.ReadBasic.All",
];

/// A customer's permissions as recorded.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Permissions {
    pub tenant_id: TenantId,
    pub mode: PermissionMode,
    pub service_principal_id: Option<Uuid>,
    pub tenant_wide_roles: Vec<String>,
    pub roles_seen_at: Option<DateTime<Utc>>,
    pub exchange_verified_at: Option<DateTime<Utc>>,
    pub verification_message_id: Option<Uuid>,
}

impl Permissions {
    /// What a customer without a row has: tenant-wide, nothing seen yet.
    pub fn unrecorded(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            mode: PermissionMode::TenantWide,
            service_principal_id: None,
            tenant_wide_roles: Vec::new(),
            roles_seen_at: None,
            exchange_verified_at: None,
            verification_message_id: None,
        }
    }

    /// Limited mode on the Graph path (on the SMTP path the mode does not apply: the
    /// app reaches only mailboxes that granted it FullAccess/SendAs).
    pub fn limited_on_graph(&self, tenant: &Tenant) -> bool {
        self.mode == PermissionMode::Limited && tenant.delivery_method == DeliveryMethod::Graph
    }
}

const COLUMNS: &str = "tenant_id, mode, service_principal_id, tenant_wide_roles, roles_seen_at, \
                       exchange_verified_at, verification_message_id";

/// A customer's permissions (tenant-wide when never recorded).
pub async fn get(pool: &PgPool, tenant_id: TenantId) -> Result<Permissions, sqlx::Error> {
    let row: Option<Permissions> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenant_permissions WHERE tenant_id = $1"
    )))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or_else(|| Permissions::unrecorded(tenant_id)))
}

/// The recorded permissions of the customers `tenant_ids` (a page of the overview);
/// customers without a row are left out (tenant-wide, see [`Permissions::unrecorded`]).
pub async fn of_customers(
    pool: &PgPool,
    tenant_ids: &[TenantId],
) -> Result<Vec<Permissions>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenant_permissions WHERE tenant_id = ANY($1)"
    )))
    .bind(tenant_ids)
    .fetch_all(pool)
    .await
}

/// Sets a customer's mode. Changing it forgets the Exchange proof (it proved the
/// other mode's setup).
pub async fn set_mode(
    pool: &PgPool,
    tenant_id: TenantId,
    mode: PermissionMode,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO tenant_permissions (tenant_id, mode) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET mode = EXCLUDED.mode,
                exchange_verified_at = CASE WHEN tenant_permissions.mode = EXCLUDED.mode
                                            THEN tenant_permissions.exchange_verified_at END,
                verification_message_id = CASE WHEN tenant_permissions.mode = EXCLUDED.mode
                                               THEN tenant_permissions.verification_message_id END",
        tenant_id as TenantId,
        mode as PermissionMode
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Records what a Graph token for the customer's tenant showed: the service
/// principal's object id (`oid`) and its tenant-wide mail roles.
pub async fn record_token(
    pool: &PgPool,
    tenant_id: TenantId,
    service_principal_id: Option<Uuid>,
    roles: &[String],
) -> Result<(), sqlx::Error> {
    let mail_roles: Vec<String> = roles
        .iter()
        .filter(|r| TENANT_WIDE_MAIL_ROLES.contains(&r.as_str()))
        .cloned()
        .collect();
    sqlx::query!(
        "INSERT INTO tenant_permissions (tenant_id, mode, service_principal_id, tenant_wide_roles, roles_seen_at)
         VALUES ($1, 'tenant_wide', $2, $3, now())
         ON CONFLICT (tenant_id) DO UPDATE SET
                service_principal_id = coalesce(EXCLUDED.service_principal_id, tenant_permissions.service_principal_id),
                tenant_wide_roles = EXCLUDED.tenant_wide_roles, roles_seen_at = now()",
        tenant_id as TenantId,
        service_principal_id,
        &mail_roles
    )
    .execute(pool)
    .await
    .map(drop)
}

/// A message was accepted as the customer's sender mailbox: in limited mode that
/// proves the Exchange grant (once; later calls change nothing).
pub async fn record_exchange_proof(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE tenant_permissions SET exchange_verified_at = now()
          WHERE tenant_id = $1 AND mode = 'limited' AND exchange_verified_at IS NULL",
        tenant_id as TenantId
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Queues the verification message of a limited customer: sent as the sender mailbox
/// to itself (a `test` message, so a failure notifies nobody). It waits, like every
/// message of the customer, while Graph refuses the mailbox (`ErrorAccessDenied`: the
/// script not run yet) and goes once the Exchange grant works. At most one is queued
/// per customer until it is proved; returns its id when one was queued now.
pub async fn queue_verification(
    pool: &PgPool,
    key: &MasterKey,
    tenant: &Tenant,
    hostname: &str,
) -> Result<Option<MessageId>, sqlx::Error> {
    let id = MessageId::now();
    let claimed = sqlx::query(
        "UPDATE tenant_permissions SET verification_message_id = $2
          WHERE tenant_id = $1 AND mode = 'limited' AND exchange_verified_at IS NULL
            AND (verification_message_id IS NULL
                 OR NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = verification_message_id
                                   AND m.state = 'queued'))",
    )
    .bind(tenant.id)
    .bind(id)
    .execute(pool)
    .await?;
    if claimed.rows_affected() != 1 {
        return Ok(None);
    }
    let text = [Lang::En, Lang::De]
        .map(|lang| {
            i18n::format(
                lang,
                "mailbridge sent this message as {mailbox} to check that Exchange Online lets it send as this mailbox\n(RBAC for Applications, limited to the sender mailbox). It can be deleted.\n",
                &[("mailbox", &tenant.sender_mailbox)],
            )
        })
        .join("\n");
    let subject = "mailbridge: Exchange permission check";
    let body = match (OwnMail {
        id,
        host: hostname,
        from: &tenant.sender_mailbox,
        from_name: None,
        to: &tenant.sender_mailbox,
        subject,
        text,
        auto_submitted: false,
    })
    .build()
    {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, tenant = %tenant.id, "cannot write the Exchange permission check");
            return Ok(None);
        }
    };
    queue::enqueue(
        pool,
        key,
        &NewMessage {
            id,
            tenant_id: tenant.id,
            device_id: None,
            mail_from: tenant.sender_mailbox.clone(),
            rcpt_to: vec![tenant.sender_mailbox.clone()],
            client_addr: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Test,
            subject: Some(subject.to_owned()),
            body,
        },
    )
    .await?;
    Ok(Some(id))
}

/// What the script is filled with.
#[derive(Debug, Clone)]
pub struct ScriptInput<'a> {
    pub customer: &'a str,
    pub app_id: &'a str,
    pub service_principal_id: Uuid,
    pub sender_mailbox: &'a str,
}

/// A name Exchange accepts for a scope or assignment: letters, digits, spaces, dots
/// and hyphens of the customer's name, at most 40 characters.
fn object_name(customer: &str) -> String {
    let cleaned: String = customer
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let short: String = cleaned.chars().take(40).collect();
    format!("mailbridge {}", short.trim())
}

/// A PowerShell single-quoted string.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The Exchange Online PowerShell script for a limited customer, ready to paste.
pub fn exchange_script(input: &ScriptInput<'_>, lang: Lang) -> String {
    let c = |text: &str| text.lines().map(|l| format!("# {l}\n")).collect::<String>();
    let name = object_name(input.customer);
    let scope = format!("{name} sender mailbox");
    let mailbox = input.sender_mailbox.to_ascii_lowercase();
    let filter = format!("PrimarySmtpAddress -eq {}", quoted(&mailbox));
    let mut script = String::new();
    script.push_str(&c(&i18n::format(
        lang,
        "mailbridge: allow the relay to use ONLY the sender mailbox {mailbox}\n(Exchange Online RBAC for Applications). Run as an Exchange administrator.",
        &[("mailbox", &mailbox)],
    )));
    script.push_str(&c(i18n::translate(
        lang,
        "Needs the ExchangeOnlineManagement module: Install-Module ExchangeOnlineManagement",
    )));
    script.push_str("Connect-ExchangeOnline\n\n");
    script.push_str(&c(i18n::translate(
        lang,
        "1. Make the app's enterprise application (service principal) known to Exchange.",
    )));
    script.push_str(&format!(
        "New-ServicePrincipal -AppId {} -ObjectId {} -DisplayName {}\n\n",
        quoted(input.app_id),
        quoted(&input.service_principal_id.to_string()),
        quoted(&name)
    ));
    script.push_str(&c(i18n::translate(
        lang,
        "2. A management scope that contains only the sender mailbox.",
    )));
    script.push_str(&format!(
        "New-ManagementScope -Name {} -RecipientRestrictionFilter \"{}\"\n\n",
        quoted(&scope),
        filter.replace('"', "`\"")
    ));
    script.push_str(&c(i18n::translate(
        lang,
        "3. Send as the sender mailbox (Graph sendMail), limited to that scope.",
    )));
    script.push_str(&format!(
        "New-ManagementRoleAssignment -App {} -Role 'Application Mail.Send' -CustomResourceScope {}\n\n",
        quoted(input.app_id),
        quoted(&scope)
    ));
    script.push_str(&c(i18n::translate(
        lang,
        "4. Read and write the sender mailbox's messages, limited to that scope: needed for\nmessages over 4 MB (sent through a draft with an upload) and to file Microsoft's\nbounce reports (NDRs) away in the sender mailbox.",
    )));
    script.push_str(&format!(
        "New-ManagementRoleAssignment -App {} -Role 'Application Mail.ReadWrite' -CustomResourceScope {}\n\n",
        quoted(input.app_id),
        quoted(&scope)
    ));
    script.push_str(&c(i18n::translate(
        lang,
        "5. Check: every line should show InScope True for the sender mailbox.\nExchange can take up to two hours to apply new assignments (its permission cache);\nmailbridge keeps trying and marks the customer connected once a message goes through.",
    )));
    script.push_str(&format!(
        "Test-ServicePrincipalAuthorization -Identity {} -Resource {} | Format-Table\n",
        quoted(input.app_id),
        quoted(&mailbox)
    ));
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ScriptInput<'static> {
        ScriptInput {
            customer: "Praxis Dr. O'Brien & Partner",
            app_id: "11111111-2222-3333-4444-555555555555",
            service_principal_id: Uuid::nil(),
            sender_mailbox: "Scanner@Praxis.example",
        }
    }

    #[test]
    fn the_script_names_the_app_its_service_principal_and_only_the_sender_mailbox() {
        let script = exchange_script(&input(), Lang::En);
        assert!(script.contains(
            "New-ServicePrincipal -AppId '11111111-2222-3333-4444-555555555555' -ObjectId '00000000-0000-0000-0000-000000000000'"
        ));
        assert!(script.contains(
            "-RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'scanner@praxis.example'\""
        ));
        assert!(script.contains("-Role 'Application Mail.Send' -CustomResourceScope 'mailbridge Praxis Dr. O Brien Partner sender mailbox'"));
        assert!(script.contains("-Role 'Application Mail.ReadWrite'"));
        assert!(script.contains("Test-ServicePrincipalAuthorization"));
        let german = exchange_script(&input(), Lang::De);
        assert!(
            german.contains("# 2. Ein Verwaltungsbereich, der nur das Absender-Postfach enthält.")
        );
        assert_eq!(
            script.lines().filter(|l| !l.starts_with('#')).count(),
            german.lines().filter(|l| !l.starts_with('#')).count()
        );
    }

    #[test]
    fn modes_are_parsed() {
        assert_eq!("limited".parse(), Ok(PermissionMode::Limited));
        assert_eq!("tenant-wide".parse(), Ok(PermissionMode::TenantWide));
        assert!("all".parse::<PermissionMode>().is_err());
    }
}
