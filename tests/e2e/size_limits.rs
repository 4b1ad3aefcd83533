//! Message size limits per customer, as Exchange Online has them per mailbox (35 MB
//! by default, up to 150 MB when raised): the edge advertises SIZE for what it may
//! accept, refuses a larger declared SIZE and larger data with `552 5.3.4` once it
//! knows the customer (after AUTH, or by address on port 25) and keeps what it had
//! already accepted; the simulator refuses a message over its mailbox's maximum
//! send size on Graph and on SMTP. Clients: Python smtplib, swaks, lettre and a bare
//! protocol probe.

use lettre::{AsyncTransport, address::Envelope};
use mailbridge_core::{
    devices::{self, DeviceListener, PolicyChange},
    queue,
    tenants::{self, DeliveryMethod},
};
use secrecy::ExposeSecret;

use crate::harness::{SmtpProbe, TestApp, TestTenant, database_url, mailbridge_binary};

/// 1 MB: the smallest limit Exchange lets an admin set, and quick to exceed.
const LIMIT: usize = 1024 * 1024;

/// A message of about `size` bytes from the customer's mailbox to `to`.
fn message_of(sender: &str, to: &str, subject: &str, size: usize) -> String {
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n";
    let body = line.repeat(size / line.len() + 1);
    format!("From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}")
}

/// Sets the customer's limit with the command line, as an operator does.
fn set_limit_by_cli(app: &TestApp, tenant: &TestTenant, size: &str) -> std::process::Output {
    std::process::Command::new(mailbridge_binary())
        .args(["tenant", "set", "--tenant", &tenant.tenant.name])
        .args(["--max-message-size", size])
        .env("DATABASE_URL", database_url(&app.database).expose_secret())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running mailbridge")
}

#[tokio::test]
async fn the_customers_limit_is_advertised_and_enforced_and_nothing_accepted_is_lost() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Groesse").await;
    let device = app.add_device(&tenant, "MFP Empfang").await;
    let sender = tenant.tenant.sender_mailbox.clone();

    // The default is Exchange's 35 MB; the command line bounds it at 150 MB.
    assert_eq!(tenant.tenant.max_message_bytes, 35 * 1024 * 1024);
    let too_big = set_limit_by_cli(&app, &tenant, "151MB");
    assert!(!too_big.status.success(), "151 MB was accepted");
    assert!(
        String::from_utf8_lossy(&too_big.stderr).contains("150 MB"),
        "{}",
        String::from_utf8_lossy(&too_big.stderr)
    );
    let set = set_limit_by_cli(&app, &tenant, "1MB");
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(shown["max_message_bytes"], LIMIT);

    // Python smtplib: before AUTH the listener's ceiling (150 MB), after it the
    // customer's; a declared SIZE over it and data over it get 552 5.3.4, and the
    // session goes on: the messages before and after are delivered.
    let script = r#"
import json, smtplib, ssl, sys
host, port, ca, user, password, sender, small, big = sys.argv[1:]
small, big = open(small, "rb").read(), open(big, "rb").read()
out = {}
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
with smtplib.SMTP(host, int(port), local_hostname="mfp.praxis.test", timeout=60) as smtp:
    smtp.starttls(context=context)
    smtp.ehlo()
    out["size_before_auth"] = smtp.esmtp_features.get("size")
    smtp.login(user, password)
    smtp.ehlo()
    out["size_after_auth"] = smtp.esmtp_features.get("size")
    smtp.sendmail(sender, ["vorher@klinik.example"], small)
    out["declared"] = list(smtp.mail(sender, ["SIZE=%d" % (len(big) + 10)]))
    smtp.rset()
    # smtplib's sendmail declares SIZE itself (refused as above); without it, the
    # data is refused once it passes the limit.
    smtp.mail(sender)
    smtp.rcpt("gross@klinik.example")
    out["data"] = list(smtp.data(big))
    try:
        smtp.sendmail(sender, ["gross@klinik.example"], big)
        out["sendmail"] = [250, "accepted"]
    except smtplib.SMTPSenderRefused as e:
        out["sendmail"] = [e.smtp_code, e.smtp_error.decode()]
    smtp.sendmail(sender, ["nachher@klinik.example"], small)
    out["after"] = "sent"
for key, value in out.items():
    if isinstance(value, list) and isinstance(value[1], bytes):
        out[key] = [value[0], value[1].decode()]
