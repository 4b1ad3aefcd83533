//! The end-to-end test harness (after zero-to-production's `spawn_app`): a real PostgreSQL (one throwaway server per test
//! run, or the one `DATABASE_URL` names), a fresh database per test cloned from a
//! migrated template, and a whole mailbridge stack (edge, worker, web and the
//! Microsoft 365 simulator) per test on free loopback ports.

use mailbridge_core::ids::MessageId;
use std::{
    path::PathBuf,
    sync::OnceLock,
    time::{Duration, Instant},
};

use mailbridge::stack::{Stack, StackOptions};
use mailbridge_core::{
    Settings, db,
    devices::{self, IssuedCredential},
    queue,
    tenants::{self, DeliveryMethod, NewTenant, Tenant},
};
use mailbridge_devtools::scratch_postgres::{ScratchOptions, ScratchPostgres};
use mailbridge_m365_sim::{DeliveredMessage, ROLE_MAIL_SEND};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const TEMPLATE: &str = "mailbridge_test_template";

/// The PostgreSQL server of this test run.
enum Server {
    Scratch(ScratchPostgres),
    External(SecretString),
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Server::External(SecretString::from(url)),
        _ => Server::Scratch(
            ScratchPostgres::start(&ScratchOptions::default())
                .expect("starting a throwaway PostgreSQL"),
        ),
    })
}

/// The URL of `database` on this run's server.
pub fn database_url(database: &str) -> SecretString {
    match server() {
        Server::Scratch(pg) => pg.url(database),
        Server::External(url) => {
            let url = url.expose_secret();
            let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(url);
            SecretString::from(format!("{base}/{database}"))
        }
    }
}

fn admin_url() -> SecretString {
    match server() {
        Server::Scratch(pg) => pg.url("postgres"),
        Server::External(url) => url.clone(),
    }
}

/// Creates the migrated template once per test run.
async fn template() {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let mut admin = PgConnection::connect(admin_url().expose_secret())
                .await
                .expect("connecting to PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {TEMPLATE}"
            )))
            .execute(&mut admin)
            .await
            .expect("dropping an old template");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
                .execute(&mut admin)
                .await
                .expect("creating the template database");
            let mut template = PgConnection::connect(database_url(TEMPLATE).expose_secret())
                .await
                .expect("connecting to the template");
            db::MIGRATOR
                .run(&mut template)
                .await
                .expect("migrating the template");
            template.close().await.ok();
            admin.close().await.ok();
        })
        .await;
}

/// A new database with nothing in it (not even the schema); returns its name.
pub async fn empty_database() -> String {
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url().expose_secret())
        .await
        .expect("connecting to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("creating a database");
    admin.close().await.ok();
    name
}

/// A PostgreSQL of the test's own (fsync on, so that it can be stopped and restarted
/// like a real one) with an empty `mailbridge` database.
pub async fn own_postgres() -> ScratchPostgres {
    let postgres = tokio::task::spawn_blocking(|| {
        ScratchPostgres::start(&ScratchOptions {
            fsync: true,
            ..ScratchOptions::default()
        })
    })
    .await
    .unwrap()
    .expect("a PostgreSQL of its own");
    let admin = db::pool(&postgres.url("postgres"), db::PoolOptions::default()).unwrap();
    sqlx::query("CREATE DATABASE mailbridge")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    postgres
}

/// Gives `settings` a fresh master key; returns it base64-encoded, for processes.
pub fn with_master_key(settings: &mut Settings) -> String {
    let encoded = mailbridge_core::crypto::MasterKey::generate_base64();
    settings.master_key =
        Some(mailbridge_core::crypto::MasterKey::from_base64(&encoded).expect("a generated key"));
    encoded
}

/// A master key for tests that queue without a stack (no worker opens their bodies).
pub fn any_master_key() -> mailbridge_core::crypto::MasterKey {
    use mailbridge_core::crypto::MasterKey;
    MasterKey::from_base64(&MasterKey::generate_base64()).expect("a generated key")
}

