//! The bounce watcher: Graph's `202` (and SMTP's `250`) mean that Microsoft accepted a
//! message, not that it arrived. What Exchange cannot deliver comes back later as a
//! non-delivery report (NDR) in the sender mailbox. Every
//! `MAILBRIDGE_BOUNCE_POLL_SECONDS` the watcher lists what is new in the Inbox of
//! each customer's sender mailbox (customers with a message accepted in the last
//! days only), reads the messages that look like NDRs (`ndr`), matches the original
//! Message-ID to a message mailbridge submitted, records `bounced` with Microsoft's
//! status code and what it means per failed recipient, reports it like a failure
//! (`notify`), counts it (`mailbridge_bounces_total`), and moves the NDR into the
//! folder "mailbridge bounces" so that the shared mailbox does not fill.
//!
//! Reading needs `Mail.Read` (moving `Mail.ReadWrite`) on the sender mailbox — RBAC
//! for Applications scoped to that mailbox, or the tenant-wide Graph permission.
//! Without it Graph answers `403`: the customer's page then says that bounces are
//! not visible, and why. Both delivery paths are watched (an SMTP customer's app may
//! have the Graph permission too). A mailbox is claimed with a lease in
//! `bounce_watch` (`mailbridge_core::bounces`), so several workers never read one
//! mailbox at once; its watermark makes each poll ask only for what is new.
//!
//! Over 500 lines: it is one poll — claim, list, read, record, move — whose steps share
//! one mailbox's Graph access (`Mailbox`) and the Graph answer types; reading an NDR
//! already lives in `ndr`, and the leases and records in `mailbridge_core::bounces`.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use mailbridge_core::{
    bounces::{self, BouncedRecipient, PollResult, Recorded, Watch},
    diagnosis,
    metrics::metrics,
    queue::{self, MessageKind},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use mailbridge_m365::{
    outcome::{Failure, Source},
    token::TokenKey,
};

use crate::{
    Worker,
    delivery::{CustomerGraph, CustomerGraphError},
    ndr, notify,
};

/// The folder processed reports are moved to.
pub const BOUNCE_FOLDER: &str = "mailbridge bounces";
/// Mailboxes one worker claims per round.
const CLAIM_BATCH: i64 = 8;
/// How long a claim lasts before another worker may take the mailbox.
const CLAIM: Duration = Duration::from_secs(300);
/// Messages asked for per page, and pages per poll (the rest waits for the next).
const PAGE_SIZE: usize = 50;
const MAX_PAGES: usize = 10;

