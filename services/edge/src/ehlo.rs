//! EHLO and HELO: the greeting, and the list of extensions on offer. AUTH is
//! offered only inside TLS; STARTTLS only outside it. SIZE (RFC 1870) is the largest
//! message this listener may accept from the client: its customer's limit once the
//! device is known (after AUTH, or by its address on the relay listener), else the
//! edge's ceiling.

use std::io::Write;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{ListenerKind, envelope::limit_within, reply, session::Session};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) async fn handle_ehlo(&mut self, host: String, extended: bool) {
        let host = host.trim();
        // Never a domain or address literal, and never to be echoed in a reply or
        // written into the Received header: NUL and the other control characters.
        if host.is_empty() || host.chars().any(char::is_control) {
            self.reply(reply::HELO_SYNTAX);
            return;
        }
        // A new greeting resets the transaction (RFC 5321 §4.1.4), not the login.
        self.envelope = None;
        self.helo = Some(host.chars().take(255).collect());
        let hostname = self.context.settings.hostname.clone();
        if !extended {
            reply::write_text(&mut self.out, 250, "2.0.0", &hostname);
            return;
        }
        let size = self.advertised_size().await;
        let mut lines = vec![
            format!("{hostname} greets {host}"),
            format!("SIZE {size}"),
            "8BITMIME".to_owned(),
            "PIPELINING".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
            "CHUNKING".to_owned(),
            "HELP".to_owned(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_allowed() && self.device.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let _ = write!(
                self.out,
                "250{}{line}\r\n",
                if i == last { ' ' } else { '-' }
            );
        }
    }

    /// The SIZE to advertise: the known device's limit; on the relay listener, the
    /// limit of the device allow-listed for the client's address (it is identified by
    /// it at MAIL); otherwise the edge's ceiling.
    async fn advertised_size(&self) -> usize {
        let ceiling = self.context.settings.limits.max_message_size;
        if self.device.is_some() {
            return self.size_limit();
        }
        if self.kind != ListenerKind::Relay {
            return ceiling;
        }
        let context = &self.context;
        match context
            .directory
            .by_address(&context.pool, self.peer.ip())
            .await
        {
            Ok(Some(device)) => limit_within(&device.policy, ceiling),
            _ => ceiling,
        }
    }
}