print(json.dumps(out))
"#;
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.eml");
    let big = dir.path().join("big.eml");
    std::fs::write(
        &small,
        message_of(&sender, "x@klinik.example", "klein", 2000),
    )
    .unwrap();
    std::fs::write(
        &big,
        message_of(&sender, "gross@klinik.example", "gross", LIMIT + 4096),
    )
    .unwrap();
    let output = tokio::process::Command::new("python3")
        .args(["-c", script, "127.0.0.1"])
        .arg(app.stack.smtp_addr.port().to_string())
        .arg(&app.stack.edge_ca_file)
        .args([&device.device.username, &device.password, &sender])
        .args([&small, &big])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out["size_before_auth"], "157286400", "{out}");
    assert_eq!(out["size_after_auth"], LIMIT.to_string(), "{out}");
    assert_eq!(out["declared"][0], 552, "{out}");
    assert!(
        out["declared"][1].as_str().unwrap().starts_with("5.3.4"),
        "{out}"
    );
    assert_eq!(out["data"][0], 552, "{out}");
    assert!(
        out["data"][1].as_str().unwrap().starts_with("5.3.4"),
        "{out}"
    );
    assert_eq!(out["sendmail"][0], 552, "{out}");
    assert_eq!(out["after"], "sent");
    app.wait_for_inbox("vorher@klinik.example", 1).await;
    app.wait_for_inbox("nachher@klinik.example", 1).await;

    // lettre: the large message is refused permanently, a small one goes.
    let transport = app.lettre(&device.device.username, &device.password);
    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["lettre@klinik.example".parse().unwrap()],
    )
    .unwrap();
    let error = transport
        .send_raw(
            &envelope,
            message_of(&sender, "lettre@klinik.example", "gross", LIMIT + 1).as_bytes(),
        )
        .await
        .expect_err("over the customer's limit");
    assert!(error.is_permanent(), "{error}");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("552")
    );
    transport
        .send_raw(
            &envelope,
            message_of(&sender, "lettre@klinik.example", "klein", 1000).as_bytes(),
        )
        .await
        .expect("under the limit");

    // swaks: the oversized body is refused with 552 5.3.4.
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "x".repeat(LIMIT + 100)).unwrap();
    let swaks = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port"])
        .arg(app.stack.smtp_addr.port().to_string())
        .args(["--tls", "--tls-verify", "--tls-ca-path"])
        .arg(&app.stack.edge_ca_file)
        .args(["--auth", "PLAIN", "--auth-user", &device.device.username])
        .args(["--auth-password", &device.password])
        .args(["--from", &sender, "--to", "swaks@klinik.example"])
        .args(["--header", &format!("From: {sender}")])
        .arg("--body")
        .arg(&body)
        .output()
        .await
        .expect("running swaks");
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    let tail = &transcript[transcript.len().saturating_sub(600)..];
    assert!(!swaks.status.success(), "{tail}");
    // Inside TLS swaks marks an error reply `<~*`.
    assert!(transcript.contains("<~* 552 5.3.4"), "{tail}");

    // Nothing over the limit was queued: three small messages, no large one.
    let sizes: Vec<i64> =
        sqlx::query_scalar("SELECT size_bytes::bigint FROM messages WHERE tenant_id = $1")
            .bind(tenant.tenant.id)
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|s| (*s as usize) < LIMIT), "{sizes:?}");
}

