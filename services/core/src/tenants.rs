//! Tenants: the MSP's customers, one Microsoft 365 (Entra) tenant each, with the
//! mailbox mail is sent as and how it is delivered. Every query about a customer's
//! data starts from a tenant id.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::{
    address::{EmailAddress, InvalidAddress},
    crypto::{CryptoError, MasterKey},
    ids::EntraTenantId,
};

/// How a tenant's mail reaches Microsoft 365.
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
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeliveryMethod {
    /// Microsoft Graph `sendMail` (MIME): needs only admin consent.
    Graph,
    /// SMTP AUTH with XOAUTH2 to Exchange Online.
    Smtp,
}

impl DeliveryMethod {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for DeliveryMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "graph" => Ok(Self::Graph),
            "smtp" => Ok(Self::Smtp),
            other => Err(format!(
                "unknown delivery method {other:?} (expected graph or smtp)"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// The customer's Entra tenant; `None` until it is connected by admin consent.
    #[schema(value_type = Option<Uuid>)]
    pub entra_tenant_id: Option<EntraTenantId>,
    pub sender_mailbox: String,
    pub delivery_method: DeliveryMethod,
    pub save_to_sent_items: bool,
    /// The customer's own app registration, when it has one.
    pub client_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Where reports of undeliverable messages go.
    pub notification_address: Option<String>,
    pub last_token_error: Option<String>,
    pub last_token_error_at: Option<DateTime<Utc>>,
    pub last_token_ok_at: Option<DateTime<Utc>>,
    /// Graph-delivered, but messages over Graph's 4 MB request limit go by SMTP.
    pub smtp_for_large_messages: bool,
    /// When an admin consent was last verified with a real token request.
    pub consented_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: Option<i32>,
    /// The largest message the customer's devices may send: its sender mailbox's
    /// maximum send size in Exchange Online (35 MB unless raised, at most 150 MB).
    pub max_message_bytes: i64,
}

/// Exchange Online's default maximum send size per mailbox: 35 MB.
pub const DEFAULT_MAX_MESSAGE_BYTES: i64 = 35 * 1024 * 1024;
/// The most an Exchange Online admin can raise a mailbox's send size to: 150 MB.
pub const LARGEST_MAX_MESSAGE_BYTES: i64 = 150 * 1024 * 1024;
/// The least mailbridge takes as a customer's limit (Exchange's own lower bound).
pub const SMALLEST_MAX_MESSAGE_BYTES: i64 = 1024 * 1024;

/// How an app proves who it is to Entra ID.
#[derive(Debug, Clone)]
pub enum AppCredential {
    ClientSecret(SecretString),
    /// A certificate registered on the app and its private key, PEM (private_key_jwt).
    Certificate(CertificateCredential),
}

/// A certificate credential: the PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertificateCredential {
    pub certificate_pem: String,
    pub private_key_pem: SecretString,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .finish_non_exhaustive()
    }
}

/// A customer's own Entra app registration.
#[derive(Debug)]
pub struct OwnApp {
    pub client_id: String,
    pub credential: AppCredential,
}

#[derive(Debug)]
pub struct NewTenant {
    pub name: String,
    /// Known up front (CLI), or learnt from the admin consent (control plane).
    pub entra_tenant_id: Option<EntraTenantId>,
    pub sender_mailbox: String,
    pub delivery_method: DeliveryMethod,
    pub own_app: Option<OwnApp>,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("a customer named {0:?} already exists")]
    NameTaken(String),
    #[error("the customer name must be 1 to 200 characters")]
    InvalidName,
    #[error("sender mailbox: {0}")]
    InvalidMailbox(#[from] InvalidAddress),
    #[error("no customer {0:?}")]
    NotFound(String),
    #[error("the rate limit must be a positive number of messages per minute")]
    InvalidRateLimit,
    #[error(
        "the maximum message size must be 1 to 150 MB (Exchange Online: 35 MB unless the customer's admin raised the mailbox's send size)"
    )]
    InvalidMaxMessageSize,
    #[error("MAILBRIDGE_MASTER_KEY is needed to store a client secret")]
    NoMasterKey,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

macro_rules! columns {
    () => {
        "id, name, entra_tenant_id, sender_mailbox, delivery_method, save_to_sent_items, client_id, created_at, \
         notification_address, last_token_error, last_token_error_at, last_token_ok_at, \
         smtp_for_large_messages, consented_at, rate_limit_per_minute, max_message_bytes"
    };
}
pub(crate) use columns;

fn secret_context(tenant_id: TenantId) -> String {
    format!("tenant-client-secret:{tenant_id}")
}