#[derive(Debug, Deserialize)]
struct Page {
    value: Vec<Listed>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: String,
    received_date_time: DateTime<Utc>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    from: Option<From>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct From {
    email_address: Option<EmailAddress>,
}

#[derive(Debug, Deserialize)]
struct EmailAddress {
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Folder {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Folders {
    value: Vec<Folder>,
}

/// A Graph answer that is not a success.
#[derive(Debug)]
struct GraphFailure {
    status: u16,
    text: String,
}

/// Why a poll stopped.
#[derive(Debug)]
enum PollError {
    /// Graph refused to show the mailbox (`403`).
    NotVisible(String),
    Failed(String),
}

/// One mailbox's Graph access for a poll.
struct Mailbox<'a> {
    worker: &'a Worker,
    token: SecretString,
    key: TokenKey,
    /// `{graph}/v1.0/users/{mailbox}`.
    base: String,
}

impl Mailbox<'_> {
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String, GraphFailure> {
        let mut request = self
            .worker
            .graph
            .http()
            .request(method, url)
            .bearer_auth(self.token.expose_secret())
            .timeout(self.worker.settings.m365.request_timeout);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| GraphFailure {
            status: 0,
            text: mailbridge_m365::describe_http_error(&e),
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        if status == 401 {
            self.worker.tokens.invalidate(&self.key).await;
        }
        let error: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Err(GraphFailure {
            status,
            text: format!(
                "Graph {status}: {}: {}",
                error["error"]["code"].as_str().unwrap_or(""),
                error["error"]["message"].as_str().unwrap_or(&text)
            ),
        })
    }

    /// The id of the bounce folder: `known`, found by name, or created.
    async fn folder(&self, known: Option<&str>) -> Result<String, GraphFailure> {
        if let Some(id) = known {
            return Ok(id.to_owned());
        }
        let mut find =
            url::Url::parse(&format!("{}/mailFolders", self.base)).map_err(|e| GraphFailure {
                status: 0,
                text: e.to_string(),
            })?;
        find.query_pairs_mut()
            .append_pair("$filter", &format!("displayName eq '{BOUNCE_FOLDER}'"));
        let lookup = |text: String| {
            serde_json::from_str::<Folders>(&text)
                .ok()
                .and_then(|f| f.value.into_iter().next())
                .map(|f| f.id)
        };
        if let Some(id) = lookup(
            self.request(reqwest::Method::GET, find.as_str(), None)
                .await?,
        ) {
            return Ok(id);
        }
        match self
            .request(
                reqwest::Method::POST,
                &format!("{}/mailFolders", self.base),
                Some(serde_json::json!({ "displayName": BOUNCE_FOLDER })),
            )
            .await
        {
            Ok(text) => serde_json::from_str::<Folder>(&text)
                .map(|f| f.id)
                .map_err(|e| GraphFailure {
                    status: 0,
                    text: format!("Graph's folder: {e}"),
                }),
            // Another worker (or a person) made it meanwhile.
            Err(GraphFailure { status: 409, .. }) => self
                .request(reqwest::Method::GET, find.as_str(), None)
                .await
                .and_then(|text| {
                    lookup(text).ok_or(GraphFailure {
                        status: 404,
                        text: "the bounce folder exists but cannot be found".into(),
                    })
                }),
            Err(e) => Err(e),
        }
    }
}

impl Worker {
    /// Polls due sender mailboxes for NDRs until `shutdown`.
    pub(crate) async fn bounce_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = self.settings.worker.bounce_poll_seconds;
        if interval == 0 {
            return;
        }
        let interval = Duration::from_secs(interval);
        let tick = interval.min(Duration::from_secs(
            self.settings.worker.sweep_seconds.clamp(1, 60),
        ));
        loop {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let claimed = match bounces::claim_due(
                    &self.pool,
                    &self.identity,
                    CLAIM_BATCH,
                    CLAIM,
                )
                .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim mailboxes to watch for bounces");
                        break;
                    }
                };
                let full = claimed.len() as i64 == CLAIM_BATCH;
                for watch in claimed {
                    let result = self.poll_mailbox(&watch).await;
                    if let Err(e) =
                        bounces::finish(&self.pool, &watch, &self.identity, &result, interval).await
                    {
                        tracing::warn!(tenant = %watch.tenant_id, error = %e, "could not record a bounce poll");
                    }
                }
                if !full {
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Reads one mailbox's new NDRs and handles them.
    async fn poll_mailbox(&self, watch: &Watch) -> PollResult {
        let result = self.read_reports(watch).await;
        let label = match &result {
            Ok(_) => "read",
            Err(PollError::NotVisible(_)) => "not_visible",
            Err(PollError::Failed(_)) => "failed",
        };
        metrics()
            .worker
            .bounce_polls
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(result) => result,
            Err(PollError::NotVisible(reason)) => {
                tracing::info!(tenant = %watch.tenant_id, reason, "bounces not visible");
                PollResult::NotVisible { reason }
            }
            Err(PollError::Failed(why)) => {
                tracing::info!(tenant = %watch.tenant_id, error = why, "could not read the sender mailbox for bounces");
                PollResult::Failed
            }
        }
    }