#[tokio::test]
async fn on_port_25_the_device_known_by_its_address_gets_its_customers_limit() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Relay Groesse").await;
    tenants::set_max_message_size(app.pool(), tenant.tenant.id, LIMIT as i64)
        .await
        .unwrap();
    let device = app.add_device(&tenant, "EKG").await;
    devices::change_policy(
        app.pool(),
        device.device.id,
        PolicyChange {
            allowed_networks: Some(vec!["127.0.0.1/32".parse().unwrap()]),
            listener: Some(DeviceListener::Relay),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sender = tenant.tenant.sender_mailbox.clone();
    let (mut smtp, _) = SmtpProbe::connect(app.stack.relay_addr.unwrap()).await;
    let ehlo = smtp.expect("EHLO ekg.praxis.test", "250").await;
    assert!(ehlo.contains(&format!("SIZE {LIMIT}")), "{ehlo}");
    smtp.expect(
        &format!("MAIL FROM:<{sender}> SIZE={}", LIMIT + 1),
        "552 5.3.4",
    )
    .await;
    smtp.expect(&format!("MAIL FROM:<{sender}> SIZE={LIMIT}"), "250")
        .await;
    smtp.expect("RCPT TO:<relay@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    let big = message_of(&sender, "relay@klinik.example", "gross", LIMIT + 10);
    smtp.send_raw(format!("{big}.\r\n").as_bytes()).await;
    smtp.expect_reply("552 5.3.4").await;
    // The session goes on; what fits is delivered.
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<relay@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    let small = message_of(&sender, "relay@klinik.example", "klein", 500);
    smtp.send_raw(format!("{small}.\r\n").as_bytes()).await;
    smtp.expect_reply("250").await;
    let inbox = app.wait_for_inbox("relay@klinik.example", 1).await;
    assert_eq!(inbox[0].subject.as_deref(), Some("klein"));
    // A raised limit reaches the edge at once (no restart, no stale cache).
    tenants::set_max_message_size(app.pool(), tenant.tenant.id, 150 * 1024 * 1024)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (mut probe, _) = SmtpProbe::connect(app.stack.relay_addr.unwrap()).await;
        let ehlo = probe.expect("EHLO ekg.praxis.test", "250").await;
        if ehlo.contains("SIZE 157286400") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ehlo}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn microsoft_refuses_a_message_over_the_mailboxs_send_size_on_graph_and_smtp() {
    let app = TestApp::spawn().await;
    for (name, method, code) in [
        (
            "Praxis Graph Groesse",
            DeliveryMethod::Graph,
            "ErrorMessageSizeExceeded",
        ),
        ("Praxis SMTP Groesse", DeliveryMethod::Smtp, "5.3.4"),
    ] {
        let tenant = app.add_tenant_delivering(name, method).await;
        let sender = tenant.tenant.sender_mailbox.clone();
        // mailbridge allows the default 35 MB, but the mailbox's admin lowered its
        // maximum send size in Exchange to 1 MB.
        app.stack
            .simulator
            .directory
            .set_max_send_size(&sender, LIMIT)
            .unwrap();
        let device = app.add_device(&tenant, "Scanner").await;
        let envelope = Envelope::new(
            Some(sender.parse().unwrap()),
            vec!["empfang@klinik.example".parse().unwrap()],
        )
        .unwrap();
        app.lettre(&device.device.username, &device.password)
            .send_raw(
                &envelope,
                message_of(&sender, "empfang@klinik.example", name, 2 * LIMIT).as_bytes(),
            )
            .await
            .expect("the edge takes what the customer's limit allows");
        let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM messages WHERE tenant_id = $1")
            .bind(tenant.tenant.id)
            .fetch_one(app.pool())
            .await
            .unwrap();
        app.wait_for_message(id.into(), |s| s.state.as_str() == "failed")
            .await;
        let attempts = queue::attempts(app.pool(), id.into()).await.unwrap();
        assert_eq!(attempts.len(), 1, "permanent: not retried");
        assert_eq!(
            attempts[0].diagnosis.as_deref(),
            Some("RequestBodyTooLarge"),
            "{attempts:?}"
        );
        assert!(
            attempts[0]
                .upstream_code
                .as_deref()
                .is_some_and(|c| c.contains(code))
                || attempts[0]
                    .upstream_message
                    .as_deref()
                    .is_some_and(|m| m.contains(code)),
            "{attempts:?}"
        );
    }
    assert!(
        app.stack
            .simulator
            .directory
            .inbox("empfang@klinik.example")
            .is_empty()
    );
}

#[tokio::test]
async fn the_customers_page_shows_and_changes_the_limit_within_exchanges_bounds() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Einstellungen").await;
    let id = tenant.tenant.id;
    let mut owner =
        crate::staff_client::StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner")
            .await;
    let page = owner.get(&format!("/customers/{id}")).await;
    assert!(
        page.body
            .contains(r#"id="settings-max-message-size" inputmode="numeric" value="35""#),
        "{}",
        page.body
    );
    let form = |mb: &'static str| {
        [
            ("name", "Praxis Einstellungen"),
            ("sender_mailbox", tenant.tenant.sender_mailbox.as_str()),
            ("max_message_size_mb", mb),
        ]
    };
    let refused = owner.post(&format!("/customers/{id}"), &form("151")).await;
    assert_eq!(refused.status, reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("1 to 150 MB"), "{}", refused.body);
    let saved = owner.post(&format!("/customers/{id}"), &form("50")).await;
    assert_eq!(
        saved.status,
        reqwest::StatusCode::SEE_OTHER,
        "{}",
        saved.body
    );
    let stored = tenants::get(app.pool(), id).await.unwrap().unwrap();
    assert_eq!(stored.max_message_bytes, 50 * 1024 * 1024);
    let audited: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'customer.update' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(
        audited["max_message_bytes"],
        serde_json::json!([35 * 1024 * 1024, 50 * 1024 * 1024])
    );
}
