//! Bounces: Microsoft accepts a message (Graph `202`), then its non-delivery report
//! comes back into the sender mailbox. The worker finds the report, records the
//! message `bounced` with Microsoft's code and what it means (English and German),
//! counts it, reports it like a failure, and moves the report out of the Inbox — once,
//! however many workers watch. A message to a recipient that exists stays accepted.

use mailbridge_core::ids::MessageId;
use mailbridge_core::queue::{self, MessageState};
use std::time::Duration;

use lettre::{AsyncTransport, address::Envelope};
use mailbridge_core::metrics::metrics;
use mailbridge_m365_sim::{ROLE_MAIL_READ_WRITE, ROLE_MAIL_SEND};

use crate::{
    harness::{
        ReportRefusal, TestApp, TestTenant, allow_reports, database_url, readable, refuse_reports,
        reports_written, sample_message, wait_until, without_final_crlf,
    },
    staff_client::StaffClient,
};

/// Where the customer's failure reports go (outside the simulated organisations).
const REPORTS_TO: &str = "it@msp-reports.example";

/// A customer whose app may send and read its sender mailbox, with a colleague's
/// mailbox that exists, and failure reports going to `REPORTS_TO`.
async fn customer(app: &TestApp, name: &str) -> (TestTenant, String) {
    let tenant = app.add_tenant(name).await;
    let entra = tenant.tenant.entra_tenant_id.expect("connected");
    let directory = &app.stack.simulator.directory;
    directory.consent(
        entra.as_uuid(),
        &app.stack.client_id,
        &[ROLE_MAIL_SEND, ROLE_MAIL_READ_WRITE],
    );
    let domain = tenant
        .tenant
        .sender_mailbox
        .rsplit_once('@')
        .expect("an address")
        .1
        .to_owned();
    let colleague = format!("arzt@{domain}");
    directory.add_tenant(entra.as_uuid(), &[&colleague]);
    sqlx::query("UPDATE tenants SET notification_address = $2 WHERE id = $1")
        .bind(tenant.tenant.id)
        .bind(REPORTS_TO)
        .execute(app.pool())
        .await
        .unwrap();
    (tenant, domain)
}

