//! The Entra ID token endpoint: `POST /{tenant}/oauth2/v2.0/token`.
//!
//! Two grants, answered as Entra answers them:
//! - `client_credentials` — the relay's app-only tokens. The client authenticates
//!   with a client secret (in the body or HTTP Basic; expired secrets get
//!   `AADSTS7000222`) or with a certificate: `client_assertion_type=
//!   urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a `client_assertion`
//!   JWT (RS256 or PS256, `x5t#S256`, `x5t` or `kid` naming a registered
//!   certificate, `aud` = this token URL, `iss` = `sub` = client_id, `jti`, `nbf`,
//!   `exp`). The tenant must be named: `organizations` and `common` are refused. A
//!   token is a Bearer JWT with `expires_in` 3599 and no refresh token; its `roles`
//!   are the app roles consented in the tenant for the requested resource, possibly
//!   none (after consent was revoked). A consent still propagating (see
//!   `Directory::set_consent_propagation`) is not seen: `AADSTS700016` for an app
//!   that had no service principal, the earlier roles for one that had.
//! - `authorization_code` — staff sign-in; handed to the OIDC provider (`oidc.rs`),
//!   which shares this module's client authentication.
//!
//! Errors are Entra's JSON (`error`, `error_description` = `AADSTSnnnn: …`,
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`), HTTP 401
//! for `invalid_client`, 5xx for Entra's own failures and 400 otherwise. Every
//! request is recorded, with the grant and the kind of credential it carried.
//!
//! Over 500 lines: it is one endpoint, and about 300 of its lines are the client
//! authentication (secret or certificate assertion) that both grants use; its tests are
//! in tests/entra/tokens.rs.

use std::{borrow::Cow, sync::Arc};

use axum::{
    Form, Json, Router,
    extract::{Path, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    ClientCredentialKind, Directory, TokenRequestRecord,
    directory::{AppRegistration, CertificateCredential, State as DirectoryState},
    resource_of_role,
};

pub(crate) const TOKEN_LIFETIME_SECS: i64 = 3599;

/// The only client assertion type Entra accepts (RFC 7523).
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Where Entra's certificate-credential errors send the developer.
const CERTIFICATE_CREDENTIALS_DOCS: &str =
    "https://learn.microsoft.com/entra/identity-platform/certificate-credentials";

/// The clock skew Entra tolerates on a client assertion's `nbf` and `exp`.
const ASSERTION_CLOCK_SKEW_SECS: i64 = 300;

pub fn router() -> Router<Arc<Directory>> {
    Router::new().route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
}

/// The form fields of a token request (both grants).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
    pub scope: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
}

/// The claims of an app-only access token, as Entra issues them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AccessTokenClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub appid: String,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub ver: String,
    /// Entra's unique token identifier.
    pub uti: String,
}

/// An Entra error: the AADSTS JSON, with the HTTP status Entra uses for its
/// `error` (401 for `invalid_client`, 500 for `server_error`, 503 for
/// `temporarily_unavailable`, 400 otherwise).
#[derive(Debug)]
pub(crate) struct AadError {
    error: Cow<'static, str>,
    code: u32,
    description: String,
}

impl AadError {
    /// `error` is the OAuth error (`invalid_client`, …), `code` the AADSTS number,
    /// `description` the text after `AADSTSnnnn: `.
    pub(crate) fn new(
        error: impl Into<Cow<'static, str>>,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        Self {
            error: error.into(),
            code,
            description: description.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.error.as_ref() {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The AADSTS number.
    pub(crate) fn code(&self) -> u32 {
        self.code
    }

    /// `AADSTS900144` for a missing request parameter.
    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::new(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }
}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let now = Utc::now();
        let trace_id = Uuid::new_v4();
        let correlation_id = Uuid::new_v4();
        let status = self.status();
        let body = serde_json::json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {}",
                self.code, self.description, now.format("%Y-%m-%d %H:%M:%SZ")
            ),
            "error_codes": [self.code],
            "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (status, Json(body)).into_response()
    }
}

/// How a client proved who it is.
#[derive(Debug)]
pub(crate) enum PresentedCredential {
    Secret(String),
    Assertion {
        assertion_type: Option<String>,
        assertion: String,
    },
    None,
}

impl PresentedCredential {
    fn kind(&self) -> ClientCredentialKind {
        match self {
            Self::Secret(_) => ClientCredentialKind::ClientSecret,
            Self::Assertion { .. } => ClientCredentialKind::Certificate,
            Self::None => ClientCredentialKind::None,
        }
    }
}

/// The client named in a request and its credential, from the body or from HTTP
/// Basic (`client_secret_basic`: both parts form-urlencoded, RFC 6749 §2.3.1).
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    pub client_id: Option<String>,
    pub credential: PresentedCredential,
}

fn client_identity(request: &TokenRequest, headers: &HeaderMap) -> ClientIdentity {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            Some((form_decode(id), form_decode(secret)))
        });
    let client_id = request
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()));
    let credential = if let Some(assertion) = request.client_assertion.clone() {
        PresentedCredential::Assertion {
            assertion_type: request.client_assertion_type.clone(),
            assertion,
        }
    } else if let Some(secret) = request
        .client_secret
        .clone()
        .or_else(|| basic.map(|(_, secret)| secret))
    {
        PresentedCredential::Secret(secret)
    } else {
        PresentedCredential::None
    };
    ClientIdentity {
        client_id,
        credential,
    }
}

fn form_decode(component: &str) -> String {
    url::form_urlencoded::parse(format!("v={component}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn token_endpoint(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    // A body that is not a form is answered as one without parameters: Entra
    // names the first missing one.
    let request = form.map(|Form(r)| r).unwrap_or_default();
    let identity = client_identity(&request, &headers);
    let tenant_id = Uuid::parse_str(&tenant).ok();
    let injected = directory.take_fault(crate::fault_injection::Endpoint::Token, tenant_id, None);
    let result = match injected {
        Some(crate::fault_injection::Effect::Aadsts {
            code,
            error,
            description,
        }) => Err(AadError::new(error, code, description)),
        Some(crate::fault_injection::Effect::Http {
            status,
            code,
            message,
            ..
        }) => {
            // The token endpoint down or answering garbage: not Entra's JSON.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (status, format!("{code}: {message}")).into_response();
        }
        Some(crate::fault_injection::Effect::Drop) => {
            return (StatusCode::BAD_GATEWAY, "").into_response();
        }
        Some(
            effect @ (crate::fault_injection::Effect::Delay { .. }
            | crate::fault_injection::Effect::AcceptThenDelay { .. }),
        ) => {
            tokio::time::sleep(effect.delay().unwrap_or_default()).await;
            decide(&directory, &tenant, &request, &identity)
        }
        Some(crate::fault_injection::Effect::Smtp { .. }) | None => {
            decide(&directory, &tenant, &request, &identity)
        }
    };
    directory.lock().token_requests.push(TokenRequestRecord {
        tenant: tenant.clone(),
        client_id: identity.client_id.clone().unwrap_or_default(),
        scope: request.scope.clone().unwrap_or_default(),
        error_code: result.as_ref().err().map(AadError::code),
        at: Utc::now(),
        grant_type: request.grant_type.clone().unwrap_or_default(),
        credential: identity.credential.kind(),
    });
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn decide(
    directory: &Directory,
    tenant: &str,
    request: &TokenRequest,
    identity: &ClientIdentity,
) -> Result<Value, AadError> {
    let Some(client_id) = identity.client_id.as_deref() else {
        return Err(AadError::missing_parameter("client_id"));
    };
    match request.grant_type.as_deref() {
        Some("client_credentials") => {
            client_credentials(directory, tenant, request, client_id, &identity.credential)
        }
        Some("authorization_code") => {
            crate::oidc::redeem_code(directory, tenant, request, client_id, &identity.credential)
        }
        Some(other) => Err(AadError::new(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{other}'."),
        )),
        None => Err(AadError::missing_parameter("grant_type")),
    }
}

/// `common`, `organizations` and `consumers`: path segments that name no tenant.
pub(crate) fn is_tenant_alias(segment: &str) -> bool {
    ["common", "organizations", "consumers"]
        .iter()
        .any(|alias| segment.eq_ignore_ascii_case(alias))
}

/// The tenant a path segment names (its id); `AADSTS90002` when there is none.
pub(crate) fn resolve_tenant(state: &DirectoryState, segment: &str) -> Result<Uuid, AadError> {
    Uuid::parse_str(segment)
        .ok()
        .filter(|id| state.tenants.contains_key(id))
        .ok_or_else(|| {
            AadError::new(
                "invalid_request",
                90002,
                format!(
                    "Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
            )
        })
}

/// `AADSTS700016`: the app has no service principal in the tenant.
pub(crate) fn app_not_in_directory(client_id: &str, directory_name: &str) -> AadError {
    AadError::new(
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{directory_name}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

/// The resource of a client-credentials `scope` (`{resource}/.default`).
fn requested_resource(scope: Option<&str>) -> Result<&str, AadError> {
    let Some(scope) = scope.filter(|s| !s.trim().is_empty()) else {
        return Err(AadError::missing_parameter("scope"));
    };
    match scope.split_whitespace().collect::<Vec<_>>().as_slice() {
        [single] => single.strip_suffix("/.default").ok_or_else(|| {
            AadError::new(
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {single} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            )
        }),
        _ => Err(AadError::new(
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )),
    }
}

fn client_credentials(
    directory: &Directory,
    tenant: &str,
    request: &TokenRequest,
    client_id: &str,
    credential: &PresentedCredential,
) -> Result<Value, AadError> {
    // An app-only token is always for one tenant: Entra will not guess it.
    if is_tenant_alias(tenant) {
        return Err(AadError::new(
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by any provided credentials.",
        ));
    }
    let state = directory.lock();
    let tenant_id = resolve_tenant(&state, tenant)?;
    let resource = requested_resource(request.scope.as_deref())?;
    let Some(app) = state.apps.get(client_id) else {
        return Err(app_not_in_directory(client_id, tenant));
    };
    // A consent still propagating is not seen yet: as before it.
    let Some(consented) = state.tenants[&tenant_id].roles_seen(client_id, Utc::now()) else {
        return Err(app_not_in_directory(client_id, tenant));
    };
    authenticate_client(directory, app, client_id, tenant, tenant_id, credential)?;
    // Another cloud's resource is as unknown as any other.
    let Some(canonical) = crate::cloud::canonical_resource(state.cloud, resource) else {
        let tenant_name = state.tenants[&tenant_id]
            .name
            .clone()
            .unwrap_or_else(|| tenant_id.to_string());
        return Err(AadError::new(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant_name}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    };
    // Each resource sees only its own app roles; none means a token without `roles`.
    let roles = consented
        .iter()
        .filter(|role| resource_of_role(role) == canonical)
        .cloned()
        .collect();
    let now = Utc::now().timestamp();
    let claims = AccessTokenClaims {
        aud: resource.to_owned(),
        iss: format!("https://sts.windows.net/{tenant_id}/"),
        iat: now,
        nbf: now,
        exp: now + TOKEN_LIFETIME_SECS,
        appid: client_id.to_owned(),
        tid: tenant_id.to_string(),
        // The app's service principal in the tenant, as Entra puts it in app-only tokens.
        oid: crate::rbac::service_principal_object_id(tenant_id, client_id).to_string(),
        sub: crate::rbac::service_principal_object_id(tenant_id, client_id).to_string(),
        roles,
        ver: "1.0".to_owned(),
        uti: Uuid::new_v4().simple().to_string(),
    };
    let token = sign(directory, &claims)?;
    Ok(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
        "ext_expires_in": TOKEN_LIFETIME_SECS,
        "access_token": token,
    }))
}

/// Signs claims with the directory's key (RS256, `kid` = the key's thumbprint).
pub(crate) fn sign<T: Serialize>(directory: &Directory, claims: &T) -> Result<String, AadError> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(directory.key_id.clone());
    jsonwebtoken::encode(&header, claims, &directory.signing_key)
        .map_err(|e| AadError::new("server_error", 50000, format!("token signing failed: {e}")))
}

/// Checks the credential a confidential client presented: one of the app's client
/// secrets, or a client assertion signed with one of its certificates and
/// addressed to this token endpoint (`{base}/{tenant}/oauth2/v2.0/token`, with the
/// tenant as in the request path or as its id).
pub(crate) fn authenticate_client(
    directory: &Directory,
    app: &AppRegistration,
    client_id: &str,
    tenant_segment: &str,
    tenant_id: Uuid,
    credential: &PresentedCredential,
) -> Result<(), AadError> {
    match credential {
        PresentedCredential::None => Err(AadError::new(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
        PresentedCredential::Secret(secret) => {
            let now = Utc::now();
            let matching = app.secrets.iter().filter(|s| s.value == *secret);
            let mut expired = false;
            for candidate in matching {
                match candidate.expires_at {
                    Some(at) if at <= now => expired = true,
                    _ => return Ok(()),
                }
            }
            if expired {
                Err(AadError::new(
                    "invalid_client",
                    7000222,
                    format!(
                        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds"
                    ),
                ))
            } else {
                Err(AadError::new(
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ))
            }
        }
        PresentedCredential::Assertion {
            assertion_type,
            assertion,
        } => {
            match assertion_type.as_deref() {
                None => return Err(AadError::missing_parameter("client_assertion_type")),
                Some(JWT_BEARER_ASSERTION) => {}
                Some(_) => {
                    return Err(AadError::new(
                        "invalid_request",
                        90011,
                        "Unexpected client assertion type.",
                    ));
                }
            }
            let audiences = [
                format!("{}/{tenant_segment}/oauth2/v2.0/token", directory.base_url),
                format!("{}/{tenant_id}/oauth2/v2.0/token", directory.base_url),
            ];
            verify_client_assertion(app, client_id, &audiences, assertion)
        }
    }
}

/// A decoded, not yet verified, compact JWS.
struct CompactJwt<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: &'a str,
}

fn malformed_jwt() -> AadError {
    AadError::new(
        "invalid_request",
        50027,
        "JWT token is invalid or malformed.",
    )
}

/// The assertion's header and claims as JSON objects. Not
/// `jsonwebtoken::decode_header`: it refuses an `alg` it does not know (`none`,
/// `HS256` …) with its own error, where Entra answers AADSTS5002738 naming the
/// algorithm. The signature is still verified by `jsonwebtoken`.
fn parse_compact_jwt(token: &str) -> Result<CompactJwt<'_>, AadError> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or_else(malformed_jwt)?;
    let (header, claims) = signing_input.split_once('.').ok_or_else(malformed_jwt)?;
    let object = |part: &str| -> Result<Map<String, Value>, AadError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| malformed_jwt())?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(malformed_jwt()),
        }
    };
    Ok(CompactJwt {
        header: object(header)?,
        claims: object(claims)?,
        signing_input,
        signature,
    })
}

/// Which registered key the assertion's header names, and how (for the
/// "Thumbprint of key used by client" Entra reports).
enum KeyReference {
    Sha256(Vec<u8>),
    Sha1(Vec<u8>),
    KeyId(String),
}

impl KeyReference {
    fn from_header(header: &Map<String, Value>) -> Option<Self> {
        let text = |name: &str| header.get(name).and_then(Value::as_str);
        let thumbprint = |value: &str| URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).ok();
        if let Some(value) = text("x5t#S256") {
            return Some(Self::Sha256(thumbprint(value).unwrap_or_default()));
        }
        if let Some(value) = text("x5t") {
            return Some(Self::Sha1(thumbprint(value).unwrap_or_default()));
        }
        text("kid").map(|kid| Self::KeyId(kid.to_owned()))
    }

    fn shown(&self) -> String {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02X}")).collect::<String>();
        match self {
            Self::Sha256(bytes) | Self::Sha1(bytes) => hex(bytes),
            Self::KeyId(kid) => kid.clone(),
        }
    }

    fn find<'a>(&self, app: &'a AppRegistration) -> Option<&'a CertificateCredential> {
        app.certificates.iter().find(|c| match self {
            Self::Sha256(bytes) => c.sha256 == *bytes,
            Self::Sha1(bytes) => c.sha1 == *bytes,
            Self::KeyId(kid) => {
                c.thumbprints.key_id.to_string().eq_ignore_ascii_case(kid)
                    || c.thumbprints.sha1_hex.eq_ignore_ascii_case(kid)
            }
        })
    }
}

/// Entra's timestamps in assertion errors: `2024-10-02T22:05:03.6755165Z`.
fn entra_instant(at: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        at.format("%Y-%m-%dT%H:%M:%S"),
        at.timestamp_subsec_nanos() / 100
    )
}

fn verify_client_assertion(
    app: &AppRegistration,
    client_id: &str,
    audiences: &[String],
    assertion: &str,
) -> Result<(), AadError> {
    let jwt = parse_compact_jwt(assertion)?;
    let algorithm = match jwt.header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("RS384") => Algorithm::RS384,
        Some("RS512") => Algorithm::RS512,
        Some("PS256") => Algorithm::PS256,
        other => {
            return Err(AadError::new(
                "invalid_client",
                5002738,
                format!(
                    "Invalid JWT token. '{}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256,RS384,RS512'",
                    other.unwrap_or_default()
                ),
            ));
        }
    };
    let Some(key_reference) = KeyReference::from_header(&jwt.header) else {
        return Err(AadError::new(
            "invalid_client",
            5002723,
            "Invalid JWT token. No certificate SHA-1 thumbprint, certificate SHA-256 thumbprint, nor keyId specified in token header.",
        ));
    };

    let missing_field = |name: &str| {
        AadError::new(
            "invalid_request",
            90014,
            format!(
                "The required field '{name}' is missing from the credential. Ensure that you have all the necessary parameters for the login request."
            ),
        )
    };
    let claim = |name: &str| jwt.claims.get(name).filter(|v| !v.is_null());
    let text_claim = |name: &str| -> Result<&str, AadError> {
        match claim(name) {
            None => Err(missing_field(name)),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
            Some(Value::String(_)) => Err(missing_field(name)),
            Some(_) => Err(malformed_jwt()),
        }
    };
    let audience = text_claim("aud")?;
    let issuer = text_claim("iss")?;
    let subject = text_claim("sub")?;
    text_claim("jti")?;
    let instant_claim = |name: &str| -> Result<i64, AadError> {
        match claim(name) {
            // Entra reads an absent time as the epoch (it then reports "1970-01-01").
            None => Ok(0),
            Some(value) => value.as_i64().ok_or_else(malformed_jwt),
        }
    };
    let not_before = instant_claim("nbf")?;
    let expires = instant_claim("exp")?;

    if issuer != subject {
        return Err(AadError::new(
            "invalid_client",
            50048,
            "Subject mismatches Issuer claim in the client assertion.",
        ));
    }
    if issuer != client_id {
        return Err(AadError::new(
            "invalid_client",
            700021,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at {CERTIFICATE_CREDENTIALS_DOCS} ."
            ),
        ));
    }
    if !audiences.iter().any(|a| a == audience) {
        return Err(AadError::new(
            "invalid_client",
            50012,
            "Client assertion audience claim does not match Realm issuer.",
        ));
    }

    let graph_hint = format!(
        "Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/{client_id}'"
    );
    let invalid_signature = |reason: &str, found: Option<&CertificateCredential>| {
        let found = found
            .map(|c| {
                format!(
                    " Found key 'Start={}, End={}',",
                    c.thumbprints.not_before.format("%m/%d/%Y %H:%M:%S"),
                    c.thumbprints.not_after.format("%m/%d/%Y %H:%M:%S")
                )
            })
            .unwrap_or_default();
        AadError::new(
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint of key used by client: '{}',{found} {graph_hint}].",
                key_reference.shown()
            ),
        )
    };
    let Some(certificate) = key_reference.find(app) else {
        return Err(invalid_signature("The key was not found.", None));
    };
    let now = Utc::now();
    if now < certificate.thumbprints.not_before || now > certificate.thumbprints.not_after {
        return Err(invalid_signature(
            "The key used is expired.",
            Some(certificate),
        ));
    }
    let key = DecodingKey::from_rsa_raw_components(&certificate.modulus, &certificate.exponent);
    let verified =
        jsonwebtoken::crypto::verify(jwt.signature, jwt.signing_input.as_bytes(), &key, algorithm)
            .map_err(|_| malformed_jwt())?;
    if !verified {
        return Err(invalid_signature(
            "The provided signature value did not match the expected signature value.",
            Some(certificate),
        ));
    }

    let instant = |seconds: i64| DateTime::from_timestamp(seconds, 0).unwrap_or_default();
    let now_secs = now.timestamp();
    if not_before > now_secs + ASSERTION_CLOCK_SKEW_SECS
        || expires <= now_secs - ASSERTION_CLOCK_SKEW_SECS
    {
        return Err(AadError::new(
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at {CERTIFICATE_CREDENTIALS_DOCS} .",
                entra_instant(now),
                entra_instant(instant(not_before)),
                entra_instant(instant(expires)),
            ),
        ));
    }
    Ok(())
}
