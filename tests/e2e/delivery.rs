//! The worker delivering queued messages into the simulated Microsoft 365.

use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::queue::MessageState;
use std::time::Duration;

use crate::harness::{
    ReportRefusal, TestApp, TestTenant, readable, refuse_reports, reports_written, sample_message,
    wait_until, without_final_crlf,
};
use lettre::{AsyncTransport, address::Envelope};
use mailbridge_core::{
    devices::{self, PolicyChange},
    diagnosis::{self, Lang},
    queue::{self, AttemptOutcome},
    tenants,
};

async fn submit(
    app: &TestApp,
    tenant: &TestTenant,
    username: &str,
    password: &str,
    to: &str,
    subject: &str,
) -> String {
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, to, subject);
    let envelope = Envelope::new(Some(sender.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    app.lettre(username, password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("the edge accepts the message");
    message
}

/// A customer with a scanner that submitted one message to `to`: the customer,
/// the edge's reply and the message's id.
async fn one_message_queued(
    app: &TestApp,
    customer: &str,
    to: &str,
    subject: &str,
) -> (TestTenant, String, MessageId) {
    let tenant = app.add_tenant(customer).await;
    let device = app.add_device(&tenant, "Scanner").await;
    let reply = submit(
        app,
        &tenant,
        &device.device.username,
        &device.password,
        to,
        subject,
    )
    .await;
    let id = app.message_ids().await[0];
    (tenant, reply, id)
}

#[tokio::test]
async fn a_message_accepted_while_no_worker_runs_is_delivered_once_one_starts() {
    let mut app = TestApp::spawn_without_worker().await;
    let (tenant, message, _) = one_message_queued(
        &app,
        "Praxis Warteschlange",
        "arzt@klinik.example",
        "queued",
    )
    .await;
    let ids = app.message_ids().await;
    assert_eq!(ids.len(), 1, "the 250 means it is committed");
    assert!(app.stack.simulator.directory.delivered().is_empty());
    assert_eq!(
        queue::status(app.pool(), ids[0])
            .await
            .unwrap()
            .unwrap()
            .state,
        MessageState::Queued
    );

    app.stack.start_worker().unwrap();
    let inbox = app.wait_for_inbox("arzt@klinik.example", 1).await;
    assert!(inbox[0].mime.ends_with(&message));
    let status = app
        .wait_for_message(ids[0], |s| s.state.as_str() == "accepted")
        .await;
    assert_eq!(status.attempt_count, 1);
    let attempts = queue::attempts(app.pool(), ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Accepted);
    assert_eq!(attempts[0].upstream_status, Some(202));
    assert!(
        queue::body(app.pool(), app.master_key(), ids[0])
            .await
            .unwrap()
            .is_none(),
        "a delivered body is deleted"
    );
    let counted: i64 = sqlx::query_scalar(
        "SELECT sum(recipients)::bigint FROM mailbox_usage WHERE mailbox = lower($1)",
    )
    .bind(&tenant.tenant.sender_mailbox)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(counted, 1, "the recipient counts against the mailbox's day");
}

/// Every row of a customer names the customer — written by the edge and the
/// worker themselves, not by the rollout trigger that fills it for the previous
/// version's writers (dropped here; the trigger is tried first, as such a writer).
#[tokio::test]
async fn a_customers_rows_name_the_customer_without_the_rollout_trigger() {
    let mut app = TestApp::spawn_without_worker().await;
    let (tenant, _, id) = one_message_queued(
        &app,
        "Praxis Verteilt",
        "arzt@klinik.example",
        "whose rows?",
    )
    .await;
    // The previous version's worker records an attempt without the customer.
    let filled: TenantId = sqlx::query_scalar(
        "INSERT INTO delivery_attempts (message_id, started_at, duration_ms, method, outcome, worker)
         VALUES ($1, now(), 1, 'graph', 'retry', 'old-worker') RETURNING tenant_id",
    )
    .bind(id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        filled, tenant.tenant.id,
        "the trigger fills an old writer's row"
    );
    sqlx::raw_sql(
        "DROP TRIGGER delivery_attempts_tenant ON delivery_attempts;
         DROP TRIGGER message_bodies_tenant ON message_bodies;
         DROP TRIGGER message_bounces_tenant ON message_bounces;
         DROP TRIGGER device_sources_tenant ON device_sources;
         DROP TRIGGER session_transcripts_tenant ON session_transcripts;",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let device = app.add_device(&tenant, "Drucker").await;
    submit(
        &app,
        &tenant,
        &device.device.username,
        &device.password,
        "arzt@klinik.example",
        "after the rollout",
    )
    .await;
    app.stack.start_worker().unwrap();
    app.wait_for_inbox("arzt@klinik.example", 2).await;
    // Attempts, sources and known devices' sessions of the customer.
    let counts = || async {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT (SELECT count(*) FROM delivery_attempts WHERE tenant_id = $1),
                    (SELECT count(*) FROM device_sources WHERE tenant_id = $1),
                    (SELECT count(*) FROM session_transcripts WHERE tenant_id = $1)",
        )
        .bind(tenant.tenant.id)
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    wait_until(
        "both deliveries and sessions recorded",
        Duration::from_secs(20),
        || async {
            let (attempts, sources, sessions) = counts().await;
            attempts == 3 && sources == 2 && sessions >= 2
        },
    )
    .await;
    let without: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM delivery_attempts WHERE tenant_id IS DISTINCT FROM $1)
              + (SELECT count(*) FROM device_sources WHERE tenant_id IS DISTINCT FROM $1)
              + (SELECT count(*) FROM session_transcripts
                  WHERE device_id IS NOT NULL AND tenant_id IS DISTINCT FROM $1)",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(without, 0, "no row names another customer");
}

/// An edge of the previous version (during the rollout that moved the queue apart
/// from the log) writes the log row and the body but no queue row: the workers
/// adopt such a message, and it is delivered like any other.
#[tokio::test]
async fn a_message_logged_without_a_queue_row_is_adopted_and_delivered() {
    let mut app = TestApp::spawn_without_worker().await;
    let (_, message, id) = one_message_queued(
        &app,
        "Praxis Rollout",
        "arzt@klinik.example",
        "written by the previous version",
    )
    .await;
    sqlx::query("DELETE FROM queue WHERE message_id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    assert_eq!(queue::adopt_orphans(app.pool()).await.unwrap(), 1);
    assert_eq!(
        queue::adopt_orphans(app.pool()).await.unwrap(),
        0,
        "adopted once"
    );
    app.stack.start_worker().unwrap();
    let inbox = app.wait_for_inbox("arzt@klinik.example", 1).await;
    assert!(inbox[0].mime.ends_with(&message));
    app.wait_for_message(id, |s| s.state == MessageState::Accepted)
        .await;
    assert_eq!(
        queue::adopt_orphans(app.pool()).await.unwrap(),
        0,
        "an accepted message is not queued again"
    );
}

/// Settles message `id` as worker `owner` (queueing `report` with it), alone;
/// `maybe_settled`: tried again after a lost answer.
async fn settle_one(
    app: &TestApp,
    owner: &str,
    id: MessageId,
    attempt: &queue::DeliveryAttempt,
    settlement: queue::Settlement,
    report: Option<&queue::NewMessage>,
    maybe_settled: bool,
) -> Vec<bool> {
    let settling = [queue::Settling {
        message_id: id,
        attempt,
        settlement,
        report,
        maybe_settled,
    }];
    queue::settle_all(app.pool(), app.master_key(), owner, &settling)
        .await
        .unwrap()
}

/// Leases message `id` to `owner` as a worker's lease does.
async fn lease_to(app: &TestApp, owner: &str, id: MessageId) {
    sqlx::query(
        "UPDATE queue SET lease_owner = $2, due_at = now() + interval '5 minutes',
                attempt_count = attempt_count + 1 WHERE message_id = $1",
    )
    .bind(id)
    .bind(owner)
    .execute(app.pool())
    .await
    .unwrap();
}

/// A permanent failure of `tenant`'s sender mailbox: Send As denied.
fn send_as_denied(tenant: &TestTenant) -> queue::DeliveryAttempt {
    queue::DeliveryAttempt {
        started_at: chrono::Utc::now(),
        duration_ms: 80,
        method: "graph".into(),
        outcome: AttemptOutcome::Permanent,
        upstream_status: Some(403),
        upstream_code: Some("ErrorSendAsDenied".into()),
        upstream_message: Some("not allowed to send as".into()),
        diagnosis: Some("send_as_denied".into()),
        mailbox: Some(tenant.tenant.sender_mailbox.clone()),
        worker: String::new(),
    }
}

/// A report to `tenant`'s IT about a failed message.
fn failure_report(tenant: &TestTenant, subject: &str) -> queue::NewMessage {
    queue::NewMessage {
        id: MessageId::now(),
        tenant_id: tenant.tenant.id,
        device_id: None,
        mail_from: tenant.tenant.sender_mailbox.clone(),
        rcpt_to: vec!["it@praxis.example".into()],
        client_addr: std::net::IpAddr::from([127, 0, 0, 1]),
        tls_protocol: None,
        tls_cipher: None,
        kind: queue::MessageKind::Notification,
        subject: Some(subject.into()),
        body: sample_message(&tenant.tenant.sender_mailbox, "it@praxis.example", subject)
            .into_bytes(),
    }
}

/// A failure report goes into the queue in its message's settlement: committed
/// with it (a crash between the two cannot lose it, and whoever sees the message
/// failed sees its report), queued once when the settlement is tried again, and
/// not at all when the lease had passed to another worker.
#[tokio::test]
async fn a_failure_report_is_queued_with_its_settlement_once() {
    let app = TestApp::spawn_without_worker().await;
    let (tenant, _, id) = one_message_queued(
        &app,
        "Praxis Bericht",
        "arzt@klinik.example",
        "reported once?",
    )
    .await;
    let reports = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM messages m JOIN queue q ON q.message_id = m.id
              WHERE m.tenant_id = $1 AND m.kind = 'notification'",
        )
        .bind(tenant.tenant.id)
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    let failed = send_as_denied(&tenant);
    let report = |subject: &str| failure_report(&tenant, subject);

    // Leased by one worker, taken over by another: the first one's report is not queued.
    lease_to(&app, "worker-a", id).await;
    lease_to(&app, "worker-b", id).await;
    let late = report("Undeliverable (worker-a)");
    let settled = settle_one(
        &app,
        "worker-a",
        id,
        &failed,
        queue::Settlement::Failed,
        Some(&late),
        false,
    );
    assert_eq!(settled.await, vec![false]);
    assert_eq!(
        reports().await,
        0,
        "no report from a worker that lost its lease"
    );

    // Failed by its lease holder: the report is in the queue as the message fails.
    let mine = report("Undeliverable (worker-b)");
    let settled = settle_one(
        &app,
        "worker-b",
        id,
        &failed,
        queue::Settlement::Failed,
        Some(&mine),
        false,
    );
    assert_eq!(settled.await, vec![true]);
    let status = queue::status(app.pool(), id).await.unwrap().unwrap();
    assert_eq!(status.state, MessageState::Failed);
    assert_eq!(reports().await, 1, "the report committed with the failure");

    // The answer was lost; the worker settles again with the same report.
    let settled = settle_one(
        &app,
        "worker-b",
        id,
        &failed,
        queue::Settlement::Failed,
        Some(&mine),
        true,
    );
    assert_eq!(settled.await, vec![true], "already settled");
    assert_eq!(reports().await, 1, "queued once");
}

/// A report the database refuses does not hold up its message's failure: the
/// settlement goes through without it — else the failed message would be tried
/// again at every lease, its report refused each time.
#[tokio::test]
async fn a_refused_failure_report_does_not_hold_up_the_failure() {
    let app = TestApp::spawn_without_worker().await;
    let (tenant, _, id) = one_message_queued(
        &app,
        "Praxis Ohne Bericht",
        "arzt@klinik.example",
        "report refused",
    )
    .await;
    refuse_reports(app.pool(), ReportRefusal::Constraint).await;
    lease_to(&app, "worker-a", id).await;
    let report = failure_report(&tenant, "Undeliverable");
    let failed = send_as_denied(&tenant);
    let settled = settle_one(
        &app,
        "worker-a",
        id,
        &failed,
        queue::Settlement::Failed,
        Some(&report),
        false,
    );
    assert_eq!(settled.await, vec![true], "settled without its report");
    let status = queue::status(app.pool(), id).await.unwrap().unwrap();
    assert_eq!(status.state, MessageState::Failed);
    assert_eq!(queue::attempts(app.pool(), id).await.unwrap().len(), 1);
    let reports = reports_written(app.pool()).await;
    assert_eq!(reports, 0);
}

/// A settlement tried again because the answer to the first try was lost after its
/// commit (a dropped connection, a failover) changes nothing the second time: the
/// attempt is recorded once, counted once, and a lease the worker has taken on the
/// message since is left alone.
#[tokio::test]
async fn a_settlement_tried_again_after_a_lost_answer_changes_nothing() {
    let app = TestApp::spawn_without_worker().await;
    let (tenant, _, id) = one_message_queued(
        &app,
        "Praxis Doppelt Verbucht",
        "arzt@klinik.example",
        "settled twice?",
    )
    .await;
    let owner = "worker-a";
    let leased_by = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT lease_owner FROM queue WHERE message_id = $1",
        )
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    let attempt = |outcome| queue::DeliveryAttempt {
        started_at: chrono::Utc::now(),
        duration_ms: 120,
        method: "graph".into(),
        outcome,
        upstream_status: Some(if outcome == AttemptOutcome::Accepted {
            202
        } else {
            503
        }),
        upstream_code: None,
        upstream_message: None,
        diagnosis: None,
        mailbox: Some(tenant.tenant.sender_mailbox.clone()),
        worker: owner.into(),
    };
    let settle =
        |attempt, settlement, again| settle_one(&app, owner, id, attempt, settlement, None, again);

    // A retry, settled; its answer lost; the message leased by the same worker again.
    lease_to(&app, owner, id).await;
    let retry = attempt(AttemptOutcome::Retry);
    let later = queue::Settlement::RetryAt(chrono::Utc::now());
    assert_eq!(settle(&retry, later, false).await, vec![true]);
    lease_to(&app, owner, id).await;
    assert_eq!(
        settle(&retry, later, true).await,
        vec![true],
        "already settled"
    );
    assert_eq!(
        leased_by().await.as_deref(),
        Some(owner),
        "the new lease is left alone"
    );
    assert_eq!(queue::attempts(app.pool(), id).await.unwrap().len(), 1);

    // Accepted, settled, tried again.
    let accepted = attempt(AttemptOutcome::Accepted);
    assert_eq!(
        settle(&accepted, queue::Settlement::Accepted, false).await,
        vec![true]
    );
    assert_eq!(
        settle(&accepted, queue::Settlement::Accepted, true).await,
        vec![true]
    );
    assert_eq!(queue::attempts(app.pool(), id).await.unwrap().len(), 2);
    let (counted, recipients): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(accepted)::bigint FROM usage_hours WHERE tenant_id = $1),
                (SELECT sum(recipients)::bigint FROM mailbox_usage WHERE mailbox = lower($2))",
    )
    .bind(tenant.tenant.id)
    .bind(&tenant.tenant.sender_mailbox)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((counted, recipients), (1, 1), "counted once");
}

