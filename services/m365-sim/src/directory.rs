//! What the simulated Microsoft cloud knows: app registrations (secrets, certificates,
//! redirect URIs, the application permissions they request), tenants with their
//! mailboxes, users and the permissions each app was consented, the token-signing
//! key and the simulator's own base URL, and everything received — tokens asked for,
//! admin consents answered and messages sent.
//!
//! It holds state only: the endpoints that read and change it live in their own
//! modules, and nothing here speaks HTTP.
//!
//! Over 500 lines: it is the simulator's one shared state — the record types, `State`
//! behind one lock, and some 30 small methods that build, arrange and inspect it; every
//! endpoint module reads the same `State`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard},
};

use aws_lc_rs::digest;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::Serialize;
use uuid::Uuid;
use x509_parser::{
    prelude::{FromDer, X509Certificate},
    public_key::PublicKey,
    x509::SubjectPublicKeyInfo,
};

use crate::oidc::AuthorizationCode;

/// Where Entra answers when the simulator is not told its own address.
const DEFAULT_BASE_URL: &str = "https://login.microsoftonline.com";

/// How long an authorization code can be redeemed (Entra: about ten minutes).
const DEFAULT_CODE_LIFETIME_SECS: i64 = 600;

/// A tenant: its mailboxes (with whom each may send as) and, per app, the
/// application permissions an admin consented to.
#[derive(Debug, Clone, Default)]
pub struct SimTenant {
    /// Lower-cased address → addresses it may also send as.
    pub mailboxes: HashMap<String, Vec<String>>,
    /// client_id → consented app roles (e.g. `Mail.Send`). An entry is the app's
    /// service principal in this tenant: it may exist with no roles left.
    pub consents: HashMap<String, Vec<String>>,
    /// The organisation's display name, shown on the consent and sign-in pages.
    pub name: Option<String>,
    /// client_ids whose delegated sign-in permissions (`openid profile email`)
    /// were consented in this tenant.
    pub delegated_grants: HashSet<String>,
    /// Has Entra ID P1 (or P2): the sign-in logs can be read through Graph.
    pub premium: bool,
    /// The tenant's sign-in log (see `sign_ins`).
    pub sign_ins: Vec<crate::sign_ins::SimSignIn>,
    /// client_id → an admin consent the token endpoint does not see yet (see
    /// [`Directory::set_consent_propagation`]).
    pub propagating: HashMap<String, Propagation>,
}

/// An admin consent on its way through Entra: until `visible_at` the token endpoint
/// answers as before it — `before` is the app's roles then, `None` when the app had
/// no service principal in the tenant.
#[derive(Debug, Clone)]
pub struct Propagation {
    pub visible_at: DateTime<Utc>,
    pub before: Option<Vec<String>>,
}

impl SimTenant {
    /// The app roles of `client_id` as the token endpoint sees them at `now`; `None`
    /// when it sees no service principal.
    pub(crate) fn roles_seen(&self, client_id: &str, now: DateTime<Utc>) -> Option<&Vec<String>> {
        match self.propagating.get(client_id) {
            Some(p) if now < p.visible_at => p.before.as_ref(),
            _ => self.consents.get(client_id),
        }
    }
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
    /// Whether a copy went to the mailbox's Sent Items.
    pub saved_to_sent_items: bool,
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
    /// `client_credentials` or `authorization_code` (as sent; empty when missing).
    pub grant_type: String,
    /// How the client authenticated itself.
    pub credential: ClientCredentialKind,
}

/// The kind of client credential a token request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCredentialKind {
    /// `client_secret` in the body or HTTP Basic.
    ClientSecret,
    /// `client_assertion` (a JWT signed with a registered certificate).
    Certificate,
    /// None at all.
    None,
}

/// A user of a simulated tenant, who can sign in through the OIDC provider.
#[derive(Debug, Clone, Serialize)]
pub struct SimUser {
    /// The user's object id (`oid`).
    pub oid: Uuid,
    pub tenant_id: Uuid,
    /// Display name (`name`).
    pub name: String,
    /// User principal name and mail address (`preferred_username`, `email`).
    pub email: String,
}

