//! Least privilege on the Graph path: a customer in limited mode is connected by a
//! consent that grants no mail permission (its tokens carry no `roles`), waits for the
//! Exchange script, and is connected once the generated script — run in the
//! simulator's Exchange Online PowerShell stand-in — lets the app use the sender
//! mailbox; a mailbox outside the script's scope is refused (`403 ErrorAccessDenied`)
//! and explained; a tenant-wide grant is flagged.

use mailbridge_core::ids::TenantId;
use std::time::{Duration, Instant};

use lettre::{AsyncTransport, address::Envelope};
use mailbridge::stack::StackOptions;
use mailbridge_core::{least_privilege, tenants};
use mailbridge_m365_sim::rbac::ScriptRun;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    consent_checks::settled_connection,
    harness::{TestApp, TestTenant, sample_message, without_final_crlf},
    staff_client::{StaffClient, id_in},
};

/// A stack whose consent checks retry every second.
async fn stack() -> TestApp {
    TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.worker.consent_retry_first = Duration::from_secs(1);
    })
    .await
}

/// Creates a customer through the form (`mode` None: the form's default is not sent,
/// as by a script posting the form) and returns its id.
async fn create_customer(
    staff: &mut StaffClient,
    name: &str,
    mailbox: &str,
    mode: Option<&str>,
) -> TenantId {
    let mut form = vec![
        ("name", name),
        ("sender_mailbox", mailbox),
        ("delivery_method", "graph"),
    ];
    if let Some(mode) = mode {
        form.push(("permission_mode", mode));
    }
    let page = staff.post("/customers", &form).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    id_in(page.location.as_deref().unwrap(), "/customers/").into()
}

