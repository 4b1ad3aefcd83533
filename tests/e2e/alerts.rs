//! Alerts: every kind opens once when its condition appears, is updated while it
//! lasts and resolves when it ends, driven by the real parts (wrong passwords at the
//! edge, a revoked consent and refusals at the simulated Microsoft, a queue that
//! waits) where they can be, and by moving a time back where only time would tell
//! (a device silent for hours). Alert e-mails arrive in the simulator's mailbox;
//! acknowledging is for technicians and audited.

use std::time::{Duration, Instant};

use lettre::{AsyncTransport, address::Envelope};
use mailbridge::stack::StackOptions;
use mailbridge_core::{
    Settings,
    alerts::{self, Alert, AlertSettings},
    holds,
    i18n::Lang,
    logins,
};
use mailbridge_m365_sim::fault_injection::{Effect, Endpoint, Fault};
use reqwest::StatusCode;

use crate::{
    harness::{SmtpProbe, TestApp, TestTenant, readable, sample_message, without_final_crlf},
    staff_client::StaffClient,
};

/// A stack whose workers evaluate the alert rules every second.
pub async fn alerting_app(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.worker.alert_interval = Duration::from_secs(1);
        s.worker.webhook_allowed_networks = "127.0.0.0/8".parse().expect("networks");
        configure(s);
    })
    .await
}

/// Every alert of (kind, subject), oldest first.
async fn alerts_of(app: &TestApp, kind: &str, subject: &str) -> Vec<Alert> {
    alerts::list(app.pool(), &alerts::Filter::default())
        .await
        .expect("listing alerts")
        .into_iter()
        .filter(|a| a.kind == kind && a.subject == subject)
        .rev()
        .collect()
}

