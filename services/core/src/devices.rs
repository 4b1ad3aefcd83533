//! Devices and their SMTP credentials. A device belongs to exactly one tenant; its
//! password is generated here, shown once, and stored only as an argon2id hash.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::crypto::{self, CryptoError};

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Device {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub username: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A new device with its password in clear: the only time the password exists.
#[derive(Debug, Serialize)]
pub struct IssuedCredential {
    #[serde(flatten)]
    pub device: Device,
    pub password: String,
}

/// The device a session authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedDevice {
    pub device_id: Uuid,
    pub tenant_id: Uuid,
    pub username: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the device name must be 1 to 200 characters")]
    InvalidName,
    #[error("this customer already has a device named {0:?}")]
    NameTaken(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

macro_rules! columns {
    () => {
        "id, tenant_id, name, username, enabled, created_at, last_seen_at"
    };
}

pub async fn create(
    pool: &PgPool,
    tenant_id: Uuid,
    name: &str,
) -> Result<IssuedCredential, DeviceError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(DeviceError::InvalidName);
    }
    let password = crypto::generate_password();
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || crypto::hash_password(&password))
            .await
            .expect("hashing does not panic")?
    };
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

pub async fn list(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<Device>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM devices WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// Checks a username and password. Unknown users and disabled devices cost the same
/// argon2 work as a wrong password, so timing tells an attacker nothing.
pub async fn authenticate(
    pool: &PgPool,
    username: &str,
    password: &str,
) -> Result<Option<AuthenticatedDevice>, sqlx::Error> {
    let row: Option<(Uuid, Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, tenant_id, password_hash, enabled FROM devices WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    let hash = row
        .as_ref()
        .map(|(_, _, hash, _)| hash.clone())
        .unwrap_or_else(|| crypto::decoy_hash().to_owned());
    let password = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || crypto::verify_password(&password, &hash))
        .await
        .expect("verification does not panic");
    Ok(match row {
        Some((device_id, tenant_id, _, true)) if verified => Some(AuthenticatedDevice {
            device_id,
            tenant_id,
            username: username.to_owned(),
        }),
        _ => None,
    })
}

/// Records that a device was seen; called once per session, not per command.
pub async fn touch(pool: &PgPool, device_id: Uuid, addr: IpAddr) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET last_seen_at = now(), last_seen_addr = $2 WHERE id = $1")
        .bind(device_id)
        .bind(ipnet::IpNet::from(addr))
        .execute(pool)
        .await
        .map(drop)
}