/// A database of its own migrated up to `version` (inclusive), to test a later
/// migration against rows written before it.
pub async fn database_migrated_to(version: i64) -> PgPool {
    let database = empty_database().await;
    let pool = mailbridge_core::db::pool(
        &database_url(&database),
        mailbridge_core::db::PoolOptions::default(),
    )
    .expect("a pool");
    mailbridge_core::db::MIGRATOR
        .run_to(version, &pool)
        .await
        .expect("the schema before");
    pool
}

/// A fresh, migrated database of its own for one test.
pub async fn fresh_database() -> PgPool {
    fresh_named_database().await.1
}

/// A fresh, migrated database of its own, with its name.
pub async fn fresh_named_database() -> (String, PgPool) {
    template().await;
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url().expose_secret())
        .await
        .expect("connecting to PostgreSQL");
    let mut tries = 0;
    loop {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
        )))
        .execute(&mut admin)
        .await;
        match created {
            Ok(_) => break,
            // Another test cloning the template at the same instant.
            Err(e) if tries < 20 && e.to_string().contains("being accessed by other users") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("creating {name}: {e}"),
        }
    }
    admin.close().await.ok();
    let pool = db::pool(&database_url(&name), db::PoolOptions::default()).expect("pool");
    (name, pool)
}

/// A mailbridge stack for one test.
pub struct TestApp {
    pub stack: Stack,
    pub database: String,
    /// `MAILBRIDGE_MASTER_KEY` for processes started against this stack.
    pub master_key_base64: String,
}

/// A customer set up in mailbridge and in the simulated Microsoft 365.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub tenant: Tenant,
}

impl TestTenant {
    /// The customer's Microsoft 365 tenant, as the simulator knows it.
    pub fn entra(&self) -> Uuid {
        self.tenant.entra_tenant_id.expect("connected").as_uuid()
    }
}

impl TestApp {
    /// Everything running, the worker included.
    pub async fn spawn() -> Self {
        Self::spawn_with(StackOptions::ephemeral()).await
    }

    /// Everything but the worker (tests start it, or not, themselves).
    pub async fn spawn_without_worker() -> Self {
        Self::spawn_with(StackOptions {
            start_worker: false,
            ..StackOptions::ephemeral()
        })
        .await
    }

    pub async fn spawn_with(options: StackOptions) -> Self {
        Self::spawn_configured(options, |_| {}).await
    }

    /// A stack that allows AUTH in clear from loopback (for probes that log in without
    /// TLS), with further settings from `configure`.
    pub async fn spawn_with_clear_auth(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_configured(StackOptions::ephemeral(), |s| {
            s.edge.plaintext_auth_networks = "127.0.0.0/8".parse().expect("networks");
            configure(s);
        })
        .await
    }

    /// A stack whose settings `configure` adjusts (limits, policies, timeouts).
    pub async fn spawn_configured(
        options: StackOptions,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        let (database, pool) = fresh_named_database().await;
        let mut settings = Settings::from_lookup(|_| None).expect("default settings");
        settings.edge.hostname = "relay.mailbridge.test".to_owned();
        settings.edge.auth_throttle.failure_delay = Duration::from_millis(20);
        settings.worker.sweep_seconds = 1;
        // The sign-in-log reader asks for tokens of its own, which would take a
        // test's one-time fault at the token endpoint: on only where a test wants it.
        settings.worker.sign_in_log_interval_seconds = 0;
        // The bounce watcher reads sender mailboxes with tokens of its own: on only
        // where a test wants it (bounces.rs).
        settings.worker.bounce_poll_seconds = 0;
        let master_key_base64 = with_master_key(&mut settings);
        configure(&mut settings);
        let stack = Stack::start(pool, settings, options)
            .await
            .expect("starting the stack");
        Self {
            stack,
            database,
            master_key_base64,
        }
    }

