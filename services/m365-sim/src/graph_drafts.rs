//! Graph's path for messages over the 4 MB request limit: create a draft from MIME
//! (`POST /v1.0/users/{id}/messages`), attach files under 3 MB directly
//! (`POST …/messages/{id}/attachments`) and larger ones (3–150 MB) through an upload
//! session (`POST …/attachments/createUploadSession`, then `PUT` ranges of at most
//! 4 MB to the pre-authenticated upload URL), then send the draft
//! (`POST …/messages/{id}/send`, `202`). All but the PUTs need `Mail.ReadWrite`.
//! The sent message is stored as MIME with its attachments, like any other.
//!
//! Over 500 lines: it is one flow of seven endpoints — create, attach, upload session,
//! range, send, delete, list — that share the draft and upload records, their size
//! accounting and the final assembly of the message.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, post, put},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use mail_parser::MessageParser;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    DeliveredMessage, Directory,
    fault_injection::{Effect, Endpoint},
    graph::{MAX_REQUEST_BYTES, graph_error, strip_bcc, validate_token},
};

/// Attachments this small are posted directly; larger ones need an upload session.
pub const DIRECT_ATTACHMENT_LIMIT: usize = 3 * 1024 * 1024;
pub const UPLOAD_SESSION_LIMIT: usize = 150 * 1024 * 1024;

/// A draft being assembled.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    tenant: Uuid,
    mailbox: String,
    /// The app that created it (whose Graph budget its upload sessions use).
    app: String,
    mime: Vec<u8>,
    attachments: Vec<Attachment>,
    created_at: chrono::DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Attachment {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// An upload session: where its bytes go and how many are expected.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    draft: String,
    name: String,
    content_type: String,
    size: usize,
    received: Vec<u8>,
}

impl Draft {
    pub(crate) fn app(&self) -> &str {
        &self.app
    }

    pub(crate) fn mailbox(&self) -> &str {
        &self.mailbox
    }
}

impl Upload {
    pub(crate) fn draft(&self) -> &str {
        &self.draft
    }
}

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route("/v1.0/users/{user}/messages", post(create_draft))
        .route(
            "/v1.0/users/{user}/messages/{id}/attachments",
            post(add_attachment),
        )
        .route(
            "/v1.0/users/{user}/messages/{id}/attachments/createUploadSession",
            post(create_upload_session),
        )
        .route("/v1.0/users/{user}/messages/{id}", delete(delete_draft))
        .route("/v1.0/users/{user}/messages/{id}/send", post(send_draft))
        .route("/_upload/{session}", put(upload_range))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES * 4))
}

/// The token's tenant, if it may read and write the mailbox's messages.
fn authorize(
    directory: &Directory,
    headers: &HeaderMap,
    user: &str,
) -> Result<(Uuid, String), Box<Response>> {
    let claims = validate_token(directory, headers).map_err(|m| {
        Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            m,
        ))
    })?;
    let tenant = Uuid::parse_str(&claims.tid).map_err(|_| {
        Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ))
    })?;
    let mailbox = user.to_ascii_lowercase();
    directory
        .mailbox_access(
            tenant,
            &claims.appid,
            &claims.roles,
            &mailbox,
            crate::rbac::MailboxNeed::ReadWrite,
        )
        .map_err(|_| Box::new(crate::graph::access_denied()))?;
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

fn too_large() -> Response {
    graph_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestBodyTooLarge",
        "The maximum request length supported is 4MB.",
    )
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

async fn create_draft(
    State(directory): State<Arc<Directory>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    // `accept_then_delay`: the draft exists at once, the answer comes late (a client
    // that gave up meanwhile never learns its id).
    let mut late_answer = None;
    match directory.take_fault(Endpoint::GraphDraft, Some(tenant), Some(&mailbox)) {
        Some(effect @ Effect::Delay { .. }) => {
            tokio::time::sleep(effect.delay().unwrap_or_default()).await
        }
        Some(effect @ Effect::AcceptThenDelay { .. }) => late_answer = effect.delay(),
        Some(effect) => {
            if let Some(response) = fault_response(effect) {
                return response;
            }
        }
        None => {}
    }
    if body.len() > MAX_REQUEST_BYTES {
        return too_large();
    }
    let app = validate_token(&directory, &headers)
        .map(|c| c.appid)
        .unwrap_or_default();
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(mime) = STANDARD.decode(&compact) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        );
    };
    let id = format!("AAMk{}", Uuid::new_v4().simple());
    directory.lock().drafts.insert(
        id.clone(),
        Draft {
            tenant,
            mailbox,
            app,
            mime,
            attachments: Vec::new(),
            created_at: Utc::now(),
        },
    );
    if let Some(delay) = late_answer {
        tokio::time::sleep(delay).await;
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "isDraft": true })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileAttachment {
    name: String,
    content_type: Option<String>,
    content_bytes: String,
}

