//! The SMTP edge against real clients (swaks, curl, Python smtplib, lettre) and a
//! bare protocol probe: every listener, extension, limit, refusal and policy.

use std::time::Duration;

use mailbridge::stack::StackOptions;
use mailbridge_core::{
    config::{BareNewlinePolicy, Networks},
    devices::{self, DeviceListener, PolicyChange, SenderPolicy},
    queue,
};

use crate::harness::{SmtpProbe, TestApp, TestTenant, sample_message};

/// A stack where 127.0.0.0/8 may AUTH without TLS, so the probe can speak SMTP in
/// clear. Without a worker, so that queued bodies stay to be looked at.
async fn plaintext_app(configure: impl FnOnce(&mut mailbridge_core::Settings)) -> TestApp {
    let options = StackOptions {
        start_worker: false,
        ..StackOptions::ephemeral()
    };
    TestApp::spawn_configured(options, |s| {
        s.edge.plaintext_auth_networks = "127.0.0.0/8".parse::<Networks>().unwrap();
        configure(s);
    })
    .await
}

/// A probe that is logged in as a fresh device of a fresh tenant.
async fn logged_in(app: &TestApp, tenant_name: &str) -> (SmtpProbe, TestTenant) {
    let tenant = app.add_tenant(tenant_name).await;
    let device = app.add_device(&tenant, "Probe").await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.expect("EHLO probe.praxis.test", "250").await;
    let auth = smtp.login(&device.device.username, &device.password).await;
    assert!(auth.starts_with("235 2.7.0"), "{auth}");
    (smtp, tenant)
}

async fn queued_bodies(app: &TestApp) -> Vec<String> {
    let mut bodies = Vec::new();
    for id in app.message_ids().await {
        let body = queue::body(app.pool(), app.master_key(), id)
            .await
            .unwrap()
            .unwrap_or_default();
        bodies.push(String::from_utf8_lossy(&body).into_owned());
    }
    bodies
}

#[tokio::test]
async fn swaks_sends_with_starttls_and_with_implicit_tls() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Swaks").await;
    let device = app.add_device(&tenant, "MFP").await;
    let sender = &tenant.tenant.sender_mailbox;
    for (port, tls_flag, auth, rcpt) in [
        (
            app.stack.smtp_addr.port(),
            "--tls",
            "PLAIN",
            "starttls@klinik.example",
        ),
        (
            app.stack.smtps_addr.unwrap().port(),
            "--tlsc",
            "LOGIN",
            "implicit@klinik.example",
        ),
    ] {
        let output = tokio::process::Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                tls_flag,
            ])
            .args(["--tls-verify", "--tls-ca-path"])
            .arg(&app.stack.edge_ca_file)
            .args([
                "--auth",
                auth,
                "--auth-user",
                &device.device.username,
                "--auth-password",
                &device.password,
            ])
            .args([
                "--from",
                sender,
                "--to",
                rcpt,
                "--header",
                &format!("From: {sender}"),
            ])
            .args(["--ehlo", "swaks.praxis.test", "--body", "Scan attached"])
            .output()
            .await
            .expect("running swaks");
        let transcript = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "swaks {tls_flag} failed:\n{transcript}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            transcript.contains("<~  250 2.0.0 OK queued as"),
            "{transcript}"
        );
        app.wait_for_inbox(rcpt, 1).await;
    }
}

