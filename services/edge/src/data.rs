//! DATA and BDAT: the message itself.
//!
//! End of DATA is `<CRLF>.<CRLF>` only (`<LF>.<LF>`, `<CR>.<CR>`, `<LF>.<CRLF>`,
//! `<CRLF>.<CR><CRLF>` and the like are content, never the end), the CRLF that ended
//! the DATA command counting as the first; dots are unstuffed; the size limit is
//! enforced while reading, and the rest of an oversized message is read and dropped.
//! A complete message then passes the header-size check, the bare-newline policy and
//! the device's sender policy, and is committed to PostgreSQL before the `250` — or
//! answered `451` and not kept at all.
//!
//! Over 500 lines: 64 of them are the unit tests of the DATA reader; the rest is the
//! one data phase of the session — the DATA and BDAT readers and the `Session` methods
//! that check and commit the message, which work on the session's private state.

use mailbridge_core::ids::MessageId;
use std::time::Duration;

use mailbridge_core::{
    config::BareNewlinePolicy,
    devices::SenderPolicy,
    queue::{MessageKind, NewMessage},
};
use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    message, reply,
    reply::Reply,
    session::{Flow, Phase, Session},
};

/// How long a commit may take before the client is told to try again later.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

enum Reader {
    Data(DotReader),
    Bdat {
        receiver: BdatReceiver,
        chunk_size: usize,
    },
    /// Reading the rest of a BDAT chunk that will be refused with `refusal`.
    Discard {
        receiver: DummyDataReceiver,
        refusal: Reply,
    },
    /// Reading the rest of DATA that will be refused with `refusal`.
    DiscardData {
        receiver: DotReader,
        refusal: Reply,
    },
}

/// Where the DATA reader stands in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line: after a CRLF, or right after the DATA command.
    Start,
    /// After a dot at the start of a line.
    Dot,
    /// After `<CRLF>.<CR>`.
    DotCr,
    /// Inside a line; `cr` is whether the last byte was a CR.
    Inside { cr: bool },
}

/// Reads DATA up to its end, `<CRLF>.<CRLF>` and nothing else (RFC 5321 §4.1.1.4),
/// removing the dot that starts a stuffed line (§4.5.2). The CRLF of the DATA command
/// is the first CRLF, so `.<CRLF>` at once is an empty message and a dot at the very
/// start is stuffing. A line a bare LF starts is not a line start, and a dot line that
/// ends other than in CRLF (`.<LF>`, `.<CR><CR><LF>`) does not end the data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DotReader {
    line: Line,
}

impl DotReader {
    pub(crate) fn new() -> Self {
        Self { line: Line::Start }
    }

    /// Consumes data from `bytes` into `body` (or nowhere, when discarding); returns
    /// whether the end of the data was reached, leaving what follows it in `bytes`.
    pub(crate) fn ingest(
        &mut self,
        bytes: &mut std::slice::Iter<'_, u8>,
        mut body: Option<&mut Vec<u8>>,
    ) -> bool {
        let mut push = |part: &[u8]| {
            if let Some(body) = body.as_deref_mut() {
                body.extend_from_slice(part);
            }
        };
        let mut rest = bytes.as_slice();
        let complete = loop {
            let Some(&first) = rest.first() else {
                break false;
            };
            match self.line {
                Line::Start if first == b'.' => {
                    rest = &rest[1..];
                    self.line = Line::Dot;
                }
                Line::Dot if first == b'\r' => {
                    rest = &rest[1..];
                    self.line = Line::DotCr;
                }
                Line::DotCr if first == b'\n' => {
                    rest = &rest[1..];
                    break true;
                }
                // `.<CR>` and more: a stuffed line whose content starts with the CR.
                Line::DotCr => {
                    push(b"\r");
                    self.line = Line::Inside { cr: true };
                }
                Line::Start | Line::Dot => self.line = Line::Inside { cr: false },
                Line::Inside { cr } => match memchr::memchr(b'\n', rest) {
                    Some(pos) => {
                        let after_cr = if pos == 0 { cr } else { rest[pos - 1] == b'\r' };
                        push(&rest[..=pos]);
                        rest = &rest[pos + 1..];
                        self.line = if after_cr {
                            Line::Start
                        } else {
                            Line::Inside { cr: false }
                        };
                    }
                    None => {
                        push(rest);
                        self.line = Line::Inside {
                            cr: rest.last() == Some(&b'\r'),
                        };
                        rest = &[];
                    }
                },
            }
        };
        *bytes = rest.iter();
        complete
    }
}