/// An answer an admin gave on the admin-consent page.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConsentRecord {
    pub client_id: String,
    /// The tenant the admin consented for; `None` when they cancelled before
    /// picking one.
    pub tenant_id: Option<Uuid>,
    /// `true` for Accept, `false` for Cancel.
    pub accepted: bool,
    /// The app roles granted (empty on Cancel).
    pub roles: Vec<String>,
    /// `v2` (`/v2.0/adminconsent`) or `v1` (`/adminconsent`).
    pub endpoint_version: &'static str,
    pub at: DateTime<Utc>,
}

/// The thumbprints Entra knows a registered certificate by.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateThumbprints {
    /// The key credential's id (usable as the assertion's `kid`).
    pub key_id: Uuid,
    /// SHA-1 of the DER, upper-case hex, as the Entra portal shows it.
    pub sha1_hex: String,
    /// SHA-1 of the DER, base64url: the `x5t` header value.
    pub x5t: String,
    /// SHA-256 of the DER, base64url: the `x5t#S256` header value.
    pub x5t_s256: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// Why the directory refused a change.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The bytes are not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    NotACertificate(String),
    /// Client assertions are verified with RSA keys only (RS256, PS256).
    #[error("the certificate's key is not an RSA key")]
    NotRsa,
}

/// A client secret of an app registration.
#[derive(Debug, Clone)]
pub(crate) struct ClientSecret {
    pub value: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A certificate (key credential) of an app registration.
#[derive(Debug, Clone)]
pub(crate) struct CertificateCredential {
    pub thumbprints: CertificateThumbprints,
    pub sha1: Vec<u8>,
    pub sha256: Vec<u8>,
    /// The RSA modulus and exponent, big-endian without leading zeros.
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

/// An app registration in the MSP's Entra tenant: how its clients authenticate,
/// where it may send browsers back to, and which application permissions it asks
/// customers' admins for.
#[derive(Debug, Clone, Default)]
pub(crate) struct AppRegistration {
    pub display_name: Option<String>,
    pub secrets: Vec<ClientSecret>,
    pub certificates: Vec<CertificateCredential>,
    pub redirect_uris: Vec<String>,
    /// App roles (application permissions) the app requests, e.g. `Mail.Send`.
    pub requested_roles: Vec<String>,
}

impl AppRegistration {
    /// The name Entra shows for the app.
    pub fn name<'a>(&'a self, client_id: &'a str) -> &'a str {
        self.display_name.as_deref().unwrap_or(client_id)
    }
}

#[derive(Debug)]
pub(crate) struct State {
    /// client_id → app registration.
    pub apps: HashMap<String, AppRegistration>,
    pub tenants: HashMap<Uuid, SimTenant>,
    pub delivered: Vec<DeliveredMessage>,
    pub token_requests: Vec<TokenRequestRecord>,
    pub users: Vec<SimUser>,
    pub admin_consents: Vec<AdminConsentRecord>,
    /// The tenant preselected on the admin-consent page.
    pub default_admin_tenant: Option<Uuid>,
    /// Issued authorization codes (redeemed ones stay, marked, so a second
    /// redemption is told apart from an unknown code).
    pub authorization_codes: HashMap<String, AuthorizationCode>,
    pub code_lifetime: chrono::Duration,
    /// Fault rules and the requests the faultable endpoints saw (fault_injection.rs).
    pub faults: Vec<crate::fault_injection::Fault>,
    pub requests: Vec<crate::fault_injection::RequestRecord>,
    /// Exchange Online (exchange.rs): tenants with SMTP AUTH switched off, mailboxes
    /// each app's service principal may send as (FullAccess/SendAs), SMTP sessions
    /// authenticated per mailbox, and recipients sent per mailbox and day.
    pub smtp_auth_disabled: std::collections::HashSet<Uuid>,
    pub exchange_access: HashMap<(Uuid, String), Vec<String>>,
    pub smtp_sessions: HashMap<String, usize>,
    /// The most authenticated SMTP sessions a mailbox had at once, and how often a
    /// login was refused because it had its 3 already (`432 4.3.2`).
    pub smtp_sessions_peak: HashMap<String, usize>,
    pub smtp_busy_refusals: HashMap<String, usize>,
    pub recipients_sent: HashMap<(String, chrono::NaiveDate), usize>,
    /// Lower-cased mailbox → its maximum send size, when set (exchange_limits.rs).
    pub max_send_size: HashMap<String, usize>,
    /// How long an admin consent takes to reach the token endpoint.
    pub consent_propagation: chrono::Duration,
    /// Graph drafts and upload sessions (graph_drafts.rs).
    pub drafts: HashMap<String, crate::graph_drafts::Draft>,
    pub uploads: HashMap<String, crate::graph_drafts::Upload>,
    /// Exchange Online RBAC for Applications per tenant (rbac.rs).
    pub exchange_rbac: HashMap<Uuid, crate::rbac::ExchangeRbac>,
    /// Mail folders, non-delivery reports and recipients' outcomes (mailbox_store.rs).
    pub mail: crate::mailbox_store::Store,
    /// Graph's request and upload budgets per app and mailbox (graph_budget.rs).
    pub graph_budgets: crate::graph_budget::Budgets,
    /// The cloud whose names the simulator answers to (cloud.rs).
    pub cloud: crate::cloud::Cloud,
}

impl Default for State {
    fn default() -> Self {
        Self {
            apps: HashMap::new(),
            tenants: HashMap::new(),
            delivered: Vec::new(),
            token_requests: Vec::new(),
            users: Vec::new(),
            admin_consents: Vec::new(),
            default_admin_tenant: None,
            authorization_codes: HashMap::new(),
            code_lifetime: chrono::Duration::seconds(DEFAULT_CODE_LIFETIME_SECS),
            faults: Vec::new(),
            requests: Vec::new(),
            smtp_auth_disabled: Default::default(),
            exchange_access: HashMap::new(),
            smtp_sessions: HashMap::new(),
            smtp_sessions_peak: HashMap::new(),
            smtp_busy_refusals: HashMap::new(),
            recipients_sent: HashMap::new(),
            max_send_size: HashMap::new(),
            consent_propagation: chrono::Duration::zero(),
            drafts: HashMap::new(),
            uploads: HashMap::new(),
            exchange_rbac: HashMap::new(),
            mail: Default::default(),
            graph_budgets: Default::default(),
            cloud: Default::default(),
        }
    }
}

pub struct Directory {
    state: Mutex<State>,
    pub(crate) signing_key: EncodingKey,
    pub(crate) verifying_key: DecodingKey,
    pub(crate) key_id: String,
    /// The simulator's own base URL, in place of `https://login.microsoftonline.com`:
    /// issuers, discovery documents and client-assertion audiences are built on it.
    pub(crate) base_url: String,
    /// The signing key as a JWK, as the discovery `jwks_uri` publishes it.
    pub(crate) signing_jwk: serde_json::Value,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory that believes it answers at `https://login.microsoftonline.com`.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_base_url(DEFAULT_BASE_URL)
    }

