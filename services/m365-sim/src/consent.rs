//! Entra admin consent: the page a customer's admin opens from the MSP's control
//! plane to grant the relay's app its application permissions in their tenant.
//!
//! - v2: `GET /{tenant | organizations | common}/v2.0/adminconsent?client_id&scope
//!   &redirect_uri&state`. Accept grants the app roles the app requests for the
//!   resources named in `scope` (`https://graph.microsoft.com/.default` → its Graph
//!   roles) and redirects to `redirect_uri?admin_consent=True&tenant=<id>&scope=…
//!   &state=…`; Cancel redirects with `error=access_denied&error_description=
//!   AADSTS65004: …&admin_consent=True&state=…` (Entra sets `admin_consent=True` on
//!   errors too).
//! - v1: `GET /{tenant}/adminconsent?client_id&state&redirect_uri` grants every role
//!   the app requests; Accept → `admin_consent=True&tenant=<id>&state=…`, Cancel →
//!   `error=permission_denied&error_description=The admin canceled the request`.
//!
//! An unknown app, a missing or unregistered redirect URI and an unknown tenant are
//! shown on an error page (`#error`), never redirected, as Entra does. The page lets
//! the simulated admin pick the tenant they administer (`#tenant`, preselected from
//! the configured default) and click `#accept` or `#cancel`; tests can skip it with
//! `sim_auto=accept|cancel&sim_tenant=<id>` or [`Directory::answer_admin_consent`].
//! Accept records the consent (the app's service principal and app-role
//! assignments) in the directory; both answers are kept in its log. With a consent
//! propagation delay (`Directory::set_consent_propagation`) the token endpoint sees
//! the consent only after that delay, as Entra's replicas do.
//!
//! This module also owns what Entra's interactive pages share: the HTML shell and
//! the error page ([`LoginPageError`]), used by the sign-in pages of `oidc.rs`.
//!
//! Over 500 lines: both endpoint versions share one validation, answer and page path;
//! about 120 lines are the interactive pages' shared parts (`LoginPageError`,
//! `login_page`, `found`, the redirect URI check) that `oidc.rs` uses too.

use std::{fmt::Write, sync::Arc};

use axum::{
    Form, Router,
    extract::{Path, Query, State, rejection::FormRejection},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::{
    AdminConsentRecord, Directory, EXCHANGE_RESOURCE, control::escape,
    directory::State as DirectoryState, resource_of_role, token::is_tenant_alias,
};

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route("/{tenant}/v2.0/adminconsent", get(show_v2).post(answer_v2))
        .route("/{tenant}/adminconsent", get(show_v1).post(answer_v1))
}

/// What the admin answers on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentDecision {
    Accept,
    Cancel,
}

/// An error Entra shows on its own page instead of sending the browser back to the
/// app (it cannot trust the app's redirect URI, or has no tenant to work in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AADSTS{code}: {message}")]
pub struct LoginPageError {
    pub code: u32,
    pub message: String,
}

