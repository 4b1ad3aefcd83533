//! Consent that waits for Entra: the web (a real `mailbridge web` process with no
//! credential of the MSP app in its environment) records the admin consent, and a
//! worker verifies it in the background while the simulated Entra propagates it —
//! connected without any click, or failed after the check's limit with the reason in
//! words; two workers never work one check at once, and a dead worker's claim
//! expires.

use mailbridge_core::ids::TenantId;
use std::time::{Duration, Instant};

use mailbridge::stack::StackOptions;
use mailbridge_core::consent_checks;
use mailbridge_m365_sim::ConsentDecision;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    harness::{TestApp, database_url},
    staff_client::{StaffClient, id_in},
    web_hardening::WebProcess,
};

/// Polls the customer's connection (the JSON its page polls) until it is no longer
/// "connecting"; panics after `within`.
pub async fn settled_connection(
    staff: &mut StaffClient,
    customer: TenantId,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let page = staff
            .get(&format!("/customers/{customer}/connection"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let connection: Value = serde_json::from_str(&page.body).expect("JSON");
        if connection["state"] != "connecting" {
            return connection;
        }
        assert!(
            Instant::now() < deadline,
            "still connecting after {within:?}: {connection}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The variables of a running process's environment (Linux).
fn environment_of(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("the process's environment");
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// An API client with a bearer token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API call");
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_web_without_the_apps_secret_connects_a_customer_after_a_60_second_propagation() {
    const PROPAGATION: Duration = Duration::from_secs(60);
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.worker.consent_retry_first = Duration::from_secs(2);
    })
    .await;
    let directory = &app.stack.simulator.directory;
    directory.set_consent_propagation(PROPAGATION);
    let settings = &app.stack.settings;
    // The web process knows the MSP app's client id (public) and nothing else of it.
    let web = WebProcess::start(
        &app,
        "http://{addr}",
        &[
            ("MAILBRIDGE_ENTRA_CLIENT_ID", app.stack.client_id.as_str()),
            (
                "MAILBRIDGE_M365_LOGIN_URL",
                settings.m365.login_url.as_str(),
            ),
        ],
    )
    .await;
    let environment = environment_of(web.child.id());
    for variable in [
        "MAILBRIDGE_ENTRA_CLIENT_SECRET",
        "MAILBRIDGE_ENTRA_CLIENT_CERTIFICATE_FILE",
        "MAILBRIDGE_ENTRA_CLIENT_KEY_FILE",
    ] {
        assert!(
            !environment
                .iter()
                .any(|v| v.starts_with(&format!("{variable}="))),
            "{variable} is in the web's environment"
        );
    }
    assert!(
        environment
            .iter()
            .any(|v| v.starts_with("MAILBRIDGE_ENTRA_CLIENT_ID="))
    );

    // An admin's API token (the member of staff signed in once).
    StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "admin").await;
    let (_, token) = mailbridge_web::create_api_token(
        app.pool(),
        "ines.inhaber@msp.example",
        "onboarding",
        mailbridge_web::Role::Admin,
        1,
    )
    .await
    .unwrap();
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", web.addr),
        token,
    };
    let entra = Uuid::new_v4();
    directory.add_tenant(entra, &["scanner@praxis-geduld.example"]);
    let (status, customer) = api
        .call(
            reqwest::Method::POST,
            "/customers",
            Some(json!({ "name": "Praxis Geduld", "sender_mailbox": "scanner@praxis-geduld.example", "entra_tenant_id": entra.to_string(), "permission_mode": "tenant_wide" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{customer}");
    let customer = customer["id"].as_str().unwrap().to_owned();
    let (status, link) = api
        .call(
            reqwest::Method::POST,
            &format!("/customers/{customer}/consent"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{link}");

    // The customer's admin accepts; Microsoft sends the browser back to the web.
    let callback = directory
        .answer_admin_consent(
            link["consent_url"].as_str().unwrap(),
            ConsentDecision::Accept,
            Some(entra),
        )
        .unwrap();
    let granted_at = Instant::now();
    let mut browser = web.client(&app);
    let back = browser.get_absolute(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    let done = back.location.expect("to the done page");
    let check = id_in(&done, "check=");
    let page = browser.get(&done).await;
    assert!(
        page.body.contains("data-state=\"connecting\"")
            && page
                .body
                .contains(&format!("data-connection-poll=\"/consent/checks/{check}\"")),
        "{}",
        page.body
    );
    let (_, connection) = api
        .call(
            reqwest::Method::GET,
            &format!("/customers/{customer}/connection"),
            None,
        )
        .await;
    assert_eq!(connection["state"], "connecting", "{connection}");

    // Nobody clicks anything: the worker keeps asking until Entra has propagated it.
    let deadline = granted_at + PROPAGATION + Duration::from_secs(90);
    let connection = loop {
        let (status, connection) = api
            .call(
                reqwest::Method::GET,
                &format!("/customers/{customer}/connection"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{connection}");
        if connection["state"] != "connecting" {
            break connection;
        }
        assert!(Instant::now() < deadline, "still connecting: {connection}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let waited = granted_at.elapsed();
    assert_eq!(connection["state"], "connected", "{connection}");
    assert_eq!(connection["check"]["state"], "verified");
    assert!(
        waited >= PROPAGATION,
        "connected after {waited:?}, before the consent had propagated"
    );
    let attempts = connection["check"]["attempts"].as_i64().unwrap();
    assert!(attempts >= 3, "retried with backoff: {connection}");
    // Before the consent propagated Entra did not know the app in the tenant.
    let refusals = directory
        .token_requests()
        .iter()
        .filter(|t| t.tenant == entra.to_string() && t.error_code == Some(700016))
        .count();
    assert!(refusals >= 2, "{refusals} AADSTS700016 refusals");
    println!("consent verified {waited:?} after it was granted, in {attempts} attempts");

    // The admin's page says so too (without signing in: the check's own status).
    let status = browser.get(&format!("/consent/checks/{check}")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&status.body).unwrap()["state"],
        "verified"
    );
    let page = browser.get(&done).await;
    assert!(
        page.body.contains("data-state=\"connected\""),
        "{}",
        page.body
    );

    // The sign-in app the web does hold may send nothing: Entra knows no service
    // principal of it in the customer's tenant.
    let oidc = settings.web.oidc.as_ref().unwrap();
    let tls = mailbridge_core::tls::client_config(settings.extra_ca_file.as_deref()).unwrap();
    let sim = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .unwrap();
    let answer = sim
        .post(format!(
            "{}/{entra}/oauth2/v2.0/token",
            settings.m365.login_url
        ))
        .form(&[
            ("client_id", oidc.client_id.as_str()),
            (
                "client_secret",
                secrecy::ExposeSecret::expose_secret(&oidc.client_secret),
            ),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(answer.text().await.unwrap().contains("AADSTS700016"));
    drop(web);
    app.stack.shutdown().await;
}

#[tokio::test]
async fn a_consent_whose_permission_never_appears_fails_with_the_reason() {
    const LIMIT: Duration = Duration::from_secs(6);
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.worker.consent_check_limit = LIMIT;
        s.worker.consent_retry_first = Duration::from_secs(1);
    })
    .await;
    let directory = &app.stack.simulator.directory;
    directory.set_consent_propagation(Duration::from_secs(2));
    // The MSP's app registration lacks Mail.Send: the admin consents, and the
    // tokens never carry the role.
    directory.set_requested_permissions(&app.stack.client_id, &["SMTP.SendAsApp"]);
    let entra = Uuid::new_v4();
    directory.add_tenant(entra, &["scanner@praxis-ohne-recht.example"]);
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let page = owner
        .post(
            "/customers",
            &[
                ("name", "Praxis Ohne Recht"),
                ("sender_mailbox", "scanner@praxis-ohne-recht.example"),
                ("delivery_method", "graph"),
                ("permission_mode", "tenant_wide"),
            ],
        )
        .await;
    let customer: TenantId = id_in(page.location.as_deref().unwrap(), "/customers/").into();
    let start = owner
        .post(&format!("/customers/{customer}/connect"), &[])
        .await;
    let callback = owner
        .answer_at_simulator(
            start.location.as_deref().unwrap(),
            &format!("sim_auto=accept&sim_tenant={entra}"),
        )
        .await;
    let granted_at = Instant::now();
    let back = owner.get_absolute(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    let page = owner.get(back.location.as_deref().unwrap()).await;
    assert_eq!(page.text_of("consent-state").as_deref(), Some("Connecting"));
    assert!(
        page.body.contains(&format!(
            "data-connection-poll=\"/customers/{customer}/connection\""
        )),
        "the page updates itself"
    );
    let overview = owner.get("/").await;
    let row = overview
        .body
        .split(&format!("data-customer=\"{customer}\""))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the customer's row");
    assert!(row.contains("Connecting"), "{row}");

    let connection =
        settled_connection(&mut owner, customer, LIMIT + Duration::from_secs(20)).await;
    let waited = granted_at.elapsed();
    assert_eq!(connection["state"], "failed", "{connection}");
    assert!(waited >= LIMIT, "failed after {waited:?}, before the limit");
    let check = &connection["check"];
    assert_eq!(check["error_code"], "MissingRole", "{connection}");
    assert!(check["attempts"].as_i64().unwrap() >= 3, "{connection}");
    assert!(
        check["problem"]
            .as_str()
            .unwrap()
            .contains("without the permission"),
        "{connection}"
    );

    // The page explains it, in German too.
    let page = owner.get(&format!("/customers/{customer}")).await;
    assert_eq!(
        page.text_of("consent-state").as_deref(),
        Some("Connection failed")
    );
    assert!(
        page.text_of("consent-fix")
            .unwrap()
            .contains("grant admin consent again")
    );
    assert!(
        page.text_of("consent-detail")
            .unwrap()
            .contains("Mail.Send")
    );
    let german = owner
        .get_with(
            &format!("/customers/{customer}"),
            &[("Accept-Language", "de")],
        )
        .await;
    assert_eq!(
        german.text_of("consent-state").as_deref(),
        Some("Verbindung fehlgeschlagen")
    );
    assert!(
        german
            .text_of("consent-problem")
            .unwrap()
            .contains("ohne die Berechtigung")
    );
    let tenant = mailbridge_core::tenants::get(app.pool(), customer)
        .await
        .unwrap()
        .unwrap();
    assert!(tenant.entra_tenant_id.is_none() && tenant.consented_at.is_none());
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'customer.consent_failed'",
    )
    .bind(customer)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(failed, 1);
    app.stack.shutdown().await;
}

#[tokio::test]
async fn two_workers_never_work_one_check_and_a_dead_workers_claim_expires() {
    let app = TestApp::spawn_without_worker().await;
    let directory = &app.stack.simulator.directory;
    directory.set_consent_propagation(Duration::from_secs(4));
    let mut checks = Vec::new();
    for n in 0..6 {
        let tenant = app
            .add_tenant_without_consent(&format!("Praxis Parallel {n}"))
            .await
            .tenant;
        let entra = tenant.entra_tenant_id.unwrap();
        // Granted on Entra's page (propagating), recorded as the web's callback does.
        let url = format!(
            "{}/{entra}/v2.0/adminconsent?client_id={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&redirect_uri={}&state=x",
            app.stack.settings.m365.login_url,
            app.stack.client_id,
            urlencode(&format!(
                "{}/consent/callback",
                app.stack.settings.web.public_url
            )),
        );
        directory
            .answer_admin_consent(&url, ConsentDecision::Accept, Some(entra.as_uuid()))
            .unwrap();
        let check = consent_checks::record(app.pool(), tenant.id, entra, "consent-link", None)
            .await
            .unwrap();
        checks.push((tenant.id, entra, check.id));
    }
    // A worker claimed the first check and died before it asked Microsoft.
    let dead = consent_checks::claim_due(app.pool(), "dead-worker", Duration::from_secs(3))
        .await
        .unwrap()
        .expect("a due check");

    let database = database_url(&app.database);
    let workers = Workers(
        (0..2)
            .map(|_| app.worker_command(&database, 30).spawn().expect("worker"))
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM consent_checks WHERE state <> 'verified'")
                .fetch_one(app.pool())
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} checks not verified");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(workers);
    let tokens = directory.token_requests();
    for (tenant, entra, check) in &checks {
        let check = consent_checks::get(app.pool(), *check)
            .await
            .unwrap()
            .unwrap();
        // Each attempt is one token request: no attempt was made twice, and no two
        // workers asked at once (attempts are seconds apart, by the backoff).
        let times: Vec<_> = tokens
            .iter()
            .filter(|t| t.tenant == entra.to_string())
            .map(|t| t.at)
            .collect();
        let requests = times.len();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= chrono::Duration::seconds(1),
                "two attempts at once for {entra}: {times:?}"
            );
        }
        let attempts = if check.id == dead.id {
            check.attempts - 1 // the dead worker's claim asked nothing
        } else {
            check.attempts
        };
        assert_eq!(requests as i32, attempts, "{check:?}");
        let connected: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE tenant_id = $1 AND action = 'customer.connected'",
        )
        .bind(tenant)
        .fetch_one(app.pool())
        .await
        .unwrap();
        assert_eq!(connected, 1, "connected once");
        let t = mailbridge_core::tenants::get(app.pool(), *tenant)
            .await
            .unwrap()
            .unwrap();
        assert!(t.consented_at.is_some());
    }
    app.stack.shutdown().await;
}

/// Worker processes, stopped when dropped (also when the test fails).
struct Workers(Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            worker.kill().ok();
            worker.wait().ok();
        }
    }
}

/// `text` percent-encoded for a query string.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_purge_keeps_each_customers_latest_consent_check() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant_without_consent("Praxis Alt").await.tenant;
    let entra = tenant.entra_tenant_id.unwrap();
    let older = consent_checks::record(app.pool(), tenant.id, entra, "consent-link", None)
        .await
        .unwrap();
    let latest = consent_checks::record(app.pool(), tenant.id, entra, "consent-link", None)
        .await
        .unwrap();
    let superseded = consent_checks::get(app.pool(), older.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(superseded.state, consent_checks::CheckState::Failed);
    assert_eq!(
        superseded.last_error_code.as_deref(),
        Some(consent_checks::SUPERSEDED)
    );
    // Both finished long before the audit log's retention.
    sqlx::query(
        "UPDATE consent_checks SET state = 'failed', requested_at = requested_at - interval '500 days',
                finished_at = now() - interval '500 days' WHERE tenant_id = $1",
    )
    .bind(tenant.id)
    .execute(app.pool())
    .await
    .unwrap();
    let retention = mailbridge_core::retention::Retention::from_settings(&app.stack.settings);
    let purged = mailbridge_core::retention::purge(app.pool(), &retention)
        .await
        .unwrap();
    assert!(purged.contains(&("consent_checks", 1)), "{purged:?}");
    assert!(
        consent_checks::get(app.pool(), older.id)
            .await
            .unwrap()
            .is_none()
    );
    let kept = consent_checks::latest(app.pool(), tenant.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.id, latest.id,
        "the customer's page still shows how it ended"
    );
    app.stack.shutdown().await;
}