/// Two workers adopt at once: while one worker's adoption (with the delivery and
/// settlement that follow, here one transaction) is not yet committed, the other's
/// statement has already seen the message without a queue row. Once the first
/// commits, the second must see the message settled — not queue it a second time.
#[tokio::test]
async fn a_message_settled_during_another_adoption_is_not_queued_again() {
    let app = TestApp::spawn_without_worker().await;
    let (_, _, id) = one_message_queued(
        &app,
        "Praxis Zwei Worker",
        "arzt@klinik.example",
        "adopted twice?",
    )
    .await;
    sqlx::query("DELETE FROM queue WHERE message_id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();

    // The first worker: adopted, delivered and settled, not yet committed.
    let mut first = app.pool().begin().await.unwrap();
    for statement in [
        "INSERT INTO queue (message_id, tenant_id) SELECT id, tenant_id FROM messages WHERE id = $1",
        "UPDATE messages SET state = 'accepted', finished_at = now() WHERE id = $1",
        "DELETE FROM queue WHERE message_id = $1",
    ] {
        sqlx::query(statement)
            .bind(id)
            .execute(&mut *first)
            .await
            .unwrap();
    }
    // The second worker's adoption starts now and waits for the first.
    let pool = app.pool().clone();
    let second = tokio::spawn(async move { queue::adopt_orphans(&pool).await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE wait_event_type = 'Lock' AND query LIKE '%adopted%')",
        )
        .fetch_one(app.pool())
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second adoption never waited for the first"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap(),
        0,
        "the settled message is not adopted"
    );
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM queue WHERE message_id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn a_token_is_fetched_once_per_tenant_and_reused() {
    let app = TestApp::spawn().await;
    let praxis = app.add_tenant("Praxis Eins").await;
    let labor = app.add_tenant("Labor Zwei").await;
    let scanner = app.add_device(&praxis, "Scanner").await;
    let analyser = app.add_device(&labor, "Analysegerät").await;

    for i in 0..3 {
        submit(
            &app,
            &praxis,
            &scanner.device.username,
            &scanner.password,
            "a@klinik.example",
            &format!("praxis {i}"),
        )
        .await;
    }
    submit(
        &app,
        &labor,
        &analyser.device.username,
        &analyser.password,
        "b@klinik.example",
        "labor",
    )
    .await;
    let praxis_mail = app.wait_for_inbox("a@klinik.example", 3).await;
    let labor_mail = app.wait_for_inbox("b@klinik.example", 1).await;

    let requests = app.stack.simulator.directory.token_requests();
    let for_tenant = |t: &TestTenant| {
        requests
            .iter()
            .filter(|r| r.tenant == t.tenant.entra_tenant_id.expect("connected").to_string())
            .count()
    };
    assert_eq!(
        for_tenant(&praxis),
        1,
        "one token request for three messages: {requests:?}"
    );
    assert_eq!(for_tenant(&labor), 1, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.scope == "https://graph.microsoft.com/.default")
    );
    assert!(
        praxis_mail
            .iter()
            .all(|m| m.token_id == praxis_mail[0].token_id),
        "the token is reused"
    );
    assert_ne!(
        praxis_mail[0].token_id, labor_mail[0].token_id,
        "each tenant has its own token"
    );
    assert_eq!(labor_mail[0].tenant_id, labor.entra());
}

