//! The worker delivering queued messages into the simulated Microsoft 365.

use std::time::Duration;

use crate::harness::{TestApp, TestTenant, sample_message, without_final_crlf};
use lettre::{AsyncTransport, address::Envelope};
use mailbridge::stack::StackOptions;
use mailbridge_core::queue::{self, AttemptOutcome};

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

#[tokio::test]
async fn a_message_accepted_while_no_worker_runs_is_delivered_once_one_starts() {
    let mut app = TestApp::spawn_with(StackOptions {
        start_worker: false,
        ..StackOptions::ephemeral()
    })
    .await;
    let tenant = app.add_tenant("Praxis Warteschlange").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let message = submit(
        &app,
        &tenant,
        &device.device.username,
        &device.password,
        "arzt@klinik.example",
        "queued",
    )
    .await;

    let ids = app.message_ids().await;
    assert_eq!(ids.len(), 1, "the 250 means it is committed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.stack.simulator.directory.delivered().is_empty());
    assert_eq!(
        queue::status(app.pool(), ids[0])
            .await
            .unwrap()
            .unwrap()
            .state,
        "queued"
    );

    app.stack.start_worker().unwrap();
    let inbox = app.wait_for_inbox("arzt@klinik.example", 1).await;
    assert!(inbox[0].mime.ends_with(&message));
    let status = app
        .wait_for_message(ids[0], |s| s.state == "delivered")
        .await;
    assert_eq!(status.attempt_count, 1);
    let attempts = queue::attempts(app.pool(), ids[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Delivered);
    assert_eq!(attempts[0].upstream_status, Some(202));
    assert!(
        queue::body(app.pool(), ids[0]).await.unwrap().is_none(),
        "a delivered body is deleted"
    );
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
            .filter(|r| r.tenant == t.tenant.entra_tenant_id.to_string())
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
    assert_eq!(labor_mail[0].tenant_id, labor.tenant.entra_tenant_id);
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
        .wait_for_message(id, |s| s.attempt_count == 1 && s.state == "queued")
        .await;
    assert!(
        status.next_attempt_at > chrono_now_plus_seconds(30),
        "retry is backed off: {status:?}"
    );
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
        queue::body(app.pool(), id).await.unwrap().is_some(),
        "the body is kept for the retry"
    );
}

fn chrono_now_plus_seconds(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::TimeDelta::seconds(seconds)
}
