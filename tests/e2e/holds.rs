//! Holds against the simulator with real `mailbridge worker` processes: an expired
//! app secret holds the app (its messages wait, token requests stay one probe per
//! interval) and a worker started with a new secret delivers them all at once; a
//! revoked consent holds one customer while the others' mail flows, and its
//! messages go as soon as a probe gets through after the consent is restored; a
//! held message past its maximum age fails with the hold's reason.

use mailbridge_core::ids::MessageId;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mailbridge_core::queue::{self, MessageKind, NewMessage};
use mailbridge_m365_sim::ROLE_MAIL_SEND;
use uuid::Uuid;

use mailbridge::stack::StackOptions;

use crate::harness::{TestApp, TestTenant, database_url};

/// Queues a message for `tenant` to `recipient`; returns its queue id.
async fn queue_message(app: &TestApp, tenant: &TestTenant, recipient: &str, n: usize) -> MessageId {
    let body = format!(
        "From: {sender}\r\nTo: {recipient}\r\nSubject: Befund {n}\r\nMessage-ID: <{}@holds.test>\r\n\r\nBefund {n}\r\n",
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
            rcpt_to: vec![recipient.to_owned()],
            client_addr: "192.0.2.1".parse().unwrap(),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Device,
            subject: Some(format!("Befund {n}")),
            body: body.into_bytes(),
        },
    )
    .await
    .unwrap()
}

/// A hold's reason and when it started, once one exists for `scope`/`subject`.
async fn wait_for_hold(
    app: &TestApp,
    scope: &str,
    subject: &str,
    within: Duration,
) -> (String, DateTime<Utc>) {
    let deadline = Instant::now() + within;
    loop {
        let hold: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT reason, since FROM delivery_holds WHERE scope = $1 AND subject = $2",
        )
        .bind(scope)
        .bind(subject)
        .fetch_optional(app.pool())
        .await
        .unwrap();
        if let Some(hold) = hold {
            return hold;
        }
        assert!(Instant::now() < deadline, "no {scope} hold on {subject}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count_in_state(app: &TestApp, ids: &[MessageId], state: &str) -> usize {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1) AND state = $2")
            .bind(ids)
            .bind(state)
            .fetch_one(app.pool())
            .await
            .unwrap();
    n as usize
}

