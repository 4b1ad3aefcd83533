//! The control plane in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) with fantoccini. An MSP technician signs in through the
//! simulated Entra ID, creates a customer, connects it by admin consent, adds a
//! device, the device sends through the edge with that password, and the message
//! shows up delivered in the log — once in English and once in German.
//!
//! Screenshots of the main pages go to `$MAILBRIDGE_SCREENSHOTS` (the repository's
//! `docs/screenshots` is made this way), or a temporary directory.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use lettre::AsyncTransport;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{TestApp, sample_message, without_final_crlf};

/// chromedriver on a free port, stopped when dropped.
pub(crate) struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub(crate) fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1360,1000",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ],
            }),
        );
        // The simulated Microsoft 365 serves HTTPS from its own CA.
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn screenshot_dir() -> PathBuf {
    match std::env::var_os("MAILBRIDGE_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("mailbridge-screenshots"),
    }
}

pub(crate) async fn screenshot(browser: &Client, dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The element `css` names, once the page has it.
pub(crate) async fn element(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

pub(crate) async fn text(browser: &Client, css: &str) -> String {
    element(browser, css).await.text().await.unwrap()
}

pub(crate) async fn click(browser: &Client, css: &str) {
    element(browser, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

pub(crate) async fn fill(browser: &Client, css: &str, value: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(value)
        .await
        .unwrap();
}

/// What each language calls the things the test looks for.
struct Words {
    lang: &'static str,
    customers: &'static str,
    consent_ok: &'static str,
    connecting: &'static str,
    delivered: &'static str,
}

const ENGLISH: Words = Words {
    lang: "en",
    customers: "Customers",
    consent_ok: "Consent OK",
    connecting: "Connecting",
    delivered: "delivered",
};
const GERMAN: Words = Words {
    lang: "de",
    customers: "Kunden",
    consent_ok: "Zustimmung OK",
    connecting: "Verbindung wird hergestellt",
    delivered: "zugestellt",
};

/// One technician's onboarding of one practice, in the browser.
async fn onboard(
    app: &TestApp,
    browser: &Client,
    words: &Words,
    practice: &str,
    slug: &str,
    shots: Option<&Path>,
) {
    let base = format!("http://{}", app.stack.web_addr);
    let mailbox = format!("scanner@{slug}.example");
    let recipient = format!("empfang@{slug}.example");
    let entra = Uuid::new_v4();
    let directory = &app.stack.simulator.directory;
    directory.add_tenant(entra, &[&mailbox, &recipient]);
    directory.set_tenant_name(entra, practice);
    directory.set_default_admin_tenant(Some(entra));
    // Entra takes a few seconds to make the consent usable.
    directory.set_consent_propagation(Duration::from_secs(3));

    browser
        .goto(&format!("{base}/lang/{}", words.lang))
        .await
        .unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text(browser, "main h1").await, words.customers);

    // Create the customer.
    fill(browser, "#customer-name", practice).await;
    fill(browser, "#customer-mailbox", &mailbox).await;
    click(browser, "#create-customer").await;
    let notice = text(browser, "#notice").await;
    assert!(!notice.is_empty());
    assert_eq!(text(browser, "#customer-title").await, practice);

    // Connect Microsoft 365: Entra's consent page, as the practice's admin.
    click(browser, "#connect").await;
    element(browser, "#tenant")
        .await
        .select_by_value(&entra.to_string())
        .await
        .unwrap();
    if let Some(dir) = shots.filter(|_| words.lang == "en") {
        screenshot(browser, dir, "4-admin-consent").await;
    }
    click(browser, "#accept").await;
    assert_eq!(text(browser, "#consent-state").await, words.connecting);
    // "Connecting" until a worker verified the consent: the page updates itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The element goes away while the page reloads.
        let state = match browser.find(Locator::Css("#consent-state")).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if state == words.consent_ok {
            break;
        }
        assert!(Instant::now() < deadline, "the page still says {state:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(dir) = shots {
        screenshot(browser, dir, &format!("2-customer-{}", words.lang)).await;
    }

    // Add a device: its password, shown once.
    fill(browser, "#device-name", "MFP Empfang").await;
    fill(browser, "#device-site", "Empfang").await;
    click(browser, "#add-device").await;
    let username = text(browser, "#device-username").await;
    let password = text(browser, "#device-password").await;
    assert!(password.len() >= 20);
    if let Some(dir) = shots.filter(|_| words.lang == "en") {
        screenshot(browser, dir, "3-device-password").await;
    }

    // The device sends with it, through the edge.
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec![recipient.parse().unwrap()],
    )
    .unwrap();
    let message = sample_message(&mailbox, &recipient, "Scan 4711");
    app.lettre(&username, &password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("the edge accepts the device's mail");

    // The message log shows it delivered.
    browser
        .goto(&format!("{base}/messages?recipient={recipient}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = browser
            .find_all(Locator::Css("#messages tr[data-state]"))
            .await
            .unwrap();
        let mut delivered = false;
        for row in &states {
            delivered |= row.attr("data-state").await.unwrap().as_deref() == Some("delivered");
        }
        if delivered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message never showed up delivered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.refresh().await.unwrap();
    }
    assert!(text(browser, "#messages").await.contains(words.delivered));
    if let Some(dir) = shots {
        screenshot(browser, dir, &format!("5-message-log-{}", words.lang)).await;
    }
    click(browser, "#messages tbody tr a").await;
    assert_eq!(text(browser, "#message-state").await, words.delivered);
    if let Some(dir) = shots.filter(|_| words.lang == "en") {
        screenshot(browser, dir, "6-message").await;
    }
    assert_eq!(app.wait_for_inbox(&recipient, 1).await.len(), 1);
}

#[tokio::test]
async fn a_technician_onboards_a_practice_in_the_browser_in_both_languages() {
    let app = TestApp::spawn().await;
    app.stack
        .add_staff_user("ines.inhaber@msp.example", "Ines Inhaber");
    mailbridge_web::add_staff(
        app.pool(),
        "ines.inhaber@msp.example",
        mailbridge_web::Role::Owner,
    )
    .await
    .unwrap();
    let driver = Driver::start();
    let browser = driver.browser().await;
    let shots = screenshot_dir();
    let base = format!("http://{}", app.stack.web_addr);

    // Sign in: the control plane sends the browser to Entra and back.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/sign-in")
    );
    screenshot(&browser, &shots, "0-sign-in").await;
    click(&browser, "#sign-in").await;
    element(&browser, "#user")
        .await
        .select_by_value("ines.inhaber@msp.example")
        .await
        .unwrap();
    click(&browser, "#sign-in").await;
    assert!(text(&browser, "header .who").await.contains("Ines Inhaber"));

    onboard(
        &app,
        &browser,
        &ENGLISH,
        "Praxis Dr. Kühn",
        "praxis-kuehn",
        Some(&shots),
    )
    .await;
    onboard(
        &app,
        &browser,
        &GERMAN,
        "Zahnarztpraxis am See",
        "zahnarzt-am-see",
        Some(&shots),
    )
    .await;

    browser.goto(&format!("{base}/lang/en")).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    screenshot(&browser, &shots, "1-customers").await;
    // The page's script is allowed by the policy and runs (the language links carry
    // the page to return to); no inline script was needed.
    let href = browser
        .find(Locator::Css("#lang-de"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(href.contains("back="), "{href}");

    browser.close().await.unwrap();
    app.stack.shutdown().await;
}
