//! The SMTP session: one per connection, generic over its stream so that the same
//! state machine runs on plain TCP, after STARTTLS, and in memory in tests.
//!
//! Input is read in chunks and consumed by the receiver of the current phase
//! (commands, a SASL exchange, or message data); replies are buffered and written
//! once the chunk is consumed, which is what PIPELINING needs. The phase handlers
//! live in the sibling modules, one per SMTP phase.

use std::{io, net::SocketAddr, sync::Arc};

use mailbridge_core::devices::AuthenticatedDevice;
use smtp_proto::{Request, request::receiver::RequestReceiver};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    EdgeContext,
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

pub struct Session<S> {
    pub(crate) stream: S,
    pub(crate) context: Arc<EdgeContext>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: Option<TlsInfo>,
    pub(crate) helo: Option<String>,
    pub(crate) device: Option<AuthenticatedDevice>,
    pub(crate) envelope: Option<Envelope>,
    pub(crate) phase: Phase,
    requests: RequestReceiver,
    pub(crate) out: Vec<u8>,
}

/// Serves one TCP connection: greeting, commands, and at most one STARTTLS upgrade.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, context: Arc<EdgeContext>) {
    let mut plain = Session::new(stream, context.clone(), peer, None);
    plain.greet();
    match plain.run().await {
        Ok(Flow::StartTls) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(error = %e, "connection ended");
            return;
        }
    }
    let handshake =
        tokio::time::timeout(context.idle_timeout, context.tls.accept(plain.stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            return;
        }
    };
    let info = TlsInfo::of(stream.get_ref().1);
    tracing::debug!(protocol = %info.protocol, cipher = %info.cipher, "TLS established");
    // RFC 3207: after the handshake the session starts afresh (no HELO, no AUTH).
    let mut secured = Session::new(stream, context, peer, Some(info));
    if let Err(e) = secured.run().await {
        tracing::debug!(error = %e, "connection ended");
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(
        stream: S,
        context: Arc<EdgeContext>,
        peer: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> Self {
        Self {
            stream,
            context,
            peer,
            tls,
            helo: None,
            device: None,
            envelope: None,
            phase: Phase::Command,
            requests: RequestReceiver::default(),
            out: Vec::with_capacity(512),
        }
    }

    pub(crate) fn greet(&mut self) {
        // No enhanced code in the greeting: the client has not asked for them yet.
        let greeting = format!("220 {} ESMTP mailbridge ready\r\n", self.context.hostname);
        self.out.extend_from_slice(greeting.as_bytes());
    }

    pub(crate) fn reply(&mut self, reply: Reply) {
        reply::write(&mut self.out, reply, None);
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads and answers until the client quits, the connection drops, or STARTTLS
    /// hands the stream to the TLS handshake.
    pub async fn run(&mut self) -> io::Result<Flow> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            self.flush().await?;
            let read =
                tokio::time::timeout(self.context.idle_timeout, self.stream.read(&mut buf)).await;
            let n = match read {
                Ok(result) => result?,
                Err(_) => {
                    self.reply(reply::TIMEOUT);
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
            }
        }
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
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => self.handle_rcpt(to),
            Request::Data => self.handle_data(),
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
            Request::Bdat { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.reply(reply::NOT_IMPLEMENTED),
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
            Error::InvalidSenderAddress => {
                reply::write_text(&mut self.out, 501, "5.1.7", "Bad sender address syntax")
            }
            Error::InvalidRecipientAddress => {
                reply::write_text(&mut self.out, 501, "5.1.3", "Bad recipient address syntax")
            }
            Error::SyntaxError { syntax } => {
                reply::write_text(&mut self.out, 501, "5.5.4", &format!("Syntax: {syntax}"))
            }
            Error::InvalidParameter { param } => reply::write_text(
                &mut self.out,
                501,
                "5.5.4",
                &format!("Invalid parameter {param:?}"),
            ),
            Error::UnsupportedParameter { param } => reply::write_text(
                &mut self.out,
                555,
                "5.5.4",
                &format!("Unsupported parameter {param:?}"),
            ),
            Error::NeedsMoreData { .. } | Error::InvalidResponse { .. } => {
                self.reply(reply::UNRECOGNISED)
            }
        }
    }
}
