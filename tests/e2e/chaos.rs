//! The chaos suite: "no accepted message is ever lost", under steady load from real
//! SMTP clients (devices of several customers sending at once, each message unique,
//! a message that got no `250` sent again as a device would), while the edge is
//! killed, workers are killed, PostgreSQL restarts and becomes unreachable, Microsoft
//! is down, throttles, fails, drops and dawdles, and a backlog builds and drains.
//! Each ends with
//! the same reconciliation (chaos_load::reconcile): every `250` is in the mailbox byte
//! for byte as sent, or failed for a reason the simulator was told to give.
//!
//! Sizes grow with `MAILBRIDGE_CHAOS_SCALE` (default 1, a CI run); the long run is
//! `MAILBRIDGE_CHAOS_SCALE=20 cargo test --release -p mailbridge --test e2e chaos --
//! --test-threads=1 --nocapture` (docs/reliability.md has the figures).

use mailbridge_core::ids::TenantId;
use std::time::{Duration, Instant};

use chrono::Utc;
use mailbridge::stack::{Stack, StackOptions};
use mailbridge_core::{Settings, db, queue::GRAPH_CONCURRENCY_PER_MAILBOX};
use mailbridge_devtools::scratch_postgres::ScratchPostgres;
use mailbridge_m365_sim::fault_injection::{Effect, Endpoint, Fault};
use uuid::Uuid;

use crate::{
    chaos_load::{
        EdgeProcess, Load, LoadOptions, Outcome, Target, TcpGate, Workers, enqueue_backlog, fleet,
        queue_id_of, random_below, reconcile, request_rate, rss_kib, scale, skip_queue_time,
        skip_to_next_due,
    },
    harness::{TestApp, database_url},
};

/// How long the queue may take to settle once the load has stopped.
fn settle_within() -> Duration {
    Duration::from_secs(120 + 30 * scale() as u64)
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Inserts into the queue waiting for the lock on `messages`: the edge committing
/// messages whose final dot was sent (nothing else inserts there in these tests).
async fn commits_waiting(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE NOT l.granted AND l.relation = 'messages'::regclass
            AND a.query ILIKE '%insert into messages%'",
    )
    .fetch_one(pool)
    .await
    .expect("reading pg_stat_activity")
}

/// Queue entries of `tenants`.
async fn committed(pool: &sqlx::PgPool, tenants: &[TenantId]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE tenant_id = ANY($1)")
        .bind(tenants)
        .fetch_one(pool)
        .await
        .expect("counting messages")
}

/// Takes a lock that every insert into the queue waits for, and returns (holding it)
/// once messages wait for it: devices that sent their final dot and wait for a reply.
async fn hold_commits(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    assert!(
        soon(async || commits_waiting(pool).await > 0).await,
        "no message reached its commit within 20 s"
    );
    lock
}