/// A message being received.
pub(crate) struct DataTransfer {
    id: MessageId,
    reader: Reader,
    body: Vec<u8>,
    /// Length of our trace header at the start of `body`, not counted against SIZE.
    trace_len: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new_transfer(&self, reader: Reader) -> Box<DataTransfer> {
        let id = MessageId::now();
        let mut body = Vec::with_capacity(16 * 1024);
        body.extend_from_slice(self.received_header(id).as_bytes());
        let trace_len = body.len();
        Box::new(DataTransfer {
            id,
            reader,
            body,
            trace_len,
        })
    }

    /// Why a transaction cannot take message data now, if it cannot.
    fn data_refusal(&self) -> Option<Reply> {
        match &self.envelope {
            None => Some(reply::NEED_MAIL),
            Some(e) if e.rcpt_to.is_empty() => Some(reply::NEED_RCPT),
            Some(_) => None,
        }
    }

    pub(crate) fn handle_data(&mut self) {
        if let Some(refusal) = self.data_refusal() {
            return self.reply(refusal);
        }
        if self.envelope.as_ref().is_some_and(|e| e.chunks.is_some()) {
            return self.reply(reply::BDAT_AFTER_DATA);
        }
        self.phase = Phase::Data(self.new_transfer(Reader::Data(DotReader::new())));
        self.reply(reply::START_DATA);
    }

    /// BDAT (RFC 3030): the chunk is always read, even when it will be refused.
    pub(crate) async fn handle_bdat(&mut self, chunk_size: usize, is_last: bool) -> Flow {
        let refusal = self.data_refusal();
        let pending = self.envelope.as_mut().and_then(|e| e.chunks.take());
        let mut transfer = match (refusal, pending) {
            (Some(refusal), _) => {
                let discard = Reader::Discard {
                    receiver: DummyDataReceiver::new_bdat(chunk_size),
                    refusal,
                };
                self.new_transfer(discard)
            }
            (None, Some(transfer)) => transfer,
            (None, None) => self.new_transfer(Reader::Data(DotReader::new())),
        };
        let received = transfer.body.len() - transfer.trace_len;
        if !matches!(
            transfer.reader,
            Reader::Discard { .. } | Reader::DiscardData { .. }
        ) {
            transfer.reader = if received.saturating_add(chunk_size) > self.size_limit() {
                Reader::Discard {
                    receiver: DummyDataReceiver::new_bdat(chunk_size),
                    refusal: reply::TOO_BIG,
                }
            } else {
                Reader::Bdat {
                    receiver: BdatReceiver::new(chunk_size, is_last),
                    chunk_size,
                }
            };
        }
        if chunk_size == 0 {
            // Nothing to read: a zero-length (last) chunk completes at once.
            return self.continue_data(transfer, &mut [].iter()).await;
        }
        self.phase = Phase::Data(transfer);
        Flow::Continue
    }

