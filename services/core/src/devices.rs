//! Devices and their SMTP credentials. A device belongs to exactly one tenant; its
//! password is generated here, shown once, and stored only as an argon2id hash.
//!
//! Over 500 lines: it holds one table, `devices`: its types (kind, listener, allow-list
//! limits, sender policy, about 310 lines) and its 17 statements, from create and
//! authenticate to the migration import; splitting would scatter the table.

use crate::ids::DeviceId;
use crate::ids::TenantId;
use std::net::IpAddr;

use ipnet::IpNet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::crypto::{self, CryptoError};

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct Device {
    pub id: DeviceId,
    pub tenant_id: TenantId,
    pub name: String,
    pub username: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    #[schema(value_type = Vec<String>)]
    pub allowed_networks: Vec<IpNet>,
    pub allowed_senders: Vec<String>,
    pub sender_policy: SenderPolicy,
    pub rate_limit_per_minute: Option<i32>,
    pub kind: DeviceKind,
    pub site: Option<String>,
    pub listener: DeviceListener,
    /// Whether it may log in on the legacy-TLS listener (TLS 1.0/1.1, CBC suites).
    pub legacy_tls: bool,
    /// Its model family (a key of the model notes), when the technician picked one.
    pub model_family: Option<String>,
}

/// What kind of thing a device is: chooses the setup steps its card shows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeviceKind {
    Printer,
    Scanner,
    Medical,
    Software,
    Other,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// The listener a device is set up for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeviceListener {
    /// Port 587, STARTTLS, username and password.
    Submission,
    /// Port 465, implicit TLS, username and password.
    Submissions,
    /// Port 25, no login: identified by its allow-listed address.
    Relay,
}

impl DeviceListener {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// A new device with its password in clear: the only time the password exists.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = IssuedDevice)]
pub struct IssuedCredential {
    #[serde(flatten)]
    pub device: Device,
    pub password: String,
}

/// The widest networks a device's allow-list may hold: an allow-list names a site,
/// not the internet (`0.0.0.0/0` would let anyone send as a relay device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowListLimits {
    /// The shortest IPv4 prefix allowed (24: at most a /24).
    pub widest_v4: u8,
    /// The shortest IPv6 prefix allowed (56: at most a /56).
    pub widest_v6: u8,
}

impl Default for AllowListLimits {
    fn default() -> Self {
        Self {
            widest_v4: 24,
            widest_v6: 56,
        }
    }
}

impl AllowListLimits {
    /// The widest prefix allowed for `network`'s address family.
    pub fn widest_for(&self, network: &IpNet) -> u8 {
        match network {
            IpNet::V4(_) => self.widest_v4,
            IpNet::V6(_) => self.widest_v6,
        }
    }

    /// The first network of `networks` wider than allowed.
    pub fn too_wide<'a>(&self, networks: &'a [IpNet]) -> Option<&'a IpNet> {
        networks
            .iter()
            .find(|n| n.prefix_len() < self.widest_for(n))
    }

    /// Checks an allow-list, naming the network at fault.
    pub fn check(&self, networks: &[IpNet]) -> Result<(), DeviceError> {
        match self.too_wide(networks) {
            Some(network) => Err(DeviceError::AllowListTooWide {
                network: *network,
                widest: self.widest_for(network),
            }),
            None => Ok(()),
        }
    }
}

/// What a device may do once the edge knows who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// Networks it may connect from (empty: anywhere, with a password).
    pub allowed_networks: Vec<IpNet>,
    /// Sender addresses or `@domain`s it may use; the tenant's sender mailbox always.
    pub allowed_senders: Vec<String>,
    pub sender_policy: SenderPolicy,
    pub device_rate_limit: Option<i32>,
    pub tenant_rate_limit: Option<i32>,
    pub max_message_bytes: Option<i64>,
    /// The customer's largest message (its mailbox's maximum send size).
    pub tenant_max_message_bytes: i64,
    pub tenant_sender_mailbox: String,
    /// Whether it may log in on the legacy-TLS listener.
    pub legacy_tls: bool,
}

