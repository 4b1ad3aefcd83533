//! The security pass, tried from outside: port 25 only for relay devices, allow-lists
//! no wider than a site, a smart lockout shared by every edge, exactly one From, and
//! Graph sending to the envelope only.

use std::time::Duration;

use mailbridge_core::devices::{
    self, DeviceListener, IssuedCredential, PolicyChange, SenderPolicy,
};
use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::{
    chaos_load::EdgeProcess,
    harness::{SmtpProbe, TestApp, database_url, mailbridge_binary},
    staff_client::StaffClient,
};

async fn set(app: &TestApp, device: &IssuedCredential, change: PolicyChange) {
    devices::change_policy(app.pool(), device.device.id, change)
        .await
        .unwrap()
        .expect("the device exists");
}

/// Python's smtplib on the relay port from `source`: the reply to RCPT.
async fn smtplib_rcpt_from(port: u16, source: &str, sender: &str) -> String {
    let script = r#"
import smtplib, sys
port, source, sender = sys.argv[1:]
with smtplib.SMTP("127.0.0.1", int(port), source_address=(source, 0), timeout=30) as smtp:
    smtp.ehlo("guest-wifi.example")
    smtp.mail(sender)
    code, text = smtp.rcpt("victim@elsewhere.example")
    print(code, text.decode())
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &port.to_string(), source, sender])
        .output()
        .await
        .expect("running python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn port_25_accepts_relay_devices_only_never_a_password_device_with_an_allow_list() {
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Gastnetz").await;
    let printer = app.add_device(&tenant, "Drucker 587").await;
    set(
        &app,
        &printer,
        PolicyChange {
            allowed_networks: Some(vec!["127.0.7.1/32".parse().unwrap()]),
            ..Default::default()
        },
    )
    .await;
    let relay = app.add_device(&tenant, "EKG Port 25").await;
    set(
        &app,
        &relay,
        PolicyChange {
            allowed_networks: Some(vec!["127.0.7.2/32".parse().unwrap()]),
            listener: Some(DeviceListener::Relay),
            ..Default::default()
        },
    )
    .await;
    let port = app.stack.relay_addr.unwrap().port();

    let refused = smtplib_rcpt_from(port, "127.0.7.1", "anything@evil.example").await;
    assert!(refused.starts_with("550 5.7.1"), "{refused}");
    assert!(app.message_ids().await.is_empty(), "no open relay");

    // The relay device, with swaks from its allow-listed address.
    let sender = tenant.tenant.sender_mailbox.clone();
    let out = tokio::process::Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--local-interface",
            "127.0.7.2",
            "--from",
            &sender,
            "--to",
            "befund@klinik.example",
            "--header",
            "Subject: EKG",
        ])
        .output()
        .await
        .expect("running swaks");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let inbox = app.wait_for_inbox("befund@klinik.example", 1).await;
    assert_eq!(inbox[0].mailbox, sender);

    // Switching the relay device to a password listener takes effect at once.
    set(
        &app,
        &relay,
        PolicyChange {
            listener: Some(DeviceListener::Submission),
            ..Default::default()
        },
    )
    .await;
    let after = smtplib_rcpt_from(port, "127.0.7.2", &sender).await;
    assert!(after.starts_with("550 5.7.1"), "{after}");
    app.stack.shutdown().await;
}