async fn add_attachment(
    State(directory): State<Arc<Directory>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    if body.len() > MAX_REQUEST_BYTES {
        return too_large();
    }
    let Ok(attachment) = serde_json::from_slice::<FileAttachment>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "The request body is not a fileAttachment.",
        );
    };
    let Ok(bytes) = STANDARD.decode(attachment.content_bytes.as_bytes()) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "contentBytes is not valid base64.",
        );
    };
    if bytes.len() >= DIRECT_ATTACHMENT_LIMIT {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachments of 3 MB or more need an upload session.",
        );
    }
    let mut state = directory.lock();
    let limit = crate::exchange_limits::max_send_size(&state, &mailbox);
    let pending = pending_uploads(&state, &id);
    let Some(draft) = state
        .drafts
        .get_mut(&id)
        .filter(|d| d.tenant == tenant && d.mailbox == mailbox)
    else {
        return not_found();
    };
    if draft_size(draft) + pending + encoded_len(bytes.len()) > limit {
        return crate::exchange_limits::message_too_large();
    }
    draft.attachments.push(Attachment {
        name: attachment.name,
        content_type: attachment
            .content_type
            .unwrap_or_else(|| "application/octet-stream".into()),
        bytes,
    });
    StatusCode::CREATED.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadSessionRequest {
    attachment_item: AttachmentItem,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentItem {
    attachment_type: String,
    name: String,
    size: usize,
    content_type: Option<String>,
}

async fn create_upload_session(
    State(directory): State<Arc<Directory>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    let Ok(request) = serde_json::from_slice::<UploadSessionRequest>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "An AttachmentItem is required.",
        );
    };
    let item = request.attachment_item;
    if item.attachment_type != "file"
        || item.size < DIRECT_ATTACHMENT_LIMIT
        || item.size > UPLOAD_SESSION_LIMIT
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "Upload sessions take file attachments of 3 MB to 150 MB.",
        );
    }
    let mut state = directory.lock();
    let Some(draft) = state
        .drafts
        .get(&id)
        .filter(|d| d.tenant == tenant && d.mailbox == mailbox)
    else {
        return not_found();
    };
    // The message with this attachment would be over the mailbox's maximum send
    // size: refused before a byte is uploaded.
    if draft_size(draft) + pending_uploads(&state, &id) + encoded_len(item.size)
        > crate::exchange_limits::max_send_size(&state, &mailbox)
    {
        return crate::exchange_limits::message_too_large();
    }
    let session = Uuid::new_v4().simple().to_string();
    state.uploads.insert(
        session.clone(),
        Upload {
            draft: id,
            name: item.name,
            content_type: item
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: item.size,
            received: Vec::with_capacity(item.size),
        },
    );
    let body = serde_json::json!({
        "uploadUrl": format!("{}/_upload/{session}", directory.base_url()),
        "expirationDateTime": (Utc::now() + chrono::Duration::hours(6)).to_rfc3339(),
        "nextExpectedRanges": ["0-"],
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `Content-Range: bytes {first}-{last}/{total}`.
fn content_range(headers: &HeaderMap) -> Option<(usize, usize, usize)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, total.parse().ok()?))
}