impl DevicePolicy {
    /// The largest message this device may send: the customer's limit, lowered by
    /// the device's own if it has one.
    pub fn max_message_bytes(&self) -> u64 {
        let tenant = self.tenant_max_message_bytes.max(0) as u64;
        self.max_message_bytes
            .map_or(tenant, |device| (device.max(0) as u64).min(tenant))
    }

    /// Whether `address` is a sender this device may use.
    pub fn allows_sender(&self, address: &str) -> bool {
        let address = address.trim().to_ascii_lowercase();
        if address == self.tenant_sender_mailbox.to_ascii_lowercase() {
            return true;
        }
        self.allowed_senders.iter().any(|allowed| {
            let allowed = allowed.trim().to_ascii_lowercase();
            match allowed.strip_prefix('@') {
                Some(domain) => address.rsplit_once('@').is_some_and(|(_, d)| d == domain),
                None => address == allowed,
            }
        })
    }

    pub fn allows_address(&self, addr: &IpAddr) -> bool {
        self.allowed_networks.is_empty() || self.allowed_networks.iter().any(|n| n.contains(addr))
    }
}

/// What happens to a message whose From the device may not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum SenderPolicy {
    /// From becomes the tenant's sender mailbox; the original goes to Reply-To.
    Rewrite,
    /// The message is refused.
    Enforce,
}

impl std::str::FromStr for SenderPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rewrite" => Ok(Self::Rewrite),
            "enforce" => Ok(Self::Enforce),
            other => Err(format!(
                "unknown sender policy {other:?} (expected rewrite or enforce)"
            )),
        }
    }
}

/// The device a session is acting for, with its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedDevice {
    pub device_id: DeviceId,
    pub tenant_id: TenantId,
    pub username: String,
    pub policy: DevicePolicy,
}

/// A device's stored credential, as the edge checks it.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub password_hash: String,
    pub enabled: bool,
    pub device: AuthenticatedDevice,
}

#[derive(FromRow)]
struct DeviceRow {
    id: DeviceId,
    tenant_id: TenantId,
    username: String,
    password_hash: String,
    enabled: bool,
    allowed_networks: Vec<IpNet>,
    allowed_senders: Vec<String>,
    sender_policy: SenderPolicy,
    rate_limit_per_minute: Option<i32>,
    tenant_rate_limit: Option<i32>,
    max_message_bytes: Option<i64>,
    tenant_max_message_bytes: i64,
    sender_mailbox: String,
    legacy_tls: bool,
}

impl From<DeviceRow> for StoredCredential {
    fn from(row: DeviceRow) -> Self {
        Self {
            password_hash: row.password_hash,
            enabled: row.enabled,
            device: AuthenticatedDevice {
                device_id: row.id,
                tenant_id: row.tenant_id,
                username: row.username,
                policy: DevicePolicy {
                    allowed_networks: row.allowed_networks,
                    allowed_senders: row.allowed_senders,
                    sender_policy: row.sender_policy,
                    device_rate_limit: row.rate_limit_per_minute,
                    tenant_rate_limit: row.tenant_rate_limit,
                    max_message_bytes: row.max_message_bytes,
                    tenant_max_message_bytes: row.tenant_max_message_bytes,
                    tenant_sender_mailbox: row.sender_mailbox,
                    legacy_tls: row.legacy_tls,
                },
            },
        }
    }
}

/// The NOTIFY channel on which PostgreSQL announces committed changes to what
/// [`credential`] and [`find_by_address`] return (a trigger on devices and tenants).
pub const DEVICES_CHANNEL: &str = "mailbridge_devices";