#[tokio::test]
async fn a_wrong_client_secret_leaves_the_message_queued_with_the_aadsts_error() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Geheimnis").await;
    let device = app.add_device(&tenant, "Scanner").await;
    // The MSP's secret was rotated in Entra but not in mailbridge.
    app.stack
        .simulator
        .directory
        .register_app(&app.stack.client_id, "a-newer-secret");
    submit(
        &app,
        &tenant,
        &device.device.username,
        &device.password,
        "arzt@klinik.example",
        "secret",
    )
    .await;

    let id = app.message_ids().await[0];
    let status = app
        .wait_for_message(id, |s| s.attempt_count == 1 && s.state.as_str() == "queued")
        .await;
    // A wrong secret is the app's condition: the app is held (its messages wait
    // for a probe), the message is not backed off on its own.
    let (reason, next_probe): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT reason, next_probe_at FROM delivery_holds WHERE scope = 'app' AND subject = $1",
    )
    .bind(&app.stack.client_id)
    .fetch_one(app.pool())
    .await
    .expect("the app is held");
    assert_eq!(reason, "AADSTS7000215");
    assert!(next_probe > chrono::Utc::now(), "{status:?}");
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retry);
    assert_eq!(attempts[0].upstream_code.as_deref(), Some("AADSTS7000215"));
    assert!(
        attempts[0]
            .upstream_message
            .as_deref()
            .unwrap()
            .contains("Invalid client secret"),
        "{attempts:?}"
    );
    assert!(status.last_error.unwrap().starts_with("AADSTS7000215"));
    assert!(app.stack.simulator.directory.delivered().is_empty());
    assert!(
        queue::body(app.pool(), app.master_key(), id)
            .await
            .unwrap()
            .is_some(),
        "the body is kept for the retry"
    );
}