/// Waits (up to 20 s) until `ready` is true, then a moment longer so that more
/// sessions join; false if it never was.
async fn soon(mut ready: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ready().await {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// `mailbridge edge` as a process, SIGKILLed again and again under load and started
/// on the same port: at random moments, while messages wait for their commit, and
/// with messages committed whose `250` has not reached the device. Nothing that got a
/// `250` is lost; a commit whose `250` was lost arrives twice (counted), no client hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_killed_at_any_moment_loses_no_accepted_message() {
    let scale = scale();
    let app = TestApp::spawn().await;
    let praxis = app.add_tenant("Praxis Absturz").await;
    let klinik = app.add_tenant("Klinik Absturz").await;
    let tenants = [praxis.tenant.id, klinik.tenant.id];
    let devices = fleet(&app, &[&praxis, &klinik], 3 + scale).await;
    let mut edge = EdgeProcess::start(&app).await;
    // The devices reach the edge through a gate that can hold its replies.
    let gate = TcpGate::start(edge.addr).await;
    let target = Target {
        addr: gate.addr,
        ca_pem: edge.ca_pem.clone(),
    };
    let load = Load::start(target, devices, LoadOptions::default());

    let kills = 6 * scale;
    let mut recoveries = Vec::new();
    let (mut killed_in_commit, mut killed_before_250) = (0, 0);
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + random_below(2000))).await;
        let kind = match kill % 3 {
            // Messages whose final dot was sent wait for their commit (the test
            // holds a lock the insert needs); the edge dies before it commits.
            1 => {
                let lock = hold_commits(app.pool()).await;
                killed_in_commit += commits_waiting(app.pool()).await;
                edge.kill();
                lock.rollback().await.unwrap();
                "between DATA and commit"
            }
            // Messages waiting for their commit are committed while the gate holds
            // the edge's replies; the edge dies and the connections with it: their
            // 250 never arrives.
            2 => {
                let lock = hold_commits(app.pool()).await;
                gate.hold_replies();
                let before = committed(app.pool(), &tenants).await;
                lock.rollback().await.unwrap();
                let pool = app.pool();
                assert!(
                    soon(async || committed(pool, &tenants).await > before).await,
                    "the waiting messages were not committed"
                );
                edge.kill();
                killed_before_250 += committed(pool, &tenants).await - before;
                gate.cut();
                gate.open();
                "committed, 250 not yet received"
            }
            // Anywhere: in a greeting, in AUTH, in DATA, in a commit, in a 250.
            _ => {
                edge.kill();
                "at random"
            }
        };
        tokio::time::sleep(Duration::from_millis(random_below(500))).await;
        let restarted = Instant::now();
        edge.restart().await;
        let up = restarted.elapsed();
        let accepting = load
            .ledger
            .first_acceptance_after(restarted, Duration::from_secs(60))
            .await;
        recoveries.push((kind, up, accepting));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ledger = load.stop().await;
    let attempts = ledger.attempts();
    let broken = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Broken(_)))
        .count();
    let hangs = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Timeout(_)))
        .count();
    let report = reconcile(
        "edge SIGKILL",
        app.pool(),
        &app.stack.simulator.directory,
        &ledger,
        &[],
        settle_within(),
    )
    .await;
    println!(
        "chaos[edge SIGKILL] {kills} kills: {killed_in_commit} messages waiting for their commit, {killed_before_250} committed with their 250 on the way; {broken} tries broken, {hangs} hangs"
    );
    for (i, (kind, up, accepting)) in recoveries.iter().enumerate() {
        println!(
            "chaos[edge SIGKILL] kill {} ({kind}): greeting again {} after the restart began, first 250 after {}",
            i + 1,
            seconds(*up),
            seconds(*accepting)
        );
    }
    assert!(broken > 0, "no kill hit a session");
    assert_eq!(hangs, 0, "a client waited out its timeout");
    assert!(killed_in_commit > 0 && killed_before_250 > 0);
    // A commit whose 250 was lost is sent again by its device: a duplicate, counted.
    assert!(report.unacknowledged_commits >= killed_before_250 as usize);
    assert!(report.resubmitted_copies >= killed_before_250 as usize);
    assert!(
        report.accepted >= 2 * kills,
        "too little load to prove anything"
    );
    assert_eq!(
        report.not_accepted, 0,
        "every device got its messages through in the end"
    );
    app.stack.shutdown().await;
}

