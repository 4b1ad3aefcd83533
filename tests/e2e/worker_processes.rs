//! Real `mailbridge worker` processes against one queue: two share it without
//! delivering anything twice, and one killed with SIGKILL mid-delivery loses nothing;
//! a worker's presence lock survives losing its connection.

use mailbridge_core::ids::MessageId;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mailbridge_core::queue::{self, MessageKind, NewMessage};
use uuid::Uuid;

use crate::harness::{TestApp, TestTenant};

/// Queues `count` messages for `tenant`, each with its own Message-ID; returns the ids.
async fn queue_messages(app: &TestApp, tenant: &TestTenant, count: usize) -> Vec<String> {
    let mut message_ids = Vec::with_capacity(count);
    for i in 0..count {
        let message_id = format!("{}@queue.test", Uuid::new_v4().simple());
        let body = format!(
            "From: {sender}\r\nTo: lab@klinik.example\r\nSubject: Befund {i}\r\nMessage-ID: <{message_id}>\r\n\r\nBefund {i}\r\n",
            sender = tenant.tenant.sender_mailbox
        );
        queue::enqueue(
            app.pool(),
            app.master_key(),
            &NewMessage {
                id: MessageId::now(),
                tenant_id: tenant.tenant.id,
                device_id: None,
                mail_from: tenant.tenant.sender_mailbox.clone(),
                rcpt_to: vec!["lab@klinik.example".into()],
                client_addr: "192.0.2.1".parse().unwrap(),
                tls_protocol: None,
                tls_cipher: None,
                kind: MessageKind::Device,
                subject: Some(format!("Befund {i}")),
                body: body.into_bytes(),
            },
        )
        .await
        .unwrap();
        message_ids.push(message_id);
    }
    message_ids
}

async fn settled(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE state = 'accepted'")
        .fetch_one(app.pool())
        .await
        .unwrap()
}

