//! Microsoft's limits as Exchange and Graph count them, against the simulator: Graph's
//! request budget per app and mailbox shared by two workers, the simulator's own
//! enforcement of it (`429` + `Retry-After`), the day's recipients counted from the
//! header's To and Cc as well as the envelope, a `429` without `Retry-After` backing
//! the mailbox off until the first success, and no draft left in the mailbox after a
//! failed large send.

use mailbridge_core::ids::MessageId;
use std::time::{Duration, Instant};

use mailbridge_core::queue::{self, MessageKind, NewMessage};
use mailbridge_m365_sim::{
    GraphLimits, ROLE_MAIL_READ_WRITE, ROLE_MAIL_SEND,
    fault_injection::{Effect, Endpoint, Fault},
};
use uuid::Uuid;

use crate::harness::{TestApp, TestTenant};

/// Queues a message from the customer's mailbox with header `to`/`cc` and envelope
/// `rcpt_to` (as the edge stores it: To and Cc joined to the envelope).
async fn queue_message(
    app: &TestApp,
    tenant: &TestTenant,
    header: &str,
    rcpt_to: &[&str],
    body: &str,
) -> MessageId {
    let message = format!(
        "From: {sender}\r\n{header}Subject: Limits\r\nMessage-ID: <{}@limits.test>\r\n\r\n{body}\r\n",
        Uuid::new_v4().simple(),
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
            rcpt_to: rcpt_to.iter().map(|r| (*r).to_owned()).collect(),
            client_addr: "192.0.2.1".parse().unwrap(),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Device,
            subject: Some("Limits".into()),
            body: message.into_bytes(),
        },
    )
    .await
    .unwrap()
}

/// Graph `sendMail` requests the simulator saw for `mailbox` (faulted or not).
fn graph_sends(app: &TestApp, mailbox: &str) -> usize {
    app.stack
        .simulator
        .directory
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::GraphSend && r.mailbox.as_deref() == Some(mailbox))
        .count()
}

async fn deferrals_without_attempt(app: &TestApp, id: MessageId) -> (i64, bool) {
    // Attempts as recorded: a lease raises `attempt_count` for a moment, and a
    // deferral takes it back, so the counter alone can read 1 in between.
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE message_id = $1")
            .bind(id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    let status = queue::status(app.pool(), id).await.unwrap().unwrap();
    (
        attempts,
        status.state.as_str() == "queued" && status.next_attempt_at > chrono::Utc::now(),
    )
}

#[tokio::test]
async fn the_graph_budget_is_shared_by_two_workers() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Budget").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let mut second = app.spawn_worker_process(300);
    // Another worker already made all but three of the ten minutes' requests.
    sqlx::query(
        "INSERT INTO graph_usage (client_id, mailbox, minute, requests, upload_bytes)
         VALUES ($1, $2, date_trunc('minute', now()), 9997, 0)",
    )
    .bind(&app.stack.client_id)
    .bind(&mailbox)
    .execute(app.pool())
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            queue_message(
                &app,
                &tenant,
                "To: budget@klinik.example\r\n",
                &["budget@klinik.example"],
                &format!("Befund {i}"),
            )
            .await,
        );
    }
    app.wait_for_inbox("budget@klinik.example", 3).await;
    // Both workers have had time to try the others: they wait, unattempted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut waiting = 0;
        for id in &ids {
            let (attempts, deferred) = deferrals_without_attempt(&app, *id).await;
            if attempts == 0 && deferred {
                waiting += 1;
            }
        }
        if waiting == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} of 3 messages deferred"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.stack
            .simulator
            .directory
            .inbox("budget@klinik.example")
            .len(),
        3,
        "three requests were left of the budget"
    );
    assert_eq!(
        graph_sends(&app, &mailbox),
        3,
        "nothing sent over the budget"
    );
    let used: i64 = sqlx::query_scalar(
        "SELECT sum(requests)::bigint FROM graph_usage WHERE client_id = $1 AND mailbox = $2",
    )
    .bind(&app.stack.client_id)
    .bind(&mailbox)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(used, 10_000);
    second.kill().ok();
    second.wait().ok();
}