macro_rules! credential_query {
    ($where:literal) => {
        concat!(
            "SELECT d.id, d.tenant_id, d.username, d.password_hash, d.enabled, d.allowed_networks,
                    d.allowed_senders, d.sender_policy, d.rate_limit_per_minute,
                    t.rate_limit_per_minute AS tenant_rate_limit, d.max_message_bytes,
                    t.max_message_bytes AS tenant_max_message_bytes, t.sender_mailbox,
                    d.legacy_tls
               FROM devices d JOIN tenants t ON t.id = d.tenant_id WHERE ",
            $where
        )
    };
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the device name must be 1 to 200 characters")]
    InvalidName,
    #[error("this customer already has a device named {0:?}")]
    NameTaken(String),
    #[error(
        "{network} is too wide for an allow-list: at most a /{widest} (name the site's own addresses, not a provider's or the internet)"
    )]
    AllowListTooWide { network: IpNet, widest: u8 },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

macro_rules! columns {
    () => {
        "id, tenant_id, name, username, enabled, created_at, last_seen_at, allowed_networks, \
         allowed_senders, sender_policy, rate_limit_per_minute, kind, site, listener, legacy_tls, \
         model_family"
    };
}

pub async fn create(
    pool: &PgPool,
    tenant_id: TenantId,
    name: &str,
) -> Result<IssuedCredential, DeviceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(DeviceError::InvalidName);
    }
    let (password, hash) = new_password().await?;
    // A username collision is astronomically unlikely; a retry costs nothing.
    for _ in 0..3 {
        let username = crypto::generate_username(name);
        let inserted = sqlx::query_as::<_, Device>(concat!(
            "INSERT INTO devices (tenant_id, name, username, password_hash)
             VALUES ($1, $2, $3, $4) RETURNING ",
            columns!()
        ))
        .bind(tenant_id)
        .bind(name)
        .bind(&username)
        .bind(&hash)
        .fetch_one(pool)
        .await;
        match inserted {
            Ok(device) => return Ok(IssuedCredential { device, password }),
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("devices_username_key") => {
                continue;
            }
            Err(sqlx::Error::Database(db))
                if db.constraint() == Some("devices_tenant_id_name_key") =>
            {
                return Err(DeviceError::NameTaken(name.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(DeviceError::Database(sqlx::Error::Protocol(
        "could not find a free username".into(),
    )))
}

/// A fresh password and its argon2id hash (hashed off the async threads).
async fn new_password() -> Result<(String, String), DeviceError> {
    let password = crypto::generate_password();
    let for_hashing = password.clone();
    let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&for_hashing))
        .await
        .expect("hashing does not panic")?;
    Ok((password, hash))
}

/// Replaces a device's password with a new one, returned this once. Sessions that
/// already logged in keep going; every new login needs the new password.
pub async fn rotate_password(
    pool: &PgPool,
    device_id: DeviceId,
) -> Result<IssuedCredential, DeviceError> {
    let (password, hash) = new_password().await?;
    let device = sqlx::query_as::<_, Device>(concat!(
        "UPDATE devices SET password_hash = $2 WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(device_id)
    .bind(&hash)
    .fetch_one(pool)
    .await?;
    Ok(IssuedCredential { device, password })
}

pub async fn list(pool: &PgPool, tenant_id: TenantId) -> Result<Vec<Device>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM devices WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// The stored credential and policy of `username`.
pub async fn credential(
    pool: &PgPool,
    username: &str,
) -> Result<Option<StoredCredential>, sqlx::Error> {
    let row: Option<DeviceRow> = sqlx::query_as(credential_query!("d.username = $1"))
        .bind(username)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(StoredCredential::from))
}

/// Verifications running at once, per process. Each argon2id verification takes
/// 19 MiB and a core for tens of milliseconds: unbounded, a wave of logins (or an
/// attacker's) would start hundreds on blocking threads at once — gigabytes of
/// memory that the allocator keeps resident afterwards. Bounded by the cores, a wave
/// waits its turn instead: `MAILBRIDGE_EDGE_PASSWORD_VERIFICATIONS` if set, else the
/// container's CPU limit (cgroup v2 `cpu.max`, rounded up), else the cores the
/// process may run on — not the node's 64 cores, whose 1.2 GiB would break a 512 MiB
/// memory limit.
fn verifications() -> &'static tokio::sync::Semaphore {
    static VERIFICATIONS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    VERIFICATIONS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let limit = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
            .ok()
            .and_then(|max| {
                let mut fields = max.split_whitespace();
                let quota: f64 = fields.next()?.parse().ok()?; // "max": no limit
                let period: f64 = fields.next()?.parse().ok()?;
                Some((quota / period).ceil().max(1.0) as usize)
            });
        let configured = std::env::var("MAILBRIDGE_EDGE_PASSWORD_VERIFICATIONS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0);
        let permits = configured.unwrap_or_else(|| limit.map_or(cores, |l| l.min(cores)));
        tracing::debug!(permits, "concurrent password verifications");
        tokio::sync::Semaphore::new(permits)
    })
}

/// Verifies a password against a stored hash off the async threads, a bounded number
/// at a time. With no stored hash (unknown user) a decoy is verified, so a miss costs
/// as much as a wrong password.
pub async fn verify_password(stored_hash: Option<String>, password: &str) -> bool {
    let password = password.to_owned();
    let _turn = verifications()
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        let hash = stored_hash.unwrap_or_else(|| crypto::decoy_hash().to_owned());
        crypto::verify_password(&password, &hash)
    })
    .await
    .expect("verification does not panic")
}

