//! The OpenID Connect provider MSP staff sign in with, in Entra's v2 shape.
//!
//! - `GET /{tenant | organizations | common}/v2.0/.well-known/openid-configuration`:
//!   the discovery document. For a tenant its issuer is `{base}/{tenant id}/v2.0`;
//!   for `organizations` and `common` it is the template `{base}/{tenantid}/v2.0`
//!   (with `{tenantid}` literally), exactly like Entra's multi-tenant discovery:
//!   a relying party substitutes the token's `tid`, compares with `iss`, then checks
//!   `tid` against its own allow-list — the keys are shared by all tenants.
//! - `GET /{tenant}/discovery/v2.0/keys`: the signing key as a JWK (`kty` RSA,
//!   `use` sig, `alg` RS256, `kid`, `x5t`, `n`, `e`, `x5c`, `issuer`).
//! - `GET /{tenant}/oauth2/v2.0/authorize`: `response_type=code`, `client_id`,
//!   `redirect_uri`, `scope` (`openid profile email`), `state`, `nonce`,
//!   `code_challenge` + `code_challenge_method` (S256 or plain), `response_mode`
//!   (query, fragment or form_post), `prompt`, `login_hint`. A sign-in page lists
//!   the directory's users (`#user`, `#sign-in`, `#cancel`); `sim_user=<email>`
//!   signs in without it, as does [`Directory::sign_in`]. The browser goes back with
//!   `code`, `state` and `session_state`, or `error=access_denied` on Cancel.
//! - `POST /{tenant}/oauth2/v2.0/token` with `grant_type=authorization_code` (routed
//!   here by the token endpoint): client secret (body or Basic) or client assertion,
//!   the code (single use, ten minutes), the same `redirect_uri`, the PKCE
//!   `code_verifier`. Answers `id_token` (RS256; `iss` `{base}/{tid}/v2.0`, `aud`
//!   client_id, `tid`, `sub`, `nonce`, `iat`, `nbf`, `exp`, `ver` 2.0, with `profile`:
//!   `oid`, `name`, `preferred_username`, with `email`: `email`), a Graph
//!   `access_token`, `token_type`, `expires_in`, `scope`. No refresh tokens.
//! - `GET /oidc/userinfo` (Graph's) with that access token.
//! - `GET /{tenant}/oauth2/v2.0/logout`: back to `post_logout_redirect_uri`.
//!
//! Signing in records the user's consent to the app's sign-in permissions in their
//! tenant; if an admin revokes it before the code is redeemed, redemption fails
//! with `AADSTS65001`.
//!
//! Over 500 lines: it is one sign-in flow: the authorize step (about 440 lines with its
//! page) and the code redemption (about 210) share the authorization code record and
//! its PKCE challenge; discovery, keys, userinfo and logout are short; its tests are in
//! tests/entra/sign_in.rs.

use std::{fmt::Write, sync::Arc};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use uuid::Uuid;

use crate::{
    Directory, LoginPageError, SimUser,
    consent::{found, login_page, registered_redirect_uri, trace_suffix},
    control::escape,
    directory::{State as DirectoryState, sha256},
    token::{
        AadError, PresentedCredential, TOKEN_LIFETIME_SECS, TokenRequest, app_not_in_directory,
        authenticate_client, is_tenant_alias, resolve_tenant, sign,
    },
};

/// Microsoft Graph's application id: the audience of a user's Graph token.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// How long an ID token is valid.
const ID_TOKEN_LIFETIME_SECS: i64 = 3600;

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize).post(sign_in_form),
        )
        .route("/{tenant}/oauth2/v2.0/logout", get(logout))
        .route("/oidc/userinfo", get(userinfo))
}

/// An issued authorization code and what it was issued for.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationCode {
    client_id: String,
    redirect_uri: String,
    /// The tenant path segment the code was requested at.
    segment: String,
    user: SimUser,
    scopes: Vec<String>,
    nonce: Option<String>,
    challenge: Option<CodeChallenge>,
    issued_at: DateTime<Utc>,
    redeemed: bool,
}

