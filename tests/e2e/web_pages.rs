//! Every page of the control plane as a person sees it, in Chromium, in English and
//! German, at a desktop width (1 360 px) and a phone's (390 px): no page is wider
//! than the viewport, axe-core (from npm, injected into the page by the test; the
//! page itself loads no outside script) finds no serious or critical accessibility
//! violation, and times read in the viewer's zone. Also what a person does on
//! them: adding a device and switching the language on its password page,
//! an error after a form, the relay device without a password screen, the audit
//! log's readable changes, a message's page showing its delivery by itself.

use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use lettre::AsyncTransport;
use serde_json::json;
use uuid::Uuid;

use crate::{
    browser::{
        Driver, axe_source, click, element, fill, problems, screenshot, sign_in, text, viewport,
    },
    harness::{TestApp, sample_message, without_final_crlf},
};

/// The stack with a customer, a device that sent a message, a relay device, an
/// audit trail and an owner signed in.
struct Walk {
    app: TestApp,
    base: String,
    tenant: TenantId,
    device: DeviceId,
    message: MessageId,
    /// The message's id as the edge's SMTP reply gave it.
    smtp_id: String,
}

async fn walk() -> Walk {
    let app = TestApp::spawn().await;
    app.add_owner("olga.owner@msp.example", "Olga Owner").await;
    mailbridge_web::add_staff(
        app.pool(),
        "tom.technik@msp.example",
        mailbridge_web::Role::Technician,
    )
    .await
    .unwrap();
    let tenant = app
        .add_tenant("Praxis Dr. Kühn-Überlänge Gemeinschaftspraxis")
        .await;
    let device = app.add_device(&tenant, "MFP Empfang").await;
    let mailbox = tenant.tenant.sender_mailbox.clone();
    // The sender mailbox writes to itself (the simulator knows only its mailboxes).
    let recipient = mailbox.as_str();
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec![recipient.parse().unwrap()],
    )
    .unwrap();
    let reply = app
        .lettre(&device.device.username, &device.password)
        .send_raw(
            &envelope,
            without_final_crlf(&sample_message(&mailbox, recipient, "Scan 4711")),
        )
        .await
        .unwrap();
    let reply = reply.message().collect::<Vec<_>>().join(" ");
    let smtp_id = reply
        .rsplit_once("queued as ")
        .map(|(_, id)| id.trim().to_owned())
        .expect("a queue id in the reply");
    app.wait_for_inbox(recipient, 1).await;
    let message = app.message_ids().await[0];
    let base = format!("http://{}", app.stack.web_addr);
    Walk {
        base,
        tenant: tenant.tenant.id,
        device: device.device.id,
        message,
        smtp_id,
        app,
    }
}

#[tokio::test]
async fn every_page_fits_a_phone_and_passes_axe_in_both_languages() {
    let walk = walk().await;
    let axe = axe_source();
    let driver = Driver::start();
    let browser = driver.browser().await;
    let base = &walk.base;
    let shots = crate::browser::screenshot_dir();
    let mut found = Vec::new();

    // Before signing in.
    browser.goto(&format!("{base}/sign-in")).await.unwrap();
    for width in [1360, 390] {
        viewport(&browser, width).await;
        found.extend(problems(&browser, &axe, &format!("sign-in @{width}")).await);
    }
    viewport(&browser, 1360).await;
    sign_in(&browser, base, "olga.owner@msp.example").await;

    // A device added in the browser: its password page.
    browser
        .goto(&format!("{base}/customers/{}", walk.tenant))
        .await
        .unwrap();
    fill(&browser, "#device-name", "Scanner Labor").await;
    click(&browser, "#add-device").await;
    element(&browser, "#device-password").await;
    let credential = browser.current_url().await.unwrap();
    assert!(credential.path().ends_with("/credential"), "{credential}");
    for width in [1360, 390] {
        viewport(&browser, width).await;
        found.extend(problems(&browser, &axe, &format!("credential @{width}")).await);
    }
    viewport(&browser, 1360).await;

    let t = walk.tenant;
    let d = walk.device;
    let m = walk.message;
    let pages = [
        ("customers", "/".to_owned()),
        ("customer", format!("/customers/{t}")),
        ("device", format!("/customers/{t}/devices/{d}")),
        ("setup-card", format!("/customers/{t}/devices/{d}/setup")),
        ("messages", "/messages".to_owned()),
        ("message", format!("/messages/{m}")),
        ("board", "/board".to_owned()),
        ("customer-board", format!("/customers/{t}/board")),
        ("audit", "/audit".to_owned()),
        ("api-tokens", "/api-tokens".to_owned()),
        ("staff", "/staff".to_owned()),
        ("not-found", format!("/customers/{}", Uuid::new_v4())),
    ];
    for lang in ["en", "de"] {
        browser.goto(&format!("{base}/lang/{lang}")).await.unwrap();
        for (name, path) in &pages {
            browser.goto(&format!("{base}{path}")).await.unwrap();
            element(&browser, "main").await;
            for width in [1360, 390] {
                viewport(&browser, width).await;
                found.extend(problems(&browser, &axe, &format!("{name} {lang} @{width}")).await);
                // For the docs: the main pages on a phone, the audit log on a desktop.
                let phone = width == 390
                    && (lang == "en" || *name == "customer")
                    && ["customers", "customer", "device", "messages", "audit"].contains(name);
                if phone {
                    screenshot(&browser, &shots, &format!("page-{name}-{lang}-390")).await;
                } else if width == 1360 && *name == "audit" {
                    screenshot(&browser, &shots, &format!("page-{name}-{lang}")).await;
                }
            }
            viewport(&browser, 1360).await;
        }
    }
    assert!(
        found.is_empty(),
        "{} problems:\n{}",
        found.len(),
        found.join("\n")
    );
    browser.close().await.unwrap();
    walk.app.stack.shutdown().await;
}