/// Checks a username and password: the device, if both are right and it is enabled.
pub async fn authenticate(
    pool: &PgPool,
    username: &str,
    password: &str,
) -> Result<Option<AuthenticatedDevice>, sqlx::Error> {
    let stored = credential(pool, username).await?;
    let verified =
        verify_password(stored.as_ref().map(|c| c.password_hash.clone()), password).await;
    Ok(stored.filter(|c| verified && c.enabled).map(|c| c.device))
}

/// The enabled relay device whose allow-list holds `addr` most specifically, for
/// clients that cannot log in (port 25). Only a device set up for the relay listener
/// is identified by its address: a password device's allow-list only narrows where
/// it may log in from, and never lets anyone there send without the password. Two devices of different tenants matching equally
/// specifically is a configuration error: no device is chosen, so no mail can land
/// in the wrong tenant.
pub async fn find_by_address(
    pool: &PgPool,
    addr: IpAddr,
) -> Result<Option<AuthenticatedDevice>, sqlx::Error> {
    let rows: Vec<DeviceRow> = sqlx::query_as(credential_query!(
        "d.enabled AND d.listener = 'relay'
           AND EXISTS (SELECT 1 FROM unnest(d.allowed_networks) n WHERE $1::inet <<= n)"
    ))
    .bind(IpNet::from(addr))
    .fetch_all(pool)
    .await?;
    let prefix = |row: &DeviceRow| {
        row.allowed_networks
            .iter()
            .filter(|n| n.contains(&addr))
            .map(IpNet::prefix_len)
            .max()
            .unwrap_or(0)
    };
    let best = rows.iter().map(prefix).max();
    let mut best_rows = rows.into_iter().filter(|r| Some(prefix(r)) == best);
    let chosen = best_rows.next();
    if let Some(other) =
        best_rows.find(|r| chosen.as_ref().is_some_and(|c| c.tenant_id != r.tenant_id))
    {
        tracing::warn!(%addr, tenant = %other.tenant_id, "address is allow-listed equally for devices of two tenants; refusing");
        return Ok(None);
    }
    Ok(chosen.map(|row| StoredCredential::from(row).device))
}

