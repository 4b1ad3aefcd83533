//! What lands in the simulated mailboxes besides the messages sent: Exchange
//! Online's non-delivery reports (NDRs), and the mail folders an app can list, read
//! and move messages between through Graph (graph_mail.rs).
//!
//! Accepting a message (Graph `202`, SMTP `250`) is not delivering it. After the
//! acceptance, each recipient is looked at as Exchange's resolver would: an address
//! in one of the simulated organisations' own domains that is no mailbox there
//! bounces with `5.1.10 RESOLVER.ADR.RecipientNotFound`; a recipient set up (through
//! the control API) as having a full mailbox with `5.2.2`, or as refusing the
//! message with `5.7.1`. The report reaches the sender mailbox's Inbox a short,
//! configurable time later (it is delivered when due, the next time anyone looks),
//! shaped as Exchange Online's are: `Undeliverable: <subject>` from the tenant's
//! `MicrosoftExchange…` address, `multipart/report; report-type=delivery-status` with
//! a human-readable part, a `message/delivery-status` part (RFC 3464: Reporting-MTA,
//! Final-Recipient, Action: failed, Status, Diagnostic-Code) and the original
//! message's header section (`text/rfc822-headers`, its Message-ID included).
//! Source: Microsoft Learn, "Email non-delivery reports and SMTP errors in Exchange
//! Online".

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State as AxumState},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, put},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DeliveredMessage, Directory, directory::State};

/// The host Exchange Online's reports name as their Reporting-MTA.
const REPORTING_MTA: &str = "AM0PR01MB0001.eurprd01.prod.outlook.com";

/// How long after the acceptance a report arrives, unless set otherwise.
pub const DEFAULT_REPORT_DELAY_MS: u64 = 1_000;

/// What Exchange does with a message for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientOutcome {
    /// Delivered (or, outside the simulated organisations, handed on).
    Deliver,
    /// The recipient's mailbox is full: `5.2.2`.
    MailboxFull,
    /// A content filter or a delivery restriction refuses it: `5.7.1`.
    Refused,
}

/// A mail folder of a mailbox.
#[derive(Debug, Clone, Serialize)]
pub struct MailFolder {
    pub id: String,
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// `inbox` for the Inbox (Graph's well-known folder name).
    #[serde(skip)]
    pub well_known: Option<&'static str>,
}

/// A message in a mailbox folder.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    pub id: String,
    pub folder_id: String,
    pub received_at: DateTime<Utc>,
    pub subject: String,
    pub from: String,
    pub mime: String,
}

/// One mailbox's folders and messages.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub folders: Vec<MailFolder>,
    pub messages: Vec<StoredMessage>,
}

impl Default for Mailbox {
    fn default() -> Self {
        Self {
            folders: vec![MailFolder {
                id: graph_id(),
                display_name: "Inbox".to_owned(),
                well_known: Some("inbox"),
            }],
            messages: Vec::new(),
        }
    }
}

impl Mailbox {
    /// The folder `name` refers to: a well-known name (`inbox`) or a folder id.
    pub fn folder(&self, name: &str) -> Option<&MailFolder> {
        self.folders
            .iter()
            .find(|f| f.id == name || f.well_known.is_some_and(|w| w.eq_ignore_ascii_case(name)))
    }
}

/// A report on its way to the sender mailbox.
#[derive(Debug, Clone)]
struct PendingReport {
    due_at: DateTime<Utc>,
    tenant: Uuid,
    mailbox: String,
    message: StoredMessage,
}

/// The mailboxes' contents and the reports still on their way.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// (tenant, lower-cased mailbox) → its folders and messages.
    mailboxes: HashMap<(Uuid, String), Mailbox>,
    pending: Vec<PendingReport>,
    /// Lower-cased recipient → what Exchange does with mail for it.
    outcomes: HashMap<String, RecipientOutcome>,
    /// How long a report takes; `None`: the default.
    delay: Option<chrono::Duration>,
    /// Reports generated, ever.
    pub reports: usize,
    /// Messages accepted and then refused as a whole (over a recipient limit).
    pub refused: usize,
}

