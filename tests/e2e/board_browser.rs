//! The migration board in a real browser (Chromium over WebDriver, as in
//! `browser`): a technician uploads a customer's SMTP AUTH clients report (the German
//! Excel export), turns the scanner's account into a relay device with one click and
//! gets its password and setup card, and reads the MSP-wide readiness with
//! Microsoft's dates — once in English and once in German. Screenshots go to
//! `$MAILBRIDGE_SCREENSHOTS` as `board-*-{en,de}.png`.

use crate::{
    browser::{Driver, click, element, screenshot, screenshot_dir, text},
    harness::TestApp,
};

/// What each language calls the things the walk-through checks.
struct Words {
    lang: &'static str,
    board: &'static str,
    to_migrate: &'static str,
    device_created: &'static str,
    imported: &'static str,
    days_left: &'static str,
}

const ENGLISH: Words = Words {
    lang: "en",
    board: "Migration board",
    to_migrate: "To migrate",
    device_created: "Relay device created",
    imported: "Imported 3 rows.",
    days_left: "days left:",
};
const GERMAN: Words = Words {
    lang: "de",
    board: "Migrationsboard",
    to_migrate: "Zu migrieren",
    device_created: "Relay-Gerät angelegt",
    imported: "3 Zeilen importiert.",
    days_left: "Tage übrig:",
};

async fn walk(app: &TestApp, browser: &fantoccini::Client, words: &Words, practice: &str) {
    let base = format!("http://{}", app.stack.web_addr);
    let customer = app.add_tenant(practice).await.tenant;
    let slug: String = practice
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("SMTP-AUTH-Clients.csv");
    std::fs::write(
        &report,
        format!(
            "\u{feff}sep=;\r\nDatum;Absenderadresse;Gesendete Nachrichten;Authentifizierungsprotokoll;Client-IP-Adresse\r\n\
29.11.2026;scanner@{slug}.example;1.250;Basic;192.0.2.10\r\n\
30.11.2026;fax@{slug}.example;17;Basic;192.0.2.20\r\n\
30.11.2026;kis@{slug}.example;40;OAuth;\r\n"
        ),
    )
    .unwrap();
    let shots = screenshot_dir();

    browser
        .goto(&format!("{base}/lang/{}", words.lang))
        .await
        .unwrap();
    browser
        .goto(&format!("{base}/customers/{}", customer.id))
        .await
        .unwrap();
    click(browser, "#open-board").await;
    assert!(text(browser, "#board-title").await.starts_with(words.board));

    // Upload the report as exported and saved again by Excel.
    element(browser, "#report-file")
        .await
        .send_keys(report.to_str().unwrap())
        .await
        .unwrap();
    click(browser, "#import-report").await;
    assert!(
        text(browser, "#notice").await.contains(words.imported),
        "{}",
        text(browser, "#notice").await
    );
    let scanner_row = format!("tr[data-account=\"scanner@{slug}.example\"]");
    assert_eq!(
        text(browser, &format!("{scanner_row} .state")).await,
        words.to_migrate
    );
    screenshot(browser, &shots, &format!("board-2-customer-{}", words.lang)).await;

    // One click: the relay device, its password once, the setup card.
    click(browser, &format!("{scanner_row} .create-device")).await;
    let username = text(browser, "#device-username").await;
    let password = text(browser, "#device-password").await;
    assert!(password.len() >= 20);
    screenshot(browser, &shots, &format!("board-3-device-{}", words.lang)).await;
    click(browser, "#setup-card").await;
    assert!(
        browser.source().await.unwrap().contains(&username),
        "the setup card names the device's username"
    );
    browser
        .goto(&format!("{base}/customers/{}/board", customer.id))
        .await
        .unwrap();
    assert_eq!(
        text(browser, &format!("{scanner_row} .state")).await,
        words.device_created
    );

    // Across all customers, with Microsoft's dates.
    click(browser, "#nav-board").await;
    assert!(text(browser, "#countdown").await.contains(words.days_left));
    assert!(text(browser, "#readiness").await.contains(practice));
    screenshot(browser, &shots, &format!("board-1-overview-{}", words.lang)).await;
}

#[tokio::test]
async fn a_technician_migrates_a_practice_on_the_board_in_both_languages() {
    let app = TestApp::spawn().await;
    app.add_owner("ines.inhaber@msp.example", "Ines Inhaber")
        .await;
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
    assert!(text(&browser, "header .who").await.contains("Ines Inhaber"));

    walk(&app, &browser, &ENGLISH, "Praxis Sonnenhof").await;
    walk(&app, &browser, &GERMAN, "Zahnarztpraxis Lindenweg").await;
    browser.close().await.unwrap();
}