/// How often each Message-ID reached the simulated mailbox.
fn arrivals(app: &TestApp) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for message in app.stack.simulator.directory.inbox("lab@klinik.example") {
        let id = message
            .mime
            .lines()
            .find_map(|l| {
                l.strip_prefix("Message-ID: <")
                    .map(|r| r.trim_end_matches('>').to_owned())
            })
            .expect("a Message-ID");
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

async fn wait_until_all_arrived(
    app: &TestApp,
    message_ids: &[String],
    within: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + within;
    loop {
        let seen = arrivals(app);
        if message_ids.iter().all(|id| seen.contains_key(id)) {
            return seen;
        }
        let missing = message_ids
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .count();
        assert!(
            Instant::now() < deadline,
            "{missing} of {} messages never arrived",
            message_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn two_worker_processes_share_one_queue_without_duplicates() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Zwei Worker").await;
    let message_ids = queue_messages(&app, &tenant, 120).await;
    let mut workers = [app.spawn_worker_process(30), app.spawn_worker_process(30)];
    let seen = wait_until_all_arrived(&app, &message_ids, Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled(&app).await < 120 {
        assert!(
            Instant::now() < deadline,
            "arrived but not recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in &mut workers {
        worker.kill().ok();
        worker.wait().ok();
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let by_worker: Vec<(String, i64)> = sqlx::query_as(
        "SELECT split_part(worker, ':', 2), count(*) FROM delivery_attempts GROUP BY 1",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        by_worker.iter().map(|(_, n)| n).sum::<i64>(),
        120,
        "one attempt per message"
    );
    eprintln!("attempts by worker process: {by_worker:?}");
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_loses_nothing() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Absturz").await;
    let message_ids = queue_messages(&app, &tenant, 300).await;

    let mut doomed = app.spawn_worker_process(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals(&app).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "the first worker delivered nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().expect("SIGKILL");
    doomed.wait().ok();
    let at_kill = arrivals(&app).len();
    assert!(
        at_kill < message_ids.len(),
        "killed too late to prove anything"
    );

    let mut survivor = app.spawn_worker_process(2);
    let seen = wait_until_all_arrived(&app, &message_ids, Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled(&app).await < 300 {
        assert!(
            Instant::now() < deadline,
            "arrived but not recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    survivor.kill().ok();
    survivor.wait().ok();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // Only messages in flight at the kill (at most one worker's concurrency) can arrive twice.
    assert!(duplicates <= 16, "{duplicates} duplicates");
    let settled: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE state = 'accepted'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(settled, 300);
    eprintln!("killed after {at_kill} deliveries; {duplicates} delivered twice");
}

#[tokio::test]
async fn a_killed_workers_messages_are_delivered_by_another_within_seconds_not_a_lease() {
    use mailbridge_m365_sim::fault_injection::{Effect, Endpoint, Fault};
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Worker Weg").await;
    let directory = &app.stack.simulator.directory;
    // Microsoft hangs on the first four sends: the doomed worker dies with them
    // leased, their leases five minutes long.
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphSend,
        tenant: None,
        mailbox: None,
        effect: Effect::Delay { seconds: 600 },
        times: Some(4),
    });
    let message_ids = queue_messages(&app, &tenant, 8).await;
    let mut doomed = app.spawn_worker_process(300);
    let deadline = Instant::now() + Duration::from_secs(60);
    while directory.requests().iter().filter(|r| r.faulted).count() < 4 {
        assert!(
            Instant::now() < deadline,
            "the worker never reached Microsoft"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().expect("SIGKILL");
    doomed.wait().ok();
    let killed_at = Instant::now();
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL AND due_at > now() + interval '200 seconds'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(held >= 4, "the killed worker held {held} long leases");

    let mut survivor = app.spawn_worker_process(300);
    wait_until_all_arrived(&app, &message_ids, Duration::from_secs(30)).await;
    let took = killed_at.elapsed();
    survivor.kill().ok();
    survivor.wait().ok();
    eprintln!("all delivered {:.1} s after the kill", took.as_secs_f64());
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// The session holding advisory lock `key` in this test's database, if any.
async fn holder_of(pool: &sqlx::PgPool, key: i64) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// A worker whose presence connection is lost while PostgreSQL still holds its old
/// lock — a half-open connection after a partition lives on in the server until its
/// keepalive gives up — takes a new lock at once instead of waiting for the old one,
/// and the other workers do not take it for dead.
#[tokio::test]
async fn a_lost_presence_connection_is_replaced_without_waiting_for_its_old_lock() {
    use mailbridge_core::workers::{self, Presence};
    let app = TestApp::spawn_without_worker().await;
    let pool = app.pool();
    let identity = "worker-half-open";
    let lock_key = || async {
        sqlx::query_scalar::<_, i64>("SELECT lock_key FROM workers WHERE identity = $1")
            .bind(identity)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let mut presence = Presence::register(pool, identity).await.unwrap();
    let old_key = lock_key().await;
    let backend = holder_of(pool, old_key)
        .await
        .expect("the presence lock is held");
    // The server ends the presence connection; another session takes its lock at
    // once, standing in for the half-open server side that still holds it.
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(backend)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(ended);
    let mut lingering = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(old_key)
        .execute(&mut *lingering)
        .await
        .unwrap();

    let kept = tokio::time::timeout(Duration::from_secs(30), presence.keep(pool)).await;
    if kept.is_err() {
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT format('%s %s/%s: %s', state, wait_event_type, wait_event, left(query, 80))
               FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        panic!("the presence was not kept within 30 s; the database's sessions: {sessions:#?}");
    }
    kept.unwrap().unwrap();
    let new_key = lock_key().await;
    assert_ne!(new_key, old_key);
    assert!(holder_of(pool, new_key).await.is_some());
    assert_eq!(
        workers::release_the_departed(pool, "another-worker")
            .await
            .unwrap(),
        0
    );
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE identity = $1")
        .bind(identity)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(registered, 1, "not taken for dead");
    drop(lingering);
    presence.leave().await;
}

/// Every connection has PostgreSQL notice within about a minute when its client
/// vanished without closing it (a failed node): keepalive on the server's side of
/// the connection, set as each connection is made (`db::SESSION_SETTINGS`).
#[tokio::test]
async fn every_connection_has_postgresql_notice_a_vanished_client_within_a_minute() {
    let app = TestApp::spawn_without_worker().await;
    let (idle, interval, count): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'),
                current_setting('tcp_keepalives_count')",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    let seconds: u32 = idle.parse::<u32>().unwrap()
        + interval.parse::<u32>().unwrap() * count.parse::<u32>().unwrap();
    assert!(
        seconds > 0 && seconds <= 60,
        "a vanished client is noticed after {seconds} s (idle {idle}, interval {interval}, count {count})"
    );
}
