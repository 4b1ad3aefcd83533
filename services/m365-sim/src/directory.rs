//! What the simulated Microsoft cloud knows: app registrations and their secrets,
//! tenants with their mailboxes and the permissions each app was consented, the
//! token-signing key, and everything received — tokens asked for and messages sent.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::Serialize;
use uuid::Uuid;

/// A tenant: its mailboxes (with whom each may send as) and, per app, the
/// application permissions an admin consented to.
#[derive(Debug, Clone, Default)]
pub struct SimTenant {
    /// Lower-cased address → addresses it may also send as.
    pub mailboxes: HashMap<String, Vec<String>>,
    /// client_id → consented app roles (e.g. `Mail.Send`).
    pub consents: HashMap<String, Vec<String>>,
}

/// A message the simulated Exchange accepted.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveredMessage {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The mailbox it was sent as (the Graph user, or the SMTP authenticated user).
    pub mailbox: String,
    pub from: Option<String>,
    pub recipients: Vec<String>,
    pub subject: Option<String>,
    /// The message as stored: Bcc removed, as Exchange does.
    pub mime: String,
    pub via: &'static str,
    /// The `uti` of the access token it was sent with.
    pub token_id: String,
    pub received_at: DateTime<Utc>,
}

/// A request made to the token endpoint, successful or not.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRequestRecord {
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    pub error_code: Option<u32>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub apps: HashMap<String, String>,
    pub tenants: HashMap<Uuid, SimTenant>,
    pub delivered: Vec<DeliveredMessage>,
    pub token_requests: Vec<TokenRequestRecord>,
}

pub struct Directory {
    state: Mutex<State>,
    pub(crate) signing_key: EncodingKey,
    pub(crate) verifying_key: DecodingKey,
    pub(crate) key_id: String,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Directory {
    pub fn new() -> anyhow::Result<Self> {
        // Entra signs tokens with RSA (RS256); so does the simulator.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        Ok(Self {
            state: Mutex::default(),
            signing_key: EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())?,
            verifying_key: DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes())?,
            key_id: Uuid::new_v4().simple().to_string(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an app (client id and secret), as in the MSP's Entra tenant.
    pub fn register_app(&self, client_id: &str, client_secret: &str) {
        self.lock()
            .apps
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// Creates (or extends) a tenant with mailboxes.
    pub fn add_tenant(&self, tenant_id: Uuid, mailboxes: &[&str]) {
        let mut state = self.lock();
        let tenant = state.tenants.entry(tenant_id).or_default();
        for mailbox in mailboxes {
            tenant
                .mailboxes
                .entry(mailbox.to_ascii_lowercase())
                .or_default();
        }
    }

    /// Lets `mailbox` send as `other` (the Exchange SendAs permission).
    pub fn grant_send_as(&self, tenant_id: Uuid, mailbox: &str, other: &str) {
        if let Some(t) = self.lock().tenants.get_mut(&tenant_id) {
            t.mailboxes
                .entry(mailbox.to_ascii_lowercase())
                .or_default()
                .push(other.to_ascii_lowercase());
        }
    }

    /// An admin of `tenant_id` consents to `client_id` with the given app roles.
    pub fn consent(&self, tenant_id: Uuid, client_id: &str, roles: &[&str]) {
        let mut state = self.lock();
        let tenant = state.tenants.entry(tenant_id).or_default();
        tenant.consents.insert(
            client_id.to_owned(),
            roles.iter().map(|r| r.to_string()).collect(),
        );
    }

    /// Messages received by `address` (as To, Cc or Bcc), oldest first.
    pub fn inbox(&self, address: &str) -> Vec<DeliveredMessage> {
        let address = address.to_ascii_lowercase();
        self.lock()
            .delivered
            .iter()
            .filter(|m| {
                m.recipients
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&address))
            })
            .cloned()
            .collect()
    }

    pub fn delivered(&self) -> Vec<DeliveredMessage> {
        self.lock().delivered.clone()
    }

    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.lock().token_requests.clone()
    }
}
