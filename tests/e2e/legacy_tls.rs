//! Old printers as they are: the legacy-TLS listener (OpenSSL, TLS 1.0 and CBC
//! suites) for devices allowed legacy TLS, tried with a real TLS 1.0-only client
//! (Python's `ssl` at OpenSSL security level 0), and the session transcripts with
//! their diagnosis through the API and on the device page — with no secret in them.

use std::{net::SocketAddr, time::Duration};

use mailbridge_core::devices::{self, IssuedCredential, PolicyChange};
use reqwest::StatusCode;
use serde_json::Value;

use crate::{harness::TestApp, staff_client::StaffClient};

/// A TLS 1.0-only SMTP client: connects, (STARTTLS,) logs in with LOGIN, sends one
/// message; prints one JSON line with what happened.
const TLS10_CLIENT: &str = r#"
import json, smtplib, ssl, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
host, port, mode, ca, user, password, sender, rcpt = sys.argv[1:9]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = ssl.TLSVersion.TLSv1
out = {"stage": "connect"}
try:
    if mode == "implicit":
        s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=20)
    else:
        s = smtplib.SMTP(host, int(port), timeout=20)
        s.ehlo("printer.local")
        out["stage"] = "starttls"
        s.starttls(context=ctx)
    out["version"] = s.sock.version()
    out["cipher"] = s.sock.cipher()[0]
    out["stage"] = "auth"
    s.ehlo("printer.local")
    s.login(user, password)
    out["stage"] = "send"
    s.sendmail(sender, [rcpt], "From: %s\r\nTo: %s\r\nSubject: legacy\r\n\r\nscan\r\n" % (sender, rcpt))
    out["stage"] = "sent"
    s.quit()
except smtplib.SMTPResponseException as e:
    out["code"] = e.smtp_code
    out["error"] = e.smtp_error.decode("utf-8", "replace")
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
"#;

pub(crate) struct Tls10Attempt<'a> {
    pub addr: SocketAddr,
    pub implicit: bool,
    pub device: &'a IssuedCredential,
    pub password: Option<&'a str>,
    pub sender: &'a str,
}