impl LoginPageError {
    pub(crate) fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::new(
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub(crate) fn unknown_app(client_id: &str, directory_name: &str) -> Self {
        Self::new(
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{directory_name}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub(crate) fn unknown_tenant(segment: &str) -> Self {
        Self::new(
            90002,
            format!(
                "Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }
}

impl IntoResponse for LoginPageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<h2>Sorry, but we’re having trouble signing you in.</h2>\
             <p id=\"error\" data-code=\"{}\">{}</p>",
            self.code,
            escape(&self.to_string())
        );
        (
            StatusCode::BAD_REQUEST,
            Html(login_page("Sign in to your account", &body)),
        )
            .into_response()
    }
}

/// The HTML shell of the simulated login.microsoftonline.com pages.
pub(crate) fn login_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;background:#f2f2f2;margin:0}}\
         main{{background:#fff;max-width:28rem;margin:4rem auto;padding:2rem 2.5rem;box-shadow:0 2px 6px rgba(0,0,0,.2)}}\
         h1{{font-size:1rem;color:#555;font-weight:600;margin:0 0 1rem}}h2{{font-size:1.4rem;font-weight:600}}\
         label{{display:block;margin:1rem 0 .3rem}}select{{width:100%;padding:.4rem}}\
         .actions{{display:flex;gap:.6rem;justify-content:flex-end;margin-top:1.5rem}}\
         button{{padding:.45rem 1.4rem;border:0;cursor:pointer}}button.primary{{background:#0067b8;color:#fff}}\
         #error{{color:#a80000}}</style></head>\
         <body><main><h1>Microsoft 365 simulator</h1>{body}</main></body></html>",
        escape(title)
    )
}

/// An HTTP 302 to `location`, as Entra sends browsers back.
pub(crate) fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `Trace ID`, `Correlation ID` and `Timestamp` lines, as Entra appends them to an
/// `error_description` it sends back through the browser.
pub(crate) fn trace_suffix() -> String {
    format!(
        "\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
        Uuid::new_v4(),
        Uuid::new_v4(),
        Utc::now().format("%Y-%m-%d %H:%M:%SZ")
    )
}

/// `redirect_uri` if it is registered for the app: missing, none registered and
/// mismatch are shown on Entra's error page.
pub(crate) fn registered_redirect_uri(
    registered: &[String],
    client_id: &str,
    redirect_uri: Option<&str>,
) -> Result<Url, LoginPageError> {
    let Some(redirect_uri) = redirect_uri.filter(|r| !r.is_empty()) else {
        return Err(LoginPageError::new(900971, "No reply address provided."));
    };
    if registered.is_empty() {
        return Err(LoginPageError::new(
            500113,
            "No reply address is registered for the application.",
        ));
    }
    let mismatch = || {
        LoginPageError::new(
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this."
            ),
        )
    };
    if !registered.iter().any(|r| r == redirect_uri) {
        return Err(mismatch());
    }
    Url::parse(redirect_uri).map_err(|_| mismatch())
}

/// The tenants a page may act in: the one the path names, or, for
/// `organizations` and `common`, every tenant. Sorted by name.
pub(crate) fn tenant_choices(
    state: &DirectoryState,
    segment: &str,
) -> Result<Vec<(Uuid, String)>, LoginPageError> {
    let label = |id: &Uuid| {
        state.tenants[id]
            .name
            .clone()
            .unwrap_or_else(|| id.to_string())
    };
    if is_tenant_alias(segment) && !segment.eq_ignore_ascii_case("consumers") {
        let mut all: Vec<(Uuid, String)> =
            state.tenants.keys().map(|id| (*id, label(id))).collect();
        all.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        return Ok(all);
    }
    Uuid::parse_str(segment)
        .ok()
        .filter(|id| state.tenants.contains_key(id))
        .map(|id| vec![(id, label(&id))])
        .ok_or_else(|| LoginPageError::unknown_tenant(segment))
}

/// Which admin-consent endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndpointVersion {
    /// `/{tenant}/adminconsent`
    V1,
    /// `/{tenant}/v2.0/adminconsent`
    V2,
}

impl EndpointVersion {
    fn label(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// The query of an admin-consent request, with the simulator's own shortcuts.
#[derive(Debug, Default, Deserialize)]
struct AdminConsentQuery {
    client_id: Option<String>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    /// Answer without showing the page.
    sim_auto: Option<ConsentDecision>,
    /// The tenant the simulated admin administers.
    sim_tenant: Option<String>,
}

impl AdminConsentQuery {
    /// The query of `url` read as the endpoint reads a browser's request.
    fn from_url(url: &Url) -> Result<Self, LoginPageError> {
        serde_urlencoded::from_str(url.query().unwrap_or_default()).map_err(|e| {
            LoginPageError::new(90100, format!("The parameter is empty or not valid: {e}"))
        })
    }
}

/// What the page posts back.
#[derive(Debug, Deserialize)]
struct ConsentForm {
    tenant: Option<String>,
    decision: ConsentDecision,
}

/// A validated admin-consent request.
#[derive(Debug)]
struct ConsentRequest {
    version: EndpointVersion,
    client_id: String,
    app_name: String,
    redirect_uri: Url,
    state: Option<String>,
    /// The app roles Accept grants.
    roles: Vec<String>,
    /// The `.default` scopes asked for (v2), echoed back on success.
    default_scopes: Vec<String>,
    tenants: Vec<(Uuid, String)>,
    preselected: Option<Uuid>,
}

/// Why a request cannot be shown: on Entra's page, or back at the app.
#[derive(Debug)]
enum Refusal {
    Page(LoginPageError),
    Redirect(String),
}

impl From<LoginPageError> for Refusal {
    fn from(error: LoginPageError) -> Self {
        Self::Page(error)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Page(error) => error.into_response(),
            Self::Redirect(location) => found(&location),
        }
    }
}

/// Delegated Microsoft Graph permissions an admin can consent to on the v2 endpoint
/// without granting any application permission (the least-privilege onboarding asks
/// for `https://graph.microsoft.com/User.Read` only, which creates the service principal).
const DELEGATED_GRAPH_SCOPES: &[&str] = &["User.Read", "User.ReadBasic.All"];

/// Resolves the v2 `scope` against the app's requested roles: `{resource}/.default`
/// grants all of the resource's requested roles (the app's configured application
/// permissions), `{resource}/{role}` that role, and the OIDC scopes and delegated
/// Graph permissions (`User.Read`) none: the app's service principal is created
/// without application permissions.
fn granted_by_scope(
    cloud: crate::cloud::Cloud,
    scope: &str,
    requested: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut roles: Vec<String> = Vec::new();
    let mut default_scopes = Vec::new();
    for item in scope.split_whitespace() {
        if ["openid", "profile", "email", "offline_access"].contains(&item)
            || DELEGATED_GRAPH_SCOPES
                .iter()
                .any(|d| item.eq_ignore_ascii_case(d))
        {
            continue;
        }
        let (resource, permission) = item
            .rsplit_once('/')
            .and_then(|(resource, permission)| {
                Some((
                    crate::cloud::canonical_resource(cloud, resource)?,
                    permission,
                ))
            })
            .ok_or_else(|| item.to_owned())?;
        if permission == ".default" {
            default_scopes.push(item.to_owned());
            roles.extend(
                requested
                    .iter()
                    .filter(|role| resource_of_role(role) == resource)
                    .cloned(),
            );
        } else if resource == crate::GRAPH_RESOURCE
            && DELEGATED_GRAPH_SCOPES
                .iter()
                .any(|d| permission.eq_ignore_ascii_case(d))
        {
            // A delegated permission: consenting to it creates the app's service
            // principal in the tenant and grants no application permission.
            continue;
        } else if requested
            .iter()
            .any(|role| role == permission && resource_of_role(role) == resource)
        {
            roles.push(permission.to_owned());
        } else {
            return Err(item.to_owned());
        }
    }
    roles.sort();
    roles.dedup();
    Ok((roles, default_scopes))
}

fn validate(
    directory: &Directory,
    version: EndpointVersion,
    segment: &str,
    query: &AdminConsentQuery,
) -> Result<ConsentRequest, Refusal> {
    let state = directory.lock();
    let Some(client_id) = query.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(LoginPageError::missing_parameter("client_id").into());
    };
    let Some(app) = state.apps.get(client_id) else {
        return Err(LoginPageError::unknown_app(client_id, segment).into());
    };
    let redirect_uri =
        registered_redirect_uri(&app.redirect_uris, client_id, query.redirect_uri.as_deref())?;
    let tenants = tenant_choices(&state, segment)?;
    let (roles, default_scopes) = match version {
        EndpointVersion::V1 => (app.requested_roles.clone(), Vec::new()),
        EndpointVersion::V2 => {
            let refuse = |error: &str, code: u32, text: String| {
                let mut location = redirect_uri.clone();
                {
                    let mut pairs = location.query_pairs_mut();
                    pairs
                        .append_pair("error", error)
                        .append_pair(
                            "error_description",
                            &format!("AADSTS{code}: {text}{}", trace_suffix()),
                        )
                        .append_pair(
                            "error_uri",
                            &format!("https://login.microsoftonline.com/error?code={code}"),
                        );
                    if let Some(state) = &query.state {
                        pairs.append_pair("state", state);
                    }
                }
                Refusal::Redirect(location.into())
            };
            let Some(scope) = query.scope.as_deref().filter(|s| !s.trim().is_empty()) else {
                return Err(refuse(
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.".to_owned(),
                ));
            };
            granted_by_scope(state.cloud, scope, &app.requested_roles).map_err(|invalid| {
                refuse(
                    "invalid_scope",
                    70011,
                    format!(
                        "The provided value for the input parameter 'scope' is not valid. The scope {invalid} is not valid."
                    ),
                )
            })?
        }
    };
    let wanted = query
        .sim_tenant
        .as_deref()
        .and_then(|t| Uuid::parse_str(t).ok())
        .or(state.default_admin_tenant);
    let preselected = wanted
        .filter(|id| tenants.iter().any(|(t, _)| t == id))
        .or_else(|| (tenants.len() == 1).then(|| tenants[0].0));
    Ok(ConsentRequest {
        version,
        client_id: client_id.to_owned(),
        app_name: app.name(client_id).to_owned(),
        redirect_uri,
        state: query.state.clone(),
        roles,
        default_scopes,
        tenants,
        preselected,
    })
}

/// Applies the admin's answer and returns where Entra sends the browser.
fn answer(
    directory: &Directory,
    request: &ConsentRequest,
    decision: ConsentDecision,
    tenant: Option<Uuid>,
) -> Result<String, LoginPageError> {
    let mut location = request.redirect_uri.clone();
    let mut state = directory.lock();
    if decision == ConsentDecision::Cancel {
        {
            let mut pairs = location.query_pairs_mut();
            match request.version {
                EndpointVersion::V2 => {
                    pairs
                        .append_pair("error", "access_denied")
                        .append_pair(
                            "error_description",
                            &format!(
                                "AADSTS65004: User declined to consent to access the app.{}",
                                trace_suffix()
                            ),
                        )
                        .append_pair(
                            "error_uri",
                            "https://login.microsoftonline.com/error?code=65004",
                        )
                        .append_pair("admin_consent", "True");
                }
                EndpointVersion::V1 => {
                    pairs
                        .append_pair("error", "permission_denied")
                        .append_pair("error_description", "The admin canceled the request");
                }
            }
            if let Some(value) = &request.state {
                pairs.append_pair("state", value);
            }
        }
        state.admin_consents.push(AdminConsentRecord {
            client_id: request.client_id.clone(),
            tenant_id: tenant,
            accepted: false,
            roles: Vec::new(),
            endpoint_version: request.version.label(),
            at: Utc::now(),
        });
        return Ok(location.into());
    }

    let Some(tenant_id) = tenant.or(request.preselected) else {
        return Err(LoginPageError::missing_parameter("tenant"));
    };
    if !request.tenants.iter().any(|(id, _)| *id == tenant_id) {
        return Err(LoginPageError::unknown_tenant(&tenant_id.to_string()));
    }
    let delay = state.consent_propagation;
    let granted = {
        let now = Utc::now();
        let tenant = state.tenants.entry(tenant_id).or_default();
        // What the token endpoint saw before this consent stays what it sees until
        // the consent has propagated (an earlier consent still propagating keeps
        // its own earlier view).
        let before = tenant.roles_seen(&request.client_id, now).cloned();
        let service_principal = tenant
            .consents
            .entry(request.client_id.clone())
            .or_default();
        for role in &request.roles {
            if !service_principal.contains(role) {
                service_principal.push(role.clone());
            }
        }
        let granted = service_principal.clone();
        if delay > chrono::Duration::zero() {
            tenant.propagating.insert(
                request.client_id.clone(),
                crate::directory::Propagation {
                    visible_at: now + delay,
                    before,
                },
            );
        }
        granted
    };
    state.admin_consents.push(AdminConsentRecord {
        client_id: request.client_id.clone(),
        tenant_id: Some(tenant_id),
        accepted: true,
        roles: request.roles.clone(),
        endpoint_version: request.version.label(),
        at: Utc::now(),
    });
    {
        let mut pairs = location.query_pairs_mut();
        pairs
            .append_pair("admin_consent", "True")
            .append_pair("tenant", &tenant_id.to_string());
        if request.version == EndpointVersion::V2 {
            let mut scopes: Vec<String> = granted
                .iter()
                .map(|role| format!("{}/{role}", resource_of_role(role)))
                .collect();
            scopes.extend(request.default_scopes.iter().cloned());
            pairs.append_pair("scope", &scopes.join(" "));
        }
        if let Some(value) = &request.state {
            pairs.append_pair("state", value);
        }
    }
    Ok(location.into())
}

fn role_description(role: &str) -> &'static str {
    match role {
        "Mail.Send" => "Send mail as any user",
        "Mail.ReadWrite" => "Read and write mail in all mailboxes",
        "SMTP.SendAsApp" => "Send emails from mailboxes using SMTP AUTH",
        _ => "Application permission",
    }
}

fn resource_name(resource: &str) -> &'static str {
    if resource == EXCHANGE_RESOURCE {
        "Office 365 Exchange Online"
    } else {
        "Microsoft Graph"
    }
}

fn consent_page(request: &ConsentRequest) -> Response {
    let mut body = format!(
        "<h2>Permissions requested</h2>\
         <p><strong id=\"app-name\">{}</strong> (<span id=\"client-id\">{}</span>) \
         needs permission to access resources in your organization that only an admin can grant.</p>\
         <p>This app would like to:</p><ul id=\"permissions\">",
        escape(&request.app_name),
        escape(&request.client_id)
    );
    for role in &request.roles {
        let _ = write!(
            body,
            "<li data-role=\"{0}\"><strong>{1}</strong> — {0} ({2})</li>",
            escape(role),
            role_description(role),
            resource_name(resource_of_role(role)),
        );
    }
    if request.roles.is_empty() {
        body.push_str(
            "<li id=\"no-application-permissions\">Sign in and read user profile (delegated; no application permissions)</li>",
        );
    }
    body.push_str(
        "</ul><form method=\"post\"><label for=\"tenant\">Consent on behalf of your organization</label>\
         <select id=\"tenant\" name=\"tenant\">",
    );
    for (id, name) in &request.tenants {
        let selected = if Some(*id) == request.preselected {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{id}\"{selected}>{} ({id})</option>",
            escape(name)
        );
    }
    let _ = write!(
        body,
        "</select><p>Accepting sends you to <code id=\"redirect-uri\">{}</code>.</p>\
         <div class=\"actions\">\
         <button id=\"cancel\" type=\"submit\" name=\"decision\" value=\"cancel\">Cancel</button>\
         <button id=\"accept\" class=\"primary\" type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>\
         </div></form>",
        escape(request.redirect_uri.as_str())
    );
    Html(login_page("Permissions requested", &body)).into_response()
}

fn show(
    directory: &Directory,
    version: EndpointVersion,
    segment: &str,
    query: &AdminConsentQuery,
) -> Response {
    let request = match validate(directory, version, segment, query) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(decision) = query.sim_auto else {
        return consent_page(&request);
    };
    let tenant = match query.sim_tenant.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => match Uuid::parse_str(text) {
            Ok(id) => Some(id),
            Err(_) => return LoginPageError::unknown_tenant(text).into_response(),
        },
    };
    match answer(directory, &request, decision, tenant) {
        Ok(location) => found(&location),
        Err(error) => error.into_response(),
    }
}

fn answer_form(
    directory: &Directory,
    version: EndpointVersion,
    segment: &str,
    query: &AdminConsentQuery,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let request = match validate(directory, version, segment, query) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let Ok(Form(form)) = form else {
        return LoginPageError::missing_parameter("decision").into_response();
    };
    let tenant = match form.tenant.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => match Uuid::parse_str(text) {
            Ok(id) => Some(id),
            Err(_) => return LoginPageError::unknown_tenant(text).into_response(),
        },
    };
    match answer(directory, &request, form.decision, tenant) {
        Ok(location) => found(&location),
        Err(error) => error.into_response(),
    }
}

async fn show_v2(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Query(query): Query<AdminConsentQuery>,
) -> Response {
    show(&directory, EndpointVersion::V2, &tenant, &query)
}

async fn show_v1(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Query(query): Query<AdminConsentQuery>,
) -> Response {
    show(&directory, EndpointVersion::V1, &tenant, &query)
}

async fn answer_v2(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Query(query): Query<AdminConsentQuery>,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    answer_form(&directory, EndpointVersion::V2, &tenant, &query, form)
}

async fn answer_v1(
    State(directory): State<Arc<Directory>>,
    Path(tenant): Path<String>,
    Query(query): Query<AdminConsentQuery>,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    answer_form(&directory, EndpointVersion::V1, &tenant, &query, form)
}

impl Directory {
    /// Answers an admin-consent URL (as the relay built it) the way an admin of
    /// `tenant` would on the page, and returns the URL Entra sends the browser to.
    /// `tenant` falls back to the configured default, or to the only tenant the URL
    /// allows. Errors are those Entra shows on its own page.
    pub fn answer_admin_consent(
        &self,
        consent_url: &str,
        decision: ConsentDecision,
        tenant: Option<Uuid>,
    ) -> Result<String, LoginPageError> {
        let url = Url::parse(consent_url).map_err(|e| {
            LoginPageError::new(90100, format!("The parameter is empty or not valid: {e}"))
        })?;
        let segments: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        let (segment, version) = match segments.as_slice() {
            [segment, "v2.0", "adminconsent"] => (*segment, EndpointVersion::V2),
            [segment, "adminconsent"] => (*segment, EndpointVersion::V1),
            _ => {
                return Err(LoginPageError::new(
                    90100,
                    format!("Not an admin-consent URL: {consent_url}"),
                ));
            }
        };
        let query = AdminConsentQuery::from_url(&url)?;
        let request = match validate(self, version, segment, &query) {
            Ok(request) => request,
            Err(Refusal::Page(error)) => return Err(error),
            Err(Refusal::Redirect(location)) => return Ok(location),
        };
        answer(self, &request, decision, tenant)
    }
}
