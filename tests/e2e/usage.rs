//! Usage reports: what the test sent — delivered and refused, by two devices, with
//! two workers delivering — is what the month's report says, through the API, the
//! CSV and the page; and still says after the message records are purged and the
//! hours are rolled up into days. The charts are drawn from the same aggregates.

use mailbridge_core::ids::MessageId;
use std::time::Duration;

use lettre::{AsyncTransport, address::Envelope};
use mailbridge_core::{
    queue::{self, MessageKind, NewMessage},
    retention::{self, Retention},
    usage::{self, Month},
};
use mailbridge_m365_sim::fault_injection::{Effect, Endpoint, Fault};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    harness::{TestApp, database_url, sample_message, without_final_crlf},
    staff_client::StaffClient,
};

#[tokio::test]
async fn the_monthly_report_matches_what_was_sent_also_after_the_purge() {
    let app = TestApp::spawn().await;
    let mut second = app
        .worker_command(&database_url(&app.database), 300)
        .spawn()
        .expect("a second worker");
    let tenant = app.add_tenant("Praxis Abrechnung").await;
    let quiet = app.add_tenant("Praxis Ruhig").await;
    let scanner = app.add_device(&tenant, "Scanner").await;
    let printer = app.add_device(&tenant, "Drucker").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    // One message is refused for good.
    app.stack.simulator.directory.inject_fault(Fault {
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
        times: Some(1),
    });
    let sends: [(&_, &[&str]); 5] = [
        (&scanner, &["a@klinik.example"]),
        (&scanner, &["a@klinik.example", "b@klinik.example"]),
        (&scanner, &["a@klinik.example"]),
        (
            &printer,
            &["c@klinik.example", "d@klinik.example", "e@klinik.example"],
        ),
        (&printer, &["a@klinik.example"]),
    ];
    for (n, (device, to)) in sends.iter().enumerate() {
        let message = sample_message(&sender, to[0], &format!("Abrechnung {n}"));
        let envelope = Envelope::new(
            Some(sender.parse().unwrap()),
            to.iter().map(|t| t.parse().unwrap()).collect(),
        )
        .unwrap();
        app.lettre(&device.device.username, &device.password)
            .send_raw(&envelope, without_final_crlf(&message))
            .await
            .expect("accepted");
    }
    for id in app.message_ids().await {
        app.wait_for_message(id, |s| {
            s.state.as_str() == "accepted" || s.state.as_str() == "failed"
        })
        .await;
    }
    let (delivered, failed, recipients, bytes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'accepted'), count(*) FILTER (WHERE state = 'failed'),
                sum(cardinality(rcpt_to))::bigint, sum(size_bytes)::bigint
           FROM messages WHERE tenant_id = $1 AND kind = 'device'",
    )
    .bind(tenant.tenant.id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((delivered, failed, recipients), (4, 1, 8));

    // Through the API, with a read-only token.
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let token = owner
        .post("/api-tokens", &[("name", "PSA"), ("role", "readonly")])
        .await
        .text_of("api-token")
        .expect("a token");
    let month = Month::current().to_string();
    let base = owner.base.clone();
    let api = |month: String| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            let response = reqwest::Client::new()
                .get(format!("{base}/api/v1/usage?month={month}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let expect = |report: &Value, month: &str| {
        assert_eq!(report["month"], month);
        let lines = report["customers"].as_array().unwrap();
        let line = lines
            .iter()
            .find(|l| l["customer"] == "Praxis Abrechnung")
            .expect("the customer's line");
        assert_eq!(line["accepted"], 5, "{line}");
        assert_eq!(line["accepted_by_microsoft"], delivered);
        assert_eq!(line["bounced"], 0);
        assert_eq!(line["failed"], failed);
        assert_eq!(line["recipients"], recipients);
        assert_eq!(line["bytes"], bytes);
        assert_eq!(line["active_devices"], 2);
        let silent = lines
            .iter()
            .find(|l| l["customer"] == "Praxis Ruhig")
            .unwrap();
        assert_eq!(
            silent["accepted"], 0,
            "a customer that sent nothing has a zero line"
        );
    };
    let (status, report) = api(month.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    expect(&report, &month);
    let (status, bad) = api("2026-13".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

    // The CSV and the page.
    let csv = owner.get(&format!("/usage.csv?month={month}")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.body.contains(&format!(
            "{month},{},\"Praxis Abrechnung\",5,4,0,1,8,{bytes},2",
            tenant.tenant.id
        )),
        "{}",
        csv.body
    );
    let page = owner.get("/usage").await;
    assert!(
        page.body.contains("<svg class=\"chart\""),
        "the charts are on the page"
    );
    assert!(page.body.contains("chart-24h-t") && page.body.contains("chart-30d-t"));
    let customer = owner
        .get(&format!("/customers/{}/usage", tenant.tenant.id))
        .await;
    assert!(customer.body.contains(&format!("data-month=\"{month}\"")));
    let _ = quiet;

    // The purge removes the message records; the report stays.
    let mut keep = Retention::from_settings(&app.stack.settings);
    keep.messages = Duration::ZERO;
    retention::purge(app.pool(), &keep).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE tenant_id = $1")
        .bind(tenant.tenant.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the records are purged");
    let (_, report) = api(month.clone()).await;
    expect(&report, &month);

    // Rolled up into days: the hours of a June are days of that June, same sums.
    sqlx::query("UPDATE usage_hours SET hour = '2026-06-15 10:00:00+00' WHERE tenant_id = $1")
        .bind(tenant.tenant.id)
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE usage_devices SET month = '2026-06-01' WHERE tenant_id = $1")
        .bind(tenant.tenant.id)
        .execute(app.pool())
        .await
        .unwrap();
    assert_eq!(usage::roll_up(app.pool()).await.unwrap(), 1);
    let hours: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_hours WHERE tenant_id = $1")
        .bind(tenant.tenant.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(hours, 0);
    let (_, report) = api("2026-06".into()).await;
    expect(&report, "2026-06");
    second.kill().ok();
    second.wait().ok();
}

/// The charts in a real browser (headless Chromium): drawn without JavaScript from
/// the aggregates, bars and figures in place. The screenshot in `docs/screenshots`
/// is made this way (`MAILBRIDGE_SCREENSHOTS=docs/screenshots`).
/// A burst from three customers, delivered by two workers whose deliveries end
/// together and are settled in batches: every message is counted exactly once —
/// in its customer's hour, its mailbox's recipients and its attempts — and no
/// batch deadlocks with another on the shared counter rows.
#[tokio::test]
async fn a_burst_settled_in_batches_is_counted_once_per_message() {
    let app = TestApp::spawn().await;
    let mut second = app
        .worker_command(&database_url(&app.database), 300)
        .spawn()
        .expect("a second worker");
    const PER_CUSTOMER: usize = 40;
    let mut customers = Vec::new();
    for name in ["Praxis Schub A", "Praxis Schub B", "Praxis Schub C"] {
        let tenant = app.add_tenant(name).await;
        let device = app.add_device(&tenant, "Scanner").await;
        customers.push((tenant, device));
    }
    let mut burst = Vec::new();
    for n in 0..PER_CUSTOMER {
        for (tenant, device) in &customers {
            let sender = &tenant.tenant.sender_mailbox;
            let body =
                sample_message(sender, "a@klinik.example", &format!("Schub {n}")).into_bytes();
            burst.push(NewMessage {
                id: MessageId::now(),
                tenant_id: tenant.tenant.id,
                device_id: Some(device.device.id),
                mail_from: sender.clone(),
                rcpt_to: vec!["a@klinik.example".into(), "b@klinik.example".into()],
                client_addr: "192.0.2.7".parse().unwrap(),
                tls_protocol: None,
                tls_cipher: None,
                kind: MessageKind::Device,
                subject: Some(format!("Schub {n}")),
                body,
            });
        }
    }
    queue::enqueue_all(
        app.pool(),
        app.master_key(),
        &burst.iter().collect::<Vec<_>>(),
    )
    .await
    .expect("committed");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM queue")
            .fetch_one(app.pool())
            .await
            .unwrap();
        if waiting == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} messages still queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill().ok();
    second.wait().ok();
    for (tenant, _) in &customers {
        let (accepted, attempts): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE m.state = 'accepted'),
                    (SELECT count(*) FROM delivery_attempts a JOIN messages n ON n.id = a.message_id
                      WHERE n.tenant_id = $1)
               FROM messages m WHERE m.tenant_id = $1",
        )
        .bind(tenant.tenant.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(accepted, PER_CUSTOMER as i64, "{}", tenant.tenant.name);
        assert_eq!(attempts, PER_CUSTOMER as i64, "one attempt each");
        let (counted, recipients): (i64, i64) = sqlx::query_as(
            "SELECT sum(accepted)::bigint, sum(recipients)::bigint FROM usage_hours WHERE tenant_id = $1",
        )
        .bind(tenant.tenant.id)
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(counted, PER_CUSTOMER as i64, "counted once each");
        assert_eq!(recipients, 2 * PER_CUSTOMER as i64);
        let mailbox_recipients: i64 = sqlx::query_scalar(
            "SELECT sum(recipients)::bigint FROM mailbox_usage WHERE mailbox = lower($1)",
        )
        .bind(&tenant.tenant.sender_mailbox)
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(mailbox_recipients, 2 * PER_CUSTOMER as i64);
    }
}

#[tokio::test]
async fn the_usage_charts_show_in_the_browser() {
    use crate::browser::{Driver, click, element, screenshot, screenshot_dir};
    let app = TestApp::spawn().await;
    app.add_owner("ines.inhaber@msp.example", "Ines Inhaber")
        .await;
    let tenant = app.add_tenant("Praxis Diagramm").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    app.stack.simulator.directory.inject_fault(Fault {
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
        times: Some(2),
    });
    for n in 0..8 {
        let message = sample_message(&sender, "labor@klinik.example", &format!("Befund {n}"));
        let envelope = Envelope::new(
            Some(sender.parse().unwrap()),
            vec!["labor@klinik.example".parse().unwrap()],
        )
        .unwrap();
        app.lettre(&device.device.username, &device.password)
            .send_raw(&envelope, without_final_crlf(&message))
            .await
            .expect("accepted");
    }
    for id in app.message_ids().await {
        app.wait_for_message(id, |s| {
            s.state.as_str() == "accepted" || s.state.as_str() == "failed"
        })
        .await;
    }
    // Earlier days of the month, as the purge leaves them (rolled up).
    sqlx::query(
        "INSERT INTO usage_days (tenant_id, day, accepted, accepted_by_microsoft, failed, recipients, bytes)
         SELECT $1, (now() AT TIME ZONE 'UTC')::date - d, 20 + d % 7 * 3, 18 + d % 7 * 3, 2 - d % 3, 25, 90000
           FROM generate_series(1, 29) AS d",
    )
    .bind(tenant.tenant.id)
    .execute(app.pool())
    .await
    .unwrap();

    let driver = Driver::start();
    let browser = driver.browser().await;
    let base = format!("http://{}", app.stack.web_addr);
    browser.goto(&format!("{base}/")).await.unwrap();
    click(&browser, "#sign-in").await;
    element(&browser, "#user")
        .await
        .select_by_value("ines.inhaber@msp.example")
        .await
        .unwrap();
    click(&browser, "#sign-in").await;
    click(&browser, "#nav-usage").await;
    element(&browser, "svg.chart rect.failed").await;
    let source = browser.source().await.unwrap();
    assert!(
        source.contains("6 accepted by Microsoft"),
        "the hour's bar says its figures"
    );
    assert!(source.contains("2 failed"));
    screenshot(&browser, &screenshot_dir(), "usage-charts").await;
    browser.close().await.unwrap();
}
