//! MAIL FROM and RCPT TO: the envelope of one transaction. Only an identified device
//! (by password, or by address on the relay listener) may start one; its size limit,
//! sender policy and rate limits are checked here, before any data is sent.
//!
//! Paths without angle brackets (`MAIL FROM:scanner@praxis.example`, which many
//! embedded clients and old scripts send, and which Postfix accepts by default) are
//! bracketed before parsing: [`bracketed_path`].

use mailbridge_core::devices::{self, SenderPolicy};
use smtp_proto::{MailFrom, RcptTo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    ListenerKind, reply,
    session::{Flow, Identification, Session},
};

/// The envelope of the transaction in progress.
pub(crate) struct Envelope {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// An unidentified client on the relay listener: every recipient is refused.
    pub relay_denied: bool,
    /// A message arriving in BDAT chunks, between chunks.
    pub chunks: Option<Box<crate::data::DataTransfer>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The largest message this session may send: its customer's limit (the sender
    /// mailbox's maximum send size, lowered by the device's own), within the edge's
    /// ceiling; the ceiling alone while the device is unknown.
    pub(crate) fn size_limit(&self) -> usize {
        let ceiling = self.context.settings.limits.max_message_size;
        self.device
            .as_ref()
            .map_or(ceiling, |(d, _)| limit_within(&d.policy, ceiling))
    }

    pub(crate) async fn handle_mail(&mut self, from: MailFrom<String>) -> Flow {
        if self.helo.is_none() {
            self.reply(reply::HELO_FIRST);
            return Flow::Continue;
        }
        if self.envelope.is_some() {
            self.reply(reply::NESTED_MAIL);
            return Flow::Continue;
        }
        if self.messages >= self.context.settings.limits.max_messages {
            self.reply(reply::TOO_MANY_MESSAGES);
            return Flow::Quit;
        }
        if self.device.is_none() {
            if self.kind != ListenerKind::Relay {
                self.refuse_message(reply::AUTH_REQUIRED);
                return Flow::Continue;
            }
            let context = &self.context;
            match context
                .directory
                .by_address(&context.pool, self.peer.ip())
                .await
            {
                Ok(Some(device)) => {
                    tracing::info!(device = %device.device_id, tenant = %device.tenant_id, "device identified by its address");
                    self.record_seen(device.device_id);
                    self.transcript.device_id = Some(device.device_id);
                    self.device = Some((device, Identification::Address));
                }
                Ok(None) => {
                    // Answered at RCPT, where relay refusals are expected.
                    self.envelope = Some(Envelope {
                        mail_from: from.address,
                        rcpt_to: Vec::new(),
                        relay_denied: true,
                        chunks: None,
                    });
                    self.reply(reply::SENDER_OK);
                    return Flow::Continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "device lookup failed: database unavailable");
                    self.refuse_message(reply::NOT_QUEUED);
                    return Flow::Continue;
                }
            }
        }
        if from.size > self.size_limit() {
            self.refuse_message(reply::TOO_BIG);
            return Flow::Continue;
        }
        let Some((device, _)) = &self.device else {
            return Flow::Continue;
        };
        let policy = &device.policy;
        if policy.sender_policy == SenderPolicy::Enforce
            && !from.address.is_empty()
            && !policy.allows_sender(&from.address)
        {
            self.refuse_message(reply::SENDER_NOT_ALLOWED);
            return Flow::Continue;
        }
        if policy.device_rate_limit.is_some() || policy.tenant_rate_limit.is_some() {
            match devices::recent_message_counts(
                &self.context.pool,
                device.tenant_id,
                device.device_id,
            )
            .await
            {
                Ok((by_device, _))
                    if policy
                        .device_rate_limit
                        .is_some_and(|limit| by_device >= i64::from(limit)) =>
                {
                    self.refuse_message(reply::DEVICE_RATE_LIMITED);
                    return Flow::Continue;
                }
                Ok((_, by_tenant))
                    if policy
                        .tenant_rate_limit
                        .is_some_and(|limit| by_tenant >= i64::from(limit)) =>
                {
                    self.refuse_message(reply::TENANT_RATE_LIMITED);
                    return Flow::Continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit check failed: database unavailable");
                    self.refuse_message(reply::NOT_QUEUED);
                    return Flow::Continue;
                }
            }
        }
        self.envelope = Some(Envelope {
            mail_from: from.address,
            rcpt_to: Vec::new(),
            relay_denied: false,
            chunks: None,
        });
        self.reply(reply::SENDER_OK);
        Flow::Continue
    }

    pub(crate) fn handle_rcpt(&mut self, to: RcptTo<String>) {
        let max_recipients = self.context.settings.limits.max_recipients;
        let Some(envelope) = self.envelope.as_mut() else {
            return self.reply(reply::NEED_MAIL);
        };
        if envelope.relay_denied {
            return self.refuse_message(reply::RELAY_DENIED);
        }
        if to.address.is_empty() {
            return self.refuse(501, "5.1.3", "Bad recipient address syntax");
        }
        if envelope.rcpt_to.len() >= max_recipients {
            return self.refuse_message(reply::TOO_MANY_RECIPIENTS);
        }
        envelope.rcpt_to.push(to.address);
        self.reply(reply::RECIPIENT_OK);
    }
}