    /// A directory answering at `base_url` (scheme, host and port, no trailing
    /// slash): the login and Graph host the simulator serves.
    pub fn with_base_url(base_url: &str) -> anyhow::Result<Self> {
        // Entra signs tokens with RSA (RS256) and publishes each key with its
        // certificate; so does the simulator.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "accounts.accesscontrol.windows.net",
        );
        let certificate = params.self_signed(&key)?;
        let published = certificate_credential(certificate.der())?;
        let thumbprint = published.thumbprints.x5t.clone();
        let signing_jwk = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": thumbprint,
            "x5t": thumbprint,
            "n": URL_SAFE_NO_PAD.encode(&published.modulus),
            "e": URL_SAFE_NO_PAD.encode(&published.exponent),
            "x5c": [base64::engine::general_purpose::STANDARD.encode(certificate.der())],
        });
        Ok(Self {
            state: Mutex::default(),
            signing_key: EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())?,
            verifying_key: DecodingKey::from_rsa_pem(key.public_key_pem().as_bytes())?,
            key_id: thumbprint,
            base_url: base_url.trim_end_matches('/').to_owned(),
            signing_jwk,
        })
    }

    /// The base URL this directory answers at.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an app (client id and secret), as in the MSP's Entra tenant. For an
    /// app that exists, `client_secret` replaces all its secrets (a rotation).
    pub fn register_app(&self, client_id: &str, client_secret: &str) {
        self.lock()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .secrets = vec![ClientSecret {
            value: client_secret.to_owned(),
            expires_at: None,
        }];
    }

    /// Registers an app without credentials (nothing changes for an existing app):
    /// certificates and secrets can be added later.
    pub fn ensure_app(&self, client_id: &str) {
        self.lock().apps.entry(client_id.to_owned()).or_default();
    }

    /// Adds a client secret to an app (registering the app if needed); after
    /// `expires_at` the secret is answered with `AADSTS7000222`.
    pub fn add_client_secret(
        &self,
        client_id: &str,
        client_secret: &str,
        expires_at: Option<DateTime<Utc>>,
    ) {
        self.lock()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .secrets
            .push(ClientSecret {
                value: client_secret.to_owned(),
                expires_at,
            });
    }

    /// Sets when an app's secret `client_secret` expires (now, or at any instant):
    /// past it, the token endpoint answers `AADSTS7000222` as Entra does. Returns
    /// whether the app has that secret.
    pub fn expire_client_secret(
        &self,
        client_id: &str,
        client_secret: &str,
        at: DateTime<Utc>,
    ) -> bool {
        let mut state = self.lock();
        let Some(app) = state.apps.get_mut(client_id) else {
            return false;
        };
        let mut found = false;
        for secret in app.secrets.iter_mut().filter(|s| s.value == client_secret) {
            secret.expires_at = Some(at);
            found = true;
        }
        found
    }

    /// Uploads a certificate (DER) to an app (registering the app if needed), for
    /// client assertions (`private_key_jwt`). Its validity is the key's.
    pub fn add_certificate(
        &self,
        client_id: &str,
        der: &[u8],
    ) -> Result<CertificateThumbprints, DirectoryError> {
        let credential = certificate_credential(der)?;
        let thumbprints = credential.thumbprints.clone();
        let mut state = self.lock();
        let app = state.apps.entry(client_id.to_owned()).or_default();
        app.certificates.retain(|c| c.sha256 != credential.sha256);
        app.certificates.push(credential);
        Ok(thumbprints)
    }

    /// Sets the app's display name, shown on the consent page and in errors.
    pub fn set_app_display_name(&self, client_id: &str, display_name: &str) {
        self.lock()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .display_name = Some(display_name.to_owned());
    }

    /// Sets the redirect URIs registered for the app (the "Web" platform).
    pub fn set_redirect_uris(&self, client_id: &str, redirect_uris: &[&str]) {
        self.lock()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .redirect_uris = redirect_uris.iter().map(|u| u.to_string()).collect();
    }

    /// Sets the application permissions (app roles such as `Mail.Send`,
    /// `Mail.ReadWrite`, `SMTP.SendAsApp`) the app requests: what an admin grants
    /// on the admin-consent page.
    pub fn set_requested_permissions(&self, client_id: &str, roles: &[&str]) {
        self.lock()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .requested_roles = roles.iter().map(|r| r.to_string()).collect();
    }

    /// Registers an app staff sign in with (OIDC authorization code flow): its
    /// client secret and redirect URIs.
    pub fn register_sign_in_app(
        &self,
        client_id: &str,
        client_secret: &str,
        redirect_uris: &[&str],
    ) {
        self.register_app(client_id, client_secret);
        self.set_redirect_uris(client_id, redirect_uris);
    }

    /// Names a tenant's organisation (shown on the consent and sign-in pages),
    /// creating the tenant if needed.
    pub fn set_tenant_name(&self, tenant_id: Uuid, name: &str) {
        self.lock().tenants.entry(tenant_id).or_default().name = Some(name.to_owned());
    }

    /// Adds a user to a tenant (creating the tenant if needed) and returns the
    /// user's object id; a user with the same address is updated instead.
    pub fn add_user(&self, tenant_id: Uuid, email: &str, name: &str) -> Uuid {
        let mut state = self.lock();
        state.tenants.entry(tenant_id).or_default();
        if let Some(user) = state
            .users
            .iter_mut()
            .find(|u| u.tenant_id == tenant_id && u.email.eq_ignore_ascii_case(email))
        {
            user.name = name.to_owned();
            return user.oid;
        }
        let oid = Uuid::new_v4();
        state.users.push(SimUser {
            oid,
            tenant_id,
            name: name.to_owned(),
            email: email.to_ascii_lowercase(),
        });
        oid
    }

    /// All users, in the order they were added.
    pub fn users(&self) -> Vec<SimUser> {
        self.lock().users.clone()
    }

    /// The tenant the admin-consent page preselects (the admin "signed in" to).
    pub fn set_default_admin_tenant(&self, tenant_id: Option<Uuid>) {
        self.lock().default_admin_tenant = tenant_id;
    }

    /// An admin revokes the app's permissions in a tenant: its app-role
    /// assignments and delegated grants are removed, its service principal stays.
    /// Entra then still issues app-only tokens, without a `roles` claim.
    pub fn revoke_consent(&self, tenant_id: Uuid, client_id: &str) {
        if let Some(tenant) = self.lock().tenants.get_mut(&tenant_id) {
            if let Some(roles) = tenant.consents.get_mut(client_id) {
                roles.clear();
            }
            tenant.delegated_grants.remove(client_id);
        }
    }

    /// An admin deletes the app's enterprise application (service principal) in a
    /// tenant: token requests are then answered with `AADSTS700016`.
    pub fn remove_service_principal(&self, tenant_id: Uuid, client_id: &str) {
        if let Some(tenant) = self.lock().tenants.get_mut(&tenant_id) {
            tenant.consents.remove(client_id);
            tenant.delegated_grants.remove(client_id);
        }
    }

    /// The app roles consented to `client_id` in `tenant_id`; `None` when the app
    /// has no service principal there.
    pub fn consented_roles(&self, tenant_id: Uuid, client_id: &str) -> Option<Vec<String>> {
        self.lock()
            .tenants
            .get(&tenant_id)
            .and_then(|t| t.consents.get(client_id))
            .cloned()
    }

    /// The answers given on the admin-consent page, oldest first.
    pub fn admin_consents(&self) -> Vec<AdminConsentRecord> {
        self.lock().admin_consents.clone()
    }

    /// How long an authorization code stays redeemable (default ten minutes).
    pub fn set_authorization_code_lifetime(&self, lifetime: std::time::Duration) {
        self.lock().code_lifetime =
            chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
    }

    /// How long a consent granted on the admin-consent page stays invisible to the
    /// token endpoint (zero by default). Entra takes seconds to minutes to replicate a
    /// new consent: meanwhile client-credential requests are answered as before it —
    /// `AADSTS700016` while the app's new service principal is not replicated yet, and
    /// tokens with the app's earlier roles (none: no `roles` claim) when it existed.
    pub fn set_consent_propagation(&self, delay: std::time::Duration) {
        self.lock().consent_propagation =
            chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    }

    /// The consent propagation delay.
    pub fn consent_propagation(&self) -> std::time::Duration {
        self.lock().consent_propagation.to_std().unwrap_or_default()
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

    /// The most authenticated SMTP sessions `mailbox` had at once, and the logins
    /// refused with `432 4.3.2` because it had its 3 already.
    pub fn smtp_sessions_of(&self, mailbox: &str) -> (usize, usize) {
        let state = self.lock();
        let mailbox = mailbox.to_ascii_lowercase();
        (
            state.smtp_sessions_peak.get(&mailbox).copied().unwrap_or(0),
            state.smtp_busy_refusals.get(&mailbox).copied().unwrap_or(0),
        )
    }
}