#[derive(Debug, Clone)]
struct CodeChallenge {
    challenge: String,
    method: ChallengeMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChallengeMethod {
    S256,
    Plain,
}

impl CodeChallenge {
    fn verifies(&self, verifier: &str) -> bool {
        match self.method {
            ChallengeMethod::Plain => self.challenge == verifier,
            ChallengeMethod::S256 => {
                URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes())) == self.challenge
            }
        }
    }
}

/// The issuer of tokens for `tenant_id`.
fn issuer(directory: &Directory, tenant_id: &str) -> String {
    format!("{}/{tenant_id}/v2.0", directory.base_url)
}

/// The tenant id, or `{tenantid}` for the multi-tenant aliases; `AADSTS90002` for
/// an unknown tenant (`consumers` included: the simulator has no personal accounts).
fn issuer_tenant(state: &DirectoryState, segment: &str) -> Result<String, AadError> {
    if is_tenant_alias(segment) && !segment.eq_ignore_ascii_case("consumers") {
        Ok("{tenantid}".to_owned())
    } else {
        resolve_tenant(state, segment).map(|id| id.to_string())
    }
}

async fn discovery(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
) -> Response {
    let issuer_tenant = match issuer_tenant(&directory.lock(), &tenant) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let base = &directory.base_url;
    let segment = if issuer_tenant == "{tenantid}" {
        tenant.to_ascii_lowercase()
    } else {
        issuer_tenant.clone()
    };
    let tenant_region_scope = if issuer_tenant == "{tenantid}" {
        Value::Null
    } else {
        Value::from("EU")
    };
    Json(serde_json::json!({
        "token_endpoint": format!("{base}/{segment}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{segment}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer(&directory, &issuer_tenant),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{segment}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{segment}/oauth2/v2.0/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
            "name", "tid", "ver", "at_hash", "c_hash", "email"
        ],
        "kerberos_endpoint": format!("{base}/{segment}/kerberos"),
        "tenant_region_scope": tenant_region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

async fn keys(State(directory): State<Arc<Directory>>, Path(tenant): Path<String>) -> Response {
    let issuer_tenant = match issuer_tenant(&directory.lock(), &tenant) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let mut key = directory.signing_jwk.clone();
    key["issuer"] = Value::from(issuer(&directory, &issuer_tenant));
    Json(serde_json::json!({ "keys": [key] })).into_response()
}

/// How the authorization response reaches the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// An authorization response (success or error) on its way to the app.
struct Callback {
    redirect_uri: Url,
    mode: ResponseMode,
    params: Vec<(&'static str, String)>,
}

impl Callback {
    /// The URL the browser is sent to (for `form_post`, with the parameters in
    /// the query: what the posted form carries).
    fn url(&self) -> String {
        let mut url = self.redirect_uri.clone();
        if self.mode == ResponseMode::Fragment {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(self.params.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            url.set_fragment(Some(&fragment));
        } else {
            url.query_pairs_mut()
                .extend_pairs(self.params.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url.into()
    }

    fn into_response(self) -> Response {
        if self.mode != ResponseMode::FormPost {
            return found(&self.url());
        }
        let mut body = format!(
            "<form id=\"response\" method=\"post\" action=\"{}\">",
            escape(self.redirect_uri.as_str())
        );
        for (name, value) in &self.params {
            let _ = write!(
                body,
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            );
        }
        body.push_str(
            "<noscript><button type=\"submit\">Continue</button></noscript></form>\
             <script>document.getElementById('response').submit()</script>",
        );
        Html(login_page("Working…", &body)).into_response()
    }
}

/// An authorization error sent back to the app.
fn error_callback(
    redirect_uri: &Url,
    mode: ResponseMode,
    state: Option<&str>,
    error: &'static str,
    code: u32,
    text: &str,
) -> Callback {
    let mut params = vec![
        ("error", error.to_owned()),
        (
            "error_description",
            format!("AADSTS{code}: {text}{}", trace_suffix()),
        ),
        (
            "error_uri",
            format!("https://login.microsoftonline.com/error?code={code}"),
        ),
    ];
    if let Some(state) = state {
        params.push(("state", state.to_owned()));
    }
    Callback {
        redirect_uri: redirect_uri.clone(),
        mode,
        params,
    }
}

/// The query of an authorization request, with the simulator's shortcut.
#[derive(Debug, Default, Deserialize)]
struct AuthorizeQuery {
    client_id: Option<String>,
    response_type: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    response_mode: Option<String>,
    prompt: Option<String>,
    login_hint: Option<String>,
    /// Sign in as this user without showing the page.
    sim_user: Option<String>,
}

impl AuthorizeQuery {
    /// The query of `url` read as the endpoint reads a browser's request.
    fn from_url(url: &Url) -> Result<Self, LoginPageError> {
        serde_urlencoded::from_str(url.query().unwrap_or_default()).map_err(|e| {
            LoginPageError::new(90100, format!("The parameter is empty or not valid: {e}"))
        })
    }
}

/// What the sign-in page posts back.
#[derive(Debug, Deserialize)]
struct SignInForm {
    user: Option<String>,
    action: String,
}

/// A validated authorization request.
struct AuthorizeRequest {
    segment: String,
    client_id: String,
    app_name: String,
    redirect_uri: Url,
    mode: ResponseMode,
    scopes: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    challenge: Option<CodeChallenge>,
    /// Users allowed to sign in here: the tenant's, or all for the aliases.
    users: Vec<SimUser>,
    login_hint: Option<String>,
}

enum AuthorizeRefusal {
    Page(LoginPageError),
    Callback(Callback),
}

impl From<LoginPageError> for AuthorizeRefusal {
    fn from(error: LoginPageError) -> Self {
        Self::Page(error)
    }
}

fn validate_authorize(
    directory: &Directory,
    segment: &str,
    query: &AuthorizeQuery,
) -> Result<AuthorizeRequest, AuthorizeRefusal> {
    let state = directory.lock();
    let Some(client_id) = query.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(LoginPageError::missing_parameter("client_id").into());
    };
    let tenant = match issuer_tenant(&state, segment) {
        Ok(tenant) => tenant,
        Err(_) => return Err(LoginPageError::unknown_tenant(segment).into()),
    };
    let Some(app) = state.apps.get(client_id) else {
        return Err(LoginPageError::unknown_app(client_id, segment).into());
    };
    let redirect_uri =
        registered_redirect_uri(&app.redirect_uris, client_id, query.redirect_uri.as_deref())?;
    let mode = match query.response_mode.as_deref() {
        None | Some("query") => ResponseMode::Query,
        Some("fragment") => ResponseMode::Fragment,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(LoginPageError::new(
                70007,
                format!("The response_mode '{other}' is not supported."),
            )
            .into());
        }
    };
    let state_param = query.state.as_deref();
    let refuse = |error: &'static str, code: u32, text: &str| {
        AuthorizeRefusal::Callback(error_callback(
            &redirect_uri,
            mode,
            state_param,
            error,
            code,
            text,
        ))
    };
    match query.response_type.as_deref() {
        None | Some("") => {
            return Err(refuse(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'response_type'.",
            ));
        }
        Some("code") => {}
        Some(other) => {
            return Err(refuse(
                "unsupported_response_type",
                70005,
                &format!("response_type '{other}' is not enabled for the application."),
            ));
        }
    }
    let scopes: Vec<String> = query
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return Err(refuse(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        ));
    }
    let challenge = match query.code_challenge.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(challenge) => {
            let method = match query.code_challenge_method.as_deref() {
                None | Some("plain") => ChallengeMethod::Plain,
                Some("S256") => ChallengeMethod::S256,
                Some(_) => {
                    return Err(refuse(
                        "invalid_request",
                        50149,
                        "Invalid Code_Challenge_method parameter.",
                    ));
                }
            };
            if !(43..=128).contains(&challenge.len()) {
                return Err(refuse(
                    "invalid_request",
                    501491,
                    "Invalid size of Code_Challenge parameter.",
                ));
            }
            Some(CodeChallenge {
                challenge: challenge.to_owned(),
                method,
            })
        }
    };
    // No session survives in the simulator: a silent request signs in only with
    // the simulator's own shortcut.
    if query.prompt.as_deref() == Some("none") && query.sim_user.is_none() {
        return Err(refuse(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in.",
        ));
    }
    let users = state
        .users
        .iter()
        .filter(|u| tenant == "{tenantid}" || u.tenant_id.to_string() == tenant)
        .cloned()
        .collect();
    Ok(AuthorizeRequest {
        segment: segment.to_owned(),
        client_id: client_id.to_owned(),
        app_name: app.name(client_id).to_owned(),
        redirect_uri,
        mode,
        scopes,
        state: query.state.clone(),
        nonce: query.nonce.clone(),
        challenge,
        users,
        login_hint: query.login_hint.clone(),
    })
}

/// An unguessable token of `uuids` × 16 random bytes, base64url.
fn random_token(uuids: usize) -> String {
    let bytes: Vec<u8> = (0..uuids)
        .flat_map(|_| *Uuid::new_v4().as_bytes())
        .collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `email` in for the request and issues the code.
fn complete_sign_in(
    directory: &Directory,
    request: &AuthorizeRequest,
    email: &str,
) -> Result<Callback, LoginPageError> {
    let Some(user) = request
        .users
        .iter()
        .find(|u| u.email.eq_ignore_ascii_case(email))
        .cloned()
    else {
        return Err(LoginPageError::new(
            50034,
            format!(
                "The user account {email} does not exist in the '{}' directory. To sign into this application, the account must be added to the directory.",
                request.segment
            ),
        ));
    };
    let code = format!("1.A{}", random_token(3));
    let mut state = directory.lock();
    // Signing in consents to the app's sign-in permissions for this user's tenant
    // (user consent), which creates the app's service principal there.
    let tenant = state.tenants.entry(user.tenant_id).or_default();
    tenant
        .consents
        .entry(request.client_id.clone())
        .or_default();
    tenant.delegated_grants.insert(request.client_id.clone());
    state.authorization_codes.insert(
        code.clone(),
        AuthorizationCode {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.to_string(),
            segment: request.segment.clone(),
            user,
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            challenge: request.challenge.clone(),
            issued_at: Utc::now(),
            redeemed: false,
        },
    );
    let mut params = vec![("code", code)];
    if let Some(value) = &request.state {
        params.push(("state", value.clone()));
    }
    params.push(("session_state", Uuid::new_v4().to_string()));
    Ok(Callback {
        redirect_uri: request.redirect_uri.clone(),
        mode: request.mode,
        params,
    })
}

/// The user declined: `access_denied`, as when consent is refused.
fn decline(request: &AuthorizeRequest) -> Callback {
    error_callback(
        &request.redirect_uri,
        request.mode,
        request.state.as_deref(),
        "access_denied",
        65004,
        "User declined to consent to access the app.",
    )
}

fn sign_in_page(request: &AuthorizeRequest) -> Response {
    let mut body = format!(
        "<h2>Sign in</h2><p>to continue to <strong id=\"app-name\">{}</strong></p>",
        escape(&request.app_name)
    );
    if request.users.is_empty() {
        body.push_str(
            "<p id=\"error\" data-code=\"50034\">No user accounts exist in this directory.</p>",
        );
    }
    body.push_str("<form method=\"post\"><label for=\"user\">Account</label><select id=\"user\" name=\"user\">");
    for user in &request.users {
        let selected = request
            .login_hint
            .as_deref()
            .is_some_and(|hint| hint.eq_ignore_ascii_case(&user.email));
        let _ = write!(
            body,
            "<option value=\"{0}\"{1}>{2} ({0})</option>",
            escape(&user.email),
            if selected { " selected" } else { "" },
            escape(&user.name)
        );
    }
    body.push_str(
        "</select><div class=\"actions\">\
         <button id=\"cancel\" type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\
         <button id=\"sign-in\" class=\"primary\" type=\"submit\" name=\"action\" value=\"sign_in\">Sign in</button>\
         </div></form>",
    );
    Html(login_page("Sign in to your account", &body)).into_response()
}

async fn authorize(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    let request = match validate_authorize(&directory, &tenant, &query) {
        Ok(request) => request,
        Err(AuthorizeRefusal::Page(error)) => return error.into_response(),
        Err(AuthorizeRefusal::Callback(callback)) => return callback.into_response(),
    };
    match query.sim_user.as_deref() {
        Some(email) => match complete_sign_in(&directory, &request, email) {
            Ok(callback) => callback.into_response(),
            Err(error) => error.into_response(),
        },
        None => sign_in_page(&request),
    }
}

async fn sign_in_form(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Query(query): Query<AuthorizeQuery>,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let request = match validate_authorize(&directory, &tenant, &query) {
        Ok(request) => request,
        Err(AuthorizeRefusal::Page(error)) => return error.into_response(),
        Err(AuthorizeRefusal::Callback(callback)) => return callback.into_response(),
    };
    let Ok(Form(form)) = form else {
        return LoginPageError::missing_parameter("action").into_response();
    };
    if form.action == "cancel" {
        return decline(&request).into_response();
    }
    let Some(email) = form.user.as_deref().filter(|u| !u.is_empty()) else {
        return LoginPageError::missing_parameter("user").into_response();
    };
    match complete_sign_in(&directory, &request, email) {
        Ok(callback) => callback.into_response(),
        Err(error) => error.into_response(),
    }
}

/// The claims of an ID token, as Entra's v2 endpoint issues them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IdTokenClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
}

/// The claims of a user's (delegated) Graph access token.
#[derive(Debug, Serialize, Deserialize)]
struct DelegatedAccessTokenClaims {
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    appid: String,
    name: String,
    oid: String,
    scp: String,
    sub: String,
    tid: String,
    upn: String,
    uti: String,
    ver: String,
}

/// Entra's pairwise subject: stable per user and app, different across apps.
fn pairwise_subject(oid: &str, client_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(format!("{oid}{client_id}").as_bytes()))
}

fn invalid_grant(code: u32, text: impl Into<String>) -> AadError {
    AadError::new("invalid_grant", code, text)
}

/// The `authorization_code` grant: checks the client, the code and PKCE, and
/// answers with the ID token and a Graph access token.
pub(crate) fn redeem_code(
    directory: &Directory,
    segment: &str,
    request: &TokenRequest,
    client_id: &str,
    credential: &PresentedCredential,
) -> Result<Value, AadError> {
    let mut state = directory.lock();
    issuer_tenant(&state, segment)?;
    let Some(code) = request.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(AadError::missing_parameter("code"));
    };
    let Some(app) = state.apps.get(client_id) else {
        return Err(app_not_in_directory(client_id, segment));
    };
    let Some(issued) = state.authorization_codes.get(code).cloned() else {
        return Err(invalid_grant(
            9002313,
            "Invalid request. Request is malformed or invalid.",
        ));
    };
    let tenant_id = issued.user.tenant_id;
    authenticate_client(directory, app, client_id, segment, tenant_id, credential)?;
    if issued.client_id != client_id {
        return Err(invalid_grant(
            70000,
            "The provided value for the 'code' parameter is not valid.",
        ));
    }
    if issued.redeemed {
        return Err(invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        ));
    }
    if Utc::now() - issued.issued_at >= state.code_lifetime {
        return Err(invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        ));
    }
    let same_tenant = segment.eq_ignore_ascii_case(&issued.segment)
        || segment.eq_ignore_ascii_case(&tenant_id.to_string())
        || (is_tenant_alias(segment) && is_tenant_alias(&issued.segment));
    if !same_tenant {
        return Err(invalid_grant(
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        ));
    }
    let Some(redirect_uri) = request.redirect_uri.as_deref().filter(|r| !r.is_empty()) else {
        return Err(AadError::missing_parameter("redirect_uri"));
    };
    if redirect_uri != issued.redirect_uri {
        return Err(AadError::new(
            "invalid_client",
            500112,
            format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting Authorization code.",
                issued.redirect_uri
            ),
        ));
    }
    if let Some(challenge) = &issued.challenge {
        match request.code_verifier.as_deref() {
            None | Some("") => {
                return Err(invalid_grant(
                    50148,
                    "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
                ));
            }
            Some(verifier) if !challenge.verifies(verifier) => {
                return Err(invalid_grant(
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                ));
            }
            Some(_) => {}
        }
    }
    let app_name = app.name(client_id).to_owned();
    let tenant = state.tenants.get(&tenant_id);
    if !tenant.is_some_and(|t| t.consents.contains_key(client_id)) {
        return Err(app_not_in_directory(client_id, &tenant_id.to_string()));
    }
    if !tenant.is_some_and(|t| t.delegated_grants.contains(client_id)) {
        return Err(invalid_grant(
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' named '{app_name}'. Send an interactive authorization request for this user and resource."
            ),
        ));
    }
    if let Some(entry) = state.authorization_codes.get_mut(code) {
        entry.redeemed = true;
    }
    drop(state);

    let user = &issued.user;
    let has = |scope: &str| issued.scopes.iter().any(|s| s == scope);
    let now = Utc::now().timestamp();
    let oid = user.oid.to_string();
    let tid = tenant_id.to_string();
    let mut granted: Vec<String> = ["profile", "openid", "email"]
        .iter()
        .filter(|s| has(s))
        .map(|s| s.to_string())
        .collect();
    granted.push("User.Read".to_owned());
    let access_token = sign(
        directory,
        &DelegatedAccessTokenClaims {
            aud: GRAPH_APP_ID.to_owned(),
            iss: format!("https://sts.windows.net/{tid}/"),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECS,
            appid: client_id.to_owned(),
            name: user.name.clone(),
            oid: oid.clone(),
            scp: granted.join(" "),
            sub: pairwise_subject(&oid, GRAPH_APP_ID),
            tid: tid.clone(),
            upn: user.email.clone(),
            uti: random_token(1),
            ver: "1.0".to_owned(),
        },
    )?;
    let mut response = serde_json::json!({
        "token_type": "Bearer",
        "scope": granted
            .iter()
            .map(|s| if s == "User.Read" { "https://graph.microsoft.com/User.Read".to_owned() } else { s.clone() })
            .collect::<Vec<_>>()
            .join(" "),
        "expires_in": TOKEN_LIFETIME_SECS,
        "ext_expires_in": TOKEN_LIFETIME_SECS,
        "access_token": access_token,
    });
    if has("openid") {
        let profile = has("profile");
        let id_token = sign(
            directory,
            &IdTokenClaims {
                aud: client_id.to_owned(),
                iss: issuer(directory, &tid),
                iat: now,
                nbf: now,
                exp: now + ID_TOKEN_LIFETIME_SECS,
                name: profile.then(|| user.name.clone()),
                nonce: issued.nonce.clone(),
                oid: profile.then(|| oid.clone()),
                preferred_username: profile.then(|| user.email.clone()),
                email: has("email").then(|| user.email.clone()),
                sub: pairwise_subject(&oid, client_id),
                tid: tid.clone(),
                uti: random_token(1),
                ver: "2.0".to_owned(),
            },
        )?;
        response["id_token"] = Value::from(id_token);
    }
    Ok(response)
}

