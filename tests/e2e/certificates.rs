//! The edge's certificate renewed on disk, as cert-manager renews a mounted Secret:
//! new connections get the new certificate without a restart, a session opened
//! before the swap sends its message after it, and a broken pair is refused while
//! the previous certificate stays.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    chaos_load::{EdgeProcess, free_port},
    harness::TestApp,
};

/// A Python SMTP client that trusts only `ca` (a PEM file): STARTTLS, AUTH LOGIN,
/// then waits for a line on stdin before it sends one message. Prints `READY` after
/// the login and `SENT <reply>` after the message; a failed handshake exits non-zero.
const CLIENT: &str = r#"
import smtplib, ssl, sys
port, ca, user, password, sender = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as smtp:
    smtp.starttls(context=context)
    smtp.login(user, password)
    print("READY", flush=True)
    sys.stdin.readline()
    refused = smtp.sendmail(sender, ["renewal@klinik.example"], "From: " + sender + "\r\nSubject: after the renewal\r\n\r\nbody\r\n")
    print("SENT", refused, flush=True)
"#;

struct Client {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Client {
    /// Logs in trusting `ca`; `None` when the handshake (or anything) fails.
    async fn logged_in(
        port: u16,
        ca: &std::path::Path,
        user: &str,
        password: &str,
        sender: &str,
    ) -> Option<Self> {
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", CLIENT, &port.to_string()])
            .arg(ca)
            .args([user, password, sender])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("running python3");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "READY" => Some(Self { child, lines }),
            _ => None,
        }
    }

    async fn send(mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("an answer within 30 s")
            .unwrap()
            .unwrap_or_default();
        let _ = self.child.wait().await;
        line
    }
}

async fn reloads(metrics: &str, result: &str) -> u64 {
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    let series = format!(
        "mailbridge_tls_certificate_reloads_total{{certificate=\"edge\",result=\"{result}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    mailbridge_core::tls::install_crypto_provider();
    let app = TestApp::spawn().await;
    let tenant = app.add_tenant("Praxis Zertifikat").await;
    let device = app.add_device(&tenant, "Scanner").await;
    let sender = tenant.tenant.sender_mailbox.clone();
    let metrics_port = free_port();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let mut edge = EdgeProcess::start_with(
        &app,
        &[
            ("MAILBRIDGE_TLS_RELOAD_SECONDS", "1"),
            (
                "MAILBRIDGE_METRICS_LISTEN",
                &format!("127.0.0.1:{metrics_port}"),
            ),
        ],
    )
    .await;
    let files = tempfile::tempdir().unwrap();
    let old_ca = files.path().join("old-ca.pem");
    std::fs::write(&old_ca, &edge.ca_pem).unwrap();
    let login = |ca: std::path::PathBuf| {
        let (user, password, sender) = (
            device.device.username.clone(),
            device.password.clone(),
            sender.clone(),
        );
        let port = edge.addr.port();
        async move { Client::logged_in(port, &ca, &user, &password, &sender).await }
    };

    // A session opened with the old certificate, held across the renewal.
    let before = login(old_ca.clone())
        .await
        .expect("the old certificate is served");

    // The renewal: a new certificate from another CA written over the files.
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let renewed = mailbridge_core::tls::LocalAuthority::generate("renewed CA", &names).unwrap();
    let new_ca = files.path().join("new-ca.pem");
    std::fs::write(&new_ca, &renewed.ca_pem).unwrap();
    let (cert_file, key_file) = edge.certificate_files();
    renewed
        .server
        .write_pem_files(&cert_file, &key_file)
        .unwrap();
    let renewed_at = Instant::now();
    let fresh = loop {
        if let Some(client) = login(new_ca.clone()).await {
            break client;
        }
        assert!(
            renewed_at.elapsed() < Duration::from_secs(60),
            "the renewed certificate was not served within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        login(old_ca.clone()).await.is_none(),
        "new connections no longer get the old certificate"
    );
    assert_eq!(reloads(&metrics, "reloaded").await, 1);

    // The session from before the swap still sends; so does the new one.
    assert_eq!(before.send().await, "SENT {}");
    assert_eq!(fresh.send().await, "SENT {}");
    app.wait_for_inbox("renewal@klinik.example", 2).await;

    // A broken pair (the key of another certificate) is refused; the renewed
    // certificate stays.
    let other = mailbridge_core::tls::LocalAuthority::generate("other CA", &names).unwrap();
    let chain_only = files.path().join("other.crt");
    other
        .server
        .write_pem_files(&chain_only, &files.path().join("other.key"))
        .unwrap();
    std::fs::copy(&chain_only, &cert_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reloads(&metrics, "failed").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the broken pair was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        login(new_ca.clone()).await.is_some(),
        "the previous certificate is still served"
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("mailbridge_tls_certificate_expiry_timestamp_seconds{certificate=\"edge\"}"),
        "{text}"
    );
    edge.kill();
    app.stack.shutdown().await;
}