/// Sends `message` from the tenant's sender mailbox to `to` through the edge.
async fn submit(app: &TestApp, tenant: &TestTenant, to: &str, message: &str) {
    let device = app.add_device(tenant, &format!("Scanner {to}")).await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let envelope = Envelope::new(Some(sender.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(message))
        .await
        .expect("the edge accepts the message");
}

/// Sends a sample message with `subject` to `to` through the edge; its id.
async fn sent_to(app: &TestApp, tenant: &TestTenant, to: &str, subject: &str) -> MessageId {
    let sender = &tenant.tenant.sender_mailbox;
    submit(app, tenant, to, &sample_message(sender, to, subject)).await;
    id_to(app, to).await
}

async fn id_to(app: &TestApp, recipient: &str) -> MessageId {
    sqlx::query_scalar("SELECT id FROM messages WHERE $1 = ANY(rcpt_to) AND kind = 'device'")
        .bind(recipient)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unknown_recipient_bounces_and_is_explained_reported_counted_and_moved() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.worker.bounce_poll_seconds = 1;
    })
    .await;
    let (tenant, domain) = customer(&app, "Praxis Rueckläufer").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let unknown = format!("niemand@{domain}");
    let colleague = format!("arzt@{domain}");
    // The device sends no Message-ID: the edge gives the message one, which the
    // report quotes.
    let without_id = format!(
        "From: Scanner <{sender}>\r\nTo: {unknown}\r\nSubject: Befund 4711\r\n\r\nBefund.\r\n"
    );
    submit(&app, &tenant, &unknown, &without_id).await;
    submit(
        &app,
        &tenant,
        &colleague,
        &sample_message(&sender, &colleague, "Befund 4712"),
    )
    .await;
    let bounced = id_to(&app, &unknown).await;
    let kept = id_to(&app, &colleague).await;
    let message_id: Option<String> =
        sqlx::query_scalar("SELECT message_id_header FROM messages WHERE id = $1")
            .bind(bounced)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(
        message_id.as_deref(),
        Some(format!("{}@relay.mailbridge.test", bounced.simple()).as_str()),
        "the edge recorded the Message-ID it added"
    );

    // Accepted by Microsoft first, bounced when the report has come back.
    app.wait_for_message(bounced, |m| {
        m.state.as_str() == "accepted" || m.state.as_str() == "bounced"
    })
    .await;
    let status = app
        .wait_for_message(bounced, |m| m.state.as_str() == "bounced")
        .await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("5.1.10"),
        "{status:?}"
    );
    let recorded: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT recipient, status, diagnosis FROM message_bounces WHERE message_id = $1",
    )
    .bind(bounced)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        recorded,
        vec![(unknown.clone(), "5.1.10".into(), "NDR 5.1.10".into())]
    );
    // Counted right after the bounce's commit, which the test may see first.
    let counted = || {
        metrics()
            .worker
            .bounces
            .with_label_values(&[&tenant.tenant.id.to_string(), "5.1.10"])
            .get()
    };
    wait_until("the bounce counted", Duration::from_secs(10), || async {
        counted() >= 1
    })
    .await;
    assert_eq!(counted(), 1);

    // Reported like a failure, to the customer's notification address.
    let reports = app.wait_for_inbox(REPORTS_TO, 1).await;
    assert!(
        reports[0]
            .subject
            .as_deref()
            .unwrap_or("")
            .contains("Befund 4711"),
        "{:?}",
        reports[0].subject
    );
    assert!(
        readable(&reports[0].mime).contains("5.1.10")
            && readable(&reports[0].mime).contains("non-delivery report"),
        "{}",
        readable(&reports[0].mime)
    );

    // The report leaves the Inbox for the folder "mailbridge bounces" (the move
    // follows the report to the MSP, which can arrive first).
    let directory = &app.stack.simulator.directory;
    wait_until(
        "the NDR moved out of the Inbox",
        Duration::from_secs(20),
        || async {
            directory
                .mail_folders(&sender)
                .iter()
                .any(|f| f.display_name == "mailbridge bounces" && !f.messages.is_empty())
        },
    )
    .await;
    let folders = directory.mail_folders(&sender);
    let inbox = folders.iter().find(|f| f.display_name == "Inbox").unwrap();
    assert!(inbox.messages.is_empty(), "{:?}", inbox.messages);
    let moved = folders
        .iter()
        .find(|f| f.display_name == "mailbridge bounces")
        .expect("the bounce folder was created");
    assert_eq!(moved.messages.len(), 1);
    assert_eq!(moved.messages[0].subject, "Undeliverable: Befund 4711");

    // The message to the colleague stays accepted: after another poll with nothing new.
    let handled_at: chrono::DateTime<chrono::Utc> = chrono::Utc::now();
    wait_until("another poll", Duration::from_secs(20), || async {
        let polled: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_polled_at FROM bounce_watch WHERE tenant_id = $1")
                .bind(tenant.tenant.id)
                .fetch_one(app.pool())
                .await
                .unwrap();
        polled.is_some_and(|p| p > handled_at + chrono::Duration::seconds(1))
    })
    .await;
    assert_eq!(directory.reports_generated(), 1);
    assert_eq!(
        mailbridge_core::queue::status(app.pool(), kept)
            .await
            .unwrap()
            .unwrap()
            .state,
        MessageState::Accepted
    );

    // The message page, in English and in German; the log filters on the state.
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let page = owner.get(&format!("/messages/{bounced}")).await;
    assert_eq!(page.text_of("message-state").as_deref(), Some("bounced"));
    assert!(page.body.contains(&format!("data-recipient=\"{unknown}\"")));
    assert!(page.body.contains("data-status=\"5.1.10\""));
    assert!(page.body.contains("RESOLVER.ADR.RecipientNotFound"));
    assert!(
        page.body.contains("The recipient does not exist"),
        "{}",
        page.body
    );
    let german = owner
        .get_with(
            &format!("/messages/{bounced}"),
            &[("accept-language", "de")],
        )
        .await;
    assert_eq!(
        german.text_of("message-state").as_deref(),
        Some("unzustellbar")
    );
    assert!(
        german.body.contains("Den Empfänger gibt es nicht"),
        "{}",
        german.body
    );
    let accepted = owner.get(&format!("/messages/{kept}")).await;
    assert_eq!(
        accepted.text_of("message-state").as_deref(),
        Some("accepted by Microsoft")
    );
    let log = owner.get("/messages?state=bounced").await;
    assert!(log.body.contains(&format!("data-message=\"{bounced}\"")));
    assert!(!log.body.contains(&format!("data-message=\"{kept}\"")));
    let customer = owner.get(&format!("/customers/{}", tenant.tenant.id)).await;
    assert!(
        customer.body.contains("id=\"bounces-visible\""),
        "{}",
        customer.body
    );
}

