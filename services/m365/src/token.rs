//! App-only access tokens from the Entra token endpoint (client-credentials grant),
//! cached per (tenant, app, resource) until shortly before they expire. However many
//! messages wait for a tenant, one request per key is in flight: the others wait for
//! its answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mailbridge_core::tenants::{AppCredential, CertificateCredential};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Refresh this long before expiry, so no request leaves with a dying token.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// What a token is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub entra_tenant_id: mailbridge_core::ids::EntraTenantId,
    pub client_id: String,
    /// `{resource}/.default`
    pub scope: String,
}

/// The credentials of the app a token is requested for.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub client_id: String,
    pub credential: AppCredential,
}

/// How long a client assertion is valid.
const ASSERTION_LIFETIME_SECS: i64 = 600;

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// A signed client assertion (private_key_jwt): PS256, identifying the certificate by
/// its SHA-256 thumbprint (`x5t#S256`), for the token endpoint `audience`.
fn client_assertion(
    client_id: &str,
    certificate: &CertificateCredential,
    audience: &str,
) -> Result<String, TokenError> {
    let invalid = |what: String| TokenError::Rejected {
        status: 0,
        error: "invalid_certificate".into(),
        aadsts: None,
        description: what,
    };
    let der = CertificateDer::from_pem_slice(certificate.certificate_pem.as_bytes())
        .map_err(|e| invalid(format!("the app's certificate is not valid PEM: {e}")))?;
    let key = EncodingKey::from_rsa_pem(certificate.private_key_pem.expose_secret().as_bytes())
        .map_err(|e| {
            invalid(format!(
                "the app's private key is not a valid RSA PEM key: {e}"
            ))
        })?;
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(der.as_ref())));
    let now = chrono::Utc::now().timestamp();
    let claims = AssertionClaims {
        aud: audience,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        nbf: now,
        exp: now + ASSERTION_LIFETIME_SECS,
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|e| invalid(format!("signing the client assertion: {e}")))
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Entra answered with an error (`AADSTS…`).
    #[error("{description}")]
    Rejected {
        status: u16,
        error: String,
        aadsts: Option<u32>,
        description: String,
    },
    /// No answer: connection, TLS or timeout.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The endpoint refused moments ago; it was not asked again.
    #[error("{0} (remembered)")]
    RecentlyRefused(Box<TokenError>),
}

