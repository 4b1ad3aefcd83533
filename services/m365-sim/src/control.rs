//! The simulator's own endpoints under `/_sim`, for tests and for people: read the
//! mailboxes (JSON and a plain HTML page), the token requests and the admin-consent
//! answers, and set up apps (secrets, certificates, redirect URIs, requested
//! permissions), tenants, mailboxes, users and consents (and revoke them), and how
//! long a new consent takes to propagate. Nothing here exists at Microsoft.

use std::{collections::HashMap, fmt::Write, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post, put},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;
use uuid::Uuid;

use crate::{DeliveredMessage, Directory};

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route("/_sim/messages", get(messages))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/requests", get(list_requests))
        .route("/_sim/inbox", get(inbox_page))
        .route("/_sim/token-requests", get(token_requests))
        .route("/_sim/apps", post(register_app))
        .route("/_sim/apps/{client_id}/secrets", post(add_client_secret))
        .route(
            "/_sim/apps/{client_id}/secrets/expire",
            post(expire_client_secret),
        )
        .route("/_sim/apps/{client_id}/certificates", post(add_certificate))
        .route(
            "/_sim/apps/{client_id}/redirect-uris",
            put(set_redirect_uris),
        )
        .route(
            "/_sim/apps/{client_id}/requested-permissions",
            put(set_requested_permissions),
        )
        .route("/_sim/tenants", post(add_tenant))
        .route(
            "/_sim/tenants/{tenant_id}/consents/{client_id}",
            delete(revoke_consent),
        )
        .route(
            "/_sim/tenants/{tenant_id}/service-principals/{client_id}",
            delete(remove_service_principal),
        )
        .route("/_sim/users", get(users).post(add_user))
        .route("/_sim/admin-consents", get(admin_consents))
        .route(
            "/_sim/admin-consent/default-tenant",
            put(set_default_admin_tenant),
        )
        .route(
            "/_sim/consent-propagation",
            get(consent_propagation).put(set_consent_propagation),
        )
}

#[derive(Debug, Deserialize)]
struct MailboxQuery {
    mailbox: Option<String>,
}

fn select(directory: &Directory, query: &MailboxQuery) -> Vec<DeliveredMessage> {
    match &query.mailbox {
        Some(mailbox) => directory.inbox(mailbox),
        None => directory.delivered(),
    }
}

async fn messages(
    State(directory): State<Arc<Directory>>,
    Query(query): Query<MailboxQuery>,
) -> Response {
    Json(select(&directory, &query)).into_response()
}

async fn token_requests(State(directory): State<Arc<Directory>>) -> Response {
    Json(directory.token_requests()).into_response()
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn inbox_page(
    State(directory): State<Arc<Directory>>,
    Query(query): Query<MailboxQuery>,
) -> Html<String> {
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Microsoft 365 simulator — mailboxes</title>\
         <style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}pre{white-space:pre-wrap;max-width:60rem;margin:0}</style>\
         </head><body><h1>Microsoft 365 simulator</h1><p>Messages accepted by the simulated Exchange Online, newest first.</p>\
         <table><tr><th>Received</th><th>Sent as</th><th>Recipients</th><th>Subject</th><th>Via</th><th>Message</th></tr>",
    );
    for m in select(&directory, &query).iter().rev() {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><details><summary>MIME</summary><pre>{}</pre></details></td></tr>",
            m.received_at.format("%Y-%m-%d %H:%M:%S UTC"),
            escape(&m.mailbox),
            escape(&m.recipients.join(", ")),
            escape(m.subject.as_deref().unwrap_or("")),
            m.via,
            escape(&m.mime),
        );
    }
    page.push_str("</table></body></html>");
    Html(page)
}

#[derive(Debug, Deserialize)]
struct AppRegistration {
    client_id: String,
    /// Replaces the app's secrets when given.
    client_secret: Option<String>,
    display_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    /// App roles the app requests, e.g. `["Mail.Send"]`.
    requested_permissions: Option<Vec<String>>,
}

async fn register_app(
    State(directory): State<Arc<Directory>>,
    Json(app): Json<AppRegistration>,
) -> StatusCode {
    match &app.client_secret {
        Some(secret) => directory.register_app(&app.client_id, secret),
        None => directory.ensure_app(&app.client_id),
    }
    if let Some(name) = &app.display_name {
        directory.set_app_display_name(&app.client_id, name);
    }
    if let Some(uris) = &app.redirect_uris {
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        directory.set_redirect_uris(&app.client_id, &uris);
    }
    if let Some(roles) = &app.requested_permissions {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        directory.set_requested_permissions(&app.client_id, &roles);
    }
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct ClientSecretSetup {
    secret: String,
    /// After this instant the secret is answered with `AADSTS7000222`.
    expires_at: Option<DateTime<Utc>>,
}

async fn add_client_secret(
    State(directory): State<Arc<Directory>>,
    Path(client_id): Path<String>,
    Json(setup): Json<ClientSecretSetup>,
) -> StatusCode {
    directory.add_client_secret(&client_id, &setup.secret, setup.expires_at);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct SecretExpiry {
    secret: String,
    /// When it expires (now when absent).
    at: Option<DateTime<Utc>>,
}

async fn expire_client_secret(
    State(directory): State<Arc<Directory>>,
    Path(client_id): Path<String>,
    Json(expiry): Json<SecretExpiry>,
) -> Response {
    let at = expiry.at.unwrap_or_else(Utc::now);
    if directory.expire_client_secret(&client_id, &expiry.secret, at) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such app or secret" })),
        )
            .into_response()
    }
}