fn certificate_context(tenant_id: TenantId) -> String {
    format!("tenant-client-certificate:{tenant_id}")
}

pub async fn create(
    pool: &PgPool,
    master_key: Option<&MasterKey>,
    new: NewTenant,
) -> Result<Tenant, TenantError> {
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(TenantError::InvalidName);
    }
    let mailbox = EmailAddress::parse(&new.sender_mailbox)?;
    let id = TenantId::from(Uuid::new_v4());
    let (client_id, secret, certificate) = match &new.own_app {
        Some(app) => {
            let key = master_key.ok_or(TenantError::NoMasterKey)?;
            match &app.credential {
                AppCredential::ClientSecret(secret) => {
                    let sealed = key.seal(&secret_context(id), secret.expose_secret().as_bytes());
                    (Some(app.client_id.clone()), Some(sealed), None)
                }
                AppCredential::Certificate(certificate) => {
                    let bundle = format!(
                        "{}\n{}",
                        certificate.certificate_pem.trim(),
                        certificate.private_key_pem.expose_secret().trim()
                    );
                    let sealed = key.seal(&certificate_context(id), bundle.as_bytes());
                    (Some(app.client_id.clone()), None, Some(sealed))
                }
            }
        }
        None => (None, None, None),
    };
    sqlx::query_as::<_, Tenant>(concat!(
        "INSERT INTO tenants (id, name, entra_tenant_id, sender_mailbox, delivery_method, client_id, client_secret_sealed, client_certificate_sealed)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(&name)
    .bind(new.entra_tenant_id)
    .bind(mailbox.as_str())
    .bind(new.delivery_method)
    .bind(client_id)
    .bind(secret)
    .bind(certificate)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("tenants_name_key") => {
            TenantError::NameTaken(name.clone())
        }
        _ => TenantError::Database(e),
    })
}

pub async fn get(pool: &PgPool, id: TenantId) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Finds a tenant by its id or its (unique) name, as the CLI accepts either.
pub async fn find(pool: &PgPool, name_or_id: &str) -> Result<Tenant, TenantError> {
    let by_id = match name_or_id.parse::<TenantId>() {
        Ok(id) => get(pool, id).await?,
        Err(_) => None,
    };
    let found = match by_id {
        Some(t) => Some(t),
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM tenants WHERE name = $1"
            ))
            .bind(name_or_id.trim())
            .fetch_optional(pool)
            .await?
        }
    };
    found.ok_or_else(|| TenantError::NotFound(name_or_id.to_owned()))
}

pub async fn list(pool: &PgPool) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants ORDER BY name"
    ))
    .fetch_all(pool)
    .await
}