    /// A `mailbridge worker` process (the real binary) against this stack's database
    /// and simulator, with short leases so that a killed worker's messages return soon.
    pub fn spawn_worker_process(&self, lease_seconds: u64) -> std::process::Child {
        self.worker_command(&database_url(&self.database), lease_seconds)
            .spawn()
            .expect("starting mailbridge worker")
    }

    /// The command line of a `mailbridge worker` process against `database` and this
    /// stack's simulator (output discarded; callers may redirect it).
    pub fn worker_command(
        &self,
        database: &SecretString,
        lease_seconds: u64,
    ) -> std::process::Command {
        let settings = &self.stack.settings;
        let mut command = std::process::Command::new(mailbridge_binary());
        command
            .arg("worker")
            .env("DATABASE_URL", database.expose_secret())
            .env("MAILBRIDGE_MASTER_KEY", &self.master_key_base64)
            .env("MAILBRIDGE_M365_LOGIN_URL", &settings.m365.login_url)
            .env("MAILBRIDGE_M365_GRAPH_URL", &settings.m365.graph_url)
            .env("MAILBRIDGE_M365_SMTP", &settings.m365.smtp_endpoint)
            .env(
                "MAILBRIDGE_EXTRA_CA_FILE",
                settings.extra_ca_file.as_ref().expect("the simulator's CA"),
            )
            .env(
                "MAILBRIDGE_ENTRA_CLIENT_ID",
                settings.m365.client_id.as_deref().expect("MSP app"),
            )
            .env(
                "MAILBRIDGE_ENTRA_CLIENT_SECRET",
                settings
                    .m365
                    .client_secret
                    .as_ref()
                    .expect("MSP app")
                    .expose_secret(),
            )
            .env("MAILBRIDGE_METRICS_LISTEN", "off")
            .env("MAILBRIDGE_WORKER_LEASE_SECONDS", lease_seconds.to_string())
            .env("MAILBRIDGE_WORKER_SWEEP_SECONDS", "1")
            .env("MAILBRIDGE_SIGN_IN_LOG_INTERVAL_SECONDS", "0")
            .env("MAILBRIDGE_BOUNCE_POLL_SECONDS", "0")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }

    pub fn pool(&self) -> &PgPool {
        &self.stack.pool
    }

    /// The key the stack seals queued bodies and secrets with.
    pub fn master_key(&self) -> &mailbridge_core::crypto::MasterKey {
        self.stack
            .settings
            .master_key
            .as_ref()
            .expect("the stack always has a master key")
    }

    /// A customer whose admin consented to the MSP app with `Mail.Send`.
    /// An owner of the control plane who can sign in through the simulated Entra ID
    /// (the browser tests' first step).
    pub async fn add_owner(&self, email: &str, name: &str) {
        self.stack.add_staff_user(email, name);
        mailbridge_web::add_staff(self.pool(), email, mailbridge_web::Role::Owner)
            .await
            .expect("adding the owner");
    }

    /// A customer delivering by `method`, consented for both paths (Graph's
    /// `Mail.Send` and SMTP's send-as-app) and let into its sender mailbox.
    pub async fn add_tenant_delivering(&self, name: &str, method: DeliveryMethod) -> TestTenant {
        let tenant = self.add_tenant(name).await;
        sqlx::query("UPDATE tenants SET delivery_method = $2 WHERE id = $1")
            .bind(tenant.tenant.id)
            .bind(method)
            .execute(self.pool())
            .await
            .unwrap();
        let directory = &self.stack.simulator.directory;
        let entra = tenant.tenant.entra_tenant_id.expect("connected");
        directory.consent(
            entra.as_uuid(),
            &self.stack.client_id,
            &[ROLE_MAIL_SEND, mailbridge_m365_sim::ROLE_SMTP_SEND_AS_APP],
        );
        directory.grant_exchange_access(
            entra.as_uuid(),
            &self.stack.client_id,
            &tenant.tenant.sender_mailbox,
        );
        tenant
    }

