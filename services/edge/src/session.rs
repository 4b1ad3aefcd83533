//! The SMTP session: one per connection, generic over its stream so that the same
//! state machine runs on plain TCP, after STARTTLS, over implicit TLS, and in memory.
//!
//! Input is read in chunks and consumed by the receiver of the current phase
//! (commands, a SASL exchange, message data, a BDAT chunk); replies are buffered and
//! written once the chunk is consumed, which is what PIPELINING needs. The phase
//! handlers live in the sibling modules, one per SMTP phase.

use std::{io, net::SocketAddr, sync::Arc, time::Instant};

use mailbridge_core::devices::AuthenticatedDevice;
use smtp_proto::{
    Request,
    request::receiver::{MAX_LINE_LENGTH, RequestReceiver},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    EdgeContext, ListenerKind, Shutdown,
    auth::SaslExchange,
    data::DataTransfer,
    envelope::Envelope,
    reply::{self, Reply},
};

/// What the connection should do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
    StartTls,
}

/// The receiver the next input bytes belong to.
pub(crate) enum Phase {
    Command,
    Sasl(SaslExchange),
    Data(Box<DataTransfer>),
}

/// The negotiated TLS parameters, recorded with every message.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub protocol: String,
    pub cipher: String,
}

impl TlsInfo {
    fn of(connection: &rustls::ServerConnection) -> Self {
        Self {
            protocol: connection
                .protocol_version()
                .and_then(|v| v.as_str())
                .map(|v| v.replace('_', "."))
                .unwrap_or_else(|| "TLS".to_owned()),
            cipher: connection
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown")
                .to_owned(),
        }
    }
}

/// How the session's device became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identification {
    Password,
    Address,
}

pub struct Session<S> {
    pub(crate) stream: S,
    pub(crate) context: Arc<EdgeContext>,
    pub(crate) kind: ListenerKind,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: Option<TlsInfo>,
    pub(crate) helo: Option<String>,
    pub(crate) device: Option<(AuthenticatedDevice, Identification)>,
    pub(crate) envelope: Option<Envelope>,
    pub(crate) phase: Phase,
    requests: RequestReceiver,
    pub(crate) out: Vec<u8>,
    shutdown: Shutdown,
    started: Instant,
    errors: usize,
    /// Inside a command line that was too long: drop input through its end.
    discarding_line: bool,
    pub(crate) messages: usize,
}