/// The customers `ids` (those that exist), in no particular order.
pub async fn list_of(pool: &PgPool, ids: &[TenantId]) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Re-seals up to `limit` customers' own app secrets or certificates not sealed with
/// `key`'s current key; returns how many customers. Online, in its own transaction.
pub async fn reseal_secrets(
    pool: &PgPool,
    key: &MasterKey,
    limit: i64,
) -> Result<u64, TenantError> {
    let prefix = key.sealed_prefix();
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        "SELECT id, client_secret_sealed, client_certificate_sealed FROM tenants
          WHERE substring(client_secret_sealed FROM 1 FOR $1) <> $2
             OR substring(client_certificate_sealed FROM 1 FOR $1) <> $2
          ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
        prefix.len() as i32,
        prefix.as_slice(),
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let count = rows.len() as u64;
    for row in rows {
        let id = row.id;
        let reseal = |context: String, sealed: Option<Vec<u8>>| -> Result<_, CryptoError> {
            sealed
                .map(|s| Ok(key.seal(&context, &key.open(&context, &s)?)))
                .transpose()
        };
        let secret = reseal(secret_context(id.into()), row.client_secret_sealed)?;
        let certificate = reseal(
            certificate_context(id.into()),
            row.client_certificate_sealed,
        )?;
        sqlx::query!(
            "UPDATE tenants SET client_secret_sealed = $2, client_certificate_sealed = $3 WHERE id = $1",
            id,
            secret,
            certificate
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(count)
}

/// The tenant's own app credentials, unsealed, if it has its own app registration.
pub async fn own_app(
    pool: &PgPool,
    master_key: Option<&MasterKey>,
    tenant_id: TenantId,
) -> Result<Option<OwnApp>, TenantError> {
    struct SealedApp {
        client_id: Option<String>,
        client_secret_sealed: Option<Vec<u8>>,
        client_certificate_sealed: Option<Vec<u8>>,
    }
    let row = sqlx::query_as!(
        SealedApp,
        "SELECT client_id, client_secret_sealed, client_certificate_sealed FROM tenants WHERE id = $1",
        tenant_id as TenantId
    )
    .fetch_optional(pool)
    .await?;
    let Some(SealedApp {
        client_id: Some(client_id),
        client_secret_sealed: secret,
        client_certificate_sealed: certificate,
    }) = row
    else {
        return Ok(None);
    };
    let key = master_key.ok_or(TenantError::NoMasterKey)?;
    Ok(open_app(key, tenant_id, client_id, secret, certificate)?)
}

/// A tenant's own app from its sealed columns, opened with `key`; `None` when it
/// has a client id but neither a secret nor a certificate.
pub(crate) fn open_app(
    key: &MasterKey,
    tenant_id: TenantId,
    client_id: String,
    secret: Option<Vec<u8>>,
    certificate: Option<Vec<u8>>,
) -> Result<Option<OwnApp>, CryptoError> {
    let credential = match (secret, certificate) {
        (Some(sealed), _) => {
            let secret = key.open(&secret_context(tenant_id), &sealed)?;
            AppCredential::ClientSecret(SecretString::from(
                String::from_utf8_lossy(&secret).into_owned(),
            ))
        }
        (None, Some(sealed)) => {
            let bundle =
                String::from_utf8_lossy(&key.open(&certificate_context(tenant_id), &sealed)?)
                    .into_owned();
            let split = bundle.find("-----BEGIN").and_then(|first| {
                bundle[first + 1..]
                    .find("-----BEGIN")
                    .map(|second| first + 1 + second)
            });
            let (certificate_pem, private_key_pem) = match split {
                Some(at) => (bundle[..at].to_owned(), bundle[at..].to_owned()),
                None => (bundle.clone(), String::new()),
            };
            AppCredential::Certificate(CertificateCredential {
                certificate_pem,
                private_key_pem: SecretString::from(private_key_pem),
            })
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(OwnApp {
        client_id,
        credential,
    }))
}

/// Records that a token was issued for the tenant: consent works.
pub async fn record_token_success(pool: &PgPool, tenant_id: TenantId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET last_token_ok_at = now()
          WHERE id = $1 AND (last_token_ok_at IS NULL OR last_token_ok_at < now() - interval '1 minute'
                             OR last_token_error_at > last_token_ok_at)",
        tenant_id as TenantId
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Records that the token endpoint refused the tenant (what the customer page shows;
/// the hold that keeps its messages waiting is in `holds`).
pub async fn record_token_failure(
    pool: &PgPool,
    tenant_id: TenantId,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET last_token_error = $2, last_token_error_at = now() WHERE id = $1",
        tenant_id as TenantId,
        error
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Sets (or clears) where reports of undeliverable messages go.
pub async fn set_notification_address(
    pool: &PgPool,
    tenant_id: TenantId,
    address: Option<&str>,
) -> Result<(), TenantError> {
    let address = address.map(EmailAddress::parse).transpose()?;
    sqlx::query!(
        "UPDATE tenants SET notification_address = $2 WHERE id = $1",
        tenant_id as TenantId,
        address.as_ref().map(EmailAddress::as_str)
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Sets (or clears) the messages per minute all of a tenant's devices may send together.
pub async fn set_rate_limit(
    pool: &PgPool,
    tenant_id: TenantId,
    per_minute: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET rate_limit_per_minute = $2 WHERE id = $1",
        tenant_id as TenantId,
        per_minute
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Sets the largest message the customer's devices may send, in bytes: what its
/// sender mailbox's maximum send size in Exchange Online allows (1 to 150 MB).
pub async fn set_max_message_size(
    pool: &PgPool,
    tenant_id: TenantId,
    bytes: i64,
) -> Result<(), TenantError> {
    if !(SMALLEST_MAX_MESSAGE_BYTES..=LARGEST_MAX_MESSAGE_BYTES).contains(&bytes) {
        return Err(TenantError::InvalidMaxMessageSize);
    }
    sqlx::query!(
        "UPDATE tenants SET max_message_bytes = $2 WHERE id = $1",
        tenant_id as TenantId,
        bytes
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A size as an administrator writes it: bytes, or with `KB`, `MB` (binary, as
/// Exchange counts: `35MB` is 36,700,160 bytes) or `GB`.
pub fn parse_size(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: i64 = number.parse().ok()?;
    let factor: i64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1024,
        "MB" | "M" => 1024 * 1024,
        "GB" | "G" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Lets messages too large for a Graph request go by SMTP XOAUTH2 (the tenant's
/// Exchange must allow SMTP AUTH for the app).
pub async fn set_smtp_for_large_messages(
    pool: &PgPool,
    tenant_id: TenantId,
    enabled: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET smtp_for_large_messages = $2 WHERE id = $1",
        tenant_id as TenantId,
        enabled
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Whether Microsoft keeps a copy of each message in the sender mailbox's Sent Items.
pub async fn set_save_to_sent_items(
    pool: &PgPool,
    tenant_id: TenantId,
    save: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET save_to_sent_items = $2 WHERE id = $1",
        tenant_id as TenantId,
        save
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Connects a customer to its Entra tenant once an admin consent has been verified
/// with a real token request for that tenant.
pub async fn record_consent<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    tenant_id: TenantId,
    entra_tenant_id: EntraTenantId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET entra_tenant_id = $2, consented_at = now(), last_token_ok_at = now(),
                last_token_error = NULL
          WHERE id = $1",
        tenant_id as TenantId,
        entra_tenant_id.as_uuid()
    )
    .execute(executor)
    .await
    .map(drop)
}

/// How a customer's messages go to Microsoft 365.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub sender_mailbox: String,
    pub delivery_method: DeliveryMethod,
    pub save_to_sent_items: bool,
    pub smtp_for_large_messages: bool,
    pub notification_address: Option<String>,
    pub rate_limit_per_minute: Option<i32>,
}

/// Changes a customer's name and delivery settings, checking each value.
pub async fn update(
    pool: &PgPool,
    tenant_id: TenantId,
    name: &str,
    settings: &DeliverySettings,
) -> Result<Option<Tenant>, TenantError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(TenantError::InvalidName);
    }
    let mailbox = EmailAddress::parse(&settings.sender_mailbox)?;
    let notification = settings
        .notification_address
        .as_deref()
        .map(EmailAddress::parse)
        .transpose()?;
    if settings.rate_limit_per_minute.is_some_and(|r| r <= 0) {
        return Err(TenantError::InvalidRateLimit);
    }
    sqlx::query_as::<_, Tenant>(concat!(
        "UPDATE tenants SET name = $2, sender_mailbox = $3, delivery_method = $4,
                save_to_sent_items = $5, smtp_for_large_messages = $6,
                notification_address = $7, rate_limit_per_minute = $8
          WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(tenant_id)
    .bind(&name)
    .bind(mailbox.as_str())
    .bind(settings.delivery_method)
    .bind(settings.save_to_sent_items)
    .bind(settings.smtp_for_large_messages)
    .bind(notification.as_ref().map(EmailAddress::as_str))
    .bind(settings.rate_limit_per_minute)
    .fetch_optional(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("tenants_name_key") => {
            TenantError::NameTaken(name.clone())
        }
        _ => TenantError::Database(e),
    })
}

/// Binds the customer `id` to its Entra tenant when it has none yet. Whether it
/// was bound now; a tenant another customer has already is an error (unique).
pub async fn bind_entra_tenant(
    pool: &PgPool,
    id: TenantId,
    entra_tenant_id: EntraTenantId,
) -> Result<bool, sqlx::Error> {
    let bound = sqlx::query!(
        "UPDATE tenants SET entra_tenant_id = $2 WHERE id = $1 AND entra_tenant_id IS NULL",
        id as TenantId,
        entra_tenant_id.as_uuid()
    )
    .execute(pool)
    .await?;
    Ok(bound.rows_affected() == 1)
}

/// Deletes a customer with its devices and messages. Its queue rows go first, in
/// the same transaction and in the order settlement locks them (by message): the
/// cascade from the customer would lock log rows before their queue rows, the
/// reverse of settlement's order, and deadlock with deliveries settling at that
/// moment.
pub async fn delete(pool: &PgPool, tenant_id: TenantId) -> Result<bool, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query!(
        "DELETE FROM queue WHERE message_id IN (
             SELECT message_id FROM queue WHERE tenant_id = $1 ORDER BY message_id FOR UPDATE)",
        tenant_id as TenantId
    )
    .execute(&mut *transaction)
    .await?;
    let deleted = sqlx::query!("DELETE FROM tenants WHERE id = $1", tenant_id as TenantId)
        .execute(&mut *transaction)
        .await?
        .rows_affected()
        == 1;
    transaction.commit().await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_exchange_writes_them() {
        assert_eq!(parse_size("35MB"), Some(DEFAULT_MAX_MESSAGE_BYTES));
        assert_eq!(parse_size("150 mb"), Some(LARGEST_MAX_MESSAGE_BYTES));
        assert_eq!(parse_size("36700160"), Some(36_700_160));
        assert_eq!(parse_size("1024KB"), Some(SMALLEST_MAX_MESSAGE_BYTES));
        for bad in ["", "MB", "35 TB", "-1MB", "3.5MB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