    pub async fn add_tenant(&self, name: &str) -> TestTenant {
        let tenant = self.add_tenant_without_consent(name).await;
        let directory = &self.stack.simulator.directory;
        directory.consent(tenant.entra(), &self.stack.client_id, &[ROLE_MAIL_SEND]);
        tenant
    }

    /// A customer whose Microsoft 365 exists, but whose admin never consented.
    pub async fn add_tenant_without_consent(&self, name: &str) -> TestTenant {
        let slug: String = name
            .to_ascii_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let mailbox = format!("scanner@{slug}.example");
        let tenant = tenants::create(
            self.pool(),
            self.stack.settings.master_key.as_ref(),
            NewTenant {
                name: name.to_owned(),
                entra_tenant_id: Some(Uuid::new_v4().into()),
                sender_mailbox: mailbox.clone(),
                delivery_method: DeliveryMethod::Graph,
                own_app: None,
            },
        )
        .await
        .expect("creating a tenant");
        let directory = &self.stack.simulator.directory;
        directory.add_tenant(
            tenant.entra_tenant_id.expect("connected").as_uuid(),
            &[&mailbox],
        );
        TestTenant { tenant }
    }

    pub async fn add_device(&self, tenant: &TestTenant, name: &str) -> IssuedCredential {
        devices::create(self.pool(), tenant.tenant.id, name)
            .await
            .expect("creating a device")
    }

    /// Waits until the simulator has `count` messages for `recipient`.
    pub async fn wait_for_inbox(&self, recipient: &str, count: usize) -> Vec<DeliveredMessage> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let inbox = self.stack.simulator.directory.inbox(recipient);
            if inbox.len() >= count {
                return inbox;
            }
            assert!(
                Instant::now() < deadline,
                "{recipient} got {} of {count} messages in 30 s",
                inbox.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `check` holds for the message's state.
    pub async fn wait_for_message(
        &self,
        id: MessageId,
        check: impl Fn(&queue::MessageStatus) -> bool,
    ) -> queue::MessageStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = queue::status(self.pool(), id)
                .await
                .expect("reading message status")
            {
                if check(&status) {
                    return status;
                }
                assert!(Instant::now() < deadline, "message {id} stuck: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn message_ids(&self) -> Vec<MessageId> {
        sqlx::query_scalar("SELECT id FROM messages ORDER BY received_at")
            .fetch_all(self.pool())
            .await
            .expect("listing messages")
    }

    pub fn edge_ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.stack.edge_ca_file).expect("reading the edge CA")
    }

    /// A lettre transport to the edge: STARTTLS required, the edge's CA trusted.
    pub fn lettre(
        &self,
        username: &str,
        password: &str,
    ) -> lettre::AsyncSmtpTransport<lettre::Tokio1Executor> {
        lettre_to(
            self.stack.smtp_addr,
            &self.edge_ca_pem(),
            username,
            password,
            Duration::from_secs(30),
        )
        .build()
    }
}

/// A lettre transport builder for an edge at `addr` (submission with STARTTLS
/// required, `ca_pem` trusted, AUTH PLAIN), each command bounded by `timeout`.
pub fn lettre_to(
    addr: std::net::SocketAddr,
    ca_pem: &[u8],
    username: &str,
    password: &str,
    timeout: Duration,
) -> lettre::transport::smtp::AsyncSmtpTransportBuilder {
    use lettre::transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{Certificate, Tls, TlsParameters},
    };
    let tls = TlsParameters::builder("localhost".to_owned())
        .add_root_certificate(Certificate::from_pem(ca_pem).expect("CA"))
        .build_rustls()
        .expect("TLS parameters");
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(username.to_owned(), password.to_owned()))
        .authentication(vec![Mechanism::Plain])
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
            "printer.praxis.test".into(),
        ))
        .timeout(Some(timeout))
}

