//! AUTH: SASL PLAIN and LOGIN (RFC 4954, RFC 4616), with the initial response or
//! through `334` challenges, checked against device credentials. Offered inside TLS
//! (or in clear only from networks the operator allowed); failures are slowed down
//! and locked out per (username, source), per source and per username, with a
//! device's familiar sources spared (see `throttle`). On the legacy-TLS listeners
//! only devices allowed legacy TLS may log in.

use mailbridge_core::ids::DeviceId;
use std::{collections::HashMap, net::IpAddr, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use mailbridge_core::devices;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, request::receiver::LineReceiver};
use sqlx::PgPool;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::{
    reply,
    session::{Flow, Identification, Phase, Session},
};

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
        if !self.auth_allowed() {
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
            _ => self.verify("", "").await,
        }
    }

    async fn verify(&mut self, username: &str, password: &str) {
        let ip = self.peer.ip();
        let guard = &self.context.auth;
        let state = guard.admit(&self.context.pool, ip, username).await;
        if state.locked() {
            tracing::warn!(username = %printable(username), "authentication refused: locked out after repeated failures");
            self.count_auth("locked");
            return self.reply(reply::AUTH_LOCKED);
        }
        let context = &self.context;
        let stored = match context.directory.credential(&context.pool, username).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "credential check failed: database unavailable");
                self.count_auth("unavailable");
                return self.reply(reply::AUTH_UNAVAILABLE);
            }
        };
        let verified = match &stored {
            Some(c) if guard.recently_verified(username, &c.password_hash, password) => true,
            _ => {
                let ok = devices::verify_password(
                    stored.as_ref().map(|c| c.password_hash.clone()),
                    password,
                )
                .await;
                if let (true, Some(c)) = (ok, &stored) {
                    guard.remember_verified(username, &c.password_hash, password);
                }
                ok
            }
        };
        if let Some(c) = &stored {
            // The transcript belongs to the device named, whether the password was
            // right or not: that is where the technician looks.
            self.transcript.device_id = Some(c.device.device_id);
        }
        let refusal = match &stored {
            _ if !verified => Some("wrong username or password"),
            Some(c) if !c.enabled => Some("device disabled"),
            Some(c) if !c.device.policy.allows_address(&ip) => {
                Some("source address not allow-listed for this device")
            }
            Some(_) => None,
            None => Some("wrong username or password"),
        };
        match (refusal, stored) {
            (None, Some(credential))
                if self.kind.legacy() && !credential.device.policy.legacy_tls =>
            {
                // The password was right: no failure counted, but this listener is
                // only for devices whose setting says legacy TLS.
                tracing::info!(device = %credential.device.device_id, "authentication refused: the device is not allowed legacy TLS");
                self.count_auth("not_legacy");
                self.reply(reply::NOT_LEGACY_DEVICE);
            }
            (None, Some(credential)) => {
                guard
                    .succeeded(&self.context.pool, ip, username, state)
                    .await;
                let device = credential.device;
                tracing::info!(device = %device.device_id, tenant = %device.tenant_id, "device authenticated");
                self.record_seen(device.device_id);
                self.device = Some((device, Identification::Password));
                self.count_auth("success");
                self.reply(reply::AUTH_OK);
            }
            (reason, _) => {
                let delay = guard.failed(&self.context.pool, ip, username, state).await;
                let throttled = delay > self.context.settings.auth_throttle.failure_delay;
                self.count_auth(if throttled {
                    "throttled"
                } else {
                    "bad_password"
                });
                tracing::info!(username = %printable(username), reason = reason.unwrap_or_default(), "authentication failed");
                tokio::time::sleep(delay).await;
                self.reply(reply::BAD_CREDENTIALS);
            }
        }
    }

    fn count_auth(&self, result: &str) {
        let metrics = &mailbridge_core::metrics::metrics().edge;
        metrics
            .auth
            .with_label_values(&[self.kind.name(), result])
            .inc();
    }

    /// Notes the device's last-seen time and address; written with the others.
    pub(crate) fn record_seen(&self, device_id: DeviceId) {
        self.context.seen.record(device_id, self.peer.ip());
    }
}

/// Devices seen since the last write: written to PostgreSQL together every few
/// seconds (one statement for all of them), not once per session.
#[derive(Debug, Default)]
pub struct SeenDevices(std::sync::Mutex<HashMap<DeviceId, IpAddr>>);

/// How often the devices seen are written.
const SEEN_FLUSH: Duration = Duration::from_secs(5);

impl SeenDevices {
    fn record(&self, device_id: DeviceId, addr: IpAddr) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(device_id, addr);
    }

    fn take(&self) -> Vec<(DeviceId, IpAddr)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Writes what was seen every few seconds, and once more when `stop` is cancelled.
    pub(crate) async fn flush_until(&self, pool: PgPool, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(SEEN_FLUSH) => false,
                _ = stop.cancelled() => true,
            };
            let seen = self.take();
            if let Err(e) = devices::touch_many(&pool, &seen).await {
                tracing::debug!(error = %e, devices = seen.len(), "could not record devices' last-seen");
            }
            if stopping {
                return;
            }
        }
    }
}

/// A username as it may appear in a log line: bounded, without control characters.
pub(crate) fn printable(username: &str) -> String {
    username
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}