/// SHA-1 of `data` (certificate thumbprints only).
pub(crate) fn sha1(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// The RSA modulus and exponent of a public key, without leading zero bytes.
fn rsa_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<(Vec<u8>, Vec<u8>), DirectoryError> {
    let strip = |bytes: &[u8]| {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        bytes[first..].to_vec()
    };
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok((strip(rsa.modulus), strip(rsa.exponent))),
        _ => Err(DirectoryError::NotRsa),
    }
}

fn certificate_credential(der: &[u8]) -> Result<CertificateCredential, DirectoryError> {
    let (_, certificate) = X509Certificate::from_der(der)
        .map_err(|e| DirectoryError::NotACertificate(e.to_string()))?;
    let (modulus, exponent) = rsa_key(certificate.public_key())?;
    let validity = certificate.validity();
    let at = |timestamp: i64| DateTime::from_timestamp(timestamp, 0).unwrap_or_default();
    let (sha1, sha256) = (sha1(der), sha256(der));
    Ok(CertificateCredential {
        thumbprints: CertificateThumbprints {
            key_id: Uuid::new_v4(),
            sha1_hex: sha1.iter().map(|b| format!("{b:02X}")).collect(),
            x5t: URL_SAFE_NO_PAD.encode(&sha1),
            x5t_s256: URL_SAFE_NO_PAD.encode(&sha256),
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
        },
        sha1,
        sha256,
        modulus,
        exponent,
    })
}