/// A device's largest message within the edge's `ceiling`.
pub(crate) fn limit_within(policy: &devices::DevicePolicy, ceiling: usize) -> usize {
    usize::try_from(policy.max_message_bytes())
        .unwrap_or(usize::MAX)
        .min(ceiling)
}

/// `MAIL FROM:` or `RCPT TO:` with a path that lacks its angle brackets, rewritten with
/// them (`MAIL FROM:a@b SIZE=10` → `MAIL FROM:<a@b> SIZE=10`); `None` for any other
/// line. Only a plain address is bracketed: no brackets, quotes, control characters
/// or anything that is not printable ASCII, so nothing else can be smuggled in.
pub fn bracketed_path(line: &[u8]) -> Option<Vec<u8>> {
    let prefix = [&b"MAIL FROM:"[..], b"RCPT TO:"]
        .into_iter()
        .find(|p| line.len() > p.len() && line[..p.len()].eq_ignore_ascii_case(p))?;
    let rest = &line[prefix.len()..];
    let start = rest.iter().position(|b| *b != b' ')?;
    let rest = &rest[start..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    let path = &rest[..end];
    let plain = !path.is_empty()
        && path.contains(&b'@')
        && path.iter().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\' | b'(' | b')' | b',')
        });
    if !plain {
        return None;
    }
    let mut out = Vec::with_capacity(line.len() + 2);
    out.extend_from_slice(prefix);
    out.push(b'<');
    out.extend_from_slice(path);
    out.push(b'>');
    out.extend_from_slice(&rest[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::bracketed_path;

    fn bracket(line: &str) -> Option<String> {
        bracketed_path(line.as_bytes()).map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn bare_paths_are_bracketed_and_nothing_else_is_touched() {
        assert_eq!(
            bracket("MAIL FROM:scanner@praxis.example\r\n").as_deref(),
            Some("MAIL FROM:<scanner@praxis.example>\r\n")
        );
        assert_eq!(
            bracket("rcpt to: lab@klinik.example\r\n").as_deref(),
            Some("RCPT TO:<lab@klinik.example>\r\n")
        );
        assert_eq!(
            bracket("MAIL FROM:a@b.example SIZE=100\r\n").as_deref(),
            Some("MAIL FROM:<a@b.example> SIZE=100\r\n")
        );
        for untouched in [
            "MAIL FROM:<a@b.example>\r\n",
            "MAIL FROM: <a@b.example>\r\n",
            "MAIL FROM:<>\r\n",
            "MAIL FROM:\r\n",
            "MAIL FROM:postmaster\r\n",
            "RCPT TO:\"a b\"@c.example\r\n",
            "RCPT TO:a@b.example>\r\n",
            "DATA\r\n",
        ] {
            assert_eq!(bracket(untouched), None, "{untouched:?}");
        }
    }
}
