//! mailbridge-edge: the SMTP server every device talks to.
//!
//! It owns the listeners (submission with STARTTLS, submission over implicit TLS,
//! and relay for devices identified by address), PROXY protocol, the TLS handshake,
//! and the SMTP session state machine (one module per protocol phase). It
//! authenticates devices, applies their policies, and commits each accepted message
//! to the queue in PostgreSQL *before* it answers `250`; it never talks to Microsoft
//! 365 and never holds a message only in memory after saying yes to it.

mod auth;
mod data;
pub mod directory;
mod ehlo;
mod envelope;
pub mod legacy_tls;
pub mod message;
pub mod proxy;
mod reply;
mod session;
pub mod throttle;
pub mod transcript_log;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use mailbridge_core::{
    config::EdgeSettings,
    crypto::MasterKey,
    tls::{Identity, Reload, ServedCertificate, server_config_with},
};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

pub use envelope::bracketed_path;
pub use session::{Flow, Session, TlsInfo};

/// The kinds of listener, each with its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Port 587: STARTTLS, then AUTH.
    Submission,
    /// Port 465: TLS from the first byte, then AUTH.
    Submissions,
    /// Port 25: devices without credentials, identified by their address.
    Relay,
    /// The legacy-TLS listener with STARTTLS (OpenSSL, TLS 1.0 and up, CBC suites):
    /// only for devices allowed legacy TLS.
    LegacySubmission,
    /// The legacy-TLS listener with TLS from the first byte.
    LegacySubmissions,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Submission => "submission",
            Self::Submissions => "submissions",
            Self::Relay => "relay",
            Self::LegacySubmission => "legacy-submission",
            Self::LegacySubmissions => "legacy-submissions",
        }
    }

    /// Whether TLS starts with the first byte (no STARTTLS).
    pub fn implicit_tls(self) -> bool {
        matches!(self, Self::Submissions | Self::LegacySubmissions)
    }

    /// Whether it is one of the legacy-TLS listeners.
    pub fn legacy(self) -> bool {
        matches!(self, Self::LegacySubmission | Self::LegacySubmissions)
    }
}

/// Everything sessions share.
pub struct EdgeContext {
    pub pool: PgPool,
    pub settings: EdgeSettings,
    pub tls: TlsAcceptor,
    /// What `tls` serves, re-read when its files change.
    pub certificate: Arc<ServedCertificate>,
    pub auth: throttle::AuthGuard,
    /// Messages are committed through it, many sessions' together.
    pub queue: mailbridge_core::group_commit::GroupCommit,
    pub seen: auth::SeenDevices,
    /// Device credentials and allow-lists, cached while PostgreSQL reports changes.
    pub directory: directory::DeviceDirectory,
    /// The legacy-TLS listeners' OpenSSL acceptor, rebuilt when `certificate` is.
    pub legacy_tls: legacy_tls::LegacyAcceptor,
    /// Finished sessions' transcripts, on their way to PostgreSQL.
    pub transcripts: transcript_log::TranscriptLog,
}

impl EdgeContext {
    /// What the sessions share, for `settings` on `pool` serving `certificate` (the
    /// group commit starts its committers on the current runtime).
    pub fn new(
        settings: &EdgeSettings,
        pool: PgPool,
        certificate: Arc<ServedCertificate>,
        key: MasterKey,
    ) -> Self {
        Self {
            settings: settings.clone(),
            tls: TlsAcceptor::from(server_config_with(certificate.clone())),
            legacy_tls: legacy_tls::LegacyAcceptor::new(certificate.clone()),
            transcripts: transcript_log::TranscriptLog::new(settings.transcripts_per_key),
            certificate,
            auth: throttle::AuthGuard::new(settings.auth_throttle.clone()),
            queue: mailbridge_core::group_commit::GroupCommit::start(pool.clone(), key),
            seen: auth::SeenDevices::default(),
            directory: directory::DeviceDirectory::default(),
            pool,
        }
    }
}

impl std::fmt::Debug for EdgeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeContext")
            .field("hostname", &self.settings.hostname)
            .finish_non_exhaustive()
    }
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
    #[error("every SMTP listener is switched off")]
    NoListener,
    #[error("the legacy-TLS listener cannot serve the certificate: {0}")]
    LegacyTls(#[from] openssl::error::ErrorStack),
}