/// The `mailbridge` binary, built by cargo for this test.
pub fn mailbridge_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mailbridge"))
}

/// A message as a device would send it: CRLF line ends, a From the tenant may use.
pub fn sample_message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: Scanner <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@printer.praxis.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBefund für Patient 4711 liegt bei.\r\nZeile zwei.\r\n.Punkt am Zeilenanfang\r\n",
        Uuid::new_v4().simple()
    )
}

/// lettre ends DATA with `CRLF . CRLF` after the message as given, so a message that
/// already ends in CRLF would gain an empty line: hand it over without its last CRLF.
pub fn without_final_crlf(message: &str) -> &[u8] {
    message.strip_suffix("\r\n").unwrap_or(message).as_bytes()
}

/// A bare SMTP client for asserting on the protocol itself, reply by reply.
pub struct SmtpProbe {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl SmtpProbe {
    /// Connects and reads the greeting.
    pub async fn connect(addr: std::net::SocketAddr) -> (Self, String) {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connecting to the edge");
        Self::greeted(stream).await
    }

    /// Connects from the local address `from` (a device known by its address) and
    /// reads the greeting.
    pub async fn connect_from(
        addr: std::net::SocketAddr,
        from: std::net::IpAddr,
    ) -> (Self, String) {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("a socket");
        socket
            .bind(std::net::SocketAddr::new(from, 0))
            .expect("binding the source address");
        let stream = socket.connect(addr).await.expect("connecting to the edge");
        Self::greeted(stream).await
    }

