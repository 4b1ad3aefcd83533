//! DATA: the message itself. End of data is `<CRLF>.<CRLF>` only (smtp-proto's
//! receiver; bare `<LF>.<LF>` and friends are message content, never the end), dots
//! are unstuffed, the size limit is enforced while reading, and the message is
//! committed to PostgreSQL before the `250` — or answered `451` and not kept at all.

use std::time::Duration;

use mailbridge_core::queue::{self, NewMessage};
use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use tokio::io::{AsyncRead, AsyncWrite};
use uuid::Uuid;

use crate::{
    reply,
    session::{Flow, Phase, Session},
};

/// How long a commit may take before the client is told to try again later.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A message being received.
pub(crate) struct DataTransfer {
    id: Uuid,
    receiver: DataReceiver,
    body: Vec<u8>,
    /// Length of our trace header at the start of `body`, not counted against SIZE.
    trace_len: usize,
    /// Set once the message is over the limit: the rest is read and thrown away.
    overflow: Option<DummyDataReceiver>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) fn handle_data(&mut self) {
        let Some(envelope) = &self.envelope else {
            return self.reply(reply::NEED_MAIL);
        };
        if envelope.rcpt_to.is_empty() {
            return self.reply(reply::NEED_RCPT);
        }
        let id = Uuid::now_v7();
        let mut body = Vec::with_capacity(16 * 1024);
        body.extend_from_slice(self.received_header(id).as_bytes());
        let trace_len = body.len();
        self.phase = Phase::Data(Box::new(DataTransfer {
            id,
            receiver: DataReceiver::new(),
            body,
            trace_len,
            overflow: None,
        }));
        self.reply(reply::START_DATA);
    }

    /// The RFC 5321 §4.4 trace field, with the RFC 3848 protocol name.
    fn received_header(&self, id: Uuid) -> String {
        let protocol = match (self.tls.is_some(), self.device.is_some()) {
            (true, true) => "ESMTPSA",
            (true, false) => "ESMTPS",
            (false, true) => "ESMTPA",
            (false, false) => "ESMTP",
        };
        let tls = self
            .tls
            .as_ref()
            .map(|t| format!("\r\n\t(using {} with cipher {})", t.protocol, t.cipher))
            .unwrap_or_default();
        format!(
            "Received: from {} ([{}])\r\n\tby {} (mailbridge) with {protocol} id {}{tls};\r\n\t{}\r\n",
            self.helo.as_deref().unwrap_or("unknown"),
            self.peer.ip(),
            self.context.hostname,
            id.simple(),
            chrono::Utc::now().to_rfc2822(),
        )
    }

    pub(crate) async fn continue_data(
        &mut self,
        mut transfer: Box<DataTransfer>,
        bytes: &mut std::slice::Iter<'_, u8>,
    ) -> Flow {
        if let Some(discard) = transfer.overflow.as_mut() {
            if discard.ingest(bytes) {
                self.envelope = None;
                self.reply(reply::TOO_BIG);
            } else {
                self.phase = Phase::Data(transfer);
            }
            return Flow::Continue;
        }
        let complete = transfer.receiver.ingest(bytes, &mut transfer.body);
        if transfer.body.len() - transfer.trace_len > self.context.max_message_size {
            if complete {
                self.envelope = None;
                self.reply(reply::TOO_BIG);
            } else {
                transfer.overflow = Some(DummyDataReceiver::new_data(&transfer.receiver));
                transfer.body = Vec::new();
                self.phase = Phase::Data(transfer);
            }
            return Flow::Continue;
        }
        if !complete {
            self.phase = Phase::Data(transfer);
            return Flow::Continue;
        }
        self.commit(*transfer).await;
        Flow::Continue
    }

    async fn commit(&mut self, transfer: DataTransfer) {
        let (Some(envelope), Some(device)) = (self.envelope.take(), self.device.as_ref()) else {
            return self.reply(reply::NEED_MAIL);
        };
        let message = NewMessage {
            id: transfer.id,
            tenant_id: device.tenant_id,
            device_id: Some(device.device_id),
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt_to,
            client_addr: self.peer.ip(),
            tls_protocol: self.tls.as_ref().map(|t| t.protocol.clone()),
            tls_cipher: self.tls.as_ref().map(|t| t.cipher.clone()),
            body: transfer.body,
        };
        match tokio::time::timeout(COMMIT_TIMEOUT, queue::enqueue(&self.context.pool, &message))
            .await
        {
            Ok(Ok(id)) => {
                tracing::info!(queue_id = %id, size = message.body.len(), recipients = message.rcpt_to.len(), "message queued");
                reply::write(
                    &mut self.out,
                    reply::OK,
                    Some(&format!("queued as {}", id.simple())),
                );
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "message not queued: database error");
                self.reply(reply::NOT_QUEUED);
            }
            Err(_) => {
                tracing::error!("message not queued: database did not answer in time");
                self.reply(reply::NOT_QUEUED);
            }
        }
    }
}
