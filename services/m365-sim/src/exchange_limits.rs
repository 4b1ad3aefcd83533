//! Exchange Online's sending limits that apply to a message, whichever way it is
//! submitted (Learn: *Exchange Online limits*, "Sending limits" and "Message
//! limits"):
//!
//! - the **maximum send size** of the sender mailbox: 35 MB unless an admin raised
//!   it (`Set-Mailbox -MaxSendSize`, up to 150 MB). Graph answers
//!   `400 ErrorMessageSizeExceeded` ("The message exceeds the maximum supported
//!   size."), SMTP `552 5.3.4 Message size exceeds fixed maximum message size`;
//! - **500 recipients per message** (To, Cc and Bcc together);
//! - **10 000 recipients a day** per mailbox.
//!
//! Graph accepts a message over one of the two recipient limits with `202` and
//! Exchange then refuses it: every recipient comes back in a non-delivery report
//! (`5.5.3 … too many recipients`, `5.1.90 … daily limit for message recipients`),
//! and nothing is delivered. SMTP refuses at submission instead.

use axum::{Json, Router, extract::Path, extract::State, http::StatusCode, routing::put};
use chrono::Utc;
use serde::Deserialize;
use std::sync::Arc;

use crate::{DeliveredMessage, Directory, directory::State as SimState};

/// Exchange Online's default maximum send size per mailbox.
pub const DEFAULT_MAX_SEND_SIZE: usize = 35 * 1024 * 1024;
/// The most an admin can raise a mailbox's maximum send size to.
pub const LARGEST_MAX_SEND_SIZE: usize = 150 * 1024 * 1024;
/// Recipients per message (To, Cc and Bcc together).
pub const RECIPIENTS_PER_MESSAGE: usize = 500;
/// Recipients per mailbox and day.
pub const RECIPIENTS_PER_DAY: usize = 10_000;

/// Graph's answer to a message over the mailbox's maximum send size.
pub(crate) fn message_too_large() -> axum::response::Response {
    crate::graph::graph_error(
        StatusCode::BAD_REQUEST,
        "ErrorMessageSizeExceeded",
        "The message exceeds the maximum supported size.",
    )
}

/// SMTP's answer to a message over the mailbox's maximum send size (RFC 1870, RFC
/// 3463).
pub(crate) const SMTP_TOO_LARGE: &str = "552 5.3.4 Message size exceeds fixed maximum message size";

/// Why Exchange does not send a message it accepted through Graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooManyRecipients,
    DailyRecipientLimit,
}

/// Counts a message Graph accepted against the mailbox's day and delivers it, or,
/// over a recipient limit, delivers nothing and reports every recipient as failed.
pub(crate) fn submit(state: &mut SimState, message: DeliveredMessage) {
    let key = (message.mailbox.clone(), Utc::now().date_naive());
    let today = state.recipients_sent.get(&key).copied().unwrap_or(0);
    let refusal = if message.recipients.len() > RECIPIENTS_PER_MESSAGE {
        Some(Refusal::TooManyRecipients)
    } else if today + message.recipients.len() > RECIPIENTS_PER_DAY {
        Some(Refusal::DailyRecipientLimit)
    } else {
        None
    };
    match refusal {
        Some(refusal) => crate::mailbox_store::refuse_all(state, message, refusal),
        None => {
            *state.recipients_sent.entry(key).or_default() += message.recipients.len();
            crate::mailbox_store::accept(state, message);
        }
    }
}

#[derive(Debug, Deserialize)]
struct SendSize {
    bytes: usize,
}

/// `PUT /_sim/mailboxes/{address}/max-send-size {"bytes": N}`: what
/// `Set-Mailbox -MaxSendSize` does.
pub fn control_router() -> Router<Arc<Directory>> {
    Router::new().route(
        "/_sim/mailboxes/{address}/max-send-size",
        put(
            |State(directory): State<Arc<Directory>>,
             Path(address): Path<String>,
             Json(size): Json<SendSize>| async move {
                match directory.set_max_send_size(&address, size.bytes) {
                    Ok(()) => StatusCode::NO_CONTENT,
                    Err(()) => StatusCode::BAD_REQUEST,
                }
            },
        ),
    )
}

impl Directory {
    /// Sets a mailbox's maximum send size (`Set-Mailbox -MaxSendSize`): 1 KB to 150
    /// MB, as Exchange Online allows.
    #[allow(clippy::result_unit_err)]
    pub fn set_max_send_size(&self, mailbox: &str, bytes: usize) -> Result<(), ()> {
        if !(1024..=LARGEST_MAX_SEND_SIZE).contains(&bytes) {
            return Err(());
        }
        self.lock()
            .max_send_size
            .insert(mailbox.to_ascii_lowercase(), bytes);
        Ok(())
    }

    /// Counts `recipients` more against `mailbox`'s day, as another client sending as
    /// the mailbox (Outlook, a second relay) would.
    pub fn add_recipients_sent(&self, mailbox: &str, recipients: usize) {
        *self
            .lock()
            .recipients_sent
            .entry((mailbox.to_ascii_lowercase(), Utc::now().date_naive()))
            .or_default() += recipients;
    }

    /// A mailbox's maximum send size (35 MB unless set).
    pub fn max_send_size(&self, mailbox: &str) -> usize {
        max_send_size(&self.lock(), mailbox)
    }
}

pub(crate) fn max_send_size(state: &SimState, mailbox: &str) -> usize {
    state
        .max_send_size
        .get(&mailbox.to_ascii_lowercase())
        .copied()
        .unwrap_or(DEFAULT_MAX_SEND_SIZE)
}
