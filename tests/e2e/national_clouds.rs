//! A national cloud end to end: the simulator answers as US Government GCC High and
//! mailbridge is configured with `MAILBRIDGE_M365_CLOUD=usgov-high` (its endpoints
//! pointing at the simulator): tokens are requested for `graph.microsoft.us` and
//! `outlook.office365.us`, and messages go by Graph and by SMTP. With the simulator
//! answering as the public cloud instead, Entra refuses the resource
//! (`AADSTS500011`): the customer is held with that diagnosis, nothing is lost.

use mailbridge_core::ids::MessageId;
use std::time::{Duration, Instant};

use mailbridge::stack::StackOptions;
use mailbridge_core::{
    cloud::Cloud,
    queue::{self, MessageKind, NewMessage},
    tenants::DeliveryMethod,
};
use mailbridge_m365_sim::{ROLE_MAIL_SEND, ROLE_SMTP_SEND_AS_APP};
use uuid::Uuid;

use crate::harness::{TestApp, TestTenant};

/// A stack configured for GCC High the way an operator configures it.
async fn gcc_high() -> TestApp {
    TestApp::spawn_configured(StackOptions::ephemeral(), |settings| {
        let derived = mailbridge_core::Settings::from_lookup(|name| {
            (name == "MAILBRIDGE_M365_CLOUD").then(|| "usgov-high".to_owned())
        })
        .unwrap();
        settings.m365.cloud = derived.m365.cloud;
        settings.m365.graph_resource = derived.m365.graph_resource;
        settings.m365.exchange_resource = derived.m365.exchange_resource;
    })
    .await
}

async fn queue_message(app: &TestApp, tenant: &TestTenant, to: &str) -> MessageId {
    let body = format!(
        "From: {sender}\r\nTo: {to}\r\nSubject: Befund\r\nMessage-ID: <{}@cloud.test>\r\n\r\nBefund\r\n",
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
            rcpt_to: vec![to.to_owned()],
            client_addr: "192.0.2.1".parse().unwrap(),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Device,
            subject: Some("Befund".into()),
            body: body.into_bytes(),
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_gcc_high_configuration_delivers_by_graph_and_smtp() {
    let app = gcc_high().await;
    let directory = &app.stack.simulator.directory;
    assert_eq!(directory.cloud(), Cloud::UsGovHigh);
    let by_graph = app.add_tenant("Praxis Gov Graph").await;
    let by_smtp = app.add_tenant("Praxis Gov SMTP").await;
    sqlx::query("UPDATE tenants SET delivery_method = $2 WHERE id = $1")
        .bind(by_smtp.tenant.id)
        .bind(DeliveryMethod::Smtp)
        .execute(app.pool())
        .await
        .unwrap();
    let entra = by_smtp.tenant.entra_tenant_id.unwrap();
    directory.consent(
        entra.as_uuid(),
        &app.stack.client_id,
        &[ROLE_MAIL_SEND, ROLE_SMTP_SEND_AS_APP],
    );
    directory.grant_exchange_access(
        entra.as_uuid(),
        &app.stack.client_id,
        &by_smtp.tenant.sender_mailbox,
    );
    queue_message(&app, &by_graph, "graph@klinik.example").await;
    queue_message(&app, &by_smtp, "smtp@klinik.example").await;
    assert_eq!(
        app.wait_for_inbox("graph@klinik.example", 1).await[0].via,
        "graph"
    );
    assert_eq!(
        app.wait_for_inbox("smtp@klinik.example", 1).await[0].via,
        "smtp"
    );
    let scopes: Vec<String> = directory
        .token_requests()
        .into_iter()
        .filter(|r| r.client_id == app.stack.client_id && r.error_code.is_none())
        .map(|r| r.scope)
        .collect();
    assert!(
        scopes.contains(&"https://graph.microsoft.us/.default".to_owned()),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&"https://outlook.office365.us/.default".to_owned()),
        "{scopes:?}"
    );
    assert!(
        scopes.iter().all(|s| s.contains(".us/")),
        "no public cloud name asked for: {scopes:?}"
    );
}

#[tokio::test]
async fn a_configuration_for_another_cloud_is_refused_with_a_clear_diagnosis() {
    let app = gcc_high().await;
    let directory = &app.stack.simulator.directory;
    // The tenant lives in the public cloud; mailbridge asks for GCC High's resource.
    directory.set_cloud(Cloud::Public);
    let tenant = app.add_tenant("Praxis Falsche Cloud").await;
    let id = queue_message(&app, &tenant, "falsch@klinik.example").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let attempt = loop {
        if let Some(attempt) = queue::attempts(app.pool(), id)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            break attempt;
        }
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempt.diagnosis.as_deref(), Some("AADSTS500011"));
    let explained = mailbridge_core::diagnosis::by_key("AADSTS500011").unwrap();
    assert!(
        explained
            .fix(mailbridge_core::diagnosis::Lang::En)
            .contains("MAILBRIDGE_M365_CLOUD")
    );
    // Held, not failed: the fixed configuration delivers it.
    let status = queue::status(app.pool(), id).await.unwrap().unwrap();
    assert_ne!(status.state.as_str(), "failed");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_holds WHERE scope = 'customer' AND subject = $1 AND reason = 'AADSTS500011'",
    )
    .bind(tenant.tenant.id.to_string())
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(held, 1, "the customer is held with the diagnosis");
    assert!(directory.inbox("falsch@klinik.example").is_empty());
}