/// The interesting moment of a worker's death: Microsoft has accepted messages it
/// sent (the simulator stores them, then holds its answer) and their attempts are not
/// recorded. Waits for such a moment and returns the worker's pid and those messages.
async fn worker_between_accept_and_record(
    app: &TestApp,
    workers: &Workers,
    answer_delay: Duration,
) -> (u32, Vec<Uuid>) {
    // Generous: on a machine busy with other tests the first deliveries can take
    // long to begin; what is asserted is that the moment comes, not how soon.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let recent: Vec<Uuid> = app
            .stack
            .simulator
            .directory
            .delivered()
            .iter()
            .filter(|m| {
                (Utc::now() - m.received_at).to_std().unwrap_or_default() < answer_delay / 2
            })
            .filter_map(|m| queue_id_of(&m.mime))
            .collect();
        let owners: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT message_id, split_part(lease_owner, ':', 2) FROM queue
              WHERE message_id = ANY($1) AND lease_owner IS NOT NULL",
        )
        .bind(&recent)
        .fetch_all(app.pool())
        .await
        .unwrap();
        let pids = workers.pids();
        if let Some(pid) = owners
            .iter()
            .filter_map(|(_, pid)| pid.parse::<u32>().ok())
            .find(|pid| pids.contains(pid))
        {
            let victims = owners
                .iter()
                .filter(|(_, owner)| owner.parse() == Ok(pid))
                .map(|(id, _)| *id)
                .collect();
            return (pid, victims);
        }
        if Instant::now() > deadline {
            let (queued, leased, owners): (i64, i64, Vec<String>) = sqlx::query_as(
                "SELECT count(*), count(lease_owner),
                        coalesce(array_agg(DISTINCT lease_owner) FILTER (WHERE lease_owner IS NOT NULL), '{}')
                   FROM queue",
            )
            .fetch_one(app.pool())
            .await
            .unwrap();
            // What the workers' connections are doing, and who is registered as
            // alive: enough to tell a stuck release from stuck deliveries.
            let registered: Vec<String> = sqlx::query_scalar("SELECT identity FROM workers")
                .fetch_all(app.pool())
                .await
                .unwrap();
            let backends: Vec<String> = sqlx::query_scalar(
                "SELECT format('%s x %s/%s/%s', count(*), state, wait_event_type, wait_event)
                   FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                  GROUP BY state, wait_event_type, wait_event",
            )
            .fetch_all(app.pool())
            .await
            .unwrap();
            panic!(
                "no delivery between Microsoft's acceptance and its record within 120 s: \
                 Microsoft has {} messages ({} in the last {:?}), the queue {queued} ({leased} \
                 leased, by {owners:?}), live workers {pids:?}, registered {registered:?}, \
                 backends {backends:?}",
                app.stack.simulator.directory.delivered().len(),
                recent.len(),
                answer_delay / 2,
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Three `mailbridge worker` processes on one queue; one is SIGKILLed whenever it has
/// deliveries Microsoft accepted but it has not recorded (the simulator answers late),
/// and replaced. Every such delivery is made again once its lease expires (a counted
/// duplicate, never a loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_after_microsoft_accepted_lose_nothing() {
    let scale = scale();
    let app = TestApp::spawn_without_worker().await;
    let praxis = app.add_tenant("Praxis Worker Tod").await;
    let klinik = app.add_tenant("Klinik Worker Tod").await;
    let devices = fleet(&app, &[&praxis, &klinik], 2 + scale).await;
    let directory = &app.stack.simulator.directory;
    // Microsoft takes each message at once and answers three seconds later: a wide
    // window in which a worker dies with its delivery done but not recorded.
    let answer_delay = Duration::from_secs(3);
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphSend,
        tenant: None,
        mailbox: None,
        effect: Effect::AcceptThenDelay {
            seconds: answer_delay.as_secs(),
        },
        times: None,
    });
    // The default lease: a dead worker's messages must not wait for it (its presence
    // lock is gone at once, and the others release its leases).
    let lease_seconds = 300;
    let mut workers = Workers::start(&app, database_url(&app.database), 3, lease_seconds);
    let load = Load::start(
        Target::of(&app),
        devices,
        LoadOptions {
            pause_ms: (200, 800),
            ..LoadOptions::default()
        },
    );

    let kills = 3 * scale;
    let mut victims = std::collections::BTreeSet::new();
    let mut kill_times = Vec::new();
    for _ in 0..kills {
        let (pid, caught) = worker_between_accept_and_record(&app, &workers, answer_delay).await;
        workers.kill_and_replace(pid);
        // Still leased to the dead worker: nobody recorded the delivery Microsoft has.
        let unrecorded: Vec<Uuid> = sqlx::query_scalar(
            "SELECT message_id FROM queue WHERE message_id = ANY($1)
                AND split_part(lease_owner, ':', 2) = $2",
        )
        .bind(&caught)
        .bind(pid.to_string())
        .fetch_all(app.pool())
        .await
        .unwrap();
        victims.extend(unrecorded.iter().copied());
        kill_times.push((Utc::now(), unrecorded));
        tokio::time::sleep(Duration::from_millis(500 + random_below(1500))).await;
    }
    directory.clear_faults();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ledger = load.stop().await;
    // Every accepted message delivered within 90 s after the load ends.
    let report = reconcile(
        "worker SIGKILL",
        app.pool(),
        directory,
        &ledger,
        &[],
        Duration::from_secs(90),
    )
    .await;
    workers.assert_alive();
    workers.stop();
    let copies = |id: &Uuid| {
        directory
            .delivered()
            .iter()
            .filter(|m| queue_id_of(&m.mime) == Some(*id))
            .count()
    };
    let resent = victims.iter().filter(|id| copies(id) >= 2).count();
    // Recovery: how long after its worker's death a caught message arrived again.
    let again_after: Vec<f64> = kill_times
        .iter()
        .flat_map(|(killed, ids)| {
            ids.iter().filter_map(move |id| {
                directory
                    .delivered()
                    .iter()
                    .filter(|m| queue_id_of(&m.mime) == Some(*id) && m.received_at > *killed)
                    .map(|m| (m.received_at - *killed).num_milliseconds() as f64 / 1000.0)
                    .reduce(f64::min)
            })
        })
        .collect();
    let slowest_again = again_after.iter().copied().fold(0.0, f64::max);
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_attempts a JOIN messages m ON m.id = a.message_id
          WHERE m.tenant_id = ANY($1)",
    )
    .bind(vec![praxis.tenant.id, klinik.tenant.id])
    .fetch_one(app.pool())
    .await
    .unwrap();
    println!(
        "chaos[worker SIGKILL] {kills} kills of 3 workers (lease {lease_seconds} s); {} messages caught between Microsoft's acceptance and their record, {resent} of them delivered again after their worker died (at most {slowest_again:.1} s after the kill); {attempts} attempts recorded",
        victims.len()
    );
    assert!(!victims.is_empty(), "no kill hit the window");
    // At least once: a delivery nobody recorded is made again, never dropped.
    assert_eq!(
        resent,
        victims.len(),
        "a caught delivery was not made again"
    );
    assert!(report.duplicated >= victims.len());
    // Only what was in flight at a kill can arrive twice.
    assert!(
        report.redelivered_copies <= kills * GRAPH_CONCURRENCY_PER_MAILBOX as usize * 2,
        "{} copies delivered again for {kills} kills",
        report.redelivered_copies
    );
    app.stack.shutdown().await;
}

