//! mailbridge as it runs in production, on loopback: a throwaway PostgreSQL with fsync
//! on, the real `mailbridge edge`, `worker` and `web` processes (the binaries built
//! next to this one), and the Microsoft 365 simulator in this process as the
//! upstream, with fifty customer practices, each with its mailbox and a device.
//!
//! Over 500 lines: it is one type, `BenchStack`: starting it (about 180 lines —
//! database, simulator, fifty practices, three processes) and the controls and queries
//! the scenarios measure with, which use its pool and its process handles.

use mailbridge_core::ids::DeviceId;
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use mailbridge_core::{
    crypto::{self, MasterKey},
    db,
    devices::{self, DeviceListener, PolicyChange},
    tenants::{self, DeliveryMethod, NewTenant},
    tls::LocalAuthority,
};
use mailbridge_devtools::scratch_postgres::{ScratchOptions, ScratchPostgres};
use mailbridge_m365_sim::{ROLE_MAIL_READ_WRITE, ROLE_MAIL_SEND, Simulator};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    load::{Load, Sender, message},
    reference::{free_port, wait_listening},
};

const PRACTICES: usize = 50;

struct Practice {
    tenant: Uuid,
    mailbox: String,
    recipient: String,
    device: DeviceId,
    username: String,
    password: String,
}

/// What scenario 6 searches for.
pub struct LogProbe {
    pub total: i64,
    pub tenant: Uuid,
    pub device: DeviceId,
    pub sender: String,
    pub recipient: String,
    pub day_from: String,
    pub day_until: String,
    pub deep_cursor: String,
}

pub struct BenchStack {
    pool: PgPool,
    postgres: ScratchPostgres,
    _simulator: Simulator,
    _files: tempfile::TempDir,
    edge: Child,
    worker: Child,
    web: Child,
    web_addr: SocketAddr,
    pub relay_addr: SocketAddr,
    pub submission_addr: SocketAddr,
    pub relay_sender: String,
    pub relay_recipient: String,
    practices: Vec<Practice>,
    tls: Arc<rustls::ClientConfig>,
    api_token: String,
    http: reqwest::Client,
}

/// The `mailbridge` binary built next to this one.
fn mailbridge_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("mailbridge");
    if !path.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --release --workspace)",
            path.display()
        );
    }
    Ok(path)
}