/// Graph's error shape, for the userinfo endpoint (which is Graph's).
fn graph_unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({
            "error": {
                "code": "InvalidAuthenticationToken",
                "message": message,
                "innerError": {
                    "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": Uuid::new_v4(),
                    "client-request-id": Uuid::new_v4(),
                }
            }
        })),
    )
        .into_response()
}

async fn userinfo(State(directory): State<Arc<Directory>>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return graph_unauthorized("Access token is empty.");
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[GRAPH_APP_ID, crate::GRAPH_RESOURCE]);
    validation.leeway = 0;
    let claims = match jsonwebtoken::decode::<DelegatedAccessTokenClaims>(
        token,
        &directory.verifying_key,
        &validation,
    ) {
        Ok(data) => data.claims,
        Err(_) => return graph_unauthorized("Access token validation failure."),
    };
    if !claims.scp.split_whitespace().any(|s| s == "openid") {
        return graph_unauthorized("Access token validation failure. The openid scope is missing.");
    }
    let mut body = serde_json::json!({
        "sub": pairwise_subject(&claims.oid, &claims.appid),
        "name": claims.name,
    });
    if claims.scp.split_whitespace().any(|s| s == "email") {
        body["email"] = Value::from(claims.upn);
    }
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct LogoutQuery {
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

async fn logout(Query(query): Query<LogoutQuery>) -> Response {
    match query
        .post_logout_redirect_uri
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
    {
        Some(mut url) => {
            if let Some(state) = &query.state {
                url.query_pairs_mut().append_pair("state", state);
            }
            found(url.as_str())
        }
        None => Html(login_page(
            "Sign out",
            "<h2 id=\"signed-out\">You signed out of your account</h2>\
             <p>It’s a good idea to close all browser windows.</p>",
        ))
        .into_response(),
    }
}

impl Directory {
    /// Signs `email` in at an authorization URL (as the relying party built it),
    /// as if the user picked their account on the sign-in page, and returns the
    /// URL the browser is sent back to (with `code` and `state`, or an error).
    /// Errors are those Entra shows on its own page.
    pub fn sign_in(&self, authorize_url: &str, email: &str) -> Result<String, LoginPageError> {
        let (segment, query) = parse_authorize_url(authorize_url)?;
        match validate_authorize(self, &segment, &query) {
            Ok(request) => complete_sign_in(self, &request, email).map(|c| c.url()),
            Err(AuthorizeRefusal::Page(error)) => Err(error),
            Err(AuthorizeRefusal::Callback(callback)) => Ok(callback.url()),
        }
    }

    /// Cancels the sign-in at an authorization URL and returns the URL the browser
    /// is sent back to (`error=access_denied`).
    pub fn cancel_sign_in(&self, authorize_url: &str) -> Result<String, LoginPageError> {
        let (segment, query) = parse_authorize_url(authorize_url)?;
        match validate_authorize(self, &segment, &query) {
            Ok(request) => Ok(decline(&request).url()),
            Err(AuthorizeRefusal::Page(error)) => Err(error),
            Err(AuthorizeRefusal::Callback(callback)) => Ok(callback.url()),
        }
    }
}

fn parse_authorize_url(authorize_url: &str) -> Result<(String, AuthorizeQuery), LoginPageError> {
    let url = Url::parse(authorize_url).map_err(|e| {
        LoginPageError::new(90100, format!("The parameter is empty or not valid: {e}"))
    })?;
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    match segments.as_slice() {
        [segment, "oauth2", "v2.0", "authorize"] => {
            Ok((segment.to_string(), AuthorizeQuery::from_url(&url)?))
        }
        _ => Err(LoginPageError::new(
            90100,
            format!("Not an authorization URL: {authorize_url}"),
        )),
    }
}
