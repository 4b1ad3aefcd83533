//! The promise an MSP buys: a message the edge said `250` to is delivered, whatever
//! fails. Here PostgreSQL itself goes away under the running stack and comes back.

use mailbridge_core::ids::MessageId;
use std::time::Duration;

use lettre::{AsyncTransport, address::Envelope};
use mailbridge::stack::{Stack, StackOptions};
use mailbridge_core::{Settings, db};

use crate::harness::{SmtpProbe, TestApp, sample_message, without_final_crlf};

#[tokio::test]
async fn a_database_outage_answers_451_and_loses_nothing() {
    let mut postgres = crate::harness::own_postgres().await;
    let options = db::PoolOptions {
        acquire_timeout: Duration::from_secs(2),
        ..db::PoolOptions::default()
    };
    let pool = db::pool(&postgres.url("mailbridge"), options).unwrap();
    db::migrate(&pool).await.unwrap();
    let mut settings = Settings::from_lookup(|_| None).unwrap();
    settings.edge.hostname = "relay.mailbridge.test".into();
    settings.edge.plaintext_auth_networks = "127.0.0.0/8".parse().unwrap();
    settings.worker.sweep_seconds = 1;
    let master_key_base64 = crate::harness::with_master_key(&mut settings);
    let stack = Stack::start(pool, settings, StackOptions::ephemeral())
        .await
        .unwrap();
    let app = TestApp {
        stack,
        database: "mailbridge".into(),
        master_key_base64,
    };
    let tenant = app.add_tenant("Praxis Ausfall").await;
    let device = app.add_device(&tenant, "Labor").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["lab@klinik.example".parse().unwrap()],
    )
    .unwrap();
    let send = |subject: &'static str| {
        let message = sample_message(&sender, "lab@klinik.example", subject);
        let transport = app.lettre(&device.device.username, &device.password);
        let envelope = envelope.clone();
        async move {
            transport
                .send_raw(&envelope, without_final_crlf(&message))
                .await
        }
    };
    for _ in 0..3 {
        send("before").await.expect("accepted before the outage");
    }

    // A device that logged in before the outage is in the middle of a message.
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO labor.praxis.test").await;
    assert!(
        smtp.login(&device.device.username, &device.password)
            .await
            .starts_with("235")
    );
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<lab@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;

    postgres.pause();
    smtp.send_raw(format!("From: {sender}\r\nSubject: during\r\n\r\nlost?\r\n.\r\n").as_bytes())
        .await;
    let reply = tokio::time::timeout(Duration::from_secs(40), smtp.reply())
        .await
        .expect("an answer, not a hang");
    assert!(
        reply.starts_with("451 4.3.0"),
        "never 250 without a commit: {reply}"
    );
    let refused = send("during")
        .await
        .expect_err("no login without the database");
    assert!(
        refused.is_transient(),
        "a temporary answer the device retries: {refused}"
    );

    let _postgres = tokio::task::spawn_blocking(move || {
        postgres.resume().expect("PostgreSQL back");
        postgres
    })
    .await
    .unwrap();
    // Devices retry temporary failures; the pool reconnects on its own.
    for _ in 0..3 {
        let mut tries = 0;
        while let Err(e) = send("after").await {
            tries += 1;
            assert!(
                e.is_transient() && tries < 20,
                "not accepted after the outage: {e}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let inbox = app.wait_for_inbox("lab@klinik.example", 6).await;
    assert_eq!(inbox.len(), 6, "every 250 delivered, nothing else");
    assert_eq!(
        inbox
            .iter()
            .filter(|m| m.subject.as_deref() == Some("during"))
            .count(),
        0
    );
}

#[tokio::test]
async fn a_customer_deleted_mid_delivery_does_not_hold_the_worker() {
    use mailbridge_core::queue::{MessageKind, NewMessage};
    use mailbridge_m365_sim::fault_injection::{Effect, Endpoint, Fault};
    // One delivery at a time, so a stuck one would block the next.
    let app = crate::harness::TestApp::spawn_configured(
        mailbridge::stack::StackOptions::ephemeral(),
        |s| s.worker.concurrency = 1,
    )
    .await;
    let doomed = app.add_tenant("Praxis Geht").await;
    let other = app.add_tenant("Praxis Bleibt").await;
    app.stack.simulator.directory.inject_fault(Fault {
        endpoint: Endpoint::GraphSend,
        tenant: doomed.tenant.entra_tenant_id.map(|e| e.as_uuid()),
        mailbox: None,
        effect: Effect::Delay { seconds: 3 },
        times: Some(1),
    });
    let message = |tenant: &crate::harness::TestTenant, to: &str| NewMessage {
        id: MessageId::now(),
        tenant_id: tenant.tenant.id,
        device_id: None,
        mail_from: tenant.tenant.sender_mailbox.clone(),
        rcpt_to: vec![to.to_owned()],
        client_addr: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        tls_protocol: None,
        tls_cipher: None,
        kind: MessageKind::Device,
        subject: None,
        body: format!("To: {to}\r\nSubject: x\r\n\r\nx\r\n").into_bytes(),
    };
    let first = mailbridge_core::queue::enqueue(
        app.pool(),
        app.master_key(),
        &message(&doomed, "a@praxisgeht.example"),
    )
    .await
    .unwrap();
    app.wait_for_message(first, |m| m.state.as_str() == "delivering")
        .await;
    // The customer is deleted while Microsoft is still answering.
    mailbridge_core::tenants::delete(app.pool(), doomed.tenant.id)
        .await
        .unwrap();
    let second = mailbridge_core::queue::enqueue(
        app.pool(),
        app.master_key(),
        &message(&other, "b@praxisbleibt.example"),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    app.wait_for_message(second, |m| m.state.as_str() == "accepted")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the worker was held by the deleted message for {:?}",
        started.elapsed()
    );
    app.stack.shutdown().await;
}