/// The configured certificate (re-read when its files change), or a self-signed one
/// (with a warning) when none is.
pub fn certificate_from_settings(
    settings: &EdgeSettings,
) -> Result<Arc<ServedCertificate>, EdgeError> {
    match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Arc::new(ServedCertificate::from_files(cert, key)?)),
        (None, None) => {
            tracing::warn!(
                hostname = %settings.hostname,
                "no MAILBRIDGE_TLS_CERT_FILE/MAILBRIDGE_TLS_KEY_FILE configured: using a self-signed certificate that devices cannot verify"
            );
            Ok(Arc::new(ServedCertificate::fixed(Identity::self_signed(
                std::slice::from_ref(&settings.hostname),
            )?)?))
        }
        _ => Err(EdgeError::HalfConfiguredTls),
    }
}

/// Records the served certificate's expiry in PostgreSQL hourly until `stop`, for
/// the alert before it expires (`mailbridge_core::alerts`).
async fn report_certificate_expiry(
    pool: PgPool,
    certificate: Arc<ServedCertificate>,
    hostname: String,
    stop: CancellationToken,
) {
    loop {
        if let Some(expiry) = certificate.not_after()
            && let Err(e) =
                mailbridge_core::alerts::report_certificate(&pool, "edge", &hostname, expiry).await
        {
            tracing::debug!(error = %e, "could not record the TLS certificate's expiry");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3_600)) => {}
        }
    }
}

/// Checks the certificate files every `every` until `stop`: a renewed pair is served
/// to new handshakes from then on; a broken one is logged and counted, and the
/// previous certificate stays.
async fn watch_certificate(
    certificate: Arc<ServedCertificate>,
    every: Duration,
    stop: CancellationToken,
) {
    let metrics = mailbridge_core::metrics::metrics();
    loop {
        if let Some(expiry) = certificate.not_after() {
            metrics
                .tls_certificate_expiry
                .with_label_values(&["edge"])
                .set(expiry);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match certificate.reload_if_changed() {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Reloaded) => {
                tracing::info!(not_after = ?certificate.not_after(), "TLS certificate renewed: new connections get the new one");
                metrics
                    .tls_certificate_reloads
                    .with_label_values(&["edge", "reloaded"])
                    .inc();
            }
            Err(e) => {
                tracing::error!(error = %e, "the changed TLS certificate files do not load: still serving the previous certificate");
                metrics
                    .tls_certificate_reloads
                    .with_label_values(&["edge", "failed"])
                    .inc();
            }
        }
    }
}

/// The edge's listeners, bound and ready to accept.
#[derive(Debug)]
pub struct Edge {
    listeners: Vec<(ListenerKind, TcpListener)>,
    context: Arc<EdgeContext>,
}

impl Edge {
    /// Binds every configured listener, serving `certificate` for TLS and sealing
    /// queued bodies with `key`.
    pub async fn bind(
        settings: &EdgeSettings,
        pool: PgPool,
        certificate: Arc<ServedCertificate>,
        key: MasterKey,
    ) -> Result<Self, EdgeError> {
        mailbridge_core::tls::install_crypto_provider();
        let wanted = [
            (ListenerKind::Submission, settings.submission_listen),
            (ListenerKind::Submissions, settings.submissions_listen),
            (ListenerKind::Relay, settings.relay_listen),
            (
                ListenerKind::LegacySubmission,
                settings.legacy_submission_listen,
            ),
            (
                ListenerKind::LegacySubmissions,
                settings.legacy_submissions_listen,
            ),
        ];
        let mut listeners = Vec::new();
        for (kind, addr) in wanted {
            if let Some(addr) = addr {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| EdgeError::Bind { addr, source })?;
                listeners.push((kind, listener));
            }
        }
        if listeners.is_empty() {
            return Err(EdgeError::NoListener);
        }
        if !settings.plaintext_auth_networks.0.is_empty() {
            tracing::warn!(
                networks = ?settings.plaintext_auth_networks.0,
                "AUTH WITHOUT TLS is allowed from these networks: passwords cross them in clear text"
            );
        }
        let context = Arc::new(EdgeContext::new(settings, pool, certificate, key));
        if listeners.iter().any(|(kind, _)| kind.legacy()) {
            // Build the acceptor now: a certificate OpenSSL refuses stops the start.
            context.legacy_tls.acceptor()?;
            tracing::warn!(
                "the legacy-TLS listener is on: devices allowed legacy TLS may use TLS 1.0/1.1 and CBC cipher suites there"
            );
        }
        Ok(Self { listeners, context })
    }

    /// Where each listener ended up (port 0 picks a free port).
    pub fn local_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, l)| l.local_addr().ok())
    }

    /// Accepts connections until `shutdown` is cancelled; then stops accepting, lets
    /// sessions finish for the grace period, and closes the rest with `421 4.3.2`.
    pub async fn run(self, shutdown: CancellationToken) {
        let sessions = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut acceptors = Vec::new();
        for (kind, listener) in self.listeners {
            tracing::info!(listener = kind.name(), addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "SMTP listener ready");
            let stop = Shutdown {
                soft: shutdown.clone(),
                hard: hard_stop.clone(),
            };
            let (context, sessions) = (self.context.clone(), sessions.clone());
            acceptors.push(tokio::spawn(accept_loop(
                kind, listener, context, sessions, stop,
            )));
        }
        // Background work until the sessions are done: last-seen writes, the
        // device cache's change notifications, certificate reloads, and dropping
        // remembered passwords past their lifetime.
        let background_context = self.context.clone();
        let background_stop = CancellationToken::new();
        let background = tokio::spawn({
            let stop = background_stop.clone();
            async move {
                let (context, pool) = (&background_context, &background_context.pool);
                tokio::join!(
                    context.seen.flush_until(pool.clone(), stop.clone()),
                    context.directory.follow_changes(pool.clone(), stop.clone()),
                    context.auth.sweep_until(stop.clone()),
                    context.transcripts.write_until(pool.clone(), stop.clone()),
                    report_certificate_expiry(
                        pool.clone(),
                        context.certificate.clone(),
                        context.settings.hostname.clone(),
                        stop.clone(),
                    ),
                    watch_certificate(
                        context.certificate.clone(),
                        context
                            .settings
                            .tls_reload_interval
                            .max(Duration::from_secs(1)),
                        stop,
                    ),
                );
            }
        });
        shutdown.cancelled().await;
        for acceptor in acceptors {
            let _ = acceptor.await;
        }
        sessions.close();
        let grace = self.context.settings.shutdown_grace;
        tracing::info!(sessions = sessions.len(), ?grace, "edge draining");
        if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
            hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
        }
        background_stop.cancel();
        let _ = background.await;
        tracing::info!("edge stopped");
    }
}

