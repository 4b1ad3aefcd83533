//! The control plane's side of the security pass: device lockouts shown and lifted,
//! no open redirects, the sign-in allow-list (tenant and domain), invited staff, the
//! bootstrap of the first owner, and API tokens that expire or lose their creator.

use std::time::Duration;

use mailbridge::stack::StackOptions;
use reqwest::StatusCode;

use crate::{
    harness::{SmtpProbe, TestApp},
    staff_client::StaffClient,
};

#[tokio::test]
async fn a_locked_device_is_shown_and_unlocked_in_the_control_plane() {
    let app = TestApp::spawn_with_clear_auth(|s| s.edge.auth_throttle.lockout_failures = 3).await;
    let tenant = app.add_tenant("Praxis Sperre").await;
    let printer = app.add_device(&tenant, "Drucker").await;
    let (user, password) = (&printer.device.username, &printer.password);
    let (c, d) = (tenant.tenant.id, printer.device.id);
    let device_page = format!("/customers/{c}/devices/{d}");

    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let page = owner.get(&device_page).await;
    assert!(page.body.contains("id=\"no-failures\""), "{}", page.body);

    // A printer with a stale password at 127.0.0.3 locks its pair.
    for _ in 0..3 {
        let reply = SmtpProbe::login_from(app.stack.smtp_addr, "127.0.0.3", user, "stale").await;
        assert!(reply.starts_with("535"), "{reply}");
    }
    let reply = SmtpProbe::login_from(app.stack.smtp_addr, "127.0.0.3", user, password).await;
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
    let mut lea = StaffClient::sign_in_as(&app, "lea.lesen@msp.example", "readonly").await;
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
    SmtpProbe::login_succeeds_within(
        app.stack.smtp_addr,
        "127.0.0.3",
        user,
        password,
        Duration::from_secs(10),
    )
    .await;
    app.stack.shutdown().await;
}

/// Where the control plane sends the browser after the language switch and after a
/// sign-in started with `next`.
#[tokio::test]
async fn redirect_targets_from_the_request_stay_in_the_control_plane() {
    let app = TestApp::spawn_without_worker().await;
    StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
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
    StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    app.stack.shutdown().await;
}

/// The real binary against the test's database.
fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    use secrecy::ExposeSecret;
    std::process::Command::new(crate::harness::mailbridge_binary())
        .args(args)
        .env(
            "DATABASE_URL",
            crate::harness::database_url(&app.database).expose_secret(),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("running mailbridge")
}

fn cli_json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

