//! Graph's path for messages whose base64 request would exceed 4 MB (when the
//! customer has no SMTP for them): the message without its attachments becomes a
//! draft (MIME), each attachment follows — under 3 MB posted directly, larger ones
//! through an upload session in ranges of at most 4 MB — and the draft is sent. The
//! text, the header fields and every attachment's name, type and bytes are kept; the
//! MIME structure around them is Exchange's. Needs the `Mail.ReadWrite` permission.
//!
//! A draft is recorded on its message as soon as Graph created it, and deleted when
//! an upload or the send fails; an attempt that finds a recorded draft (its
//! predecessor failed to delete it, or its worker died between the steps) deletes it
//! before it creates a new one. A message never has more than one draft.
//!
//! A draft can also exist without being recorded: Graph created it but its answer
//! never arrived (a timeout, a lost connection, a worker that died before recording
//! it). Every draft carries the header field `X-Mailbridge-Queue-Id` with its
//! message's queue id, and before making a draft an attempt sweeps the mailbox's
//! Drafts folder: drafts marked for this message, and marked drafts older than an
//! hour (no attempt lasts that long), are deleted. Drafts without the marker — the
//! mailbox user's own — are never touched.

use base64::{Engine, engine::general_purpose::STANDARD};
use mail_parser::{MessageParser, MimeHeaders};
use mailbridge_core::diagnosis;
use secrecy::SecretString;
use serde::Deserialize;

use crate::{graph::GraphClient, meter::Cost, outcome::DeliveryOutcome};

/// Why the ledger could not be read or written.
pub type LedgerError = Box<dyn std::error::Error + Send + Sync>;

/// Where a message's draft is recorded between attempts (the workers keep it on
/// the queued message): the draft path records it as soon as Graph created it and
/// clears it once the draft was sent or deleted.
pub trait DraftLedger: Sync {
    /// The message's queue id, which marks its drafts.
    fn message_id(&self) -> uuid::Uuid;

    /// The draft an earlier attempt recorded, if any.
    fn recorded(&self) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send;

    /// Records `draft` (or that there is none); fails when this attempt may not go
    /// on (its worker's lease passed to another), and a draft it could not record
    /// is deleted and not sent.
    fn record(&self, draft: Option<&str>) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

/// The header field that marks a draft as mailbridge's, with its message's queue id.
pub const DRAFT_MARKER: &str = "X-Mailbridge-Queue-Id";

/// A marked draft older than this is left over from an attempt that ended long ago.
const STALE_DRAFT_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The requests and bytes the draft path takes for `mime`: the sweep of the Drafts
/// folder, the draft, each attachment (one request, or a session and its ranges),
/// the send.
pub fn cost(mime: &[u8]) -> Cost {
    let Some(parts) = split(mime, None) else {
        return Cost {
            requests: 1,
            bytes: mime.len() as i64,
        };
    };
    let mut cost = Cost {
        requests: 3,
        bytes: base64_len(parts.draft.len()),
    };
    for file in &parts.files {
        if file.bytes.len() < DIRECT_ATTACHMENT_LIMIT {
            cost.requests += 1;
            cost.bytes += base64_len(file.bytes.len()) + 200;
        } else {
            cost.requests += 1 + file.bytes.len().div_ceil(RANGE) as i64;
            cost.bytes += file.bytes.len() as i64 + 200;
        }
    }
    cost
}

fn base64_len(n: usize) -> i64 {
    (n.div_ceil(3) * 4) as i64
}

/// Attachments this small are posted directly; larger ones need an upload session.
const DIRECT_ATTACHMENT_LIMIT: usize = 3 * 1024 * 1024;
/// Upload ranges: a multiple of 320 KiB under 4 MB, as Graph recommends.
const RANGE: usize = 12 * 320 * 1024;

/// A file taken out of the message.
struct File {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
}

/// The message split for the draft path: header fields and text for the draft, and
/// the attachments.
struct Split {
    draft: Vec<u8>,
    files: Vec<File>,
}

fn split(mime: &[u8], queue_id: Option<uuid::Uuid>) -> Option<Split> {
    let message = MessageParser::default().parse(mime)?;
    let mut draft = Vec::new();
    for (name, value) in message.headers_raw() {
        let lower = name.to_ascii_lowercase();
        // A marker the message brought with it would name another message's draft.
        if lower.starts_with("content-")
            || lower == "mime-version"
            || lower.eq_ignore_ascii_case(DRAFT_MARKER)
        {
            continue;
        }
        draft.extend_from_slice(name.as_bytes());
        draft.extend_from_slice(b":");
        draft.extend_from_slice(value.as_bytes());
        if !value.ends_with('\n') {
            draft.extend_from_slice(b"\r\n");
        }
    }
    if let Some(id) = queue_id {
        draft.extend_from_slice(format!("{DRAFT_MARKER}: {id}\r\n").as_bytes());
    }
    let (subtype, text) = match (message.body_html(0), message.body_text(0)) {
        (_, Some(text)) if message.html_body_count() == 0 => ("plain", text.into_owned()),
        (Some(html), _) => ("html", html.into_owned()),
        (None, Some(text)) => ("plain", text.into_owned()),
        (None, None) => ("plain", String::new()),
    };
    draft.extend_from_slice(
        format!("MIME-Version: 1.0\r\nContent-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n")
            .as_bytes(),
    );
    for chunk in STANDARD.encode(text.as_bytes()).as_bytes().chunks(76) {
        draft.extend_from_slice(chunk);
        draft.extend_from_slice(b"\r\n");
    }
    let files = message
        .attachments()
        .enumerate()
        .map(|(i, part)| File {
            name: part
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("attachment-{}", i + 1)),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".into()),
            bytes: part.contents().to_vec(),
        })
        .collect();
    Some(Split { draft, files })
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// A page of the Drafts folder.
#[derive(Deserialize)]
struct DraftList {
    #[serde(default)]
    value: Vec<ListedDraft>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedDraft {
    id: String,
    #[serde(default)]
    created_date_time: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    internet_message_headers: Vec<HeaderField>,
}

#[derive(Deserialize)]
struct HeaderField {
    name: String,
    value: String,
}

impl ListedDraft {
    /// The queue id mailbridge marked the draft with, if it did.
    fn marker(&self) -> Option<&str> {
        self.internet_message_headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(DRAFT_MARKER))
            .map(|h| h.value.trim())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadSession {
    upload_url: String,
}

impl GraphClient {
    /// Sends a message too large for one `sendMail` request, as `mailbox` (unless
    /// Graph asked the mailbox to wait).
    pub async fn send_large(
        &self,
        token: &SecretString,
        mailbox: &str,
        mime: &[u8],
        ledger: &impl DraftLedger,
    ) -> DeliveryOutcome {
        if let Some(remembered) = self.throttled(mailbox) {
            return remembered;
        }
        let outcome = self.send_draft(token, mailbox, mime, ledger).await;
        self.note(mailbox, &outcome);
        outcome
    }