/// A stack on a PostgreSQL of its own (it is restarted), reached through a gate that
/// can make it unreachable; no worker in the stack (workers run as processes).
async fn stack_behind_gate() -> (ScratchPostgres, TcpGate, TestApp, sqlx::PgPool) {
    let postgres = crate::harness::own_postgres().await;
    let direct = db::pool(&postgres.url("mailbridge"), db::PoolOptions::default()).unwrap();
    db::migrate(&direct).await.unwrap();
    let gate = TcpGate::start(([127, 0, 0, 1], postgres.port()).into()).await;
    let through_gate = gate.url(&postgres.url("mailbridge"), postgres.port());
    let pool = db::pool(&through_gate, db::PoolOptions::default()).unwrap();
    let mut settings = Settings::from_lookup(|_| None).unwrap();
    settings.edge.hostname = "relay.mailbridge.test".into();
    settings.worker.sweep_seconds = 1;
    let master_key_base64 = crate::harness::with_master_key(&mut settings);
    let stack = Stack::start(
        pool,
        settings,
        StackOptions {
            start_worker: false,
            ..StackOptions::ephemeral()
        },
    )
    .await
    .unwrap();
    let app = TestApp {
        stack,
        database: "mailbridge".into(),
        master_key_base64,
    };
    (postgres, gate, app, direct)
}

/// PostgreSQL restarted (immediate shutdown) and then unreachable (every byte held, as
/// in a partition) under load: devices only ever get `250`, `451 4.3.0` or
/// `454 4.7.0`, within the edge's own bounds; the worker processes survive, resume,
/// and everything accepted is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_and_unreachable_under_load_loses_nothing() {
    let scale = scale();
    let (mut postgres, gate, app, direct) = stack_behind_gate().await;
    let praxis = app.add_tenant("Praxis Datenbank").await;
    let klinik = app.add_tenant("Klinik Datenbank").await;
    let devices = fleet(&app, &[&praxis, &klinik], 3 + scale).await;
    let through_gate = gate.url(&postgres.url("mailbridge"), postgres.port());
    let mut workers = Workers::start(&app, through_gate, 2, 10);
    let load = Load::start(Target::of(&app), devices, LoadOptions::default());
    // In CI the database is unreachable for 10 s; in a long run for 30 s.
    let unreachable = Duration::from_secs(if scale > 1 { 30 } else { 10 });

    let mut faults = Vec::new();
    for _ in 0..(1 + scale / 5) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Restart: an immediate shutdown (every connection breaks), then a start.
        let began = Instant::now();
        postgres = tokio::task::spawn_blocking(move || {
            postgres.pause();
            std::thread::sleep(Duration::from_secs(2));
            postgres.resume().expect("PostgreSQL back");
            postgres
        })
        .await
        .unwrap();
        let ended = Instant::now();
        let recovered = load
            .ledger
            .first_acceptance_after(ended, Duration::from_secs(90))
            .await;
        faults.push(("restart", ended - began, recovered, began, ended));

        tokio::time::sleep(Duration::from_secs(3)).await;
        let began = Instant::now();
        gate.stall();
        tokio::time::sleep(unreachable).await;
        gate.open();
        let ended = Instant::now();
        let recovered = load
            .ledger
            .first_acceptance_after(ended, Duration::from_secs(90))
            .await;
        faults.push(("unreachable", ended - began, recovered, began, ended));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ledger = load.stop().await;
    workers.assert_alive();
    let report = reconcile(
        "PostgreSQL",
        &direct,
        &app.stack.simulator.directory,
        &ledger,
        &[],
        settle_within(),
    )
    .await;
    workers.assert_alive();
    workers.stop();

    let attempts = ledger.attempts();
    // Per reply: how many, and the longest a device waited for it.
    let mut replies = std::collections::BTreeMap::<String, (usize, Duration)>::new();
    for attempt in &attempts {
        let reply = match &attempt.outcome {
            Outcome::Accepted(_) => "250 2.0.0".to_owned(),
            Outcome::Temporary { code, text } => {
                let enhanced = text.split_whitespace().find(|w| w.starts_with("4."));
                format!("{code} {}", enhanced.unwrap_or(""))
            }
            other => panic!("only a 250 or a temporary refusal, never {other:?}"),
        };
        let entry = replies.entry(reply).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(attempt.took);
    }
    for (what, lasted, recovered, began, ended) in &faults {
        let during = ledger.attempts_ending(*began, *ended + Duration::from_secs(1));
        let refused = during
            .iter()
            .filter(|a| !matches!(a.outcome, Outcome::Accepted(_)))
            .count();
        println!(
            "chaos[PostgreSQL] {what} for {}: {} tries ended meanwhile, {refused} refused; first 250 {} after it ended",
            seconds(*lasted),
            during.len(),
            seconds(*recovered)
        );
    }
    for (reply, (count, slowest)) in &replies {
        println!(
            "chaos[PostgreSQL] {reply}: {count} times, the slowest after {}",
            seconds(*slowest)
        );
        assert!(
            ["250 2.0.0", "451 4.3.0", "454 4.7.0"].contains(&reply.as_str()),
            "a reply other than 250, 451 4.3.0 (message not queued) or 454 4.7.0 (login not checked): {reply}"
        );
    }
    assert!(
        replies.len() > 1,
        "the outages refused nothing: no load met them"
    );
    assert_eq!(
        report.not_accepted, 0,
        "every device got its messages through in the end"
    );
    drop(gate);
    app.stack.shutdown().await;
}

