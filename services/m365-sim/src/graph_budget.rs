//! Graph's Outlook service limits per app and mailbox (Learn: "Microsoft Graph
//! service-specific throttling limits", Outlook service limits): at most 10 000
//! requests in 10 minutes and 150 MB uploaded (the bodies of POST, PATCH and PUT) in
//! 5 minutes, for each pair of app id and mailbox. Every request under
//! `/v1.0/users/{mailbox}/…` counts for the token's app, and each `PUT` to an upload
//! session counts for the app and mailbox of its draft. Over a limit Graph answers
//! `429 Too Many Requests` with `Retry-After` and an `ApplicationThrottled` error,
//! and the refused request is not counted.
//!
//! At most 4 requests of an app to a mailbox may be in flight at once ("4
//! concurrent requests", same page): a fifth is refused with `429` and
//! `Retry-After`, "Application is over its MailboxConcurrency limit.", and not
//! counted against the budgets.
//!
//! The limits can be lowered (never needed to be raised) through `/_sim/graph-limits`
//! so that tests reach them without ten thousand requests.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::{
    Directory,
    graph::{graph_error, validate_token},
};

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphLimits {
    pub requests: usize,
    pub request_window_seconds: u64,
    pub upload_bytes: u64,
    pub upload_window_seconds: u64,
}

impl Default for GraphLimits {
    /// Microsoft's.
    fn default() -> Self {
        Self {
            requests: 10_000,
            request_window_seconds: 600,
            upload_bytes: 150 * 1024 * 1024,
            upload_window_seconds: 300,
        }
    }
}

/// Requests of one app to one mailbox that may be in flight at once.
pub const CONCURRENT_REQUESTS: usize = 4;

/// The requests (with their body size) of each app and mailbox in the last window.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    pub limits: GraphLimits,
    seen: HashMap<(String, String), VecDeque<(Instant, u64)>>,
    /// Requests refused with `429` per mailbox, for tests.
    pub throttled: HashMap<String, usize>,
    /// Requests in flight per app and mailbox.
    in_flight: HashMap<(String, String), usize>,
    /// The most requests in flight at once per mailbox (of one app), and the
    /// requests refused for being one too many.
    pub concurrency_peak: HashMap<String, usize>,
    pub concurrency_refused: HashMap<String, usize>,
}

/// A request in flight; leaving it frees its place.
struct InFlight {
    directory: Arc<Directory>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.directory.lock();
        if let Some(n) = state.graph_budgets.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Budgets {
    /// Takes a place for a request of `app` to `mailbox`, unless all are taken.
    fn enter(&mut self, app: &str, mailbox: &str) -> bool {
        let key = (app.to_owned(), mailbox.to_owned());
        let n = self.in_flight.entry(key).or_default();
        if *n >= CONCURRENT_REQUESTS {
            *self
                .concurrency_refused
                .entry(mailbox.to_owned())
                .or_default() += 1;
            return false;
        }
        *n += 1;
        let n = *n;
        let peak = self.concurrency_peak.entry(mailbox.to_owned()).or_default();
        *peak = (*peak).max(n);
        true
    }

    /// Counts a request of `bytes` for `app` and `mailbox`, or says how long to wait.
    fn charge(
        &mut self,
        app: &str,
        mailbox: &str,
        bytes: u64,
    ) -> Result<(), (Duration, &'static str)> {
        let now = Instant::now();
        let limits = self.limits;
        let request_window = Duration::from_secs(limits.request_window_seconds);
        let upload_window = Duration::from_secs(limits.upload_window_seconds);
        let seen = self
            .seen
            .entry((app.to_owned(), mailbox.to_owned()))
            .or_default();
        let keep = request_window.max(upload_window);
        while seen
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= keep)
        {
            seen.pop_front();
        }
        let in_request_window: Vec<_> = seen
            .iter()
            .filter(|(at, _)| now.duration_since(*at) < request_window)
            .collect();
        if in_request_window.len() + 1 > limits.requests {
            // Waits until enough of the window's requests have aged out.
            let wait = in_request_window
                .get(in_request_window.len() - limits.requests.min(in_request_window.len()))
                .map_or(request_window, |(oldest, _)| {
                    request_window.saturating_sub(now.duration_since(*oldest))
                });
            return Err((wait, "Application is over its MailboxRequestRate limit."));
        }
        let uploads: Vec<_> = seen
            .iter()
            .filter(|(at, b)| *b > 0 && now.duration_since(*at) < upload_window)
            .collect();
        let uploaded: u64 = uploads.iter().map(|(_, b)| *b).sum();
        if bytes > 0 && uploaded + bytes > limits.upload_bytes {
            // Waits until enough of the window's bytes have aged out.
            let mut freed = 0;
            let mut wait = upload_window;
            for (at, b) in &uploads {
                freed += b;
                wait = upload_window.saturating_sub(now.duration_since(*at));
                if uploaded - freed + bytes <= limits.upload_bytes {
                    break;
                }
            }
            return Err((wait, "Application is over its IncomingBytes limit."));
        }
        seen.push_back((now, bytes));
        Ok(())
    }

