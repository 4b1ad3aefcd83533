//! Microsoft Graph `sendMail` in MIME form: the whole message, base64, as
//! `text/plain`, posted as the tenant's sender mailbox. Graph answers `202` when it
//! has accepted the message; everything else is classified in `outcome`.
//!
//! A mailbox Graph throttled (`429`, or `503`, with `Retry-After`) is left alone
//! until its `Retry-After` has passed: the messages that come up for it meanwhile
//! get the same answer from memory, so that a backlog does not keep hammering a
//! mailbox that was asked to wait (which only prolongs the throttling).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::outcome::DeliveryOutcome;

/// Graph's limit on a request body.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Whether `mime`, base64-encoded, fits one Graph request.
pub fn fits_one_request(mime_len: usize) -> bool {
    mime_len.div_ceil(3) * 4 <= MAX_REQUEST_BYTES
}

#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
    throttled: Arc<Mutex<HashMap<String, Throttled>>>,
}

/// Graph's last answer for a mailbox that was asked to wait, and until when.
#[derive(Debug, Clone)]
struct Throttled {
    until: Instant,
    status: u16,
    code: String,
    message: String,
}

/// The longest `Retry-After` honoured from memory (the backoff honours any).
const MAX_REMEMBERED_WAIT: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, base_url: String, timeout: Duration) -> Self {
        Self {
            http,
            base_url,
            timeout,
            throttled: Arc::default(),
        }
    }

    /// While `mailbox`'s `Retry-After` runs: Graph's answer again, with the time left
    /// (nothing is sent).
    pub(crate) fn throttled(&self, mailbox: &str) -> Option<DeliveryOutcome> {
        let throttled = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
        let remembered = throttled.get(&mailbox.to_ascii_lowercase())?;
        let left = remembered.until.checked_duration_since(Instant::now())?;
        Some(DeliveryOutcome::graph(
            remembered.status,
            remembered.code.clone(),
            format!(
                "{} (not sent: Microsoft asked this mailbox to wait {} s more)",
                remembered.message,
                left.as_secs() + 1
            ),
            Some(left),
        ))
    }

    /// Remembers a `Retry-After` Graph gave `mailbox` with a throttling answer.
    pub(crate) fn note(&self, mailbox: &str, outcome: &DeliveryOutcome) {
        let Some(failure) = outcome.failure() else {
            return;
        };
        let (Some(status @ (429 | 503)), Some(wait)) = (failure.status, failure.retry_after) else {
            return;
        };
        let now = Instant::now();
        let until = now + wait.min(MAX_REMEMBERED_WAIT);
        let mut throttled = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
        throttled.retain(|_, t| t.until > now);
        throttled.insert(
            mailbox.to_ascii_lowercase(),
            Throttled {
                until,
                status,
                code: failure.code.clone(),
                message: failure.message.clone(),
            },
        );
    }

    /// Sends `mime` as `mailbox`; `queue_id` goes along as Graph's `client-request-id`,
    /// so Microsoft's logs and ours name the same request.
    pub async fn send_mime(
        &self,
        token: &SecretString,
        mailbox: &str,
        mime: &[u8],
        queue_id: uuid::Uuid,
    ) -> DeliveryOutcome {
        self.send_mail(
            token,
            mailbox,
            "text/plain",
            STANDARD.encode(mime).into_bytes(),
            queue_id,
        )
        .await
    }

    /// Sends a `sendMail` JSON body (the form that can skip Sent Items) as `mailbox`.
    pub async fn send_json(
        &self,
        token: &SecretString,
        mailbox: &str,
        json: Vec<u8>,
        queue_id: uuid::Uuid,
    ) -> DeliveryOutcome {
        self.send_mail(token, mailbox, "application/json", json, queue_id)
            .await
    }

    async fn send_mail(
        &self,
        token: &SecretString,
        mailbox: &str,
        content_type: &str,
        body: Vec<u8>,
        queue_id: uuid::Uuid,
    ) -> DeliveryOutcome {
        let url = format!(
            "{}/v1.0/users/{}/sendMail",
            self.base_url,
            urlencode_path(mailbox)
        );
        if let Some(remembered) = self.throttled(mailbox) {
            return remembered;
        }
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        match self.call(token, queue_id, request).await {
            Ok(_) => DeliveryOutcome::Accepted { status: 202 },
            Err(failure) => {
                self.note(mailbox, &failure);
                failure
            }
        }
    }

    /// An authorized request to Graph; the body of a success, or the classified failure.
    pub(crate) async fn call(
        &self,
        token: &SecretString,
        queue_id: uuid::Uuid,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, DeliveryOutcome> {
        let request = request
            .bearer_auth(token.expose_secret())
            .header("client-request-id", queue_id.to_string());
        self.exchange(request).await
    }

    /// Sends a request (authorized or not) and classifies a failed answer.
    pub(crate) async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, DeliveryOutcome> {
        let unreachable = |e: reqwest::Error| {
            DeliveryOutcome::unreachable("graph", crate::describe_http_error(&e))
        };
        let request = request.timeout(self.timeout).build().map_err(unreachable)?;
        // Graph counts every request against the mailbox's budget, answered or not.
        crate::meter::count(
            request
                .body()
                .and_then(reqwest::Body::as_bytes)
                .map_or(0, <[u8]>::len),
        );
        let response = self.http.execute(request).await.map_err(unreachable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body);
        }
        let (code, message) = error_of(status.as_u16(), &body);
        Err(DeliveryOutcome::graph(
            status.as_u16(),
            code,
            message,
            retry_after,
        ))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// Graph's error code and message from an error response (or the raw text).
pub(crate) fn error_of(status: u16, body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<GraphErrorBody>(body) {
        Ok(parsed) => (parsed.error.code, parsed.error.message),
        Err(_) => (
            format!("HTTP {status}"),
            String::from_utf8_lossy(body).chars().take(500).collect(),
        ),
    }
}

/// Percent-encodes a mailbox for a URL path segment (`@` and `.` stay readable).
pub(crate) fn urlencode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' | b'+' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mailbridge_core::queue::AttemptOutcome;

    use super::*;

    #[test]
    fn a_throttled_mailbox_is_answered_from_memory_until_its_retry_after() {
        mailbridge_core::tls::install_crypto_provider();
        let graph = GraphClient::new(
            reqwest::Client::new(),
            "https://graph.invalid".into(),
            Duration::from_secs(5),
        );
        let throttled = |status, retry_after| {
            DeliveryOutcome::graph(
                status,
                "ApplicationThrottled".into(),
                "slow down".into(),
                retry_after,
            )
        };
        graph.note(
            "scan@praxis.example",
            &throttled(400, Some(Duration::from_secs(30))),
        );
        graph.note("scan@praxis.example", &throttled(429, None));
        assert!(graph.throttled("scan@praxis.example").is_none());

        graph.note(
            "Scan@Praxis.example",
            &throttled(429, Some(Duration::from_secs(30))),
        );
        let remembered = graph.throttled("scan@praxis.example").expect("remembered");
        let failure = remembered.failure().expect("a failure");
        assert_eq!(
            (failure.status, failure.code.as_str()),
            (Some(429), "ApplicationThrottled")
        );
        assert!(
            failure
                .retry_after
                .is_some_and(|left| left <= Duration::from_secs(30))
        );
        assert_eq!(remembered.attempt_outcome(), AttemptOutcome::Retry);
        assert!(graph.throttled("lab@praxis.example").is_none());

        graph.note("lab@praxis.example", &throttled(503, Some(Duration::ZERO)));
        assert!(
            graph.throttled("lab@praxis.example").is_none(),
            "expired at once"
        );
    }
}