/// An id shaped like Graph's (long, URL-safe base64).
pub(crate) fn graph_id() -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE};
    let bytes: Vec<u8> = Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(Uuid::new_v4().as_bytes())
        .chain(Uuid::new_v4().as_bytes())
        .copied()
        .collect();
    format!("AAMkA{}", URL_SAFE.encode(bytes))
}

/// Records `message` as accepted (what the tests and the simulator's pages read)
/// and schedules the reports Exchange would send back for it.
pub(crate) fn accept(state: &mut State, message: DeliveredMessage) {
    let failed: Vec<(String, Failure)> = message
        .recipients
        .iter()
        .filter_map(|r| failure(state, r).map(|f| (r.clone(), f)))
        .collect();
    if !failed.is_empty() {
        let delay = state.mail.delay.unwrap_or(chrono::Duration::milliseconds(
            DEFAULT_REPORT_DELAY_MS as i64,
        ));
        let report = ndr(&message, &failed);
        state.mail.reports += 1;
        state.mail.pending.push(PendingReport {
            due_at: message.received_at + delay,
            tenant: message.tenant_id,
            mailbox: message.mailbox.clone(),
            message: report,
        });
    }
    state.delivered.push(message);
}

/// Schedules the report of a message Exchange accepted and then refused as a whole
/// (over a recipient limit, see `exchange_limits`): every recipient failed, nothing
/// delivered.
pub(crate) fn refuse_all(
    state: &mut State,
    message: DeliveredMessage,
    refusal: crate::exchange_limits::Refusal,
) {
    use crate::exchange_limits::Refusal;
    let failure = match refusal {
        Refusal::TooManyRecipients => Failure {
            status: "5.5.3",
            diagnostic: "550 5.5.3 RESOLVER.ADR.RecipLim; too many recipients",
            human: "Your message wasn't delivered because it has too many recipients. Send it to fewer recipients (at most 500), or to a distribution group.",
        },
        Refusal::DailyRecipientLimit => Failure {
            status: "5.1.90",
            diagnostic: "550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients.",
            human: "Your message can't be sent because you've reached your daily limit for message recipients.",
        },
    };
    let failed: Vec<(String, Failure)> = message
        .recipients
        .iter()
        .map(|r| (r.clone(), failure))
        .collect();
    let delay = state.mail.delay.unwrap_or(chrono::Duration::milliseconds(
        DEFAULT_REPORT_DELAY_MS as i64,
    ));
    let report = ndr(&message, &failed);
    state.mail.reports += 1;
    state.mail.refused += 1;
    state.mail.pending.push(PendingReport {
        due_at: message.received_at + delay,
        tenant: message.tenant_id,
        mailbox: message.mailbox.clone(),
        message: report,
    });
}

/// Why a recipient bounces.
#[derive(Debug, Clone, Copy)]
struct Failure {
    status: &'static str,
    diagnostic: &'static str,
    human: &'static str,
}

fn failure(state: &State, recipient: &str) -> Option<Failure> {
    let recipient = recipient.to_ascii_lowercase();
    match state.mail.outcomes.get(&recipient) {
        Some(RecipientOutcome::MailboxFull) => {
            return Some(Failure {
                status: "5.2.2",
                diagnostic: "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded",
                human: "The recipient's mailbox is full and can't accept messages now.",
            });
        }
        Some(RecipientOutcome::Refused) => {
            return Some(Failure {
                status: "5.7.1",
                diagnostic: "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized",
                human: "Your message wasn't delivered because the recipient's email provider rejected it.",
            });
        }
        Some(RecipientOutcome::Deliver) => return None,
        None => {}
    }
    let domain = recipient.rsplit_once('@')?.1;
    let mut own_domain = false;
    for tenant in state.tenants.values() {
        for mailbox in tenant.mailboxes.keys() {
            if *mailbox == recipient {
                return None;
            }
            own_domain |= mailbox.rsplit_once('@').is_some_and(|(_, d)| d == domain);
        }
    }
    own_domain.then_some(Failure {
        status: "5.1.10",
        diagnostic: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        human: "The email address you entered couldn't be found. Please check the recipient's email address and try to resend the message.",
    })
}

