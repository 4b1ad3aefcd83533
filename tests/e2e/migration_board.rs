//! The migration board end to end: the SMTP AUTH clients report imported into a
//! customer (the English summary export through the API, the German Excel details
//! export with `;` and a BOM through the page's upload), one account turned into a
//! relay device in one action, mail from that device through the edge moving it to
//! "relay traffic seen", a later report without its Basic use moving it to "done",
//! refused files changing nothing, ignoring and reopening, the exposure list of the
//! PowerShell snippet through the CLI, the readiness overview, the CSV export and
//! the audit log.

use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use std::time::{Duration, Instant};

use lettre::AsyncTransport;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::{
    harness::{TestApp, database_url, mailbridge_binary, sample_message, without_final_crlf},
    staff_client::StaffClient,
};

const SCANNER: &str = "scanner@praxisboard.example";
const FAX: &str = "fax@praxisboard.example";
const PVS: &str = "pvs@praxisboard.example";

/// The summary view as the Exchange admin center exports it.
const SUMMARY_EN: &str = "Sender address,Domain,TLS 1.0 (%),TLS 1.1 (%),TLS 1.2 (%),Messages sent,Authentication protocol\r\n\
scanner@praxisboard.example,praxisboard.example,0,0,100,412,Basic\r\n\
fax@praxisboard.example,praxisboard.example,100,0,0,\"1,204\",Basic\r\n\
pvs@praxisboard.example,praxisboard.example,0,0,100,80,OAuth\r\n";

/// The details view opened in a German Excel and saved again as "CSV UTF-8": a BOM,
/// Excel's `sep=` line, `;`, German column names, numbers and dates.
fn german_details(rows: &[&str]) -> Vec<u8> {
    let mut text = String::from(
        "\u{feff}sep=;\r\nDatum;Absenderadresse;Domäne;TLS 1.0 (%);TLS 1.1 (%);TLS 1.2 (%);Gesendete Nachrichten;Authentifizierungsprotokoll;Client-IP-Adresse\r\n",
    );
    for row in rows {
        text.push_str(row);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.bearer_auth(&self.token).send().await.expect("API");
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn import(&self, customer: TenantId, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!(
                    "{}/customers/{customer}/smtp-auth-report?file_name={name}",
                    self.base
                ))
                .header("content-type", "text/csv")
                .body(bytes),
        )
        .await
    }

    async fn account(&self, customer: TenantId, account: &str) -> Value {
        let (status, board) = self.get(&format!("/customers/{customer}/board")).await;
        assert_eq!(status, StatusCode::OK, "{board}");
        board["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == account)
            .cloned()
            .unwrap_or_else(|| panic!("{account} not on the board: {board}"))
    }
}

async fn api_token(staff: &mut StaffClient) -> String {
    let page = staff
        .post("/api-tokens", &[("name", "PSA"), ("role", "admin")])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.text_of("api-token").expect("the token, shown once")
}

async fn audit_actions(app: &TestApp, customer: TenantId) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_log WHERE tenant_id = $1 ORDER BY id")
        .bind(customer)
        .fetch_all(app.pool())
        .await
        .unwrap()
}