impl BenchStack {
    /// Starts everything; with `statement_statistics`, PostgreSQL counts what each
    /// statement costs ([`Self::top_statements`]).
    pub async fn start(
        max_message_size: usize,
        statement_statistics: bool,
    ) -> anyhow::Result<Self> {
        let binary = mailbridge_binary()?;
        let postgres = tokio::task::spawn_blocking(move || {
            ScratchPostgres::start(&ScratchOptions {
                fsync: true,
                max_connections: 300,
                statement_statistics,
            })
        })
        .await??;
        let admin = db::pool(&postgres.url("postgres"), db::PoolOptions::default())?;
        sqlx::query("CREATE DATABASE mailbridge")
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = postgres.url("mailbridge");
        let pool = db::pool(&url, db::PoolOptions::default())?;
        db::migrate(&pool).await?;
        if statement_statistics {
            sqlx::query("CREATE EXTENSION pg_stat_statements")
                .execute(&pool)
                .await?;
        }

        let files = tempfile::Builder::new()
            .prefix("mailbridge-bench-")
            .tempdir()?;
        let simulator = Simulator::start("127.0.0.1:0".parse()?).await?;
        let sim_ca = files.path().join("sim-ca.pem");
        std::fs::write(&sim_ca, simulator.ca_pem())?;
        let client_id = Uuid::new_v4().to_string();
        let client_secret = crypto::generate_password();
        let directory = &simulator.directory;
        directory.register_app(&client_id, &client_secret);
        directory.set_requested_permissions(&client_id, &[ROLE_MAIL_SEND, ROLE_MAIL_READ_WRITE]);

        let master_key = MasterKey::generate_base64();
        let key = MasterKey::from_base64(&master_key)?;
        let mut practices = Vec::new();
        for n in 0..PRACTICES {
            let entra = Uuid::new_v4();
            let mailbox = format!("scanner@praxis{n}.example");
            let recipient = format!("empfang@praxis{n}.example");
            let tenant = tenants::create(
                &pool,
                Some(&key),
                NewTenant {
                    name: format!("Praxis {n}"),
                    entra_tenant_id: Some(entra.into()),
                    sender_mailbox: mailbox.clone(),
                    delivery_method: DeliveryMethod::Graph,
                    own_app: None,
                },
            )
            .await?;
            directory.add_tenant(entra, &[&mailbox, &recipient]);
            directory.consent(entra, &client_id, &[ROLE_MAIL_SEND, ROLE_MAIL_READ_WRITE]);
            let device = devices::create(&pool, tenant.id, "Scanner").await?;
            practices.push(Practice {
                tenant: tenant.id.as_uuid(),
                mailbox,
                recipient,
                device: device.device.id,
                username: device.device.username,
                password: device.password,
            });
        }
        // The port-25 device: known by its address.
        let relay_device =
            devices::create(&pool, practices[0].tenant.into(), "Drucker Port 25").await?;
        devices::change_policy(
            &pool,
            relay_device.device.id,
            PolicyChange {
                allowed_networks: Some(vec!["127.0.0.1/32".parse()?]),
                listener: Some(DeviceListener::Relay),
                ..PolicyChange::default()
            },
        )
        .await?;

        let authority = LocalAuthority::generate("mailbridge bench CA", &["127.0.0.1".to_owned()])?;
        let (cert, key_file) = (
            files.path().join("edge.pem"),
            files.path().join("edge-key.pem"),
        );
        authority.server.write_pem_files(&cert, &key_file)?;
        let ca = files.path().join("edge-ca.pem");
        std::fs::write(&ca, &authority.ca_pem)?;
        let tls = mailbridge_core::tls::client_config(Some(&ca))?;

        let relay_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let submission_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let web_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let common = |command: &mut Command| {
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("DATABASE_URL", url.expose_secret())
                .env("MAILBRIDGE_MASTER_KEY", &master_key)
                .env("MAILBRIDGE_HOSTNAME", "bench.mailbridge.test")
                .env("MAILBRIDGE_METRICS_LISTEN", "off")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
        };
        let mut edge = Command::new(&binary);
        common(&mut edge);
        edge.arg("edge")
            .env("MAILBRIDGE_SUBMISSION_LISTEN", submission_addr.to_string())
            .env("MAILBRIDGE_SUBMISSIONS_LISTEN", "off")
            .env("MAILBRIDGE_RELAY_LISTEN", relay_addr.to_string())
            .env("MAILBRIDGE_TLS_CERT_FILE", &cert)
            .env("MAILBRIDGE_TLS_KEY_FILE", &key_file)
            .env("MAILBRIDGE_MAX_MESSAGE_SIZE", max_message_size.to_string());
        let edge = edge.spawn().context("starting mailbridge edge")?;
        let mut worker = Command::new(&binary);
        common(&mut worker);
        worker
            .arg("worker")
            .env("MAILBRIDGE_M365_LOGIN_URL", simulator.base_url())
            .env("MAILBRIDGE_M365_GRAPH_URL", simulator.base_url())
            .env("MAILBRIDGE_M365_SMTP", simulator.smtp_addr().to_string())
            .env("MAILBRIDGE_EXTRA_CA_FILE", &sim_ca)
            .env("MAILBRIDGE_ENTRA_CLIENT_ID", &client_id)
            .env("MAILBRIDGE_ENTRA_CLIENT_SECRET", &client_secret)
            .env("MAILBRIDGE_WORKER_SWEEP_SECONDS", "1");
        let worker = worker.spawn().context("starting mailbridge worker")?;
        let mut web = Command::new(&binary);
        common(&mut web);
        web.arg("web")
            .env("MAILBRIDGE_WEB_LISTEN", web_addr.to_string());
        let web = web.spawn().context("starting mailbridge web")?;
        for (addr, what) in [
            (relay_addr, "the edge"),
            (submission_addr, "the edge"),
            (web_addr, "the control plane"),
        ] {
            tokio::task::spawn_blocking(move || wait_listening(addr, what)).await??;
        }

        let api_token = format!("mbt_{}", crypto::generate_password());
        sqlx::query(
            "WITH reader AS (
                 INSERT INTO staff (issuer, subject, email, display_name, role)
                 VALUES ('bench', 'bench', 'bench@msp.example', 'Benchmark', 'readonly')
                 RETURNING id)
             INSERT INTO api_tokens (name, token_hash, token_prefix, role, expires_at, created_by)
             SELECT 'bench', $1, 'mbt_bench', 'readonly', now() + interval '1 day', id FROM reader",
        )
        .bind(Sha256::digest(api_token.as_bytes()).to_vec())
        .execute(&pool)
        .await?;

