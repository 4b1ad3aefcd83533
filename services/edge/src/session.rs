//! The SMTP session: one per connection, generic over its stream so that the same
//! state machine runs on plain TCP, after STARTTLS, over implicit TLS, and in memory.
//!
//! Input is read in chunks and consumed by the receiver of the current phase
//! (command lines, a SASL exchange, message data, a BDAT chunk); replies are buffered
//! and written once the chunk is consumed, which is what PIPELINING needs. A command
//! is parsed only once its whole line is in: one line, one reply, however the line
//! was split up on the way. The phase handlers live in the sibling modules, one per
//! SMTP phase.
//!
//! Over 500 lines: 49 of them are unit tests; the rest is the connection's setup (about
//! 190 lines: TLS on either library, and why a client's handshake failed) and the
//! session's read loop and command dispatch over its private state.

use std::{io, net::SocketAddr, sync::Arc, time::Instant};

use mailbridge_core::{
    devices::AuthenticatedDevice,
    transcripts::{self, Transcript},
};
use smtp_proto::{Request, request::receiver::MAX_LINE_LENGTH};
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

/// Bytes read at once between messages, and inside one.
const IDLE_READ_BUFFER: usize = 1024;
const BUSY_READ_BUFFER: usize = 16 * 1024;

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
    /// The command line received so far, until its LF is in.
    line: Vec<u8>,
    pub(crate) out: Vec<u8>,
    shutdown: Shutdown,
    started: Instant,
    errors: usize,
    /// Inside a command line that was too long: drop input through its end.
    discarding_line: bool,
    pub(crate) messages: usize,
    /// What this connection did, for the technician: commands and reply codes.
    pub(crate) transcript: Transcript,
}

/// Serves one connection: greeting, commands, and at most one move into TLS
/// (STARTTLS, or at once on the implicit-TLS listeners; OpenSSL on the legacy-TLS
/// listeners, rustls on the others). Returns the TLS version the connection ended
/// with, if any. Its transcript is handed to the transcript log at the end.
pub(crate) async fn serve(
    kind: ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<EdgeContext>,
    shutdown: Shutdown,
) -> Option<String> {
    let mut transcript = Transcript::new(peer.ip(), kind.name());
    let tls = serve_recorded(kind, stream, peer, &context, shutdown, &mut transcript).await;
    transcript.ended_at = chrono::Utc::now();
    context.transcripts.submit(transcript);
    tls
}

async fn serve_recorded(
    kind: ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
    context: &Arc<EdgeContext>,
    shutdown: Shutdown,
    transcript: &mut Transcript,
) -> Option<String> {
    let stream = if kind.implicit_tls() {
        stream
    } else {
        let mut plain = Session::new(kind, stream, context.clone(), peer, None, shutdown.clone());
        plain.transcript = std::mem::replace(transcript, Transcript::new(peer.ip(), kind.name()));
        plain.greet();
        let flow = plain.run().await;
        *transcript = std::mem::replace(
            &mut plain.transcript,
            Transcript::new(peer.ip(), kind.name()),
        );
        match flow {
            Ok(Flow::StartTls) => plain.stream,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return None;
            }
        }
    };
    let idle = context.settings.limits.idle_timeout;
    let handshake_failed = |transcript: &mut Transcript, reason: String| {
        tracing::info!(reason = %reason, "TLS handshake failed");
        mailbridge_core::metrics::metrics()
            .edge
            .tls_handshakes
            .with_label_values(&[kind.name(), "failed"])
            .inc();
        transcript.tls_failure = Some(reason);
        transcript.outcome = "tls_failed";
        Some("handshake_failed".to_owned())
    };
    let offered = match tokio::time::timeout(idle, client_hello_version(&stream)).await {
        Ok(offered) => offered,
        Err(_) => return handshake_failed(transcript, "no TLS handshake in time".to_owned()),
    };
    if let OfferedTls::NotTls = offered {
        return handshake_failed(
            transcript,
            "the client did not start TLS: it sent plain text (is the device set to STARTTLS on an implicit-TLS port?)".to_owned(),
        );
    }
    if kind.legacy() {
        let stream = match tokio::time::timeout(idle, context.legacy_tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(reason)) => return handshake_failed(transcript, offered.explain(&reason)),
            Err(_) => return handshake_failed(transcript, "TLS handshake timed out".to_owned()),
        };
        let info = TlsInfo::of_openssl(stream.ssl());
        secured(kind, stream, peer, context, info, shutdown, transcript).await
    } else {
        let stream = match tokio::time::timeout(idle, context.tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return handshake_failed(transcript, offered.explain(&rustls_reason(&e))),
            Err(_) => return handshake_failed(transcript, "TLS handshake timed out".to_owned()),
        };
        let info = TlsInfo::of(stream.get_ref().1);
        secured(kind, stream, peer, context, info, shutdown, transcript).await
    }
}