/// Microsoft misbehaving for one customer each: the token endpoint down, a storm of
/// `429` with `Retry-After`, `503`s, dropped connections and a slow Graph, permanent
/// refusals. No message is tried more often than its backoff allows, a throttled
/// mailbox is left alone for its `Retry-After`, retries converge, exactly the refused
/// messages fail, and the request rate during the recovery is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_faults_converge_without_a_thundering_herd() {
    let scale = scale();
    let app = TestApp::spawn_without_worker().await;
    let token_down = app.add_tenant("Praxis Token Ausfall").await;
    let throttled = app.add_tenant("Praxis Gedrosselt").await;
    let flaky = app.add_tenant("Klinik Wackelig").await;
    let refused = app.add_tenant("Labor Verweigert").await;
    let tenants = [&token_down, &throttled, &flaky, &refused];
    let devices = fleet(&app, &tenants, 1 + scale).await;
    let directory = &app.stack.simulator.directory;
    let entra = |t: &crate::harness::TestTenant| t.tenant.entra_tenant_id.map(|e| e.as_uuid());
    let http = |status: u16, code: &str, retry_after: Option<u64>| Effect::Http {
        status,
        code: code.into(),
        message: format!("{code} (injected)"),
        retry_after,
    };
    let fault = |endpoint, tenant, effect, times| Fault {
        endpoint,
        tenant,
        mailbox: None,
        effect,
        times,
    };
    let retry_after = 10;
    let permanent = 3 * scale as u32;
    let faults = [
        // The token endpoint down for one customer (before any token was issued).
        fault(
            Endpoint::Token,
            entra(&token_down),
            http(503, "ServiceUnavailable", None),
            None,
        ),
        // A storm of 429s with Retry-After for another's mailbox.
        fault(
            Endpoint::GraphSend,
            entra(&throttled),
            http(429, "ApplicationThrottled", Some(retry_after)),
            None,
        ),
        // 503s, dropped connections and a slow Graph for a third.
        fault(
            Endpoint::GraphSend,
            entra(&flaky),
            http(503, "ServiceUnavailable", None),
            Some(10),
        ),
        fault(Endpoint::GraphSend, entra(&flaky), Effect::Drop, Some(10)),
        fault(
            Endpoint::GraphSend,
            entra(&flaky),
            Effect::Delay { seconds: 3 },
            Some(10),
        ),
        // A permanent refusal for a few of the fourth's messages.
        fault(
            Endpoint::GraphSend,
            entra(&refused),
            http(403, "ErrorSendAsDenied", None),
            Some(permanent),
        ),
    ];
    for f in faults {
        directory.inject_fault(f);
    }
    let worker_processes = 2;
    let mut workers = Workers::start(&app, database_url(&app.database), worker_processes, 30);
    let load = Load::start(
        Target::of(&app),
        devices,
        LoadOptions {
            pause_ms: (100, 500),
            max_body: 32 * 1024,
            ..LoadOptions::default()
        },
    );
    // Shorter than the first backoff (48 s at the least): one try per message.
    let outage = Duration::from_secs((8 + 4 * scale as u64).min(40));
    let began = Utc::now();
    tokio::time::sleep(outage).await;
    // The outage ends.
    directory.clear_faults();
    let cleared = Utc::now();
    let cleared_at = Instant::now();
    let records = directory.requests();

    // During the outage no message was tried more than once: the first retry is a
    // minute away (the backoff), a throttled mailbox's further away still.
    let of = |t: &crate::harness::TestTenant, endpoint: Endpoint| {
        let tenant = entra(t);
        move |r: &mailbridge_m365_sim::fault_injection::RequestRecord| {
            r.endpoint == endpoint && r.tenant == tenant
        }
    };
    let token_requests = request_rate(&records, began, cleared, of(&token_down, Endpoint::Token));
    let token_messages = load.ledger.accepted_of(token_down.tenant.id, cleared_at);
    println!(
        "chaos[upstream] token endpoint down {}: {} token requests ({:.1}/s, at most {} in one second) for {token_messages} messages",
        seconds(outage),
        token_requests.total,
        token_requests.mean_per_second,
        token_requests.peak_per_second
    );
    assert!(token_requests.total > 0, "the outage met no message");
    assert!(
        token_requests.total <= token_messages,
        "{} token requests for {token_messages} messages during the outage",
        token_requests.total
    );
    let flaky_requests = request_rate(&records, began, cleared, of(&flaky, Endpoint::GraphSend));
    let flaky_messages = load.ledger.accepted_of(flaky.tenant.id, cleared_at);
    assert!(
        flaky_requests.total <= flaky_messages,
        "{} Graph requests for {flaky_messages} messages while Graph failed",
        flaky_requests.total
    );

    // A throttled mailbox is left alone until its Retry-After has passed: after the
    // first 429 only requests already on their way arrive (at most the mailbox's
    // concurrency), and one from each worker process that has not had a 429 yet.
    let throttled_requests: Vec<_> = records
        .iter()
        .filter(|r| of(&throttled, Endpoint::GraphSend)(r) && r.at < cleared)
        .collect();
    let first_429 = throttled_requests
        .iter()
        .find(|r| r.faulted)
        .expect("the throttled mailbox was tried")
        .at;
    let window_end = (first_429 + chrono::Duration::seconds(retry_after as i64)).min(cleared);
    let during_retry_after = throttled_requests
        .iter()
        .filter(|r| r.at > first_429 && r.at < window_end)
        .count();
    println!(
        "chaos[upstream] 429 storm (Retry-After {retry_after} s): {} requests to the throttled mailbox, {during_retry_after} of them within {} s after the first 429",
        throttled_requests.len(),
        (window_end - first_429).num_seconds()
    );

    // Recovery: retries come back on their backoff (jittered). Skip the wait for the
    // first one (nothing was due meanwhile); from there the retries come as they would.
    // The workers remember the Retry-After in real time: let it run out first (the
    // first retry would have come long after it).
    let last_429 = records
        .iter()
        .filter(|r| of(&throttled, Endpoint::GraphSend)(r) && r.faulted)
        .map(|r| r.at)
        .max()
        .unwrap_or(first_429);
    let remembered_until = last_429 + chrono::Duration::seconds(retry_after as i64 + 1);
    if let Ok(wait) = (remembered_until - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    let skipped = skip_to_next_due(app.pool()).await;
    let ledger = load.stop().await;
    let report = reconcile(
        "upstream",
        app.pool(),
        directory,
        &ledger,
        &["ErrorSendAsDenied"],
        settle_within(),
    )
    .await;
    workers.assert_alive();
    workers.stop();
    let recovered = Utc::now();
    let recovery = request_rate(&directory.requests(), cleared, recovered, |r| {
        r.endpoint == Endpoint::GraphSend || r.endpoint == Endpoint::Token
    });
    println!(
        "chaos[upstream] recovery: every message settled {} after the faults ended ({} of waiting skipped); {} requests to Microsoft meanwhile, {:.1}/s on average, at most {} in one second",
        seconds(cleared_at.elapsed()),
        seconds(skipped),
        recovery.total,
        recovery.mean_per_second,
        recovery.peak_per_second
    );
    let refusals = directory
        .requests()
        .iter()
        .filter(|r| of(&refused, Endpoint::GraphSend)(r) && r.faulted)
        .count();
    assert!(refusals > 0, "no permanent refusal was given");
    assert_eq!(
        report.failed, refusals,
        "each permanent refusal failed one message, and nothing else failed"
    );
    assert!(
        during_retry_after <= GRAPH_CONCURRENCY_PER_MAILBOX as usize + worker_processes,
        "{during_retry_after} requests to a throttled mailbox within its Retry-After"
    );
    app.stack.shutdown().await;
}