#[tokio::test]
async fn allow_lists_wider_than_a_site_are_refused_by_the_web_and_the_cli() {
    let app = TestApp::spawn_without_worker().await;
    let tenant = app.add_tenant("Praxis Weit").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let mut owner = StaffClient::sign_in_as(&app, "ines.inhaber@msp.example", "owner").await;
    let path = format!(
        "/customers/{}/devices/{}",
        tenant.tenant.id, device.device.id
    );
    for wide in ["0.0.0.0/0", "10.0.0.0/8", "::/0", "2001:db8::/48"] {
        let page = owner.post(&path, &[("allowed_networks", wide)]).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{wide}");
        assert!(page.body.contains("too wide"), "{wide}: {}", page.body);
    }
    let page = owner
        .post(
            &path,
            &[("allowed_networks", "192.0.2.0/24 2001:db8:1:100::/56")],
        )
        .await;
    assert!(page.status.is_success() || page.status.is_redirection());
    let stored = devices::get(app.pool(), device.device.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allowed_networks.len(), 2);

    let database = database_url(&app.database);
    let cli = |args: &[&str]| {
        tokio::process::Command::new(mailbridge_binary())
            .args(args)
            .env("DATABASE_URL", database.expose_secret())
            .env("RUST_LOG", "warn")
            .output()
    };
    let id = device.device.id.to_string();
    let tenant_id = tenant.tenant.id.to_string();
    let wide = cli(&[
        "device",
        "set",
        "--tenant",
        &tenant_id,
        "--device",
        &id,
        "--allow-network",
        "0.0.0.0/0",
    ])
    .await
    .unwrap();
    assert!(!wide.status.success());
    assert!(String::from_utf8_lossy(&wide.stderr).contains("too wide"));
    let relay = cli(&[
        "device",
        "add",
        "--tenant",
        &tenant_id,
        "--name",
        "EKG",
        "--listener",
        "relay",
        "--kind",
        "medical",
        "--site",
        "Empfang",
        "--allow-network",
        "192.0.2.7",
    ])
    .await
    .unwrap();
    assert!(
        relay.status.success(),
        "{}",
        String::from_utf8_lossy(&relay.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&relay.stdout).unwrap();
    assert_eq!(added["listener"], "relay");
    assert_eq!(added["kind"], "medical");
    assert_eq!(added["allowed_networks"][0], "192.0.2.7/32");

    // A device stored with a wide list before the limit existed is reported.
    set(
        &app,
        &device,
        PolicyChange {
            allowed_networks: Some(vec!["0.0.0.0/0".parse().unwrap()]),
            ..Default::default()
        },
    )
    .await;
    let list = cli(&["device", "list", "--tenant", &tenant_id])
        .await
        .unwrap();
    assert!(list.status.success());
    assert!(
        String::from_utf8_lossy(&list.stderr).contains("wider than allowed"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    app.stack.shutdown().await;
}

/// Waits until the device's login from `source` is recorded as familiar.
async fn wait_familiar(app: &TestApp, device: &IssuedCredential, source: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM device_sources WHERE device_id = $1 AND source = $2::inet)",
        )
        .bind(device.device.id)
        .bind(source)
        .fetch_one(app.pool())
        .await
        .unwrap();
        if known {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never familiar");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_brute_force_from_elsewhere_never_locks_a_device_out_of_its_familiar_address() {
    let app = TestApp::spawn_with_clear_auth(|s| {
        s.edge.auth_throttle.lockout_failures = 3;
        s.edge.auth_throttle.source_lockout_failures = 6;
        s.edge.auth_throttle.username_lockout_failures = 5;
    })
    .await;
    let tenant = app.add_tenant("Praxis Schloss").await;
    let printer = app.add_device(&tenant, "Drucker").await;
    let neighbour = app.add_device(&tenant, "Fax").await;
    let edge = app.stack.smtp_addr;
    let (user, password) = (&printer.device.username, &printer.password);

    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", user, password)
            .await
            .starts_with("235")
    );
    wait_familiar(&app, &printer, "127.0.0.1/32").await;

    // The attacker at 127.0.0.2 guesses until every limit is passed.
    let mut replies = Vec::new();
    for n in 0..6 {
        replies.push(SmtpProbe::login_from(edge, "127.0.0.2", user, &format!("guess-{n}")).await);
    }
    assert!(
        replies[..3].iter().all(|r| r.starts_with("535")),
        "{replies:?}"
    );
    assert!(
        replies[3..].iter().all(|r| r.starts_with("454")),
        "{replies:?}"
    );
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.2", user, password)
            .await
            .starts_with("454 4.7.0"),
        "the attacking address is locked even with the right password"
    );
    // The real printer at its familiar address is not locked out.
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", user, password)
            .await
            .starts_with("235")
    );

    // A second edge pod shares the counters.
    let mut second = EdgeProcess::start_with(
        &app,
        &[
            ("MAILBRIDGE_PLAINTEXT_AUTH_NETWORKS", "127.0.0.0/8"),
            ("MAILBRIDGE_AUTH_FAILURE_DELAY_MS", "20"),
            ("MAILBRIDGE_AUTH_LOCKOUT_FAILURES", "3"),
            ("MAILBRIDGE_AUTH_SOURCE_LOCKOUT_FAILURES", "6"),
            ("MAILBRIDGE_AUTH_USERNAME_LOCKOUT_FAILURES", "5"),
        ],
    )
    .await;
    assert!(
        SmtpProbe::login_from(second.addr, "127.0.0.2", user, password)
            .await
            .starts_with("454 4.7.0"),
        "the lock is seen by the other edge"
    );
    assert!(
        SmtpProbe::login_from(second.addr, "127.0.0.1", user, password)
            .await
            .starts_with("235")
    );
    // Distributed guessing (5 unfamiliar failures for the username on the second
    // edge too) locks the username for unfamiliar addresses only.
    for n in 0..5 {
        let from = format!("127.0.9.{}", n + 1);
        SmtpProbe::login_from(second.addr, &from, user, "wrong").await;
    }
    let unfamiliar = SmtpProbe::login_from(edge, "127.0.9.77", user, password).await;
    assert!(unfamiliar.starts_with("454 4.7.0"), "{unfamiliar}");
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", user, password)
            .await
            .starts_with("235")
    );

    // A printer with a stale password behind the clinic's one address locks only
    // itself: another device behind the same address still logs in.
    for _ in 0..3 {
        SmtpProbe::login_from(edge, "127.0.0.1", user, "stale").await;
    }
    assert!(
        SmtpProbe::login_from(edge, "127.0.0.1", user, password)
            .await
            .starts_with("454"),
        "the failing pair is locked"
    );
    assert!(
        SmtpProbe::login_from(
            edge,
            "127.0.0.1",
            &neighbour.device.username,
            &neighbour.password
        )
        .await
        .starts_with("235")
    );

    // Unlocking (the control plane's button, the CLI's `device unlock`) lifts it.
    assert!(
        mailbridge_core::logins::unlock(app.pool(), user)
            .await
            .unwrap()
    );
    // The edge trusts a state it read for a moment (two seconds): the next logins
    // succeed once that has passed.
    SmtpProbe::login_succeeds_within(edge, "127.0.0.1", user, password, Duration::from_secs(10))
        .await;
    assert!(
        SmtpProbe::login_from(second.addr, "127.0.0.2", user, password)
            .await
            .starts_with("235")
    );
    let metrics = reqwest::get(format!("http://{}/metrics", app.stack.ops_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mailbridge_edge_auth_lockouts_total{scope=\"pair\"}"),
        "{metrics}"
    );
    second.kill();
    app.stack.shutdown().await;
}