fn chrono_now_plus_seconds(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::TimeDelta::seconds(seconds)
}

#[tokio::test]
async fn send_as_denied_fails_the_message_and_reports_it_in_both_languages() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis SendAs").await;
    tenants::set_notification_address(app.pool(), tenant.tenant.id, Some("it@msp.example"))
        .await
        .unwrap();
    app.stack
        .simulator
        .directory
        .add_tenant(tenant.entra(), &["it@msp.example"]);
    let device = app.add_device(&tenant, "Scanner").await;
    // The device may use this address, but Exchange never granted SendAs for it.
    devices::change_policy(
        app.pool(),
        device.device.id,
        PolicyChange {
            allowed_senders: Some(vec!["chef@praxissendas.example".into()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let message = "From: chef@praxissendas.example\r\nTo: a@klinik.example\r\nSubject: Laborwerte Patient 4711\r\n\r\nGeheimer Befund\r\n";
    let envelope = Envelope::new(
        Some("chef@praxissendas.example".parse().unwrap()),
        vec!["a@klinik.example".parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, message.as_bytes())
        .await
        .unwrap();

    let id = app.message_ids().await[0];
    let status = app
        .wait_for_message(id, |s| s.state.as_str() == "failed")
        .await;
    assert_eq!(
        status.attempt_count, 1,
        "a permanent refusal is not retried"
    );
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    assert_eq!(attempts[0].outcome, AttemptOutcome::Permanent);
    assert_eq!(attempts[0].upstream_status, Some(403));
    assert_eq!(
        attempts[0].upstream_code.as_deref(),
        Some("ErrorSendAsDenied")
    );
    assert_eq!(attempts[0].diagnosis.as_deref(), Some("SendAsDenied"));
    assert!(
        queue::body(app.pool(), app.master_key(), id)
            .await
            .unwrap()
            .is_none(),
        "a failed body is deleted too"
    );

    let report = &app.wait_for_inbox("it@msp.example", 1).await[0];
    assert_eq!(
        report.from.as_deref(),
        Some(tenant.tenant.sender_mailbox.as_str())
    );
    let explained = diagnosis::by_key("SendAsDenied").unwrap();
    let text = readable(&report.mime);
    assert!(
        text.contains(explained.title(Lang::De)) && text.contains(explained.title(Lang::En)),
        "{text}"
    );
    assert!(
        text.contains("Laborwerte Patient 4711"),
        "the subject names the message"
    );
    assert!(
        !text.contains("Geheimer Befund") && !report.mime.contains("Geheimer Befund"),
        "never the content"
    );
    // A report about the report would be queued when the report settles: wait until
    // every message has settled, then count.
    for id in app.message_ids().await {
        app.wait_for_message(id, |s| {
            s.state.as_str() != "queued" && s.state.as_str() != "delivering"
        })
        .await;
    }
    assert_eq!(
        app.message_ids().await.len(),
        2,
        "one report, no report about the report"
    );
}

#[tokio::test]
async fn an_unknown_sender_mailbox_fails_permanently() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Ohne Postfach").await;
    sqlx::query(
        "UPDATE tenants SET sender_mailbox = 'gibtsnicht@praxisohnepostfach.example' WHERE id = $1",
    )
    .bind(tenant.tenant.id)
    .execute(app.pool())
    .await
    .unwrap();
    let device = app.add_device(&tenant, "Scanner").await;
    let envelope = Envelope::new(None, vec!["a@klinik.example".parse().unwrap()]).unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, b"To: a@klinik.example\r\nSubject: x\r\n\r\nx")
        .await
        .unwrap();
    let id = app.message_ids().await[0];
    app.wait_for_message(id, |s| s.state.as_str() == "failed")
        .await;
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    assert_eq!(attempts[0].diagnosis.as_deref(), Some("ErrorInvalidUser"));
}

#[tokio::test]
async fn a_tenant_without_consent_is_paused_not_hammered() {
    let app = TestApp::spawn().await;
    let tenant = app
        .add_tenant_without_consent("Praxis Ohne Zustimmung")
        .await;
    let device = app.add_device(&tenant, "Scanner").await;
    for i in 0..3 {
        submit(
            &app,
            &tenant,
            &device.device.username,
            &device.password,
            "a@klinik.example",
            &format!("m{i}"),
        )
        .await;
    }
    let first = app.message_ids().await[0];
    app.wait_for_message(first, |s| {
        s.attempt_count >= 1 && s.state.as_str() == "queued"
    })
    .await;
    // The customer is held once the first refusal is settled; its other messages wait
    // behind the hold instead of asking the token endpoint themselves.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM delivery_holds WHERE scope = 'customer' AND tenant_id = $1",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the customer is never held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let refused: Vec<_> = app
        .stack
        .simulator
        .directory
        .token_requests()
        .into_iter()
        .filter(|r| {
            r.tenant
                == tenant
                    .tenant
                    .entra_tenant_id
                    .expect("connected")
                    .to_string()
        })
        .collect();
    assert!(
        !refused.is_empty() && refused.len() <= 2,
        "the token endpoint is asked once, not per message: {refused:?}"
    );
    assert!(refused.iter().all(|r| r.error_code == Some(700016)));
    let stored = mailbridge_core::tenants::get(app.pool(), tenant.tenant.id)
        .await
        .unwrap()
        .unwrap();
    let (reason, next_probe): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT reason, next_probe_at FROM delivery_holds WHERE scope = 'customer' AND tenant_id = $1",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .expect("the customer is held");
    assert_eq!(reason, "AADSTS700016");
    assert!(next_probe > chrono::Utc::now(), "{next_probe}");
    assert!(stored.last_token_error.unwrap().starts_with("AADSTS700016"));
    // A message leased before the hold was written settles back to `queued` too.
    for id in app.message_ids().await {
        app.wait_for_message(id, |s| s.state.as_str() == "queued")
            .await;
        if let Some(attempt) = queue::attempts(app.pool(), id).await.unwrap().first() {
            assert_eq!(attempt.diagnosis.as_deref(), Some("AADSTS700016"));
        }
    }
    // Even when its messages fall due, a held customer's messages are not leased.
    sqlx::query("UPDATE queue SET due_at = now() - interval '1 second'")
        .execute(app.pool())
        .await
        .unwrap();
    let leased = queue::lease_due(app.pool(), "probe", 10, Duration::from_secs(60), &[], None)
        .await
        .unwrap();
    assert!(leased.is_empty(), "{leased:?}");
}

/// Graph customers by name, for tests of the queue itself.
async fn graph_tenants(
    pool: &sqlx::PgPool,
    names: &[&'static str],
) -> std::collections::HashMap<&'static str, TenantId> {
    let mut ids = std::collections::HashMap::new();
    for &name in names {
        let tenant = tenants::create(
            pool,
            None,
            tenants::NewTenant {
                name: name.into(),
                entra_tenant_id: Some(uuid::Uuid::new_v4().into()),
                sender_mailbox: format!("s@{}.example", name.to_lowercase()),
                delivery_method: tenants::DeliveryMethod::Graph,
                own_app: None,
            },
        )
        .await
        .unwrap();
        ids.insert(name, tenant.id);
    }
    ids
}

/// A small message of a device of `tenant_id`, to enqueue.
fn queued_message(tenant_id: TenantId) -> queue::NewMessage {
    queue::NewMessage {
        id: MessageId::now(),
        tenant_id,
        device_id: None,
        mail_from: "s@x.example".into(),
        rcpt_to: vec!["r@x.example".into()],
        client_addr: "127.0.0.1".parse().unwrap(),
        tls_protocol: None,
        tls_cipher: None,
        kind: queue::MessageKind::Device,
        subject: None,
        body: b"Subject: x\r\n\r\nx\r\n".to_vec(),
    }
}

#[tokio::test]
async fn a_lease_its_worker_does_not_hold_is_leased_to_it_again_at_once() {
    // The database committed a lease whose answer the worker never got (its
    // connection died in that instant): nothing was sent, and the worker leases it
    // again with its next lease instead of waiting for the lease to expire.
    let pool = crate::harness::fresh_database().await;
    let ids = graph_tenants(&pool, &["Verloren"]).await;
    let lost = queue::enqueue(
        &pool,
        &crate::harness::any_master_key(),
        &queued_message(ids["Verloren"]),
    )
    .await
    .unwrap();
    let held = queue::enqueue(
        &pool,
        &crate::harness::any_master_key(),
        &queued_message(ids["Verloren"]),
    )
    .await
    .unwrap();
    let lease = Duration::from_secs(300);
    let first = queue::lease_due(&pool, "worker-a", 10, lease, &[], None)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    // Only `held` reached the worker; another worker does not take either.
    let other = queue::lease_due(&pool, "worker-b", 10, lease, &[], None)
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
    let again = queue::lease_due(&pool, "worker-a", 10, lease, &[held], None)
        .await
        .unwrap();
    assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), vec![lost]);
    assert!(
        again[0].recovered,
        "counted as taken over: it may have been sent"
    );
    let none = queue::lease_due(&pool, "worker-a", 10, lease, &[held, lost], None)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn leasing_takes_every_tenants_oldest_messages_in_turn() {
    let pool = crate::harness::fresh_database().await;
    let ids = graph_tenants(&pool, &["Burst", "Labor"]).await;
    for _ in 0..50 {
        queue::enqueue(
            &pool,
            &crate::harness::any_master_key(),
            &queued_message(ids["Burst"]),
        )
        .await
        .unwrap();
    }
    let lab_result = queue::enqueue(
        &pool,
        &crate::harness::any_master_key(),
        &queued_message(ids["Labor"]),
    )
    .await
    .unwrap();
    let leased = queue::lease_due(&pool, "test", 4, Duration::from_secs(60), &[], None)
        .await
        .unwrap();
    assert_eq!(leased.len(), 4);
    assert!(
        leased.iter().any(|m| m.id == lab_result),
        "the later lab result is not stuck behind the burst"
    );
    let again = queue::lease_due(&pool, "other", 100, Duration::from_secs(60), &[], None)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "four deliveries in flight per mailbox, counted over every worker"
    );
    assert!(again.iter().all(|m| !leased.iter().any(|l| l.id == m.id)));
    let burst = ids["Burst"];
    sqlx::query("DELETE FROM queue WHERE tenant_id = $1 AND lease_owner IS NOT NULL")
        .bind(burst)
        .execute(&pool)
        .await
        .unwrap();
    let next = queue::lease_due(&pool, "other", 100, Duration::from_secs(60), &[], None)
        .await
        .unwrap();
    assert_eq!(next.len(), 4, "settled deliveries free the mailbox's turn");
    assert!(next.iter().all(|m| m.tenant_id == burst));
}

