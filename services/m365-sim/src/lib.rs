//! The Microsoft 365 simulator: a separate, faithful stand-in for the Microsoft
//! endpoints mailbridge talks to, built from the documented wire behaviour
//! (m365-facts.md): the Entra token endpoint, the admin-consent pages, the OpenID
//! Connect provider staff sign in with, Graph `sendMail`, and mailboxes whose
//! contents tests and people can read.
//!
//! It serves HTTPS with a certificate from its own small CA, so the relay verifies
//! TLS against it exactly as against Microsoft (through `MAILBRIDGE_EXTRA_CA_FILE`).
//! It never reaches into mailbridge's code or database: it only sees the wire.

pub mod cloud;
mod consent;
mod control;
mod directory;
mod exchange;
mod exchange_limits;
pub mod fault_injection;
mod graph;
mod graph_budget;
mod graph_drafts;
mod graph_json;
mod graph_mail;
mod https;
pub mod mailbox_store;
mod oidc;
pub mod rbac;
pub mod sign_ins;
mod token;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;

pub use consent::{ConsentDecision, LoginPageError};
pub use directory::{
    AdminConsentRecord, CertificateThumbprints, ClientCredentialKind, DeliveredMessage, Directory,
    DirectoryError, SimTenant, SimUser, TokenRequestRecord,
};
pub use exchange_limits::{
    DEFAULT_MAX_SEND_SIZE, LARGEST_MAX_SEND_SIZE, RECIPIENTS_PER_DAY, RECIPIENTS_PER_MESSAGE,
};
pub use graph_budget::GraphLimits;

/// Application permissions (app roles) the simulator knows.
pub const ROLE_MAIL_SEND: &str = "Mail.Send";
pub const ROLE_MAIL_READ_WRITE: &str = "Mail.ReadWrite";
pub const ROLE_MAIL_READ: &str = "Mail.Read";
pub const ROLE_SMTP_SEND_AS_APP: &str = "SMTP.SendAsApp";
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
pub const EXCHANGE_RESOURCE: &str = "https://outlook.office365.com";

/// The resource (API) an app role belongs to: `SMTP.SendAsApp` is Exchange
/// Online's, every other role the simulator knows is Microsoft Graph's.
pub fn resource_of_role(role: &str) -> &'static str {
    if role == ROLE_SMTP_SEND_AS_APP {
        EXCHANGE_RESOURCE
    } else {
        GRAPH_RESOURCE
    }
}

/// A running simulator.
pub struct Simulator {
    pub directory: Arc<Directory>,
    addr: SocketAddr,
    smtp_addr: SocketAddr,
    smtp_task: tokio::task::JoinHandle<()>,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
    /// `https`, or `http` for a demo on loopback (see [`Simulator::start_plain_http`]).
    scheme: &'static str,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts the simulator on `listen` (port 0 picks a free port).
    pub async fn start(listen: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(listen, false).await
    }

    /// Starts the simulator with its login, consent and Graph pages over plain HTTP,
    /// for a demo on this machine: a browser then shows its sign-in and consent
    /// pages without a certificate warning (Microsoft's are HTTPS; a browser treats
    /// loopback as a secure context). Only on a loopback address; its Exchange SMTP
    /// endpoint keeps STARTTLS with the simulator's CA.
    pub async fn start_plain_http(listen: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            listen.ip().is_loopback(),
            "the simulator serves plain HTTP only on a loopback address, not {listen}"
        );
        Self::start_with(listen, true).await
    }

    async fn start_with(listen: SocketAddr, plain_http: bool) -> anyhow::Result<Self> {
        mailbridge_core::tls::install_crypto_provider();
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let names = vec![addr.ip().to_string(), "localhost".to_owned()];
        let authority =
            mailbridge_core::tls::LocalAuthority::generate("mailbridge M365 simulator CA", &names)?;
        let tls = authority.server.server_config()?;
        let scheme = if plain_http { "http" } else { "https" };
        let directory = Arc::new(Directory::with_base_url(&format!("{scheme}://{addr}"))?);
        let app = router(directory.clone());
        let task = if plain_http {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "simulator stopped");
                }
            })
        } else {
            tokio::spawn(https::serve(listener, tls.clone(), app))
        };
        let smtp_listener = TcpListener::bind((addr.ip(), 0)).await?;
        let smtp_addr = smtp_listener.local_addr()?;
        let smtp_task = tokio::spawn(exchange::serve(smtp_listener, tls, directory.clone()));
        tracing::info!(%addr, %smtp_addr, scheme, "Microsoft 365 simulator listening (login and Graph, Exchange SMTP)");
        Ok(Self {
            directory,
            addr,
            smtp_addr,
            smtp_task,
            ca_pem: authority.ca_pem,
            task,
            scheme,
        })
    }

    /// The base URL for both the login and the Graph endpoint.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The simulated Exchange Online SMTP endpoint (`MAILBRIDGE_M365_SMTP`).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// The CA certificate (PEM) clients must trust to reach the simulator.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
        self.smtp_task.abort();
    }
}

fn router(directory: Arc<Directory>) -> Router {
    Router::new()
        .merge(token::router())
        .merge(consent::router())
        .merge(oidc::router())
        .merge(
            graph::router()
                .merge(graph_drafts::router())
                .merge(graph_mail::router())
                .layer(axum::middleware::from_fn_with_state(
                    directory.clone(),
                    graph_budget::enforce,
                )),
        )
        .merge(mailbox_store::control_router())
        .merge(sign_ins::router())
        .merge(control::router())
        .merge(rbac::router())
        .merge(graph_budget::control_router())
        .merge(cloud::control_router())
        .merge(exchange_limits::control_router())
        .with_state(directory)
}