#[tokio::test]
async fn curl_sends_over_implicit_tls() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Curl").await;
    let device = app.add_device(&tenant, "Skript").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "curl@klinik.example", "via curl smtps");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.eml"), &message).unwrap();
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--url",
            &format!("smtps://127.0.0.1:{}", app.stack.smtps_addr.unwrap().port()),
        ])
        .arg("--cacert")
        .arg(&app.stack.edge_ca_file)
        .args([
            "--user",
            &format!("{}:{}", device.device.username, device.password),
        ])
        .args([
            "--mail-from",
            &sender,
            "--mail-rcpt",
            "curl@klinik.example",
            "--upload-file",
        ])
        .arg(dir.path().join("m.eml"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inbox = app.wait_for_inbox("curl@klinik.example", 1).await;
    assert!(inbox[0].mime.ends_with(&message));
}

#[tokio::test]
async fn a_whole_pipelined_transaction_in_one_write_is_answered_in_order() {
    let app = plaintext_app(|_| {}).await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Pipeline").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "a@klinik.example", "pipelined");
    let stuffed = message.replace("\r\n.", "\r\n..");
    let batch = format!(
        "MAIL FROM:<{sender}>\r\nRCPT TO:<a@klinik.example>\r\nRCPT TO:<b@klinik.example>\r\nDATA\r\n{stuffed}.\r\nNOOP\r\nQUIT\r\n"
    );
    smtp.send_raw(batch.as_bytes()).await;
    let replies = smtp.replies(7).await;
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(
        codes,
        ["250", "250", "250", "354", "250", "250", "221"],
        "{replies:?}"
    );
    assert!(replies[4].starts_with("250 2.0.0 OK queued as "));
    let bodies = queued_bodies(&app).await;
    assert_eq!(bodies.len(), 1);
    assert!(
        bodies[0].ends_with(&message),
        "dot-unstuffing lost data: {}",
        bodies[0]
    );
}

#[tokio::test]
async fn ehlo_lists_the_extensions_and_simple_commands_answer_with_enhanced_codes() {
    let app = TestApp::spawn().await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    let ehlo = smtp.command("EHLO probe.praxis.test").await;
    for extension in [
        "SIZE 157286400",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(extension), "{extension} missing:\n{ehlo}");
    }
    smtp.expect("VRFY someone", "252 2.5.0").await;
    smtp.expect("HELP", "214 2.0.0").await;
    smtp.expect("RSET", "250 2.0.0").await;
    smtp.expect("NOOP", "250 2.0.0").await;
    smtp.expect("FOO bar", "500 5.5.2").await;
    smtp.expect("MAIL FROM:<not an address", "501").await;
    smtp.expect("STARTTLS", "220 2.0.0").await;
}

#[tokio::test]
async fn a_helo_only_device_on_the_relay_port_is_known_by_its_address() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Altgeraet").await;
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
    let message = sample_message(&sender, "ekg@klinik.example", "EKG Befund");
    let script = r#"
import smtplib, sys
host, port, sender, rcpt, path = sys.argv[1:]
with smtplib.SMTP(host, int(port), local_hostname="ekg.praxis.test", timeout=30) as smtp:
    code, _ = smtp.helo()
    assert code == 250
    smtp.sendmail(sender, [rcpt], open(path, "rb").read())
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.eml"), &message).unwrap();
    let output = tokio::process::Command::new("python3")
        .args([
            "-c",
            script,
            "127.0.0.1",
            &app.stack.relay_addr.unwrap().port().to_string(),
            &sender,
            "ekg@klinik.example",
        ])
        .arg(dir.path().join("m.eml"))
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inbox = app.wait_for_inbox("ekg@klinik.example", 1).await;
    assert!(inbox[0].mime.ends_with(&message));
    assert!(inbox[0].mime.contains("with ESMTP id") || inbox[0].mime.contains("with ESMTPA id"));
}

#[tokio::test]
async fn the_relay_port_refuses_unknown_addresses_and_submission_wants_auth() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Offen").await;
    app.add_device(&tenant, "Drucker").await; // no allow-list
    let (mut relay, _) = SmtpProbe::connect(app.stack.relay_addr.unwrap()).await;
    relay.expect("HELO spammer.example", "250").await;
    relay.expect("MAIL FROM:<x@spammer.example>", "250").await;
    relay
        .expect("RCPT TO:<victim@example.org>", "550 5.7.1")
        .await;
    relay.expect("DATA", "503").await;

    let (mut submission, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    submission.expect("EHLO spammer.example", "250").await;
    submission
        .expect("MAIL FROM:<x@spammer.example>", "530 5.7.0")
        .await;
    assert!(app.message_ids().await.is_empty(), "no open relay");
}