/// A certificate to upload: PEM, or DER in base64.
#[derive(Debug, Deserialize)]
struct CertificateUpload {
    certificate_pem: Option<String>,
    certificate_der_base64: Option<String>,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn add_certificate(
    State(directory): State<Arc<Directory>>,
    Path(client_id): Path<String>,
    Json(upload): Json<CertificateUpload>,
) -> Response {
    let der = match (&upload.certificate_pem, &upload.certificate_der_base64) {
        (Some(pem), _) => match CertificateDer::from_pem_slice(pem.as_bytes()) {
            Ok(der) => der.to_vec(),
            Err(e) => return bad_request(format!("certificate_pem: {e}")),
        },
        (None, Some(b64)) => match STANDARD.decode(b64.trim()) {
            Ok(der) => der,
            Err(e) => return bad_request(format!("certificate_der_base64: {e}")),
        },
        (None, None) => {
            return bad_request("certificate_pem or certificate_der_base64 is required".into());
        }
    };
    match directory.add_certificate(&client_id, &der) {
        Ok(thumbprints) => (StatusCode::CREATED, Json(thumbprints)).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct RedirectUris {
    redirect_uris: Vec<String>,
}

async fn set_redirect_uris(
    State(directory): State<Arc<Directory>>,
    Path(client_id): Path<String>,
    Json(setup): Json<RedirectUris>,
) -> StatusCode {
    let uris: Vec<&str> = setup.redirect_uris.iter().map(String::as_str).collect();
    directory.set_redirect_uris(&client_id, &uris);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct RequestedPermissions {
    /// App roles, e.g. `["Mail.Send", "SMTP.SendAsApp"]`.
    permissions: Vec<String>,
}

async fn set_requested_permissions(
    State(directory): State<Arc<Directory>>,
    Path(client_id): Path<String>,
    Json(setup): Json<RequestedPermissions>,
) -> StatusCode {
    let roles: Vec<&str> = setup.permissions.iter().map(String::as_str).collect();
    directory.set_requested_permissions(&client_id, &roles);
    StatusCode::NO_CONTENT
}

async fn revoke_consent(
    State(directory): State<Arc<Directory>>,
    Path((tenant_id, client_id)): Path<(Uuid, String)>,
) -> StatusCode {
    directory.revoke_consent(tenant_id, &client_id);
    StatusCode::NO_CONTENT
}

async fn remove_service_principal(
    State(directory): State<Arc<Directory>>,
    Path((tenant_id, client_id)): Path<(Uuid, String)>,
) -> StatusCode {
    directory.remove_service_principal(tenant_id, &client_id);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct UserSetup {
    tenant_id: Uuid,
    email: String,
    name: String,
}

async fn add_user(
    State(directory): State<Arc<Directory>>,
    Json(setup): Json<UserSetup>,
) -> Response {
    let oid = directory.add_user(setup.tenant_id, &setup.email, &setup.name);
    (StatusCode::CREATED, Json(serde_json::json!({ "oid": oid }))).into_response()
}

async fn users(State(directory): State<Arc<Directory>>) -> Response {
    Json(directory.users()).into_response()
}

async fn admin_consents(State(directory): State<Arc<Directory>>) -> Response {
    Json(directory.admin_consents()).into_response()
}

#[derive(Debug, Deserialize)]
struct DefaultAdminTenant {
    tenant_id: Option<Uuid>,
}

async fn set_default_admin_tenant(
    State(directory): State<Arc<Directory>>,
    Json(setup): Json<DefaultAdminTenant>,
) -> StatusCode {
    directory.set_default_admin_tenant(setup.tenant_id);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct ConsentPropagation {
    /// How long a consent granted on the admin-consent page stays invisible to the
    /// token endpoint.
    seconds: f64,
}

async fn consent_propagation(State(directory): State<Arc<Directory>>) -> Response {
    Json(serde_json::json!({ "seconds": directory.consent_propagation().as_secs_f64() }))
        .into_response()
}

async fn set_consent_propagation(
    State(directory): State<Arc<Directory>>,
    Json(setup): Json<ConsentPropagation>,
) -> Response {
    match std::time::Duration::try_from_secs_f64(setup.seconds) {
        Ok(delay) => {
            directory.set_consent_propagation(delay);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(format!("seconds: {e}")),
    }
}

#[derive(Debug, Deserialize)]
struct TenantSetup {
    tenant_id: Uuid,
    #[serde(default)]
    mailboxes: Vec<String>,
    /// client_id → app roles consented.
    #[serde(default)]
    consents: HashMap<String, Vec<String>>,
    /// The organisation's display name.
    name: Option<String>,
}

async fn add_tenant(
    State(directory): State<Arc<Directory>>,
    Json(setup): Json<TenantSetup>,
) -> StatusCode {
    let mailboxes: Vec<&str> = setup.mailboxes.iter().map(String::as_str).collect();
    directory.add_tenant(setup.tenant_id, &mailboxes);
    if let Some(name) = &setup.name {
        directory.set_tenant_name(setup.tenant_id, name);
    }
    for (client_id, roles) in &setup.consents {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        directory.consent(setup.tenant_id, client_id, &roles);
    }
    StatusCode::NO_CONTENT
}

async fn list_faults(State(directory): State<Arc<Directory>>) -> Response {
    Json(directory.faults()).into_response()
}

async fn add_fault(
    State(directory): State<Arc<Directory>>,
    Json(fault): Json<crate::fault_injection::Fault>,
) -> StatusCode {
    directory.inject_fault(fault);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(directory): State<Arc<Directory>>) -> StatusCode {
    directory.clear_faults();
    StatusCode::NO_CONTENT
}

async fn list_requests(State(directory): State<Arc<Directory>>) -> Response {
    Json(directory.requests()).into_response()
}
