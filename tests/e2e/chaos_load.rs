//! The machinery of the chaos suite (chaos.rs): devices that keep sending through a
//! real SMTP client and retry what was not accepted, a ledger of every answer they
//! got, the reconciliation of that ledger against what the simulated Microsoft 365
//! received, the edge and the workers as processes to kill, and a TCP gate that can
//! stall or cut connections (to PostgreSQL, or between the devices and the edge).

use mailbridge_core::ids::TenantId;
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use lettre::{
    AsyncTransport,
    address::Envelope,
    transport::smtp::{Error as SmtpError, PoolConfig, response::Response},
};
use mailbridge_core::queue::{self, MessageKind, NewMessage};
use mailbridge_m365_sim::{Directory, fault_injection::RequestRecord};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use uuid::Uuid;

use crate::harness::{TestApp, TestTenant, lettre_to, mailbridge_binary, without_final_crlf};

/// How hard the suite pushes: `MAILBRIDGE_CHAOS_SCALE` (default 1, what CI runs).
/// Devices, faults, backlogs and outages grow with it.
pub fn scale() -> usize {
    std::env::var("MAILBRIDGE_CHAOS_SCALE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(1)
}

/// A random number below `n` (moments and sizes; nothing needs to be replayable).
pub fn random_below(n: u64) -> u64 {
    (Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

/// A device of a customer, with its credential and where its mail goes.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub tenant_id: TenantId,
    pub sender: String,
    pub recipient: String,
    pub username: String,
    pub password: String,
}

/// The address a tenant's devices write to in these tests.
pub fn recipient_of(tenant: &TestTenant) -> String {
    let slug: String = tenant
        .tenant
        .name
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("befunde@{slug}-labor.example")
}

/// `per_tenant` devices for each of `tenants`.
pub async fn fleet(app: &TestApp, tenants: &[&TestTenant], per_tenant: usize) -> Vec<Device> {
    let mut devices = Vec::new();
    for tenant in tenants {
        for i in 0..per_tenant {
            let name = format!("{} Geraet {i}", tenant.tenant.name);
            let issued = app.add_device(tenant, &name).await;
            devices.push(Device {
                name,
                tenant_id: tenant.tenant.id,
                sender: tenant.tenant.sender_mailbox.clone(),
                recipient: recipient_of(tenant),
                username: issued.device.username,
                password: issued.password,
            });
        }
    }
    devices
}

/// What one try to hand a message over came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `250`, with the queue id the edge named.
    Accepted(Uuid),
    /// A `4xx` reply: the device keeps the message and tries again.
    Temporary { code: String, text: String },
    /// A `5xx` reply: the device gives the message up.
    Permanent { code: String, text: String },
    /// No reply within the client's timeout: a hang.
    Timeout(String),
    /// The connection broke (reset, closed, TLS) without a reply.
    Broken(String),
}

/// One try, timed.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

impl Attempt {
    pub fn ended(&self) -> Instant {
        self.at + self.took
    }
}

/// A message a device (or the test, through the queue API) tried to hand over.
#[derive(Debug, Clone)]
pub struct Entry {
    pub message_id: String,
    pub tenant_id: TenantId,
    /// The message exactly as handed over; the delivered MIME must end with it.
    pub mime: String,
    /// Queued through `queue::enqueue_all` (no SMTP, no trace header).
    pub via_queue: bool,
    /// The queue ids a `250` named (one at most for a device: it stops then).
    pub accepted: Vec<Uuid>,
    pub attempts: Vec<Attempt>,
}

/// Everything the devices were told, shared by their tasks.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<Entry>>>);

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, entry: Entry) -> usize {
        let mut entries = self.lock();
        entries.push(entry);
        entries.len() - 1
    }

    fn record(&self, index: usize, attempt: Attempt) {
        let mut entries = self.lock();
        if let Outcome::Accepted(id) = attempt.outcome {
            entries[index].accepted.push(id);
        }
        entries[index].attempts.push(attempt);
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.lock().clone()
    }

    /// Every try that ended in `from..to`.
    pub fn attempts_ending(&self, from: Instant, to: Instant) -> Vec<Attempt> {
        self.lock()
            .iter()
            .flat_map(|e| e.attempts.iter())
            .filter(|a| a.ended() >= from && a.ended() < to)
            .cloned()
            .collect()
    }

    /// Every try so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock()
            .iter()
            .flat_map(|e| e.attempts.iter().cloned())
            .collect()
    }

    /// Accepted messages of `tenant` whose `250` came before `until`.
    pub fn accepted_of(&self, tenant: TenantId, until: Instant) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.tenant_id == tenant)
            .filter(|e| {
                e.via_queue
                    || e.attempts
                        .iter()
                        .any(|a| matches!(a.outcome, Outcome::Accepted(_)) && a.ended() < until)
            })
            .count()
    }

    /// Waits (up to `within`) for the first `250` after `since`; returns how long
    /// after `since` it came.
    pub async fn first_acceptance_after(&self, since: Instant, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            let first = self
                .lock()
                .iter()
                .flat_map(|e| e.attempts.iter())
                .filter(|a| matches!(a.outcome, Outcome::Accepted(_)) && a.ended() > since)
                .map(Attempt::ended)
                .min();
            if let Some(at) = first {
                return at - since;
            }
            assert!(
                Instant::now() < deadline,
                "no message accepted within {within:?} after the fault ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A message as a device sends it, unique by its Message-ID, between about 1 KB and
/// `max_body`: CRLF line ends, UTF-8, lines that start with a dot (the edge unstuffs
/// them, the worker must not lose them).
pub fn device_message(device: &Device, sequence: usize, max_body: usize) -> (String, String) {
    let message_id = format!(
        "chaos.{}.{sequence}@printer.praxis.test",
        Uuid::new_v4().simple()
    );
    // Sizes spread evenly on a log scale: mostly small, some large.
    let small = 1024f64;
    let large = max_body.max(1024) as f64;
    let fraction = random_below(1000) as f64 / 1000.0;
    let size = (small * (large / small).powf(fraction)) as usize;
    let mut body = String::with_capacity(size + 512);
    let mut line = 0usize;
    while body.len() < size {
        line += 1;
        match line % 7 {
            0 => body.push_str(".Punkt am Zeilenanfang, Messwert 4711\r\n"),
            3 => body.push_str("..zwei Punkte\r\n"),
            _ => body.push_str(&format!(
                "Befund {sequence} Zeile {line}: Hämoglobin 14,2 g/dl, Leukozyten 7,1 /nl, Größe ok\r\n"
            )),
        }
    }
    let mime = format!(
        "From: {name} <{sender}>\r\nTo: {to}\r\nSubject: Befund {sequence} von {name}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}",
        name = device.name,
        sender = device.sender,
        to = device.recipient,
    );
    (message_id, mime)
}

/// Where the devices send to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub ca_pem: Vec<u8>,
}

impl Target {
    pub fn of(app: &TestApp) -> Self {
        Self {
            addr: app.stack.smtp_addr,
            ca_pem: app.edge_ca_pem(),
        }
    }
}

/// How the devices behave.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Pause between two messages of a device, in milliseconds (a random one in range).
    pub pause_ms: (u64, u64),
    pub max_body: usize,
    /// How long the client waits for each reply; longer is a hang.
    pub client_timeout: Duration,
    /// After the load is stopped, how long a device still retries its last message.
    pub give_up: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pause_ms: (50, 400),
            max_body: 192 * 1024,
            client_timeout: Duration::from_secs(60),
            give_up: Duration::from_secs(60),
        }
    }
}