/// Serves one connection: greeting, commands, and at most one move into TLS
/// (STARTTLS, or at once on the implicit-TLS listener). Returns the TLS version the
/// connection ended with, if any.
pub(crate) async fn serve(
    kind: ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<EdgeContext>,
    shutdown: Shutdown,
) -> Option<String> {
    let stream = if kind == ListenerKind::Submissions {
        stream
    } else {
        let mut plain = Session::new(kind, stream, context.clone(), peer, None, shutdown.clone());
        plain.greet();
        match plain.run().await {
            Ok(Flow::StartTls) => plain.stream,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return None;
            }
        }
    };
    let idle = context.settings.limits.idle_timeout;
    let stream = match tokio::time::timeout(idle, context.tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return Some("handshake_failed".to_owned());
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            return Some("handshake_failed".to_owned());
        }
    };
    let info = TlsInfo::of(stream.get_ref().1);
    tracing::debug!(protocol = %info.protocol, cipher = %info.cipher, "TLS established");
    // RFC 3207: after the handshake the session starts afresh (no HELO, no AUTH).
    let mut secured = Session::new(kind, stream, context, peer, Some(info), shutdown);
    if kind == ListenerKind::Submissions {
        secured.greet();
    }
    if let Err(e) = secured.run().await {
        tracing::debug!(error = %e, "connection ended");
    }
    secured.tls.map(|t| t.protocol)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(
        kind: ListenerKind,
        stream: S,
        context: Arc<EdgeContext>,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            stream,
            context,
            kind,
            peer,
            tls,
            helo: None,
            device: None,
            envelope: None,
            phase: Phase::Command,
            requests: RequestReceiver::default(),
            out: Vec::with_capacity(512),
            shutdown,
            started: Instant::now(),
            errors: 0,
            discarding_line: false,
            messages: 0,
        }
    }

    pub(crate) fn greet(&mut self) {
        // No enhanced code in the greeting: the client has not asked for them yet.
        let greeting = format!(
            "220 {} ESMTP mailbridge ready\r\n",
            self.context.settings.hostname
        );
        self.out.extend_from_slice(greeting.as_bytes());
    }

    pub(crate) fn reply(&mut self, reply: Reply) {
        if reply.code >= 500 {
            self.errors += 1;
        }
        reply::write(&mut self.out, reply, None);
    }

    /// Refuses a message (at MAIL, RCPT or after its data), counted by its code.
    pub(crate) fn refuse_message(&mut self, reply: Reply) {
        crate::count_message(self.kind, "refused", reply.enhanced);
        self.reply(reply);
    }

    /// A 5xx answer with run-time text; counts as an error like `reply`.
    pub(crate) fn refuse(&mut self, code: u16, enhanced: &str, text: &str) {
        if code >= 500 {
            self.errors += 1;
        }
        reply::write_text(&mut self.out, code, enhanced, text);
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Whether the client is between commands (not inside DATA, BDAT or AUTH).
    fn idle(&self) -> bool {
        matches!(self.phase, Phase::Command) && self.envelope.is_none()
    }

    /// Reads and answers until the client quits, the connection drops, a limit or a
    /// shutdown ends it, or STARTTLS hands the stream to the TLS handshake.
    pub async fn run(&mut self) -> io::Result<Flow> {
        let limits = self.context.settings.limits.clone();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            self.flush().await?;
            if self.errors >= limits.max_errors {
                self.reply(reply::TOO_MANY_ERRORS);
                self.flush().await?;
                return Ok(Flow::Quit);
            }
            let remaining = limits
                .session_timeout
                .saturating_sub(self.started.elapsed());
            if remaining.is_zero() {
                self.reply(reply::SESSION_TOO_LONG);
                self.flush().await?;
                return Ok(Flow::Quit);
            }
            if self.shutdown.soft.is_cancelled() && self.idle() {
                self.reply(reply::SHUTTING_DOWN);
                self.flush().await?;
                return Ok(Flow::Quit);
            }
            let wait = limits.idle_timeout.min(remaining);
            let soft = self.shutdown.soft.clone();
            let hard = self.shutdown.hard.clone();
            let idle = self.idle();
            let read = tokio::select! {
                read = tokio::time::timeout(wait, self.stream.read(&mut buf)) => read,
                _ = soft.cancelled(), if idle => continue,
                _ = hard.cancelled() => {
                    self.reply(reply::SHUTTING_DOWN);
                    self.flush().await?;
                    return Ok(Flow::Quit);
                }
            };
            let n = match read {
                Ok(result) => result?,
                Err(_) => {
                    let timeout = if wait < limits.idle_timeout {
                        reply::SESSION_TOO_LONG
                    } else {
                        reply::TIMEOUT
                    };
                    self.reply(timeout);
                    self.flush().await?;
                    return Ok(Flow::Quit);
                }
            };
            if n == 0 {
                return Ok(Flow::Quit);
            }
            let mut bytes = buf[..n].iter();
            while !bytes.as_slice().is_empty() {
                let flow = match std::mem::replace(&mut self.phase, Phase::Command) {
                    Phase::Command if self.skip_long_line(&mut bytes) => Flow::Continue,
                    Phase::Command => {
                        let parsed = self.requests.ingest(&mut bytes).map(Request::into_owned);
                        match parsed {
                            Ok(request) => self.handle_command(request).await,
                            Err(smtp_proto::Error::NeedsMoreData { .. }) => Flow::Continue,
                            Err(error) => {
                                self.refuse_syntax(error);
                                Flow::Continue
                            }
                        }
                    }
                    Phase::Sasl(exchange) => self.continue_sasl(exchange, &mut bytes).await,
                    Phase::Data(transfer) => self.continue_data(transfer, &mut bytes).await,
                };
                match flow {
                    Flow::Continue => {}
                    Flow::Quit => {
                        self.flush().await?;
                        return Ok(Flow::Quit);
                    }
                    Flow::StartTls => {
                        // Whatever the client pipelined after STARTTLS is dropped
                        // unread: it must not be taken as sent under TLS.
                        self.flush().await?;
                        return Ok(Flow::StartTls);
                    }
                }
                if self.errors >= limits.max_errors {
                    break;
                }
            }
        }
    }

    /// Enforces the command line length limit before the parser sees the line: a
    /// longer line is answered `500 5.5.6` and dropped through its end, so no part of
    /// it is ever read as a command. Returns whether it consumed input.
    fn skip_long_line(&mut self, bytes: &mut std::slice::Iter<'_, u8>) -> bool {
        let rest = bytes.as_slice();
        let newline = memchr::memchr(b'\n', rest);
        if self.discarding_line {
            let end = newline.map(|p| p + 1).unwrap_or(rest.len());
            *bytes = rest[end..].iter();
            self.discarding_line = newline.is_none();
            return true;
        }
        match newline {
            Some(pos) if pos >= MAX_LINE_LENGTH => *bytes = rest[pos + 1..].iter(),
            None if rest.len() > MAX_LINE_LENGTH => {
                *bytes = [].iter();
                self.discarding_line = true;
            }
            _ => return false,
        }
        self.reply(reply::LINE_TOO_LONG);
        true
    }

    async fn handle_command(&mut self, request: Request<String>) -> Flow {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(host, true),
            Request::Helo { host } => self.handle_ehlo(host, false),
            Request::Lhlo { .. } => self.reply(reply::UNRECOGNISED),
            Request::StartTls => return self.handle_starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                return self.handle_auth(mechanism, initial_response).await;
            }
            Request::Mail { from } => return self.handle_mail(from).await,
            Request::Rcpt { to } => self.handle_rcpt(to),
            Request::Data => self.handle_data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.handle_bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.envelope = None;
                self.reply(reply::OK);
            }
            Request::Noop { .. } => self.reply(reply::OK),
            Request::Vrfy { .. } | Request::Expn { .. } => self.reply(reply::VRFY_CANNOT),
            Request::Help { .. } => self.reply(reply::HELP),
            Request::Quit => {
                self.reply(reply::BYE);
                return Flow::Quit;
            }
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.reply(reply::NOT_IMPLEMENTED)
            }
        }
        Flow::Continue
    }

    fn handle_starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            self.reply(reply::TLS_ALREADY_ACTIVE);
            return Flow::Continue;
        }
        self.reply(reply::READY_FOR_TLS);
        Flow::StartTls
    }

    fn refuse_syntax(&mut self, error: smtp_proto::Error) {
        use smtp_proto::Error;
        match error {
            Error::UnknownCommand => self.reply(reply::UNRECOGNISED),
            Error::ResponseTooLong => self.reply(reply::LINE_TOO_LONG),
            Error::InvalidSenderAddress => self.refuse(501, "5.1.7", "Bad sender address syntax"),
            Error::InvalidRecipientAddress => {
                self.refuse(501, "5.1.3", "Bad recipient address syntax")
            }
            Error::SyntaxError { syntax } => {
                self.refuse(501, "5.5.4", &format!("Syntax: {syntax}"))
            }
            Error::InvalidParameter { param } => {
                self.refuse(501, "5.5.4", &format!("Invalid parameter {param:?}"))
            }
            Error::UnsupportedParameter { param } => {
                let param: String = param.chars().take(64).collect();
                self.refuse(555, "5.5.4", &format!("Unsupported parameter {param:?}"))
            }
            Error::NeedsMoreData { .. } | Error::InvalidResponse { .. } => {
                self.reply(reply::UNRECOGNISED)
            }
        }
    }

    /// Whether AUTH may happen on this connection now: inside TLS, or in clear from a
    /// network the operator explicitly allowed for devices that cannot do modern TLS.
    pub(crate) fn auth_allowed(&self) -> bool {
        self.tls.is_some()
            || self
                .context
                .settings
                .plaintext_auth_networks
                .contains(&self.peer.ip())
    }
}