    async fn read_reports(&self, watch: &Watch) -> Result<PollResult, PollError> {
        let failed = |e: &dyn std::fmt::Display| PollError::Failed(e.to_string());
        let CustomerGraph { graph, key, token } =
            self.customer_graph(watch.tenant_id).await.map_err(|e| {
                PollError::Failed(match e {
                    CustomerGraphError::Database(e) => e,
                    CustomerGraphError::Gone => "the customer is gone".into(),
                    CustomerGraphError::NotConnected => "not connected to Microsoft 365".into(),
                    CustomerGraphError::NoApp => "no app to read the mailbox with".into(),
                    CustomerGraphError::Token(e) => format!("token: {e}"),
                })
            })?;
        let mailbox = Mailbox {
            worker: self,
            token: token.access_token.clone(),
            key,
            base: format!("{graph}/v1.0/users/{}", watch.mailbox),
        };
        let since = watch.watermark.unwrap_or_else(|| {
            Utc::now() - chrono::Duration::days(bounces::BOUNCE_WINDOW_DAYS as i64)
        });
        let mut url = url::Url::parse(&format!("{}/mailFolders/inbox/messages", mailbox.base))
            .map_err(|e| failed(&e))?;
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!("receivedDateTime ge {}", since.format("%Y-%m-%dT%H:%M:%SZ")),
            )
            .append_pair("$select", "id,subject,receivedDateTime,from")
            .append_pair("$orderby", "receivedDateTime asc")
            .append_pair("$top", &PAGE_SIZE.to_string());
        let mut next = Some(url.to_string());
        let mut watermark = watch.watermark;
        let mut folder = watch.folder_id.clone();
        let mut pages = 0;
        let mut found = 0;
        while let Some(url) = next.take() {
            // The token goes to Graph only, never to wherever a link points.
            if !url.starts_with(&format!("{graph}/")) {
                return Err(PollError::Failed(format!(
                    "Graph's next link leaves Graph: {url}"
                )));
            }
            pages += 1;
            if pages > MAX_PAGES {
                break;
            }
            let text = mailbox
                .request(reqwest::Method::GET, &url, None)
                .await
                .map_err(|e| match e.status {
                    403 => PollError::NotVisible(e.text),
                    _ => PollError::Failed(e.text),
                })?;
            let page: Page = serde_json::from_str(&text)
                .map_err(|e| PollError::Failed(format!("Graph's answer: {e}")))?;
            for listed in page.value {
                let from = listed
                    .from
                    .as_ref()
                    .and_then(|f| f.email_address.as_ref())
                    .and_then(|e| e.address.as_deref())
                    .unwrap_or("");
                if ndr::looks_like_report(listed.subject.as_deref().unwrap_or(""), from) {
                    match self
                        .handle_report(&mailbox, watch, &listed, &mut folder)
                        .await
                    {
                        Ok(n) => found += n,
                        // This report again at the next poll: the watermark stays before it.
                        Err(e) => {
                            bounces::count_found(&self.pool, watch.tenant_id, found)
                                .await
                                .ok();
                            tracing::info!(tenant = %watch.tenant_id, error = e.text, "could not handle a non-delivery report");
                            return Ok(PollResult::Read {
                                watermark,
                                folder_id: folder,
                            });
                        }
                    }
                }
                watermark = Some(watermark.map_or(listed.received_date_time, |w| {
                    w.max(listed.received_date_time)
                }));
            }
            next = page.next_link;
        }
        if found > 0 {
            bounces::count_found(&self.pool, watch.tenant_id, found)
                .await
                .map_err(|e| failed(&e))?;
        }
        Ok(PollResult::Read {
            watermark,
            folder_id: folder,
        })
    }