#[tokio::test]
async fn the_simulator_throttles_graph_over_its_budget_and_the_mailbox_waits() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Simuliertes Budget").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    directory.set_graph_limits(GraphLimits {
        requests: 2,
        request_window_seconds: 4,
        ..GraphLimits::default()
    });
    for i in 0..5 {
        queue_message(
            &app,
            &tenant,
            "To: sim@klinik.example\r\n",
            &["sim@klinik.example"],
            &format!("Befund {i}"),
        )
        .await;
    }
    let inbox = app.wait_for_inbox("sim@klinik.example", 5).await;
    assert!(
        directory.graph_throttled(&mailbox) >= 1,
        "the simulator answered 429 over its budget"
    );
    // Never more than two accepted in any four seconds.
    let mut times: Vec<_> = inbox.iter().map(|m| m.received_at).collect();
    times.sort();
    for pair in times.windows(3) {
        assert!(
            pair[2] - pair[0] >= chrono::TimeDelta::milliseconds(3500),
            "three sends within {} ms",
            (pair[2] - pair[0]).num_milliseconds()
        );
    }
}

#[tokio::test]
async fn the_days_recipients_count_to_and_cc_with_the_envelope() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Empfaenger").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    // 9 998 of the day's 10 000 recipients are used.
    sqlx::query(
        "INSERT INTO mailbox_usage (mailbox, hour, recipients)
         VALUES ($1, date_trunc('hour', now(), 'UTC'), 9998)",
    )
    .bind(&mailbox)
    .execute(app.pool())
    .await
    .unwrap();
    // To and Cc, joined to the envelope by the edge: two recipients, the last two.
    queue_message(
        &app,
        &tenant,
        "To: a@klinik.example\r\nCc: b@klinik.example\r\n",
        &["a@klinik.example", "b@klinik.example"],
        "zwei",
    )
    .await;
    let delivered = app.wait_for_inbox("b@klinik.example", 1).await;
    assert_eq!(delivered[0].recipients.len(), 2, "Exchange counts both");
    assert_eq!(
        app.stack.simulator.directory.recipients_today(&mailbox),
        2,
        "the simulator counted what the worker counted"
    );
    // The simulator has the message before the worker has recorded it: wait for the
    // worker's count too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counted: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(recipients), 0)::bigint FROM mailbox_usage WHERE mailbox = $1",
        )
        .bind(&mailbox)
        .fetch_one(app.pool())
        .await
        .unwrap();
        if counted == 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker counted {counted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One more recipient is over the limit: deferred, not attempted.
    let over = queue_message(
        &app,
        &tenant,
        "To: c@klinik.example\r\n",
        &["c@klinik.example"],
        "eine",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (attempts, deferred) = deferrals_without_attempt(&app, over).await;
        assert_eq!(attempts, 0, "not attempted over the day's limit");
        if deferred {
            break;
        }
        assert!(Instant::now() < deadline, "the message was not deferred");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted: i64 =
        sqlx::query_scalar("SELECT sum(recipients)::bigint FROM mailbox_usage WHERE mailbox = $1")
            .bind(&mailbox)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(counted, 10_000);
    assert!(
        app.stack
            .simulator
            .directory
            .inbox("c@klinik.example")
            .is_empty()
    );
}

#[tokio::test]
async fn a_429_without_retry_after_backs_the_mailbox_off_until_the_first_success() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Ohne Retry-After").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphSend,
        tenant: None,
        mailbox: Some(mailbox.clone()),
        effect: Effect::Http {
            status: 429,
            code: "ApplicationThrottled".into(),
            message: "Application is over its MailboxConcurrency limit.".into(),
            retry_after: None,
        },
        times: Some(2),
    });
    let queue = |i: usize| {
        queue_message(
            &app,
            &tenant,
            "To: breaker@klinik.example\r\n",
            &["breaker@klinik.example"],
            Box::leak(format!("Befund {i}").into_boxed_str()),
        )
    };
    queue(0).await;
    // Open: the mailbox is held for every worker, shown as a hold.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM delivery_holds WHERE scope = 'mailbox' AND subject = $1",
    )
    .bind(&mailbox)
    .fetch_one(app.pool())
    .await
    .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "no hold on the mailbox");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Messages that come meanwhile wait for the breaker, not each on its own.
    for i in 1..5 {
        queue(i).await;
    }
    let inbox = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let inbox = directory.inbox("breaker@klinik.example");
            if inbox.len() == 5 {
                break inbox;
            }
            assert!(Instant::now() < deadline, "{} of 5 delivered", inbox.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // While open, only probes went: the two refused and the one that closed it,
    // each further apart than the one before.
    let refused: Vec<_> = directory
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::GraphSend && r.faulted)
        .map(|r| r.at)
        .collect();
    assert_eq!(refused.len(), 2, "one request per probe while open");
    let first_success = inbox.iter().map(|m| m.received_at).min().unwrap();
    let first_gap = refused[1] - refused[0];
    let second_gap = first_success - refused[1];
    assert!(
        first_gap >= chrono::TimeDelta::seconds(8),
        "backed off: {first_gap}"
    );
    assert!(
        second_gap > first_gap + chrono::TimeDelta::seconds(4),
        "exponential: {first_gap} then {second_gap}"
    );
    // Closed on the first success: the rest followed at once.
    let last = inbox.iter().map(|m| m.received_at).max().unwrap();
    assert!(last - first_success < chrono::TimeDelta::seconds(5));
}