/// Graph down while a backlog builds (thousands through the queue API, devices on
/// top): the worker's memory stays bounded; once Graph is back the backlog drains,
/// each customer's oldest due first, the customers in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_during_an_outage_drains_fairly_in_bounded_memory() {
    let scale = scale();
    let app = TestApp::spawn_without_worker().await;
    let big = app.add_tenant("Klinik Gross").await;
    let medium = app.add_tenant("Praxis Mittel").await;
    let small = app.add_tenant("Praxis Klein").await;
    let devices = fleet(&app, &[&big, &small], 2).await;
    let directory = &app.stack.simulator.directory;
    let mut workers = Workers::start(&app, database_url(&app.database), 1, 60);
    let worker = workers.pids()[0];

    // Warm up: the worker has delivered some, its memory is what it needs.
    let load = Load::start(
        Target::of(&app),
        devices,
        LoadOptions {
            pause_ms: (200, 600),
            max_body: 16 * 1024,
            ..LoadOptions::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while directory.delivered().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered before the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let baseline = rss_kib(worker).expect("the worker's memory");

    // Microsoft goes away; the backlog builds: the queue API for the bulk (the big
    // customer first, the small one last, so that first-come-first-served would make
    // it wait for all of the others), devices on top.
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphSend,
        tenant: None,
        mailbox: None,
        effect: Effect::Http {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: "injected outage".into(),
            retry_after: None,
        },
        times: None,
    });
    let outage_began = Utc::now();
    let total = 2000 * scale;
    let body_size = (96 * 1024 * 1024 / total).clamp(2 * 1024, 48 * 1024);
    let ledger = load.ledger.clone();
    enqueue_backlog(
        app.pool(),
        app.master_key(),
        &ledger,
        &big,
        total * 6 / 10,
        body_size,
    )
    .await;
    enqueue_backlog(
        app.pool(),
        app.master_key(),
        &ledger,
        &medium,
        total * 3 / 10,
        body_size,
    )
    .await;
    enqueue_backlog(
        app.pool(),
        app.master_key(),
        &ledger,
        &small,
        total / 10,
        body_size,
    )
    .await;
    let ledger = load.stop().await;
    // The worker meets the outage and holds each customer's mailbox: the backlog
    // waits without being tried message by message, each mailbox probed on its
    // schedule.
    let mut peak = baseline;
    let deadline = Instant::now() + Duration::from_secs(120 + 60 * scale as u64);
    loop {
        peak = peak.max(rss_kib(worker).expect("the worker's memory"));
        let (held, in_flight): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM delivery_holds WHERE scope = 'mailbox'),
                    (SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL)",
        )
        .fetch_one(app.pool())
        .await
        .unwrap();
        if held == 3 && in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} of 3 mailboxes held during the outage, {in_flight} messages in flight"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the backlog stand while held: a few probes, not a request per message.
    let requests_before = directory.requests().len();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let tried_while_held = directory.requests().len() - requests_before;
    assert!(
        tried_while_held <= 12,
        "{tried_while_held} requests in 15 s of three held mailboxes"
    );
    let outage_ended = Utc::now();
    let during = request_rate(&directory.requests(), outage_began, outage_ended, |r| {
        r.endpoint == Endpoint::GraphSend
    });
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM queue WHERE lease_owner IS NULL")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let backlog_bytes: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(m.size_bytes), 0)::bigint
           FROM queue q JOIN messages m ON m.id = q.message_id WHERE q.lease_owner IS NULL",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();

    // Microsoft is back. Skip the backoff: every hold's probe and every retry is due,
    // in its order.
    directory.clear_faults();
    // The holds' probes too: each mailbox's probe backs off on its own schedule, and
    // a drain that waited for the last of them would start the customers apart.
    let latest_due: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM greatest(
                    (SELECT max(due_at) FROM queue WHERE lease_owner IS NULL),
                    (SELECT max(next_probe_at) FROM delivery_holds)) - now())::float8",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    // Held messages keep the due time they were queued with: a batch queued in one
    // transaction shares it, and such ties may go in any order (the rank below).
    let due: Vec<(Uuid, TenantId, i64)> = sqlx::query_as(
        "SELECT message_id, tenant_id, dense_rank() OVER (ORDER BY due_at) FROM queue
          WHERE lease_owner IS NULL ORDER BY due_at, message_id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    let drain_began = Instant::now();
    let drain_began_at = Utc::now();
    skip_queue_time(
        app.pool(),
        Duration::from_secs_f64(latest_due.max(0.0) + 1.0),
    )
    .await;
    let mut drain_peak = 0;
    // A message its mailbox had no free slot for is put back "a little" (2 s): in a
    // backlog, that is behind everything due before then. Such messages wait in the
    // queue with a due time after the drain began, for 2 s: polled every 50 ms, each
    // is seen; they are counted, and left out of the order below.
    let mut deferred = std::collections::HashSet::new();
    loop {
        drain_peak = drain_peak.max(rss_kib(worker).expect("the worker's memory"));
        let (open, put_back): (i64, Vec<Uuid>) = sqlx::query_as(
            "SELECT count(*), COALESCE(array_agg(message_id)
                                FILTER (WHERE lease_owner IS NULL AND due_at > $1), '{}')
               FROM queue",
        )
        .bind(drain_began_at)
        .fetch_one(app.pool())
        .await
        .unwrap();
        deferred.extend(put_back);
        if open == 0 {
            break;
        }
        assert!(
            drain_began.elapsed() < settle_within() * 2,
            "{open} messages still not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = drain_began.elapsed();
    let report = reconcile(
        "backlog",
        app.pool(),
        directory,
        &ledger,
        &[],
        settle_within(),
    )
    .await;
    peak = peak.max(drain_peak);
    workers.assert_alive();
    workers.stop();
    let drain = request_rate(&directory.requests(), drain_began_at, Utc::now(), |r| {
        r.endpoint == Endpoint::GraphSend
    });

    // The order the worker took the backlog in (one worker: its leases follow one
    // another; the deliveries of one lease start side by side).
    let taken: Vec<Uuid> = sqlx::query_scalar(
        "SELECT message_id FROM delivery_attempts
          WHERE outcome = 'accepted' AND started_at >= $1 ORDER BY started_at, id",
    )
    .bind(drain_began_at)
    .fetch_all(app.pool())
    .await
    .unwrap();
    let position: std::collections::HashMap<Uuid, usize> =
        taken.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let positions_of = |tenant: TenantId| -> Vec<usize> {
        due.iter()
            .filter(|(_, t, _)| *t == tenant)
            .map(|(id, _, _)| *position.get(id).expect("every due message delivered"))
            .collect()
    };
    // Per tenant, oldest due first: nothing is overtaken by more than a lease's worth
    // of its customer's messages (the mailbox's concurrency, twice for good measure).
    let mut worst_overtaking = 0;
    for tenant in [big.tenant.id, medium.tenant.id, small.tenant.id] {
        let order: Vec<(usize, i64)> = due
            .iter()
            .filter(|(id, t, _)| *t == tenant && !deferred.contains(id))
            .map(|(id, _, rank)| (position[id], *rank))
            .collect();
        for (i, (p, rank)) in order.iter().enumerate() {
            let overtaken_by = order[i + 1..]
                .iter()
                .filter(|(q, later)| q < p && later > rank)
                .count();
            worst_overtaking = worst_overtaking.max(overtaken_by);
        }
    }
    // Across tenants, in turn: the small customer's backlog is through long before
    // the big one's, although it was queued last.
    let small_positions = positions_of(small.tenant.id);
    let last_small = *small_positions.iter().max().expect("a small backlog");
    let big_positions = positions_of(big.tenant.id);
    let big_before_small_done = big_positions.iter().filter(|p| **p < last_small).count();
    println!(
        "chaos[backlog] {backlog} messages ({} MB) queued during the outage, {} Graph requests meanwhile (peak {}/s); worker memory {} MB before, at most {} MB during the outage and the drain",
        backlog_bytes / (1024 * 1024),
        during.total,
        during.peak_per_second,
        baseline / 1024,
        peak / 1024
    );
    println!(
        "chaos[backlog] drained in {} ({:.0} messages/s, peak {}/s); the small customer's {} were through when {big_before_small_done} of the big one's {} were; worst overtaking within a customer {worst_overtaking}; {} deferred for a busy mailbox",
        seconds(drained_in),
        drain.total as f64 / drained_in.as_secs_f64().max(0.001),
        drain.peak_per_second,
        small_positions.len(),
        big_positions.len(),
        deferred.len(),
    );
    assert!(report.delivered >= backlog as usize);
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        (growth_mib as i64) < (backlog_bytes / (1024 * 1024)).min(64),
        "the worker grew by {growth_mib} MB with {} MB queued",
        backlog_bytes / (1024 * 1024)
    );
    assert!(
        worst_overtaking < 2 * GRAPH_CONCURRENCY_PER_MAILBOX as usize,
        "a message was overtaken by {worst_overtaking} younger ones of its customer"
    );
    assert!(
        big_before_small_done
            <= 2 * small_positions.len() + 2 * GRAPH_CONCURRENCY_PER_MAILBOX as usize,
        "the big customer delivered {big_before_small_done} before the small one's {} were through",
        small_positions.len()
    );
    app.stack.shutdown().await;
}