/// Switches the page's language with its own link, as a person does.
async fn switch_language(browser: &Client, lang: &str) {
    click(browser, &format!("#lang-{lang}")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = browser
            .execute("return document.documentElement.lang", vec![])
            .await
            .unwrap();
        if current == json!(lang) {
            return;
        }
        assert!(Instant::now() < deadline, "the page stayed {current}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn form_results_survive_a_reload_and_a_language_switch() {
    let walk = walk().await;
    // A viewer in Germany (UTC+1 in winter, +2 in summer).
    let driver = Driver::start_in_zone(Some("Europe/Berlin"));
    let browser = driver.browser().await;
    let base = &walk.base;
    let (t, d) = (walk.tenant, walk.device);
    browser.goto(&format!("{base}/lang/en")).await.unwrap();
    sign_in(&browser, base, "olga.owner@msp.example").await;

    // Add a device: the password page is a page of its own (303 after the form).
    browser
        .goto(&format!("{base}/customers/{t}"))
        .await
        .unwrap();
    fill(&browser, "#device-name", "Scanner Labor").await;
    click(&browser, "#add-device").await;
    let password = text(&browser, "#device-password").await;
    assert!(password.len() >= 20);
    let page = browser.current_url().await.unwrap();
    assert!(page.path().ends_with("/credential"), "{page}");
    assert!(
        !page.as_str().contains(&password),
        "the password is in the URL"
    );
    // Switching to German shows the German page — the password was shown once.
    switch_language(&browser, "de").await;
    assert_eq!(browser.current_url().await.unwrap().path(), page.path());
    let shown = text(&browser, "#password-shown").await;
    assert!(shown.contains("einmal angezeigt"), "{shown}");
    assert!(!browser.source().await.unwrap().contains(&password));
    // A reload, too.
    browser.refresh().await.unwrap();
    element(&browser, "#password-shown").await;
    // The address the form went to, requested again, leads to the customer.
    browser
        .goto(&format!("{base}/customers/{t}/devices"))
        .await
        .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/customers/{t}")
    );

    // An error after a form: a device name taken. The way back leads to the
    // customer with what was typed, and the language switch works there too.
    fill(&browser, "#device-name", "MFP Empfang").await;
    fill(&browser, "#device-site", "Labor, 2. OG").await;
    click(&browser, "#add-device").await;
    let error = text(&browser, "#error").await;
    assert!(error.contains("MFP Empfang"), "{error}");
    let back = element(&browser, "#back-to-form")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, format!("/customers/{t}"));
    switch_language(&browser, "en").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/customers/{t}")
    );
    fill(&browser, "#device-name", "MFP Empfang").await;
    fill(&browser, "#device-site", "Labor, 2. OG").await;
    click(&browser, "#add-device").await;
    click(&browser, "#back-to-form").await;
    element(&browser, "#devices").await;
    let typed = browser
        .execute(
            "return [document.getElementById('device-name').value, document.getElementById('device-site').value]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(typed, json!(["MFP Empfang", "Labor, 2. OG"]));

    // A relay device (port 25, by address) gets no password screen.
    browser
        .goto(&format!("{base}/customers/{t}"))
        .await
        .unwrap();
    fill(&browser, "#device-name", "Fax Keller").await;
    element(&browser, "#device-listener")
        .await
        .select_by_value("relay")
        .await
        .unwrap();
    fill(&browser, "#device-networks", "127.0.0.1").await;
    click(&browser, "#add-device").await;
    let notice = text(&browser, "#notice").await;
    assert!(notice.contains("needs no password"), "{notice}");
    assert!(
        browser
            .find(Locator::Css("#device-password"))
            .await
            .is_err()
    );

    // An API token: shown once on a page of its own; the empty list said so.
    browser.goto(&format!("{base}/api-tokens")).await.unwrap();
    element(&browser, "#no-tokens").await;
    fill(&browser, "input[name=name]", "RMM").await;
    click(&browser, "form[action='/api-tokens'] button[type=submit]").await;
    let token = text(&browser, "#api-token").await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/created")
    );
    browser.refresh().await.unwrap();
    element(&browser, "#tokens").await;
    assert!(!browser.source().await.unwrap().contains(&token));

    // The customer's sender mailbox changed: the audit log says so in words, the
    // unchanged fields left out; in German with German names.
    browser
        .goto(&format!("{base}/customers/{t}"))
        .await
        .unwrap();
    let mailbox = element(&browser, "#settings-mailbox").await;
    mailbox.clear().await.unwrap();
    mailbox.send_keys("empfang@praxis.example").await.unwrap();
    click(&browser, "#save-settings").await;
    element(&browser, "#notice").await;
    browser
        .goto(&format!("{base}/audit?action=customer.update"))
        .await
        .unwrap();
    let entry = text(&browser, "#audit tbody tr").await;
    assert!(entry.contains("Customer changed"), "{entry}");
    assert!(
        entry.contains("Sender mailbox: scanner@praxisdrkhnberlngegemeinschaftspraxis.example → empfang@praxis.example"),
        "{entry}"
    );
    assert!(!entry.contains("Delivery method"), "{entry}");
    assert!(!entry.contains('{'), "raw JSON: {entry}");
    switch_language(&browser, "de").await;
    let entry = text(&browser, "#audit tbody tr").await;
    assert!(entry.contains("Kunde geändert"), "{entry}");
    assert!(entry.contains("Absenderpostfach:"), "{entry}");
    browser.goto(&format!("{base}/audit")).await.unwrap();
    let created = text(&browser, "#audit").await;
    assert!(created.contains("Gerät hinzugefügt"), "{created}");

    // The message: its id as the SMTP reply gave it, times in the viewer's zone,
    // relative in the list; the device filter stays visible.
    browser
        .goto(&format!("{base}/messages/{}", walk.message))
        .await
        .unwrap();
    assert_eq!(text(&browser, "#message-id").await, walk.smtp_id);
    let time = element(&browser, "dl.facts time").await;
    let title = time.attr("title").await.unwrap().unwrap();
    assert!(title.ends_with("UTC"), "{title}");
    let shown = time.text().await.unwrap();
    assert!(
        shown.ends_with("MEZ") || shown.ends_with("MESZ"),
        "not in the viewer's zone: {shown} ({title})"
    );
    browser
        .goto(&format!("{base}/messages?device={d}"))
        .await
        .unwrap();
    let filter = text(&browser, "#device-filter").await;
    assert!(filter.contains("MFP Empfang"), "{filter}");
    let when = text(&browser, "#messages tbody time").await;
    assert!(when.starts_with("vor "), "not relative: {when}");

    // A test message from the German page: a German subject, and no "TLS none".
    browser
        .goto(&format!("{base}/customers/{t}"))
        .await
        .unwrap();
    fill(&browser, "#test-recipient", "empfang@praxis.example").await;
    click(&browser, "#send-test").await;
    let tls = text(&browser, "#message-tls").await;
    assert!(tls.contains("von mailbridge selbst erzeugt"), "{tls}");
    let facts = text(&browser, "dl.facts").await;
    assert!(facts.contains("mailbridge-Testnachricht"), "{facts}");

    browser.close().await.unwrap();
    walk.app.stack.shutdown().await;
}