    async fn send_draft(
        &self,
        token: &SecretString,
        mailbox: &str,
        mime: &[u8],
        ledger: &impl DraftLedger,
    ) -> DeliveryOutcome {
        let queue_id = ledger.message_id();
        let messages = format!(
            "{}/v1.0/users/{}/messages",
            self.base_url(),
            crate::graph::urlencode_path(mailbox)
        );
        // A draft an earlier attempt left goes first: never two.
        match ledger.recorded().await {
            Ok(Some(previous)) => {
                if let Err(outcome) = self
                    .delete_draft(token, queue_id, &messages, &previous)
                    .await
                {
                    return outcome;
                }
                if let Err(e) = ledger.record(None).await {
                    return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string()),
        }
        // Drafts of this message whose creation was never recorded, and drafts
        // long left over, go first.
        self.sweep_drafts(token, queue_id, mailbox, &messages).await;
        let Some(parts) = split(mime, Some(queue_id)) else {
            return DeliveryOutcome::graph(
                400,
                "ErrorMimeContentInvalid".into(),
                "the message could not be parsed".into(),
                None,
            );
        };
        let draft: Created = match self
            .call(
                token,
                queue_id,
                self.http()
                    .post(&messages)
                    .header("Content-Type", "text/plain")
                    .body(STANDARD.encode(&parts.draft)),
            )
            .await
        {
            Ok(body) => match serde_json::from_slice(&body) {
                Ok(created) => created,
                Err(e) => {
                    return DeliveryOutcome::graph(
                        502,
                        "InvalidResponse".into(),
                        e.to_string(),
                        None,
                    );
                }
            },
            Err(outcome) => return outcome,
        };
        if let Err(e) = ledger.record(Some(&draft.id)).await {
            // Unrecorded, it must not outlive this attempt.
            let _ = self
                .delete_draft(token, queue_id, &messages, &draft.id)
                .await;
            return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string());
        }
        let draft_url = format!("{messages}/{}", draft.id);
        let mut sent = Ok(());
        for file in &parts.files {
            sent = self.attach(token, queue_id, &draft_url, file).await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = self
                .call(
                    token,
                    queue_id,
                    self.http()
                        .post(format!("{draft_url}/send"))
                        .header("Content-Length", "0"),
                )
                .await
                .map(drop);
        }
        match sent {
            Ok(()) => {
                // Sent: the draft is now the Sent Items copy, no longer a draft.
                if let Err(e) = ledger.record(None).await {
                    tracing::debug!(queue_id = %queue_id, error = %e, "could not clear the sent draft's id");
                }
                DeliveryOutcome::Accepted { status: 202 }
            }
            Err(outcome) => {
                // The failed draft (with whatever it got of its attachments) goes;
                // if that fails too, the id stays recorded for the next attempt.
                match self
                    .delete_draft(token, queue_id, &messages, &draft.id)
                    .await
                {
                    Ok(()) => {
                        if let Err(e) = ledger.record(None).await {
                            tracing::debug!(queue_id = %queue_id, error = %e, "could not clear a deleted draft's id");
                        }
                    }
                    Err(failure) => {
                        tracing::warn!(queue_id = %queue_id, draft = %draft.id, reason = ?failure.failure().map(|f| &f.message), "could not delete a failed draft; the next attempt deletes it");
                    }
                }
                outcome
            }
        }
    }