/// Devices sending concurrently until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    pub ledger: Ledger,
}

impl Load {
    pub fn start(target: Target, devices: Vec<Device>, options: LoadOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Ledger::default();
        let tasks = devices
            .into_iter()
            .map(|device| {
                tokio::spawn(device_loop(
                    target.clone(),
                    device,
                    options.clone(),
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Self {
            stop,
            tasks,
            ledger,
        }
    }

    /// Stops sending new messages, lets each device finish (or give up) the one it
    /// is on, and returns the ledger.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a device task panicked");
        }
        self.ledger
    }
}

async fn device_loop(
    target: Target,
    device: Device,
    options: LoadOptions,
    ledger: Ledger,
    stop: Arc<AtomicBool>,
) {
    let envelope = Envelope::new(
        Some(device.sender.parse().expect("sender")),
        vec![device.recipient.parse().expect("recipient")],
    )
    .expect("envelope");
    let mut transport = None;
    let mut sequence = 0;
    while !stop.load(Ordering::SeqCst) {
        sequence += 1;
        let (message_id, mime) = device_message(&device, sequence, options.max_body);
        let index = ledger.push(Entry {
            message_id,
            tenant_id: device.tenant_id,
            mime: mime.clone(),
            via_queue: false,
            accepted: Vec::new(),
            attempts: Vec::new(),
        });
        let mut pause = Duration::from_millis(100);
        let mut stopped_at = None;
        loop {
            // One connection per device, reused while it works (as a device keeps a
            // session open for a batch of scans); a new one after any failure.
            let smtp = transport.get_or_insert_with(|| {
                lettre_to(
                    target.addr,
                    &target.ca_pem,
                    &device.username,
                    &device.password,
                    options.client_timeout,
                )
                .pool_config(PoolConfig::new().max_size(1))
                .build::<lettre::Tokio1Executor>()
            });
            let at = Instant::now();
            let result = smtp.send_raw(&envelope, without_final_crlf(&mime)).await;
            let outcome = classify(result);
            let done = matches!(outcome, Outcome::Accepted(_) | Outcome::Permanent { .. });
            if !matches!(outcome, Outcome::Accepted(_)) {
                transport = None;
            }
            ledger.record(
                index,
                Attempt {
                    at,
                    took: at.elapsed(),
                    outcome,
                },
            );
            if done {
                break;
            }
            if stop.load(Ordering::SeqCst)
                && stopped_at.get_or_insert_with(Instant::now).elapsed() > options.give_up
            {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let (low, high) = options.pause_ms;
        tokio::time::sleep(Duration::from_millis(low + random_below(high - low + 1))).await;
    }
}

fn classify(result: Result<Response, SmtpError>) -> Outcome {
    match result {
        Ok(response) => {
            let text = response.message().collect::<Vec<_>>().join(" ");
            let id = text
                .split("queued as ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|id| Uuid::try_parse(id).ok())
                .unwrap_or_else(Uuid::nil);
            Outcome::Accepted(id)
        }
        Err(e) => {
            let code = e.status().map(|c| c.to_string()).unwrap_or_default();
            if e.is_timeout() {
                Outcome::Timeout(e.to_string())
            } else if e.is_permanent() {
                Outcome::Permanent {
                    code,
                    text: e.to_string(),
                }
            } else if e.is_transient() {
                Outcome::Temporary {
                    code,
                    text: e.to_string(),
                }
            } else {
                Outcome::Broken(e.to_string())
            }
        }
    }
}

/// Queues `count` messages for `tenant` through the queue API (as the edge would, in
/// batches), each `body_size` bytes or so, oldest first; records them as accepted.
pub async fn enqueue_backlog(
    pool: &PgPool,
    key: &mailbridge_core::crypto::MasterKey,
    ledger: &Ledger,
    tenant: &TestTenant,
    count: usize,
    body_size: usize,
) -> Vec<Uuid> {
    let recipient = recipient_of(tenant);
    let sender = &tenant.tenant.sender_mailbox;
    let mut ids = Vec::with_capacity(count);
    let filler: String =
        "Laborwert 4711 unauffällig, Kontrolle in 6 Monaten.\r\n".repeat(body_size / 52 + 1);
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut batch = Vec::with_capacity(chunk.len());
        for i in chunk {
            let message_id = format!("chaos.{}.{i}@backlog.test", Uuid::new_v4().simple());
            let mime = format!(
                "From: {sender}\r\nTo: {recipient}\r\nSubject: Rueckstau {i}\r\nMessage-ID: <{message_id}>\r\n\r\n{filler}"
            );
            let id = Uuid::now_v7();
            ledger.push(Entry {
                message_id,
                tenant_id: tenant.tenant.id,
                mime: mime.clone(),
                via_queue: true,
                accepted: vec![id],
                attempts: Vec::new(),
            });
            ids.push(id);
            batch.push(NewMessage {
                id: id.into(),
                tenant_id: tenant.tenant.id,
                device_id: None,
                mail_from: sender.clone(),
                rcpt_to: vec![recipient.clone()],
                client_addr: "192.0.2.1".parse().expect("address"),
                tls_protocol: None,
                tls_cipher: None,
                kind: MessageKind::Device,
                subject: Some(format!("Rueckstau {i}")),
                body: mime.into_bytes(),
            });
        }
        let refs: Vec<&NewMessage> = batch.iter().collect();
        queue::enqueue_all(pool, key, &refs)
            .await
            .expect("queueing the backlog");
    }
    ids
}

/// A delivered copy, named by what it carries.
struct DeliveredCopy {
    message_id: Option<String>,
    /// The queue id from the edge's Received header.
    queue_id: Option<Uuid>,
    mime: String,
}

fn parse_copy(mime: &str) -> DeliveredCopy {
    let message_id = mime.lines().find_map(|l| {
        l.strip_prefix("Message-ID: <")
            .map(|r| r.trim_end_matches('>').to_owned())
    });
    let queue_id = mime
        .split_once("(mailbridge) with ")
        .and_then(|(_, rest)| rest.split_once(" id "))
        .and_then(|(_, rest)| rest.get(..32))
        .and_then(|id| Uuid::try_parse(id).ok());
    DeliveredCopy {
        message_id,
        queue_id,
        mime: mime.to_owned(),
    }
}

/// What became of everything the devices handed over.
#[derive(Debug, Clone, Default)]
pub struct Reconciliation {
    /// Messages the devices (or the test) tried to hand over.
    pub sent: usize,
    /// Of those, the ones a `250` (or the queue API) accepted.
    pub accepted: usize,
    /// Never accepted: the device still has them (the run ended while it retried).
    pub not_accepted: usize,
    /// Accepted and in the recipient's mailbox.
    pub delivered: usize,
    /// Accepted and failed with a permanent reason the simulator was told to give.
    pub failed: usize,
    /// Accepted messages that arrived more than once.
    pub duplicated: usize,
    /// Copies beyond the first, of the same queue entry (a worker delivered it again).
    pub redelivered_copies: usize,
    /// Copies beyond the first from another queue entry (committed, but the `250` never
    /// reached the device, which sent the message again).
    pub resubmitted_copies: usize,
    /// Queue entries committed whose `250` no device saw.
    pub unacknowledged_commits: usize,
    /// Tries in all, and how many were not `250`.
    pub attempts: usize,
    pub refusals: usize,
    /// Accepted but neither delivered nor failed as told: must be zero.
    pub lost: usize,
    /// How long the queue took to settle after the load stopped.
    pub settled_in: Duration,
}

/// Waits (up to `within`) until every message the queue holds for the ledger's
/// tenants is delivered or failed, then reconciles the ledger against the
/// simulator's mailboxes and the queue, prints the figures and asserts that nothing
/// accepted was lost, that every copy ends with the message byte for byte as sent,
/// and that nothing arrived that was never sent. `permanent` lists the reasons a
/// message may fail with (what the simulator was told to answer).
pub async fn reconcile(
    scenario: &str,
    pool: &PgPool,
    directory: &Directory,
    ledger: &Ledger,
    permanent: &[&str],
    within: Duration,
) -> Reconciliation {
    let entries = ledger.entries();
    let tenants: Vec<TenantId> = entries
        .iter()
        .map(|e| e.tenant_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let started = Instant::now();
    let deadline = started + within;
    let rows: HashMap<Uuid, (String, Option<String>)> = loop {
        let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT id, state, last_error FROM messages WHERE tenant_id = ANY($1) AND kind = 'device'",
        )
        .bind(&tenants)
        .fetch_all(pool)
        .await
        .expect("reading the queue");
        let open = rows
            .iter()
            .filter(|(_, state, _)| state != "accepted" && state != "failed")
            .count();
        if open == 0 || Instant::now() > deadline {
            if open > 0 {
                println!("chaos[{scenario}] {open} messages still not settled after {within:?}");
            }
            break rows.into_iter().map(|(id, s, e)| (id, (s, e))).collect();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled_in = started.elapsed();

    let by_message_id: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.message_id.as_str(), i))
        .collect();
    let mut copies: Vec<Vec<DeliveredCopy>> = entries.iter().map(|_| Vec::new()).collect();
    let mut strangers = Vec::new();
    for delivered in directory.delivered() {
        let copy = parse_copy(&delivered.mime);
        match copy.message_id.as_deref() {
            Some(id) if by_message_id.contains_key(id) => copies[by_message_id[id]].push(copy),
            Some(id) if id.starts_with("chaos.") => strangers.push(id.to_owned()),
            _ => {}
        }
    }
    assert!(
        strangers.is_empty(),
        "chaos[{scenario}] delivered but never sent: {strangers:?}"
    );

    let mut report = Reconciliation {
        sent: entries.len(),
        settled_in,
        ..Default::default()
    };
    let accepted_ids: HashSet<Uuid> = entries.iter().flat_map(|e| e.accepted.clone()).collect();
    report.unacknowledged_commits = rows.keys().filter(|id| !accepted_ids.contains(id)).count();
    let mut corrupted = Vec::new();
    let mut lost = Vec::new();
    for (entry, copies) in entries.iter().zip(&copies) {
        report.attempts += entry.attempts.len();
        report.refusals += entry
            .attempts
            .iter()
            .filter(|a| !matches!(a.outcome, Outcome::Accepted(_)))
            .count();
        for copy in copies {
            if !copy.mime.ends_with(&entry.mime) {
                corrupted.push(entry.message_id.clone());
            }
        }
        if copies.len() > 1 {
            let mut seen = HashSet::new();
            for copy in copies {
                let key = copy.queue_id.or(entry.accepted.first().copied());
                if !seen.insert(key) {
                    report.redelivered_copies += 1;
                }
            }
            report.resubmitted_copies += seen.len() - 1;
        }
        if entry.accepted.is_empty() {
            report.not_accepted += 1;
            continue;
        }
        report.accepted += 1;
        if copies.len() > 1 {
            report.duplicated += 1;
        }
        for id in &entry.accepted {
            let arrived = copies
                .iter()
                .any(|c| c.queue_id == Some(*id) || (entry.via_queue && c.queue_id.is_none()));
            let state = rows.get(id);
            let failed_as_told = state.is_some_and(|(state, error)| {
                state == "failed"
                    && error
                        .as_deref()
                        .is_some_and(|e| permanent.iter().any(|p| e.contains(p)))
            });
            if arrived {
                report.delivered += 1;
            } else if failed_as_told {
                report.failed += 1;
            } else {
                lost.push(format!("{} ({id}): {state:?}", entry.message_id));
            }
        }
    }
    report.lost = lost.len();
    println!(
        "chaos[{scenario}] sent {} accepted {} not-accepted {} delivered {} failed {} duplicated {} (redelivered copies {}, resubmitted copies {}) unacknowledged-commits {} lost {} | tries {} refusals {} | queue settled {:.1} s after the load stopped",
        report.sent,
        report.accepted,
        report.not_accepted,
        report.delivered,
        report.failed,
        report.duplicated,
        report.redelivered_copies,
        report.resubmitted_copies,
        report.unacknowledged_commits,
        report.lost,
        report.attempts,
        report.refusals,
        report.settled_in.as_secs_f64(),
    );
    assert!(
        corrupted.is_empty(),
        "chaos[{scenario}] {} copies differ from the message as sent: {:?}",
        corrupted.len(),
        &corrupted[..corrupted.len().min(10)]
    );
    assert!(
        lost.is_empty(),
        "chaos[{scenario}] {} accepted messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    report
}

/// Where a spawned process's output goes: nowhere, or with `MAILBRIDGE_CHAOS_LOGS`
/// set to a directory, into `<name>.log` there (at info level).
fn output(command: &mut Command, name: &str) {
    if let Ok(dir) = std::env::var("MAILBRIDGE_CHAOS_LOGS") {
        let path = std::path::Path::new(&dir).join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("opening a process log");
        command
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
    } else {
        command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
}

/// A free loopback port (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `mailbridge edge` as its own process, on a fixed port so that it can be killed
/// and started again where the devices expect it.
pub struct EdgeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub ca_pem: Vec<u8>,
    database: SecretString,
    files: tempfile::TempDir,
    starts: usize,
    /// Settings of this edge beyond the defaults.
    env: Vec<(String, String)>,
}

impl EdgeProcess {
    /// Starts the edge against `app`'s database and waits until it greets.
    pub async fn start(app: &TestApp) -> Self {
        Self::start_with(app, &[]).await
    }

    /// Starts the edge with extra settings (`MAILBRIDGE_…` variables).
    pub async fn start_with(app: &TestApp, env: &[(&str, &str)]) -> Self {
        let database = crate::harness::database_url(&app.database);
        let env = [
            &[("MAILBRIDGE_MASTER_KEY", app.master_key_base64.as_str())],
            env,
        ]
        .concat();
        mailbridge_core::tls::install_crypto_provider();
        let files = tempfile::Builder::new()
            .prefix("mailbridge-chaos-edge-")
            .tempdir()
            .expect("a directory for the edge's certificate");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let authority = mailbridge_core::tls::LocalAuthority::generate("chaos edge CA", &names)
            .expect("a CA for the edge");
        authority
            .server
            .write_pem_files(
                &files.path().join("edge.crt"),
                &files.path().join("edge.key"),
            )
            .expect("writing the certificate and key");
        let mut edge = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            ca_pem: authority.ca_pem.into_bytes(),
            database,
            files,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        edge.spawn();
        edge.wait_ready().await;
        edge
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut command = Command::new(mailbridge_binary());
        command
            .arg("edge")
            .env("DATABASE_URL", self.database.expose_secret())
            .env("MAILBRIDGE_SUBMISSION_LISTEN", self.addr.to_string())
            .env("MAILBRIDGE_SUBMISSIONS_LISTEN", "off")
            .env("MAILBRIDGE_RELAY_LISTEN", "off")
            .env("MAILBRIDGE_METRICS_LISTEN", "off")
            .env("MAILBRIDGE_HOSTNAME", "relay.mailbridge.test")
            .env(
                "MAILBRIDGE_TLS_CERT_FILE",
                self.files.path().join("edge.crt"),
            )
            .env(
                "MAILBRIDGE_TLS_KEY_FILE",
                self.files.path().join("edge.key"),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        output(&mut command, &format!("edge-{}", self.starts));
        self.child = Some(command.spawn().expect("starting mailbridge edge"));
    }

    /// The certificate and key files the edge serves (and re-reads when they change).
    pub fn certificate_files(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            self.files.path().join("edge.crt"),
            self.files.path().join("edge.key"),
        )
    }

    /// Waits until the edge answers with its greeting.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("edge status"))
            {
                panic!("the edge exited at start: {status}");
            }
            if let Ok(mut stream) = TcpStream::connect(self.addr).await {
                let mut greeting = [0u8; 3];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut greeting))
                        .await;
                if matches!(read, Ok(Ok(_))) && &greeting == b"220" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the edge did not come up on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL to the edge");
            child.wait().expect("reaping the edge");
        }
    }

    /// Starts the edge again on the same port and waits until it greets.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `mailbridge worker` processes on one queue.
pub struct Workers {
    children: Vec<Child>,
    command: Box<dyn Fn(usize) -> Command + Send>,
    starts: usize,
}

impl Workers {
    /// `count` workers against `database`, with leases of `lease_seconds`.
    pub fn start(app: &TestApp, database: SecretString, count: usize, lease_seconds: u64) -> Self {
        let template = app.worker_command(&database, lease_seconds);
        let program = template.get_program().to_owned();
        let args: Vec<_> = template.get_args().map(|a| a.to_owned()).collect();
        let envs: Vec<_> = template
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let command = move |n: usize| {
            let mut command = Command::new(&program);
            command
                .args(&args)
                .envs(envs.iter().cloned())
                .stdin(Stdio::null());
            output(&mut command, &format!("worker-{n}"));
            command
        };
        let mut workers = Self {
            children: Vec::new(),
            command: Box::new(command),
            starts: 0,
        };
        for _ in 0..count {
            workers.spawn();
        }
        workers
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let child = (self.command)(self.starts)
            .spawn()
            .expect("starting mailbridge worker");
        self.children.push(child);
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// SIGKILL to the worker `pid`, and a new worker in its place.
    pub fn kill_and_replace(&mut self, pid: u32) {
        let index = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .expect("one of ours");
        let mut child = self.children.remove(index);
        child.kill().expect("SIGKILL to a worker");
        child.wait().expect("reaping a worker");
        self.spawn();
    }

    /// Panics if a worker exited on its own (it must survive every outage).
    pub fn assert_alive(&mut self) {
        for child in &mut self.children {
            if let Some(status) = child.try_wait().expect("worker status") {
                panic!("worker {} exited: {status}", child.id());
            }
        }
    }

    pub fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The resident memory of a process, in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a gate lets through, and which connections still exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GateState {
    /// Client to server.
    requests: bool,
    /// Server to client.
    replies: bool,
    /// Connections from before the last cut are closed.
    epoch: u64,
}

/// A TCP gate between clients and a server. Open, it forwards. Stalled, it holds
/// every byte in both directions, on open connections and new ones alike, as a
/// network partition or a hung server does: nothing is refused, nothing answers.
/// Holding replies only, the server's answers wait (the client's bytes go through).
/// A cut closes every connection, and what was held is never delivered.
pub struct TcpGate {
    pub addr: SocketAddr,
    state: watch::Sender<GateState>,
    task: JoinHandle<()>,
}

impl TcpGate {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("gate port");
        let addr = listener.local_addr().expect("gate address");
        let (state, watching) = watch::channel(GateState {
            requests: true,
            replies: true,
            epoch: 0,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let epoch = watching.borrow().epoch;
                    if !wait_for(&mut watching, epoch, |s| s.requests).await {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, watching.clone(), epoch, |s| s
                            .requests),
                        pump(server_read, client_write, watching, epoch, |s| s.replies),
                    );
                });
            }
        });
        Self { addr, state, task }
    }