async fn upload_range(
    State(directory): State<Arc<Directory>>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let invalid = |message: &str| graph_error(StatusCode::BAD_REQUEST, "InvalidRange", message);
    if body.len() > MAX_REQUEST_BYTES {
        return too_large();
    }
    let Some((first, last, total)) = content_range(&headers) else {
        return invalid("A Content-Range header (bytes first-last/total) is required.");
    };
    let owner = {
        let state = directory.lock();
        state
            .uploads
            .get(&session)
            .and_then(|u| state.drafts.get(&u.draft))
            .map(|d| (d.tenant, d.mailbox.clone()))
    };
    if let Some((tenant, mailbox)) = owner
        && let Some(response) = fault(&directory, Endpoint::GraphUpload, tenant, &mailbox)
    {
        return response;
    }
    let mut state = directory.lock();
    let Some(upload) = state.uploads.get_mut(&session) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ItemNotFound",
            "The upload session does not exist or has expired.",
        );
    };
    if total != upload.size
        || first != upload.received.len()
        || last < first
        || last - first + 1 != body.len()
        || last >= total
    {
        return invalid(&format!(
            "The range is not the expected one: {}-.",
            upload.received.len()
        ));
    }
    upload.received.extend_from_slice(&body);
    if upload.received.len() < upload.size {
        let next = upload.received.len();
        return (
            StatusCode::OK,
            Json(serde_json::json!({ "nextExpectedRanges": [format!("{next}-")] })),
        )
            .into_response();
    }
    let done = state.uploads.remove(&session).expect("present");
    if let Some(draft) = state.drafts.get_mut(&done.draft) {
        draft.attachments.push(Attachment {
            name: done.name,
            content_type: done.content_type,
            bytes: done.received,
        });
    }
    StatusCode::CREATED.into_response()
}

async fn send_draft(
    State(directory): State<Arc<Directory>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    if let Some(response) = fault(&directory, Endpoint::GraphDraftSend, tenant, &mailbox) {
        return response;
    }
    let claims = validate_token(&directory, &headers).ok();
    let mut state = directory.lock();
    let Some(draft) = state
        .drafts
        .get(&id)
        .filter(|d| d.tenant == tenant && d.mailbox == mailbox)
        .cloned()
    else {
        return not_found();
    };
    let mime = assemble(&draft);
    let parsed = MessageParser::default().parse_headers(&mime);
    let addresses = |a: Option<&mail_parser::Address>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default()
    };
    let from = parsed
        .as_ref()
        .and_then(|p| addresses(p.from()).into_iter().next());
    let send_as = state
        .tenants
        .get(&tenant)
        .and_then(|t| t.mailboxes.get(&mailbox))
        .cloned()
        .unwrap_or_default();
    if from
        .as_ref()
        .is_some_and(|f| *f != mailbox && !send_as.contains(f))
    {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        );
    }
    let recipients: Vec<String> = parsed
        .as_ref()
        .map(|p| [addresses(p.to()), addresses(p.cc()), addresses(p.bcc())].concat())
        .unwrap_or_default();
    if recipients.is_empty() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid.",
        );
    }
    let subject = parsed.as_ref().and_then(|p| p.subject()).map(str::to_owned);
    if mime.len() > crate::exchange_limits::max_send_size(&state, &mailbox) {
        return crate::exchange_limits::message_too_large();
    }
    state.drafts.remove(&id);
    crate::exchange_limits::submit(
        &mut state,
        DeliveredMessage {
            id: Uuid::new_v4(),
            tenant_id: tenant,
            mailbox,
            from,
            recipients,
            subject,
            mime: String::from_utf8_lossy(&strip_bcc(&mime)).into_owned(),
            via: "graph-upload",
            token_id: claims.map(|c| c.uti).unwrap_or_default(),
            saved_to_sent_items: true,
            received_at: Utc::now(),
        },
    );
    StatusCode::ACCEPTED.into_response()
}

/// `DELETE /v1.0/users/{id}/messages/{id}`: `204`, or `404 ErrorItemNotFound` for a
/// message that is not there (any more).
async fn delete_draft(
    State(directory): State<Arc<Directory>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (tenant, mailbox) = match authorize(&directory, &headers, &user) {
        Ok(scope) => scope,
        Err(response) => return *response,
    };
    if let Some(response) = fault(&directory, Endpoint::GraphDelete, tenant, &mailbox) {
        return response;
    }
    let mut state = directory.lock();
    if !state
        .drafts
        .get(&id)
        .is_some_and(|d| d.tenant == tenant && d.mailbox == mailbox)
    {
        return not_found();
    }
    state.drafts.remove(&id);
    state.uploads.retain(|_, u| u.draft != id);
    StatusCode::NO_CONTENT.into_response()
}

/// A fault injected for `endpoint`, answered as Graph would (HTTP faults only).
fn fault(
    directory: &Directory,
    endpoint: Endpoint,
    tenant: Uuid,
    mailbox: &str,
) -> Option<Response> {
    fault_response(directory.take_fault(endpoint, Some(tenant), Some(mailbox))?)
}

/// The answer an injected fault gives instead of the endpoint's, if it gives one.
fn fault_response(effect: Effect) -> Option<Response> {
    match effect {
        Effect::Http {
            status,
            code,
            message,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = graph_error(status, &code, &message);
            if let Some(seconds) = retry_after
                && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Some(response)
        }
        Effect::Drop => Some((StatusCode::BAD_GATEWAY, "").into_response()),
        _ => None,
    }
}