    /// The requests and bytes `mailbox` used in the current windows, over all apps.
    pub fn usage(&self, mailbox: &str) -> (usize, u64) {
        let now = Instant::now();
        let request_window = Duration::from_secs(self.limits.request_window_seconds);
        let upload_window = Duration::from_secs(self.limits.upload_window_seconds);
        self.seen
            .iter()
            .filter(|((_, m), _)| m == mailbox)
            .flat_map(|(_, seen)| seen.iter())
            .fold((0, 0), |(requests, bytes), (at, b)| {
                let age = now.duration_since(*at);
                (
                    requests + usize::from(age < request_window),
                    bytes + if age < upload_window { *b } else { 0 },
                )
            })
    }
}

/// Who a Graph request counts for: the app and the mailbox, if it is an Outlook
/// request with a valid token (or a PUT to a known upload session).
fn subject(directory: &Directory, request: &Request) -> Option<(String, String)> {
    let path = request.uri().path();
    if let Some(session) = path.strip_prefix("/_upload/") {
        let state = directory.lock();
        let upload = state.uploads.get(session)?;
        let draft = state.drafts.get(upload.draft())?;
        return Some((draft.app().to_owned(), draft.mailbox().to_owned()));
    }
    let rest = path.strip_prefix("/v1.0/users/")?;
    let mailbox = rest.split('/').next()?;
    let mailbox = percent_decode(mailbox).to_ascii_lowercase();
    let claims = validate_token(directory, request.headers()).ok()?;
    Some((claims.appid, mailbox))
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts the request against its app and mailbox, or answers `429` for Graph.
pub(crate) async fn enforce(
    State(directory): State<Arc<Directory>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some((app, mailbox)) = subject(&directory, &request) {
        let uploads = matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        );
        let bytes = if uploads {
            request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        } else {
            0
        };
        let refused = {
            let mut state = directory.lock();
            if !state.graph_budgets.enter(&app, &mailbox) {
                *state
                    .graph_budgets
                    .throttled
                    .entry(mailbox.clone())
                    .or_default() += 1;
                drop(state);
                let mut response = graph_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            let refused = state.graph_budgets.charge(&app, &mailbox, bytes).err();
            if refused.is_some() {
                *state
                    .graph_budgets
                    .throttled
                    .entry(mailbox.clone())
                    .or_default() += 1;
            }
            refused
        };
        let in_flight = InFlight {
            directory: directory.clone(),
            key: (app, mailbox),
        };
        if let Some((wait, message)) = refused {
            let mut response = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "ApplicationThrottled",
                message,
            );
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        let response = next.run(request).await;
        drop(in_flight);
        return response;
    }
    next.run(request).await
}

/// `/_sim/graph-limits` (GET, PUT: the limits; GET also `?mailbox=` for its usage)
/// and `/_sim/drafts?mailbox=` (how many drafts the mailbox holds).
pub fn control_router() -> axum::Router<Arc<Directory>> {
    axum::Router::new()
        .route(
            "/_sim/graph-limits",
            axum::routing::get(get_limits).put(set_limits),
        )
        .route("/_sim/drafts", axum::routing::get(drafts))
}

#[derive(Debug, Deserialize)]
struct MailboxQuery {
    mailbox: Option<String>,
}

async fn get_limits(
    State(directory): State<Arc<Directory>>,
    axum::extract::Query(query): axum::extract::Query<MailboxQuery>,
) -> axum::Json<serde_json::Value> {
    let state = directory.lock();
    let budgets = &state.graph_budgets;
    let mut body = serde_json::to_value(budgets.limits).unwrap_or_default();
    if let Some(mailbox) = query.mailbox.map(|m| m.to_ascii_lowercase()) {
        let (requests, bytes) = budgets.usage(&mailbox);
        body["usage"] = serde_json::json!({
            "requests": requests,
            "upload_bytes": bytes,
            "throttled": budgets.throttled.get(&mailbox).copied().unwrap_or(0),
        });
    }
    axum::Json(body)
}

async fn set_limits(
    State(directory): State<Arc<Directory>>,
    axum::Json(limits): axum::Json<GraphLimits>,
) -> StatusCode {
    directory.set_graph_limits(limits);
    StatusCode::NO_CONTENT
}

async fn drafts(
    State(directory): State<Arc<Directory>>,
    axum::extract::Query(query): axum::extract::Query<MailboxQuery>,
) -> Response {
    let Some(mailbox) = query.mailbox else {
        return (StatusCode::BAD_REQUEST, "?mailbox= is required").into_response();
    };
    axum::Json(serde_json::json!({ "mailbox": mailbox, "drafts": directory.drafts_in(&mailbox) }))
        .into_response()
}

impl Directory {
    /// Sets Graph's request and upload limits (tests lower them).
    pub fn set_graph_limits(&self, limits: GraphLimits) {
        self.lock().graph_budgets.limits = limits;
    }

    /// The recipients `mailbox` sent to today (UTC), by Graph and SMTP together: the
    /// count Exchange's 10 000 a day is checked against.
    pub fn recipients_today(&self, mailbox: &str) -> usize {
        self.lock()
            .recipients_sent
            .get(&(
                mailbox.to_ascii_lowercase(),
                chrono::Utc::now().date_naive(),
            ))
            .copied()
            .unwrap_or(0)
    }

    /// The most Graph requests of one app that were in flight for `mailbox` at once,
    /// and the requests refused for being a fifth.
    pub fn graph_concurrency_of(&self, mailbox: &str) -> (usize, usize) {
        let state = self.lock();
        let mailbox = mailbox.to_ascii_lowercase();
        let budgets = &state.graph_budgets;
        (
            budgets.concurrency_peak.get(&mailbox).copied().unwrap_or(0),
            budgets
                .concurrency_refused
                .get(&mailbox)
                .copied()
                .unwrap_or(0),
        )
    }

    /// Requests Graph refused with `429` for `mailbox` over its budget.
    pub fn graph_throttled(&self, mailbox: &str) -> usize {
        self.lock()
            .graph_budgets
            .throttled
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_uploads_are_limited_per_app_and_mailbox() {
        let mut budgets = Budgets {
            limits: GraphLimits {
                requests: 3,
                request_window_seconds: 600,
                upload_bytes: 100,
                upload_window_seconds: 300,
            },
            ..Default::default()
        };
        assert!(budgets.charge("app", "scan@x", 60).is_ok());
        let (wait, message) = budgets.charge("app", "scan@x", 60).unwrap_err();
        assert!(message.contains("IncomingBytes"), "{message}");
        assert!(wait <= Duration::from_secs(300) && wait > Duration::from_secs(290));
        assert!(budgets.charge("app", "scan@x", 40).is_ok());
        assert!(budgets.charge("app", "scan@x", 0).is_ok());
        let (wait, message) = budgets.charge("app", "scan@x", 0).unwrap_err();
        assert!(message.contains("RequestRate"), "{message}");
        assert!(wait > Duration::from_secs(590));
        // Another app, another mailbox: their own budgets.
        assert!(budgets.charge("other", "scan@x", 60).is_ok());
        assert!(budgets.charge("app", "lab@x", 60).is_ok());
        assert_eq!(budgets.usage("scan@x"), (4, 160));
    }

    #[test]
    fn a_fifth_concurrent_request_of_an_app_to_a_mailbox_is_refused() {
        let mut budgets = Budgets::default();
        for _ in 0..CONCURRENT_REQUESTS {
            assert!(budgets.enter("app", "scan@x"));
        }
        assert!(!budgets.enter("app", "scan@x"));
        assert!(budgets.enter("other", "scan@x"), "another app has its own");
        assert!(budgets.enter("app", "lab@x"), "another mailbox too");
        assert_eq!(budgets.concurrency_peak["scan@x"], CONCURRENT_REQUESTS);
        assert_eq!(budgets.concurrency_refused["scan@x"], 1);
    }

    #[test]
    fn percent_encoded_mailboxes_are_decoded() {
        assert_eq!(
            percent_decode("scan%40praxis.example"),
            "scan@praxis.example"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