#[tokio::test]
async fn the_cluster_purges_what_is_past_its_retention_once_per_interval() {
    const INTERVAL: u64 = 2;
    let options = mailbridge::stack::StackOptions::ephemeral();
    let app = TestApp::spawn_configured(options, |s| {
        s.worker.purge_interval = Duration::from_secs(INTERVAL);
        s.worker.retention = Duration::from_secs(3_600);
    })
    .await;
    let started = std::time::Instant::now();
    let tenant = app.add_tenant("Praxis Aufbewahrung").await;
    let device = app.add_device(&tenant, "Scanner").await;
    submit(
        &app,
        &tenant,
        &device.device.username,
        &device.password,
        "a@klinik.example",
        "alt",
    )
    .await;
    let id = app.message_ids().await[0];
    app.wait_for_message(id, |s| s.state.as_str() == "accepted")
        .await;
    // Two more worker processes: three replicas offer to purge.
    let database = crate::harness::database_url(&app.database);
    let mut workers: Vec<_> = (0..2)
        .map(|_| {
            app.worker_command(&database, 60)
                .env("MAILBRIDGE_PURGE_INTERVAL_SECONDS", INTERVAL.to_string())
                .env("MAILBRIDGE_MESSAGE_RETENTION", "1h")
                .spawn()
                .expect("starting mailbridge worker")
        })
        .collect();
    let pool = app.pool();
    let kept = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    // What is past its retention, and what is not.
    sqlx::query("UPDATE messages SET finished_at = now() - interval '2 hours'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO mailbox_usage (mailbox, hour, recipients)
         VALUES ('old@praxis.example', date_trunc('hour', now() - interval '3 days'), 5),
                ('new@praxis.example', date_trunc('hour', now()), 5)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action) VALUES
             (now() - interval '401 days', 'test', 'old.entry'),
             (now() - interval '1 day', 'test', 'recent.entry')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO oauth_flows (state_hash, kind, created_at)
         VALUES ('\\x01', 'sign_in', now() - interval '2 hours'), ('\\x02', 'sign_in', now())",
    )
    .execute(pool)
    .await
    .unwrap();
    // Session transcripts: 7 days by default.
    sqlx::query(
        "INSERT INTO session_transcripts
             (source_addr, started_at, ended_at, listener, outcome, lines)
         VALUES ('192.0.2.1', now() - interval '8 days', now() - interval '8 days',
                 'submission', 'quit', '[]'),
                ('192.0.2.2', now() - interval '1 day', now() - interval '1 day',
                 'submission', 'quit', '[]')",
    )
    .execute(pool)
    .await
    .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kept("SELECT count(*) FROM messages").await > 0
        || kept("SELECT count(*) FROM oauth_flows").await > 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing purged within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(queue::attempts(pool, id).await.unwrap().is_empty());
    let usage: Vec<String> = sqlx::query_scalar(
        "SELECT mailbox FROM mailbox_usage WHERE mailbox LIKE '%@praxis.example'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(usage, ["new@praxis.example"]);
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE actor = 'test'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(audit, ["recent.entry"]);
    let transcripts: Vec<String> = sqlx::query_scalar(
        "SELECT host(source_addr) FROM session_transcripts WHERE source_addr <<= '192.0.2.0/24'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(transcripts, ["192.0.2.2"]);

    // Let the replicas go round three more runs: the purge ran once per interval
    // between them, not once per replica.
    let until = kept("SELECT runs FROM housekeeping WHERE job = 'purge'").await + 3;
    let deadline = std::time::Instant::now() + Duration::from_secs(10 * INTERVAL);
    let runs = loop {
        let runs = kept("SELECT runs FROM housekeeping WHERE job = 'purge'").await;
        if runs >= until {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the purge stopped running: {runs} runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let intervals = started.elapsed().as_secs_f64() / (INTERVAL as f64 * 0.9);
    assert!(
        (runs as f64) <= intervals.ceil() + 1.0,
        "{runs} runs in {:.1} s with three replicas",
        started.elapsed().as_secs_f64()
    );
    for worker in &mut workers {
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
    app.stack.shutdown().await;
}

/// Credentials of a bulk import never downloaded and secrets of a form never shown
/// are sealed rows meant for one use: once expired the purge removes them, even when
/// nobody uses the control plane (which otherwise sweeps them as it makes new ones).
#[tokio::test]
async fn the_purge_removes_expired_one_time_secrets() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.worker.purge_interval = Duration::from_secs(1);
    })
    .await;
    let tenant = app.add_tenant("Praxis Einmalig").await;
    let pool = app.pool();
    let (expired, fresh) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Expired a minute ago, and valid for another hour.
    for (id, expires_in) in [(expired, -60.0), (fresh, 3_600.0)] {
        sqlx::query(
            "INSERT INTO credential_downloads (id, tenant_id, sealed_csv, devices, expires_at)
             VALUES ($1, $2, '\\x00', 1, now() + $3 * interval '1 second')",
        )
        .bind(id)
        .bind(tenant.tenant.id)
        .bind(expires_in)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO secret_reveals (id, subject_id, rotated, sealed, expires_at)
             VALUES ($1, $1, false, '\\x00', now() + $2 * interval '1 second')",
        )
        .bind(id)
        .bind(expires_in)
        .execute(pool)
        .await
        .unwrap();
    }
    let left = || async {
        let downloads: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM credential_downloads ORDER BY id")
                .fetch_all(pool)
                .await
                .unwrap();
        let reveals: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM secret_reveals ORDER BY id")
                .fetch_all(pool)
                .await
                .unwrap();
        (downloads, reveals)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (downloads, reveals) = left().await;
        if downloads == [fresh] && reveals == [fresh] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not purged within 30 s: downloads {downloads:?}, reveals {reveals:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stack.shutdown().await;
}

/// A self-signed RSA certificate and its key, as a customer would register on its app.
fn certificate() -> (Vec<u8>, tenants::CertificateCredential) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mailbridge-app".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let credential = tenants::CertificateCredential {
        certificate_pem: cert.pem(),
        private_key_pem: secrecy::SecretString::from(key.serialize_pem()),
    };
    (cert.der().to_vec(), credential)
}