/// A customer whose large messages take Graph's draft path.
async fn large_message_customer(app: &TestApp, name: &str) -> TestTenant {
    let tenant = app.add_tenant(name).await;
    app.stack.simulator.directory.consent(
        tenant.entra(),
        &app.stack.client_id,
        &[ROLE_MAIL_SEND, ROLE_MAIL_READ_WRITE],
    );
    tenant
}

/// A scan too large for one Graph request, queued: text and a 5 MB PDF.
async fn queue_large(app: &TestApp, tenant: &TestTenant, to: &str) -> MessageId {
    use base64::Engine;
    let pdf: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i: usize| (i * 31 % 251) as u8)
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pdf);
    let mut lines = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).unwrap());
        lines.push_str("\r\n");
    }
    let header = format!(
        "To: {to}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n"
    );
    let body = format!(
        "--b1\r\nContent-Type: text/plain\r\n\r\nScan\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{lines}--b1--"
    );
    queue_message(app, tenant, &header, &[to], &body).await
}

/// Waits until an attempt of message `id` is recorded.
async fn wait_for_attempt(app: &TestApp, id: MessageId) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue::attempts(app.pool(), id).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Graph draft recorded on message `id` (none once it left the queue).
async fn recorded_draft(app: &TestApp, id: MessageId) -> Option<String> {
    sqlx::query_scalar("SELECT q.graph_draft_id FROM messages m LEFT JOIN queue q ON q.message_id = m.id WHERE m.id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

/// Waits until Graph holds a draft in `mailbox`.
async fn wait_for_draft(app: &TestApp, mailbox: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.stack.simulator.directory.drafts_in(mailbox) == 0 {
        assert!(Instant::now() < deadline, "Graph made no draft");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Graph creates `mailbox`'s next draft but answers only `seconds` later.
fn late_draft(mailbox: &str, seconds: u64) -> Fault {
    Fault {
        endpoint: Endpoint::GraphDraft,
        tenant: None,
        mailbox: Some(mailbox.to_owned()),
        effect: Effect::AcceptThenDelay { seconds },
        times: Some(1),
    }
}

fn http(status: u16, code: &str, retry_after: Option<u64>) -> Effect {
    Effect::Http {
        status,
        code: code.into(),
        message: format!("{code} (injected)"),
        retry_after,
    }
}

#[tokio::test]
async fn a_failed_large_send_leaves_no_draft() {
    let app = TestApp::spawn().await;
    let tenant = large_message_customer(&app, "Praxis Entwurf").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    // The send of the draft is refused for good: the message fails, its draft goes.
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphDraftSend,
        tenant: None,
        mailbox: Some(mailbox.clone()),
        effect: http(400, "ErrorInvalidRecipients", None),
        times: Some(1),
    });
    let id = queue_large(&app, &tenant, "entwurf@klinik.example").await;
    app.wait_for_message(id, |s| s.state.as_str() == "failed")
        .await;
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].upstream_code.as_deref(),
        Some("ErrorInvalidRecipients")
    );
    assert_eq!(
        attempts[0].diagnosis.as_deref(),
        Some("InvalidMessage"),
        "{attempts:?}"
    );
    assert_eq!(directory.drafts_in(&mailbox), 0, "no draft left behind");
    let recorded = recorded_draft(&app, id).await;
    assert_eq!(recorded, None);
}