/// The session inside TLS, whichever library negotiated it.
async fn secured<S: AsyncRead + AsyncWrite + Unpin>(
    kind: ListenerKind,
    stream: S,
    peer: SocketAddr,
    context: &Arc<EdgeContext>,
    info: TlsInfo,
    shutdown: Shutdown,
    transcript: &mut Transcript,
) -> Option<String> {
    tracing::debug!(protocol = %info.protocol, cipher = %info.cipher, "TLS established");
    mailbridge_core::metrics::metrics()
        .edge
        .tls_handshakes
        .with_label_values(&[kind.name(), &info.protocol])
        .inc();
    transcript.tls_protocol = Some(info.protocol.clone());
    transcript.tls_cipher = Some(info.cipher.clone());
    // RFC 3207: after the handshake the session starts afresh (no HELO, no AUTH).
    let mut secured = Session::new(kind, stream, context.clone(), peer, Some(info), shutdown);
    secured.transcript = std::mem::replace(transcript, Transcript::new(peer.ip(), kind.name()));
    if kind.implicit_tls() {
        secured.greet();
    }
    if let Err(e) = secured.run().await {
        tracing::debug!(error = %e, "connection ended");
    }
    *transcript = std::mem::replace(
        &mut secured.transcript,
        Transcript::new(peer.ip(), kind.name()),
    );
    secured.tls.map(|t| t.protocol)
}