/// Waits until the latest alert of (kind, subject) satisfies `check`.
pub async fn wait_alert(
    app: &TestApp,
    kind: &str,
    subject: &str,
    check: impl Fn(&Alert) -> bool,
) -> Alert {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(latest) = alerts_of(app, kind, subject).await.pop()
            && check(&latest)
        {
            return latest;
        }
        assert!(
            Instant::now() < deadline,
            "the {kind} alert of {subject} never got there: {:?}",
            alerts_of(app, kind, subject).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the cluster has evaluated the rules `n` more times.
async fn wait_evaluations(app: &TestApp, n: i64) {
    let runs = || async {
        sqlx::query_scalar::<_, i64>("SELECT runs FROM housekeeping WHERE job = 'alerts'")
            .fetch_optional(app.pool())
            .await
            .unwrap()
            .unwrap_or(0)
    };
    let start = runs().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs().await < start + n {
        assert!(
            Instant::now() < deadline,
            "the alert rules are not evaluated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that (kind, subject) has had exactly one alert, after a few more rounds.
async fn opened_once(app: &TestApp, kind: &str, subject: &str) {
    wait_evaluations(app, 3).await;
    let all = alerts_of(app, kind, subject).await;
    assert_eq!(all.len(), 1, "one alert, not one per evaluation: {all:?}");
}

async fn send(app: &TestApp, tenant: &TestTenant, device: &str, to: &str) {
    let device = app.add_device(tenant, device).await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, to, "Befund");
    let envelope = Envelope::new(Some(sender.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("accepted");
}

async fn set_rule(app: &TestApp, kind: &str, threshold: i32, window: i32) {
    alerts::set_rule(app.pool(), kind, true, threshold, window)
        .await
        .expect("setting a rule");
}

#[tokio::test]
async fn device_silence_and_lockout_open_once_update_and_resolve() {
    let app = alerting_app(|s| {
        s.edge.plaintext_auth_networks = "127.0.0.0/8".parse().unwrap();
        s.edge.auth_throttle.lockout_failures = 3;
    })
    .await;
    let tenant = app.add_tenant("Praxis Stille").await;
    let fax = app.add_device(&tenant, "Fax Labor").await;
    let subject = fax.device.id.to_string();

    // Silent: on for this device only, with one hour; it was added two hours ago
    // and has not logged in since.
    alerts::set_device_silence(app.pool(), tenant.tenant.id, fax.device.id, Some(1))
        .await
        .unwrap();
    sqlx::query("UPDATE devices SET created_at = now() - interval '2 hours' WHERE id = $1")
        .bind(fax.device.id)
        .execute(app.pool())
        .await
        .unwrap();
    let silent = wait_alert(&app, "device_silent", &subject, Alert::is_open).await;
    assert_eq!(silent.facts["device"], "Fax Labor");
    assert_eq!(silent.device_id, Some(fax.device.id));
    opened_once(&app, "device_silent", &subject).await;
    // Updated: now it was last seen five hours ago.
    sqlx::query("UPDATE devices SET last_seen_at = now() - interval '5 hours' WHERE id = $1")
        .bind(fax.device.id)
        .execute(app.pool())
        .await
        .unwrap();
    let updated = wait_alert(&app, "device_silent", &subject, |a| {
        a.updated_at > silent.updated_at && a.facts["last_seen_at"].is_string()
    })
    .await;
    assert_eq!(updated.id, silent.id, "the same alert, updated");
    // Resolved: the device logs in again.
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO fax.praxis.test").await;
    assert!(
        smtp.login(&fax.device.username, &fax.password)
            .await
            .starts_with("235")
    );
    let resolved = wait_alert(&app, "device_silent", &subject, |a| !a.is_open()).await;
    assert_eq!(resolved.id, silent.id);

    // Locked out: three wrong passwords.
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO fax.praxis.test").await;
    for _ in 0..3 {
        assert!(
            smtp.login(&fax.device.username, "falsch")
                .await
                .starts_with("535")
        );
    }
    let locked = wait_alert(&app, "device_lockout", &subject, Alert::is_open).await;
    assert_eq!(locked.facts["source"], "127.0.0.1");
    assert!(
        locked.text(Lang::De).contains("gesperrt"),
        "{}",
        locked.text(Lang::De)
    );
    opened_once(&app, "device_lockout", &subject).await;
    // Updated: the lock is longer now.
    sqlx::query(
        "UPDATE login_failures SET locked_until = locked_until + interval '1 hour'
          WHERE username = $1 AND locked_until IS NOT NULL",
    )
    .bind(&fax.device.username)
    .execute(app.pool())
    .await
    .unwrap();
    wait_alert(&app, "device_lockout", &subject, |a| {
        a.id == locked.id && a.facts["locked_until"] != locked.facts["locked_until"]
    })
    .await;
    // Resolved: a technician unlocks it.
    assert!(
        logins::unlock(app.pool(), &fax.device.username)
            .await
            .unwrap()
    );
    wait_alert(&app, "device_lockout", &subject, |a| !a.is_open()).await;
    assert_eq!(alerts_of(&app, "device_lockout", &subject).await.len(), 1);
}

#[tokio::test]
async fn a_refused_token_and_a_waiting_queue_alert_by_mail_and_resolve_after_consent() {
    let app = alerting_app(|_| {}).await;
    let msp = app.add_tenant("MSP Eigenbetrieb").await;
    alerts::save_settings(
        app.pool(),
        &AlertSettings {
            email_to: Some("alarm@msp.example".into()),
            email_tenant_id: Some(msp.tenant.id),
            app_secret_expires_on: None,
        },
    )
    .await
    .unwrap();
    let tenant = app.add_tenant("Praxis Widerruf").await;
    let entra = tenant.tenant.entra_tenant_id.unwrap();
    let subject = tenant.tenant.id.to_string();
    let directory = &app.stack.simulator.directory;
    directory.revoke_consent(entra.as_uuid(), &app.stack.client_id);
    send(&app, &tenant, "Scanner", "befund@klinik.example").await;

    let token = wait_alert(&app, "customer_token", &subject, Alert::is_open).await;
    assert_eq!(token.severity, "critical");
    assert_eq!(token.facts["customer"], "Praxis Widerruf");
    // The message waits: it has waited two hours (its time moved back).
    sqlx::query(
        "UPDATE messages SET received_at = now() - interval '2 hours' WHERE tenant_id = $1",
    )
    .bind(tenant.tenant.id)
    .execute(app.pool())
    .await
    .unwrap();
    let waiting = wait_alert(&app, "queue_age", &subject, Alert::is_open).await;
    assert_eq!(waiting.facts["waiting"], 1);
    opened_once(&app, "customer_token", &subject).await;
    opened_once(&app, "queue_age", &subject).await;
    // Updated: a second message waits too.
    send(&app, &tenant, "Drucker", "befund@klinik.example").await;
    let updated = wait_alert(&app, "queue_age", &subject, |a| a.facts["waiting"] == 2).await;
    assert_eq!(updated.id, waiting.id);
    assert!(updated.updated_at > waiting.updated_at);

    // Both alerts came by e-mail, as the MSP's own mailbox.
    let inbox = app.wait_for_inbox("alarm@msp.example", 2).await;
    assert!(
        inbox.iter().all(|m| m.mailbox == msp.tenant.sender_mailbox),
        "{inbox:?}"
    );
    let texts: Vec<String> = inbox.iter().map(|m| readable(&m.mime)).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Praxis Widerruf") && t.contains("Microsoft refuses tokens"))
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Nachrichten warten zu lange"))
    );
    assert!(texts.iter().all(|t| t.contains("/alerts/")));

    // The admin consents again and the hold is probed: the messages go, and both
    // alerts resolve (and say so by mail).
    directory.consent(
        entra.as_uuid(),
        &app.stack.client_id,
        &[mailbridge_m365_sim::ROLE_MAIL_SEND],
    );
    for hold in holds::list(app.pool(), Some(tenant.tenant.id))
        .await
        .unwrap()
    {
        holds::probe_now(app.pool(), hold.id).await.unwrap();
    }
    app.wait_for_inbox("befund@klinik.example", 2).await;
    wait_alert(&app, "customer_token", &subject, |a| !a.is_open()).await;
    wait_alert(&app, "queue_age", &subject, |a| !a.is_open()).await;
    let inbox = app.wait_for_inbox("alarm@msp.example", 4).await;
    assert_eq!(
        inbox
            .iter()
            .filter(|m| readable(&m.mime).contains("Resolved"))
            .count(),
        2
    );
}

#[tokio::test]
async fn refusals_and_the_bounce_rate_open_update_and_resolve() {
    let app = alerting_app(|_| {}).await;
    let tenant = app.add_tenant("Praxis Abweisung").await;
    let subject = tenant.tenant.id.to_string();
    let refuse = |times| Fault {
        endpoint: Endpoint::GraphSend,
        tenant: tenant.tenant.entra_tenant_id.map(|e| e.as_uuid()),
        mailbox: None,
        effect: Effect::Http {
            status: 404,
            code: "MailboxNotEnabledForRESTAPI".into(),
            message: "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
                .into(),
            retry_after: None,
        },
        times: Some(times),
    };
    let directory = &app.stack.simulator.directory;
    directory.inject_fault(refuse(5));
    for n in 0..5 {
        send(
            &app,
            &tenant,
            &format!("Scanner {n}"),
            "labor@klinik.example",
        )
        .await;
    }
    let refusals = wait_alert(&app, "refusals", &subject, Alert::is_open).await;
    assert_eq!(refusals.facts["count"], 5);
    assert!(
        refusals.facts["last"]
            .as_str()
            .unwrap()
            .contains("MailboxNotEnabledForRESTAPI")
    );
    let bounces = wait_alert(&app, "bounce_rate", &subject, Alert::is_open).await;
    assert_eq!(bounces.facts["percent"], 100);
    opened_once(&app, "refusals", &subject).await;
    opened_once(&app, "bounce_rate", &subject).await;
    // A technician limited to another customer sees none of this one's alerts.
    let other = app.add_tenant("Praxis Andere").await;
    let mut limited = StaffClient::sign_in_as(&app, "tina.team@msp.example", "technician").await;
    sqlx::query(
        "WITH s AS (UPDATE staff SET all_customers = false WHERE email = 'tina.team@msp.example' RETURNING id)
         INSERT INTO staff_customers (staff_id, tenant_id) SELECT id, $1 FROM s",
    )
    .bind(other.tenant.id)
    .execute(app.pool())
    .await
    .unwrap();
    let page = limited.get("/alerts").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains(&refusals.id.to_string()),
        "another customer's alert"
    );
    assert_eq!(
        limited
            .get(&format!("/alerts/{}", refusals.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let ack = limited
        .post(&format!("/alerts/{}/acknowledge", refusals.id), &[])
        .await;
    assert_eq!(ack.status, StatusCode::NOT_FOUND);
    // Updated: one more refused, three delivered.
    directory.inject_fault(refuse(1));
    send(&app, &tenant, "Scanner 5", "labor@klinik.example").await;
    for n in 6..9 {
        send(
            &app,
            &tenant,
            &format!("Scanner {n}"),
            "labor@klinik.example",
        )
        .await;
    }
    app.wait_for_inbox("labor@klinik.example", 3).await;
    wait_alert(&app, "refusals", &subject, |a| {
        a.id == refusals.id && a.facts["count"] == 6
    })
    .await;
    let rate = wait_alert(&app, "bounce_rate", &subject, |a| {
        a.id == bounces.id && a.facts["messages"] == 9
    })
    .await;
    assert_eq!(rate.facts["percent"], 66);
    // Resolved: the MSP raises the thresholds above what happened.
    set_rule(&app, "refusals", 10, 60).await;
    set_rule(&app, "bounce_rate", 70, 1440).await;
    wait_alert(&app, "refusals", &subject, |a| !a.is_open()).await;
    wait_alert(&app, "bounce_rate", &subject, |a| !a.is_open()).await;
}

#[tokio::test]
async fn expiring_credentials_alert_and_a_technician_acknowledges() {
    let app = alerting_app(|_| {}).await;
    let today = chrono::Utc::now().date_naive();
    let expires = |days| AlertSettings {
        app_secret_expires_on: Some(today + chrono::Days::new(days)),
        ..AlertSettings::default()
    };
    // The MSP app's secret, as the operator entered its expiry.
    alerts::save_settings(app.pool(), &expires(10))
        .await
        .unwrap();
    let secret = wait_alert(&app, "app_credential", "secret", Alert::is_open).await;
    assert_eq!(secret.severity, "warning");
    opened_once(&app, "app_credential", "secret").await;
    alerts::save_settings(app.pool(), &expires(1))
        .await
        .unwrap();
    let critical = wait_alert(&app, "app_credential", "secret", |a| {
        a.severity == "critical"
    })
    .await;
    assert_eq!(critical.id, secret.id);
    alerts::save_settings(app.pool(), &expires(365))
        .await
        .unwrap();
    wait_alert(&app, "app_credential", "secret", |a| !a.is_open()).await;

    // The edge's certificate (reported by the edge itself) expires within a
    // threshold of 100 000 days.
    let host = app.stack.settings.edge.hostname.clone();
    set_rule(&app, "edge_certificate", 100_000, 60).await;
    let edge = wait_alert(&app, "edge_certificate", &host, Alert::is_open).await;
    assert!(edge.facts["expires"].as_str().unwrap().ends_with("UTC"));

    // Read-only staff may not acknowledge; a technician may (audited), once.
    let mut reader = StaffClient::sign_in_as(&app, "lea.lesen@msp.example", "readonly").await;
    let refused = reader
        .post(&format!("/alerts/{}/acknowledge", edge.id), &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let mut technician =
        StaffClient::sign_in_as(&app, "tim.technik@msp.example", "technician").await;
    let page = technician.get("/alerts").await;
    assert!(
        page.body.contains(&format!("data-alert=\"{}\"", edge.id)),
        "{}",
        page.body
    );
    let done = technician
        .post(
            &format!("/alerts/{}/acknowledge", edge.id),
            &[("back", "/alerts")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let acknowledged = alerts::get(app.pool(), edge.id).await.unwrap().unwrap();
    assert_eq!(
        acknowledged.acknowledged_by.as_deref(),
        Some("tim.technik@msp.example")
    );
    let again = technician
        .post(&format!("/alerts/{}/acknowledge", edge.id), &[])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'alert.acknowledge' AND target = $1",
    )
    .bind(edge.id.to_string())
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(audited, 1);
    set_rule(&app, "edge_certificate", 14, 60).await;
    wait_alert(&app, "edge_certificate", &host, |a| !a.is_open()).await;
}