/// Sends `message` as a logged-in device and returns the reply to the end of data.
async fn send_as(app: &TestApp, device: &IssuedCredential, rcpt: &[&str], message: &str) -> String {
    let (mut smtp, _) = SmtpProbe::connect(app.stack.smtp_addr).await;
    smtp.command("EHLO device.example").await;
    assert!(
        smtp.login(&device.device.username, &device.password)
            .await
            .starts_with("235")
    );
    smtp.expect("MAIL FROM:<>", "250").await;
    for r in rcpt {
        smtp.expect(&format!("RCPT TO:<{r}>"), "250").await;
    }
    smtp.expect("DATA", "354").await;
    smtp.send_raw(format!("{message}\r\n.\r\n").as_bytes())
        .await;
    smtp.reply().await
}

#[tokio::test]
async fn a_message_has_exactly_one_from_and_goes_to_the_envelope_only() {
    let app = TestApp::spawn_with_clear_auth(|s| s.edge.limits.max_recipients = 100).await;
    let tenant = app.add_tenant("Praxis Absender").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let strict = app.add_device(&tenant, "Streng").await;
    set(
        &app,
        &strict,
        PolicyChange {
            sender_policy: Some(SenderPolicy::Enforce),
            ..Default::default()
        },
    )
    .await;
    let lax = app.add_device(&tenant, "Umschreiben").await;

    // Two From fields: the parser reads the last, a naive check the first.
    let two = format!(
        "From: ceo@praxisabsender.example\r\nFrom: {sender}\r\nTo: a@klinik.example\r\nSubject: x\r\n\r\nspoof"
    );
    for device in [&strict, &lax] {
        let reply = send_as(&app, device, &["a@klinik.example"], &two).await;
        assert!(reply.starts_with("550 5.6.0"), "{reply}");
    }
    let none = "To: a@klinik.example\r\nSubject: x\r\n\r\nno from";
    let reply = send_as(&app, &strict, &["a@klinik.example"], none).await;
    assert!(reply.starts_with("550 5.6.0"), "{reply}");
    let senders = format!("From: {sender}\r\nSender: a@x.example\r\nSender: b@x.example\r\n\r\nx");
    let reply = send_as(&app, &strict, &["a@klinik.example"], &senders).await;
    assert!(reply.starts_with("550 5.6.0"), "{reply}");
    assert!(app.message_ids().await.is_empty());

    // `From :` (white space before the colon) is rewritten like `From:`.
    let spaced = "From : Chef <ceo@elsewhere.example>\r\nTo: rewrite@klinik.example\r\nSubject: x\r\n\r\nbody";
    let reply = send_as(&app, &lax, &["rewrite@klinik.example"], spaced).await;
    assert!(reply.starts_with("250"), "{reply}");
    let delivered = app.wait_for_inbox("rewrite@klinik.example", 1).await;
    let mime = &delivered[0].mime;
    assert!(!mime.contains("From : "), "{mime}");
    assert!(mime.contains(&format!("<{sender}>")), "{mime}");
    assert!(
        mime.contains("Reply-To: \"Chef\" <ceo@elsewhere.example>"),
        "{mime}"
    );

    // A Bcc of 900 addresses never reaches them: Graph gets the envelope only.
    let bcc: Vec<String> = (0..900).map(|n| format!("r{n}@bulk.example")).collect();
    let bulk = format!(
        "From: {sender}\r\nTo: one@klinik.example\r\nBcc: {}\r\nSubject: bulk\r\n\r\nbody",
        bcc.join(",\r\n ")
    );
    let reply = send_as(&app, &strict, &["one@klinik.example"], &bulk).await;
    assert!(reply.starts_with("250"), "{reply}");
    let delivered = app.wait_for_inbox("one@klinik.example", 1).await;
    assert_eq!(delivered[0].recipients, vec!["one@klinik.example"]);
    assert!(
        app.stack
            .simulator
            .directory
            .inbox("r5@bulk.example")
            .is_empty()
    );

    // To and Cc naming more addresses than a message may have are refused; those
    // within the limit join the envelope (the one list the log and limits use).
    let to: Vec<String> = (0..150).map(|n| format!("t{n}@bulk.example")).collect();
    let wide = format!(
        "From: {sender}\r\nTo: {}\r\nSubject: wide\r\n\r\nbody",
        to.join(",\r\n ")
    );
    let reply = send_as(&app, &strict, &["t0@bulk.example"], &wide).await;
    assert!(reply.starts_with("550 5.5.3"), "{reply}");
    let cc = format!(
        "From: {sender}\r\nTo: first@klinik.example\r\nCc: second@klinik.example\r\nSubject: cc\r\n\r\nbody"
    );
    let reply = send_as(&app, &strict, &["first@klinik.example"], &cc).await;
    assert!(reply.starts_with("250"), "{reply}");
    let id: uuid::Uuid = reply
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a queue id");
    let recipients: Vec<String> = sqlx::query_scalar("SELECT rcpt_to FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(
        recipients,
        vec!["first@klinik.example", "second@klinik.example"]
    );
    app.stack.shutdown().await;
}
