//! A complete mailbridge in one process, wired to the Microsoft 365 simulator: the
//! simulator's CA is trusted through the extra-CA setting, the MSP app (customers
//! consent to it; only the worker holds its secret) and a separate app for staff
//! sign-in are registered with it, and the edge serves a certificate from a local CA whose PEM a client can
//! trust. Every part is the real one; only Microsoft is simulated.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use mailbridge_core::{
    Settings,
    crypto::{self, MasterKey},
    ops::Readiness,
    tls::{LocalAuthority, ServedCertificate},
};
use mailbridge_edge::{Edge, ListenerKind};
use mailbridge_m365_sim::Simulator;
use mailbridge_worker::Worker;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Where the parts of a stack listen; port 0 picks a free port.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Submission with STARTTLS.
    pub smtp_listen: SocketAddr,
    /// Submission over implicit TLS.
    pub smtps_listen: Option<SocketAddr>,
    /// Relay for devices identified by address.
    pub relay_listen: Option<SocketAddr>,
    pub web_listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz` of the edge and worker.
    pub ops_listen: SocketAddr,
    pub sim_listen: SocketAddr,
    /// The simulator's login and Graph over plain HTTP (loopback only): the demo's
    /// browser shows its sign-in pages without a certificate warning.
    pub sim_plain_http: bool,
    /// Start the delivery worker right away (tests may start it later).
    pub start_worker: bool,
}

impl StackOptions {
    /// Free loopback ports for everything: what tests use.
    pub fn ephemeral() -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        Self {
            smtp_listen: any,
            smtps_listen: Some(any),
            relay_listen: Some(any),
            web_listen: any,
            ops_listen: any,
            sim_listen: any,
            sim_plain_http: false,
            start_worker: true,
        }
    }
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    pub pool: PgPool,
    pub settings: Settings,
    pub simulator: Simulator,
    pub smtp_addr: SocketAddr,
    pub smtps_addr: Option<SocketAddr>,
    pub relay_addr: Option<SocketAddr>,
    pub web_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    /// PEM of the CA that signed the edge's certificate (trust it to verify the edge).
    pub edge_ca_file: PathBuf,
    /// The MSP app as registered with the simulator: customers consent to it.
    pub client_id: String,
    /// The app staff sign in with (OpenID Connect), without application permissions.
    pub sign_in_client_id: String,
    /// The MSP's own Entra tenant in the simulator: its users may sign in.
    pub msp_tenant: uuid::Uuid,
    files: tempfile::TempDir,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    worker_task: Option<JoinHandle<()>>,
}

/// The control plane's settings: the MSP app's client id (public), never its secret
/// or certificate, which are the worker's.
pub fn web_settings(settings: &Settings) -> Settings {
    let mut web = settings.clone();
    web.m365.client_secret = None;
    web.m365.client_certificate_file = None;
    web.m365.client_key_file = None;
    web
}

impl Stack {
    /// Starts the simulator, edge, web and (optionally) worker against `pool`, which
    /// must be migrated. `settings` gives everything not about Microsoft's endpoints.
    pub async fn start(
        pool: PgPool,
        mut settings: Settings,
        options: StackOptions,
    ) -> anyhow::Result<Self> {
        mailbridge_core::tls::install_crypto_provider();
        let files = tempfile::Builder::new()
            .prefix("mailbridge-stack-")
            .tempdir()?;
        let simulator = if options.sim_plain_http {
            Simulator::start_plain_http(options.sim_listen).await?
        } else {
            Simulator::start(options.sim_listen).await?
        };
        let sim_ca = files.path().join("m365-simulator-ca.pem");
        std::fs::write(&sim_ca, simulator.ca_pem())?;

        let web_listener = TcpListener::bind(options.web_listen).await?;
        let web_addr = web_listener.local_addr()?;

        // The MSP's multi-tenant app: customers consent to it, the worker sends with it.
        let client_id = uuid::Uuid::new_v4().to_string();
        let client_secret = crypto::generate_password();
        let directory = &simulator.directory;
        // The simulator answers as the cloud mailbridge is configured for.
        directory.set_cloud(settings.m365.cloud);
        directory.register_app(&client_id, &client_secret);
        directory.set_app_display_name(&client_id, "mailbridge");
        directory.set_requested_permissions(
            &client_id,
            &[
                mailbridge_m365_sim::ROLE_MAIL_SEND,
                mailbridge_m365_sim::ROLE_SMTP_SEND_AS_APP,
            ],
        );
        settings.web.public_url = format!("http://{web_addr}");
        let sign_in_callback = format!("{}/sign-in/callback", settings.web.public_url);
        let consent_callback = format!("{}/consent/callback", settings.web.public_url);
        directory.set_redirect_uris(&client_id, &[&consent_callback]);
        // Staff sign in with an app of its own, which may send nothing: the web holds
        // its secret, never the MSP app's.
        let sign_in_client_id = uuid::Uuid::new_v4().to_string();
        let sign_in_secret = crypto::generate_password();
        directory.register_sign_in_app(&sign_in_client_id, &sign_in_secret, &[&sign_in_callback]);
        directory.set_app_display_name(&sign_in_client_id, "mailbridge sign-in");
        let msp_tenant = uuid::Uuid::new_v4();
        directory.set_tenant_name(msp_tenant, "MSP (simulated)");
        // E-mail domains the caller set stay (with Entra, in addition to the tenant).
        let allowed_domains = settings
            .web
            .oidc
            .as_ref()
            .map(|o| o.allowed_domains.clone())
            .unwrap_or_default();
        settings.web.oidc = Some(mailbridge_core::config::OidcSettings {
            issuer: format!("{}/organizations/v2.0", simulator.base_url()),
            client_id: sign_in_client_id.clone(),
            client_secret: SecretString::from(sign_in_secret),
            allowed_tenants: vec![msp_tenant.to_string()],
            allowed_domains,
        });
        settings.m365.login_url = simulator.base_url();
        settings.m365.graph_url = simulator.base_url();
        settings.m365.smtp_endpoint = simulator.smtp_addr().to_string();
        settings.m365.client_id = Some(client_id.clone());
        settings.m365.client_secret = Some(SecretString::from(client_secret));
        settings.extra_ca_file = Some(sim_ca);
        if settings.master_key.is_none() {
            settings.master_key = Some(MasterKey::from_base64(&MasterKey::generate_base64())?);
        }

        let edge_names = vec![
            "localhost".to_owned(),
            options.smtp_listen.ip().to_string(),
            settings.edge.hostname.clone(),
        ];
        let edge_authority = LocalAuthority::generate("mailbridge development CA", &edge_names)?;
        let edge_ca_file = files.path().join("edge-ca.pem");
        std::fs::write(&edge_ca_file, &edge_authority.ca_pem)?;
        settings.edge.submission_listen = Some(options.smtp_listen);
        settings.edge.submissions_listen = options.smtps_listen;
        settings.edge.relay_listen = options.relay_listen;
        let certificate = Arc::new(ServedCertificate::fixed(edge_authority.server)?);
        let edge = Edge::bind(
            &settings.edge,
            pool.clone(),
            certificate,
            settings.require_master_key()?.clone(),
        )
        .await?;
        let smtp_addr = edge
            .local_addr(ListenerKind::Submission)
            .expect("submission listener bound");
        let smtps_addr = edge.local_addr(ListenerKind::Submissions);
        let relay_addr = edge.local_addr(ListenerKind::Relay);
        // The ports really bound (setup cards show them).
        settings.edge.submission_listen = Some(smtp_addr);
        settings.edge.submissions_listen = smtps_addr;
        settings.edge.relay_listen = relay_addr;
        settings.edge.legacy_submission_listen = edge.local_addr(ListenerKind::LegacySubmission);
        settings.edge.legacy_submissions_listen = edge.local_addr(ListenerKind::LegacySubmissions);

        let ops_listener = TcpListener::bind(options.ops_listen).await?;
        let ops_addr = ops_listener.local_addr()?;
        let readiness = Readiness::new(pool.clone());
        readiness.set_listening(true);

        let shutdown = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(edge.run(shutdown.clone()))];
        let ops_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let stopped = async move { ops_shutdown.cancelled().await };
            if let Err(e) = mailbridge_core::ops::serve(ops_listener, readiness, stopped).await {
                tracing::error!(error = %e, "operations endpoints stopped");
            }
        }));
        let (web_pool, web_shutdown, web_settings) =
            (pool.clone(), shutdown.clone(), web_settings(&settings));
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                mailbridge_web::serve(web_listener, web_pool, web_settings, web_shutdown).await
            {
                tracing::error!(error = %e, "control plane stopped");
            }
        }));
        let mut stack = Self {
            pool,
            settings,
            simulator,
            smtp_addr,
            smtps_addr,
            relay_addr,
            web_addr,
            ops_addr,
            edge_ca_file,
            client_id,
            sign_in_client_id,
            msp_tenant,
            files,
            shutdown,
            tasks,
            worker_task: None,
        };
        if options.start_worker {
            stack.start_worker()?;
        }
        Ok(stack)
    }

    /// Starts the delivery worker (once).
    pub fn start_worker(&mut self) -> anyhow::Result<()> {
        if self.worker_task.is_none() {
            let worker = Arc::new(Worker::new(self.pool.clone(), self.settings.clone())?);
            self.worker_task = Some(tokio::spawn(worker.run(self.shutdown.clone())));
        }
        Ok(())
    }

    /// Adds a member of the MSP's staff to the simulated MSP tenant: they can sign
    /// in to the control plane.
    pub fn add_staff_user(&self, email: &str, name: &str) {
        self.simulator
            .directory
            .add_user(self.msp_tenant, email, name);
    }

    /// Where the stack keeps its files (CA certificates).
    pub fn files_dir(&self) -> &std::path::Path {
        self.files.path()
    }

    /// Stops every part and waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..).chain(self.worker_task.take()) {
            let _ = task.await;
        }
    }
}
