//! The walk-through of an MSP's daily work in a real browser (headless Chromium
//! over WebDriver), in English and German, at a desktop width (1 360 px) and a
//! phone's (390 px): a practice onboarded through the consent link sent to its
//! admin, its devices imported from CSV (dry run, confirm, the credentials
//! downloaded once), a device's failed logins after a wrong password on the edge,
//! and its Unlock; a message found by the id its SMTP reply gave, and from there
//! its device. At every step the page fits the viewport and axe-core finds no
//! serious or critical violation.
//!
//! Screenshots of the steps go to `$MAILBRIDGE_SCREENSHOTS` (English at 1 360 px
//! and German at 390 px), like the other browser tests'.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use lettre::AsyncTransport;
use serde_json::json;
use uuid::Uuid;

use crate::{
    browser::{
        Driver, axe_source, click, element, fill, problems, screenshot, screenshot_dir, sign_in,
        text, viewport,
    },
    harness::{SmtpProbe, TestApp, sample_message, without_final_crlf},
};

/// What each language calls the things the walk looks for.
struct Words {
    lang: &'static str,
    failed_logins: &'static str,
    import: &'static str,
    send_to_admin: &'static str,
    message_id: &'static str,
    unlocked: &'static str,
}

const ENGLISH: Words = Words {
    lang: "en",
    failed_logins: "Failed logins 24 h",
    import: "Import devices from CSV",
    send_to_admin: "Send to the customer's admin",
    message_id: "Message id",
    unlocked: "unlocked",
};
const GERMAN: Words = Words {
    lang: "de",
    failed_logins: "Fehlgeschlagene Anmeldungen 24 h",
    import: "Geräte aus CSV importieren",
    send_to_admin: "An den Administrator des Kunden senden",
    message_id: "Nachrichten-ID",
    unlocked: "entsperrt",
};

/// One step's checks: the page is in the walk's language, fits the viewport and
/// passes axe-core; what is wrong goes to `found`. A screenshot for the docs
/// where `shot` names one.
struct Steps<'a> {
    browser: &'a Client,
    axe: String,
    words: &'a Words,
    width: u32,
    found: Vec<String>,
}

impl Steps<'_> {
    async fn check(&mut self, step: &str, shot: Option<&str>) {
        let page = format!("{step} {} @{}", self.words.lang, self.width);
        let lang = self
            .browser
            .execute("return document.documentElement.lang", vec![])
            .await
            .unwrap();
        if lang != json!(self.words.lang) {
            self.found.push(format!("{page}: the page is in {lang}"));
        }
        self.found
            .extend(problems(self.browser, &self.axe, &page).await);
        let docs = match (self.words.lang, self.width) {
            ("en", 1360) => shot.map(str::to_owned),
            ("de", 390) => shot.map(|s| format!("{s}-de-390")),
            _ => None,
        };
        if let Some(name) = docs {
            screenshot(self.browser, &screenshot_dir(), &name).await;
        }
    }
}