/// Waits until every one of `ids` is delivered; returns when that was seen.
async fn wait_delivered(app: &TestApp, ids: &[MessageId], within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let delivered = count_in_state(app, ids, "accepted").await;
        if delivered == ids.len() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {} messages delivered",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Token requests the simulator answered for the MSP app since `since`.
fn token_requests_since(app: &TestApp, since: DateTime<Utc>) -> usize {
    app.stack
        .simulator
        .directory
        .token_requests()
        .into_iter()
        .filter(|r| r.at >= since)
        .count()
}

#[tokio::test]
async fn an_expired_secret_holds_the_app_and_a_worker_with_a_new_secret_delivers_at_once() {
    let app = TestApp::spawn_without_worker().await;
    let directory = &app.stack.simulator.directory;
    let old_secret = app
        .stack
        .settings
        .m365
        .client_secret
        .as_ref()
        .map(|s| secrecy::ExposeSecret::expose_secret(s).to_owned())
        .expect("the MSP app's secret");
    let mut tenants = Vec::new();
    for i in 0..8 {
        tenants.push(app.add_tenant(&format!("Praxis Geheimnis {i}")).await);
    }
    // The MSP app's client secret expires: Entra answers AADSTS7000222.
    assert!(directory.expire_client_secret(&app.stack.client_id, &old_secret, Utc::now()));
    let database = database_url(&app.database);
    let mut old_workers = [
        app.worker_command(&database, 300).spawn().unwrap(),
        app.worker_command(&database, 300).spawn().unwrap(),
    ];
    let mut ids = Vec::new();
    for (n, tenant) in tenants.iter().enumerate() {
        ids.push(queue_message(&app, tenant, "labor@klinik.example", n).await);
    }
    let (reason, since) =
        wait_for_hold(&app, "app", &app.stack.client_id, Duration::from_secs(30)).await;
    assert_eq!(reason, "AADSTS7000222");
    // Messages that arrive while the app is held wait without an attempt.
    for (n, tenant) in tenants.iter().enumerate() {
        ids.push(queue_message(&app, tenant, "labor@klinik.example", 100 + n).await);
    }
    // Over 35 s: one probe per interval for the app (10 s, then 20 s), not one
    // token request per message or per customer.
    let settled_at = Utc::now() + chrono::TimeDelta::seconds(3);
    tokio::time::sleep(Duration::from_secs(38)).await;
    let during_hold = token_requests_since(&app, settled_at);
    assert!(
        (1..=4).contains(&during_hold),
        "{during_hold} token requests in 35 s of a held app with {} messages of {} customers waiting",
        ids.len(),
        tenants.len()
    );
    assert_eq!(count_in_state(&app, &ids, "queued").await, ids.len());
    assert_eq!(count_in_state(&app, &ids, "failed").await, 0);
    let attempted_while_held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_attempts WHERE message_id = ANY($1) AND started_at > $2",
    )
    .bind(&ids)
    .bind(settled_at)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(
        attempted_while_held <= 4,
        "{attempted_while_held} attempts while held"
    );
    eprintln!("app held since {since}; {during_hold} token requests in 35 s");

    // The operator creates a new secret and restarts one worker with it; the other
    // still runs with the expired one.
    directory.add_client_secret(&app.stack.client_id, "the-new-secret", None);
    old_workers[0].kill().ok();
    old_workers[0].wait().ok();
    let started = Instant::now();
    let mut new_worker = app
        .worker_command(&database, 300)
        .env("MAILBRIDGE_ENTRA_CLIENT_SECRET", "the-new-secret")
        .spawn()
        .unwrap();
    let done = wait_delivered(&app, &ids, Duration::from_secs(30)).await;
    eprintln!(
        "all {} waiting messages delivered {:?} after the worker with the new secret started",
        ids.len(),
        done - started
    );
    for worker in [&mut new_worker, &mut old_workers[1]] {
        worker.kill().ok();
        worker.wait().ok();
    }
}

