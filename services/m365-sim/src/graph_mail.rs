//! Graph's mailbox reading as an app uses it to watch a mailbox: list the messages of
//! a folder (`GET /v1.0/users/{id}/mailFolders/{folder}/messages` with `$filter` on
//! `receivedDateTime`, `$select`, `$top`, `$orderby` and `@odata.nextLink` paging),
//! read one as MIME (`GET …/messages/{id}/$value`), list and create mail folders
//! (`GET`/`POST …/mailFolders`) and move a message (`POST …/messages/{id}/move`,
//! which gives it a new id, as Exchange does without immutable ids).
//!
//! Reading needs `Mail.Read` or `Mail.ReadWrite`, changing needs `Mail.ReadWrite`,
//! tenant-wide or granted for the mailbox by RBAC for Applications
//! ([`crate::rbac::mailbox_access`]).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Directory,
    graph::{graph_error, validate_token},
    mailbox_store::{MailFolder, StoredMessage, graph_id},
    rbac::MailboxNeed,
};

/// Graph's default and largest page of messages.
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 1000;

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route(
            "/v1.0/users/{user}/mailFolders",
            get(list_folders).post(create_folder),
        )
        .route(
            "/v1.0/users/{user}/mailFolders/{folder}/messages",
            get(list_messages),
        )
        .route("/v1.0/users/{user}/messages/{id}/$value", get(mime_content))
        .route("/v1.0/users/{user}/messages/{id}/move", post(move_message))
}

/// The token's tenant and the lower-cased mailbox, if the token may do `access`.
fn authorize(
    directory: &Directory,
    headers: &HeaderMap,
    user: &str,
    access: MailboxNeed,
) -> Result<(Uuid, String), Box<Response>> {
    let claims = validate_token(directory, headers).map_err(|m| {
        Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            m,
        ))
    })?;
    let mailbox = user.to_ascii_lowercase();
    let tenant = Uuid::parse_str(&claims.tid).map_err(|_| {
        Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ))
    })?;
    // Tenant-wide Mail.Read/Mail.ReadWrite, or RBAC for Applications scoped to
    // this mailbox: the simulator's one mailbox-access decision.
    if directory
        .mailbox_access(tenant, &claims.appid, &claims.roles, &mailbox, access)
        .is_err()
    {
        return Err(Box::new(graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )));
    }
    let known = directory
        .lock()
        .tenants
        .get(&tenant)
        .is_some_and(|t| t.mailboxes.contains_key(&mailbox));
    if !known {
        return Err(Box::new(graph_error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{user}' is invalid."),
        )));
    }
    Ok((tenant, mailbox))
}

fn folder_json(folder: &MailFolder, messages: &[StoredMessage]) -> Value {
    json!({
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": "AAMkAmsgfolderroot",
        "childFolderCount": 0,
        "unreadItemCount": 0,
        "totalItemCount": messages.iter().filter(|m| m.folder_id == folder.id).count(),
        "isHidden": false,
    })
}

fn message_json(message: &StoredMessage, select: Option<&str>) -> Value {
    let full = json!({
        "id": message.id,
        "receivedDateTime": message.received_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "subject": message.subject,
        "from": { "emailAddress": { "name": "Microsoft Outlook", "address": message.from } },
        "parentFolderId": message.folder_id,
        "internetMessageId": crate::mailbox_store::original_message_id(&message.mime)
            .map(|id| format!("<{id}>")),
    });
    let Some(select) = select else {
        return full;
    };
    let mut picked = serde_json::Map::new();
    picked.insert("id".into(), full["id"].clone());
    for field in select.split(',').map(str::trim) {
        if let Some(value) = full.get(field) {
            picked.insert(field.to_owned(), value.clone());
        }
    }
    Value::Object(picked)
}

async fn list_folders(
    State(directory): State<Arc<Directory>>,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user, MailboxNeed::Read) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    // `displayName eq 'name'` is the one filter folders are looked up by.
    let wanted = match query.get("$filter") {
        None => None,
        Some(filter) => match filter
            .trim()
            .strip_prefix("displayName eq '")
            .and_then(|rest| rest.strip_suffix('\''))
        {
            Some(name) => Some(name.replace("''", "'")),
            None => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidUrlQueryFilter",
                    "The query filter contains one or more invalid nodes.",
                );
            }
        },
    };
    let mut state = directory.lock();
    let store = state.mail.mailbox(tenant, &mailbox);
    let value: Vec<Value> = store
        .folders
        .iter()
        .filter(|f| {
            wanted
                .as_ref()
                .is_none_or(|w| f.display_name.eq_ignore_ascii_case(w))
        })
        .map(|f| folder_json(f, &store.messages))
        .collect();
    Json(json!({ "value": value })).into_response()
}

#[derive(Debug, Deserialize)]
struct NewFolder {
    #[serde(rename = "displayName")]
    display_name: String,
}

