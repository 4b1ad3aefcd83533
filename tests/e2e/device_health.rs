//! The page a technician opens when a practice calls: per-device health in the
//! customer's device list and on the device's page (never seen, messages and
//! failures of 24 hours, failed logins with their last address, the edge's lock and
//! Unlock), a message found by the id its SMTP reply gave, linked to its device and
//! back; and the consent link to send to the customer's admin, with when it was used.

use mailbridge_core::ids::DeviceId;
use std::time::Duration;

use lettre::AsyncTransport;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::{
    harness::{SmtpProbe, TestApp},
    staff_client::StaffClient,
};

/// The row of `device` in the customer's device list.
fn device_row(body: &str, device: DeviceId) -> String {
    let at = body
        .find(&format!("data-device=\"{device}\""))
        .expect("the device's row");
    let end = at + body[at..].find("</tr>").expect("row end");
    body[at..end].to_owned()
}

#[tokio::test]
async fn a_devices_failed_logins_lock_and_messages_show_and_it_can_be_unlocked() {
    let app = TestApp::spawn_with_clear_auth(|s| {
        s.edge.auth_throttle.lockout_failures = 3;
        s.edge.auth_throttle.source_lockout_failures = 50;
        s.edge.auth_throttle.username_lockout_failures = 50;
    })
    .await;
    let tenant = app.add_tenant("Praxis Gesund").await;
    let scanner = app.add_device(&tenant, "Scanner Empfang").await;
    let quiet = app.add_device(&tenant, "Fax Labor").await;
    let (customer, device) = (tenant.tenant.id, scanner.device.id);
    let mut tim = StaffClient::sign_in_as(&app, "tim.technik@msp.example", "technician").await;
    let mut rita = StaffClient::sign_in_as(&app, "rita.lesen@msp.example", "readonly").await;

    // Fresh devices: never seen, nothing counted.
    let page = tim.get(&format!("/customers/{customer}")).await;
    let row = device_row(&page.body, device);
    assert!(row.contains("never seen"), "{row}");
    assert!(!row.contains("data-locked"), "{row}");

    // The scanner sends a message with its password; the reply names the message.
    let reply = app
        .lettre(&scanner.device.username, &scanner.password)
        .send_raw(
            &lettre::address::Envelope::new(
                Some("scanner@praxisgesund.example".parse().unwrap()),
                vec!["empfang@praxisgesund.example".parse().unwrap()],
            )
            .unwrap(),
            crate::harness::sample_message(
                "scanner@praxisgesund.example",
                "empfang@praxisgesund.example",
                "Scan 0815",
            )
            .as_bytes(),
        )
        .await
        .expect("sent");
    let reply_text = reply.message().collect::<Vec<_>>().join(" ");
    assert!(reply_text.contains("queued as "), "{reply_text}");
    let hex = reply_text.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(hex.len(), 32, "{reply_text}");

    // Then a stale password from another address: counted, and locked at the limit.
    let edge = app.stack.smtp_addr;
    for _ in 0..3 {
        let answer =
            SmtpProbe::login_from(edge, "127.0.0.9", &scanner.device.username, "old").await;
        assert!(answer.starts_with("535"), "{answer}");
    }
    let locked = SmtpProbe::login_from(
        edge,
        "127.0.0.9",
        &scanner.device.username,
        &scanner.password,
    )
    .await;
    assert!(locked.starts_with("454"), "locked: {locked}");

    // The edge writes when it saw a device in batches: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
        "SELECT last_seen_at FROM devices WHERE id = $1",
    )
    .bind(device)
    .fetch_one(app.pool())
    .await
    .unwrap()
    .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never marked seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = tim.get(&format!("/customers/{customer}")).await;
    let row = device_row(&page.body, device);
    assert!(row.contains("data-locked"), "{row}");
    assert!(!row.contains("never seen"), "{row}");
    assert!(row.contains("<code>127.0.0.9</code>"), "{row}");
    assert!(row.contains("<span class=\"bad-text\">3</span>"), "{row}");
    assert!(
        row.contains("data-messages><a href=\"/messages?customer="),
        "{row}"
    );
    let messages_cell = row.split("data-messages>").nth(1).unwrap();
    assert!(messages_cell.contains(">1</a>"), "{row}");
    let quiet_row = device_row(&page.body, quiet.device.id);
    assert!(quiet_row.contains("never seen") && !quiet_row.contains("data-locked"));

    // Sorted by failures, the locked scanner comes first; sorted by last seen, the
    // never-seen fax does.
    let by_failures = tim
        .get(&format!("/customers/{customer}?sort=failures"))
        .await;
    assert!(
        by_failures.body.find(&device.to_string())
            < by_failures.body.find(&quiet.device.id.to_string())
    );
    let by_seen = tim
        .get(&format!("/customers/{customer}?sort=last_seen"))
        .await;
    assert!(
        by_seen.body.find(&quiet.device.id.to_string()) < by_seen.body.find(&device.to_string())
    );
    let search = tim.get(&format!("/customers/{customer}?q=empfang")).await;
    assert!(search.body.contains(&device.to_string()));
    assert!(
        !search
            .body
            .contains(&format!("data-device=\"{}\"", quiet.device.id))
    );

    // The device's page says the same, with Unlock for a technician only.
    let detail = tim
        .get(&format!("/customers/{customer}/devices/{device}"))
        .await;
    assert_eq!(
        detail.text_of("health-last-source").as_deref(),
        Some("127.0.0.9")
    );
    assert!(detail.text_of("health-locked").is_some());
    assert!(detail.body.contains("id=\"unlock\""));
    let readonly_view = rita
        .get(&format!("/customers/{customer}/devices/{device}"))
        .await;
    assert!(readonly_view.text_of("health-locked").is_some());
    assert!(!readonly_view.body.contains("id=\"unlock\""));
    let refused = rita
        .post(
            &format!("/customers/{customer}/devices/{device}/unlock"),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let unlocked = tim
        .post(
            &format!("/customers/{customer}/devices/{device}/unlock"),
            &[],
        )
        .await;
    assert_eq!(unlocked.status, StatusCode::SEE_OTHER);
    let detail = tim
        .get(&format!("/customers/{customer}/devices/{device}"))
        .await;
    assert!(detail.text_of("health-locked").is_none(), "unlocked");
    SmtpProbe::login_succeeds_within(
        edge,
        "127.0.0.9",
        &scanner.device.username,
        &scanner.password,
        Duration::from_secs(10),
    )
    .await;

    // The message, found by the id in its SMTP reply (and in the UI's form), opens
    // with a link to its device; the device links to its messages.
    let dashed = Uuid::parse_str(&hex).unwrap();
    for query in [hex.clone(), format!("queued as {hex}"), dashed.to_string()] {
        let found = tim
            .get(&format!("/messages?id={}", query.replace(' ', "+")))
            .await;
        assert_eq!(
            found.status,
            StatusCode::SEE_OTHER,
            "{query}: {}",
            found.body
        );
        assert_eq!(
            found.location.as_deref(),
            Some(format!("/messages/{dashed}").as_str())
        );
    }
    let nonsense = tim.get("/messages?id=not-an-id").await;
    assert_eq!(nonsense.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = tim
        .get(&format!("/messages?id={}", Uuid::new_v4().simple()))
        .await;
    assert!(unknown.body.contains("id=\"no-messages\""));
    let message = tim.get(&format!("/messages/{dashed}")).await;
    assert!(
        message.body.contains(&format!(
            "href=\"/customers/{customer}/devices/{device}\" id=\"message-device\""
        )),
        "the message links to its device"
    );
    let log = tim
        .get(&format!("/messages?customer={customer}&device={device}"))
        .await;
    assert!(
        log.text_of("device-filter")
            .unwrap()
            .contains("Scanner Empfang")
    );
    assert!(log.body.contains(&format!("data-message=\"{dashed}\"")));

    // Another customer's staff view cannot reach the message by id either.
    let other = app.add_tenant("Praxis Anders").await;
    sqlx::query("UPDATE staff SET all_customers = false WHERE email = 'rita.lesen@msp.example'")
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO staff_customers (staff_id, tenant_id)
         SELECT id, $1 FROM staff WHERE email = 'rita.lesen@msp.example'",
    )
    .bind(other.tenant.id)
    .execute(app.pool())
    .await
    .unwrap();
    let hidden = rita.get(&format!("/messages?id={hex}")).await;
    assert_eq!(
        hidden.status,
        StatusCode::OK,
        "not redirected to another's message"
    );
    assert!(hidden.body.contains("id=\"no-messages\""));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn a_consent_link_to_send_is_bound_to_the_tenant_and_shows_when_it_was_used() {
    let app = TestApp::spawn_without_worker().await;
    let mut anna = StaffClient::sign_in_as(&app, "anna.admin@msp.example", "admin").await;
    let created = anna
        .post(
            "/customers",
            &[
                ("name", "Praxis Link"),
                ("sender_mailbox", "scan@praxis-link.example"),
            ],
        )
        .await;
    let customer = crate::staff_client::id_in(created.location.as_deref().unwrap(), "/customers/");

    // Without the tenant id the page asks for it, and a link is refused.
    let page = anna.get(&format!("/customers/{customer}")).await;
    assert!(page.body.contains("id=\"consent-link-tenant\""));
    let refused = anna
        .post(&format!("/customers/{customer}/consent-link"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    let bad = anna
        .post(
            &format!("/customers/{customer}/consent-link"),
            &[("entra_tenant_id", "praxis-link")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    let entra = Uuid::new_v4();
    app.stack
        .simulator
        .directory
        .add_tenant(entra, &["scan@praxis-link.example"]);
    let made = anna
        .post(
            &format!("/customers/{customer}/consent-link"),
            &[("entra_tenant_id", &entra.to_string())],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let url = made
        .text_of("consent-url")
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/");
    assert!(
        url.contains(&format!("/{entra}/v2.0/adminconsent?client_id=")),
        "{url}"
    );
    assert!(
        made.text_of("mail-en-body")
            .unwrap()
            .contains("Global Administrator")
    );
    assert!(
        made.text_of("mail-de-body")
            .unwrap()
            .contains("Globaler Administrator")
    );
    assert!(
        made.body
            .contains("Bitte erlauben Sie mailbridge das Senden für Praxis Link")
    );
    assert!(made.body.contains("data-copy=\"consent-url\""));

    let page = anna.get(&format!("/customers/{customer}")).await;
    assert!(page.body.contains("data-used=\"false\""), "listed, unused");
    assert!(page.text_of("consent-links").unwrap().contains("not yet"));
    assert!(
        !page.body.contains(url.split("state=").nth(1).unwrap()),
        "the link is never shown again"
    );

    // A technician may not make one.
    let mut tim = StaffClient::sign_in_as(&app, "tim.technik@msp.example", "technician").await;
    let forbidden = tim
        .post(&format!("/customers/{customer}/consent-link"), &[])
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    // The customer's admin, in their own browser, accepts.
    app.stack.simulator.directory.consent(
        entra,
        &app.stack.client_id,
        &[mailbridge_m365_sim::ROLE_MAIL_SEND],
    );
    let admin = StaffClient::anonymous(&app);
    let callback = admin
        .answer_at_simulator(&url, &format!("sim_auto=accept&sim_tenant={entra}"))
        .await;
    let mut admin = admin;
    let done = admin.get_absolute(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(done.location.unwrap().starts_with("/consent/done?check="));
    let page = anna.get(&format!("/customers/{customer}")).await;
    assert!(
        page.body
            .contains("data-used=\"true\" data-granted=\"true\""),
        "used and granted"
    );
    // Used once: the same link again is refused.
    let again = admin.get_absolute(&callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    app.stack.shutdown().await;
}
