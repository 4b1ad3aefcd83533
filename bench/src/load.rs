//! An SMTP load generator of our own, for what `smtp-source` cannot do: STARTTLS and
//! AUTH PLAIN on every connection, many messages per login, and many sessions held
//! open at once. Plain request/response (no pipelining), like a device.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Who sends: a device's login, its envelope and its message.
pub struct Sender {
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: String,
    /// The message as sent after DATA: CRLF lines, dot-stuffed, without the final dot.
    pub message: Vec<u8>,
}

/// What one run sends. Connections take the senders in turn.
#[derive(Clone)]
pub struct Load {
    pub addr: SocketAddr,
    /// STARTTLS with this client configuration, or plain.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub senders: Arc<Vec<Sender>>,
    pub messages_per_connection: usize,
    pub concurrency: usize,
    pub total: usize,
}

impl Load {
    fn sender(&self, n: usize) -> &Sender {
        &self.senders[n % self.senders.len()]
    }
}

/// What came back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: usize,
    pub refused: usize,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// A message of `size` bytes of text in CRLF lines, ready for DATA.
pub fn message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut text = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: benchmark\r\nMessage-ID: <{}@bench.mailbridge.test>\r\n\r\n",
        uuid::Uuid::new_v4().simple()
    );
    let line =
        "Befund: Werte im Normbereich, keine weiteren Massnahmen erforderlich. 0123456789\r\n";
    while text.len() + line.len() <= size {
        text.push_str(line);
    }
    while text.len() < size - 2 {
        text.push('x');
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A session's stream: plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Session {
    io: BufReader<Box<dyn Stream>>,
    line: String,
}

impl Session {
    async fn reply(&mut self) -> anyhow::Result<u16> {
        loop {
            self.line.clear();
            if self.io.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            let code: u16 = self
                .line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .context("a reply code")?;
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(code);
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> anyhow::Result<u16> {
        self.io.get_mut().write_all(line).await?;
        self.io.get_mut().flush().await?;
        self.reply().await
    }
}

/// Connects and logs in as `sender`; returns the session ready for MAIL.
async fn open(load: &Load, sender: &Sender) -> anyhow::Result<Session> {
    let tcp = TcpStream::connect(load.addr).await?;
    tcp.set_nodelay(true)?;
    let mut session = Session {
        io: BufReader::new(Box::new(tcp) as Box<dyn Stream>),
        line: String::new(),
    };
    expect(session.reply().await?, 220)?;
    expect(
        session.command(b"EHLO bench.mailbridge.test\r\n").await?,
        250,
    )?;
    if let Some(tls) = &load.tls {
        expect(session.command(b"STARTTLS\r\n").await?, 220)?;
        let plain = session.io.into_inner();
        let connector = TlsConnector::from(tls.clone());
        let name = ServerName::try_from(load.addr.ip().to_string())?;
        let stream = connector.connect(name, plain).await?;
        session = Session {
            io: BufReader::new(Box::new(stream) as Box<dyn Stream>),
            line: String::new(),
        };
        expect(
            session.command(b"EHLO bench.mailbridge.test\r\n").await?,
            250,
        )?;
    }
    if let Some((user, password)) = &sender.credentials {
        let token = STANDARD.encode(format!("\0{user}\0{password}"));
        expect(
            session
                .command(format!("AUTH PLAIN {token}\r\n").as_bytes())
                .await?,
            235,
        )?;
    }
    Ok(session)
}

fn expect(code: u16, wanted: u16) -> anyhow::Result<()> {
    if code == wanted {
        Ok(())
    } else {
        bail!("expected {wanted}, got {code}")
    }
}

/// One transaction; whether it was accepted.
async fn send(session: &mut Session, sender: &Sender) -> anyhow::Result<bool> {
    expect(
        session
            .command(format!("MAIL FROM:<{}>\r\n", sender.from).as_bytes())
            .await?,
        250,
    )?;
    expect(
        session
            .command(format!("RCPT TO:<{}>\r\n", sender.to).as_bytes())
            .await?,
        250,
    )?;
    expect(session.command(b"DATA\r\n").await?, 354)?;
    session.io.get_mut().write_all(&sender.message).await?;
    Ok(session.command(b".\r\n").await? == 250)
}

/// Runs the load to its end.
pub async fn run(load: Load) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..load.concurrency {
        let (load, next, accepted, refused, connections) = (
            load.clone(),
            next.clone(),
            accepted.clone(),
            refused.clone(),
            connections.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.load(Ordering::Relaxed) < load.total {
                let sender = load.sender(connections.fetch_add(1, Ordering::Relaxed));
                let mut session = match open(&load, sender).await {
                    Ok(session) => session,
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                for _ in 0..load.messages_per_connection {
                    if next.fetch_add(1, Ordering::Relaxed) >= load.total {
                        break;
                    }
                    match send(&mut session, sender).await {
                        Ok(true) => accepted.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
                let _ = session.command(b"QUIT\r\n").await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(Outcome {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// Sends at a fixed rate for `duration` (one message per connection), for latency
/// under a steady load; returns how many were accepted.
pub async fn run_at_rate(
    load: Load,
    per_second: u32,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        n += 1;
        let (load, accepted, refused) = (load.clone(), accepted.clone(), refused.clone());
        tasks.spawn(async move {
            let sent = async {
                let sender = load.sender(n);
                let mut session = open(&load, sender).await?;
                let ok = send(&mut session, sender).await?;
                let _ = session.command(b"QUIT\r\n").await;
                anyhow::Ok(ok)
            };
            match sent.await {
                Ok(true) => accepted.fetch_add(1, Ordering::Relaxed),
                _ => refused.fetch_add(1, Ordering::Relaxed),
            };
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(Outcome {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// Opens `count` authenticated TLS sessions and holds them until the returned
/// handles are dropped.
pub async fn hold_open(load: &Load, count: usize) -> anyhow::Result<Vec<impl Sized + use<>>> {
    let mut sessions = Vec::with_capacity(count);
    let mut opening = tokio::task::JoinSet::new();
    for n in 0..count {
        let load = load.clone();
        opening.spawn(async move { open(&load, load.sender(n)).await });
        if opening.len() >= 200 {
            sessions.push(opening.join_next().await.expect("a task")??);
        }
    }
    while let Some(session) = opening.join_next().await {
        sessions.push(session??);
    }
    Ok(sessions)
}
