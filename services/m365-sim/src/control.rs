//! The simulator's own endpoints under `/_sim`, for tests and for people: read the
//! mailboxes (JSON and a plain HTML page), read the token requests, and set up apps,
//! tenants, mailboxes and consents. Nothing here exists at Microsoft.

use std::{collections::HashMap, fmt::Write, sync::Arc};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{DeliveredMessage, Directory};

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route("/_sim/messages", get(messages))
        .route("/_sim/inbox", get(inbox_page))
        .route("/_sim/token-requests", get(token_requests))
        .route("/_sim/apps", post(register_app))
        .route("/_sim/tenants", post(add_tenant))
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

fn escape(text: &str) -> String {
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
    client_secret: String,
}

async fn register_app(
    State(directory): State<Arc<Directory>>,
    Json(app): Json<AppRegistration>,
) -> StatusCode {
    directory.register_app(&app.client_id, &app.client_secret);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct TenantSetup {
    tenant_id: Uuid,
    #[serde(default)]
    mailboxes: Vec<String>,
    /// client_id → app roles consented.
    #[serde(default)]
    consents: HashMap<String, Vec<String>>,
}

async fn add_tenant(
    State(directory): State<Arc<Directory>>,
    Json(setup): Json<TenantSetup>,
) -> StatusCode {
    let mailboxes: Vec<&str> = setup.mailboxes.iter().map(String::as_str).collect();
    directory.add_tenant(setup.tenant_id, &mailboxes);
    for (client_id, roles) in &setup.consents {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        directory.consent(setup.tenant_id, client_id, &roles);
    }
    StatusCode::NO_CONTENT
}