async fn imports(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM smtp_auth_imports")
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_customer_moves_from_basic_smtp_auth_to_the_relay() {
    let app = TestApp::spawn().await;
    let customer = app.add_tenant("Praxis Board").await.tenant;
    let other = app.add_tenant("Labor Anders").await.tenant;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}/api/v1", app.stack.web_addr),
        token: api_token(&mut owner).await,
    };

    // 1. The summary export, through the API.
    let (status, outcome) = api
        .import(customer.id, "smtp-auth-summary.csv", SUMMARY_EN.into())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    assert_eq!(outcome["kind"], "summary");
    assert_eq!(outcome["rows"], 3);
    assert_eq!(outcome["added"], json!([FAX, PVS, SCANNER]));
    let fax = api.account(customer.id, FAX).await;
    assert_eq!(fax["basic_messages"], 1204);
    assert_eq!(fax["state"], "to_migrate");
    assert_eq!(api.account(customer.id, PVS).await["state"], "no_basic_use");

    // 2. The German details export, through the page's upload.
    let details = german_details(&[
        "28.11.2026;Scanner@PraxisBoard.example;praxisboard.example;0;0;100;1.250;Basic;192.0.2.10",
        "29.11.2026;scanner@praxisboard.example;praxisboard.example;0;0;100;3;Basic;192.0.2.11",
        "30.11.2026;fax@praxisboard.example;praxisboard.example;100;0;0;17;Basic;192.0.2.20",
        "30.11.2026;pvs@praxisboard.example;praxisboard.example;0;0;100;9;OAuth;",
    ]);
    let page = owner
        .post_file(
            &format!("/customers/{}/board/import", customer.id),
            "file",
            "SMTP-AUTH-Details.csv",
            &details,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.text_of("notice").unwrap().contains("Imported 4 rows"));
    let scanner = api.account(customer.id, SCANNER).await;
    assert_eq!(scanner["basic_messages"], 1253);
    assert_eq!(scanner["sources"], json!(["192.0.2.10", "192.0.2.11"]));
    assert!(
        scanner["first_seen_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-28")
    );
    assert!(
        scanner["last_seen_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-29")
    );
    assert_eq!(scanner["state"], "to_migrate");

    // The upload is a form like any other: without the session's token, refused.
    let uploads = imports(&app).await;
    let token = std::mem::replace(&mut owner.csrf, "forged".into());
    let page = owner
        .post_file(
            &format!("/customers/{}/board/import", customer.id),
            "file",
            "SMTP-AUTH-Details.csv",
            &details,
        )
        .await;
    owner.csrf = token;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert_eq!(imports(&app).await, uploads);

    // 3. Refused files change nothing: a bad row after good ones, another file.
    let before = (imports(&app).await, audit_actions(&app, customer.id).await);
    let bad = german_details(&[
        "01.12.2026;neu@praxisboard.example;praxisboard.example;0;0;100;5;Basic;",
        "01.12.2026;fax@praxisboard.example;praxisboard.example;0;0;100;viele;Basic;",
    ]);
    let (status, error) = api.import(customer.id, "kaputt.csv", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Row 3") && message.contains("\"viele\""),
        "{message}"
    );
    let page = owner
        .post_file(
            &format!("/customers/{}/board/import", customer.id),
            "file",
            "kontakte.csv",
            "Name;Telefon;E-Mail\r\nDr. Kühn;0301234;kuehn@praxisboard.example\r\n".as_bytes(),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let refused = page.text_of("refused").unwrap();
    assert!(
        refused.contains("Sender address") && refused.contains("Telefon"),
        "{refused}"
    );
    assert_eq!(
        before,
        (imports(&app).await, audit_actions(&app, customer.id).await),
        "a refused file leaves nothing behind"
    );
    let (_, board) = api.get(&format!("/customers/{}/board", customer.id)).await;
    assert!(!board.to_string().contains("neu@praxisboard.example"));
    assert_eq!(api.account(customer.id, FAX).await["basic_messages"], 17);

    // 4. One click: the scanner's relay device, its password and setup card.
    let page = owner
        .post(
            &format!("/customers/{}/board/device", customer.id),
            &[("account", SCANNER), ("name", ""), ("kind", "scanner")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let username = page.text_of("device-username").unwrap();
    let password = page.text_of("device-password").unwrap();
    assert!(
        page.body.contains("/setup\""),
        "the setup card is one click away"
    );
    let scanner = api.account(customer.id, SCANNER).await;
    assert_eq!(scanner["state"], "device_created");
    assert_eq!(scanner["device_name"], "scanner (SMTP AUTH)");
    let device_id: DeviceId = scanner["device_id"].as_str().unwrap().parse().unwrap();
    let (_, device) = api
        .get(&format!("/customers/{}/devices/{device_id}", customer.id))
        .await;
    assert_eq!(
        device["allowed_senders"],
        json!([SCANNER]),
        "the suggested sender"
    );

    // A device of another customer cannot be linked.
    let foreign = app
        .add_device(
            &crate::harness::TestTenant {
                tenant: other.clone(),
            },
            "Fremd",
        )
        .await;
    let (status, _) = api
        .post(
            &format!("/customers/{}/board/link", customer.id),
            &json!({ "account": FAX, "device_id": foreign.device.id }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.account(customer.id, FAX).await["state"], "to_migrate");

    // 5. The scanner sends through the edge: relay traffic seen.
    let recipient = "empfang@praxisboard.example";
    let envelope = lettre::address::Envelope::new(
        Some(SCANNER.parse().unwrap()),
        vec![recipient.parse().unwrap()],
    )
    .unwrap();
    app.lettre(&username, &password)
        .send_raw(
            &envelope,
            without_final_crlf(&sample_message(SCANNER, recipient, "Scan 0815")),
        )
        .await
        .expect("the edge accepts the device's mail");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scanner = api.account(customer.id, SCANNER).await;
        if scanner["state"] == "relay_traffic_seen" {
            assert!(scanner["relay_seen_at"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "never seen: {scanner}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 6. The next report has no Basic use by the scanner any more: done. The fax
    // still sends with Basic and stays.
    let later = german_details(&[
        "05.12.2026;fax@praxisboard.example;praxisboard.example;100;0;0;21;Basic;192.0.2.20",
        "05.12.2026;pvs@praxisboard.example;praxisboard.example;0;0;100;12;OAuth;",
    ]);
    let (status, outcome) = api.import(customer.id, "woche-49.csv", later).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    assert_eq!(outcome["done"], json!([SCANNER]));
    let scanner = api.account(customer.id, SCANNER).await;
    assert_eq!(scanner["state"], "done");
    assert!(scanner["done_at"].is_string());
    assert_eq!(api.account(customer.id, FAX).await["state"], "to_migrate");

    // 7. Set aside with a reason, and back.
    let (status, _) = api
        .post(
            &format!("/customers/{}/board/ignore", customer.id),
            &json!({ "account": FAX, "reason": " " }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is needed"
    );
    let (status, fax) = api
        .post(
            &format!("/customers/{}/board/ignore", customer.id),
            &json!({ "account": FAX, "reason": "Faxserver wird im Januar abgeschaltet" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fax}");
    assert_eq!(fax["state"], "ignored");
    let (_, fax) = api
        .post(
            &format!("/customers/{}/board/reopen", customer.id),
            &json!({ "account": FAX }),
        )
        .await;
    assert_eq!(fax["state"], "to_migrate");

    // 8. The exposure list of the PowerShell snippet, through the CLI: a mailbox with
    // SMTP AUTH in effect (its own setting empty, the organisation's allows it) that
    // nothing uses.
    let dir = tempfile::tempdir().unwrap();
    let exposure = dir.path().join("smtp-auth-exposure.csv");
    std::fs::write(
        &exposure,
        "\u{feff}\"PrimarySmtpAddress\",\"SmtpClientAuthenticationDisabled\",\"OrganizationSmtpClientAuthenticationDisabled\",\"SmtpAuthEnabled\"\r\n\
\"info@praxisboard.example\",\"\",\"False\",\"True\"\r\n\
\"chefin@praxisboard.example\",\"True\",\"False\",\"False\"\r\n\
\"fax@praxisboard.example\",\"False\",\"False\",\"True\"\r\n",
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(mailbridge_binary())
            .args(args)
            .env("DATABASE_URL", database_url(&app.database).expose_secret())
            .env("RUST_LOG", "warn")
            .output()
            .expect("running mailbridge")
    };
    let output = cli(&[
        "report",
        "import",
        "--tenant",
        "Praxis Board",
        exposure.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["kind"], "exposure");
    assert_eq!(
        api.account(customer.id, "info@praxisboard.example").await["state"],
        "exposed_unused"
    );
    let fax = api.account(customer.id, FAX).await;
    assert_eq!(
        (fax["state"].as_str(), fax["smtp_auth_enabled"].as_bool()),
        (Some("to_migrate"), Some(true))
    );
    let contacts = dir.path().join("kontakte.csv");
    std::fs::write(&contacts, "Name,Phone\nA,1\n").unwrap();
    let output = cli(&[
        "report",
        "import",
        "--tenant",
        "Praxis Board",
        contacts.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not an SMTP AUTH clients report"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // 9. MSP-wide: the customer without data is most at risk, then this one.
    let (status, readiness) = api.get("/readiness?filter=at-risk").await;
    assert_eq!(status, StatusCode::OK, "{readiness}");
    let customers = readiness["customers"].as_array().unwrap();
    assert_eq!(customers[0]["tenant_name"], "Labor Anders");
    assert_eq!(customers[0]["no_data"], true);
    assert_eq!(customers[1]["tenant_name"], "Praxis Board");
    assert_eq!(customers[1]["to_migrate"], 1);
    assert_eq!(customers[1]["done"], 1);
    assert_eq!(customers[1]["exposed_unused"], 1);
    assert_eq!(readiness["deadlines"][0]["id"], "default-off");
    assert!(readiness["deadlines"][0]["days_left"].is_i64());
    let page = owner.get("/board").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text_of("deadlines-origin")
            .unwrap()
            .contains("microsoft-deadlines.toml")
    );
    assert!(page.body.contains("techcommunity.microsoft.com"));

    // 10. The CSV for the MSP's project tracking, page and API alike.
    let csv = owner.get("/board.csv").await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.body.starts_with("customer,account,state,"),
        "{}",
        csv.body
    );
    assert!(
        csv.body
            .contains(&format!("Praxis Board,{SCANNER},done,0,")),
        "{}",
        csv.body
    );
    let (status, api_csv) = api.get("/board.csv").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        api_csv
            .as_str()
            .unwrap()
            .contains(&format!("{FAX},to_migrate"))
    );

    // 11. Every change in the audit log.
    let actions = audit_actions(&app, customer.id).await;
    for action in [
        "board.import",
        "device.create",
        "board.link_device",
        "board.ignore",
        "board.reopen",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    assert_eq!(actions.iter().filter(|a| *a == "board.import").count(), 4);
}

/// How the last sign-in-log read of a customer went: (read at, error).
async fn sign_in_read(
    app: &TestApp,
    customer: TenantId,
) -> Option<(Option<chrono::DateTime<chrono::Utc>>, Option<String>)> {
    sqlx::query_as(
        "SELECT last_read_at, last_error FROM smtp_auth_signin_reads WHERE tenant_id = $1",
    )
    .bind(customer)
    .fetch_optional(app.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn the_sign_in_log_feeds_the_board_where_the_customer_grants_it() {
    use mailbridge_m365_sim::{
        ROLE_MAIL_SEND,
        sign_ins::{ROLE_AUDIT_LOG_READ, SimSignIn},
    };
    let app = TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), |s| {
        s.worker.sign_in_log_interval_seconds = 2;
    })
    .await;
    let directory = &app.stack.simulator.directory;
    let client_id = &app.stack.client_id;
    // Only Mail.Send: no permission to read the log.
    let plain = app.add_tenant("Praxis Ohne Recht").await.tenant;
    // The permission, but no Entra ID P1.
    let no_p1 = app.add_tenant("Praxis Ohne P1").await.tenant;
    directory.consent(
        no_p1.entra_tenant_id.unwrap().as_uuid(),
        client_id,
        &[ROLE_MAIL_SEND, ROLE_AUDIT_LOG_READ],
    );
    // Both: its log is read.
    let granted = app.add_tenant("Praxis Mit Log").await.tenant;
    let entra = granted.entra_tenant_id.unwrap();
    directory.consent(
        entra.as_uuid(),
        client_id,
        &[ROLE_MAIL_SEND, ROLE_AUDIT_LOG_READ],
    );
    directory.set_premium(entra.as_uuid(), true);
    let now = chrono::Utc::now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let scanner = "scanner@praxismitlog.example";
    let bulk = "kis@praxismitlog.example";
    let mut log = vec![
        SimSignIn::authenticated_smtp(scanner, "198.51.100.7", days(3)),
        SimSignIn::authenticated_smtp(scanner, "198.51.100.7", days(2)),
        // Older than the 30 days read.
        SimSignIn::authenticated_smtp("alt@praxismitlog.example", "198.51.100.9", days(40)),
    ];
    let mut browser =
        SimSignIn::authenticated_smtp("chefin@praxismitlog.example", "198.51.100.3", days(1));
    browser.client_app_used = "Browser".into();
    log.push(browser);
    // More than one page of Graph's 1,000.
    log.extend((0..1500).map(|i| {
        SimSignIn::authenticated_smtp(
            bulk,
            "198.51.100.20",
            days(1) + chrono::Duration::seconds(i),
        )
    }));
    directory.add_sign_ins(entra.as_uuid(), log);

    // Every connected customer is read; the refusals are recorded as Graph gave them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reads = (
            sign_in_read(&app, plain.id).await,
            sign_in_read(&app, no_p1.id).await,
            sign_in_read(&app, granted.id).await,
        );
        if let (Some((_, Some(a))), Some((_, Some(b))), Some((Some(_), None))) = &reads {
            assert!(
                a.contains("403") && a.contains("Authorization_RequestDenied"),
                "{a}"
            );
            assert!(
                b.contains("Authentication_RequestFromNonPremiumTenantOrB2CTenant"),
                "{b}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not read: {reads:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let accounts: Vec<(String, i64, Vec<String>, String)> = sqlx::query_as(
        "SELECT account, basic_messages, sources, state FROM smtp_auth_accounts WHERE tenant_id = $1 ORDER BY account",
    )
    .bind(granted.id)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        accounts,
        [
            (
                bulk.to_owned(),
                1500,
                vec!["198.51.100.20".to_owned()],
                "to_migrate".to_owned()
            ),
            (
                scanner.to_owned(),
                2,
                vec!["198.51.100.7".to_owned()],
                "to_migrate".to_owned()
            ),
        ],
        "only Authenticated SMTP of the last 30 days, every page"
    );

    // The scanner gets its relay device; its Basic logins all predate it, so the
    // next read moves it to done. The KIS keeps logging in with a password.
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let page = owner
        .post(
            &format!("/customers/{}/board/device", granted.id),
            &[("account", scanner)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<(String, String)> = sqlx::query_as(
            "SELECT account, state FROM smtp_auth_accounts WHERE tenant_id = $1 ORDER BY account",
        )
        .bind(granted.id)
        .fetch_all(app.pool())
        .await
        .unwrap();
        if states[1].1 == "done" {
            assert_eq!(states[0].1, "to_migrate");
            break;
        }
        assert!(Instant::now() < deadline, "never done: {states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let board = owner.get(&format!("/customers/{}/board", no_p1.id)).await;
    assert!(
        board
            .body
            .contains("Authentication_RequestFromNonPremiumTenantOrB2CTenant"),
        "the board says why"
    );
}