#[tokio::test]
async fn a_device_with_an_allow_list_cannot_log_in_from_elsewhere() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Netz").await;
    let device = app.add_device(&tenant, "Scanner").await;
    devices::change_policy(
        app.pool(),
        device.device.id,
        PolicyChange {
            allowed_networks: Some(vec!["10.44.0.0/16".parse().unwrap()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sender = tenant.tenant.sender_mailbox.clone();
    let envelope = lettre::address::Envelope::new(
        Some(sender.parse().unwrap()),
        vec!["x@klinik.example".parse().unwrap()],
    )
    .unwrap();
    use lettre::AsyncTransport;
    let error = app
        .lettre(&device.device.username, &device.password)
        .send_raw(&envelope, b"Subject: x\r\n\r\nx")
        .await
        .expect_err("login from outside the allow-list");
    assert_eq!(
        error.status().map(|c| c.to_string()).as_deref(),
        Some("535")
    );
}

#[tokio::test]
async fn limits_answer_with_their_codes() {
    let app = plaintext_app(|s| {
        s.edge.limits.max_recipients = 2;
        s.edge.limits.max_message_size = 2000;
        s.edge.limits.max_header_size = 300;
        s.edge.limits.max_messages = 1;
    })
    .await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Grenzen").await;
    let sender = tenant.tenant.sender_mailbox.clone();

    smtp.expect(&format!("MAIL FROM:<{sender}> SIZE=5000"), "552 5.3.4")
        .await;
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250 2.1.0")
        .await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250 2.1.5").await;
    smtp.expect("RCPT TO:<b@klinik.example>", "250 2.1.5").await;
    smtp.expect("RCPT TO:<c@klinik.example>", "452 4.5.3").await;
    smtp.expect("DATA", "354").await;
    let big = format!(
        "From: {sender}\r\nSubject: big\r\n\r\n{}\r\n.\r\n",
        "x".repeat(3000)
    );
    smtp.send_raw(big.as_bytes()).await;
    smtp.expect_reply("552 5.3.4").await;

    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    let long_header = format!(
        "From: {sender}\r\nX-Long: {}\r\n\r\nbody\r\n.\r\n",
        "h".repeat(400)
    );
    smtp.send_raw(long_header.as_bytes()).await;
    let reply = smtp.reply().await;
    assert!(
        reply.starts_with("552 5.3.4") && reply.contains("header"),
        "{reply}"
    );

    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(format!("From: {sender}\r\n\r\nok\r\n.\r\n").as_bytes())
        .await;
    smtp.expect_reply("250 2.0.0").await;
    let again = smtp.command(&format!("MAIL FROM:<{sender}>")).await;
    assert!(
        again.starts_with("421 4.7.0"),
        "messages per session: {again}"
    );
    assert!(smtp.closed().await);
    assert_eq!(app.message_ids().await.len(), 1);
}

#[tokio::test]
async fn too_many_bad_commands_and_idle_clients_are_disconnected() {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.edge.limits.max_errors = 3;
        s.edge.limits.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.expect("GARBAGE", "500").await;
    smtp.expect("GARBAGE", "500").await;
    smtp.expect("GARBAGE", "500").await;
    smtp.expect_reply("421 4.7.0").await;
    assert!(smtp.closed().await);

    let (mut idle, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    idle.expect_reply("421 4.4.2").await;
    assert!(idle.closed().await);
}

#[tokio::test]
async fn a_line_too_long_is_refused() {
    let app = TestApp::spawn().await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.expect(&format!("EHLO {}", "a".repeat(10_000)), "500 5.5.6")
        .await;
    smtp.expect("NOOP", "250").await;
    // Split over several writes, the rest of the line is still not read as commands.
    smtp.send_raw(format!("NOOP {}", "b".repeat(6000)).as_bytes())
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    smtp.send_raw(format!("{}QUIT\r\n", "c".repeat(6000)).as_bytes())
        .await;
    smtp.expect_reply("500 5.5.6").await;
    assert!(
        smtp.command("NOOP").await.starts_with("250"),
        "the session goes on"
    );
}

/// The published SMTP smuggling variants: none may end the DATA phase.
#[tokio::test]
async fn smuggled_end_of_data_sequences_are_content_not_commands() {
    let app = plaintext_app(|_| {}).await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Schmuggel").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let variants = [
        "\n.\n",
        "\n.\r\n",
        "\r.\r",
        "\r\n.\n",
        "\n.\r",
        "\r.\n",
        "\r\n.\r",
        "\r\n\x00.\r\n",
    ];
    for variant in variants {
        smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
        smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
        smtp.expect("DATA", "354").await;
        let smuggled = format!(
            "From: {sender}\r\nSubject: smuggling\r\n\r\nhello{variant}MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nevil\r\n.\r\n"
        );
        smtp.send_raw(smuggled.as_bytes()).await;
        let reply = smtp.reply().await;
        assert!(
            reply.starts_with("250 2.0.0 OK queued"),
            "variant {variant:?}: {reply}"
        );
    }
    let bodies = queued_bodies(&app).await;
    assert_eq!(bodies.len(), variants.len(), "exactly one message per DATA");
    for body in &bodies {
        assert!(
            body.contains("MAIL FROM:<evil@example.org>\r\n"),
            "the smuggled text stays content: {body:?}"
        );
        assert!(
            !mailbridge_edge::message::has_bare_newline(body.as_bytes()),
            "bare CR/LF normalised: {body:?}"
        );
    }
}

#[tokio::test]
async fn bare_newlines_are_refused_when_the_policy_says_reject() {
    let app = plaintext_app(|s| s.edge.bare_newlines = BareNewlinePolicy::Reject).await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Streng").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(format!("From: {sender}\r\n\r\nline\nbare\r\n.\r\n").as_bytes())
        .await;
    smtp.expect_reply("550 5.6.0").await;
    assert!(app.message_ids().await.is_empty());
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let app = plaintext_app(|_| {}).await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Chunks").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let message = sample_message(&sender, "a@klinik.example", "chunked");
    let (first, second) = message.split_at(40);
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.send_raw(format!("BDAT {}\r\n{first}", first.len()).as_bytes())
        .await;
    smtp.expect_reply("250 2.0.0 40 octets").await;
    smtp.send_raw(format!("BDAT {} LAST\r\n{second}", second.len()).as_bytes())
        .await;
    smtp.expect_reply("250 2.0.0 OK queued").await;
    let bodies = queued_bodies(&app).await;
    assert!(bodies[0].ends_with(&message), "{:?}", bodies[0]);

    // A chunk without a transaction is read and refused; the session goes on.
    smtp.send_raw(b"BDAT 5 LAST\r\nhello").await;
    smtp.expect_reply("503 5.5.1").await;
    smtp.expect("NOOP", "250").await;
}

#[tokio::test]
async fn failed_logins_are_slowed_and_locked_out() {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.edge.plaintext_auth_networks = "127.0.0.0/8".parse().unwrap();
        s.edge.auth_throttle.lockout_failures = 3;
    })
    .await;
    let tenant = app.add_tenant("Praxis Brute").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO attacker.example").await;
    for _ in 0..3 {
        assert!(
            smtp.login(&device.device.username, "guess")
                .await
                .starts_with("535 5.7.8")
        );
    }
    let locked = smtp.login(&device.device.username, &device.password).await;
    assert!(
        locked.starts_with("454 4.7.0"),
        "even the right password waits out the lockout: {locked}"
    );
}

#[tokio::test]
async fn sender_policy_enforces_or_rewrites_the_from() {
    let app = plaintext_app(|_| {}).await;
    let tenant = app.add_tenant("Praxis Absender").await;
    let strict = app.add_device(&tenant, "Streng").await;
    devices::change_policy(
        app.pool(),
        strict.device.id,
        PolicyChange {
            allowed_senders: Some(vec!["@praxisabsender.example".into()]),
            sender_policy: Some(SenderPolicy::Enforce),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO strict.praxis.test").await;
    assert!(
        smtp.login(&strict.device.username, &strict.password)
            .await
            .starts_with("235")
    );
    smtp.expect("MAIL FROM:<ceo@other-practice.example>", "550 5.7.1")
        .await;
    smtp.expect("MAIL FROM:<empfang@praxisabsender.example>", "250")
        .await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(b"From: ceo@other-practice.example\r\n\r\nspoof\r\n.\r\n")
        .await;
    smtp.expect_reply("550 5.7.1").await;
    assert!(app.message_ids().await.is_empty());

    let lax = app.add_device(&tenant, "Umschreiben").await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO lax.praxis.test").await;
    assert!(
        smtp.login(&lax.device.username, &lax.password)
            .await
            .starts_with("235")
    );
    smtp.expect("MAIL FROM:<scanner@printer.local>", "250")
        .await;
    smtp.expect("RCPT TO:<rewrite@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(b"From: \"Scanner 2.OG\" <scanner@printer.local>\r\nTo: rewrite@klinik.example\r\nSubject: Scan\r\n\r\nscan\r\n.\r\n").await;
    smtp.expect_reply("250 2.0.0").await;
    let mut app = app;
    app.stack.start_worker().unwrap();
    let inbox = app.wait_for_inbox("rewrite@klinik.example", 1).await;
    let mailbox = &tenant.tenant.sender_mailbox;
    assert_eq!(inbox[0].from.as_deref(), Some(mailbox.as_str()));
    assert!(
        inbox[0]
            .mime
            .contains(&format!("From: \"Scanner 2.OG\" <{mailbox}>\r\n")),
        "{}",
        inbox[0].mime
    );
    assert!(
        inbox[0]
            .mime
            .contains("Reply-To: \"Scanner 2.OG\" <scanner@printer.local>\r\n")
    );
}

#[tokio::test]
async fn device_rate_limits_answer_450() {
    let app = plaintext_app(|_| {}).await;
    let tenant = app.add_tenant("Praxis Takt").await;
    let device = app.add_device(&tenant, "Takt").await;
    let one_per_minute = PolicyChange {
        rate_limit_per_minute: Some(Some(1)),
        ..Default::default()
    };
    devices::change_policy(app.pool(), device.device.id, one_per_minute)
        .await
        .unwrap();
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO takt.praxis.test").await;
    assert!(
        smtp.login(&device.device.username, &device.password)
            .await
            .starts_with("235")
    );
    let sender = tenant.tenant.sender_mailbox.clone();
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(format!("From: {sender}\r\n\r\nx\r\n.\r\n").as_bytes())
        .await;
    smtp.expect_reply("250").await;
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "450 4.7.1")
        .await;
}

#[tokio::test]
async fn the_client_address_survives_a_proxy_protocol_load_balancer() {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.edge.proxy_protocol = true;
        s.edge.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await;
    let tenant = app.add_tenant("Praxis Hinter LB").await;
    let device = app.add_device(&tenant, "Fax").await;
    devices::change_policy(
        app.pool(),
        device.device.id,
        PolicyChange {
            allowed_networks: Some(vec!["192.0.2.55/32".parse().unwrap()]),
            listener: Some(DeviceListener::Relay),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let sender = tenant.tenant.sender_mailbox.clone();
    let (mut smtp, greeting) = SmtpProbe::connect_via_proxy(
        app.stack.relay_addr.unwrap(),
        b"PROXY TCP4 192.0.2.55 203.0.113.1 40000 25\r\n",
    )
    .await;
    assert!(greeting.starts_with("220"));
    smtp.command("HELO fax.praxis.test").await;
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250 2.1.5").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(format!("From: {sender}\r\n\r\nfax\r\n.\r\n").as_bytes())
        .await;
    smtp.expect_reply("250").await;
    let addr: String = sqlx::query_scalar("SELECT host(client_addr) FROM messages")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(addr, "192.0.2.55");

    // A trusted proxy's connection without a valid header is dropped unanswered.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bare = tokio::net::TcpStream::connect(app.stack.relay_addr.unwrap())
        .await
        .unwrap();
    bare.write_all(b"HELO no-proxy-header.example\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), bare.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "expected a silent close, got {:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// A PROXY header without an address (v1 UNKNOWN, v2 LOCAL: the balancer's own
/// health check) is served, but as from an unknown source: even a relay device
/// allow-listed for the balancer's own address does not match it.
#[tokio::test]
async fn a_proxy_header_without_an_address_matches_no_allow_list() {
    let app = TestApp::spawn_configured(StackOptions::ephemeral(), |s| {
        s.edge.proxy_protocol = true;
        s.edge.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await;
    let tenant = app.add_tenant("Praxis Gesundheitscheck").await;
    let device = app.add_device(&tenant, "Fax").await;
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
    let local_v2 = {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        h
    };
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), local_v2] {
        let (mut smtp, greeting) =
            SmtpProbe::connect_via_proxy(app.stack.relay_addr.unwrap(), &header).await;
        assert!(greeting.starts_with("220"), "{greeting}");
        smtp.expect("EHLO lb.example", "250").await;
        smtp.command(&format!("MAIL FROM:<{sender}>")).await;
        let rcpt = smtp.command("RCPT TO:<a@klinik.example>").await;
        assert!(
            rcpt.starts_with('5'),
            "relayed for an unknown source: {rcpt}"
        );
        smtp.expect("QUIT", "221").await;
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn a_database_failure_at_commit_answers_451_and_keeps_nothing() {
    let app = plaintext_app(|_| {}).await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Ausfall").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    smtp.expect(&format!("MAIL FROM:<{sender}>"), "250").await;
    smtp.expect("RCPT TO:<a@klinik.example>", "250").await;
    smtp.expect("DATA", "354").await;
    app.pool().close().await;
    smtp.send_raw(format!("From: {sender}\r\n\r\nlost?\r\n.\r\n").as_bytes())
        .await;
    smtp.expect_reply("451 4.3.0").await;
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_with_421() {
    let app = TestApp::spawn().await;
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.expect("EHLO idle.praxis.test", "250").await;
    let stack = app.stack;
    let stopping = tokio::spawn(stack.shutdown());
    smtp.expect_reply("421 4.3.2").await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_30_mb_attachment_is_accepted() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Roentgen").await;
    let device = app.add_device(&tenant, "Roentgen").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let attachment = lettre::message::Attachment::new("roentgen.dcm".to_owned()).body(
        vec![0x5Au8; 30 * 1024 * 1024],
        "application/dicom".parse().unwrap(),
    );
    let email = lettre::Message::builder()
        .from(sender.parse().unwrap())
        .to("radiologie@klinik.example".parse().unwrap())
        .subject("Roentgenbild")
        .multipart(lettre::message::MultiPart::mixed().singlepart(attachment))
        .unwrap();
    use lettre::AsyncTransport;
    app.lettre(&device.device.username, &device.password)
        .send(email)
        .await
        .expect("a 30 MB attachment fits");
    let size: i64 = sqlx::query_scalar("SELECT size_bytes FROM messages")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(size > 30 * 1024 * 1024, "{size}");
}

#[tokio::test]
async fn eight_bit_and_international_addresses_are_accepted() {
    let app = plaintext_app(|_| {}).await;
    let (mut smtp, tenant) = logged_in(&app, "Praxis Umlaut").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    smtp.expect(
        &format!("MAIL FROM:<{sender}> BODY=8BITMIME SMTPUTF8"),
        "250 2.1.0",
    )
    .await;
    smtp.expect("RCPT TO:<jürgen.müller@zahnärzte.example>", "250 2.1.5")
        .await;
    smtp.expect("DATA", "354").await;
    let message = format!(
        "From: {sender}\r\nTo: jürgen.müller@zahnärzte.example\r\nSubject: Grüße\r\n\r\nÄrztliche Bescheinigung – 8 bit\r\n"
    );
    smtp.send_raw(format!("{message}.\r\n").as_bytes()).await;
    smtp.expect_reply("250 2.0.0").await;
    let bodies = queued_bodies(&app).await;
    assert!(
        bodies[0].ends_with(&message),
        "8-bit content kept: {:?}",
        bodies[0]
    );
    let rcpt_to: Vec<String> = sqlx::query_scalar("SELECT rcpt_to FROM messages")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(rcpt_to, vec!["jürgen.müller@zahnärzte.example".to_owned()]);
}

#[tokio::test]
async fn an_old_device_may_leave_out_the_angle_brackets_of_its_paths() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Ohne Klammern").await;
    let device = app.add_device(&tenant, "Altes MFP").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    // A port-25 device, byte for byte as embedded clients send it.
    devices::change_policy(
        app.pool(),
        device.device.id,
        PolicyChange {
            allowed_networks: Some(vec!["127.0.8.1/32".parse().unwrap()]),
            listener: Some(DeviceListener::Relay),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (mut smtp, _) =
        SmtpProbe::connect_from(app.stack.relay_addr.unwrap(), "127.0.8.1".parse().unwrap()).await;
    smtp.expect("HELO mfp", "250").await;
    smtp.expect(&format!("MAIL FROM:{sender}"), "250").await;
    smtp.expect("RCPT TO: lab@klinik.example", "250").await;
    smtp.expect("DATA", "354").await;
    smtp.send_raw(
        format!("From: {sender}\r\nSubject: ohne Klammern\r\n\r\nScan\r\n.\r\n").as_bytes(),
    )
    .await;
    smtp.expect_reply("250").await;
    let inbox = app.wait_for_inbox("lab@klinik.example", 1).await;
    assert_eq!(inbox[0].subject.as_deref(), Some("ohne Klammern"));
    // Still a syntax error: something that is not a plain address.
    let (mut smtp, _) =
        SmtpProbe::connect_from(app.stack.relay_addr.unwrap(), "127.0.8.1".parse().unwrap()).await;
    smtp.command("HELO mfp").await;
    smtp.expect("MAIL FROM:\"odd name\"@x.example", "501").await;
    app.stack.shutdown().await;
}