/// The two stages of a shutdown, as sessions see them.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop taking new work: idle sessions are closed with 421 between commands.
    pub soft: CancellationToken,
    /// The grace period is over: every session is closed with 421 now.
    pub hard: CancellationToken,
}

async fn accept_loop(
    kind: ListenerKind,
    listener: TcpListener,
    context: Arc<EdgeContext>,
    sessions: TaskTracker,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.soft.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span = tracing::info_span!("smtp", session = %uuid::Uuid::now_v7().simple(), listener = kind.name(), %peer);
                sessions.spawn(
                    serve_connection(kind, stream, peer, context.clone(), shutdown.clone())
                        .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub(crate) fn count_message(kind: ListenerKind, result: &str, code: &str) {
    let metrics = &mailbridge_core::metrics::metrics().edge;
    metrics
        .messages
        .with_label_values(&[kind.name(), result, code])
        .inc();
}

async fn serve_connection(
    kind: ListenerKind,
    mut stream: TcpStream,
    mut peer: SocketAddr,
    context: Arc<EdgeContext>,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let settings = &context.settings;
    if settings.proxy_protocol && settings.trusted_proxies.contains(&peer.ip()) {
        match tokio::time::timeout(Duration::from_secs(10), proxy::read_header(&mut stream)).await {
            Ok(Ok(Some(source))) => {
                tracing::debug!(proxy = %peer, client = %source, "PROXY header");
                peer = source;
            }
            Ok(Ok(None)) => {
                // v2 LOCAL or v1 UNKNOWN: the balancer's own connection (a health
                // check) or a source it cannot name. Served, but as from an unknown
                // source, so the balancer's address never counts as a device's.
                tracing::debug!(proxy = %peer, "PROXY header without an address");
                peer = SocketAddr::new(
                    match peer.ip() {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    },
                    0,
                );
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "dropping connection from trusted proxy: bad PROXY header");
                return;
            }
            Err(_) => {
                tracing::info!("dropping connection from trusted proxy: no PROXY header in time");
                return;
            }
        }
    }
    let metrics = &mailbridge_core::metrics::metrics().edge;
    let listener = kind.name();
    metrics.active_sessions.with_label_values(&[listener]).inc();
    let started = std::time::Instant::now();
    let tls = session::serve(kind, stream, peer, context, shutdown).await;
    metrics.active_sessions.with_label_values(&[listener]).dec();
    metrics
        .session_duration
        .with_label_values(&[listener])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .connections
        .with_label_values(&[listener, tls.as_deref().unwrap_or("none")])
        .inc();
}