/// The drafts in `mailbox` now (tests assert that none is left behind).
impl Directory {
    pub fn drafts_in(&self, mailbox: &str) -> usize {
        let mailbox = mailbox.to_ascii_lowercase();
        self.lock()
            .drafts
            .values()
            .filter(|d| d.mailbox == mailbox)
            .count()
    }
}

/// `GET /v1.0/users/{id}/mailFolders/drafts/messages`: the mailbox's drafts, oldest
/// first, with `id`, `createdDateTime`, `isDraft`, `subject` and — only when
/// `$select` asks for them, as in Graph — `internetMessageHeaders` (the draft's
/// header fields; the simulator lists its `X-` fields, where a client's own markers
/// are).
pub(crate) fn list(
    directory: &Directory,
    tenant: Uuid,
    mailbox: &str,
    query: &std::collections::HashMap<String, String>,
) -> Response {
    let with_headers = query.get("$select").is_some_and(|select| {
        select
            .split(',')
            .any(|field| field.trim().eq_ignore_ascii_case("internetMessageHeaders"))
    });
    let state = directory.lock();
    let mut drafts: Vec<(&String, &Draft)> = state
        .drafts
        .iter()
        .filter(|(_, d)| d.tenant == tenant && d.mailbox == mailbox)
        .collect();
    drafts.sort_by_key(|(_, d)| d.created_at);
    let value: Vec<serde_json::Value> = drafts
        .into_iter()
        .map(|(id, draft)| {
            let parsed = MessageParser::default().parse_headers(&draft.mime);
            let mut item = serde_json::json!({
                "id": id,
                "createdDateTime": draft.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "isDraft": true,
                "subject": parsed.as_ref().and_then(|p| p.subject()).unwrap_or_default(),
            });
            if with_headers {
                let headers: Vec<serde_json::Value> = parsed
                    .as_ref()
                    .map(|p| {
                        p.headers_raw()
                            .filter(|(name, _)| name.to_ascii_lowercase().starts_with("x-"))
                            .map(|(name, value)| {
                                serde_json::json!({ "name": name, "value": value.trim() })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                item["internetMessageHeaders"] = serde_json::Value::Array(headers);
            }
            item
        })
        .collect();
    Json(serde_json::json!({ "value": value })).into_response()
}

/// An attachment's size in the message: base64, as Exchange counts it.
fn encoded_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// The size of the message a draft would send now.
fn draft_size(draft: &Draft) -> usize {
    draft.mime.len()
        + draft
            .attachments
            .iter()
            .map(|a| encoded_len(a.bytes.len()))
            .sum::<usize>()
}

/// The encoded size of the attachments still being uploaded to draft `id`.
fn pending_uploads(state: &crate::directory::State, id: &str) -> usize {
    state
        .uploads
        .values()
        .filter(|u| u.draft == id)
        .map(|u| encoded_len(u.size))
        .sum()
}

/// The draft as the message Exchange sends: its header fields, then a
/// multipart/mixed of its own body and every attachment.
fn assemble(draft: &Draft) -> Vec<u8> {
    if draft.attachments.is_empty() {
        return draft.mime.clone();
    }
    let split = draft
        .mime
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(draft.mime.len());
    let (head, body) = draft.mime.split_at(split);
    let body = body.strip_prefix(b"\r\n").unwrap_or(body);
    let mut top = Vec::new();
    let mut content = Vec::new();
    let mut into_content = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let lower = String::from_utf8_lossy(line).to_ascii_lowercase();
            into_content = lower.starts_with("content-") || lower.starts_with("mime-version:");
        }
        if into_content {
            content.extend_from_slice(line)
        } else {
            top.extend_from_slice(line)
        }
    }
    let boundary = format!("sim-{}", Uuid::new_v4().simple());
    let mut out = top;
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    let content = String::from_utf8_lossy(&content).replace("MIME-Version: 1.0\r\n", "");
    out.extend_from_slice(content.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    for attachment in &draft.attachments {
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Disposition: attachment; filename=\"{}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                attachment.content_type, attachment.name, attachment.name
            )
            .as_bytes(),
        );
        let encoded = STANDARD.encode(&attachment.bytes);
        for chunk in encoded.as_bytes().chunks(76) {
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}