/// The once-shown password after "Add device": a redirect (303) to its page, a
/// cookie scoped to that page, stored sealed, and opened once even when the browser
/// sends the same cookie again; a relay device gets no password page.
#[tokio::test]
async fn a_once_shown_password_is_kept_sealed_for_one_view() {
    use crate::staff_client::StaffClient;
    use reqwest::StatusCode;
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Einmal").await;
    let t = tenant.tenant.id;
    let mut staff = StaffClient::sign_in_as(&app, "tina.technik@msp.example", "technician").await;
    // Sent as the page does, without following the redirect.
    let (csrf, base) = (staff.csrf.clone(), staff.base.clone());
    let added = staff
        .post_raw(
            &format!("/customers/{t}/devices"),
            &[("csrf", &csrf), ("name", "Scanner")],
            Some(&base),
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = added.location.clone().expect("a redirect");
    assert!(page.ends_with("/credential"), "{page}");
    let cookie = added
        .headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("mailbridge_reveal="))
        .expect("the reveal cookie");
    assert!(cookie.contains(&format!("Path={page};")), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let value = cookie["mailbridge_reveal=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM secret_reveals")
        .fetch_one(app.pool())
        .await
        .unwrap();

    let first = staff.get(&page).await;
    assert_eq!(first.status, StatusCode::OK);
    let password = first.text_of("device-password").expect("the password");
    assert!(password.len() >= 20);
    assert!(
        !sealed
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password is stored in clear"
    );
    assert!(!page.contains(&password));
    // The same cookie again (a copy, a replay): the password is not shown twice.
    let again = staff
        .get_with(&page, &[("cookie", &format!("mailbridge_reveal={value}"))])
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.text_of("device-password").is_none(), "shown twice");
    assert!(again.text_of("password-shown").is_some());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM secret_reveals")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);

    // Port 25 by address: no password to copy, the device's page says so.
    let relay = staff
        .post(
            &format!("/customers/{t}/devices"),
            &[
                ("name", "Fax"),
                ("listener", "relay"),
                ("allowed_networks", "127.0.0.1"),
            ],
        )
        .await;
    assert_eq!(relay.status, StatusCode::SEE_OTHER);
    let location = relay.location.unwrap();
    assert!(location.ends_with("?added=1"), "{location}");
    let device_page = staff.get(&location).await;
    assert!(
        device_page
            .text_of("notice")
            .unwrap()
            .contains("needs no password")
    );
    app.stack.shutdown().await;
}