#[tokio::test]
async fn a_customers_own_app_authenticates_with_a_certificate() {
    let app = TestApp::spawn().await;
    let directory = &app.stack.simulator.directory;
    let (der, credential) = certificate();
    let (_, impostor) = certificate();
    // The registered certificate, signed with a key that does not belong to it.
    let mismatched = tenants::CertificateCredential {
        certificate_pem: credential.certificate_pem.clone(),
        private_key_pem: impostor.private_key_pem.clone(),
    };
    let mut customers = Vec::new();
    for (name, credential) in [
        ("Praxis Zertifikat", credential),
        ("Praxis Falscher Schluessel", mismatched),
    ] {
        let client_id = uuid::Uuid::new_v4().to_string();
        directory.ensure_app(&client_id);
        directory.add_certificate(&client_id, &der).unwrap();
        let slug: String = name
            .to_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let mailbox = format!("scanner@{slug}.example");
        let tenant = tenants::create(
            app.pool(),
            app.stack.settings.master_key.as_ref(),
            tenants::NewTenant {
                name: name.into(),
                entra_tenant_id: Some(uuid::Uuid::new_v4().into()),
                sender_mailbox: mailbox.clone(),
                delivery_method: tenants::DeliveryMethod::Graph,
                own_app: Some(tenants::OwnApp {
                    client_id: client_id.clone(),
                    credential: tenants::AppCredential::Certificate(credential),
                }),
            },
        )
        .await
        .unwrap();
        directory.add_tenant(
            tenant.entra_tenant_id.expect("connected").as_uuid(),
            &[&mailbox],
        );
        directory.consent(
            tenant.entra_tenant_id.expect("connected").as_uuid(),
            &client_id,
            &[mailbridge_m365_sim::ROLE_MAIL_SEND],
        );
        customers.push(TestTenant { tenant });
    }
    let (good, bad) = (&customers[0], &customers[1]);
    let good_device = app.add_device(good, "Scanner").await;
    submit(
        &app,
        good,
        &good_device.device.username,
        &good_device.password,
        "zert@klinik.example",
        "cert",
    )
    .await;
    app.wait_for_inbox("zert@klinik.example", 1).await;
    let requests = directory.token_requests();
    let by_good = requests
        .iter()
        .find(|r| r.tenant == good.tenant.entra_tenant_id.expect("connected").to_string())
        .unwrap();
    assert_eq!(format!("{:?}", by_good.credential), "Certificate");

    let bad_device = app.add_device(bad, "Scanner").await;
    submit(
        &app,
        bad,
        &bad_device.device.username,
        &bad_device.password,
        "nie@klinik.example",
        "cert",
    )
    .await;
    let id = app.message_ids().await.into_iter().last().unwrap();
    app.wait_for_message(id, |s| s.attempt_count == 1 && s.state.as_str() == "queued")
        .await;
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    assert_eq!(
        attempts[0].diagnosis.as_deref(),
        Some("AADSTS700027"),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn mailbox_slots_are_shared_by_every_worker() {
    use mailbridge_worker::limits::{self, Wait};
    let pool = crate::harness::fresh_database().await;
    let graph = tenants::DeliveryMethod::Graph;
    let mut held = Vec::new();
    for _ in 0..limits::GRAPH_CONCURRENCY_PER_MAILBOX {
        held.push(
            limits::admit(&pool, graph, "app", "Scanner@Praxis.example", 1)
                .await
                .unwrap()
                .expect("a free slot"),
        );
    }
    let fifth = limits::admit(&pool, graph, "app", "scanner@praxis.example", 1)
        .await
        .unwrap();
    assert_eq!(
        fifth.err(),
        Some(Wait::Busy),
        "four Graph requests per mailbox at most"
    );
    assert!(
        limits::admit(&pool, graph, "app", "other@praxis.example", 1)
            .await
            .unwrap()
            .is_ok(),
        "per mailbox"
    );
    let smtp = tenants::DeliveryMethod::Smtp;
    assert!(
        limits::admit(&pool, smtp, "app", "scanner@praxis.example", 1)
            .await
            .unwrap()
            .is_ok(),
        "per method"
    );
    held.pop().expect("a held slot").release().await;
    assert!(
        limits::admit(&pool, graph, "app", "scanner@praxis.example", 1)
            .await
            .unwrap()
            .is_ok(),
        "a released slot is free again at once"
    );
}

#[tokio::test]
async fn a_mailbox_at_its_daily_recipients_defers_without_an_attempt() {
    let app = TestApp::spawn_without_worker().await;
    let (tenant, _, id) =
        one_message_queued(&app, "Praxis Tageslimit", "a@klinik.example", "heute").await;
    // Earlier today the mailbox already sent to 10 000 recipients.
    sqlx::query(
        "INSERT INTO mailbox_usage (mailbox, hour, recipients)
         VALUES (lower($1), date_trunc('hour', now() - interval '1 hour'), 10000)",
    )
    .bind(&tenant.tenant.sender_mailbox)
    .execute(app.pool())
    .await
    .unwrap();
    let mut app = app;
    app.stack.start_worker().unwrap();
    let status = app
        .wait_for_message(id, |s| s.next_attempt_at > chrono_now_plus_seconds(600))
        .await;
    assert_eq!(status.state.as_str(), "queued");
    assert_eq!(status.attempt_count, 0, "a deferral is not an attempt");
    assert!(queue::attempts(app.pool(), id).await.unwrap().is_empty());
    assert!(app.stack.simulator.directory.delivered().is_empty());
}

#[tokio::test]
async fn a_mailbox_sends_at_most_thirty_messages_a_minute_by_smtp() {
    use mailbridge_worker::limits::{self, Wait};
    let pool = crate::harness::fresh_database().await;
    let tenant = tenants::create(
        &pool,
        None,
        tenants::NewTenant {
            name: "Praxis Takt".into(),
            entra_tenant_id: Some(uuid::Uuid::new_v4().into()),
            sender_mailbox: "scanner@takt.example".into(),
            delivery_method: tenants::DeliveryMethod::Smtp,
            own_app: None,
        },
    )
    .await
    .unwrap();
    let record = |count: i64, ago: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "WITH sent AS (
                     INSERT INTO messages (id, tenant_id, mail_from, rcpt_to, size_bytes, client_addr, state)
                     SELECT gen_random_uuid(), $1, 'x@y.example', ARRAY['r@y.example'], 1, '192.0.2.1', 'accepted'
                       FROM generate_series(1, $2) RETURNING id)
                 INSERT INTO delivery_attempts (message_id, started_at, duration_ms, method, outcome, mailbox, worker)
                 SELECT id, now() - $3::interval, 1, 'smtp', 'accepted', 'scanner@takt.example', 'earlier' FROM sent",
            )
            .bind(tenant.id)
            .bind(count)
            .bind(ago)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let smtp = tenants::DeliveryMethod::Smtp;
    record(30, "2 minutes").await;
    record(29, "10 seconds").await;
    assert!(
        limits::admit(&pool, smtp, "app", "Scanner@Takt.example", 1)
            .await
            .unwrap()
            .is_ok(),
        "29 in the last minute: one more may go"
    );
    record(1, "1 second").await;
    let thirty_first = limits::admit(&pool, smtp, "app", "scanner@takt.example", 1)
        .await
        .unwrap();
    assert_eq!(thirty_first.err(), Some(Wait::RatePerMinute));
    assert!(
        limits::admit(
            &pool,
            tenants::DeliveryMethod::Graph,
            "app",
            "scanner@takt.example",
            1
        )
        .await
        .unwrap()
        .is_ok(),
        "Graph has no per-minute limit of its own"
    );
}
