//! mailbridge-edge: the SMTP submission server every device talks to.
//!
//! It owns the listeners, the TLS handshake and the SMTP session state machine (one
//! module per protocol phase). It authenticates devices, and commits each accepted
//! message to the queue in PostgreSQL *before* it answers `250`; it never talks to
//! Microsoft 365 and never holds a message only in memory after saying yes to it.

mod auth;
mod data;
mod ehlo;
mod envelope;
mod reply;
mod session;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mailbridge_core::{config::EdgeSettings, tls::Identity};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use session::Session;

/// Everything a session needs, shared by all sessions of a listener.
pub struct EdgeContext {
    pub pool: PgPool,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub tls: TlsAcceptor,
    /// How long the edge waits for a client's next command or data before it gives up.
    pub idle_timeout: Duration,
}

/// The configured certificate, or a self-signed one (with a warning) when none is.
pub fn identity_from_settings(settings: &EdgeSettings) -> Result<Identity, EdgeError> {
    match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Identity::from_pem_files(cert, key)?),
        (None, None) => {
            tracing::warn!(
                hostname = %settings.hostname,
                "no MAILBRIDGE_TLS_CERT_FILE/MAILBRIDGE_TLS_KEY_FILE configured: using a self-signed certificate that devices cannot verify"
            );
            Ok(Identity::self_signed(std::slice::from_ref(
                &settings.hostname,
            ))?)
        }
        _ => Err(EdgeError::HalfConfiguredTls),
    }
}

impl std::fmt::Debug for EdgeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeContext")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// The submission listener (STARTTLS), bound and ready to accept.
#[derive(Debug)]
pub struct Edge {
    listener: TcpListener,
    context: Arc<EdgeContext>,
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] mailbridge_core::tls::TlsError),
    #[error("set both MAILBRIDGE_TLS_CERT_FILE and MAILBRIDGE_TLS_KEY_FILE, or neither")]
    HalfConfiguredTls,
}

impl Edge {
    /// Binds the submission listener, serving `identity` for STARTTLS.
    pub async fn bind(
        settings: &EdgeSettings,
        pool: PgPool,
        identity: Identity,
    ) -> Result<Self, EdgeError> {
        mailbridge_core::tls::install_crypto_provider();
        let listener = TcpListener::bind(settings.submission_listen)
            .await
            .map_err(|source| EdgeError::Bind {
                addr: settings.submission_listen,
                source,
            })?;
        let context = Arc::new(EdgeContext {
            pool,
            hostname: settings.hostname.clone(),
            max_message_size: settings.max_message_size,
            max_recipients: 100,
            tls: TlsAcceptor::from(identity.server_config()?),
            idle_timeout: Duration::from_secs(300),
        });
        Ok(Self { listener, context })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Accepts connections until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(addr = %self.local_addr(), "SMTP submission listener ready (STARTTLS)");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let context = self.context.clone();
                    tokio::spawn(serve_connection(stream, peer, context));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, context: Arc<EdgeContext>) {
    let _ = stream.set_nodelay(true);
    let session_id = uuid::Uuid::now_v7();
    let span = tracing::info_span!("smtp", session = %session_id.simple(), %peer);
    session::serve(stream, peer, context).instrument(span).await;
}