/// Changes to a device's policy; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct PolicyChange {
    pub allowed_networks: Option<Vec<IpNet>>,
    pub allowed_senders: Option<Vec<String>>,
    pub sender_policy: Option<SenderPolicy>,
    pub rate_limit_per_minute: Option<Option<i32>>,
    pub enabled: Option<bool>,
    pub kind: Option<DeviceKind>,
    pub site: Option<Option<String>>,
    pub listener: Option<DeviceListener>,
    pub legacy_tls: Option<bool>,
    pub model_family: Option<Option<String>>,
}

pub async fn change_policy(
    pool: &PgPool,
    device_id: DeviceId,
    change: PolicyChange,
) -> Result<Option<Device>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE devices SET
            allowed_networks = COALESCE($2, allowed_networks),
            allowed_senders = COALESCE($3, allowed_senders),
            sender_policy = COALESCE($4, sender_policy),
            rate_limit_per_minute = CASE WHEN $5 THEN $6 ELSE rate_limit_per_minute END,
            enabled = COALESCE($7, enabled),
            kind = COALESCE($8, kind),
            site = CASE WHEN $9 THEN $10 ELSE site END,
            listener = COALESCE($11, listener),
            legacy_tls = COALESCE($12, legacy_tls),
            model_family = CASE WHEN $13 THEN $14 ELSE model_family END
          WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(device_id)
    .bind(change.allowed_networks)
    .bind(change.allowed_senders)
    .bind(change.sender_policy)
    .bind(change.rate_limit_per_minute.is_some())
    .bind(change.rate_limit_per_minute.flatten())
    .bind(change.enabled)
    .bind(change.kind)
    .bind(change.site.is_some())
    .bind(change.site.flatten())
    .bind(change.listener)
    .bind(change.legacy_tls)
    .bind(change.model_family.is_some())
    .bind(change.model_family.flatten())
    .fetch_optional(pool)
    .await
}

/// Finds a device of `tenant_id` by name or id.
pub async fn find(
    pool: &PgPool,
    tenant_id: TenantId,
    name_or_id: &str,
) -> Result<Option<Device>, sqlx::Error> {
    let id = Uuid::parse_str(name_or_id).ok();
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM devices WHERE tenant_id = $1 AND (id = $2 OR name = $3)"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(name_or_id.trim())
    .fetch_optional(pool)
    .await
}

/// Messages device `device_id` and its customer `tenant_id` committed within the
/// last minute, for rate limits.
pub async fn recent_message_counts(
    pool: &PgPool,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE device_id = $2), count(*)
           FROM messages WHERE tenant_id = $1 AND received_at > now() - interval '1 minute'",
    )
    .bind(tenant_id)
    .bind(device_id)
    .fetch_one(pool)
    .await
}

/// Records when and from where devices were last seen, many in one statement.
pub async fn touch_many(pool: &PgPool, seen: &[(DeviceId, IpAddr)]) -> Result<(), sqlx::Error> {
    if seen.is_empty() {
        return Ok(());
    }
    let ids: Vec<DeviceId> = seen.iter().map(|(id, _)| *id).collect();
    let addrs: Vec<IpNet> = seen.iter().map(|(_, addr)| IpNet::from(*addr)).collect();
    let sources: Vec<IpNet> = seen
        .iter()
        .map(|(_, addr)| crate::logins::source_network(*addr))
        .collect();
    // Also where each device was seen from: its familiar sources (see `logins`).
    sqlx::query!(
        "WITH touched AS (
             UPDATE devices d SET last_seen_at = now(), last_seen_addr = v.addr
               FROM unnest($1::uuid[], $2::inet[]) AS v(id, addr) WHERE d.id = v.id
             RETURNING d.id, d.tenant_id)
         INSERT INTO device_sources AS s (device_id, tenant_id, source)
         SELECT v.id, t.tenant_id, v.source FROM unnest($1::uuid[], $3::inet[]) AS v(id, source)
           JOIN touched t ON t.id = v.id
         ON CONFLICT (device_id, source) DO UPDATE SET last_seen_at = now()",
        &ids as &[DeviceId],
        &addrs,
        &sources
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Deletes a device; its messages stay in the log without it.
pub async fn delete(pool: &PgPool, device_id: DeviceId) -> Result<bool, sqlx::Error> {
    sqlx::query!("DELETE FROM devices WHERE id = $1", device_id as DeviceId)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// One device by id, whatever its tenant (callers check the tenant).
pub async fn get(pool: &PgPool, device_id: DeviceId) -> Result<Option<Device>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM devices WHERE id = $1"
    ))
    .bind(device_id)
    .fetch_optional(pool)
    .await
}