#[tokio::test]
async fn a_draft_that_could_not_be_deleted_is_deleted_by_the_next_attempt() {
    let app = TestApp::spawn().await;
    let tenant = large_message_customer(&app, "Praxis Entwurf Rest").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    // The upload fails and so does the deletion (as if the worker had died between
    // the steps): the draft stays, recorded on the message.
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphUpload,
        tenant: None,
        mailbox: Some(mailbox.clone()),
        effect: http(503, "ServiceUnavailable", Some(3)),
        times: Some(1),
    });
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphDelete,
        tenant: None,
        mailbox: Some(mailbox.clone()),
        effect: http(503, "ServiceUnavailable", Some(3)),
        times: Some(1),
    });
    let id = queue_large(&app, &tenant, "rest@klinik.example").await;
    wait_for_attempt(&app, id).await;
    assert_eq!(
        directory.drafts_in(&mailbox),
        1,
        "the failed draft is still there"
    );
    let recorded = recorded_draft(&app, id).await;
    assert!(recorded.is_some(), "and recorded on its message");
    // The retry deletes it before it makes its own, which it sends.
    let inbox = app.wait_for_inbox("rest@klinik.example", 1).await;
    assert_eq!(inbox[0].via, "graph-upload");
    assert_eq!(directory.drafts_in(&mailbox), 0, "no draft piled up");
    let deletes = directory
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::GraphDelete && !r.faulted)
        .count();
    assert_eq!(deletes, 1, "the leftover was deleted once");
}

#[tokio::test]
async fn a_draft_whose_creation_was_never_answered_is_swept_by_the_next_attempt() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.m365.request_timeout = Duration::from_secs(2);
    })
    .await;
    let tenant = large_message_customer(&app, "Praxis Entwurf Verwaist").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    // Graph creates the draft but answers only after the worker gave up: the draft
    // exists, and its id was never recorded.
    directory.inject_fault(late_draft(&mailbox, 4));
    let id = queue_large(&app, &tenant, "verwaist@klinik.example").await;
    wait_for_attempt(&app, id).await;
    let recorded = recorded_draft(&app, id).await;
    assert_eq!(recorded, None, "the worker never learnt the draft's id");
    wait_for_draft(&app, &mailbox).await;
    assert_eq!(directory.drafts_in(&mailbox), 1, "Graph has the draft");
    // The retry (due now rather than in a minute) finds it by its marker, deletes
    // it, and sends its own.
    sqlx::query("UPDATE queue SET due_at = now() WHERE message_id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    let inbox = app.wait_for_inbox("verwaist@klinik.example", 1).await;
    assert_eq!(inbox[0].via, "graph-upload");
    assert_eq!(directory.drafts_in(&mailbox), 0, "no draft piled up");
    let deletes = directory
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::GraphDelete && !r.faulted)
        .count();
    assert_eq!(deletes, 1, "the orphan was deleted once");
}

#[tokio::test]
async fn a_worker_whose_lease_passed_to_another_does_not_go_on_with_its_draft() {
    let app = TestApp::spawn().await;
    let tenant = large_message_customer(&app, "Praxis Entwurf Übernommen").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    // Graph takes a while to answer the draft's creation; meanwhile the lease
    // passes to another worker (as when this one hung past its expiry).
    directory.inject_fault(late_draft(&mailbox, 3));
    let id = queue_large(&app, &tenant, "uebernommen@klinik.example").await;
    wait_for_draft(&app, &mailbox).await;
    let taken = sqlx::query(
        "UPDATE queue SET lease_owner = 'another-worker', due_at = now() + interval '1 hour'
          WHERE message_id = $1 AND lease_owner IS NOT NULL",
    )
    .bind(id)
    .execute(app.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(
        taken, 1,
        "the message was leased while Graph made its draft"
    );
    wait_for_attempt(&app, id).await;
    assert!(
        directory.inbox("uebernommen@klinik.example").is_empty(),
        "the worker that lost its lease sent the message"
    );
    assert_eq!(directory.drafts_in(&mailbox), 0, "its draft was deleted");
    let recorded = recorded_draft(&app, id).await;
    assert_eq!(
        recorded, None,
        "nothing recorded on the other worker's lease"
    );
    // The lease's new holder is gone too: the message is due again and sent once.
    sqlx::query("UPDATE queue SET lease_owner = NULL, due_at = now() WHERE message_id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    queue::wake_workers(app.pool(), "test").await.unwrap();
    let inbox = app.wait_for_inbox("uebernommen@klinik.example", 1).await;
    assert_eq!(inbox.len(), 1);
    app.wait_for_message(id, |s| s.state.as_str() == "accepted")
        .await;
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    assert_eq!(
        attempts.len(),
        2,
        "each attempt recorded once: {attempts:?}"
    );
    assert_eq!(directory.inbox("uebernommen@klinik.example").len(), 1);
}
