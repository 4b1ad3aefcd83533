//! What each part of mailbridge spends per message: CPU time of PostgreSQL (the
//! postmaster, its live backends and the ones it reaped), the edge and the worker,
//! read from `/proc` before and after a scenario, and the messages and delivery
//! attempts PostgreSQL counted in between. CPU per message is less noisy than
//! messages per second on a shared machine, so a change is judged by both.

use std::{path::Path, process::Command, time::Duration};

use sqlx::PgPool;

/// CPU seconds of each part, and PostgreSQL's row counters, at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    postgres: f64,
    edge: f64,
    worker: f64,
    messages: i64,
    attempts: i64,
}

/// The processes to read.
#[derive(Debug, Clone, Copy)]
pub struct Processes {
    pub postmaster: u32,
    pub edge: u32,
    pub worker: u32,
}

/// Milliseconds of CPU per message over one scenario.
#[derive(Debug, Clone, Copy)]
pub struct PerMessage {
    pub messages: i64,
    pub attempts: i64,
    pub postgres_ms: f64,
    pub edge_ms: f64,
    /// Per delivery attempt (the worker's unit of work), when there were any.
    pub worker_ms: Option<f64>,
}

impl PerMessage {
    /// `PostgreSQL 0.62 · edge 0.21 · worker 0.48 ms` for the report.
    pub fn text(&self) -> String {
        let worker = self
            .worker_ms
            .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.2}"));
        format!("{:.2} / {:.2} / {worker}", self.postgres_ms, self.edge_ms)
    }
}

/// Seconds per clock tick of `/proc/<pid>/stat` (USER_HZ, almost always 100).
fn tick_seconds() -> f64 {
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0)
        .unwrap_or(100.0);
    1.0 / hz
}

/// `(ppid, utime + stime, cutime + cstime)` in ticks, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((
        u32::try_from(field(4)?).ok()?,
        field(14)? + field(15)?,
        field(16)? + field(17)?,
    ))
}

/// PostgreSQL's CPU in ticks: the postmaster with the children it reaped, plus every
/// live child (backends, the WAL writer, the checkpointer, autovacuum).
fn postgres_ticks(postmaster: u32) -> u64 {
    let (_, own, reaped) = stat(postmaster).unwrap_or_default();
    let live: u64 = std::fs::read_dir(Path::new("/proc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|(ppid, _, _)| *ppid == postmaster)
        .map(|(_, ticks, _)| ticks)
        .sum();
    own + reaped + live
}

impl Processes {
    /// Reads the counters. PostgreSQL publishes its row counters with up to a
    /// second's delay, so it waits for them to settle first.
    pub async fn snapshot(&self, pool: &PgPool) -> anyhow::Result<Snapshot> {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let (messages, attempts): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(n_tup_ins) FILTER (WHERE relname = 'messages'), 0)::bigint,
                    coalesce(sum(n_tup_ins) FILTER (WHERE relname = 'delivery_attempts'), 0)::bigint
               FROM pg_stat_user_tables",
        )
        .fetch_one(pool)
        .await?;
        let tick = tick_seconds();
        let own = |pid| stat(pid).map_or(0.0, |(_, ticks, _)| ticks as f64 * tick);
        Ok(Snapshot {
            postgres: postgres_ticks(self.postmaster) as f64 * tick,
            edge: own(self.edge),
            worker: own(self.worker),
            messages,
            attempts,
        })
    }
}

impl Snapshot {
    /// CPU per message from `self` until `later`; `None` when no message was accepted.
    pub fn per_message(&self, later: &Snapshot) -> Option<PerMessage> {
        let messages = later.messages - self.messages;
        let attempts = later.attempts - self.attempts;
        if messages <= 0 {
            return None;
        }
        let ms = |seconds: f64, n: i64| 1_000.0 * seconds / n as f64;
        Some(PerMessage {
            messages,
            attempts,
            postgres_ms: ms(later.postgres - self.postgres, messages),
            edge_ms: ms(later.edge - self.edge, messages),
            // Where most accepted messages were never attempted (a scenario that
            // empties the queue behind a held worker), the worker's time is mostly
            // waiting: no figure rather than a misleading one.
            worker_ms: (attempts * 2 >= messages).then(|| ms(later.worker - self.worker, attempts)),
        })
    }
}