/// What the client's first TLS record says it offers.
enum OfferedTls {
    /// A ClientHello whose version field is below TLS 1.2 (`0x0301` is TLS 1.0):
    /// the client offers nothing newer (TLS 1.3 clients put 1.2 there too).
    AtMost(&'static str),
    /// A ClientHello of TLS 1.2 or newer, or too little of it to tell.
    Modern,
    /// Not a TLS handshake record at all.
    NotTls,
}

impl OfferedTls {
    /// The handshake's failure reason, with what the client offered when that
    /// explains it.
    fn explain(&self, reason: &str) -> String {
        match self {
            Self::AtMost(version) => {
                format!("{reason} (the client offered at most {version})")
            }
            _ => reason.to_owned(),
        }
    }
}

/// Looks at the client's first bytes without taking them.
async fn client_hello_version(stream: &TcpStream) -> OfferedTls {
    let mut head = [0u8; 11];
    let n = match stream.peek(&mut head).await {
        Ok(n) => n,
        Err(_) => return OfferedTls::Modern,
    };
    if n == 0 {
        return OfferedTls::Modern;
    }
    // A TLS record starts with 0x16; an SSL 2.0-style hello sets the top bit.
    if head[0] != 0x16 && head[0] & 0x80 == 0 {
        return OfferedTls::NotTls;
    }
    if n < 11 || head[5] != 0x01 {
        return OfferedTls::Modern;
    }
    match (head[9], head[10]) {
        (3, 0) => OfferedTls::AtMost("SSL 3.0"),
        (3, 1) => OfferedTls::AtMost("TLS 1.0"),
        (3, 2) => OfferedTls::AtMost("TLS 1.1"),
        _ => OfferedTls::Modern,
    }
}

/// rustls' reason for a failed handshake, in words.
fn rustls_reason(error: &io::Error) -> String {
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::PeerIncompatible(why)) => match why {
            rustls::PeerIncompatible::NoCipherSuitesInCommon => {
                "no shared cipher suite (the normal listeners offer only ECDHE with AES-GCM or ChaCha20)".to_owned()
            }
            rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            | rustls::PeerIncompatible::SignatureAlgorithmsExtensionRequired
            | rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::Tls13RequiredForQuic => {
                "no shared protocol version (the normal listeners speak TLS 1.2 and 1.3)".to_owned()
            }
            other => format!("the client's TLS is incompatible: {other:?}"),
        },
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the client aborted the handshake with the alert {alert:?} (often: it does not trust the certificate)")
        }
        Some(other) => other.to_string(),
        None => format!("connection error during the handshake: {error}"),
    }
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
            line: Vec::new(),
            out: Vec::with_capacity(512),
            shutdown,
            started: Instant::now(),
            errors: 0,
            discarding_line: false,
            messages: 0,
            transcript: Transcript::new(peer.ip(), kind.name()),
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

    /// Notes that the edge closes the session with the reply just written.
    fn closing(&mut self, why: &str) {
        let last = self.out.len().saturating_sub(256);
        let start = self.out[..self.out.len().saturating_sub(2)]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
            .max(last);
        self.transcript.record(why, &self.out[start..]);
        self.transcript.outcome = "closed";
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
        let mut buf = Vec::new();
        let mut filled = false;
        loop {
            // Most sessions are idle most of the time (thousands of devices hold a
            // connection open): a small buffer between messages, a large one for
            // message data or whenever the last read filled the buffer.
            let size = if self.idle() && !filled {
                IDLE_READ_BUFFER
            } else {
                BUSY_READ_BUFFER
            };
            if buf.len() != size {
                buf = vec![0u8; size];
            }
            self.flush().await?;
            if self.errors >= limits.max_errors {
                self.reply(reply::TOO_MANY_ERRORS);
                self.closing("(too many errors)");
                self.flush().await?;
                return Ok(Flow::Quit);
            }
            let remaining = limits
                .session_timeout
                .saturating_sub(self.started.elapsed());
            if remaining.is_zero() {
                self.reply(reply::SESSION_TOO_LONG);
                self.closing("(time limit)");
                self.flush().await?;
                return Ok(Flow::Quit);
            }
            if self.shutdown.soft.is_cancelled() && self.idle() {
                self.reply(reply::SHUTTING_DOWN);
                self.closing("(shutdown)");
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
                    self.closing("(shutdown)");
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
                    self.closing("(timeout)");
                    self.flush().await?;
                    return Ok(Flow::Quit);
                }
            };
            if n == 0 {
                self.transcript.outcome = "disconnected";
                return Ok(Flow::Quit);
            }
            filled = n == buf.len();
            let mut bytes = buf[..n].iter();
            while !bytes.as_slice().is_empty() {
                let mark = self.out.len();
                let flow = match std::mem::replace(&mut self.phase, Phase::Command) {
                    Phase::Command => match self.command_line(&mut bytes) {
                        None => Flow::Continue,
                        Some(line) => {
                            let command = transcripts::command_of(&line);
                            let flow = {
                                let line = crate::envelope::bracketed_path(&line).unwrap_or(line);
                                let parsed =
                                    Request::parse(&mut line.iter()).map(Request::into_owned);
                                match parsed {
                                    Ok(request) => {
                                        let request = without_wrapped_sizes(request, &line);
                                        self.handle_command(request).await
                                    }
                                    // RFC 1870 allows 20 digits; smtp-proto refuses those
                                    // that do not fit as a syntax error.
                                    Err(smtp_proto::Error::InvalidParameter { param: "SIZE" })
                                        if size_parameter(&line).is_some_and(overflows) =>
                                    {
                                        self.refuse_message(reply::TOO_BIG);
                                        Flow::Continue
                                    }
                                    Err(error) => {
                                        self.refuse_syntax(error);
                                        Flow::Continue
                                    }
                                }
                            };
                            self.transcript.record(&command, &self.out[mark..]);
                            flow
                        }
                    },
                    Phase::Sasl(exchange) => {
                        let flow = self.continue_sasl(exchange, &mut bytes).await;
                        if self.out.len() > mark {
                            self.transcript.record("(AUTH response)", &self.out[mark..]);
                        }
                        flow
                    }
                    Phase::Data(transfer) => {
                        let flow = self.continue_data(transfer, &mut bytes).await;
                        if self.out.len() > mark {
                            self.transcript.record("(message data)", &self.out[mark..]);
                        }
                        flow
                    }
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

    /// Takes input up to the end of the current command line; returns the whole line
    /// once its LF is in. A line longer than the limit is answered `500 5.5.6` and
    /// dropped through its end, so no part of it is ever read as a command.
    fn command_line(&mut self, bytes: &mut std::slice::Iter<'_, u8>) -> Option<Vec<u8>> {
        let rest = bytes.as_slice();
        let newline = memchr::memchr(b'\n', rest);
        let end = newline.map(|p| p + 1).unwrap_or(rest.len());
        *bytes = rest[end..].iter();
        if self.discarding_line {
            self.discarding_line = newline.is_none();
            return None;
        }
        if self.line.len() + end > MAX_LINE_LENGTH {
            self.line.clear();
            self.discarding_line = newline.is_none();
            self.reply(reply::LINE_TOO_LONG);
            return None;
        }
        self.line.extend_from_slice(&rest[..end]);
        newline.map(|_| std::mem::take(&mut self.line))
    }

    async fn handle_command(&mut self, request: Request<String>) -> Flow {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(host, true).await,
            Request::Helo { host } => self.handle_ehlo(host, false).await,
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
                self.transcript.outcome = "quit";
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
    /// network the operator explicitly allowed for devices that cannot do modern TLS
    /// (never from an unknown source: a PROXY header without an address).
    pub(crate) fn auth_allowed(&self) -> bool {
        self.tls.is_some()
            || (!self.peer.ip().is_unspecified()
                && self
                    .context
                    .settings
                    .plaintext_auth_networks
                    .contains(&self.peer.ip()))
    }
}

/// smtp-proto reads a SIZE or BDAT chunk size of more than 20 digits by wrapping it
/// around (`SIZE=100000000000000000000000` comes out as 0, a 23-digit chunk size as
/// 999): a size too big for a `usize` is larger than anything, and taken as such.
fn without_wrapped_sizes(request: Request<String>, line: &[u8]) -> Request<String> {
    match request {
        Request::Mail { mut from } if size_parameter(line).is_some_and(overflows) => {
            from.size = usize::MAX;
            Request::Mail { from }
        }
        Request::Bdat { is_last, .. } if overflows(after_verb(line)) => Request::Bdat {
            chunk_size: usize::MAX,
            is_last,
        },
        request => request,
    }
}

/// The value of a MAIL line's SIZE parameter and what follows it. A path cannot
/// hold " SIZE=" unless quoted, so the last one is the parameter.
fn size_parameter(line: &[u8]) -> Option<&[u8]> {
    line.windows(6)
        .rposition(|w| w.eq_ignore_ascii_case(b" SIZE="))
        .map(|at| &line[at + 6..])
}

/// What follows a command's verb.
fn after_verb(line: &[u8]) -> &[u8] {
    let line = line.trim_ascii_start();
    let verb = line.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    line[verb..].trim_ascii_start()
}

/// Whether the number at the start of `text` is too big for smtp-proto, which keeps
/// `usize::MAX` for "no number" (CRs are skipped, as smtp-proto skips them).
fn overflows(text: &[u8]) -> bool {
    text.iter()
        .filter(|&&b| b != b'\r')
        .take_while(|b| b.is_ascii_digit())
        .try_fold(0usize, |n, d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .is_none_or(|n| n == usize::MAX)
}

#[cfg(test)]
mod tests {
    use smtp_proto::Request;

    use super::{overflows, size_parameter, without_wrapped_sizes};

    fn parse(line: &[u8]) -> Request<String> {
        let request = Request::parse(&mut line.iter()).expect("a valid command");
        without_wrapped_sizes(request.into_owned(), line)
    }

    #[test]
    fn sizes_too_big_for_a_usize_are_not_wrapped_around() {
        let size = |line: &[u8]| match parse(line) {
            Request::Mail { from } => from.size,
            other => panic!("{other:?}"),
        };
        assert_eq!(size(b"MAIL FROM:<a@b.example> SIZE=1000\r\n"), 1000);
        assert_eq!(
            size(b"MAIL FROM:<a@b.example> SIZE=100000000000000000000000\r\n"),
            usize::MAX
        );
        assert_eq!(
            size(b"MAIL FROM:<12345678901234567890123@b.example> SIZE=10\r\n"),
            10,
            "digits in the address are no size"
        );
        let twenty_digits = b"MAIL FROM:<a@b.example> SIZE=99999999999999999999\r\n";
        assert!(Request::parse(&mut twenty_digits.iter()).is_err());
        assert!(size_parameter(twenty_digits).is_some_and(overflows));
        assert!(
            !size_parameter(b"MAIL FROM:<a@b.example> SIZE=18446744073709551614\r\n")
                .is_some_and(overflows)
        );
        let chunk = |line: &[u8]| match parse(line) {
            Request::Bdat {
                chunk_size,
                is_last,
            } => (chunk_size, is_last),
            other => panic!("{other:?}"),
        };
        assert_eq!(chunk(b"BDAT 42\r\n"), (42, false));
        assert_eq!(chunk(b"  bdat 42 LAST\r\n"), (42, true));
        assert_eq!(
            chunk(b"BDAT 99999999999999999999999 LAST\r\n"),
            (usize::MAX, true)
        );
    }
}