/// How long device `id` may stay silent before its alert opens (`None`: its kind's
/// suggestion, or never).
pub async fn silent_alert_hours(pool: &PgPool, id: DeviceId) -> Result<Option<i32>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT silent_alert_hours FROM devices WHERE id = $1",
        id as DeviceId
    )
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// A device as a bulk action names it.
#[derive(Debug, Clone)]
pub struct Named {
    pub id: DeviceId,
    pub name: String,
    pub username: String,
    pub listener: DeviceListener,
}

/// The devices `ids` of customer `tenant_id` (those that are its), by name.
pub async fn named(
    pool: &PgPool,
    tenant_id: TenantId,
    ids: &[DeviceId],
) -> Result<Vec<Named>, sqlx::Error> {
    sqlx::query_as!(
        Named,
        r#"SELECT id, name, username, listener AS "listener: DeviceListener"
             FROM devices WHERE tenant_id = $1 AND id = ANY($2) ORDER BY name"#,
        tenant_id as TenantId,
        ids as &[DeviceId]
    )
    .fetch_all(pool)
    .await
}

/// Disables the devices `ids` of customer `tenant_id`.
pub async fn disable_all(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    ids: &[DeviceId],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE devices SET enabled = false WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id as TenantId,
        ids as &[DeviceId]
    )
    .execute(tx)
    .await
    .map(drop)
}

/// Gives the devices `ids` of customer `tenant_id` the password hashes `hashes`
/// (in the same order).
pub async fn set_password_hashes(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    ids: &[DeviceId],
    hashes: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE devices d SET password_hash = v.hash
           FROM unnest($2::uuid[], $3::text[]) AS v(id, hash)
          WHERE d.tenant_id = $1 AND d.id = v.id",
        tenant_id as TenantId,
        ids as &[DeviceId],
        hashes
    )
    .execute(tx)
    .await
    .map(drop)
}

/// The names of customer `tenant_id`'s devices.
pub async fn names_of(pool: &PgPool, tenant_id: TenantId) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT name FROM devices WHERE tenant_id = $1",
        tenant_id as TenantId
    )
    .fetch_all(pool)
    .await
}

/// A device of an import, its password hashed already.
pub struct Imported<'a> {
    pub tenant_id: TenantId,
    pub name: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub kind: DeviceKind,
    pub site: Option<&'a str>,
    pub listener: DeviceListener,
    pub allowed_networks: &'a [IpNet],
    pub allowed_senders: &'a [String],
}

/// Inserts an imported device within `tx`: its id, or `None` when its username is
/// taken (make another); a name the customer has already is an error
/// (`devices_tenant_id_name_key`).
pub async fn insert_imported(
    tx: &mut sqlx::PgConnection,
    device: &Imported<'_>,
) -> Result<Option<DeviceId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO devices (tenant_id, name, username, password_hash, kind, site, listener,
                              allowed_networks, allowed_senders)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (username) DO NOTHING RETURNING id AS "id: DeviceId""#,
        device.tenant_id as TenantId,
        device.name,
        device.username,
        device.password_hash,
        device.kind as DeviceKind,
        device.site,
        device.listener as DeviceListener,
        device.allowed_networks,
        device.allowed_senders
    )
    .fetch_optional(tx)
    .await
}