/// The original message's header section (up to the blank line), CRLF-terminated.
fn header_section(mime: &str) -> &str {
    mime.find("\r\n\r\n")
        .map(|p| &mime[..p + 2])
        .unwrap_or(mime)
}

/// An Exchange Online NDR for `message` about `failed` recipients.
fn ndr(message: &DeliveredMessage, failed: &[(String, Failure)]) -> StoredMessage {
    let domain = message
        .mailbox
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    let postmaster = format!("MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@{domain}");
    let subject = format!(
        "Undeliverable: {}",
        message.subject.as_deref().unwrap_or_default()
    );
    let original_id = crate::mailbox_store::original_message_id(&message.mime);
    let boundary = format!("_000_{}_", Uuid::new_v4().simple());
    let alternative = format!("_001_{}_", Uuid::new_v4().simple());
    let now = Utc::now();
    let date = now.to_rfc2822();
    let mut human = String::from("Delivery has failed to these recipients or groups:\r\n\r\n");
    let mut html =
        String::from("<html><body><p>Delivery has failed to these recipients or groups:</p>");
    for (r, f) in failed {
        human.push_str(&format!("{r}\r\n{}\r\n\r\n", f.human));
        html.push_str(&format!("<p><b>{r}</b><br>{}</p>", f.human));
    }
    human.push_str(&format!(
        "Diagnostic information for administrators:\r\n\r\nGenerating server: {REPORTING_MTA}\r\n\r\n"
    ));
    for (r, f) in failed {
        human.push_str(&format!(
            "{r}\r\nRemote Server returned '{}'\r\n\r\n",
            f.diagnostic
        ));
    }
    html.push_str("</body></html>");
    let mut status = format!(
        "Reporting-MTA: dns;{REPORTING_MTA}\r\nReceived-From-MTA: dns;{REPORTING_MTA}\r\nArrival-Date: {}\r\n",
        message.received_at.to_rfc2822()
    );
    for (r, f) in failed {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822;{r}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp;{}\r\n",
            f.status, f.diagnostic
        ));
    }
    let references = original_id
        .as_deref()
        .map(|id| format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"))
        .unwrap_or_default();
    let mime = format!(
        "From: Microsoft Outlook <{postmaster}>\r\n\
         To: <{to}>\r\n\
         Date: {date}\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{id}@{REPORTING_MTA}>\r\n\
         {references}\
         Content-Language: en-US\r\n\
         X-MS-Exchange-Message-Is-Ndr:\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: multipart/alternative; differences=Content-Type;\r\n\tboundary=\"{alternative}\"\r\n\
         \r\n\
         --{alternative}\r\n\
         Content-Type: text/plain; charset=\"us-ascii\"\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         {human}\r\n\
         --{alternative}\r\n\
         Content-Type: text/html; charset=\"us-ascii\"\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         {html}\r\n\
         --{alternative}--\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         {status}\r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {headers}\r\n\
         --{boundary}--\r\n",
        to = message.mailbox,
        id = Uuid::new_v4().simple(),
        headers = header_section(&message.mime),
    );
    StoredMessage {
        id: graph_id(),
        folder_id: String::new(),
        received_at: now,
        subject,
        from: postmaster,
        mime,
    }
}

/// The Message-ID of a stored message, without angle brackets.
pub(crate) fn original_message_id(mime: &str) -> Option<String> {
    mail_parser::MessageParser::default()
        .parse_headers(mime.as_bytes())
        .and_then(|m| m.message_id().map(str::to_owned))
}