#[tokio::test]
async fn without_read_permission_bounces_are_not_visible_and_the_page_says_so() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.worker.bounce_poll_seconds = 1;
    })
    .await;
    // Mail.Send only: Graph answers 403 to the mailbox read.
    let tenant = app.add_tenant("Praxis Ohne Lesen").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let domain = sender.rsplit_once('@').unwrap().1.to_owned();
    let unknown = format!("niemand@{domain}");
    submit(
        &app,
        &tenant,
        &unknown,
        &sample_message(&sender, &unknown, "Befund"),
    )
    .await;
    let id = id_to(&app, &unknown).await;
    app.wait_for_message(id, |m| m.state.as_str() == "accepted")
        .await;
    wait_until("the mailbox refused", Duration::from_secs(20), || async {
        let visible: Option<Option<bool>> =
            sqlx::query_scalar("SELECT visible FROM bounce_watch WHERE tenant_id = $1")
                .bind(tenant.tenant.id)
                .fetch_optional(app.pool())
                .await
                .unwrap();
        visible == Some(Some(false))
    })
    .await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let page = owner.get(&format!("/customers/{}", tenant.tenant.id)).await;
    let warning = page.text_of("bounces-not-visible").expect("the warning");
    assert!(
        warning.contains("grant Mail.ReadWrite") || warning.contains("Grant Mail.ReadWrite"),
        "{warning}"
    );
    assert!(warning.contains("ErrorAccessDenied"), "{warning}");
    // The message stays accepted: nobody could read its bounce.
    assert_eq!(
        mailbridge_core::queue::status(app.pool(), id)
            .await
            .unwrap()
            .unwrap()
            .state,
        MessageState::Accepted
    );
}

#[tokio::test]
async fn two_worker_processes_handle_each_report_once() {
    let app = TestApp::spawn_without_worker().await;
    let (tenant, domain) = customer(&app, "Praxis Zwei Worker").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let database = database_url(&app.database);
    let mut workers: Vec<_> = (0..2)
        .map(|_| {
            app.worker_command(&database, 30)
                .env("MAILBRIDGE_BOUNCE_POLL_SECONDS", "1")
                .spawn()
                .expect("starting mailbridge worker")
        })
        .collect();
    let recipients: Vec<String> = (0..3).map(|i| format!("weg{i}@{domain}")).collect();
    for to in &recipients {
        submit(
            &app,
            &tenant,
            to,
            &sample_message(&sender, to, &format!("Befund {to}")),
        )
        .await;
    }
    wait_until("three bounces", Duration::from_secs(60), || async {
        let bounced: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE state = 'bounced'")
                .fetch_one(app.pool())
                .await
                .unwrap();
        bounced == 3
    })
    .await;
    // Every report delivered to the notification address, each once — also after
    // both workers have polled the mailbox again.
    let reports = app.wait_for_inbox(REPORTS_TO, 3).await;
    let handled_at = chrono::Utc::now();
    wait_until("two more polls", Duration::from_secs(20), || async {
        let polled: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_polled_at FROM bounce_watch WHERE tenant_id = $1")
                .bind(tenant.tenant.id)
                .fetch_one(app.pool())
                .await
                .unwrap();
        polled.is_some_and(|p| p > handled_at + chrono::Duration::seconds(2))
    })
    .await;
    let reports_later = app.stack.simulator.directory.inbox(REPORTS_TO);
    for worker in &mut workers {
        worker.kill().ok();
        worker.wait().ok();
    }
    assert_eq!(reports.len(), 3);
    assert_eq!(reports_later.len(), 3, "no report twice");
    let notifications = reports_written(app.pool()).await;
    assert_eq!(notifications, 3);
    // The customer's usage counts each bounced message once, however many workers
    // saw its report.
    let usage_bounced: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(bounced), 0)::bigint FROM usage_hours WHERE tenant_id = $1",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(usage_bounced, 3, "bounces in the usage report");
    let folders = app.stack.simulator.directory.mail_folders(&sender);
    let bounce_folders: Vec<_> = folders
        .iter()
        .filter(|f| f.display_name == "mailbridge bounces")
        .collect();
    assert_eq!(bounce_folders.len(), 1);
    assert_eq!(bounce_folders[0].messages.len(), 3);
    assert!(
        folders
            .iter()
            .find(|f| f.display_name == "Inbox")
            .unwrap()
            .messages
            .is_empty()
    );
}

