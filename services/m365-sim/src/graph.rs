//! Microsoft Graph `sendMail`: `POST /v1.0/users/{id | userPrincipalName}/sendMail`.
//!
//! The MIME form (`Content-Type: text/plain`, the whole RFC 5322 message in base64)
//! as the relay uses it, with Graph's checks in Graph's order: the bearer token
//! (signature, expiry, audience, tenant), the permission (a tenant-wide `Mail.Send`
//! role or an RBAC for Applications grant over the mailbox, see `rbac.rs`), the mailbox, the
//! 4 MB request limit, the base64, the recipients, and SendAs. Success is
//! `202 Accepted` with an empty body.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use jsonwebtoken::{Algorithm, Validation};
use mail_parser::{Address, MessageParser};
use uuid::Uuid;

use crate::fault_injection::{Effect, Endpoint};
use crate::{DeliveredMessage, Directory, rbac::MailboxNeed, token::AccessTokenClaims};

/// Graph's limit on a request body.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

pub fn router() -> Router<Arc<Directory>> {
    Router::new()
        .route("/v1.0/users/{user}/sendMail", post(send_mail))
        // Let oversized bodies through to the handler so it can answer as Graph does.
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES * 4))
}

/// A Graph error: `{"error":{"code","message","innerError"}}`.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": Uuid::new_v4(),
                "client-request-id": Uuid::new_v4(),
            }
        }
    });
    (status, Json(body)).into_response()
}

/// Graph's answer when neither a tenant-wide app role nor an RBAC for Applications
/// assignment covers the mailbox.
pub(crate) fn access_denied() -> Response {
    graph_error(
        StatusCode::FORBIDDEN,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    )
}

/// Checks the bearer token; the error is Graph's message for `InvalidAuthenticationToken`.
pub(crate) fn validate_token(
    directory: &Directory,
    headers: &HeaderMap,
) -> Result<AccessTokenClaims, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("Access token is empty.")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[
        directory.cloud().graph_url(),
        "00000003-0000-0000-c000-000000000000",
    ]);
    validation.leeway = 0;
    jsonwebtoken::decode::<AccessTokenClaims>(token, &directory.verifying_key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                "Lifetime validation failed, the token is expired."
            }
            jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                "Access token validation failure. Invalid audience."
            }
            _ => "Access token validation failure.",
        })
}

async fn send_mail(
    State(directory): State<Arc<Directory>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match validate_token(&directory, &headers) {
        Ok(c) => c,
        Err(message) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
        }
    };
    let Ok(tenant_id) = Uuid::parse_str(&claims.tid) else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        );
    };
    let mailbox = user.to_ascii_lowercase();
    // Tenant-wide Mail.Send, or RBAC for Applications scoped to this mailbox.
    if directory
        .mailbox_access(
            tenant_id,
            &claims.appid,
            &claims.roles,
            &mailbox,
            MailboxNeed::Send,
        )
        .is_err()
    {
        return access_denied();
    }
    let mut late_answer = None;
    match directory.take_fault(Endpoint::GraphSend, Some(tenant_id), Some(&mailbox)) {
        Some(Effect::Http {
            status,
            code,
            message,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = graph_error(status, &code, &message);
            if let Some(seconds) = retry_after
                && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Effect::Drop) => return (StatusCode::BAD_GATEWAY, "").into_response(),
        Some(effect @ Effect::Delay { .. }) => {
            tokio::time::sleep(effect.delay().unwrap_or_default()).await
        }
        Some(effect @ Effect::AcceptThenDelay { .. }) => late_answer = effect.delay(),
        Some(Effect::Aadsts { .. } | Effect::Smtp { .. }) | None => {}
    }
    let send_as = {
        let state = directory.lock();
        match state
            .tenants
            .get(&tenant_id)
            .and_then(|t| t.mailboxes.get(&mailbox))
        {
            Some(send_as) => send_as.clone(),
            None => {
                return graph_error(
                    StatusCode::NOT_FOUND,
                    "ErrorInvalidUser",
                    &format!("The requested user '{user}' is invalid."),
                );
            }
        }
    };
    if body.len() > MAX_REQUEST_BYTES {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The maximum request length supported is 4MB.",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (mime, saved_to_sent_items) = if content_type.starts_with("application/json") {
        match crate::graph_json::render(&body) {
            Ok(rendered) => rendered,
            Err(message) => {
                return graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest", &message);
            }
        }
    } else if content_type.starts_with("text/plain") {
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
        // The MIME form always saves a copy in Sent Items.
        (mime, true)
    } else {
        return graph_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "ErrorInvalidRequest",
            "sendMail takes application/json or base64 MIME as text/plain.",
        );
    };
    let Some(parsed) = MessageParser::default().parse_headers(&mime) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorMimeContentInvalid",
            "The MIME content is invalid.",
        );
    };
    let addresses = |a: Option<&Address>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default()
    };
    let mut recipients = addresses(parsed.to());
    recipients.extend(addresses(parsed.cc()));
    recipients.extend(addresses(parsed.bcc()));
    if recipients.is_empty() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
        );
    }
    let from = addresses(parsed.from()).into_iter().next();
    if let Some(from) = &from
        && *from != mailbox
        && !send_as.contains(from)
    {
        return graph_error(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        );
    }
    if mime.len() > directory.max_send_size(&mailbox) {
        return crate::exchange_limits::message_too_large();
    }
    let subject = parsed.subject().map(str::to_owned);
    let stored = strip_bcc(&mime);
    {
        let mut state = directory.lock();
        // The day's recipients count Graph's sends too (To, Cc and Bcc): one limit per
        // mailbox, whichever way it sends; over it, or over the recipients per
        // message, Exchange refuses after the 202 with a report.
        crate::exchange_limits::submit(
            &mut state,
            DeliveredMessage {
                id: Uuid::new_v4(),
                tenant_id,
                mailbox,
                from,
                recipients,
                subject,
                mime: String::from_utf8_lossy(&stored).into_owned(),
                via: "graph",
                token_id: claims.uti.clone(),
                saved_to_sent_items,
                received_at: Utc::now(),
            },
        );
    }
    if let Some(delay) = late_answer {
        tokio::time::sleep(delay).await;
    }
    StatusCode::ACCEPTED.into_response()
}

/// Removes Bcc header fields (with their folded continuation lines) from the header
/// section, as Exchange does before a message is stored or sent on.
pub(crate) fn strip_bcc(mime: &[u8]) -> Vec<u8> {
    let header_end = mime
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(mime.len());
    let (head, rest) = mime.split_at(header_end);
    let mut out = Vec::with_capacity(mime.len());
    let mut skipping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            skipping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::strip_bcc;

    #[test]
    fn bcc_fields_and_their_folds_are_removed() {
        let mime = b"From: a@x.example\r\nBcc: b@x.example,\r\n c@x.example\r\nTo: d@x.example\r\n\r\nBcc: body stays\r\n";
        assert_eq!(
            strip_bcc(mime),
            b"From: a@x.example\r\nTo: d@x.example\r\n\r\nBcc: body stays\r\n".to_vec()
        );
    }
}
