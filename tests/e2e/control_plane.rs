//! The control plane over HTTP: sign-in through the simulated Entra ID, roles on
//! every page and form, CSRF, sessions, the admin consent that connects a customer
//! (accepted, cancelled, tampered with), devices, the message log, the audit log,
//! the languages — and that one customer's things cannot be reached through another's.

use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use mailbridge::stack::StackOptions;

use crate::{
    consent_checks::settled_connection,
    harness::{TestApp, readable, sample_message, without_final_crlf},
    staff_client::{StaffClient, id_in},
};

/// Creates a customer through the form; returns its id.
async fn create_customer(staff: &mut StaffClient, name: &str, mailbox: &str) -> TenantId {
    let page = staff
        .post(
            "/customers",
            &[
                ("name", name),
                ("sender_mailbox", mailbox),
                ("delivery_method", "graph"),
                ("permission_mode", "tenant_wide"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    id_in(page.location.as_deref().unwrap(), "/customers/").into()
}

/// Clicks "Connect Microsoft 365" and answers Entra's consent page with `answer`
/// (`sim_auto=accept&sim_tenant=…` or `sim_auto=cancel`); returns the callback page.
async fn consent(
    staff: &mut StaffClient,
    customer: TenantId,
    answer: &str,
) -> crate::staff_client::Page {
    let start = staff
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let consent_url = start.location.unwrap();
    assert!(
        consent_url.contains("/v2.0/adminconsent?client_id="),
        "{consent_url}"
    );
    assert!(consent_url.contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));
    let callback = staff.answer_at_simulator(&consent_url, answer).await;
    staff.get_absolute(&callback).await
}

/// A customer's Microsoft 365 tenant in the simulator, with its mailboxes.
fn simulated_tenant(app: &TestApp, mailboxes: &[&str]) -> Uuid {
    let id = Uuid::new_v4();
    app.stack.simulator.directory.add_tenant(id, mailboxes);
    id
}

#[tokio::test]
async fn the_invited_owner_approves_newcomers_and_roles_are_enforced() {
    let app = TestApp::spawn().await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let home = owner.get("/").await;
    assert!(home.body.contains("Owner"), "{}", home.body);
    assert!(owner.get("/staff").await.status == StatusCode::OK);

    // Tim signs in uninvited: he waits, and the owner approves him read-only.
    let mut tim = StaffClient::sign_in(&app, "tim.technik@msp.example").await;
    assert!(tim.get("/").await.body.contains("id=\"pending\""));
    let tim_id: Uuid =
        sqlx::query_scalar("SELECT id FROM staff WHERE email = 'tim.technik@msp.example'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    let staff = owner.get("/staff").await;
    assert!(
        staff
            .body
            .contains("data-waiting=\"tim.technik@msp.example\"")
    );
    let approved = owner
        .post(
            &format!("/staff/{tim_id}"),
            &[("role", "readonly"), ("enabled", "on")],
        )
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    assert!(tim.get("/").await.body.contains("Read-only"));
    // Read-only: looks, changes nothing, sees no audit log or staff.
    let refused = tim
        .post(
            "/customers",
            &[
                ("name", "Praxis"),
                ("sender_mailbox", "scan@praxis.example"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("Your role does not allow this."));
    assert_eq!(tim.get("/audit").await.status, StatusCode::FORBIDDEN);
    assert_eq!(tim.get("/staff").await.status, StatusCode::FORBIDDEN);
    assert_eq!(tim.get("/api-tokens").await.status, StatusCode::FORBIDDEN);

    // The owner makes Tim a technician: devices yes, customers no.
    let customer = create_customer(
        &mut owner,
        "Praxis Dr. Kühn",
        "scanner@praxis-kuehn.example",
    )
    .await;
    let changed = owner
        .post(
            &format!("/staff/{tim_id}"),
            &[("role", "technician"), ("enabled", "on")],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let device = tim
        .post(
            &format!("/customers/{customer}/devices"),
            &[("name", "MFP Empfang"), ("kind", "printer")],
        )
        .await;
    assert_eq!(device.status, StatusCode::OK, "{}", device.body);
    assert!(device.text_of("device-password").unwrap().len() >= 20);
    let refused = tim
        .post(
            &format!("/customers/{customer}"),
            &[("name", "Umbenannt"), ("sender_mailbox", "x@y.example")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = tim
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // An owner cannot lock themselves out.
    let owner_id: Uuid =
        sqlx::query_scalar("SELECT id FROM staff WHERE email = 'ines.inhaber@msp.example'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    let refused = owner
        .post(&format!("/staff/{owner_id}"), &[("role", "readonly")])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);

    // Disabling Tim ends his session at once.
    owner
        .post(&format!("/staff/{tim_id}"), &[("role", "technician")])
        .await;
    let after = tim.get("/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(after.location.unwrap().starts_with("/sign-in"));
    let mut again = StaffClient::anonymous(&app);
    let callback = again.authorize("tim.technik@msp.example").await;
    let refused = again.get_absolute(&callback).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("Your account is disabled"),
        "{}",
        refused.body
    );

    // Every change is in the audit log, with who and from where.
    let audit = owner.get("/audit").await;
    for action in [
        "staff.create",
        "customer.create",
        "device.create",
        "staff.update",
        "staff.sign_in",
    ] {
        assert!(
            audit.body.contains(&format!("data-action=\"{action}\"")),
            "{action} missing"
        );
    }
    assert!(audit.body.contains("tim.technik@msp.example"));
    assert!(audit.body.contains("<code>127.0.0.1</code>"));
    let filtered = owner
        .get(&format!("/audit?customer={customer}&action=device."))
        .await;
    assert!(filtered.body.contains("device.create") && !filtered.body.contains("staff.sign_in"));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn sign_in_refuses_strangers_replays_other_browsers_and_cancellation() {
    let app = TestApp::spawn().await;
    // A user of another Entra tenant: valid signature, wrong tenant.
    let stranger_tenant = Uuid::new_v4();
    app.stack
        .simulator
        .directory
        .add_user(stranger_tenant, "mallory@evil.example", "Mallory");
    let mut mallory = StaffClient::anonymous(&app);
    let callback = mallory.authorize("mallory@evil.example").await;
    let refused = mallory.get_absolute(&callback).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("allow-list"), "{}", refused.body);
    assert!(!mallory.has_cookie("mailbridge_session"));
    let staff: i64 = sqlx::query_scalar("SELECT count(*) FROM staff")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(staff, 0, "a refused sign-in creates nobody");

    // A callback replayed: the flow is single use.
    app.stack.add_staff_user("ines.inhaber@msp.example", "Ines");
    let mut ines = StaffClient::anonymous(&app);
    let callback = ines.authorize("ines.inhaber@msp.example").await;
    let mut copy_of_browser = StaffClient::anonymous(&app);
    // Another browser (without the flow cookie) cannot finish Ines's sign-in.
    let other = copy_of_browser.get_absolute(&callback).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(
        other.body.contains("another browser") || other.body.contains("expired"),
        "{}",
        other.body
    );
    // The flow was spent by that attempt: starting again works.
    let callback = ines.authorize("ines.inhaber@msp.example").await;
    let ok = ines.get_absolute(&callback).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let replay = ines.get_absolute(&callback).await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN);
    assert!(replay.body.contains("expired or was already used"));

    // Cancel on Entra's page: explained, no session.
    let mut cancelled = StaffClient::anonymous(&app);
    let start = cancelled.get("/sign-in/start").await;
    let authorize = start.location.unwrap();
    let back = cancelled.cancel_sign_in(&authorize).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let page = cancelled.get_absolute(&back).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.text_of("problem")
            .unwrap()
            .contains("The sign-in was cancelled."),
        "{}",
        page.body
    );
    assert!(!cancelled.has_cookie("mailbridge_session"));

    // A tampered state is refused.
    let mut forger = StaffClient::anonymous(&app);
    let forged = forger
        .get("/sign-in/callback?code=anything&state=made-up")
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Pages need a session; the sign-in page says how.
    let mut anonymous = StaffClient::anonymous(&app);
    let home = anonymous.get("/messages?state=failed").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(
        home.location.as_deref(),
        Some("/sign-in?next=%2Fmessages%3Fstate%3Dfailed")
    );
    let sign_in = anonymous.get("/sign-in").await;
    assert!(sign_in.body.contains("id=\"sign-in\""));
    // Signing out ends the session.
    ines.get("/").await;
    let out = ines.post("/sign-out", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(ines.get("/").await.status, StatusCode::SEE_OTHER);
    app.stack.shutdown().await;
}

#[tokio::test]
async fn forms_need_the_sessions_csrf_token_and_our_origin() {
    let app = TestApp::spawn().await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let form = [
        ("name", "Praxis"),
        ("sender_mailbox", "scan@praxis.example"),
    ];
    let no_token = owner
        .post_raw("/customers", &form, Some(&owner.base.clone()))
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let csrf = owner.csrf.clone();
    let mut with_token = vec![("csrf", csrf.as_str())];
    with_token.extend_from_slice(&form);
    let wrong = owner
        .post_raw(
            "/customers",
            &[("csrf", "forged"), form[0], form[1]],
            Some(&owner.base.clone()),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let cross_site = owner
        .post_raw("/customers", &with_token, Some("https://evil.example"))
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert!(cross_site.body.contains("did not come from mailbridge"));
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(customers, 0, "no refused form changed anything");
    let ok = owner
        .post_raw("/customers", &with_token, Some(&owner.base.clone()))
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);

    // Security headers and cookie flags.
    let page = owner.get("/").await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    let mut fresh = StaffClient::anonymous(&app);
    app.stack.add_staff_user("tim.technik@msp.example", "Tim");
    let callback = fresh.authorize("tim.technik@msp.example").await;
    let signed_in = fresh.get_absolute(&callback).await;
    let cookies: Vec<_> = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("mailbridge_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    app.stack.shutdown().await;
}

#[tokio::test]
async fn admin_consent_connects_a_customer_only_after_a_real_token_request() {
    // A consent that cannot be verified fails after a few seconds here, not 15 minutes.
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.worker.consent_check_limit = Duration::from_secs(4);
        s.worker.consent_retry_first = Duration::from_secs(1);
    })
    .await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let entra = simulated_tenant(
        &app,
        &[
            "scanner@zahnarzt-am-see.example",
            "praxis@zahnarzt-am-see.example",
        ],
    );
    let customer = create_customer(
        &mut owner,
        "Zahnarztpraxis am See",
        "scanner@zahnarzt-am-see.example",
    )
    .await;
    let page = owner.get(&format!("/customers/{customer}")).await;
    assert_eq!(
        page.text_of("consent-state").as_deref(),
        Some("Not connected")
    );

    // The admin cancels: explained, nothing connected.
    let cancelled = consent(&mut owner, customer, "sim_auto=cancel").await;
    assert_eq!(cancelled.status, StatusCode::BAD_REQUEST);
    assert!(
        cancelled
            .text_of("consent-problem")
            .unwrap()
            .contains("cancelled the consent"),
        "{}",
        cancelled.body
    );
    assert!(
        cancelled
            .text_of("consent-detail")
            .unwrap()
            .contains("AADSTS65004")
    );

    // A callback whose `tenant` was changed to a tenant that never consented: the
    // worker's token requests for it fail until the check's limit, so nothing is
    // connected, and the page says why.
    let start = owner
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    let consent_url = start.location.unwrap();
    let callback = owner
        .answer_at_simulator(&consent_url, &format!("sim_auto=accept&sim_tenant={entra}"))
        .await;
    let other = simulated_tenant(&app, &["x@other.example"]);
    let tampered = callback.replace(&entra.to_string(), &other.to_string());
    let recorded = owner.get_absolute(&tampered).await;
    assert_eq!(recorded.status, StatusCode::SEE_OTHER, "{}", recorded.body);
    let connection = settled_connection(&mut owner, customer, Duration::from_secs(30)).await;
    assert_eq!(connection["state"], "failed", "{connection}");
    assert_eq!(
        connection["check"]["error_code"], "AADSTS700016",
        "{connection}"
    );
    let refused = owner.get(&format!("/customers/{customer}")).await;
    assert_eq!(
        refused.text_of("consent-state").as_deref(),
        Some("Connection failed")
    );
    assert!(
        refused
            .text_of("consent-problem")
            .unwrap()
            .contains("has not consented"),
        "{}",
        refused.body
    );
    assert!(
        refused
            .text_of("consent-detail")
            .unwrap()
            .contains("AADSTS700016"),
        "{}",
        refused.body
    );
    let tenant = mailbridge_core::tenants::get(app.pool(), customer)
        .await
        .unwrap()
        .unwrap();
    assert!(tenant.entra_tenant_id.is_none() && tenant.consented_at.is_none());
    // The same answer cannot be used twice.
    let replay = owner.get_absolute(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // Accepted: "connecting" until a worker verified it with a token for the
    // tenant, then connected — without any click.
    let accepted = consent(
        &mut owner,
        customer,
        &format!("sim_auto=accept&sim_tenant={entra}"),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    let page = owner.get(accepted.location.as_deref().unwrap()).await;
    assert!(
        page.text_of("notice")
            .unwrap()
            .contains("checking it with Microsoft"),
        "{}",
        page.body
    );
    let connection = settled_connection(&mut owner, customer, Duration::from_secs(30)).await;
    assert_eq!(connection["state"], "connected", "{connection}");
    let page = owner.get(&format!("/customers/{customer}")).await;
    assert_eq!(page.text_of("consent-state").as_deref(), Some("Consent OK"));
    assert_eq!(page.text_of("entra-tenant").unwrap(), entra.to_string());
    let tokens = app.stack.simulator.directory.token_requests();
    assert!(
        tokens.iter().any(|t| t.tenant == entra.to_string()),
        "a real token request for the tenant"
    );

    // Once connected, an answer naming another tenant is refused, even one where
    // the app holds consent (its token request would succeed).
    app.stack.simulator.directory.consent(
        other,
        &app.stack.client_id,
        &[mailbridge_m365_sim::ROLE_MAIL_SEND],
    );
    let start = owner
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    let consent_url = start.location.unwrap();
    assert!(
        consent_url.contains(&format!("/{entra}/v2.0/adminconsent")),
        "the consent goes to the customer's tenant"
    );
    let callback = owner
        .answer_at_simulator(&consent_url, &format!("sim_auto=accept&sim_tenant={entra}"))
        .await;
    let wrong = owner
        .get_absolute(&callback.replace(&entra.to_string(), &other.to_string()))
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(
        wrong
            .text_of("consent-problem")
            .unwrap()
            .contains("different Microsoft 365 tenant")
    );
    let tenant = mailbridge_core::tenants::get(app.pool(), customer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.entra_tenant_id, Some(entra.into()));

    // A consent started by one member of staff cannot be finished by another.
    let mut tim = StaffClient::sign_in_as(&app, "tim.technik@msp.example", "readonly").await;
    let start = owner
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    let callback = owner
        .answer_at_simulator(
            start.location.as_deref().unwrap(),
            &format!("sim_auto=accept&sim_tenant={entra}"),
        )
        .await;
    let foreign = tim.get_absolute(&callback).await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert!(
        foreign
            .body
            .contains("another browser or by another person"),
        "{}",
        foreign.body
    );

    // The funnel is counted.
    let metrics = reqwest::get(format!("http://{}/metrics", app.stack.web_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for stage in ["started", "granted", "verified", "failed"] {
        assert!(
            metrics.contains(&format!("mailbridge_consents_total{{stage=\"{stage}\"}}")),
            "{stage}"
        );
    }
    app.stack.shutdown().await;
}

#[tokio::test]
async fn onboarding_over_http_from_customer_to_a_delivered_message() {
    let app = TestApp::spawn().await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let mailbox = "scanner@praxis-kuehn.example";
    let entra = simulated_tenant(&app, &[mailbox, "empfang@praxis-kuehn.example"]);
    let customer = create_customer(&mut owner, "Praxis Dr. Kühn", mailbox).await;
    consent(
        &mut owner,
        customer,
        &format!("sim_auto=accept&sim_tenant={entra}"),
    )
    .await;

    let page = owner
        .post(
            &format!("/customers/{customer}/devices"),
            &[
                ("name", "MFP Empfang"),
                ("kind", "scanner"),
                ("site", "Empfang"),
                ("listener", "submission"),
            ],
        )
        .await;
    let username = page.text_of("device-username").unwrap();
    let password = page.text_of("device-password").unwrap();
    let device_id = id_in(&page.body, "/devices/");
    // The password is nowhere to be seen again.
    let device_page = owner
        .get(&format!("/customers/{customer}/devices/{device_id}"))
        .await;
    assert!(!device_page.body.contains(&password));
    let card = owner
        .get(&format!("/customers/{customer}/devices/{device_id}/setup"))
        .await;
    assert_eq!(card.text_of("setup-username").unwrap(), username);
    assert_eq!(
        card.text_of("setup-port").unwrap(),
        app.stack.smtp_addr.port().to_string()
    );
    assert_eq!(card.text_of("setup-host").unwrap(), "relay.mailbridge.test");

    let message = sample_message(mailbox, "empfang@praxis-kuehn.example", "Befund 4711");
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec!["empfang@praxis-kuehn.example".parse().unwrap()],
    )
    .unwrap();
    use lettre::AsyncTransport;
    app.lettre(&username, &password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("the device's mail is accepted");
    app.wait_for_inbox("empfang@praxis-kuehn.example", 1).await;

    // In the log, accepted by Microsoft, with its attempt explained.
    let id = app.message_ids().await[0];
    app.wait_for_message(id, |m| m.state.as_str() == "accepted")
        .await;
    let log = owner
        .get(&format!("/messages?customer={customer}&state=accepted"))
        .await;
    assert!(
        log.body.contains(&format!("data-message=\"{id}\"")),
        "{}",
        log.body
    );
    assert!(
        !log.body.contains("Befund für Patient"),
        "no message bodies in the log"
    );
    let detail = owner.get(&format!("/messages/{id}")).await;
    assert_eq!(
        detail.text_of("message-state").as_deref(),
        Some("accepted by Microsoft")
    );
    assert!(
        detail.body.contains("TLSv1_3") || detail.body.contains("TLS"),
        "TLS details shown"
    );
    assert!(detail.body.contains("data-outcome=\"accepted\""));
    let none = owner
        .get(&format!("/messages?customer={customer}&state=failed"))
        .await;
    assert!(none.body.contains("id=\"no-messages\""));

    // A test message from the page goes the same way.
    let sent = owner
        .post(
            &format!("/customers/{customer}/test-message"),
            &[("recipient", "empfang@praxis-kuehn.example")],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let test_id = id_in(sent.location.as_deref().unwrap(), "/messages/");
    app.wait_for_message(test_id.into(), |m| m.state.as_str() == "accepted")
        .await;
    let inbox = app.wait_for_inbox("empfang@praxis-kuehn.example", 2).await;
    assert!(
        inbox
            .iter()
            .any(|m| readable(&m.mime).contains("mailbridge test message"))
    );

    // The overview shows the customer healthy.
    let overview = owner.get("/").await;
    assert!(overview.body.contains("Consent OK"));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn one_customers_devices_and_messages_are_not_reachable_through_another() {
    let app = TestApp::spawn_without_worker().await;
    let a = app.add_tenant("Praxis A").await;
    let b = app.add_tenant("Praxis B").await;
    let device_b = app.add_device(&b, "Scanner B").await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let (a_id, b_id, dev) = (a.tenant.id, b.tenant.id, device_b.device.id);

    for path in [
        format!("/customers/{a_id}/devices/{dev}"),
        format!("/customers/{a_id}/devices/{dev}/setup"),
    ] {
        assert_eq!(
            owner.get(&path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for path in [
        format!("/customers/{a_id}/devices/{dev}"),
        format!("/customers/{a_id}/devices/{dev}/rotate"),
        format!("/customers/{a_id}/devices/{dev}/enabled"),
        format!("/customers/{a_id}/devices/{dev}/delete"),
    ] {
        let page = owner
            .post(
                &path,
                &[("enabled", "false"), ("allowed_networks", "0.0.0.0/0")],
            )
            .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
    }
    let still = mailbridge_core::devices::get(app.pool(), dev)
        .await
        .unwrap()
        .unwrap();
    assert!(
        still.enabled && still.allowed_networks.is_empty(),
        "B's device untouched"
    );
    assert!(mailbridge_core::crypto::verify_password(
        &device_b.password,
        &sqlx::query_scalar::<_, String>("SELECT password_hash FROM devices WHERE id = $1")
            .bind(dev)
            .fetch_one(app.pool())
            .await
            .unwrap()
    ));
    // Through its own customer it is there.
    assert_eq!(
        owner
            .get(&format!("/customers/{b_id}/devices/{dev}"))
            .await
            .status,
        StatusCode::OK
    );
    // Unknown ids and malformed ids are not found, not errors.
    assert_eq!(
        owner
            .get(&format!("/customers/{}", Uuid::new_v4()))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        owner.get("/messages/not-an-id").await.status.as_u16() / 100,
        4
    );
    app.stack.shutdown().await;
}

#[tokio::test]
async fn devices_rotate_disable_and_refuse_bad_policies() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Labor Nord").await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let customer = tenant.tenant.id;
    let page = owner
        .post(
            &format!("/customers/{customer}/devices"),
            &[("name", "Analyser")],
        )
        .await;
    let device: DeviceId = id_in(&page.body, "/devices/").into();
    let username = page.text_of("device-username").unwrap();
    let old_password = page.text_of("device-password").unwrap();

    let bad = owner
        .post(
            &format!("/customers/{customer}/devices/{device}"),
            &[
                ("allowed_networks", "printer.local"),
                ("allowed_senders", ""),
                ("sender_policy", "rewrite"),
                ("rate_limit_per_minute", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("printer.local is not an IP address"),
        "{}",
        bad.body
    );
    let saved = owner
        .post(
            &format!("/customers/{customer}/devices/{device}"),
            &[
                ("allowed_networks", "192.0.2.10\n198.51.100.0/24"),
                ("allowed_senders", "@labor-nord.example"),
                ("sender_policy", "enforce"),
                ("rate_limit_per_minute", "30"),
                ("kind", "medical"),
                ("site", "Labor"),
                ("listener", "submissions"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let stored = mailbridge_core::devices::get(app.pool(), device)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allowed_networks.len(), 2);
    assert_eq!(stored.allowed_senders, ["@labor-nord.example"]);
    assert_eq!(stored.rate_limit_per_minute, Some(30));
    assert_eq!(stored.site.as_deref(), Some("Labor"));
    // Clear the allow-list again so the test can log in from loopback.
    owner
        .post(
            &format!("/customers/{customer}/devices/{device}"),
            &[
                ("allowed_networks", ""),
                ("allowed_senders", ""),
                ("sender_policy", "rewrite"),
                ("rate_limit_per_minute", ""),
            ],
        )
        .await;

    let rotated = owner
        .post(
            &format!("/customers/{customer}/devices/{device}/rotate"),
            &[],
        )
        .await;
    let new_password = rotated.text_of("device-password").unwrap();
    assert_ne!(new_password, old_password);
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM devices WHERE id = $1")
        .bind(device)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(mailbridge_core::crypto::verify_password(
        &new_password,
        &hash
    ));
    assert!(!mailbridge_core::crypto::verify_password(
        &old_password,
        &hash
    ));

    owner
        .post(
            &format!("/customers/{customer}/devices/{device}/enabled"),
            &[("enabled", "false")],
        )
        .await;
    let mailbox = &tenant.tenant.sender_mailbox;
    let envelope = lettre::address::Envelope::new(
        Some(mailbox.parse().unwrap()),
        vec!["x@labor-nord.example".parse().unwrap()],
    )
    .unwrap();
    use lettre::AsyncTransport;
    let refused = app
        .lettre(&username, &new_password)
        .send_raw(&envelope, b"Subject: x\r\n\r\nx")
        .await
        .expect_err("a disabled device cannot log in");
    assert_eq!(
        refused.status().map(|c| c.to_string()).as_deref(),
        Some("535")
    );

    let deleted = owner
        .post(
            &format!("/customers/{customer}/devices/{device}/delete"),
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(
        mailbridge_core::devices::get(app.pool(), device)
            .await
            .unwrap()
            .is_none()
    );
    app.stack.shutdown().await;
}

#[tokio::test]
async fn pages_speak_german_to_german_browsers_and_switch_on_request() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant_without_consent("Praxis Süd").await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let german = owner
        .get_with("/", &[("accept-language", "de-DE,de;q=0.9,en;q=0.5")])
        .await;
    assert!(german.body.contains("<html lang=\"de\">"));
    assert!(german.body.contains("<h1>Kunden</h1>"), "{}", german.body);
    assert!(german.body.contains("Nicht verbunden"));
    let customer = owner
        .get_with(
            &format!("/customers/{}", tenant.tenant.id),
            &[("accept-language", "de")],
        )
        .await;
    assert!(customer.body.contains("Microsoft 365 verbinden"));
    // An error, in German.
    let bad = owner
        .post(
            &format!("/customers/{}/test-message", tenant.tenant.id),
            &[("recipient", "kein-empfaenger")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("is not a mail address"));
    let switched = owner.get("/lang/de?back=/messages").await;
    assert_eq!(switched.location.as_deref(), Some("/messages"));
    let page = owner.get("/messages").await;
    assert!(
        page.body.contains("<h1>Nachrichten</h1>"),
        "the cookie wins: {}",
        page.body
    );
    let bad = owner
        .post(
            &format!("/customers/{}/test-message", tenant.tenant.id),
            &[("recipient", "kein-empfaenger")],
        )
        .await;
    assert!(
        bad.body.contains("kein-empfaenger ist keine Mailadresse"),
        "{}",
        bad.body
    );
    // An open redirect through the switch is not possible.
    let evil = owner.get("/lang/en?back=//evil.example/").await;
    assert_eq!(evil.location.as_deref(), Some("/"));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn waiting_messages_can_be_retried_and_cancelled() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis West").await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let customer = tenant.tenant.id;
    let sent = owner
        .post(
            &format!("/customers/{customer}/test-message"),
            &[("recipient", "empfang@praxiswest.example")],
        )
        .await;
    let id = id_in(sent.location.as_deref().unwrap(), "/messages/");
    sqlx::query("UPDATE queue SET due_at = now() + interval '1 hour' WHERE message_id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    let retried = owner.post(&format!("/messages/{id}/retry"), &[]).await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER);
    let due: bool = sqlx::query_scalar("SELECT due_at <= now() FROM queue WHERE message_id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(due);
    let cancelled = owner.post(&format!("/messages/{id}/cancel"), &[]).await;
    assert_eq!(cancelled.status, StatusCode::SEE_OTHER);
    let status = mailbridge_core::queue::status(app.pool(), id.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.state.as_str(), "failed");
    assert!(
        status
            .last_error
            .unwrap()
            .contains("cancelled by ines.inhaber@msp.example")
    );
    assert!(
        mailbridge_core::queue::body(app.pool(), app.master_key(), id.into())
            .await
            .unwrap()
            .is_none(),
        "its content is deleted"
    );
    let again = owner.post(&format!("/messages/{id}/retry"), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("Only a waiting message can be retried"));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn messages_of_a_customer_not_yet_connected_wait_with_an_explanation() {
    let app = TestApp::spawn().await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let customer = create_customer(&mut owner, "Praxis Ost", "scanner@praxis-ost.example").await;
    let sent = owner
        .post(
            &format!("/customers/{customer}/test-message"),
            &[("recipient", "empfang@praxis-ost.example")],
        )
        .await;
    let id = id_in(sent.location.as_deref().unwrap(), "/messages/");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempts = mailbridge_core::queue::attempts(app.pool(), id.into())
            .await
            .unwrap();
        if let Some(attempt) = attempts.first() {
            assert_eq!(attempt.diagnosis.as_deref(), Some("NotConnected"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = mailbridge_core::queue::status(app.pool(), id.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.state.as_str(), "queued", "it waits for the consent");
    let page = owner.get(&format!("/messages/{id}")).await;
    assert!(
        page.body
            .contains("not connected to its Microsoft 365 tenant yet"),
        "{}",
        page.body
    );
    let german = owner
        .get_with(&format!("/messages/{id}"), &[("accept-language", "de")])
        .await;
    assert!(
        german
            .body
            .contains("noch nicht mit seinem Microsoft-365-Mandanten verbunden")
    );
    app.stack.shutdown().await;
}

/// A form post of the role matrix: path, fields, the least role allowed.
type FormPost<'a> = (String, Vec<(&'a str, String)>, &'a str);

/// A role's rank, for the matrix below.
fn rank(role: &str) -> u8 {
    match role {
        "readonly" => 0,
        "technician" => 1,
        "admin" => 2,
        "owner" => 3,
        other => panic!("no role {other}"),
    }
}

#[tokio::test]
async fn every_page_and_form_checks_the_role() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Rollen").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let (c, d) = (tenant.tenant.id, device.device.id);
    let mut owner = StaffClient::sign_in_as(&app, "owner@msp.example", "owner").await;
    let sent = owner
        .post(
            &format!("/customers/{c}/test-message"),
            &[("recipient", "x@praxisrollen.example")],
        )
        .await;
    let m = id_in(sent.location.as_deref().unwrap(), "/messages/");
    let mut members = Vec::new();
    for role in ["readonly", "technician", "admin", "owner"] {
        let email = format!("{role}@msp.example");
        let mut client = StaffClient::sign_in(&app, &email).await;
        let id: Uuid = sqlx::query_scalar("SELECT id FROM staff WHERE email = $1")
            .bind(&email)
            .fetch_one(app.pool())
            .await
            .unwrap();
        let changed = owner
            .post(
                &format!("/staff/{id}"),
                &[("role", role), ("enabled", "on")],
            )
            .await;
        assert_eq!(changed.status, StatusCode::SEE_OTHER);
        client.get("/").await;
        members.push((role, id, client));
    }
    let readonly_id = members[0].1;
    let gets = [
        ("/".to_owned(), "readonly"),
        (format!("/customers/{c}"), "readonly"),
        (format!("/customers/{c}/devices/{d}"), "readonly"),
        (format!("/customers/{c}/devices/{d}/setup"), "readonly"),
        ("/messages".to_owned(), "readonly"),
        (format!("/messages/{m}"), "readonly"),
        ("/audit".to_owned(), "admin"),
        ("/api-tokens".to_owned(), "admin"),
        ("/staff".to_owned(), "admin"),
    ];
    for (role, _, client) in &mut members {
        for (path, needed) in &gets {
            let page = client.get(path).await;
            let expected = if rank(role) >= rank(needed) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(page.status, expected, "{role} GET {path}");
        }
        let posts: Vec<FormPost> = vec![
            (
                format!("/customers/{c}/devices/{d}"),
                vec![
                    ("allowed_networks", String::new()),
                    ("allowed_senders", String::new()),
                    ("sender_policy", "rewrite".into()),
                    ("rate_limit_per_minute", String::new()),
                ],
                "technician",
            ),
            (
                format!("/customers/{c}/devices"),
                vec![("name", format!("Gerät {role}"))],
                "technician",
            ),
            (
                format!("/customers/{c}/test-message"),
                vec![("recipient", "y@praxisrollen.example".into())],
                "technician",
            ),
            (format!("/messages/{m}/retry"), vec![], "technician"),
            (
                format!("/customers/{c}/devices/{d}/unlock"),
                vec![],
                "technician",
            ),
            (
                format!("/customers/{c}"),
                vec![
                    ("name", "Praxis Rollen".into()),
                    ("sender_mailbox", tenant.tenant.sender_mailbox.clone()),
                ],
                "admin",
            ),
            (
                "/customers".to_owned(),
                vec![
                    ("name", format!("Neu {role}")),
                    ("sender_mailbox", "neu@praxis.example".into()),
                ],
                "admin",
            ),
            (format!("/customers/{c}/connect"), vec![], "admin"),
            (
                "/api-tokens".to_owned(),
                vec![
                    ("name", format!("token {role}")),
                    ("role", "readonly".into()),
                ],
                "admin",
            ),
            (
                format!("/staff/{readonly_id}"),
                vec![("role", "readonly".into()), ("enabled", "on".into())],
                "owner",
            ),
        ];
        for (path, form, needed) in posts {
            let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = client.post(&path, &fields).await;
            if rank(role) >= rank(needed) {
                assert!(
                    page.status.is_success() || page.status.is_redirection(),
                    "{role} POST {path}: {} {}",
                    page.status,
                    page.body
                );
            } else {
                assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} POST {path}");
            }
        }
    }
    // The destructive ones: a read-only member is refused each, a technician may
    // delete a device but not a customer.
    let (_, _, readonly) = &mut members[0];
    for path in [
        format!("/customers/{c}/devices/{d}/rotate"),
        format!("/customers/{c}/devices/{d}/delete"),
        format!("/messages/{m}/cancel"),
        format!("/customers/{c}/delete"),
    ] {
        assert_eq!(
            readonly.post(&path, &[]).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let (_, _, technician) = &mut members[1];
    assert_eq!(
        technician
            .post(&format!("/customers/{c}/delete"), &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        technician
            .post(&format!("/customers/{c}/devices/{d}/delete"), &[])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        technician
            .post(&format!("/messages/{m}/cancel"), &[])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    let (_, _, admin) = &mut members[2];
    assert_eq!(
        admin
            .post(&format!("/customers/{c}/delete"), &[])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert!(
        mailbridge_core::tenants::get(app.pool(), c)
            .await
            .unwrap()
            .is_none()
    );
    app.stack.shutdown().await;
}

#[tokio::test]
async fn an_idle_session_ends() {
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |settings| {
        settings.web.session_idle = Duration::from_secs(1);
    })
    .await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    assert_eq!(owner.get("/").await.status, StatusCode::OK);
    // The session was last used two seconds ago (instead of waiting for it).
    sqlx::query("UPDATE web_sessions SET last_seen_at = now() - interval '2 seconds'")
        .execute(app.pool())
        .await
        .unwrap();
    let page = owner.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.unwrap().starts_with("/sign-in"));
    app.stack.shutdown().await;
}

#[tokio::test]
async fn the_overview_puts_basic_auth_refusals_first_and_flags_silent_devices() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Alt").await;
    let silent = app.add_device(&tenant, "Drucker alt").await;
    // Added more than a week ago and never seen since (a new device is not flagged).
    sqlx::query("UPDATE devices SET created_at = now() - interval '8 days' WHERE id = $1")
        .bind(silent.device.id)
        .execute(app.pool())
        .await
        .unwrap();
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let sent = owner
        .post(
            &format!("/customers/{}/test-message", tenant.tenant.id),
            &[("recipient", "x@praxisalt.example")],
        )
        .await;
    let m = id_in(sent.location.as_deref().unwrap(), "/messages/");
    for (code, times) in [("SendAsDenied", 3), ("5.7.30", 1)] {
        for _ in 0..times {
            sqlx::query(
                "INSERT INTO delivery_attempts (message_id, started_at, duration_ms, method, outcome, upstream_status, upstream_code, diagnosis, worker)
                 VALUES ($1, now(), 5, 'smtp', 'permanent', 550, $2, $2, 'test')",
            )
            .bind(m)
            .bind(code)
            .execute(app.pool())
            .await
            .unwrap();
        }
    }
    let overview = owner.get("/").await;
    let basic = overview
        .body
        .find("code basic-auth\">5.7.30 × 1")
        .expect("5.7.30 highlighted");
    let send_as = overview
        .body
        .find("SendAsDenied × 3")
        .expect("other refusals listed");
    assert!(basic < send_as, "5.7.30 first");
    assert!(
        overview.body.contains("1 not seen for 7 days"),
        "{}",
        overview.body
    );
    app.stack.shutdown().await;
}
