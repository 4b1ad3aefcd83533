//! AUTH: SASL PLAIN and LOGIN (RFC 4954, RFC 4616), with the initial response or
//! through `334` challenges, checked against device credentials. Offered only inside
//! TLS; a wrong password costs the client a pause before the `535`.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use mailbridge_core::devices;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, request::receiver::LineReceiver};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    reply,
    session::{Flow, Phase, Session},
};

/// Slows down password guessing on a single connection.
const FAILED_AUTH_DELAY: Duration = Duration::from_secs(1);

/// A SASL exchange waiting for the client's next line.
pub(crate) struct SaslExchange {
    step: SaslStep,
    line: LineReceiver<()>,
}

enum SaslStep {
    PlainResponse,
    LoginUsername,
    LoginPassword { username: String },
}

impl SaslExchange {
    fn new(step: SaslStep) -> Self {
        Self {
            step,
            line: LineReceiver::new(()),
        }
    }
}

enum Decoded {
    Text(String),
    Cancelled,
    Invalid,
}

/// Decodes a SASL response: `*` cancels, `=` is the empty response (RFC 4954).
fn decode(response: &[u8]) -> Decoded {
    let response = response.trim_ascii();
    match response {
        b"*" => Decoded::Cancelled,
        b"=" => Decoded::Text(String::new()),
        _ => match STANDARD.decode(response).map(String::from_utf8) {
            Ok(Ok(text)) => Decoded::Text(text),
            _ => Decoded::Invalid,
        },
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) async fn handle_auth(&mut self, mechanism: u64, initial_response: String) -> Flow {
        if self.tls.is_none() {
            self.reply(reply::ENCRYPTION_REQUIRED);
            return Flow::Continue;
        }
        if self.helo.is_none() {
            self.reply(reply::HELO_FIRST);
            return Flow::Continue;
        }
        if self.device.is_some() {
            self.reply(reply::ALREADY_AUTHENTICATED);
            return Flow::Continue;
        }
        if self.envelope.is_some() {
            self.reply(reply::AUTH_IN_TRANSACTION);
            return Flow::Continue;
        }
        let initial = (!initial_response.is_empty()).then(|| decode(initial_response.as_bytes()));
        match (mechanism, initial) {
            (AUTH_PLAIN, None) => {
                self.out.extend_from_slice(b"334 \r\n");
                self.phase = Phase::Sasl(SaslExchange::new(SaslStep::PlainResponse));
            }
            (AUTH_LOGIN, None) => self.ask_username(),
            (AUTH_PLAIN | AUTH_LOGIN, Some(Decoded::Cancelled)) => {
                self.reply(reply::AUTH_CANCELLED)
            }
            (AUTH_PLAIN | AUTH_LOGIN, Some(Decoded::Invalid)) => self.reply(reply::BAD_BASE64),
            (AUTH_PLAIN, Some(Decoded::Text(response))) => self.finish_plain(&response).await,
            (AUTH_LOGIN, Some(Decoded::Text(username))) => self.ask_password(username),
            _ => self.reply(reply::UNKNOWN_MECHANISM),
        }
        Flow::Continue
    }

    fn ask_username(&mut self) {
        self.out.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
        self.phase = Phase::Sasl(SaslExchange::new(SaslStep::LoginUsername));
    }

    fn ask_password(&mut self, username: String) {
        self.out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
        self.phase = Phase::Sasl(SaslExchange::new(SaslStep::LoginPassword { username }));
    }

    pub(crate) async fn continue_sasl(
        &mut self,
        mut exchange: SaslExchange,
        bytes: &mut std::slice::Iter<'_, u8>,
    ) -> Flow {
        if !exchange.line.ingest(bytes) {
            self.phase = Phase::Sasl(exchange);
            return Flow::Continue;
        }
        let decoded = decode(&exchange.line.buf);
        match (exchange.step, decoded) {
            (_, Decoded::Cancelled) => self.reply(reply::AUTH_CANCELLED),
            (_, Decoded::Invalid) => self.reply(reply::BAD_BASE64),
            (SaslStep::PlainResponse, Decoded::Text(response)) => {
                self.finish_plain(&response).await
            }
            (SaslStep::LoginUsername, Decoded::Text(username)) => self.ask_password(username),
            (SaslStep::LoginPassword { username }, Decoded::Text(password)) => {
                self.verify(&username, &password).await
            }
        }
        Flow::Continue
    }

    /// PLAIN carries `authzid NUL authcid NUL password`; an authzid, if given, must
    /// name the same user (a device cannot act for another).
    async fn finish_plain(&mut self, response: &str) {
        let mut parts = response.split('\0');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authzid), Some(username), Some(password), None)
                if authzid.is_empty() || authzid == username =>
            {
                self.verify(username, password).await
            }
            _ => {
                tokio::time::sleep(FAILED_AUTH_DELAY).await;
                self.reply(reply::BAD_CREDENTIALS)
            }
        }
    }

    async fn verify(&mut self, username: &str, password: &str) {
        match devices::authenticate(&self.context.pool, username, password).await {
            Ok(Some(device)) => {
                tracing::info!(device = %device.device_id, tenant = %device.tenant_id, "device authenticated");
                let (pool, device_id, addr) =
                    (self.context.pool.clone(), device.device_id, self.peer.ip());
                tokio::spawn(async move {
                    if let Err(e) = devices::touch(&pool, device_id, addr).await {
                        tracing::debug!(error = %e, "could not record device last-seen");
                    }
                });
                self.device = Some(device);
                self.reply(reply::AUTH_OK);
            }
            Ok(None) => {
                tracing::info!(username = %username.chars().take(64).collect::<String>(), "authentication failed");
                tokio::time::sleep(FAILED_AUTH_DELAY).await;
                self.reply(reply::BAD_CREDENTIALS);
            }
            Err(e) => {
                tracing::warn!(error = %e, "credential check failed: database unavailable");
                self.reply(reply::AUTH_UNAVAILABLE);
            }
        }
    }
}
