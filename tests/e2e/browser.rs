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
        Self::start_in_zone(None)
    }

    /// chromedriver whose browsers live in the time zone `zone` (an IANA name).
    pub(crate) fn start_in_zone(zone: Option<&str>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new("chromedriver");
        if let Some(zone) = zone {
            command.env("TZ", zone);
        }
        let child = command
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

/// axe-core's browser build: `MAILBRIDGE_AXE_CORE`, else where `scripts/axe-core`
/// installs it.
pub(crate) fn axe_source() -> String {
    let path = std::env::var_os("MAILBRIDGE_AXE_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("mailbridge-tools/npm-axe/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core at {} ({e}): run scripts/axe-core to install it from npm",
            path.display()
        )
    })
}

/// The browser's viewport to `width` CSS pixels (the window is a little wider).
pub(crate) async fn viewport(browser: &Client, width: u32) {
    browser.set_window_size(width, 900).await.unwrap();
    let inner: u64 = browser
        .execute("return window.innerWidth", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    if inner != u64::from(width) {
        let outer = width + (width - inner as u32);
        browser.set_window_size(outer, 900).await.unwrap();
    }
    let inner = browser
        .execute("return window.innerWidth", vec![])
        .await
        .unwrap();
    assert_eq!(inner, json!(width), "the viewport could not be set");
}

/// What is wrong with the page the browser shows: wider than the viewport, or
/// serious/critical axe-core violations.
pub(crate) async fn problems(browser: &Client, axe: &str, page: &str) -> Vec<String> {
    let mut found = Vec::new();
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    if scroll > inner {
        let wide = browser
            .execute(
                "const w = window.innerWidth; return [...document.querySelectorAll('body *')]
                   .filter(e => e.getBoundingClientRect().right > w + 1)
                   .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))",
                vec![],
            )
            .await
            .unwrap();
        found.push(format!("{page}: {scroll} px wide in {inner} px: {wide}"));
    }
    let loaded = browser
        .execute("return typeof window.axe !== 'undefined'", vec![])
        .await
        .unwrap();
    if loaded != json!(true) {
        browser.execute(axe, vec![]).await.expect("axe-core loads");
    }
    let violations = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] }).then((r) => done(
               r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                 .map((v) => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map((n) => n.target.join(' ') + ' ' + (n.failureSummary || '').replace(/\\s+/g, ' ')).join(' | '))
             ), (e) => done(['axe failed: ' + e]));",
            vec![],
        )
        .await
        .unwrap();
    for v in violations.as_array().unwrap() {
        found.push(format!("{page}: {}", v.as_str().unwrap()));
    }
    found
}

pub(crate) async fn sign_in(browser: &Client, base: &str, email: &str) {
    browser.goto(&format!("{base}/")).await.unwrap();
    click(browser, "#sign-in").await;
    element(browser, "#user")
        .await
        .select_by_value(email)
        .await
        .unwrap();
    click(browser, "#sign-in").await;
    element(browser, "header .who form").await;
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
    delivered: "accepted by Microsoft",
};
const GERMAN: Words = Words {
    lang: "de",
    customers: "Kunden",
    consent_ok: "Zustimmung OK",
    connecting: "Verbindung wird hergestellt",
    delivered: "von Microsoft angenommen",
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
    // The quick way (the limited mode's Exchange step is tested in least_privilege).
    click(browser, "#mode-tenant-wide").await;
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
            delivered |= row.attr("data-state").await.unwrap().as_deref() == Some("accepted");
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
    app.add_owner("ines.inhaber@msp.example", "Ines Inhaber")
        .await;
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

/// "The scanner doesn't send": a TLS 1.0-only printer tries the normal port and
/// someone types its password wrong; the technician opens the device page in the
/// browser and reads both sessions with the diagnosis — and no secret.
#[tokio::test]
async fn a_technician_reads_a_devices_transcripts_in_the_browser() {
    use crate::legacy_tls::{Tls10Attempt, legacy_app, tls10};
    let app = legacy_app().await;
    app.stack
        .add_staff_user("tim.technik@msp.example", "Tim Technik");
    mailbridge_web::add_staff(
        app.pool(),
        "tim.technik@msp.example",
        mailbridge_web::Role::Technician,
    )
    .await
    .unwrap();
    let tenant = app.add_tenant("Praxis Browser").await;
    let printer = app.add_device(&tenant, "Empfang alt").await;
    mailbridge_core::devices::change_policy(
        app.pool(),
        printer.device.id,
        mailbridge_core::devices::PolicyChange {
            allowed_networks: Some(vec!["127.0.0.0/8".parse().unwrap()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sender = tenant.tenant.sender_mailbox.clone();
    let wrong_password = "Kein-Richtiges-Passwort-7";
    // The device's password on the normal port over TLS 1.0 (refused at the
    // handshake), then a wrong password over the legacy listener's TLS 1.0.
    for password in [None, Some(wrong_password)] {
        let addr = match password {
            None => app.stack.smtp_addr,
            Some(_) => app.stack.settings.edge.legacy_submission_listen.unwrap(),
        };
        tls10(
            &app,
            Tls10Attempt {
                addr,
                implicit: false,
                device: &printer,
                password,
                sender: &sender,
            },
        )
        .await;
    }
    // Transcripts are written once a session ends, off the SMTP path.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM session_transcripts")
            .fetch_one(app.pool())
            .await
            .unwrap();
        if n >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no transcripts written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let driver = Driver::start();
    let browser = driver.browser().await;
    let base = format!("http://{}", app.stack.web_addr);
    browser.goto(&format!("{base}/")).await.unwrap();
    click(&browser, "#sign-in").await;
    element(&browser, "#user")
        .await
        .select_by_value("tim.technik@msp.example")
        .await
        .unwrap();
    click(&browser, "#sign-in").await;
    assert!(text(&browser, "header .who").await.contains("Tim Technik"));
    browser
        .goto(&format!(
            "{base}/customers/{}/devices/{}",
            tenant.tenant.id, printer.device.id
        ))
        .await
        .unwrap();
    let diagnosis = text(&browser, "#diagnosis").await;
    assert!(
        diagnosis.contains("the device offers only TLS 1.0 — use the legacy-TLS listener"),
        "{diagnosis}"
    );
    // Python's smtplib tries PLAIN, then LOGIN: two wrong passwords in one session.
    assert!(
        diagnosis.contains("Wrong password 2 times since"),
        "{diagnosis}"
    );
    let sessions = text(&browser, "#transcript-list").await;
    assert!(sessions.contains("handshake failed"), "{sessions}");
    assert!(sessions.contains("offered at most TLS 1.0"), "{sessions}");
    assert!(sessions.contains("TLSv1.0"), "{sessions}");
    assert!(sessions.contains("535 5.7.8"), "{sessions}");
    let source = browser.source().await.unwrap();
    use base64::Engine;
    for secret in [
        wrong_password.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(wrong_password),
        printer.password.clone(),
    ] {
        assert!(!source.contains(&secret), "{secret} on the page");
    }
    screenshot(&browser, &screenshot_dir(), "device-transcripts").await;
    browser.close().await.unwrap();
    app.stack.shutdown().await;
}