pub(crate) async fn tls10(app: &TestApp, attempt: Tls10Attempt<'_>) -> Value {
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(TLS10_CLIENT)
        .arg(attempt.addr.ip().to_string())
        .arg(attempt.addr.port().to_string())
        .arg(if attempt.implicit {
            "implicit"
        } else {
            "starttls"
        })
        .arg(&app.stack.edge_ca_file)
        .arg(&attempt.device.device.username)
        .arg(attempt.password.unwrap_or(&attempt.device.password))
        .arg(attempt.sender)
        .arg("empfang@praxis-alt.example")
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the client printed no result: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

pub(crate) async fn legacy_app() -> TestApp {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    TestApp::spawn_configured(mailbridge::stack::StackOptions::ephemeral(), move |s| {
        s.edge.legacy_submission_listen = Some(any);
        s.edge.legacy_submissions_listen = Some(any);
    })
    .await
}

/// Waits until the device's transcripts (API) satisfy `done`.
async fn transcripts_until(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = http.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "transcripts never showed it: {answer:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_tls10_printer_gets_in_only_on_the_legacy_listener_and_only_if_allowed() {
    let app = legacy_app().await;
    let tenant = app.add_tenant("Praxis Alt").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let old = app.add_device(&tenant, "Ricoh MP C307").await;
    devices::change_policy(
        app.pool(),
        old.device.id,
        PolicyChange {
            legacy_tls: Some(true),
            ..PolicyChange::default()
        },
    )
    .await
    .unwrap();
    let modern = app.add_device(&tenant, "Neuer Scanner").await;
    let settings = &app.stack.settings.edge;
    let legacy_starttls = settings.legacy_submission_listen.expect("bound");
    let legacy_implicit = settings.legacy_submissions_listen.expect("bound");

    // The normal listeners refuse TLS 1.0 at the handshake.
    for (addr, implicit) in [
        (app.stack.smtp_addr, false),
        (app.stack.smtps_addr.unwrap(), true),
    ] {
        let refused = tls10(
            &app,
            Tls10Attempt {
                addr,
                implicit,
                device: &old,
                password: None,
                sender: &sender,
            },
        )
        .await;
        let stage = if implicit { "connect" } else { "starttls" };
        assert_eq!(refused["stage"], stage, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("SSL"),
            "a TLS error: {refused}"
        );
    }

    // The legacy listener takes it, with STARTTLS and with implicit TLS.
    for (addr, implicit) in [(legacy_starttls, false), (legacy_implicit, true)] {
        let sent = tls10(
            &app,
            Tls10Attempt {
                addr,
                implicit,
                device: &old,
                password: None,
                sender: &sender,
            },
        )
        .await;
        assert_eq!(sent["stage"], "sent", "{sent}");
        assert_eq!(sent["version"], "TLSv1");
    }
    let inbox = app.wait_for_inbox("empfang@praxis-alt.example", 2).await;
    assert_eq!(inbox.len(), 2);
    // Every message records what it came over.
    let recorded: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT tls_protocol, tls_cipher FROM messages WHERE device_id = $1")
            .bind(old.device.id)
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(recorded.len(), 2);
    for (protocol, cipher) in &recorded {
        assert_eq!(protocol.as_deref(), Some("TLSv1.0"));
        let cipher = cipher.as_deref().unwrap();
        assert!(
            cipher.starts_with("TLS_") && cipher.contains("_CBC_"),
            "the IANA name of a CBC suite: {cipher}"
        );
    }

    // A device not allowed legacy TLS is refused after the handshake, in words.
    let refused = tls10(
        &app,
        Tls10Attempt {
            addr: legacy_starttls,
            implicit: false,
            device: &modern,
            password: None,
            sender: &sender,
        },
    )
    .await;
    assert_eq!(refused["stage"], "auth", "{refused}");
    assert_eq!(refused["code"], 530, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not allowed legacy TLS"),
        "{refused}"
    );
    // ... but a wrong password on the legacy listener stays a wrong password.
    let wrong = tls10(
        &app,
        Tls10Attempt {
            addr: legacy_implicit,
            implicit: true,
            device: &old,
            password: Some("not-the-password"),
            sender: &sender,
        },
    )
    .await;
    assert_eq!(wrong["code"], 535, "{wrong}");

    // Handshakes are counted by listener and protocol version.
    let metrics = reqwest::get(format!("http://{}/metrics", app.stack.ops_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "mailbridge_edge_tls_handshakes_total{listener=\"legacy-submission\",protocol=\"TLSv1.0\"}",
        "mailbridge_edge_tls_handshakes_total{listener=\"legacy-submissions\",protocol=\"TLSv1.0\"}",
        "mailbridge_edge_tls_handshakes_total{listener=\"submission\",protocol=\"failed\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} in the metrics");
    }
}

#[tokio::test]
async fn transcripts_show_a_failed_handshake_and_a_wrong_password_without_secrets() {
    let app = legacy_app().await;
    let tenant = app.add_tenant("Praxis Protokoll").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let printer = app.add_device(&tenant, "Xerox WorkCentre").await;
    // The site's network: sessions from it that never named a device show on the page.
    devices::change_policy(
        app.pool(),
        printer.device.id,
        PolicyChange {
            allowed_networks: Some(vec!["127.0.0.0/8".parse().unwrap()]),
            ..PolicyChange::default()
        },
    )
    .await
    .unwrap();

    // 1. The printer speaks only TLS 1.0 and tries the normal port.
    let refused = tls10(
        &app,
        Tls10Attempt {
            addr: app.stack.smtp_addr,
            implicit: false,
            device: &printer,
            password: None,
            sender: &sender,
        },
    )
    .await;
    assert_eq!(refused["stage"], "starttls", "{refused}");
    // 2. Someone types the password wrong (over modern TLS).
    let wrong_password = "Falsch-Passwort-123";
    let mailer = app.lettre(&printer.device.username, wrong_password);
    use lettre::AsyncTransport;
    let message = lettre::Message::builder()
        .from(sender.parse().unwrap())
        .to("empfang@praxis-protokoll.example".parse().unwrap())
        .subject("scan")
        .body("scan".to_owned())
        .unwrap();
    let failed = mailer.send(message).await;
    assert!(failed.is_err(), "a wrong password is refused");
    drop(mailer);

    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let token_page = owner
        .post("/api-tokens", &[("name", "RMM"), ("role", "technician")])
        .await;
    let token = token_page.text_of("api-token").expect("token");
    let url = format!(
        "http://{}/api/v1/customers/{}/devices/{}/transcripts",
        app.stack.web_addr, tenant.tenant.id, printer.device.id
    );
    let http = reqwest::Client::new();
    let answer = transcripts_until(&http, &url, &token, |a| {
        let keys: Vec<&str> = a["diagnosis"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["key"].as_str())
            .collect();
        keys.contains(&"tls_too_old") && keys.contains(&"wrong_password")
    })
    .await;
    let transcripts = answer["transcripts"].as_array().unwrap();
    let handshake = transcripts
        .iter()
        .find(|t| t["tls_failure"].is_string())
        .expect("the failed handshake");
    assert_eq!(
        handshake["device_id"],
        Value::Null,
        "it never named a device"
    );
    assert_eq!(handshake["source_addr"], "127.0.0.1/32");
    assert_eq!(handshake["outcome"], "tls_failed");
    assert!(
        handshake["tls_failure"]
            .as_str()
            .unwrap()
            .contains("offered at most TLS 1.0"),
        "{handshake}"
    );
    let commands: Vec<&str> = handshake["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["EHLO", "STARTTLS"], "{handshake}");
    let login = transcripts
        .iter()
        .find(|t| t["device_id"] == printer.device.id.to_string())
        .expect("the session with the wrong password, under the device");
    let replies: Vec<&str> = login["lines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["replies"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert!(replies.contains(&"535 5.7.8"), "{login}");
    let diagnosis: Vec<&str> = answer["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(
        diagnosis
            .iter()
            .any(|t| t.contains("the device offers only TLS 1.0 — use the legacy-TLS listener")),
        "{diagnosis:?}"
    );
    assert!(
        diagnosis
            .iter()
            .any(|t| t.starts_with("Wrong password once since")),
        "{diagnosis:?}"
    );
    // No secret anywhere: not the password, not its base64, not the AUTH data.
    use base64::Engine;
    let raw = answer.to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [
        wrong_password.to_owned(),
        b64.encode(wrong_password),
        b64.encode(format!("\0{}\0{wrong_password}", printer.device.username)),
        b64.encode(&printer.device.username),
        printer.password.clone(),
    ] {
        assert!(!raw.contains(&secret), "{secret:?} is in the transcript");
    }
    // Also in the table itself.
    let stored: String =
        sqlx::query_scalar("SELECT string_agg(lines::text, ' ') FROM session_transcripts")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert!(!stored.contains(wrong_password) && !stored.contains(&b64.encode(wrong_password)));

    // A read-only member may not read transcripts (they are about a site's network).
    let readonly_page = owner
        .post("/api-tokens", &[("name", "Dash"), ("role", "readonly")])
        .await;
    let readonly = readonly_page.text_of("api-token").expect("token");
    let response = http.get(&url).bearer_auth(&readonly).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The device page shows both, with the diagnosis (a technician's view).
    let mut technician =
        StaffClient::sign_in_as(&app, "tim.technik@msp.example", "technician").await;
    let page = technician
        .get(&format!(
            "/customers/{}/devices/{}",
            tenant.tenant.id, printer.device.id
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let diagnosis = page.text_of("diagnosis").expect("the diagnosis");
    assert!(diagnosis.contains("offers only TLS 1.0"), "{diagnosis}");
    assert!(
        diagnosis.contains("Wrong password once since"),
        "{diagnosis}"
    );
    let list = page.text_of("transcript-list").expect("the sessions");
    assert!(list.contains("handshake failed"), "{list}");
    assert!(list.contains("535 5.7.8"), "{list}");
    assert!(!page.body.contains(wrong_password));
    let mut reader = StaffClient::sign_in_as(&app, "lea.lesen@msp.example", "readonly").await;
    let page = reader
        .get(&format!(
            "/customers/{}/devices/{}",
            tenant.tenant.id, printer.device.id
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text_of("transcripts").is_none(), "not for read-only");
}

#[tokio::test]
async fn a_technician_picks_the_model_and_allows_legacy_tls_and_the_card_follows() {
    let app = legacy_app().await;
    let tenant = app.add_tenant("Praxis Modell").await;
    let printer = app.add_device(&tenant, "Empfang 5845").await;
    let mut technician =
        StaffClient::sign_in_as(&app, "tim.technik@msp.example", "technician").await;
    let device_page = format!(
        "/customers/{}/devices/{}",
        tenant.tenant.id, printer.device.id
    );
    let saved = technician
        .post(
            &device_page,
            &[
                ("model_family", "xerox-workcentre-58xx"),
                ("legacy_tls", "on"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let page = technician.get(&device_page).await;
    let note = page.text_of("model-note").expect("the model note");
    assert!(
        note.contains("WorkCentre 5845") && note.contains("TLS 1.0"),
        "{note}"
    );
    assert!(note.contains("needs the legacy-TLS listener"), "{note}");
    assert!(page.text_of("legacy-tls-badge").is_some());
    let card = technician.get(&format!("{device_page}/setup")).await;
    let legacy_port = app
        .stack
        .settings
        .edge
        .legacy_submission_listen
        .unwrap()
        .port()
        .to_string();
    assert_eq!(card.text_of("setup-port").unwrap(), legacy_port);
    assert!(card.text_of("setup-legacy").is_some());
    assert!(
        card.text_of("model-note")
            .unwrap()
            .contains("manualslib.com")
    );

    // An unknown family is refused; unticking the box takes legacy TLS back.
    let refused = technician
        .post(&device_page, &[("model_family", "made-up-printer")])
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let saved = technician
        .post(&device_page, &[("model_family", "xerox-workcentre-58xx")])
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let device = devices::get(app.pool(), printer.device.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!device.legacy_tls);
    assert_eq!(
        device.model_family.as_deref(),
        Some("xerox-workcentre-58xx")
    );
    let card = technician.get(&format!("{device_page}/setup")).await;
    assert_eq!(
        card.text_of("setup-port").unwrap(),
        app.stack.smtp_addr.port().to_string()
    );
    // Both changes are in the audit log.
    let changes: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT details->'legacy_tls' FROM audit_log WHERE action = 'device.update' ORDER BY at",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        changes,
        [
            serde_json::json!([false, true]),
            serde_json::json!([true, false])
        ]
    );
}