/// A message on its way: its page shows the delivery by itself, without a timed
/// reload of an unchanged page (it looks again in the background and shows the page
/// anew once the state changed).
#[tokio::test]
async fn a_message_on_its_way_shows_its_delivery_by_itself() {
    let app = TestApp::spawn_without_worker().await;
    app.add_owner("olga.owner@msp.example", "Olga Owner").await;
    let tenant = app.add_tenant("Praxis Unterwegs").await;
    let device = app.add_device(&tenant, "MFP Empfang").await;
    let mailbox = tenant.tenant.sender_mailbox.clone();
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec![mailbox.parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(
            &envelope,
            without_final_crlf(&sample_message(&mailbox, &mailbox, "Scan 4711")),
        )
        .await
        .unwrap();
    let message = app.message_ids().await[0];
    let driver = Driver::start();
    let browser = driver.browser().await;
    let base = format!("http://{}", app.stack.web_addr);
    browser.goto(&format!("{base}/lang/en")).await.unwrap();
    sign_in(&browser, &base, "olga.owner@msp.example").await;
    browser
        .goto(&format!("{base}/messages/{message}"))
        .await
        .unwrap();
    let state = element(&browser, "#message-state").await;
    assert_eq!(
        state.attr("data-state").await.unwrap().as_deref(),
        Some("queued")
    );
    let meta = browser
        .find_all(Locator::Css("meta[http-equiv]"))
        .await
        .unwrap();
    assert!(meta.is_empty(), "no timed refresh");
    assert!(
        text(&browser, "#message-poll")
            .await
            .contains("updates itself")
    );
    // Nothing changes while nobody delivers: the page stays as it is.
    browser
        .execute("window.unchanged = true", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        browser
            .execute("return window.unchanged === true", vec![])
            .await
            .unwrap(),
        json!(true),
        "the page reloaded although nothing changed"
    );
    // A worker delivers it: the page shows it without anyone reloading.
    let mut worker = app.spawn_worker_process(30);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The element goes away while the page reloads.
        let state = match browser.find(Locator::Css("#message-state")).await {
            Ok(element) => element.attr("data-state").await.ok().flatten(),
            Err(_) => None,
        };
        if state.as_deref() == Some("accepted") {
            break;
        }
        assert!(Instant::now() < deadline, "the page still says {state:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        browser.find(Locator::Css("#message-poll")).await.is_err(),
        "done: no more looking"
    );
    worker.kill().unwrap();
    worker.wait().unwrap();
    browser.close().await.unwrap();
    app.stack.shutdown().await;
}