/// How long a refusal is remembered, so that the messages waiting for a tenant do not
/// each ask Entra again (the tenant's deliveries are paused meanwhile).
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum CachedToken {
    Issued {
        access_token: SecretString,
        refresh_at: Instant,
    },
    Refused {
        error: TokenError,
        until: Instant,
    },
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// A token and whether it was just requested (rather than taken from the cache).
#[derive(Debug)]
pub struct Token {
    pub access_token: SecretString,
    pub fresh: bool,
}

#[derive(Debug)]
pub struct TokenCache {
    http: reqwest::Client,
    login_url: String,
    slots: Mutex<HashMap<TokenKey, Slot>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u32>,
}

impl TokenCache {
    pub fn new(http: reqwest::Client, login_url: String) -> Self {
        Self {
            http,
            login_url,
            slots: Mutex::default(),
        }
    }

    fn slot(&self, key: &TokenKey) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// A valid token for `key`, from the cache or freshly requested; `tenant` labels
    /// the request in the metrics. A refusal is remembered briefly.
    pub async fn get(
        &self,
        key: &TokenKey,
        app: &AppCredentials,
        tenant: &str,
    ) -> Result<Token, TokenError> {
        let slot = self.slot(key);
        let mut cached = slot.lock().await;
        let now = Instant::now();
        match cached.as_ref() {
            Some(CachedToken::Issued {
                access_token,
                refresh_at,
            }) if now < *refresh_at => {
                return Ok(Token {
                    access_token: access_token.clone(),
                    fresh: false,
                });
            }
            Some(CachedToken::Refused { error, until }) if now < *until => {
                return Err(error.clone());
            }
            _ => {}
        }
        let result = self.request(key, app).await;
        let (outcome, aadsts) = match &result {
            Ok(_) => ("success", String::new()),
            Err(TokenError::Rejected { aadsts, .. }) => {
                ("refused", aadsts.map(|c| c.to_string()).unwrap_or_default())
            }
            Err(_) => ("unreachable", String::new()),
        };
        let metrics = &mailbridge_core::metrics::metrics();
        metrics
            .worker
            .token_requests
            .with_label_values(&[tenant, outcome, &aadsts])
            .inc();
        // Whether consent works is recorded in the database (the tenant's last token
        // and last refusal), and exported from there by the web for the cluster.
        match result {
            Ok(issued) => {
                let token = match &issued {
                    CachedToken::Issued { access_token, .. } => access_token.clone(),
                    CachedToken::Refused { error, .. } => return Err(error.clone()),
                };
                *cached = Some(issued);
                Ok(Token {
                    access_token: token,
                    fresh: true,
                })
            }
            Err(error) => {
                if let TokenError::Rejected { .. } = error {
                    *cached = Some(CachedToken::Refused {
                        error: error.clone(),
                        until: now + REFUSAL_MEMORY,
                    });
                }
                Err(error)
            }
        }
    }

    /// Forgets the token for `key` (the resource refused it).
    pub async fn invalidate(&self, key: &TokenKey) {
        *self.slot(key).lock().await = None;
    }

    async fn request(
        &self,
        key: &TokenKey,
        app: &AppCredentials,
    ) -> Result<CachedToken, TokenError> {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.login_url, key.entra_tenant_id
        );
        let mut form = vec![
            ("client_id", app.client_id.clone()),
            ("scope", key.scope.clone()),
            ("grant_type", "client_credentials".to_owned()),
        ];
        match &app.credential {
            AppCredential::ClientSecret(secret) => {
                form.push(("client_secret", secret.expose_secret().to_owned()));
            }
            AppCredential::Certificate(certificate) => {
                let assertion = client_assertion(&app.client_id, certificate, &url)?;
                form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                form.push(("client_assertion", assertion));
            }
        }
        let requested_at = Instant::now();
        let response = self
            .http
            .post(&url)
            .form(&form)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(crate::describe_http_error(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable(crate::describe_http_error(&e)))?;
        if status.is_success() {
            let token: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| TokenError::Rejected {
                    status: status.as_u16(),
                    error: "invalid_response".into(),
                    aadsts: None,
                    description: format!(
                        "the token endpoint answered with an unreadable token: {e}"
                    ),
                })?;
            let lifetime = Duration::from_secs(token.expires_in);
            tracing::debug!(tenant = %key.entra_tenant_id, scope = %key.scope, "access token issued");
            return Ok(CachedToken::Issued {
                access_token: SecretString::from(token.access_token),
                refresh_at: requested_at + lifetime.saturating_sub(REFRESH_MARGIN),
            });
        }
        if status.is_server_error() || status.as_u16() == 429 {
            // Entra itself is down or overloaded: nothing was refused.
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(TokenError::Unreachable(format!("HTTP {status}: {text}")));
        }
        let error: ErrorResponse = serde_json::from_slice(&body).unwrap_or(ErrorResponse {
            error: format!("http_{}", status.as_u16()),
            error_description: String::from_utf8_lossy(&body).chars().take(500).collect(),
            error_codes: Vec::new(),
        });
        // Entra puts the code first in the description too ("AADSTS7000215: …").
        let aadsts = error.error_codes.first().copied().or_else(|| {
            error
                .error_description
                .strip_prefix("AADSTS")
                .and_then(|rest| rest.split(':').next())
                .and_then(|code| code.parse().ok())
        });
        Err(TokenError::Rejected {
            status: status.as_u16(),
            error: error.error,
            aadsts,
            description: error.error_description,
        })
    }
}