#[tokio::test]
async fn a_revoked_consent_holds_one_customer_while_the_others_mail_flows() {
    let app = TestApp::spawn_without_worker().await;
    let directory = &app.stack.simulator.directory;
    let revoked = app.add_tenant("Praxis Widerrufen").await;
    let others = [
        app.add_tenant("Praxis Nachbar Eins").await,
        app.add_tenant("Praxis Nachbar Zwei").await,
    ];
    let entra = revoked.tenant.entra_tenant_id.unwrap();
    directory.revoke_consent(entra.as_uuid(), &app.stack.client_id);
    let mut workers = [app.spawn_worker_process(300), app.spawn_worker_process(300)];
    let mut held = Vec::new();
    for n in 0..5 {
        held.push(queue_message(&app, &revoked, "widerruf@klinik.example", n).await);
    }
    let subject = revoked.tenant.id.to_string();
    let (reason, _) = wait_for_hold(&app, "customer", &subject, Duration::from_secs(30)).await;
    assert_eq!(reason, "ErrorAccessDenied");
    // Other customers' mail flows the whole time.
    let mut flowing = Vec::new();
    for n in 0..6 {
        let tenant = &others[n % 2];
        let id = queue_message(&app, tenant, "nachbar@klinik.example", n).await;
        wait_delivered(&app, &[id], Duration::from_secs(10)).await;
        flowing.push(id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(count_in_state(&app, &held, "queued").await, held.len());
    let failures: i32 = sqlx::query_scalar(
        "SELECT probe_failures FROM delivery_holds WHERE scope = 'customer' AND subject = $1",
    )
    .bind(&subject)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(failures >= 0);

    // The customer's admin grants consent again; the next probe gets through.
    directory.consent(entra.as_uuid(), &app.stack.client_id, &[ROLE_MAIL_SEND]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let released = loop {
        let still: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM delivery_holds WHERE scope = 'customer' AND subject = $1",
        )
        .bind(&subject)
        .fetch_optional(app.pool())
        .await
        .unwrap();
        if still.is_none() {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the hold was never released after the consent came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let done = wait_delivered(&app, &held, Duration::from_secs(30)).await;
    eprintln!(
        "held messages delivered {:?} after the successful probe",
        done - released
    );
    for worker in &mut workers {
        worker.kill().ok();
        worker.wait().ok();
    }
}

#[tokio::test]
async fn a_held_message_past_its_maximum_age_fails_with_the_holds_reason() {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.worker.max_age_seconds = 4;
    })
    .await;
    let tenant = app
        .add_tenant_without_consent("Praxis Nie Zugestimmt")
        .await;
    sqlx::query("UPDATE tenants SET notification_address = 'it@praxis.example' WHERE id = $1")
        .bind(tenant.tenant.id)
        .execute(app.pool())
        .await
        .unwrap();
    let id = queue_message(&app, &tenant, "befund@klinik.example", 0).await;
    let (reason, _) = wait_for_hold(
        &app,
        "customer",
        &tenant.tenant.id.to_string(),
        Duration::from_secs(20),
    )
    .await;
    // A customer who never re-consents: the hold's probes have backed off far.
    sqlx::query("UPDATE delivery_holds SET next_probe_at = now() + interval '1 hour'")
        .execute(app.pool())
        .await
        .unwrap();
    let status = app
        .wait_for_message(id, |s| s.state.as_str() == "failed")
        .await;
    assert_eq!(
        status.attempt_count, 2,
        "one attempt, then failed while held"
    );
    let attempts = queue::attempts(app.pool(), id).await.unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(last.diagnosis.as_deref(), Some(reason.as_str()));
    assert_eq!(last.outcome, queue::AttemptOutcome::Permanent);
    assert!(last.upstream_code.as_deref().unwrap().starts_with("AADSTS"));
    // The usual failure report is queued for the customer's notification address.
    let reports: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND kind = 'notification'
            AND 'it@praxis.example' = ANY(rcpt_to)",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(reports, 1);
}

#[tokio::test]
async fn holds_are_shown_to_staff_and_retry_now_probes_at_once() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Gehalten").await;
    queue_message(&app, &tenant, "befund@klinik.example", 0).await;
    // What a worker records when the customer's consent is gone.
    let hold: Uuid = sqlx::query_scalar(
        "INSERT INTO delivery_holds (scope, subject, tenant_id, reason, detail, next_probe_at)
         VALUES ('customer', $1::text, $1, 'AADSTS65001', 'AADSTS65001: consent revoked', now() + interval '1 hour')
         RETURNING id",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    let mut viewer =
        crate::staff_client::StaffClient::sign_in_as(&app, "lea.lesen@msp.example", "readonly")
            .await;
    let overview = viewer.get("/").await;
    assert!(
        overview.body.contains(&format!("data-hold=\"{hold}\"")),
        "{}",
        overview.body
    );
    assert!(
        overview
            .body
            .contains("Consent for mailbridge&#39;s app is missing")
            || overview
                .body
                .contains("Consent for mailbridge's app is missing")
    );
    let page = viewer
        .get(&format!("/customers/{}", tenant.tenant.id))
        .await;
    assert!(page.body.contains(&format!("data-hold=\"{hold}\"")));
    assert!(
        !page.body.contains("retry-hold"),
        "read-only staff get no Retry now"
    );
    let refused = viewer.post(&format!("/holds/{hold}/probe"), &[]).await;
    assert_eq!(refused.status, reqwest::StatusCode::FORBIDDEN);

    let mut technician =
        crate::staff_client::StaffClient::sign_in_as(&app, "tom.technik@msp.example", "technician")
            .await;
    let page = technician
        .get(&format!("/customers/{}", tenant.tenant.id))
        .await;
    assert!(page.body.contains("retry-hold"));
    let answer = technician.post(&format!("/holds/{hold}/probe"), &[]).await;
    assert!(answer.status.is_redirection(), "{}", answer.status);
    let (due, audited): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT next_probe_at <= now() FROM delivery_holds WHERE id = $1),
                (SELECT count(*) FROM audit_log WHERE action = 'hold.probe' AND target = $1::text)",
    )
    .bind(hold)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(due, "retry now makes the probe due");
    assert_eq!(audited, 1);
    // The held messages are counted for the metrics.
    let held = mailbridge_core::holds::by_reason(app.pool()).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].messages, 1);
    assert_eq!(held[0].reason, "AADSTS65001");
}
