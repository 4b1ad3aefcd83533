//! MAIL FROM and RCPT TO: the envelope of one transaction. Only an authenticated
//! device may start one; SIZE is checked up front.

use smtp_proto::{MailFrom, RcptTo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{reply, session::Session};

/// The envelope of the transaction in progress.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) fn handle_mail(&mut self, from: MailFrom<String>) {
        if self.helo.is_none() {
            return self.reply(reply::HELO_FIRST);
        }
        if self.device.is_none() {
            return self.reply(reply::AUTH_REQUIRED);
        }
        if self.envelope.is_some() {
            return self.reply(reply::NESTED_MAIL);
        }
        if from.size > self.context.max_message_size {
            return self.reply(reply::TOO_BIG);
        }
        self.envelope = Some(Envelope {
            mail_from: from.address,
            rcpt_to: Vec::new(),
        });
        self.reply(reply::SENDER_OK);
    }

    pub(crate) fn handle_rcpt(&mut self, to: RcptTo<String>) {
        let max_recipients = self.context.max_recipients;
        let Some(envelope) = self.envelope.as_mut() else {
            return self.reply(reply::NEED_MAIL);
        };
        if to.address.is_empty() {
            return reply::write_text(&mut self.out, 501, "5.1.3", "Bad recipient address syntax");
        }
        if envelope.rcpt_to.len() >= max_recipients {
            return self.reply(reply::TOO_MANY_RECIPIENTS);
        }
        envelope.rcpt_to.push(to.address);
        self.reply(reply::RECIPIENT_OK);
    }
}