    /// Deletes the drafts mailbridge marked for `queue_id`, and those it marked more
    /// than an hour ago; drafts without the marker are the mailbox user's own. Best
    /// effort: a sweep that fails is tried again by the next large message.
    async fn sweep_drafts(
        &self,
        token: &SecretString,
        queue_id: uuid::Uuid,
        mailbox: &str,
        messages: &str,
    ) {
        let url = format!(
            "{}/v1.0/users/{}/mailFolders/drafts/messages",
            self.base_url(),
            crate::graph::urlencode_path(mailbox)
        );
        let listed = self
            .call(
                token,
                queue_id,
                self.http().get(&url).query(&[
                    ("$select", "id,createdDateTime,internetMessageHeaders"),
                    ("$top", "100"),
                ]),
            )
            .await;
        let drafts: DraftList = match listed.map(|body| serde_json::from_slice(&body)) {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                tracing::debug!(queue_id = %queue_id, error = %e, "the Drafts folder could not be read");
                return;
            }
            Err(outcome) => {
                tracing::debug!(queue_id = %queue_id, reason = ?outcome.failure().map(|f| &f.message), "the Drafts folder could not be listed");
                return;
            }
        };
        let now = chrono::Utc::now();
        for draft in drafts.value {
            let Some(marked) = draft.marker() else {
                continue;
            };
            let ours = marked == queue_id.to_string();
            let stale = draft
                .created_date_time
                .is_some_and(|created| now - created > STALE_DRAFT_AGE);
            if ours || stale {
                match self
                    .delete_draft(token, queue_id, messages, &draft.id)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(queue_id = %queue_id, draft_of = %marked, "deleted a draft left behind");
                    }
                    Err(outcome) => {
                        tracing::debug!(queue_id = %queue_id, reason = ?outcome.failure().map(|f| &f.message), "could not delete a draft left behind");
                    }
                }
            }
        }
    }

    /// Deletes draft `id`; one that is not there (sent, or deleted already) is gone.
    async fn delete_draft(
        &self,
        token: &SecretString,
        queue_id: uuid::Uuid,
        messages: &str,
        id: &str,
    ) -> Result<(), DeliveryOutcome> {
        match self
            .call(
                token,
                queue_id,
                self.http().delete(format!("{messages}/{id}")),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(outcome) if outcome.status() == Some(404) => Ok(()),
            Err(outcome) => Err(outcome),
        }
    }

    async fn attach(
        &self,
        token: &SecretString,
        queue_id: uuid::Uuid,
        draft_url: &str,
        file: &File,
    ) -> Result<(), DeliveryOutcome> {
        if file.bytes.len() < DIRECT_ATTACHMENT_LIMIT {
            let body = serde_json::json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": file.name,
                "contentType": file.content_type,
                "contentBytes": STANDARD.encode(&file.bytes),
            });
            return self
                .call(
                    token,
                    queue_id,
                    self.http()
                        .post(format!("{draft_url}/attachments"))
                        .json(&body),
                )
                .await
                .map(drop);
        }
        let request = serde_json::json!({
            "AttachmentItem": {
                "attachmentType": "file",
                "name": file.name,
                "size": file.bytes.len(),
                "contentType": file.content_type,
            }
        });
        let created = self
            .call(
                token,
                queue_id,
                self.http()
                    .post(format!("{draft_url}/attachments/createUploadSession"))
                    .json(&request),
            )
            .await?;
        let session: UploadSession = serde_json::from_slice(&created).map_err(|e| {
            DeliveryOutcome::graph(502, "InvalidResponse".into(), e.to_string(), None)
        })?;
        let total = file.bytes.len();
        for (i, range) in file.bytes.chunks(RANGE).enumerate() {
            let first = i * RANGE;
            let last = first + range.len() - 1;
            // The upload URL carries its own authorization: no bearer token.
            let put = self
                .http()
                .put(&session.upload_url)
                .header("Content-Range", format!("bytes {first}-{last}/{total}"))
                .body(range.to_vec());
            self.exchange(put).await?;
        }
        Ok(())
    }
}
