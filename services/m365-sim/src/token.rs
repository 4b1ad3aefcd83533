//! The Entra ID token endpoint: `POST /{tenant}/oauth2/v2.0/token` with the
//! client-credentials grant. Answers exactly as Entra does: a Bearer token with
//! `expires_in` 3599 and no refresh token, or HTTP 400 with the AADSTS error JSON.

use std::sync::Arc;

use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::Utc;
use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    Directory, EXCHANGE_RESOURCE, GRAPH_RESOURCE, ROLE_SMTP_SEND_AS_APP, TokenRequestRecord,
};

pub(crate) const TOKEN_LIFETIME_SECS: i64 = 3599;

pub fn router() -> Router<Arc<Directory>> {
    Router::new().route("/{tenant}/oauth2/v2.0/token", post(issue_token))
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
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

/// An Entra error: HTTP 400 and the AADSTS JSON.
pub(crate) struct AadError {
    error: &'static str,
    code: u32,
    description: String,
}

impl AadError {
    fn new(error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            error,
            code,
            description: description.into(),
        }
    }
}

impl IntoResponse for AadError {
    fn into_response(self) -> Response {
        let now = Utc::now();
        let trace_id = Uuid::new_v4();
        let correlation_id = Uuid::new_v4();
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
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

async fn issue_token(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Form(request): Form<TokenRequest>,
) -> Response {
    let result = decide(&directory, &tenant, &request);
    directory.lock().token_requests.push(TokenRequestRecord {
        tenant: tenant.clone(),
        client_id: request.client_id.clone().unwrap_or_default(),
        scope: request.scope.clone().unwrap_or_default(),
        error_code: result.as_ref().err().map(|e| e.code),
        at: Utc::now(),
    });
    match result {
        Ok(token) => Json(serde_json::json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "access_token": token,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

fn decide(directory: &Directory, tenant: &str, request: &TokenRequest) -> Result<String, AadError> {
    let Some(client_id) = request.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(AadError::new(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    match request.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(AadError::new(
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
        None => {
            return Err(AadError::new(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
    }
    let scope = request.scope.as_deref().unwrap_or_default();
    let resource = match scope.split_whitespace().collect::<Vec<_>>().as_slice() {
        [single] => single.strip_suffix("/.default"),
        _ => None,
    };
    let Some(resource) = resource.filter(|r| *r == GRAPH_RESOURCE || *r == EXCHANGE_RESOURCE)
    else {
        return Err(AadError::new(
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        ));
    };
    let state = directory.lock();
    let Some(tenant_id) = Uuid::parse_str(tenant)
        .ok()
        .filter(|id| state.tenants.contains_key(id))
    else {
        return Err(AadError::new(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    };
    let not_in_directory = || {
        AadError::new(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    };
    let Some(expected_secret) = state.apps.get(client_id) else {
        return Err(not_in_directory());
    };
    let Some(consented) = state.tenants[&tenant_id].consents.get(client_id) else {
        return Err(not_in_directory());
    };
    if request.client_secret.as_deref() != Some(expected_secret.as_str()) {
        return Err(AadError::new(
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    // Each resource sees only its own app roles; none means a token without `roles`.
    let roles = consented
        .iter()
        .filter(|role| (role.as_str() == ROLE_SMTP_SEND_AS_APP) == (resource == EXCHANGE_RESOURCE))
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
        oid: Uuid::new_v5(&tenant_id, client_id.as_bytes()).to_string(),
        sub: Uuid::new_v5(&tenant_id, client_id.as_bytes()).to_string(),
        roles,
        ver: "1.0".to_owned(),
        uti: Uuid::new_v4().simple().to_string(),
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(directory.key_id.clone());
    jsonwebtoken::encode(&header, &claims, &directory.signing_key)
        .map_err(|e| AadError::new("server_error", 50000, format!("token signing failed: {e}")))
}