async fn staff_id(app: &TestApp, email: &str) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM staff WHERE email = $1")
        .bind(email)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_uninvited_sign_in_waits_and_sees_no_customer_data() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Geheim").await;
    let device = app.add_device(&tenant, "Befunddrucker").await;
    let (c, d) = (tenant.tenant.id, device.device.id);
    // The first owner, from the command line.
    app.stack
        .add_staff_user("ines.inhaber@msp.example", "Ines Inhaber");
    let added = cli_json(&cli(
        &app,
        &[
            "staff",
            "add",
            "--email",
            "Ines.Inhaber@msp.example",
            "--role",
            "owner",
        ],
    ));
    assert_eq!(added["status"], "invited");
    let mut owner = StaffClient::sign_in(&app, "ines.inhaber@msp.example").await;
    assert!(owner.get("/").await.body.contains("Owner"));
    let sent = owner
        .post(
            &format!("/customers/{c}/test-message"),
            &[("recipient", "patient.4711@praxisgeheim.example")],
        )
        .await;
    let m = crate::staff_client::id_in(sent.location.as_deref().unwrap(), "/messages/");

    // Max works at the MSP (its tenant) but nobody invited him.
    let mut max = StaffClient::sign_in(&app, "max.neu@msp.example").await;
    let home = max.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("id=\"pending\""), "{}", home.body);
    for path in [
        "/".to_owned(),
        format!("/customers/{c}"),
        format!("/customers/{c}/devices/{d}"),
        format!("/customers/{c}/devices/{d}/setup"),
        "/messages".to_owned(),
        format!("/messages/{m}"),
        "/audit".to_owned(),
        "/staff".to_owned(),
        "/api-tokens".to_owned(),
    ] {
        let page = max.get(&path).await;
        assert!(
            !page.body.contains("Praxis Geheim") && !page.body.contains("patient.4711"),
            "{path} shows customer data to someone waiting"
        );
        if path != "/" {
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    let refused = max
        .post(
            "/customers",
            &[
                ("name", "Praxis Max"),
                ("sender_mailbox", "scan@max.example"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The owner sees him waiting and makes an admin; the admin approves Max as a
    // technician, and may not invite an owner.
    let staff = owner.get("/staff").await;
    assert!(staff.body.contains("data-waiting=\"max.neu@msp.example\""));
    let invited = owner
        .post(
            "/staff/invitations",
            &[("email", "Anna.Admin@msp.example"), ("role", "admin")],
        )
        .await;
    assert_eq!(invited.status, StatusCode::SEE_OTHER, "{}", invited.body);
    let staff = owner.get("/staff").await;
    assert!(
        staff
            .body
            .contains("data-invitation=\"anna.admin@msp.example\"")
    );
    let mut anna = StaffClient::sign_in(&app, "anna.admin@msp.example").await;
    assert!(anna.get("/").await.body.contains("Praxis Geheim"));
    let too_high = anna
        .post(
            "/staff/invitations",
            &[("email", "boss@msp.example"), ("role", "owner")],
        )
        .await;
    assert_eq!(too_high.status, StatusCode::UNPROCESSABLE_ENTITY);
    let max_id = staff_id(&app, "max.neu@msp.example").await;
    let approved = anna
        .post(
            &format!("/staff/{max_id}"),
            &[("role", "technician"), ("enabled", "on")],
        )
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    let home = max.get("/").await;
    assert!(
        home.body.contains("Praxis Geheim"),
        "approved: {}",
        home.body
    );
    // An admin changes no member's role (that stays with owners).
    let refused = anna
        .post(
            &format!("/staff/{max_id}"),
            &[("role", "admin"), ("enabled", "on")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let audit = owner.get("/audit").await;
    for action in ["staff.invite", "staff.approve"] {
        assert!(
            audit.body.contains(&format!("data-action=\"{action}\"")),
            "{action}"
        );
    }
    app.stack.shutdown().await;
}

#[tokio::test]
async fn the_first_owner_signs_in_with_the_one_time_bootstrap_code() {
    let app = TestApp::spawn_without_worker().await;
    app.stack.add_staff_user("ines.inhaber@msp.example", "Ines");
    app.stack.add_staff_user("mallory@msp.example", "Mallory");
    // What the web prints in its log at start while nobody is owner.
    let code = mailbridge_web::issue_bootstrap_code(app.pool())
        .await
        .unwrap()
        .expect("a code while nobody is owner");
    let mut ines = StaffClient::anonymous(&app);
    let page = ines.get("/sign-in").await;
    assert!(page.body.contains("id=\"bootstrap-code\""), "{}", page.body);
    let wrong = ines.get("/sign-in/start?bootstrap=AAAAA-BBBBB").await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(wrong.text_of("problem").unwrap().contains("setup code"));
    // Typed in lower case with spaces: still the code.
    let typed = code.to_lowercase().replace('-', " ");
    let callback = ines
        .authorize_from(
            &format!(
                "/sign-in/start?next=/&bootstrap={}",
                typed.replace(' ', "+")
            ),
            "ines.inhaber@msp.example",
        )
        .await;
    let done = ines.get_absolute(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(ines.get("/").await.body.contains("Owner"));
    // Used once: nobody else becomes owner with it, and no form is offered any more.
    let mut mallory = StaffClient::anonymous(&app);
    let again = mallory
        .get(&format!("/sign-in/start?bootstrap={code}"))
        .await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(
        !mallory
            .get("/sign-in")
            .await
            .body
            .contains("bootstrap-code")
    );
    assert!(
        mailbridge_web::issue_bootstrap_code(app.pool())
            .await
            .unwrap()
            .is_none(),
        "no code once an owner exists"
    );
    let mut mallory = StaffClient::sign_in(&app, "mallory@msp.example").await;
    assert!(mallory.get("/").await.body.contains("id=\"pending\""));
    app.stack.shutdown().await;
}

async fn api_status(app: &TestApp, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("http://{}/api/v1/customers", app.stack.web_addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn api_tokens_expire_and_end_with_their_creators_role() {
    let app = TestApp::spawn_without_worker().await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let mut anna = StaffClient::sign_in_as(&app, "anna.admin@msp.example", "admin").await;

    // From the command line, for automation: printed once, valid as asked.
    let made = cli_json(&cli(
        &app,
        &[
            "api-token",
            "add",
            "--staff",
            "anna.admin@msp.example",
            "--role",
            "admin",
            "--expires",
            "30d",
            "--name",
            "RMM",
        ],
    ));
    let rmm = made["token"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> =
        made["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.0..=30.0).contains(&days), "{days}");
    assert_eq!(api_status(&app, &rmm).await, StatusCode::OK);
    let too_long = cli(
        &app,
        &[
            "api-token",
            "add",
            "--staff",
            "anna.admin@msp.example",
            "--role",
            "admin",
            "--expires",
            "400d",
        ],
    );
    assert!(!too_long.status.success());
    let above = cli(
        &app,
        &[
            "api-token",
            "add",
            "--staff",
            "anna.admin@msp.example",
            "--role",
            "owner",
        ],
    );
    assert!(!above.status.success());

    // In the control plane: 90 days unless chosen, a year at most.
    let page = anna
        .post("/api-tokens", &[("name", "PSA"), ("role", "technician")])
        .await;
    let psa = page.text_of("api-token").unwrap();
    let page = anna
        .post(
            "/api-tokens",
            &[("name", "Dashboard"), ("role", "readonly"), ("days", "30")],
        )
        .await;
    let dashboard = page.text_of("api-token").unwrap();
    let refused = anna
        .post(
            "/api-tokens",
            &[("name", "Forever"), ("role", "readonly"), ("days", "3650")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let lifetimes: Vec<(String, f64)> = sqlx::query_as(
        "SELECT name, extract(epoch FROM expires_at - created_at)::float8 / 86400 FROM api_tokens ORDER BY name",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        lifetimes,
        [
            ("Dashboard".to_owned(), 30.0),
            ("PSA".to_owned(), 90.0),
            ("RMM".to_owned(), 30.0)
        ]
    );

    // Expired: 401.
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'Dashboard'",
    )
    .execute(app.pool())
    .await
    .unwrap();
    assert_eq!(api_status(&app, &dashboard).await, StatusCode::UNAUTHORIZED);
    assert!(owner.get("/api-tokens").await.body.contains("expired"));

    // Anna demoted to technician: her admin token stops, her technician token works.
    let anna_id = staff_id(&app, "anna.admin@msp.example").await;
    let demoted = owner
        .post(
            &format!("/staff/{anna_id}"),
            &[("role", "technician"), ("enabled", "on")],
        )
        .await;
    assert_eq!(demoted.status, StatusCode::SEE_OTHER);
    assert_eq!(api_status(&app, &rmm).await, StatusCode::UNAUTHORIZED);
    assert_eq!(api_status(&app, &psa).await, StatusCode::OK);
    // Disabled: every token of hers stops.
    owner
        .post(&format!("/staff/{anna_id}"), &[("role", "technician")])
        .await;
    assert_eq!(api_status(&app, &psa).await, StatusCode::UNAUTHORIZED);
    // A token whose creator is gone (deleted): 401.
    let page = owner
        .post("/api-tokens", &[("name", "Orphan"), ("role", "readonly")])
        .await;
    let orphan = page.text_of("api-token").unwrap();
    assert_eq!(api_status(&app, &orphan).await, StatusCode::OK);
    sqlx::query("UPDATE api_tokens SET created_by = NULL WHERE name = 'Orphan'")
        .execute(app.pool())
        .await
        .unwrap();
    assert_eq!(api_status(&app, &orphan).await, StatusCode::UNAUTHORIZED);
    app.stack.shutdown().await;
}
