//! Devices submitting mail through the edge: real clients, real TLS.

use crate::harness::{SmtpProbe, TestApp, sample_message, without_final_crlf};
use lettre::{AsyncTransport, address::Envelope};

#[tokio::test]
async fn lettre_with_starttls_and_auth_plain_reaches_the_mailbox_unchanged() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Lettre").await;
    let device = app.add_device(&tenant, "Scanner Empfang").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "arzt@klinik.example", "Befund via lettre");

    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["arzt@klinik.example".parse().unwrap()],
    )
    .unwrap();
    let response = app
        .lettre(&device.device.username, &device.password)
        .send_raw(&envelope, without_final_crlf(&message))
        .await
        .expect("lettre sends");
    assert_eq!(response.code().to_string(), "250");

    let inbox = app.wait_for_inbox("arzt@klinik.example", 1).await;
    assert_eq!(inbox[0].mailbox, sender);
    assert_eq!(inbox[0].via, "graph");
    assert!(
        inbox[0]
            .mime
            .starts_with("Received: from printer.praxis.test"),
        "{}",
        inbox[0].mime
    );
    assert!(
        inbox[0].mime.ends_with(&message),
        "body changed:\n{}",
        inbox[0].mime
    );
}

#[tokio::test]
async fn python_smtplib_with_starttls_and_auth_login_reaches_the_mailbox_unchanged() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Python").await;
    let device = app.add_device(&tenant, "Labor").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "labor@klinik.example", "Befund via smtplib");
    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("message.eml");
    std::fs::write(&eml, &message).unwrap();

    let script = r#"
import smtplib, ssl, sys
host, port, ca, user, password, sender, rcpt, path = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
with smtplib.SMTP(host, int(port), local_hostname="labor.praxis.test", timeout=30) as smtp:
    smtp.ehlo()
    smtp.starttls(context=context)
    smtp.ehlo()
    assert "LOGIN" in smtp.esmtp_features["auth"].split(), smtp.esmtp_features
    smtp.user, smtp.password = user, password
    code, text = smtp.auth("LOGIN", smtp.auth_login)
    assert code == 235, (code, text)
    refused = smtp.sendmail(sender, [rcpt], open(path, "rb").read())
    assert not refused, refused
print("sent")
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg("127.0.0.1")
        .arg(app.stack.smtp_addr.port().to_string())
        .arg(&app.stack.edge_ca_file)
        .arg(&device.device.username)
        .arg(&device.password)
        .arg(&sender)
        .arg("labor@klinik.example")
        .arg(&eml)
        .output()
        .await
        .expect("running python3");
    assert!(
        output.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let inbox = app.wait_for_inbox("labor@klinik.example", 1).await;
    assert!(
        inbox[0].mime.ends_with(&message),
        "body changed:\n{}",
        inbox[0].mime
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_535_and_nothing_is_queued() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Falsch").await;
    let device = app.add_device(&tenant, "Drucker").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["x@klinik.example".parse().unwrap()],
    )
    .unwrap();

    let error = app
        .lettre(&device.device.username, "not-the-password")
        .send_raw(
            &envelope,
            sample_message(&sender, "x@klinik.example", "nope").as_bytes(),
        )
        .await
        .expect_err("a wrong password must be refused");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("535"),
        "{error}"
    );

    let error = app
        .lettre("no-such-device", &device.password)
        .send_raw(&envelope, b"Subject: x\r\n\r\nx\r\n")
        .await
        .expect_err("an unknown user must be refused");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("535"),
        "{error}"
    );
    assert!(app.message_ids().await.is_empty(), "nothing may be queued");
}

#[tokio::test]
async fn auth_is_offered_only_after_starttls_and_mail_needs_auth() {
    let app = TestApp::spawn().await;
    let (mut smtp, greeting) = SmtpProbe::connect(app.stack.smtp_addr).await;
    assert!(
        greeting.starts_with("220 relay.mailbridge.test "),
        "{greeting}"
    );
    let ehlo = smtp.command("EHLO printer.praxis.test").await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("AUTH"), "AUTH offered before TLS:\n{ehlo}");
    assert!(
        ehlo.contains("ENHANCEDSTATUSCODES") && ehlo.contains("PIPELINING"),
        "{ehlo}"
    );

    smtp.expect("AUTH PLAIN AGZvbwBiYXI=", "538 5.7.11").await;
    smtp.expect("MAIL FROM:<scanner@praxis.example>", "530 5.7.0")
        .await;
    smtp.expect("RCPT TO:<arzt@klinik.example>", "503 5.5.1")
        .await;
    smtp.expect("NOOP", "250 2.0.0").await;
    smtp.expect("QUIT", "221 2.0.0").await;
    assert!(app.message_ids().await.is_empty());
}

/// The edge answers logins from its cache of credentials; a change committed in
/// PostgreSQL (here: by the control plane's functions, as from the browser) empties
/// it, so an old password or a disabled device stops working at once.
#[tokio::test]
async fn a_rotated_password_or_disabled_device_is_refused_despite_the_edges_cache() {
    use mailbridge_core::devices;
    use std::time::{Duration, Instant};
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Wechsel").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let envelope = Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["empfang@klinik.example".parse().unwrap()],
    )
    .unwrap();
    let send = |password: String| {
        let (app, envelope) = (&app, envelope.clone());
        let username = device.device.username.clone();
        async move {
            app.lettre(&username, &password)
                .send_raw(&envelope, b"Subject: Wechsel\r\n\r\nx")
                .await
                .map(|r| r.code().to_string())
                .unwrap_or_else(|e| e.status().map(|c| c.to_string()).unwrap_or_default())
        }
    };
    // Twice, so that the second login is answered from the cache.
    for _ in 0..2 {
        assert_eq!(send(device.password.clone()).await, "250");
    }
    let refused_soon = |password: String| {
        let send = &send;
        async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                if send(password.clone()).await == "535" {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let rotated = devices::rotate_password(app.pool(), device.device.id)
        .await
        .unwrap();
    assert!(
        refused_soon(device.password.clone()).await,
        "the old password is refused after the rotation"
    );
    assert_eq!(send(rotated.password.clone()).await, "250");
    devices::change_policy(
        app.pool(),
        device.device.id,
        devices::PolicyChange {
            enabled: Some(false),
            ..devices::PolicyChange::default()
        },
    )
    .await
    .unwrap();
    assert!(
        refused_soon(rotated.password.clone()).await,
        "a disabled device is refused"
    );
}
