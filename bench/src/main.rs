//! `mailbridge-bench`: the benchmark suite. It starts everything itself on loopback —
//! a throwaway PostgreSQL with fsync on (a `250` still means committed), the
//! Microsoft 365 simulator, the real `mailbridge edge`, `worker` and `web` processes,
//! and a private Postfix relaying to `smtp-sink` — runs each scenario against
//! mailbridge and the reference in the same run, alternating, and prints medians and
//! ratios. docs/benchmarks.md explains the scenarios and records results.
//!
//! Over 500 lines: about 400 of them are the seven scenarios, one function each, which
//! `main` runs in turn and which share `Sizes` and `Report`; read together they are the
//! suite that docs/benchmarks.md describes.

mod cpu;
mod load;
mod reference;
mod stack;

use std::time::{Duration, Instant};

use clap::Parser;

use crate::{
    load::Load,
    reference::{Postfix, Sink, memory, smtp_source},
    stack::BenchStack,
};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks mailbridge against Postfix on loopback and prints the figures")]
struct Args {
    /// A tiny run (a few hundred messages) that checks the benchmark itself works.
    #[arg(long)]
    smoke: bool,
    /// Which scenarios to run (1–7), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7")]
    scenarios: Vec<u8>,
    /// Rounds of each comparison (the median is reported).
    #[arg(long)]
    rounds: Option<usize>,
    /// Start the stack, print its addresses and keep it running until Ctrl-C (for
    /// profiling by hand).
    #[arg(long)]
    hold: bool,
    /// After each scenario, print the statements that took most of PostgreSQL's
    /// time (loads pg_stat_statements).
    #[arg(long)]
    statements: bool,
}

/// The sizes of a run.
struct Sizes {
    rounds: usize,
    accept_messages: usize,
    login_messages: usize,
    e2e_messages: usize,
    latency_seconds: u64,
    sessions: usize,
    large_messages: usize,
    large_bytes: usize,
    log_rows: i64,
}

