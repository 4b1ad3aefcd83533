//! The simulator as strict as Exchange Online on Graph: at most 4 concurrent
//! requests per app and mailbox (a fifth gets `429` with `Retry-After`, which the
//! worker never provokes), and the recipient limits Exchange applies after Graph's
//! `202` — 500 recipients per message (`5.5.3`), 10 000 a day (`5.1.90`) — which come
//! back as non-delivery reports that the worker diagnoses in plain words.

use mailbridge_core::ids::MessageId;
use mailbridge_core::{
    diagnosis::{self, Lang},
    queue::{self, MessageKind, NewMessage},
};
use mailbridge_m365_sim::{
    RECIPIENTS_PER_DAY, RECIPIENTS_PER_MESSAGE, ROLE_MAIL_READ_WRITE, ROLE_MAIL_SEND,
    fault_injection::{Effect, Endpoint, Fault},
};
use uuid::Uuid;

use crate::harness::{TestApp, TestTenant};

/// Queues a message from the customer's mailbox to `recipients` (To and envelope).
async fn queue_to(
    app: &TestApp,
    tenant: &TestTenant,
    recipients: &[String],
    subject: &str,
) -> MessageId {
    let sender = &tenant.tenant.sender_mailbox;
    let message = format!(
        "From: {sender}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@strict.test>\r\n\r\nBefund\r\n",
        recipients.join(",\r\n "),
        Uuid::new_v4().simple(),
    );
    queue::enqueue(
        app.pool(),
        app.master_key(),
        &NewMessage {
            id: MessageId::now(),
            tenant_id: tenant.tenant.id,
            device_id: None,
            mail_from: sender.clone(),
            rcpt_to: recipients.to_vec(),
            client_addr: "192.0.2.1".parse().unwrap(),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Device,
            subject: Some(subject.into()),
            body: message.into_bytes(),
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_worker_keeps_within_four_concurrent_graph_requests_per_mailbox() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Gleichzeitig").await;
    let mailbox = tenant.tenant.sender_mailbox.to_ascii_lowercase();
    let directory = &app.stack.simulator.directory;
    // Slow answers, so that requests overlap as much as the worker lets them.
    directory.inject_fault(Fault {
        endpoint: Endpoint::GraphSend,
        tenant: None,
        mailbox: Some(mailbox.clone()),
        effect: Effect::Delay { seconds: 1 },
        times: Some(12),
    });
    for i in 0..12 {
        queue_to(
            &app,
            &tenant,
            &[format!("parallel{i}@klinik.example")],
            "parallel",
        )
        .await;
    }
    for i in 0..12 {
        app.wait_for_inbox(&format!("parallel{i}@klinik.example"), 1)
            .await;
    }
    let (peak, refused) = directory.graph_concurrency_of(&mailbox);
    assert_eq!(refused, 0, "the worker provoked MailboxConcurrency 429s");
    assert!(peak <= 4, "{peak} concurrent requests");
    assert!(peak >= 2, "the deliveries did not overlap ({peak})");
    assert_eq!(directory.graph_throttled(&mailbox), 0);
}

/// A customer whose app may send as and read its sender mailbox (for the reports).
async fn watched_customer(app: &TestApp, name: &str) -> TestTenant {
    let tenant = app.add_tenant(name).await;
    app.stack.simulator.directory.consent(
        tenant.entra(),
        &app.stack.client_id,
        &[ROLE_MAIL_SEND, ROLE_MAIL_READ_WRITE],
    );
    tenant
}

async fn bounce_of(app: &TestApp, id: MessageId) -> (String, String, i64) {
    app.wait_for_message(id, |m| m.state.as_str() == "bounced")
        .await;
    sqlx::query_as(
        "SELECT min(status), min(diagnosis), count(*) FROM message_bounces WHERE message_id = $1",
    )
    .bind(id)
    .fetch_one(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn recipient_limits_after_the_202_come_back_as_reports_the_worker_explains() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.worker.bounce_poll_seconds = 1;
    })
    .await;
    let directory = &app.stack.simulator.directory;

    // 501 recipients in one message: Graph says 202, Exchange refuses all of them.
    let tenant = watched_customer(&app, "Praxis Rundschreiben").await;
    let many: Vec<String> = (0..=RECIPIENTS_PER_MESSAGE)
        .map(|i| format!("patient{i}@klinik.example"))
        .collect();
    let id = queue_to(&app, &tenant, &many, "Rundschreiben").await;
    let (status, key, count) = bounce_of(&app, id).await;
    assert_eq!((status.as_str(), key.as_str()), ("5.5.3", "NDR 5.5.3"));
    assert_eq!(count as usize, many.len(), "every recipient reported");
    assert!(directory.inbox("patient0@klinik.example").is_empty());
    let explained = diagnosis::by_key(&key).unwrap();
    assert!(explained.title(Lang::En).contains("500"));
    assert!(explained.fix(Lang::De).contains("Verteilerliste"));

    // The mailbox's day is used up by another client sending as it: the next message
    // is accepted by Graph and refused by Exchange with 5.1.90.
    let busy = watched_customer(&app, "Praxis Tageslimit").await;
    directory.add_recipients_sent(&busy.tenant.sender_mailbox, RECIPIENTS_PER_DAY);
    let id = queue_to(&app, &busy, &["labor@klinik.example".to_owned()], "Labor").await;
    let (status, key, _) = bounce_of(&app, id).await;
    assert_eq!((status.as_str(), key.as_str()), ("5.1.90", "NDR 5.1.90"));
    let last_error = queue::status(app.pool(), id)
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap_or_default();
    assert!(last_error.contains("5.1.90"), "{last_error}");
    assert!(directory.inbox("labor@klinik.example").is_empty());
    assert_eq!(directory.refused_after_acceptance(), 2);
}