    /// The URL `url` (of the server behind the gate) with the gate in between.
    pub fn url(&self, url: &SecretString, upstream_port: u16) -> SecretString {
        SecretString::from(url.expose_secret().replacen(
            &format!(":{upstream_port}/"),
            &format!(":{}/", self.addr.port()),
            1,
        ))
    }

    pub fn stall(&self) {
        self.state.send_modify(|s| {
            s.requests = false;
            s.replies = false;
        });
    }

    pub fn hold_replies(&self) {
        self.state.send_modify(|s| s.replies = false);
    }

    pub fn open(&self) {
        self.state.send_modify(|s| {
            s.requests = true;
            s.replies = true;
        });
    }

    /// Closes every connection; what was held is dropped.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.epoch += 1);
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.open();
        self.task.abort();
    }
}

/// Waits until `open` holds; false once the connection is cut (or the gate gone).
async fn wait_for(
    state: &mut watch::Receiver<GateState>,
    epoch: u64,
    open: impl Fn(&GateState) -> bool,
) -> bool {
    match state.wait_for(|s| s.epoch != epoch || open(s)).await {
        Ok(s) => s.epoch == epoch,
        Err(_) => true,
    }
}

/// Forwards one direction while the gate lets it through; ends at EOF or a cut
/// (which drops both sockets, so the peers see the connection closed).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<GateState>,
    epoch: u64,
    open: impl Fn(&GateState) -> bool + Copy,
) {
    let mut cut = state.clone();
    let forward = async move {
        let mut state = state;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !wait_for(&mut state, epoch, open).await {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !wait_for(&mut state, epoch, open).await {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::select! {
        _ = forward => {}
        _ = cut.wait_for(|s| s.epoch != epoch) => {}
    }
}

/// Moves every queued message's due time and every hold's next probe `by` earlier: to
/// the queue (which only compares them with `now()`), the same as `by` passing, in
/// the same order and with the same spread. Lets a test skip the minute-long backoff.
pub async fn skip_queue_time(pool: &PgPool, by: Duration) {
    sqlx::query(
        "UPDATE queue SET due_at = due_at - make_interval(secs => $1) WHERE lease_owner IS NULL",
    )
    .bind(by.as_secs_f64())
    .execute(pool)
    .await
    .expect("moving due times");
    sqlx::query(
        "UPDATE delivery_holds SET next_probe_at = next_probe_at - make_interval(secs => $1)",
    )
    .bind(by.as_secs_f64())
    .execute(pool)
    .await
    .expect("moving the holds' probes");
}

/// Skips the time until the next queued message is due (nothing is due before it,
/// so the queue cannot tell); returns how much was skipped.
pub async fn skip_to_next_due(pool: &PgPool) -> Duration {
    let until_next: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM min(due_at) - now())::float8 FROM queue
          WHERE lease_owner IS NULL AND due_at > now()",
    )
    .fetch_one(pool)
    .await
    .expect("reading due times");
    let skip = Duration::from_secs_f64(until_next.unwrap_or(0.0).max(0.0));
    skip_queue_time(pool, skip).await;
    skip
}

/// Requests the simulator's faultable endpoints saw in `from..to` that `pick` selects:
/// how many, and the busiest second.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestRate {
    pub total: usize,
    pub peak_per_second: usize,
    pub mean_per_second: f64,
}

pub fn request_rate(
    records: &[RequestRecord],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    pick: impl Fn(&RequestRecord) -> bool,
) -> RequestRate {
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    let mut total = 0;
    for record in records
        .iter()
        .filter(|r| r.at >= from && r.at < to && pick(r))
    {
        total += 1;
        *per_second.entry(record.at.timestamp()).or_default() += 1;
    }
    let seconds = ((to - from).num_milliseconds() as f64 / 1000.0).max(1.0);
    RequestRate {
        total,
        peak_per_second: per_second.values().copied().max().unwrap_or(0),
        mean_per_second: total as f64 / seconds,
    }
}

/// The queue id a delivered copy carries in the edge's Received header.
pub fn queue_id_of(mime: &str) -> Option<Uuid> {
    parse_copy(mime).queue_id
}