impl Store {
    /// Puts the reports that are due into their mailboxes.
    fn deliver_due(&mut self) {
        let now = Utc::now();
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|p| p.due_at <= now);
        self.pending = waiting;
        for report in due {
            let mailbox = self
                .mailboxes
                .entry((report.tenant, report.mailbox))
                .or_default();
            let mut message = report.message;
            message.folder_id = mailbox.folders[0].id.clone();
            message.received_at = now;
            mailbox.messages.push(message);
        }
    }

    /// `mailbox` of `tenant`, with its due reports delivered.
    pub(crate) fn mailbox(&mut self, tenant: Uuid, mailbox: &str) -> &mut Mailbox {
        self.deliver_due();
        self.mailboxes
            .entry((tenant, mailbox.to_ascii_lowercase()))
            .or_default()
    }
}

impl Directory {
    /// What Exchange does with mail for `recipient` from now on.
    pub fn set_recipient_outcome(&self, recipient: &str, outcome: RecipientOutcome) {
        self.lock()
            .mail
            .outcomes
            .insert(recipient.to_ascii_lowercase(), outcome);
    }

    /// How long a non-delivery report takes to reach the sender mailbox.
    pub fn set_report_delay(&self, delay: std::time::Duration) {
        self.lock().mail.delay = chrono::Duration::from_std(delay).ok();
    }

    /// The folders of `mailbox` (in whichever tenant holds it) with their messages.
    pub fn mail_folders(&self, mailbox: &str) -> Vec<FolderContents> {
        let mailbox = mailbox.to_ascii_lowercase();
        let mut state = self.lock();
        let tenant = state
            .tenants
            .iter()
            .find(|(_, t)| t.mailboxes.contains_key(&mailbox))
            .map(|(id, _)| *id);
        let Some(tenant) = tenant else {
            return Vec::new();
        };
        let store = state.mail.mailbox(tenant, &mailbox);
        store
            .folders
            .iter()
            .map(|f| FolderContents {
                id: f.id.clone(),
                display_name: f.display_name.clone(),
                messages: store
                    .messages
                    .iter()
                    .filter(|m| m.folder_id == f.id)
                    .cloned()
                    .collect(),
            })
            .collect()
    }

    /// Non-delivery reports generated so far (delivered or on their way).
    pub fn reports_generated(&self) -> usize {
        self.lock().mail.reports
    }

    /// Messages Graph accepted that Exchange then refused as a whole, over the
    /// recipients per message or per day.
    pub fn refused_after_acceptance(&self) -> usize {
        self.lock().mail.refused
    }
}

/// A folder and what is in it (the control API's view).
#[derive(Debug, Clone, Serialize)]
pub struct FolderContents {
    pub id: String,
    pub display_name: String,
    pub messages: Vec<StoredMessage>,
}

/// The control API for bounces: recipients' outcomes, the report delay, folders.
pub fn control_router() -> Router<Arc<Directory>> {
    Router::new()
        .route(
            "/_sim/recipients/{address}/outcome",
            put(set_recipient_outcome),
        )
        .route("/_sim/report-delay", put(set_report_delay))
        .route("/_sim/mailboxes/{address}/folders", get(folders))
}

#[derive(Debug, Deserialize)]
struct OutcomeBody {
    outcome: RecipientOutcome,
}

async fn set_recipient_outcome(
    AxumState(directory): AxumState<Arc<Directory>>,
    Path(address): Path<String>,
    Json(body): Json<OutcomeBody>,
) -> Response {
    directory.set_recipient_outcome(&address, body.outcome);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
struct DelayBody {
    milliseconds: u64,
}

async fn set_report_delay(
    AxumState(directory): AxumState<Arc<Directory>>,
    Json(body): Json<DelayBody>,
) -> Response {
    directory.set_report_delay(std::time::Duration::from_millis(body.milliseconds));
    StatusCode::NO_CONTENT.into_response()
}

async fn folders(
    AxumState(directory): AxumState<Arc<Directory>>,
    Path(address): Path<String>,
) -> Response {
    Json(directory.mail_folders(&address)).into_response()
}