impl Sizes {
    fn of(args: &Args) -> Self {
        if args.smoke {
            Self {
                rounds: args.rounds.unwrap_or(1),
                accept_messages: 200,
                login_messages: 100,
                e2e_messages: 200,
                latency_seconds: 2,
                sessions: 100,
                large_messages: 2,
                large_bytes: 1024 * 1024,
                log_rows: 5_000,
            }
        } else {
            Self {
                rounds: args.rounds.unwrap_or(3),
                accept_messages: 20_000,
                login_messages: 5_000,
                e2e_messages: 20_000,
                latency_seconds: 30,
                sessions: 10_000,
                large_messages: 20,
                large_bytes: 25 * 1024 * 1024,
                log_rows: 1_000_000,
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

/// The table printed at the end.
#[derive(Default)]
struct Report {
    rows: Vec<[String; 4]>,
}

impl Report {
    fn row(&mut self, scenario: &str, measure: &str, value: String, note: String) {
        println!("  {scenario:<4} {measure:<58} {value:>14}  {note}");
        self.rows
            .push([scenario.into(), measure.into(), value, note]);
    }

    fn print(&self) {
        println!("\n| scenario | measure | value | note |\n|---|---|---|---|");
        for [s, m, v, n] in &self.rows {
            println!("| {s} | {m} | {v} | {n} |");
        }
    }
}

const MESSAGE_SIZE: usize = 10 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = Sizes::of(&args);
    mailbridge_core::tls::install_crypto_provider();
    println!("Starting PostgreSQL (fsync on), the Microsoft 365 simulator, mailbridge …");
    let stack = BenchStack::start(sizes.large_bytes * 2, args.statements).await?;
    if args.hold {
        stack.describe();
        tokio::signal::ctrl_c().await?;
        stack.stop().await;
        return Ok(());
    }
    let mut report = Report::default();
    println!("\nscenario and measure                                                 value");
    if args.statements {
        stack.top_statements(0).await?; // counts from here on
    }
    let processes = stack.processes();
    for scenario in &args.scenarios {
        let before = processes.snapshot(stack.pool()).await?;
        match scenario {
            1 => accept_rate(&stack, &sizes, &mut report).await?,
            2 => login_rate(&stack, &sizes, &mut report).await?,
            3 => end_to_end(&stack, &sizes, &mut report).await?,
            4 => concurrency(&stack, &sizes, &mut report).await?,
            5 => large_messages(&stack, &sizes, &mut report).await?,
            6 => message_log(&stack, &sizes, &mut report).await?,
            7 => sealing(&sizes, &mut report),
            other => anyhow::bail!("no scenario {other}"),
        }
        // Scenario 6 fills the log by SQL, 7 runs in this process: no messages of
        // their own to charge.
        if (1..=5).contains(scenario)
            && let Some(cost) = before.per_message(&processes.snapshot(stack.pool()).await?)
        {
            report.row(
                &scenario.to_string(),
                "CPU per message, ms: PostgreSQL / edge / worker",
                cost.text(),
                format!(
                    "{} messages, {} attempts (worker per attempt); PostgreSQL and edge per accepted message",
                    cost.messages, cost.attempts
                ),
            );
        }
        if args.statements {
            println!("  PostgreSQL's time in scenario {scenario}, by statement:");
            for (calls, total, mean, plan, query) in stack.top_statements(12).await? {
                println!(
                    "    {calls:>8} calls {total:>10.0} ms (mean {mean:.3} ms, planning {plan:.3} ms)  {query}"
                );
            }
        }
    }
    report.print();
    stack.stop().await;
    Ok(())
}

/// How long Postfix may take to deliver what it still holds after a run.
const POSTFIX_DRAIN: Duration = Duration::from_secs(600);

/// 1: new connection per message, no TLS, port-25 style allow-listed device;
/// `smtp-source -s 20 -m N -l 10240` against smtp-sink, Postfix and mailbridge.
async fn accept_rate(stack: &BenchStack, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let postfix = Postfix::start(sink.addr)?;
    let (from, to) = (stack.relay_sender.as_str(), stack.relay_recipient.as_str());
    let (mut ceiling, mut reference, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let (mut reference_held, mut ours_held) = (Vec::new(), Vec::new());
    let mut postfix_backlog = Vec::new();
    for _ in 0..sizes.rounds {
        let n = sizes.accept_messages;
        let sink_addr = sink.addr;
        ceiling.push(
            tokio::task::spawn_blocking(move || {
                smtp_source(sink_addr, 20, n, MESSAGE_SIZE, "a@b.example", "c@d.example")
            })
            .await??,
        );
        let pf = postfix.addr;
        reference.push(
            tokio::task::spawn_blocking(move || {
                smtp_source(pf, 20, n, MESSAGE_SIZE, "a@b.example", "c@d.example")
            })
            .await??,
        );
        // Each side is measured with the other quiet: Postfix's backlog is delivered
        // first (it competed for the CPU with mailbridge's measurement before), as
        // mailbridge's is removed by `reset_queue` before Postfix's next run.
        postfix_backlog.push(postfix.queued());
        postfix.drain(POSTFIX_DRAIN)?;
        let relay = stack.relay_addr;
        let (f, t) = (from.to_owned(), to.to_owned());
        ours.push(
            tokio::task::spawn_blocking(move || smtp_source(relay, 20, n, MESSAGE_SIZE, &f, &t))
                .await??,
        );
        stack.reset_queue().await?;
        // The accept path alone: deliveries held on both sides.
        postfix.hold_deliveries(true)?;
        reference_held.push(
            tokio::task::spawn_blocking(move || {
                smtp_source(pf, 20, n, MESSAGE_SIZE, "a@b.example", "c@d.example")
            })
            .await??,
        );
        postfix.hold_deliveries(false)?;
        postfix.drain(POSTFIX_DRAIN)?;
        stack.hold_deliveries(true)?;
        let (f, t) = (from.to_owned(), to.to_owned());
        let held =
            tokio::task::spawn_blocking(move || smtp_source(relay, 20, n, MESSAGE_SIZE, &f, &t))
                .await;
        stack.hold_deliveries(false)?;
        ours_held.push(held??);
        stack.reset_queue().await?;
    }
    let (reference_held, ours_held) = (median(&mut reference_held), median(&mut ours_held));
    let (ceiling, reference, ours) = (
        median(&mut ceiling),
        median(&mut reference),
        median(&mut ours),
    );
    let postfix_backlog = postfix_backlog.iter().max().copied().unwrap_or(0);
    report.row(
        "1",
        "smtp-source → smtp-sink (loopback ceiling), msg/s",
        format!("{ceiling:.0}"),
        String::new(),
    );
    report.row(
        "1",
        "smtp-source → Postfix (disk queue), accepted msg/s",
        format!("{reference:.0}"),
        format!("{postfix_backlog} still queued at its end (delivered before the next run)"),
    );
    report.row(
        "1",
        "smtp-source → mailbridge (committed in PostgreSQL), msg/s",
        format!("{ours:.0}"),
        String::new(),
    );
    report.row(
        "1",
        "mailbridge / Postfix",
        format!("{:.2}×", ours / reference),
        "target ≥ 4×".into(),
    );
    report.row(
        "1",
        "mailbridge / ceiling",
        format!("{:.0} %", 100.0 * ours / ceiling),
        "target ≥ 60 %".into(),
    );
    report.row(
        "1",
        "deliveries held: Postfix accepted msg/s",
        format!("{reference_held:.0}"),
        "defer_transports".into(),
    );
    report.row(
        "1",
        "deliveries held: mailbridge msg/s",
        format!("{ours_held:.0}"),
        format!(
            "worker paused; {:.2}× Postfix, {:.0} % of the ceiling",
            ours_held / reference_held,
            100.0 * ours_held / ceiling
        ),
    );
    Ok(())
}

/// 2: STARTTLS + AUTH PLAIN, one message per connection, and one login then 100.
async fn login_rate(stack: &BenchStack, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let (mut single, mut hundred) = (Vec::new(), Vec::new());
    let (mut single_held, mut hundred_held) = (Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        for (per_connection, held, results) in [
            (1, false, &mut single),
            (100, false, &mut hundred),
            (1, true, &mut single_held),
            (100, true, &mut hundred_held),
        ] {
            stack.hold_deliveries(held)?;
            let outcome = load::run(Load {
                messages_per_connection: per_connection,
                concurrency: 20,
                total: sizes.login_messages,
                ..stack.login_load(MESSAGE_SIZE)
            })
            .await?;
            if outcome.refused > 0 {
                println!("  (scenario 2: {} refused)", outcome.refused);
            }
            results.push(outcome.rate());
            stack.hold_deliveries(false)?;
            stack.reset_queue().await?;
        }
    }
    report.row(
        "2",
        "STARTTLS + AUTH PLAIN, 1 message per connection, msg/s",
        format!("{:.0}", median(&mut single)),
        "target ≥ 1 000".into(),
    );
    report.row(
        "2",
        "STARTTLS + AUTH PLAIN, 100 messages per connection, msg/s",
        format!("{:.0}", median(&mut hundred)),
        String::new(),
    );
    report.row(
        "2",
        "deliveries held: 1 message per connection, msg/s",
        format!("{:.0}", median(&mut single_held)),
        "worker paused".into(),
    );
    report.row(
        "2",
        "deliveries held: 100 messages per connection, msg/s",
        format!("{:.0}", median(&mut hundred_held)),
        "worker paused".into(),
    );
    Ok(())
}

/// 3: sustained rate from accept to delivered in the simulator, and latency from
/// `250` to delivered at a fixed 200 msg/s.
async fn end_to_end(stack: &BenchStack, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    stack.reset_queue().await?;
    let marker = stack.now().await?;
    let started = Instant::now();
    let outcome = load::run(Load {
        messages_per_connection: 100,
        concurrency: 20,
        total: sizes.e2e_messages,
        ..stack.login_load(MESSAGE_SIZE)
    })
    .await?;
    let accepted_in = started.elapsed();
    let delivered_in = stack
        .wait_delivered_since(marker, outcome.accepted, Duration::from_secs(600))
        .await?;
    report.row(
        "3",
        "accepted, msg/s",
        format!("{:.0}", outcome.accepted as f64 / accepted_in.as_secs_f64()),
        String::new(),
    );
    report.row(
        "3",
        "accepted and delivered to the simulator, msg/s",
        format!(
            "{:.0}",
            outcome.accepted as f64 / delivered_in.as_secs_f64()
        ),
        "target ≥ 1 000, queue not growing".into(),
    );

    let marker = stack.now().await?;
    let outcome = load::run_at_rate(
        stack.login_load(MESSAGE_SIZE),
        200,
        Duration::from_secs(sizes.latency_seconds),
    )
    .await?;
    stack
        .wait_delivered_since(marker, outcome.accepted, Duration::from_secs(120))
        .await?;
    let latencies = stack.latencies_since(marker).await?;
    report.row(
        "3",
        "at 200 msg/s: p50 accept → delivered, ms",
        format!("{:.0}", percentile(&latencies, 0.50)),
        format!("{} messages", latencies.len()),
    );
    report.row(
        "3",
        "at 200 msg/s: p95, ms",
        format!("{:.0}", percentile(&latencies, 0.95)),
        String::new(),
    );
    report.row(
        "3",
        "at 200 msg/s: p99, ms",
        format!("{:.0}", percentile(&latencies, 0.99)),
        "target < 250".into(),
    );
    Ok(())
}

/// 4: many authenticated TLS sessions held open; the edge's resident memory per session.
async fn concurrency(stack: &BenchStack, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let pid = stack.edge_pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = memory(pid);
    let started = Instant::now();
    let sessions = load::hold_open(&stack.login_load(MESSAGE_SIZE), sizes.sessions).await?;
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (during, _) = memory(pid);
    let per_session = (during.saturating_sub(before)) as f64 / sessions.len() as f64;
    report.row(
        "4",
        "authenticated TLS sessions held open",
        format!("{}", sessions.len()),
        format!("opened in {:.1} s", opened_in.as_secs_f64()),
    );
    report.row(
        "4",
        "edge resident memory per session, KB",
        format!("{:.1}", per_session / 1024.0),
        format!(
            "{} MB idle → {} MB; target < 30 KB",
            before >> 20,
            during >> 20
        ),
    );
    drop(sessions);
    Ok(())
}

/// 5: large attachments, several at once: throughput and peak memory of edge and worker.
async fn large_messages(
    stack: &BenchStack,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    stack.reset_queue().await?;
    let marker = stack.now().await?;
    let (edge_before, _) = memory(stack.edge_pid());
    let (worker_before, _) = memory(stack.worker_pid());
    let started = Instant::now();
    let outcome = load::run(Load {
        messages_per_connection: 1,
        concurrency: sizes.large_messages,
        total: sizes.large_messages,
        ..stack.large_load(sizes.large_bytes)
    })
    .await?;
    let accepted_in = started.elapsed();
    let delivered_in = stack
        .wait_delivered_since(marker, outcome.accepted, Duration::from_secs(900))
        .await?;
    let (_, edge_peak) = memory(stack.edge_pid());
    let (_, worker_peak) = memory(stack.worker_pid());
    let in_flight = (sizes.large_messages * sizes.large_bytes) as f64;
    let mb = |b: f64| b / (1024.0 * 1024.0);
    report.row(
        "5",
        &format!(
            "{} × {} MB at once: accepted, MB/s",
            sizes.large_messages,
            sizes.large_bytes >> 20
        ),
        format!("{:.1}", mb(in_flight) / accepted_in.as_secs_f64()),
        format!("{} accepted", outcome.accepted),
    );
    report.row(
        "5",
        "accepted and delivered (upload sessions), MB/s",
        format!("{:.1}", mb(in_flight) / delivered_in.as_secs_f64()),
        String::new(),
    );
    report.row(
        "5",
        "edge peak resident memory / bytes in flight",
        format!(
            "{:.2}×",
            (edge_peak.saturating_sub(edge_before)) as f64 / in_flight
        ),
        format!("peak {} MB; target < 3×", edge_peak >> 20),
    );
    report.row(
        "5",
        "worker peak resident memory / bytes in flight",
        format!(
            "{:.2}×",
            (worker_peak.saturating_sub(worker_before)) as f64 / in_flight
        ),
        format!("peak {} MB; target < 3×", worker_peak >> 20),
    );
    Ok(())
}

/// 7: what sealing queued bodies with the master key costs: seal (edge, at commit)
/// and open (worker, before delivery) of one message, on one core, in this build.
fn sealing(sizes: &Sizes, report: &mut Report) {
    use mailbridge_core::crypto::MasterKey;
    let key = MasterKey::from_base64(&MasterKey::generate_base64()).expect("a generated key");
    for (label, size, count) in [
        ("10 KiB", MESSAGE_SIZE, sizes.accept_messages.max(1_000)),
        ("large", sizes.large_bytes, sizes.large_messages.max(2)),
    ] {
        let body = vec![b'x'; size];
        let started = Instant::now();
        for i in 0..count {
            let context = format!("message-body:{i}");
            let sealed = key.seal(&context, &body);
            let opened = key.open(&context, &sealed).expect("opens");
            assert_eq!(opened.len(), body.len());
        }
        let elapsed = started.elapsed().as_secs_f64();
        let per_message = elapsed / count as f64;
        report.row(
            "7",
            &format!("seal + open one {label} body ({} bytes)", size),
            format!("{:.1} µs", per_message * 1e6),
            format!(
                "{:.0} MB/s; {count} messages",
                (2 * size * count) as f64 / elapsed / 1e6
            ),
        );
    }
}

/// 6: the message log's search through the API with many messages in the database.
async fn message_log(stack: &BenchStack, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let filled = Instant::now();
    let probe = stack.fill_message_log(sizes.log_rows).await?;
    println!(
        "  (scenario 6: {} messages in the log after {:.0} s)",
        probe.total,
        filled.elapsed().as_secs_f64()
    );
    let shapes = [
        ("newest first, no filter", "limit=50".to_owned()),
        ("one customer", format!("customer={}", probe.tenant)),
        (
            "one customer, failed",
            format!("customer={}&state=failed", probe.tenant),
        ),
        ("state failed, all customers", "state=failed".to_owned()),
        ("by sender", format!("sender={}", probe.sender)),
        ("by recipient", format!("recipient={}", probe.recipient)),
        (
            "one customer, one day",
            format!(
                "customer={}&from={}&until={}",
                probe.tenant, probe.day_from, probe.day_until
            ),
        ),
        ("one device", format!("device={}", probe.device)),
        ("page 20 (cursor)", format!("after={}", probe.deep_cursor)),
    ];
    for (name, query) in shapes {
        let mut times = Vec::new();
        for _ in 0..20 {
            times.push(
                stack
                    .api_get(&format!("/api/v1/messages?{query}"))
                    .await?
                    .as_secs_f64()
                    * 1000.0,
            );
        }
        times.sort_by(|a, b| a.total_cmp(b));
        report.row(
            "6",
            &format!("message log: {name}, p95 ms"),
            format!("{:.1}", percentile(&times, 0.95)),
            format!("median {:.1}; target < 100", percentile(&times, 0.5)),
        );
    }
    Ok(())
}