    /// The RFC 5321 §4.4 trace field, with the RFC 3848 protocol name.
    fn received_header(&self, id: MessageId) -> String {
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
            self.context.settings.hostname,
            id.simple(),
            chrono::Utc::now().to_rfc2822(),
        )
    }

    pub(crate) async fn continue_data(
        &mut self,
        mut transfer: Box<DataTransfer>,
        bytes: &mut std::slice::Iter<'_, u8>,
    ) -> Flow {
        let limit = self.size_limit();
        match &mut transfer.reader {
            Reader::Discard { receiver, refusal } => {
                if receiver.ingest(bytes) {
                    let refusal = *refusal;
                    self.envelope = None;
                    self.refuse_message(refusal);
                } else {
                    self.phase = Phase::Data(transfer);
                }
            }
            Reader::DiscardData { receiver, refusal } => {
                if receiver.ingest(bytes, None) {
                    let refusal = *refusal;
                    self.envelope = None;
                    self.refuse_message(refusal);
                } else {
                    self.phase = Phase::Data(transfer);
                }
            }
            Reader::Data(receiver) => {
                let complete = receiver.ingest(bytes, Some(&mut transfer.body));
                if transfer.body.len() - transfer.trace_len > limit {
                    if complete {
                        self.envelope = None;
                        self.refuse_message(reply::TOO_BIG);
                    } else {
                        let receiver = *receiver;
                        transfer.body = Vec::new();
                        transfer.reader = Reader::DiscardData {
                            receiver,
                            refusal: reply::TOO_BIG,
                        };
                        self.phase = Phase::Data(transfer);
                    }
                } else if complete {
                    self.finish(*transfer).await;
                } else {
                    self.phase = Phase::Data(transfer);
                }
            }
            Reader::Bdat {
                receiver,
                chunk_size,
            } => {
                let chunk_size = *chunk_size;
                let is_last = receiver.is_last;
                if !(chunk_size == 0 || receiver.ingest(bytes, &mut transfer.body)) {
                    self.phase = Phase::Data(transfer);
                } else if is_last {
                    self.finish(*transfer).await;
                } else {
                    self.refuse(250, "2.0.0", &format!("{chunk_size} octets received"));
                    if let Some(envelope) = self.envelope.as_mut() {
                        envelope.chunks = Some(transfer);
                    }
                }
            }
        }
        Flow::Continue
    }

    /// Checks a complete message, applies the policies, and commits it.
    async fn finish(&mut self, mut transfer: DataTransfer) {
        let settings = &self.context.settings;
        let start = transfer.trace_len;
        if message::header_section_len(&transfer.body[start..]) > settings.limits.max_header_size {
            self.envelope = None;
            return self.refuse_message(reply::HEADER_TOO_BIG);
        }
        if message::has_bare_newline(&transfer.body[start..]) {
            match settings.bare_newlines {
                BareNewlinePolicy::Reject => {
                    self.envelope = None;
                    return self.refuse_message(reply::BARE_NEWLINE);
                }
                BareNewlinePolicy::Normalize => {
                    let normalized = message::normalize_newlines(&transfer.body[start..]);
                    transfer.body.truncate(start);
                    transfer.body.extend_from_slice(&normalized);
                }
            }
        }
        let Some((device, _)) = &self.device else {
            self.envelope = None;
            return self.reply(reply::NEED_MAIL);
        };
        let policy = &device.policy;
        let content = &transfer.body[start..];
        let from_fields = message::field_count(content, "from");
        // Exactly one From (RFC 5322 3.6): with two, one reading checks the first and
        // another sends as the second. None is tolerated only under `rewrite`.
        if from_fields > 1 || (from_fields == 0 && policy.sender_policy == SenderPolicy::Enforce) {
            self.envelope = None;
            return self.refuse_message(reply::FROM_NOT_ONE);
        }
        if message::field_count(content, "sender") > 1 {
            self.envelope = None;
            return self.refuse_message(reply::SENDER_NOT_ONE);
        }
        // Microsoft Graph delivers to To and Cc as well as the envelope: one list for
        // the limits, the log and both delivery paths.
        if let Some(envelope) = self.envelope.as_mut() {
            let extra: Vec<String> = message::header_recipients(content)
                .into_iter()
                .filter(|a| !envelope.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(a)))
                .collect();
            if envelope.rcpt_to.len() + extra.len() > settings.limits.max_recipients {
                self.envelope = None;
                return self.refuse_message(reply::TOO_MANY_HEADER_RECIPIENTS);
            }
            envelope.rcpt_to.extend(extra);
        }
        // A From the parser cannot read is treated as one the device may not use; a
        // message without From goes as it is under `rewrite` (Microsoft sends it as
        // the mailbox).
        let from = message::from_addresses(content);
        if (from_fields > 0 && from.is_empty())
            || from.iter().any(|address| !policy.allows_sender(address))
        {
            match policy.sender_policy {
                SenderPolicy::Enforce => {
                    self.envelope = None;
                    return self.refuse_message(reply::SENDER_NOT_ALLOWED);
                }
                SenderPolicy::Rewrite => {
                    transfer.body =
                        message::rewrite_from(&transfer.body, start, &policy.tenant_sender_mailbox);
                    // However the header spelled its fields, what goes out has one
                    // From, or nothing goes out.
                    if message::field_count(&transfer.body[start..], "from") != 1 {
                        self.envelope = None;
                        return self.refuse_message(reply::FROM_NOT_ONE);
                    }
                }
            }
        }
        self.commit(transfer).await;
    }

    async fn commit(&mut self, transfer: DataTransfer) {
        let (Some(envelope), Some((device, _))) = (self.envelope.take(), self.device.as_ref())
        else {
            return self.reply(reply::NEED_MAIL);
        };
        let recipients = envelope.rcpt_to.len();
        let subject = message::subject(&transfer.body[transfer.trace_len..]);
        // Every message leaves with a Message-ID: Microsoft's bounce quotes it, and
        // the worker finds the message by it (see `mailbridge_core::message_id`).
        let (body, _) = mailbridge_core::message_id::ensure(
            transfer.body,
            transfer.trace_len,
            transfer.id,
            &self.context.settings.hostname,
        );
        let size = body.len();
        let message = NewMessage {
            id: transfer.id,
            tenant_id: device.tenant_id,
            device_id: Some(device.device_id),
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt_to,
            client_addr: self.peer.ip(),
            tls_protocol: self.tls.as_ref().map(|t| t.protocol.clone()),
            tls_cipher: self.tls.as_ref().map(|t| t.cipher.clone()),
            kind: MessageKind::Device,
            subject,
            body,
        };
        match tokio::time::timeout(COMMIT_TIMEOUT, self.context.queue.enqueue(message)).await {
            Ok(Ok(id)) => {
                self.messages += 1;
                crate::count_message(self.kind, "accepted", "2.0.0");
                mailbridge_core::metrics::metrics()
                    .edge
                    .message_size
                    .observe(size as f64);
                tracing::info!(queue_id = %id, size, recipients, "message queued");
                reply::write(
                    &mut self.out,
                    reply::OK,
                    Some(&format!("queued as {}", id.simple())),
                );
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "message not queued: database error");
                self.refuse_message(reply::NOT_QUEUED);
            }
            Err(_) => {
                tracing::error!("message not queued: database did not answer in time");
                self.refuse_message(reply::NOT_QUEUED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DotReader;

    /// Feeds `chunks` one after another; the data read, and what followed its end.
    fn read(chunks: &[&[u8]]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut reader = DotReader::new();
        let mut body = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut bytes = chunk.iter();
            if reader.ingest(&mut bytes, Some(&mut body)) {
                let mut rest = bytes.as_slice().to_vec();
                rest.extend(chunks[i + 1..].concat());
                return Some((body, rest));
            }
        }
        None
    }

    #[test]
    fn the_data_ends_at_crlf_dot_crlf_only() {
        let whole: &[u8] = b"Subject: x\r\n\r\nline\r\n.\r\nQUIT\r\n";
        let expected = (b"Subject: x\r\n\r\nline\r\n".to_vec(), b"QUIT\r\n".to_vec());
        assert_eq!(read(&[whole]), Some(expected.clone()));
        // However the input is split, the outcome is the same.
        for at in 1..whole.len() {
            let (a, b) = whole.split_at(at);
            assert_eq!(read(&[a, b]), Some(expected.clone()), "split at {at}");
        }
        for smuggled in [
            &b"a\n.\nMAIL"[..],
            b"a\n.\r\nMAIL",
            b"a\r.\r\nMAIL",
            b"a\r\n.\nMAIL",
            b"a\r\n.\r\r\nMAIL",
            b"a\r\n.\r\r\r\nMAIL",
            b"a\r\n.\rMAIL",
            b"a\r\n\0.\r\nMAIL",
        ] {
            assert_eq!(read(&[smuggled]), None, "{smuggled:?} ended the data");
            let (_, rest) = read(&[smuggled, b"\r\n.\r\n"]).expect("the real end");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn dots_are_unstuffed_from_the_first_line_on() {
        assert_eq!(read(&[b".\r\nQUIT"]), Some((Vec::new(), b"QUIT".to_vec())));
        assert_eq!(
            read(&[b"..first\r\nx\r\n..\r\n.a\r\n.\r\n"]),
            Some((b".first\r\nx\r\n.\r\na\r\n".to_vec(), Vec::new()))
        );
        // A dot after a bare LF is not at a line start: it stays.
        assert_eq!(
            read(&[b"a\n..b\r\n.\r\n"]),
            Some((b"a\n..b\r\n".to_vec(), Vec::new()))
        );
        // `.<CR><CR><LF>` is a stuffed line holding a bare CR.
        assert_eq!(
            read(&[b"a\r\n.\r\r\n.\r\n"]),
            Some((b"a\r\n\r\r\n".to_vec(), Vec::new()))
        );
    }
}
