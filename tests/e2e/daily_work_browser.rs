//! An MSP's daily work in a real browser (headless Chromium over WebDriver): a
//! practice onboarded through the consent link sent to its admin, its devices
//! imported from CSV (dry run, confirm, the credentials downloaded once), a device's
//! failed logins after a wrong password on the edge, and its Unlock; a message
//! found by the id its SMTP reply gave, and from there its device.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use lettre::AsyncTransport;
use uuid::Uuid;

use crate::{
    browser::{Driver, click, element, fill, screenshot, screenshot_dir, text},
    harness::{SmtpProbe, TestApp, sample_message, without_final_crlf},
};

#[tokio::test]
async fn a_practice_is_onboarded_by_consent_link_its_devices_imported_and_a_locked_device_unlocked()
{
    let app = TestApp::spawn_with_clear_auth(|s| {
        s.edge.auth_throttle.lockout_failures = 3;
    })
    .await;
    app.add_owner("ines.inhaber@msp.example", "Ines Inhaber")
        .await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    let shots = screenshot_dir();
    let base = format!("http://{}", app.stack.web_addr);
    let (mailbox, recipient) = ("scanner@praxis-link.example", "empfang@praxis-link.example");
    let entra = Uuid::new_v4();
    let directory = &app.stack.simulator.directory;
    directory.add_tenant(entra, &[mailbox, recipient]);
    directory.set_tenant_name(entra, "Praxis am Link");
    directory.set_default_admin_tenant(Some(entra));

    browser.goto(&format!("{base}/lang/en")).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    click(&browser, "#sign-in").await;
    element(&browser, "#user")
        .await
        .select_by_value("ines.inhaber@msp.example")
        .await
        .unwrap();
    click(&browser, "#sign-in").await;
    fill(&browser, "#customer-name", "Praxis am Link").await;
    fill(&browser, "#customer-mailbox", mailbox).await;
    click(&browser, "#create-customer").await;
    let customer_url = browser.current_url().await.unwrap();
    let customer_path = customer_url.path().to_owned();

    // The consent link for the practice's admin, bound to its tenant.
    fill(&browser, "#consent-link-tenant", &entra.to_string()).await;
    click(&browser, "#make-consent-link").await;
    let link = text(&browser, "#consent-url").await;
    assert!(
        link.contains(&format!("/{entra}/v2.0/adminconsent")),
        "{link}"
    );
    assert!(text(&browser, "#mail-de-body").await.contains(&link));
    screenshot(&browser, &shots, "7-consent-link").await;
    // The practice's admin opens it and accepts.
    browser.goto(&link).await.unwrap();
    element(&browser, "#tenant")
        .await
        .select_by_value(&entra.to_string())
        .await
        .unwrap();
    click(&browser, "#accept").await;
    browser
        .goto(&format!("{base}{customer_path}"))
        .await
        .unwrap();
    let used = element(&browser, "#consent-links tbody tr").await;
    assert_eq!(
        used.attr("data-used").await.unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(
        used.attr("data-granted").await.unwrap().as_deref(),
        Some("true")
    );

    // Devices from CSV: dry run, confirm, the credentials once.
    click(&browser, "#open-import").await;
    fill(
        &browser,
        "#import-text",
        "name,kind,site,listener,allow-list,sender\nMFP Empfang,printer,Empfang,587,,\nScanner Labor,scanner,Labor,465,,\n",
    )
    .await;
    click(&browser, "#dry-run-button").await;
    assert!(text(&browser, "#dry-run-ok").await.contains('2'));
    screenshot(&browser, &shots, "8-import-dry-run").await;
    click(&browser, "#confirm-import").await;
    element(&browser, "#download-credentials-button").await;
    let csv = browser
        .execute(
            "const form = document.getElementById('download-credentials');
             return fetch(form.action, { method: 'POST', body: new FormData(form), credentials: 'same-origin' })
               .then((r) => r.text());",
            vec![],
        )
        .await
        .unwrap();
    let csv = csv.as_str().unwrap().to_owned();
    let row = csv
        .lines()
        .find(|l| l.starts_with("MFP Empfang,"))
        .expect(&csv);
    let fields: Vec<&str> = row.split(',').collect();
    let (username, password) = (fields[1].to_owned(), fields[2].to_owned());
    let again = browser
        .execute(
            "const form = document.getElementById('download-credentials');
             return fetch(form.action, { method: 'POST', body: new FormData(form), credentials: 'same-origin' })
               .then((r) => r.status);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        again.as_u64(),
        Some(409),
        "the credentials are downloaded once"
    );

    // A wrong password on the edge: the device's page shows it, locked, and unlocks.
    let edge = app.stack.smtp_addr;
    for _ in 0..3 {
        SmtpProbe::login_from(edge, "127.0.0.7", &username, "alt").await;
    }
    browser
        .goto(&format!("{base}{customer_path}"))
        .await
        .unwrap();
    let row = element(&browser, "#device-list tr[data-locked]").await;
    assert!(row.text().await.unwrap().contains("127.0.0.7"));
    row.find(Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&browser, "#health-logins").await.contains("127.0.0.7"));
    element(&browser, "#health-locked").await;
    screenshot(&browser, &shots, "9-device-locked").await;
    click(&browser, "#unlock").await;
    element(&browser, "#notice").await;
    assert!(
        browser.find(Locator::Css("#health-locked")).await.is_err(),
        "no longer locked"
    );
    SmtpProbe::login_succeeds_within(
        edge,
        "127.0.0.7",
        &username,
        &password,
        Duration::from_secs(10),
    )
    .await;

    // The device sends; its reply's id finds the message; the message leads back.
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec![recipient.parse().unwrap()],
    )
    .unwrap();
    let reply = app
        .lettre(&username, &password)
        .send_raw(
            &envelope,
            without_final_crlf(&sample_message(mailbox, recipient, "Scan 1")),
        )
        .await
        .expect("sent");
    let reply = reply.message().collect::<Vec<_>>().join(" ");
    browser.goto(&format!("{base}/messages")).await.unwrap();
    fill(&browser, "#filter-id", &reply).await;
    click(&browser, "#find-id").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/messages/")
    {
        assert!(Instant::now() < deadline, "not found by {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    click(&browser, "#message-device").await;
    assert_eq!(
        text(&browser, "main h1")
            .await
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        ["MFP", "Empfang"]
    );

    // The same pages in German.
    browser.goto(&format!("{base}/lang/de")).await.unwrap();
    browser
        .goto(&format!("{base}{customer_path}"))
        .await
        .unwrap();
    assert!(
        text(&browser, "#device-list thead")
            .await
            .contains("Fehlgeschlagene Anmeldungen 24 h")
    );
    assert_eq!(
        text(&browser, "#open-import").await,
        "Geräte aus CSV importieren"
    );
    assert!(
        text(&browser, "#consent-link h3")
            .await
            .contains("An den Administrator des Kunden senden")
    );
    browser.goto(&format!("{base}/messages")).await.unwrap();
    assert!(
        text(&browser, "#message-id-search")
            .await
            .contains("Nachrichten-ID")
    );
    drop(browser);
    app.stack.shutdown().await;
}