    /// Reads, records and moves one message that looks like an NDR; the number of
    /// recipients it newly bounced.
    async fn handle_report(
        &self,
        mailbox: &Mailbox<'_>,
        watch: &Watch,
        listed: &Listed,
        folder: &mut Option<String>,
    ) -> Result<i64, GraphFailure> {
        let mime = mailbox
            .request(
                reqwest::Method::GET,
                &format!("{}/messages/{}/$value", mailbox.base, listed.id),
                None,
            )
            .await?;
        let Some(report) = ndr::parse(mime.as_bytes()) else {
            return Ok(0);
        };
        let recipients: Vec<BouncedRecipient> = report
            .failed
            .iter()
            .map(|f| BouncedRecipient {
                recipient: f.recipient.clone(),
                status: f.status.clone(),
                diagnostic_code: f.diagnostic_code.clone(),
                diagnosis: diagnosis::bounce(&f.status, f.diagnostic_code.as_deref().unwrap_or(""))
                    .key
                    .to_owned(),
            })
            .collect();
        let database = |e: sqlx::Error| GraphFailure {
            status: 0,
            text: e.to_string(),
        };
        // The bounce and the reports about it commit together: a crash between the
        // two cannot lose a report, and a report handled again (the watermark stays
        // before it when anything here fails) queues none twice.
        let mut tx = self.pool.begin().await.map_err(database)?;
        let recorded = bounces::record(
            &mut tx,
            watch.tenant_id,
            &report.original_message_id,
            &listed.id,
            listed.received_date_time,
            &recipients,
        )
        .await
        .map_err(database)?;
        let Recorded::Matched { message, new } = recorded else {
            // Not about a message mailbridge sent: someone else's, left where it is.
            tracing::info!(tenant = %watch.tenant_id, message_id = report.original_message_id, "non-delivery report about a message mailbridge did not send");
            return Ok(0);
        };
        let mut reports = Vec::new();
        if message.kind != MessageKind::Notification {
            for bounced in &new {
                let failure = Failure {
                    diagnosis: diagnosis::bounce(
                        &bounced.status,
                        bounced.diagnostic_code.as_deref().unwrap_or(""),
                    ),
                    source: Source::Resource,
                    status: bounced.diagnostic_code.as_deref().and_then(reply_code),
                    code: bounced.status.clone(),
                    message: format!(
                        "{}: {}",
                        bounced.recipient,
                        bounced
                            .diagnostic_code
                            .as_deref()
                            .unwrap_or(&bounced.status)
                    ),
                    retry_after: None,
                    repeated: false,
                };
                // A report that cannot be written is skipped: the bounce is kept.
                match notify::bounced(&self.pool, &self.settings, &message, &failure).await {
                    Ok(report) => reports.extend(report),
                    Err(e) => {
                        tracing::warn!(queue_id = %message.id, error = %e, "could not write the bounce report")
                    }
                }
            }
        }
        let each: Vec<_> = reports.iter().collect();
        let queued = queue::enqueue_reports(&mut tx, &self.master_key, &each).await;
        let queued = queued.map_err(database)?;
        tx.commit().await.map_err(database)?;
        metrics().worker.notifications.inc_by(queued as u64);
        for bounced in &new {
            metrics()
                .worker
                .bounces
                .with_label_values(&[&watch.tenant_id.to_string(), &bounced.status])
                .inc();
            tracing::info!(queue_id = %message.id, tenant = %watch.tenant_id, recipient = bounced.recipient, status = bounced.status, "bounced");
        }
        // Out of the Inbox, so that the shared mailbox does not fill.
        let target = mailbox.folder(folder.as_deref()).await;
        let moved = match target {
            Ok(id) => {
                *folder = Some(id.clone());
                mailbox
                    .request(
                        reqwest::Method::POST,
                        &format!("{}/messages/{}/move", mailbox.base, listed.id),
                        Some(serde_json::json!({ "destinationId": id })),
                    )
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = moved {
            if e.status == 404 {
                // The folder was deleted: made again at the next report.
                *folder = None;
            }
            // Recorded all the same; the watermark passes it, so it is not read again.
            tracing::info!(tenant = %watch.tenant_id, error = e.text, "could not move a non-delivery report out of the Inbox (needs Mail.ReadWrite)");
        }
        Ok(new.len() as i64)
    }
}

/// The SMTP reply code of a `Diagnostic-Code` (`smtp;550 5.1.10 …` → 550).
fn reply_code(diagnostic: &str) -> Option<u16> {
    let text = diagnostic
        .split_once(';')
        .map_or(diagnostic, |(_, t)| t)
        .trim();
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reply_code_comes_from_the_diagnostic_code() {
        assert_eq!(
            super::reply_code("smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
            Some(550)
        );
        assert_eq!(super::reply_code("X-Unix; bounced"), None);
    }
}
