//! The CSRF check every state-changing form of the pages passes: the form carries
//! the session's CSRF token (a field `csrf`, or a part of that name in a file
//! upload), compared in constant time, and comes from our own pages by `Origin` (or
//! `Referer`). The body is read here, bounded, to find the token; the API takes no
//! cookies and needs none of this.

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, header},
};
use sha2::{Digest, Sha256};

use crate::{error::Error, roles::Actor};

/// The largest form the control plane reads.
const MAX_FORM_BYTES: usize = 256 * 1024;
/// A `multipart/form-data` upload: the largest report file and its form.
const MAX_UPLOAD_BYTES: usize = mailbridge_core::smtp_auth_report::MAX_FILE_BYTES + 64 * 1024;

/// Reads a form POST's body and checks that it carries `actor`'s CSRF token and
/// comes from the control plane at `public_url`; returns the body to pass on.
pub async fn check_form(
    public_url: &str,
    headers: &HeaderMap,
    body: Body,
    actor: &Actor,
) -> Result<Bytes, Error> {
    // A file upload (the migration board's report) carries its token as a part.
    let boundary = multipart_boundary(headers);
    let limit = if boundary.is_some() {
        MAX_UPLOAD_BYTES
    } else {
        MAX_FORM_BYTES
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::Invalid("The form is too large.".into()))?;
    let token = match &boundary {
        Some(boundary) => multipart_text_field(&bytes, boundary, "csrf"),
        None => url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned()),
    };
    let token_ok = token.is_some_and(|t| {
        // Compared in constant time: the token is a secret of the session.
        let (a, b) = (Sha256::digest(t.as_bytes()), Sha256::digest(actor.csrf()));
        a == b
    });
    if token_ok && same_origin(public_url, headers) {
        Ok(bytes)
    } else {
        Err(Error::Csrf)
    }
}

/// The boundary of a `multipart/form-data` request.
fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let (kind, params) = value.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// The value of the small text part `name` of a multipart body.
fn multipart_text_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    let wanted = format!("name=\"{name}\"");
    let text = String::from_utf8_lossy(body);
    text.split(delimiter.as_str()).find_map(|part| {
        let (head, value) = part.split_once("\r\n\r\n")?;
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let is_it = disposition.split(';').any(|p| p.trim() == wanted);
        (is_it && !disposition.contains("filename="))
            .then(|| value.strip_suffix("\r\n").unwrap_or(value).to_owned())
    })
}

/// Whether a state-changing request comes from our own pages: `Origin` (or, without
/// it, `Referer`) must name the control plane, when the browser sends either.
fn same_origin(public_url: &str, headers: &HeaderMap) -> bool {
    let public = public_url.trim_end_matches('/');
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let matches = |origin: &str| {
        origin == public
            || host.is_some_and(|h| {
                origin == format!("http://{h}") || origin == format!("https://{h}")
            })
    };
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some("null") => false,
        Some(origin) => matches(origin),
        None => match headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
            Some(referer) => url::Url::parse(referer)
                .ok()
                .map(|u| u.origin().ascii_serialization())
                .is_some_and(|o| matches(&o)),
            None => true,
        },
    }
}