async fn create_folder(
    State(directory): State<Arc<Directory>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user, MailboxNeed::ReadWrite) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    let Ok(new) = serde_json::from_slice::<NewFolder>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The request is invalid: displayName is required.",
        );
    };
    let name = new.display_name.trim();
    if name.is_empty() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The folder name cannot be empty.",
        );
    }
    let mut state = directory.lock();
    let store = state.mail.mailbox(tenant, &mailbox);
    if store
        .folders
        .iter()
        .any(|f| f.display_name.eq_ignore_ascii_case(name))
    {
        return graph_error(
            StatusCode::CONFLICT,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        );
    }
    let folder = MailFolder {
        id: graph_id(),
        display_name: name.to_owned(),
        well_known: None,
    };
    let body = folder_json(&folder, &store.messages);
    store.folders.push(folder);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// A `$filter` on `receivedDateTime`: `receivedDateTime ge|gt <time>`, clauses
/// joined by `and`.
fn received_filter(filter: &str) -> Result<Vec<(bool, DateTime<Utc>)>, ()> {
    filter
        .split(" and ")
        .map(|clause| {
            let mut words = clause.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some(field), Some(op), Some(time), None)
                    if field.eq_ignore_ascii_case("receivedDateTime") =>
                {
                    let time = DateTime::parse_from_rfc3339(time.trim_matches('\''))
                        .map_err(|_| ())?
                        .with_timezone(&Utc);
                    match op {
                        "ge" => Ok((true, time)),
                        "gt" => Ok((false, time)),
                        _ => Err(()),
                    }
                }
                _ => Err(()),
            }
        })
        .collect()
}

async fn list_messages(
    State(directory): State<Arc<Directory>>,
    Path((user, folder)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user, MailboxNeed::Read) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    if folder.eq_ignore_ascii_case("drafts") {
        return crate::graph_drafts::list(&directory, tenant, &mailbox, &query);
    }
    let filter = match query.get("$filter").map(|f| received_filter(f)) {
        None => Vec::new(),
        Some(Ok(clauses)) => clauses,
        Some(Err(())) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQueryFilter",
                "The query filter contains one or more invalid nodes.",
            );
        }
    };
    let top = match query.get("$top").map(|t| t.parse::<usize>()) {
        None => DEFAULT_TOP,
        Some(Ok(n)) if (1..=MAX_TOP).contains(&n) => n,
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQuery",
                "The value of $top is invalid.",
            );
        }
    };
    let skip = query
        .get("$skip")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let ascending = match query.get("$orderby").map(|o| o.trim().to_ascii_lowercase()) {
        None => false,
        Some(o) if o == "receiveddatetime asc" => true,
        Some(o) if o == "receiveddatetime desc" || o == "receiveddatetime" => {
            o == "receiveddatetime"
        }
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQuery",
                "The $orderby expression is not supported.",
            );
        }
    };
    let mut state = directory.lock();
    let base_url = format!(
        "{}/v1.0/users/{user}/mailFolders/{folder}/messages",
        directory_base(&headers)
    );
    let store = state.mail.mailbox(tenant, &mailbox);
    let Some(folder_id) = store.folder(&folder).map(|f| f.id.clone()) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let mut matching: Vec<&StoredMessage> = store
        .messages
        .iter()
        .filter(|m| m.folder_id == folder_id)
        .filter(|m| {
            filter.iter().all(|(inclusive, time)| {
                // Graph compares at the second.
                let received = m.received_at.timestamp();
                if *inclusive {
                    received >= time.timestamp()
                } else {
                    received > time.timestamp()
                }
            })
        })
        .collect();
    matching.sort_by_key(|m| m.received_at);
    if !ascending {
        matching.reverse();
    }
    let select = query.get("$select").map(String::as_str);
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(top)
        .map(|m| message_json(m, select))
        .collect();
    let mut body = json!({ "value": page });
    if skip + top < matching.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in &query {
            if key != "$skip" {
                next.append_pair(key, value);
            }
        }
        next.append_pair("$skip", &(skip + top).to_string());
        body["@odata.nextLink"] = json!(format!("{base_url}?{}", next.finish()));
    }
    Json(body).into_response()
}

/// The scheme and host the request was made to, for `@odata.nextLink`.
fn directory_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("graph.microsoft.com");
    format!("https://{host}")
}

async fn mime_content(
    State(directory): State<Arc<Directory>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user, MailboxNeed::Read) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    let mut state = directory.lock();
    let store = state.mail.mailbox(tenant, &mailbox);
    match store.messages.iter().find(|m| m.id == id) {
        Some(m) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            m.mime.clone(),
        )
            .into_response(),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
    }
}

#[derive(Debug, Deserialize)]
struct MoveRequest {
    #[serde(rename = "destinationId")]
    destination_id: String,
}

async fn move_message(
    State(directory): State<Arc<Directory>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user, MailboxNeed::ReadWrite) {
        Ok(ok) => ok,
        Err(response) => return *response,
    };
    let Ok(request) = serde_json::from_slice::<MoveRequest>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The request is invalid: destinationId is required.",
        );
    };
    let mut state = directory.lock();
    let store = state.mail.mailbox(tenant, &mailbox);
    let Some(destination) = store.folder(&request.destination_id).map(|f| f.id.clone()) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let Some(message) = store.messages.iter_mut().find(|m| m.id == id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    message.folder_id = destination;
    message.id = graph_id();
    let body = message_json(message, None);
    (StatusCode::CREATED, Json(body)).into_response()
}