    async fn greeted(stream: tokio::net::TcpStream) -> (Self, String) {
        let mut probe = Self {
            reader: tokio::io::BufReader::new(stream),
        };
        let greeting = probe.reply().await;
        (probe, greeting)
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line))
                .await
                .expect("reply within 30 s")
                .expect("reading a reply");
            assert!(n > 0, "connection closed; got so far: {reply:?}");
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    /// Sends raw bytes (a command line must include its CRLF).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.reader
            .get_mut()
            .write_all(bytes)
            .await
            .expect("writing to the edge");
    }

    /// Connects with a PROXY protocol header sent first.
    pub async fn connect_via_proxy(addr: std::net::SocketAddr, header: &[u8]) -> (Self, String) {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connecting to the edge");
        stream
            .write_all(header)
            .await
            .expect("writing the PROXY header");
        Self::greeted(stream).await
    }

    /// Reads `n` replies (after a pipelined group of commands).
    pub async fn replies(&mut self, n: usize) -> Vec<String> {
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(self.reply().await);
        }
        replies
    }

    /// Whether the server closed the connection (EOF before any more bytes).
    pub async fn closed(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.reader.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// AUTH PLAIN with the initial response.
    pub async fn login(&mut self, username: &str, password: &str) -> String {
        self.login_as("", username, password).await
    }

    /// AUTH PLAIN asking to act as `authzid` (empty: as oneself).
    pub async fn login_as(&mut self, authzid: &str, username: &str, password: &str) -> String {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{authzid}\0{username}\0{password}"));
        self.command(&format!("AUTH PLAIN {token}")).await
    }

    /// Connects from `from`, says EHLO and logs in with AUTH PLAIN (in clear: the
    /// stack must allow it from there); the reply to the login.
    pub async fn login_from(
        addr: std::net::SocketAddr,
        from: &str,
        username: &str,
        password: &str,
    ) -> String {
        let (mut smtp, _) = Self::connect_from(addr, from.parse().expect("an address")).await;
        smtp.command("EHLO device.example").await;
        smtp.login(username, password).await
    }

    /// Logs in from `from` until it succeeds (the lock state an edge read may be
    /// trusted for a moment after an unlock); every refusal before must be `454`.
    pub async fn login_succeeds_within(
        addr: std::net::SocketAddr,
        from: &str,
        username: &str,
        password: &str,
        within: Duration,
    ) {
        Self::login_turns(addr, (from, username, password), "454", "235", within).await;
    }

    /// Logs in from `from` until the login is refused with `535` (an edge empties
    /// its cache of credentials when PostgreSQL's change notification arrives,
    /// moments after the change committed); every answer before must be `235`.
    pub async fn login_refused_within(
        addr: std::net::SocketAddr,
        from: &str,
        username: &str,
        password: &str,
        within: Duration,
    ) {
        Self::login_turns(addr, (from, username, password), "235", "535", within).await;
    }

    /// Logs in as `(from, username, password)` until the reply starts with `to`,
    /// within `within`; every reply before must start with `from_code`.
    async fn login_turns(
        addr: std::net::SocketAddr,
        (from, username, password): (&str, &str, &str),
        from_code: &str,
        to: &str,
        within: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let reply = Self::login_from(addr, from, username, password).await;
            if reply.starts_with(to) {
                return;
            }
            assert!(reply.starts_with(from_code), "{reply}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {from_code}: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a command and returns its reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts that its reply starts with `code` (a reply code,
    /// or a code and its enhanced status); the reply.
    pub async fn expect(&mut self, line: &str, code: &str) -> String {
        let reply = self.command(line).await;
        assert!(
            reply.starts_with(code),
            "{line:?}: expected {code}, got {reply:?}"
        );
        reply
    }

    /// Reads the next reply (after DATA's content, or a pipelined command) and
    /// asserts that it starts with `code`; the reply.
    pub async fn expect_reply(&mut self, code: &str) -> String {
        let reply = self.reply().await;
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}");
        reply
    }
}

/// A delivered message as a person reads it: the decoded subject, then every text
/// part decoded (quoted-printable, base64, RFC 2047), for checks on what a mail
/// says rather than on how its MIME happens to be encoded.
pub fn readable(mime: &str) -> String {
    let Some(message) = mail_parser::MessageParser::default().parse(mime.as_bytes()) else {
        return String::new();
    };
    let mut text = message.subject().unwrap_or_default().to_owned();
    for index in 0..message.text_body_count() {
        if let Some(body) = message.body_text(index) {
            text.push('\n');
            text.push_str(&body);
        }
    }
    text
}

/// How the database fails to queue a report, for [`refuse_reports`].
#[derive(Debug, Clone, Copy)]
pub enum ReportRefusal {
    /// As a constraint refuses a row (SQLSTATE class 23): the same every time.
    Constraint,
    /// As a database failing for a moment would (`raise_exception`).
    Failure,
}

/// Makes the database refuse every report (a message of kind `notification`) the
/// way `how` says, until [`allow_reports`].
pub async fn refuse_reports(pool: &sqlx::PgPool, how: ReportRefusal) {
    let code = match how {
        ReportRefusal::Constraint => "check_violation",
        ReportRefusal::Failure => "raise_exception",
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_reports() RETURNS trigger LANGUAGE plpgsql
           AS $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = 'reports refused'; END $$;
         CREATE TRIGGER refuse_reports BEFORE INSERT ON messages
           FOR EACH ROW WHEN (NEW.kind = 'notification') EXECUTE FUNCTION refuse_reports();"
    )))
    .execute(pool)
    .await
    .unwrap();
}

/// How many reports (messages of kind `notification`) the database holds.
pub async fn reports_written(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE kind = 'notification'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Ends [`refuse_reports`].
pub async fn allow_reports(pool: &sqlx::PgPool) {
    sqlx::raw_sql("DROP TRIGGER refuse_reports ON messages; DROP FUNCTION refuse_reports();")
        .execute(pool)
        .await
        .unwrap();
}

/// Waits for `check` to hold, at most `within` (polled every 100 ms); fails the
/// test naming `what` otherwise.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
