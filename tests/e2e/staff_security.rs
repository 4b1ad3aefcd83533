//! The control plane's side of the security pass: device lockouts shown and lifted,
//! no open redirects, the sign-in allow-list (tenant and domain), invited staff, the
//! bootstrap of the first owner, and API tokens that expire or lose their creator.

use std::time::Duration;

use mailbridge::stack::StackOptions;
use mailbridge_core::{Settings, config::Networks};
use reqwest::StatusCode;

use crate::{
    harness::{SmtpProbe, TestApp},
    staff_client::StaffClient,
};

async fn app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.edge.plaintext_auth_networks = "127.0.0.0/8".parse::<Networks>().unwrap();
        configure(s);
    })
    .await
}

async fn login_from(app: &TestApp, from: &str, user: &str, password: &str) -> String {
    let (mut smtp, _) = SmtpProbe::connect_from(app.stack.smtp_addr, from.parse().unwrap()).await;
    smtp.command("EHLO device.example").await;
    smtp.login(user, password).await
}

#[tokio::test]
async fn a_locked_device_is_shown_and_unlocked_in_the_control_plane() {
    let app = app_with(|s| s.edge.auth_throttle.lockout_failures = 3).await;
    let tenant = app.add_tenant("Praxis Sperre").await;
    let printer = app.add_device(&tenant, "Drucker").await;
    let (user, password) = (&printer.device.username, &printer.password);
    let (c, d) = (tenant.tenant.id, printer.device.id);
    let device_page = format!("/customers/{c}/devices/{d}");

    let mut owner = StaffClient::sign_in(&app, "ines.inhaber@msp.example").await;
    let page = owner.get(&device_page).await;
    assert!(page.body.contains("id=\"no-failures\""), "{}", page.body);

    // A printer with a stale password at 127.0.0.3 locks its pair.
    for _ in 0..3 {
        let reply = login_from(&app, "127.0.0.3", user, "stale").await;
        assert!(reply.starts_with("535"), "{reply}");
    }
    let reply = login_from(&app, "127.0.0.3", user, password).await;
    assert!(reply.starts_with("454 4.7.0"), "locked: {reply}");

    let page = owner.get(&device_page).await;
    assert!(page.body.contains("id=\"locked-badge\""), "{}", page.body);
    let failures = page.text_of("login-failures").expect("the failures table");
    assert!(failures.contains("127.0.0.3/32"), "{failures}");
    assert!(
        page.body.contains("data-scope=\"pair\""),
        "the pair is named: {failures}"
    );
    assert!(page.body.contains("id=\"unlock\""));

    // A read-only member sees the lock but cannot lift it.
    let mut lea = StaffClient::sign_in(&app, "lea.lesen@msp.example").await;
    let seen = lea.get(&device_page).await;
    assert!(seen.body.contains("id=\"locked-badge\"") && !seen.body.contains("id=\"unlock\""));
    let refused = lea.post(&format!("{device_page}/unlock"), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Without the CSRF token, nobody.
    let forged = owner
        .post_raw(
            &format!("{device_page}/unlock"),
            &[],
            Some(&owner.base.clone()),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);

    let unlocked = owner.post(&format!("{device_page}/unlock"), &[]).await;
    assert_eq!(unlocked.status, StatusCode::SEE_OTHER, "{}", unlocked.body);
    let page = owner.get(unlocked.location.as_deref().unwrap()).await;
    assert!(page.body.contains("id=\"no-failures\""), "{}", page.body);
    assert!(page.text_of("notice").unwrap().contains("unlocked"));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'device.unlock' AND actor = 'ines.inhaber@msp.example'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The device logs in again (the edge trusts a state it read for two seconds).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = login_from(&app, "127.0.0.3", user, password).await;
        if reply.starts_with("235") {
            break;
        }
        assert!(reply.starts_with("454"), "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "still locked: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stack.shutdown().await;
}

/// Where the control plane sends the browser after the language switch and after a
/// sign-in started with `next`.
#[tokio::test]
async fn redirect_targets_from_the_request_stay_in_the_control_plane() {
    let app = TestApp::spawn_without_worker().await;
    StaffClient::sign_in(&app, "ines.inhaber@msp.example").await;
    let encoded = |t: &str| {
        t.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let evil = [
        "/%09/evil.example",
        "/%0a/evil.example",
        "/%0d/evil.example",
        "/\\evil.example",
        "//evil.example",
        "https://evil.example",
    ];
    // Each as the attacker writes it in the link, and percent-encoded once more.
    let mut queries: Vec<String> = evil.iter().map(|e| e.to_string()).collect();
    queries.extend(evil.iter().map(|e| encoded(e)));
    queries.push(encoded("/\t/evil.example"));
    for query in &queries {
        let mut browser = StaffClient::anonymous(&app);
        let switched = browser.get(&format!("/lang/de?back={query}")).await;
        assert_eq!(switched.status, StatusCode::SEE_OTHER, "{query}");
        assert_eq!(switched.location.as_deref(), Some("/"), "lang back={query}");

        let page = browser.get(&format!("/sign-in?next={query}")).await;
        assert!(
            page.body.contains("href=\"/sign-in/start?next=/\""),
            "sign-in next={query}: {}",
            page.body
        );
        let callback = browser
            .authorize_from(
                &format!("/sign-in/start?next={query}"),
                "ines.inhaber@msp.example",
            )
            .await;
        let done = browser.get_absolute(&callback).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location.as_deref(), Some("/"), "start next={query}");
    }
    // A path of the control plane is kept.
    let good = encoded("/customers?x=1");
    let mut browser = StaffClient::anonymous(&app);
    let switched = browser.get(&format!("/lang/en?back={good}")).await;
    assert_eq!(switched.location.as_deref(), Some("/customers?x=1"));
    let callback = browser
        .authorize_from(
            &format!("/sign-in/start?next={good}"),
            "ines.inhaber@msp.example",
        )
        .await;
    let done = browser.get_absolute(&callback).await;
    assert_eq!(done.location.as_deref(), Some("/customers?x=1"));
    app.stack.shutdown().await;
}

/// Signs in as `email` (a user the test added to the simulator) and returns the
/// callback's answer.
async fn try_sign_in(app: &TestApp, email: &str) -> crate::staff_client::Page {
    let mut browser = StaffClient::anonymous(app);
    let callback = browser.authorize(email).await;
    browser.get_absolute(&callback).await
}

#[tokio::test]
async fn entra_sign_in_needs_the_tenant_and_the_domain() {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.web.oidc = Some(mailbridge_core::config::OidcSettings {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new().into(),
            allowed_tenants: Vec::new(),
            allowed_domains: vec!["msp.example".into()],
        });
    })
    .await;
    let directory = &app.stack.simulator.directory;
    // Another company's tenant, whose admin gave a user the MSP's address as mail.
    let elsewhere = uuid::Uuid::new_v4();
    directory.add_tenant(elsewhere, &[]);
    directory.add_user(elsewhere, "fake.admin@msp.example", "Fake Admin");
    let refused = try_sign_in(&app, "fake.admin@msp.example").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.text_of("problem").unwrap().contains("allow-list"),
        "{}",
        refused.body
    );
    // A user of the MSP's tenant whose address is not of the allowed domain.
    app.stack
        .add_staff_user("contractor@partner.example", "Contractor");
    let refused = try_sign_in(&app, "contractor@partner.example").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let staff: i64 = sqlx::query_scalar("SELECT count(*) FROM staff")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(staff, 0, "nobody refused became staff");
    // The MSP's own user with the MSP's address: tenant and domain match.
    StaffClient::sign_in(&app, "ines.inhaber@msp.example").await;
    app.stack.shutdown().await;
}
