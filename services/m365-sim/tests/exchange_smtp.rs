//! The simulated Exchange Online SMTP endpoint, reply by reply, over real TLS.

use std::sync::Arc;

use mailbridge_m365_sim::Simulator;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stream.read_line(&mut line).await.unwrap() > 0,
                "closed after {reply:?}"
            );
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn command(&mut self, line: &str) -> String {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn exchange_smtp_answers_as_documented() {
    let simulator = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(simulator.smtp_addr())
        .await
        .unwrap();
    let mut plain = Client {
        stream: BufReader::new(tcp),
    };
    let banner = plain.reply().await;
    assert!(
        banner.starts_with("220 ")
            && banner.contains(".outlook.com Microsoft ESMTP MAIL Service ready at"),
        "{banner}"
    );
    let ehlo = plain.command("EHLO relay.example").await;
    for extension in [
        "SIZE 157286400",
        "PIPELINING",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "8BITMIME",
        "BINARYMIME",
        "CHUNKING",
        "SMTPUTF8",
    ] {
        assert!(ehlo.contains(extension), "{extension}: {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "no AUTH before STARTTLS: {ehlo}");
    assert!(
        plain
            .command("MAIL FROM:<a@b.example>")
            .await
            .starts_with("530 5.7.57")
    );
    assert_eq!(
        plain.command("STARTTLS").await,
        "220 2.0.0 SMTP server ready\r\n"
    );

    mailbridge_core::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, simulator.ca_pem()).unwrap();
    let config = mailbridge_core::tls::client_config(Some(&ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector
        .connect(name, plain.stream.into_inner())
        .await
        .unwrap();
    let mut secured = Client {
        stream: BufReader::new(tls),
    };
    let ehlo = secured.command("EHLO relay.example").await;
    assert!(ehlo.contains("250-AUTH LOGIN XOAUTH2\r\n"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"));
    assert_eq!(
        secured.command("AUTH PLAIN AGEAYg==").await,
        "504 5.7.4 Unrecognized authentication type\r\n"
    );
    assert_eq!(secured.command("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(secured.command("dXNlcg==").await, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        secured.command("cGFzcw==").await,
        "550 5.7.30 Basic authentication is not supported for Client Submission.\r\n"
    );
    assert_eq!(secured.command("AUTH XOAUTH2").await, "334 \r\n");
    let garbage = secured
        .command("dXNlcj1hQGIuZXhhbXBsZQFhdXRoPUJlYXJlciBub3QtYS10b2tlbgEB")
        .await;
    assert!(
        garbage.starts_with("535 5.7.3 Authentication unsuccessful ["),
        "{garbage}"
    );
}