/// Clicks "Connect Microsoft 365", checks the scope asked for, accepts for `entra`
/// and follows the callback; returns the settled connection.
async fn connect(
    staff: &mut StaffClient,
    customer: TenantId,
    entra: Uuid,
    expected_scope: &str,
) -> Value {
    let start = staff
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let consent_url = start.location.unwrap();
    let scope: String = reqwest::Url::parse(&consent_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(scope, expected_scope, "{consent_url}");
    let callback = staff
        .answer_at_simulator(&consent_url, &format!("sim_auto=accept&sim_tenant={entra}"))
        .await;
    let back = staff.get_absolute(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    settled_connection(staff, customer, Duration::from_secs(30)).await
}

/// Sends a message from a new device of `customer` through the edge.
async fn send_from_device(app: &TestApp, customer: TenantId, to: &str, subject: &str) {
    let tenant = tenants::get(app.pool(), customer).await.unwrap().unwrap();
    let device = app
        .add_device(
            &TestTenant {
                tenant: tenant.clone(),
            },
            subject,
        )
        .await;
    let message = sample_message(&tenant.sender_mailbox, to, subject);
    let envelope = Envelope::new(
        Some(tenant.sender_mailbox.parse().unwrap()),
        vec![to.parse().unwrap()],
    )
    .unwrap();
    app.lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("the edge accepts the message");
}

/// Runs a script in the simulator's Exchange Online PowerShell for `entra`, over HTTP
/// as an admin's session would.
async fn run_in_exchange(app: &TestApp, entra: Uuid, script: &str) -> (StatusCode, ScriptRun) {
    let simulator = &app.stack.simulator;
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(simulator.ca_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "{}/_sim/tenants/{entra}/exchange-powershell",
            simulator.base_url()
        ))
        .body(script.to_owned())
        .send()
        .await
        .expect("the simulator");
    let status = response.status();
    let run: Value = response.json().await.unwrap();
    let run = ScriptRun {
        output: serde_json::from_value(run["output"].clone()).unwrap(),
        error: run["error"]
            .as_object()
            .map(|e| mailbridge_m365_sim::rbac::ScriptError {
                line: e["line"].as_u64().unwrap() as usize,
                message: e["message"].as_str().unwrap().to_owned(),
            }),
    };
    (status, run)
}

/// Polls the customer's page until `id` appears on it; returns the page's body.
async fn page_shows(staff: &mut StaffClient, customer: TenantId, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = staff.get(&format!("/customers/{customer}")).await;
        if page.body.contains(&format!("id=\"{id}\"")) {
            return page.body;
        }
        assert!(
            Instant::now() < deadline,
            "#{id} not shown in 30 s: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The script as the customer's page offers it for download.
async fn script(staff: &mut StaffClient, customer: TenantId, lang: &str) -> String {
    let page = staff
        .get(&format!(
            "/customers/{customer}/exchange-script?lang={lang}"
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body
}

#[tokio::test]
async fn limited_mode_connects_through_the_exchange_script_with_tokens_without_roles() {
    let app = stack().await;
    let directory = &app.stack.simulator.directory;
    let client_id = app.stack.client_id.clone();
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let entra = Uuid::new_v4();
    directory.add_tenant(
        entra,
        &["scanner@praxis-eng.example", "dr.berg@praxis-eng.example"],
    );
    // Limited is the default for a new customer.
    let customer =
        create_customer(&mut owner, "Praxis Eng", "scanner@praxis-eng.example", None).await;
    let connection = connect(
        &mut owner,
        customer,
        entra,
        "https://graph.microsoft.com/User.Read",
    )
    .await;
    assert_eq!(
        connection["state"], "waiting_for_exchange_script",
        "{connection}"
    );
    // The consent created the service principal and granted no application
    // permission: the app's tokens carry no roles.
    assert_eq!(
        directory.consented_roles(entra, &client_id),
        Some(Vec::new())
    );
    let permissions = least_privilege::get(app.pool(), customer).await.unwrap();
    assert_eq!(
        permissions.service_principal_id,
        directory.service_principal_id(entra, &client_id),
        "the worker recorded the token's oid"
    );
    assert!(permissions.service_principal_id.is_some());
    assert!(permissions.tenant_wide_roles.is_empty());

    // A device's message waits: Graph refuses the mailbox, and the page says why.
    send_from_device(&app, customer, "labor@klinik.example", "Befund 1").await;
    let page = page_shows(&mut owner, customer, "exchange-refused").await;
    assert!(
        page.contains(
            "the Exchange script has not been run (or its scope does not contain this mailbox)"
        ),
        "{page}"
    );
    assert!(page.contains("id=\"exchange-script\""), "{page}");
    assert!(directory.inbox("labor@klinik.example").is_empty());

    // The customer's admin runs the generated script (in German, as the page offers it).
    let english = script(&mut owner, customer, "en").await;
    let german = script(&mut owner, customer, "de").await;
    assert!(english.contains("# 2. A management scope that contains only the sender mailbox."));
    assert!(german.contains("# 2. Ein Verwaltungsbereich, der nur das Absender-Postfach enthält."));
    assert!(german.contains(&format!(
        "New-ServicePrincipal -AppId '{client_id}' -ObjectId '{}'",
        permissions.service_principal_id.unwrap()
    )));
    assert!(german.contains("PrimarySmtpAddress -eq 'scanner@praxis-eng.example'"));
    let (status, run) = run_in_exchange(&app, entra, &german).await;
    assert_eq!(status, StatusCode::OK, "{run:?}");
    assert!(run.error.is_none(), "{run:?}");
    let in_scope: Vec<&String> = run
        .output
        .iter()
        .filter(|l| l.ends_with("| True"))
        .collect();
    assert_eq!(
        in_scope.len(),
        2,
        "Mail.Send and Mail.ReadWrite in scope: {run:?}"
    );
    let rbac = directory.exchange_rbac(entra);
    assert_eq!(rbac.assignments.len(), 2);

    // "The script has run: check now": the waiting messages go, with role-less tokens.
    let checked = owner
        .post(&format!("/customers/{customer}/exchange-check"), &[])
        .await;
    assert_eq!(checked.status, StatusCode::SEE_OTHER, "{}", checked.body);
    let delivered = app.wait_for_inbox("labor@klinik.example", 1).await;
    assert_eq!(delivered[0].mailbox, "scanner@praxis-eng.example");
    assert_eq!(
        directory.consented_roles(entra, &client_id),
        Some(Vec::new())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connection = settled_connection(&mut owner, customer, Duration::from_secs(5)).await;
        if connection["state"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "{connection}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = page_shows(&mut owner, customer, "exchange-verified").await;
    assert!(!page.contains("id=\"tenant-wide-warning\""), "{page}");
    let overview = owner.get("/").await;
    assert!(
        overview.body.contains("data-permission-mode=\"limited\""),
        "{}",
        overview.body
    );
    // The doctor's mailbox stays out of reach.
    assert!(
        directory
            .mailbox_access(
                entra,
                &client_id,
                &[],
                "dr.berg@praxis-eng.example",
                mailbridge_m365_sim::rbac::MailboxNeed::Send
            )
            .is_err()
    );
    app.stack.shutdown().await;
}

#[tokio::test]
async fn a_sender_mailbox_outside_the_scope_is_refused_and_explained() {
    let app = stack().await;
    let directory = &app.stack.simulator.directory;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let entra = Uuid::new_v4();
    directory.add_tenant(
        entra,
        &["scanner@praxis-nord.example", "empfang@praxis-nord.example"],
    );
    let customer = create_customer(
        &mut owner,
        "Praxis Nord",
        "scanner@praxis-nord.example",
        Some("limited"),
    )
    .await;
    let connection = connect(
        &mut owner,
        customer,
        entra,
        "https://graph.microsoft.com/User.Read",
    )
    .await;
    assert_eq!(connection["state"], "waiting_for_exchange_script");
    // The admin scoped the grant to another mailbox.
    let scoped_elsewhere = script(&mut owner, customer, "en")
        .await
        .replace("scanner@praxis-nord.example", "empfang@praxis-nord.example");
    let (_, run) = run_in_exchange(&app, entra, &scoped_elsewhere).await;
    assert!(run.error.is_none(), "{run:?}");
    let (_, test) = run_in_exchange(
        &app,
        entra,
        &format!(
            "Connect-ExchangeOnline\nTest-ServicePrincipalAuthorization -Identity '{}' -Resource 'scanner@praxis-nord.example'",
            app.stack.client_id
        ),
    )
    .await;
    assert!(
        test.output.iter().skip(1).all(|l| l.ends_with("| False")),
        "{test:?}"
    );

    send_from_device(&app, customer, "labor@klinik.example", "Befund 2").await;
    // The customer is held on Graph's refusal of the check message; "check now"
    // probes it at once, and the probe is refused again.
    let held = page_shows(&mut owner, customer, "exchange-refused").await;
    assert!(held.contains("id=\"holds\""), "{held}");
    let failures_before = probe_failures(&app, customer).await.expect("held");
    owner
        .post(&format!("/customers/{customer}/exchange-check"), &[])
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe_failures(&app, customer).await {
            Some(failures) if failures > failures_before => break,
            Some(_) => {}
            None => panic!("the hold was released: the mailbox outside the scope got through"),
        }
        assert!(Instant::now() < deadline, "no probe within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = page_shows(&mut owner, customer, "exchange-refused").await;
    assert!(page.contains("403 ErrorAccessDenied"), "{page}");
    // Refused: nothing delivered, every attempt was Graph's 403.
    let attempts: Vec<(Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT a.upstream_status, a.upstream_code FROM delivery_attempts a
           JOIN messages m ON m.id = a.message_id WHERE m.tenant_id = $1",
    )
    .bind(customer)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert!(!attempts.is_empty());
    assert!(
        attempts
            .iter()
            .all(|(s, c)| *s == Some(403) && c.as_deref() == Some("ErrorAccessDenied")),
        "{attempts:?}"
    );
    assert!(directory.inbox("labor@klinik.example").is_empty());
    // … in German too.
    owner.get("/lang/de").await;
    let german = page_shows(&mut owner, customer, "exchange-refused").await;
    assert!(
        german.contains("das Exchange-Skript wurde noch nicht ausgeführt (oder sein Bereich enthält dieses Postfach nicht)"),
        "{german}"
    );
    app.stack.shutdown().await;
}

/// The failed probes of the customer's hold, `None` when it is not held.
async fn probe_failures(app: &TestApp, customer: TenantId) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT probe_failures FROM delivery_holds WHERE scope = 'customer' AND tenant_id = $1",
    )
    .bind(customer)
    .fetch_optional(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenant_wide_grant_is_flagged_with_how_to_remove_it() {
    let app = stack().await;
    let directory = &app.stack.simulator.directory;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let entra = Uuid::new_v4();
    directory.add_tenant(entra, &["scanner@praxis-sued.example"]);
    let customer = create_customer(
        &mut owner,
        "Praxis Süd",
        "scanner@praxis-sued.example",
        Some("tenant_wide"),
    )
    .await;
    let connection = connect(
        &mut owner,
        customer,
        entra,
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(connection["state"], "connected", "{connection}");
    let page = page_shows(&mut owner, customer, "tenant-wide-warning").await;
    assert!(
        page.contains("can send as every mailbox of this practice"),
        "{page}"
    );
    assert!(
        page.contains("Remove-MgServicePrincipalAppRoleAssignment"),
        "{page}"
    );
    let overview = owner.get("/").await;
    assert!(
        overview
            .body
            .contains("data-permission-mode=\"tenant_wide\"")
            && overview.body.contains("data-tenant-wide-warning"),
        "{}",
        overview.body
    );
    app.stack.shutdown().await;
}

#[tokio::test]
async fn the_exchange_powershell_stand_in_validates_as_exchange_does() {
    let app = stack().await;
    let directory = &app.stack.simulator.directory;
    let client_id = app.stack.client_id.clone();
    let entra = Uuid::new_v4();
    directory.add_tenant(entra, &["scanner@praxis-west.example"]);
    let run = |script: String| {
        let app = &app;
        async move { run_in_exchange(app, entra, &script).await }
    };
    // No enterprise application yet: New-ServicePrincipal is refused, naming the line.
    let (status, refused) = run(format!(
        "Connect-ExchangeOnline\n\nNew-ServicePrincipal -AppId '{client_id}' -ObjectId '{}'",
        Uuid::new_v4()
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.error.as_ref().unwrap().line, 3, "{refused:?}");
    directory.consent(entra, &client_id, &[]);
    let object_id = directory.service_principal_id(entra, &client_id).unwrap();
    for (script, line, text) in [
        (
            format!("New-ServicePrincipal -AppId '{client_id}' -ObjectId '{object_id}'"),
            1,
            "Connect-ExchangeOnline first",
        ),
        (
            format!("Connect-ExchangeOnline\nNew-ServicePrincipal -AppId '{client_id}' -ObjectId '{}'", Uuid::new_v4()),
            2,
            "is not the object id of the service principal",
        ),
        (
            "Connect-ExchangeOnline\nNew-ManagementScope -Name 's' -RecipientRestrictionFilter \"Department -eq 'Lab'\"".to_owned(),
            2,
            "not supported by the simulator",
        ),
        (
            "Connect-ExchangeOnline\nNew-ManagementScope -Name 's' -RecipientFilter \"PrimarySmtpAddress -eq 'a@b'\"".to_owned(),
            2,
            "parameter name 'RecipientFilter'",
        ),
        (
            format!("Connect-ExchangeOnline\nNew-ManagementRoleAssignment -App '{client_id}' -Role 'Application Mail.Send' -CustomResourceScope 'none'"),
            2,
            "couldn't be found in Exchange",
        ),
        (
            "Connect-ExchangeOnline\nGet-Mailbox".to_owned(),
            2,
            "'Get-Mailbox' is not recognized",
        ),
    ] {
        let (status, run) = run(script.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{script}: {run:?}");
        let error = run.error.unwrap();
        assert_eq!(error.line, line, "{script}: {error:?}");
        assert!(error.message.contains(text), "{script}: {error:?}");
    }
    assert!(directory.exchange_rbac(entra).service_principals.is_empty());
    app.stack.shutdown().await;
}