/// A bounce and the report about it commit together: while the database fails to
/// queue the report, the bounce is not recorded either and the non-delivery report
/// stays in the Inbox to be read again; once it can, the next poll records the
/// bounce with exactly one report. A report the database refuses for good (a
/// constraint) does not hold its bounce up: that is recorded without it.
#[tokio::test]
async fn a_bounce_is_recorded_with_its_report_and_not_held_up_by_a_refused_one() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.worker.bounce_poll_seconds = 1;
    })
    .await;
    let (tenant, domain) = customer(&app, "Praxis Zusammen").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    refuse_reports(app.pool(), ReportRefusal::Failure).await;
    let unknown = format!("niemand@{domain}");
    let id = sent_to(&app, &tenant, &unknown, "Befund 4713").await;
    app.wait_for_message(id, |m| m.state == MessageState::Accepted)
        .await;
    let inbox = || {
        app.stack
            .simulator
            .directory
            .mail_folders(&sender)
            .into_iter()
            .find(|f| f.display_name == "Inbox")
            .map_or(0, |f| f.messages.len())
    };
    wait_until(
        "the report in the Inbox",
        Duration::from_secs(30),
        || async { inbox() == 1 },
    )
    .await;
    let arrived = chrono::Utc::now();
    let polled_since = |at: chrono::DateTime<chrono::Utc>| {
        let pool = app.pool().clone();
        let tenant = tenant.tenant.id;
        async move {
            let polled: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT last_polled_at FROM bounce_watch WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
                    .flatten();
            polled.is_some_and(|p| p > at + chrono::Duration::seconds(2))
        }
    };
    wait_until(
        "polls after the report arrived",
        Duration::from_secs(30),
        || polled_since(arrived),
    )
    .await;
    let status = queue::status(app.pool(), id).await.unwrap().unwrap();
    assert_eq!(
        status.state,
        MessageState::Accepted,
        "not bounced without its report"
    );
    let bounces: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_bounces WHERE message_id = $1")
            .bind(id)
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(bounces, 0);
    assert_eq!(inbox(), 1, "left in the Inbox to be read again");

    allow_reports(app.pool()).await;
    app.wait_for_message(id, |m| m.state == MessageState::Bounced)
        .await;
    let reports = app.wait_for_inbox(REPORTS_TO, 1).await;
    let handled = chrono::Utc::now();
    wait_until("polls after the bounce", Duration::from_secs(30), || {
        polled_since(handled)
    })
    .await;
    assert_eq!(reports.len(), 1);
    assert_eq!(
        app.stack.simulator.directory.inbox(REPORTS_TO).len(),
        1,
        "one report"
    );
    let notifications = reports_written(app.pool()).await;
    assert_eq!(notifications, 1);

    // Refused for good: the next bounce is recorded and moved, without a report.
    refuse_reports(app.pool(), ReportRefusal::Constraint).await;
    let unknown = format!("auch-niemand@{domain}");
    let id = sent_to(&app, &tenant, &unknown, "Befund 4714").await;
    app.wait_for_message(id, |m| m.state == MessageState::Bounced)
        .await;
    wait_until(
        "the report out of the Inbox",
        Duration::from_secs(30),
        || async { inbox() == 0 },
    )
    .await;
    allow_reports(app.pool()).await;
    let notifications = reports_written(app.pool()).await;
    assert_eq!(notifications, 1, "no report for the second bounce");
}