async fn daily_work(words: &Words, width: u32) {
    let app = TestApp::spawn_with_clear_auth(|s| {
        s.edge.auth_throttle.lockout_failures = 3;
    })
    .await;
    app.add_owner("ines.inhaber@msp.example", "Ines Inhaber")
        .await;
    let driver = Driver::start();
    let browser = driver.browser().await;
    viewport(&browser, width).await;
    let mut steps = Steps {
        browser: &browser,
        axe: axe_source(),
        words,
        width,
        found: Vec::new(),
    };
    let base = format!("http://{}", app.stack.web_addr);
    let (mailbox, recipient) = ("scanner@praxis-link.example", "empfang@praxis-link.example");
    let entra = Uuid::new_v4();
    let directory = &app.stack.simulator.directory;
    directory.add_tenant(entra, &[mailbox, recipient]);
    directory.set_tenant_name(entra, "Praxis am Link");
    directory.set_default_admin_tenant(Some(entra));

    browser
        .goto(&format!("{base}/lang/{}", words.lang))
        .await
        .unwrap();
    sign_in(&browser, &base, "ines.inhaber@msp.example").await;
    steps.check("customers", None).await;
    fill(&browser, "#customer-name", "Praxis am Link").await;
    fill(&browser, "#customer-mailbox", mailbox).await;
    click(&browser, "#create-customer").await;
    element(&browser, "#customer-title").await;
    let customer_path = browser.current_url().await.unwrap().path().to_owned();
    steps.check("new customer", None).await;
    assert!(
        text(&browser, "#consent-link h3")
            .await
            .contains(words.send_to_admin)
    );

    // The consent link for the practice's admin, bound to its tenant.
    fill(&browser, "#consent-link-tenant", &entra.to_string()).await;
    click(&browser, "#make-consent-link").await;
    let link = text(&browser, "#consent-url").await;
    assert!(
        link.contains(&format!("/{entra}/v2.0/adminconsent")),
        "{link}"
    );
    assert!(text(&browser, "#mail-de-body").await.contains(&link));
    steps.check("consent link", Some("7-consent-link")).await;
    // The practice's admin opens it and accepts (Entra's page, not ours).
    browser.goto(&link).await.unwrap();
    element(&browser, "#tenant")
        .await
        .select_by_value(&entra.to_string())
        .await
        .unwrap();
    click(&browser, "#accept").await;
    // Back on the customer's page after Entra's redirect (the simulator's page
    // has a `main` too).
    element(&browser, "#consent-state").await;
    steps.check("consent done", None).await;
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
    steps.check("customer consented", None).await;

    // Devices from CSV: dry run, confirm, the credentials once.
    assert_eq!(text(&browser, "#open-import").await, words.import);
    click(&browser, "#open-import").await;
    element(&browser, "#import-text").await;
    steps.check("import", None).await;
    fill(
        &browser,
        "#import-text",
        "name,kind,site,listener,allow-list,sender\nMFP Empfang,printer,Empfang,587,,\nScanner Labor,scanner,Labor,465,,\n",
    )
    .await;
    click(&browser, "#dry-run-button").await;
    assert!(text(&browser, "#dry-run-ok").await.contains('2'));
    steps
        .check("import dry run", Some("8-import-dry-run"))
        .await;
    click(&browser, "#confirm-import").await;
    element(&browser, "#download-credentials-button").await;
    steps.check("import done", None).await;
    let download = "const form = document.getElementById('download-credentials');
         return fetch(form.action, { method: 'POST', body: new FormData(form), credentials: 'same-origin' })
           .then((r) => r.text().then((t) => [r.status, t]));";
    let first = browser.execute(download, vec![]).await.unwrap();
    assert_eq!(first[0], json!(200), "{first}");
    let csv = first[1].as_str().unwrap().to_owned();
    let row = csv
        .lines()
        .find(|l| l.starts_with("MFP Empfang,"))
        .expect(&csv);
    let fields: Vec<&str> = row.split(',').collect();
    let (username, password) = (fields[1].to_owned(), fields[2].to_owned());
    let again = browser.execute(download, vec![]).await.unwrap();
    assert_eq!(again[0], json!(409), "the credentials are downloaded once");

    // A wrong password on the edge: the device's page shows it, locked, and unlocks.
    let edge = app.stack.smtp_addr;
    for _ in 0..3 {
        SmtpProbe::login_from(edge, "127.0.0.7", &username, "alt").await;
    }
    browser
        .goto(&format!("{base}{customer_path}"))
        .await
        .unwrap();
    assert!(
        text(&browser, "#device-list thead")
            .await
            .contains(words.failed_logins)
    );
    let row = element(&browser, "#device-list tr[data-locked]").await;
    assert!(row.text().await.unwrap().contains("127.0.0.7"));
    steps.check("customer with a locked device", None).await;
    row.find(Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&browser, "#health-logins").await.contains("127.0.0.7"));
    element(&browser, "#health-locked").await;
    steps.check("device locked", Some("9-device-locked")).await;
    click(&browser, "#unlock").await;
    let notice = text(&browser, "#notice").await;
    assert!(notice.contains(words.unlocked), "{notice}");
    assert!(
        browser.find(Locator::Css("#health-locked")).await.is_err(),
        "no longer locked"
    );
    steps.check("device unlocked", None).await;
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
    assert!(
        text(&browser, "#message-id-search")
            .await
            .contains(words.message_id)
    );
    steps.check("messages", None).await;
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
    element(&browser, "#message-device").await;
    steps.check("message", None).await;
    click(&browser, "#message-device").await;
    assert_eq!(
        text(&browser, "main h1")
            .await
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        ["MFP", "Empfang"]
    );
    steps.check("device", None).await;

    let found = steps.found;
    assert!(
        found.is_empty(),
        "{} problems:\n{}",
        found.len(),
        found.join("\n")
    );
    browser.close().await.unwrap();
    app.stack.shutdown().await;
}

#[tokio::test]
async fn daily_work_in_english_at_1360_px() {
    daily_work(&ENGLISH, 1360).await;
}

#[tokio::test]
async fn daily_work_in_german_at_1360_px() {
    daily_work(&GERMAN, 1360).await;
}

#[tokio::test]
async fn daily_work_in_english_at_390_px() {
    daily_work(&ENGLISH, 390).await;
}

#[tokio::test]
async fn daily_work_in_german_at_390_px() {
    daily_work(&GERMAN, 390).await;
}