        Ok(Self {
            relay_sender: practices[0].mailbox.clone(),
            relay_recipient: practices[0].recipient.clone(),
            pool,
            postgres,
            _simulator: simulator,
            _files: files,
            edge,
            worker,
            web,
            web_addr,
            relay_addr,
            submission_addr,
            practices,
            tls,
            api_token,
            http: reqwest::Client::new(),
        })
    }

    pub fn edge_pid(&self) -> u32 {
        self.edge.id()
    }

    /// Pauses the worker process (SIGSTOP) or lets it go on (SIGCONT): the accept
    /// path alone, as with workers on other nodes.
    pub fn hold_deliveries(&self, hold: bool) -> anyhow::Result<()> {
        let signal = if hold { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.worker.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} worker");
        }
        Ok(())
    }

    pub fn worker_pid(&self) -> u32 {
        self.worker.id()
    }

    /// The processes whose CPU a scenario is charged with.
    pub fn processes(&self) -> crate::cpu::Processes {
        crate::cpu::Processes {
            postmaster: self.postgres.pid(),
            edge: self.edge.id(),
            worker: self.worker.id(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every practice's device, STARTTLS and AUTH PLAIN, each with `message(practice)`.
    fn load_with(&self, message: impl Fn(&Practice) -> Vec<u8>) -> Load {
        let senders = self
            .practices
            .iter()
            .map(|p| Sender {
                credentials: Some((p.username.clone(), p.password.clone())),
                from: p.mailbox.clone(),
                to: p.recipient.clone(),
                message: message(p),
            })
            .collect();
        Load {
            addr: self.submission_addr,
            tls: Some(self.tls.clone()),
            senders: Arc::new(senders),
            messages_per_connection: 1,
            concurrency: 1,
            total: 0,
        }
    }

    /// `size`-byte text messages.
    /// Prints where the stack listens and who may send, for `--hold`.
    pub fn describe(&self) {
        let first = &self.practices[0];
        println!(
            "edge relay (port-25 device, from {} to {}): {}\nedge submission (STARTTLS, user {} password {}): {}\nweb: {}\nmailbridge pids: edge {} worker {} web {}\nCtrl-C stops.",
            self.relay_sender,
            self.relay_recipient,
            self.relay_addr,
            first.username,
            first.password,
            self.submission_addr,
            self.web_addr,
            self.edge.id(),
            self.worker.id(),
            self.web.id(),
        );
    }

    pub fn login_load(&self, size: usize) -> Load {
        self.load_with(|p| message(&p.mailbox, &p.recipient, size))
    }

    /// Messages with a large attachment of about `size` bytes.
    pub fn large_load(&self, size: usize) -> Load {
        self.load_with(|p| large_message(&p.mailbox, &p.recipient, size))
    }

    pub async fn now(&self) -> anyhow::Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Empties the queue and its history, so that rounds and scenarios do not feed
    /// each other (and one mailbox's daily limit, counted from the history, does not
    /// hold back the next scenario).
    ///
    /// What is queued is put out of reach first and the deliveries in flight are
    /// left to finish, so that no delivery finds its message gone.
    pub async fn reset_queue(&self) -> anyhow::Result<()> {
        sqlx::query("UPDATE queue SET due_at = 'infinity' WHERE lease_owner IS NULL")
            .execute(&self.pool)
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let delivering: i64 =
                sqlx::query_scalar("SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL")
                    .fetch_one(&self.pool)
                    .await?;
            if delivering == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // CASCADE: every table that hangs off a message (attempts, bodies, bounces …).
        // The worker's statements lock those tables in their own order (a settlement
        // writes the attempt before the message), so the truncation may be chosen as
        // a deadlock's victim: then it is tried again.
        let mut tries = 0;
        loop {
            match sqlx::query("TRUNCATE messages, mailbox_usage, graph_usage CASCADE")
                .execute(&self.pool)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e)
                    if tries < 5
                        && e.as_database_error().and_then(|d| d.code()).as_deref()
                            == Some("40P01") =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the messages received since `since` are all finished, checks that
    /// `count` of them were delivered, and returns how long after `since` the last
    /// was delivered (by the database's clock, so polling adds no error). Polls
    /// rarely and cheaply (whether the queue holds any of them): a count over every
    /// message polled often would take CPU from what is measured.
    pub async fn wait_delivered_since(
        &self,
        since: DateTime<Utc>,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        // Whether any is still queued: walks the queue (the lateral keeps the
        // planner from starting at the log's newest messages) and stops at the first
        // one found, where a count of thousands queued cost PostgreSQL ~20 ms a poll.
        macro_rules! pending {
            () => {
                "FROM queue q CROSS JOIN LATERAL
                      (SELECT 1 FROM messages m WHERE m.id = q.message_id AND m.received_at >= $1 OFFSET 0) m"
            };
        }
        loop {
            let waiting: bool =
                sqlx::query_scalar(concat!("SELECT EXISTS (SELECT 1 ", pending!(), ")"))
                    .bind(since)
                    .fetch_one(&self.pool)
                    .await?;
            if !waiting {
                break;
            }
            if Instant::now() > deadline {
                let left: i64 = sqlx::query_scalar(concat!("SELECT count(*) ", pending!()))
                    .bind(since)
                    .fetch_one(&self.pool)
                    .await?;
                bail!("{left} of {count} not delivered in {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (delivered, failed, last): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'accepted'), count(*) FILTER (WHERE state = 'failed'),
                    max(finished_at) FILTER (WHERE state = 'accepted')
               FROM messages WHERE received_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        if failed > 0 {
            bail!("{failed} messages failed during the benchmark");
        }
        if (delivered as usize) < count {
            bail!("only {delivered} of {count} delivered");
        }
        Ok((last.unwrap_or(since) - since).to_std().unwrap_or_default())
    }

    /// The statements that took the most of PostgreSQL's time since the last call
    /// (which resets the counts): calls, total and mean milliseconds, the query's
    /// start.
    pub async fn top_statements(
        &self,
        n: i64,
    ) -> anyhow::Result<Vec<(i64, f64, f64, f64, String)>> {
        let top = sqlx::query_as(
            "SELECT calls, total_exec_time + total_plan_time, mean_exec_time,
                    total_plan_time / greatest(calls, 1),
                    regexp_replace(left(query, 200), '\\s+', ' ', 'g')
               FROM pg_stat_statements ORDER BY 2 DESC LIMIT $1",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&self.pool)
            .await?;
        Ok(top)
    }

    /// Milliseconds from commit (`250`) to delivered, sorted, for messages since `since`.
    pub async fn latencies_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<f64>> {
        Ok(sqlx::query_scalar(
            "SELECT (extract(epoch FROM finished_at - received_at) * 1000)::float8
               FROM messages WHERE received_at >= $1 AND state = 'accepted' ORDER BY 1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Fills the message log to `rows` finished messages spread over the practices
    /// and the last 30 days (no bodies: finished messages have none).
    pub async fn fill_message_log(&self, rows: i64) -> anyhow::Result<LogProbe> {
        self.reset_queue().await?;
        let missing = rows;
        let tenants: Vec<Uuid> = self.practices.iter().map(|p| p.tenant).collect();
        let devices: Vec<DeviceId> = self.practices.iter().map(|p| p.device).collect();
        let batch = 100_000;
        let mut done = 0;
        while done < missing {
            let n = batch.min(missing - done);
            sqlx::query(
                "INSERT INTO messages (id, tenant_id, device_id, mail_from, rcpt_to, size_bytes, client_addr,
                                       tls_protocol, tls_cipher, state, attempt_count,
                                       received_at, finished_at, last_error, subject)
                 SELECT gen_random_uuid(), $1[1 + i % 50], $2[1 + i % 50],
                        'scanner@praxis' || (i % 50) || '.example',
                        ARRAY['r' || (i % 7919) || '@praxis' || (i % 50) || '.example'],
                        10240, '192.0.2.1', 'TLSv1_3', 'TLS13_AES_256_GCM_SHA384',
                        CASE WHEN i % 50 = 7 THEN 'failed' ELSE 'accepted' END, 1, t, t + interval '1 second',
                        CASE WHEN i % 50 = 7 THEN '5.7.30: Basic authentication is not supported' END,
                        'Scan ' || i
                   FROM generate_series($3::bigint, $4::bigint) AS i,
                        LATERAL (SELECT now() - (i % 2592000) * interval '1 second' AS t) AS at",
            )
            .bind(&tenants)
            .bind(&devices)
            .bind(done)
            .bind(done + n - 1)
            .execute(&self.pool)
            .await?;
            done += n;
        }
        sqlx::query("ANALYZE messages").execute(&self.pool).await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&self.pool)
            .await?;
        let practice = &self.practices[7];
        let day = Utc::now() - chrono::Duration::days(3);
        let mut cursor = String::new();
        for _ in 0..20 {
            let query = if cursor.is_empty() {
                "/api/v1/messages".to_owned()
            } else {
                format!("/api/v1/messages?after={cursor}")
            };
            let page: serde_json::Value = self
                .http
                .get(format!("http://{}{query}", self.web_addr))
                .bearer_auth(&self.api_token)
                .send()
                .await?
                .json()
                .await?;
            match page["next"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => break,
            }
        }
        Ok(LogProbe {
            total,
            tenant: practice.tenant,
            device: practice.device,
            sender: practice.mailbox.clone(),
            recipient: "r1234@praxis7.example".into(),
            day_from: day.format("%Y-%m-%dT00:00").to_string(),
            day_until: day.format("%Y-%m-%dT23:59").to_string(),
            deep_cursor: cursor,
        })
    }

    /// One API call: how long it took (it must succeed).
    pub async fn api_get(&self, path: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let response = self
            .http
            .get(format!("http://{}{path}", self.web_addr))
            .bearer_auth(&self.api_token)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let elapsed = started.elapsed();
        if !status.is_success() {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(elapsed)
    }

    pub async fn stop(self) {
        self.pool.close().await;
    }
}

/// The mailbridge processes end with the benchmark, however it ends.
impl Drop for BenchStack {
    fn drop(&mut self) {
        for child in [&mut self.edge, &mut self.worker, &mut self.web] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message with a large base64 attachment, in 76-character lines.
fn large_message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut text = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: large scan\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nScan attached.\r\n\
         --b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"scan.pdf\"\r\n\r\n"
    )
    .into_bytes();
    let line = b"JVBERi0xLjcKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k\r\n";
    while text.len() + line.len() < size {
        text.extend_from_slice(line);
    }
    text.extend_from_slice(b"--b--\r\n");
    text
}
