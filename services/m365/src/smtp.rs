//! Delivery by SMTP to Exchange Online with SASL XOAUTH2: STARTTLS (TLS 1.2 or newer,
//! certificate verified against the system roots and the extra CA bundle), `AUTH
//! XOAUTH2` as the sender mailbox with an app-only token for
//! `https://outlook.office365.com/.default`, the mailbox as envelope sender.
//!
//! One connection per message, closed (`QUIT`) before the delivery gives back its
//! mailbox slot: Exchange Online counts every open authenticated connection of a
//! mailbox against its limit of 3, idle ones included, so connections kept in a pool
//! per worker process would add up across workers and be refused with `432 4.3.2`.
//! The slots (`limits`) then bound exactly what Exchange counts. At Exchange's 30
//! messages a minute per mailbox, a handshake per message costs nothing that matters.

use std::{path::Path, time::Duration};

use lettre::{
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters, TlsVersion},
        extension::ClientId,
    },
};
use secrecy::{ExposeSecret, SecretString};

use crate::outcome::DeliveryOutcome;

pub struct SmtpClient {
    host: String,
    port: u16,
    timeout: Duration,
    tls: TlsParameters,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("MAILBRIDGE_M365_SMTP must be host:port, got {0:?}")]
    Endpoint(String),
    #[error("reading the extra CA bundle: {0}")]
    ExtraCa(String),
    #[error("TLS for Exchange SMTP: {0}")]
    Tls(String),
}

impl SmtpClient {
    pub fn new(
        endpoint: &str,
        extra_ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, SmtpSetupError> {
        let (host, port) = endpoint
            .rsplit_once(':')
            .and_then(|(host, port)| {
                Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
            })
            .ok_or_else(|| SmtpSetupError::Endpoint(endpoint.to_owned()))?;
        let mut tls = TlsParameters::builder(host.clone())
            .certificate_store(CertificateStore::Default)
            .set_min_tls_version(TlsVersion::Tlsv12);
        if let Some(path) = extra_ca_file {
            let roots = mailbridge_core::tls::load_certificates(path)
                .map_err(|e| SmtpSetupError::ExtraCa(e.to_string()))?;
            for der in roots {
                let root = Certificate::from_der(der.to_vec())
                    .map_err(|e| SmtpSetupError::ExtraCa(e.to_string()))?;
                tls = tls.add_root_certificate(root);
            }
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| SmtpSetupError::Tls(e.to_string()))?;
        Ok(Self {
            host,
            port,
            timeout,
            tls,
        })
    }

    /// Sends one message on a connection of its own, closed before this returns.
    pub async fn send(
        &self,
        token: &SecretString,
        mailbox: &str,
        recipients: &[String],
        mime: &[u8],
    ) -> DeliveryOutcome {
        let to: Result<Vec<_>, _> = recipients.iter().map(|r| r.parse()).collect();
        let envelope = match (mailbox.parse(), to) {
            (Ok(from), Ok(to)) => Envelope::new(Some(from), to),
            _ => {
                return DeliveryOutcome::smtp(
                    501,
                    "5.1.3",
                    "an envelope address is not valid".to_owned(),
                );
            }
        };
        let envelope = match envelope {
            Ok(e) => e,
            Err(e) => return DeliveryOutcome::smtp(501, "5.1.3", e.to_string()),
        };
        let credentials = Credentials::new(mailbox.to_owned(), token.expose_secret().to_owned());
        let hello = ClientId::default();
        let mut connection = match AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &hello,
            None,
            None,
        )
        .await
        {
            Ok(c) => c,
            Err(error) => return outcome_of(&error),
        };
        let sent = async {
            connection.starttls(self.tls.clone(), &hello).await?;
            connection.auth(&[Mechanism::Xoauth2], &credentials).await?;
            connection.send(&envelope, mime).await
        }
        .await;
        // QUIT (or just close, if the connection broke) before the slot is free.
        connection.abort().await;
        match sent {
            Ok(response) => DeliveryOutcome::Accepted {
                status: u16::from(response.code()),
            },
            Err(error) => outcome_of(&error),
        }
    }
}

/// Exchange's answer (or the network's failure) as an outcome.
fn outcome_of(error: &lettre::transport::smtp::Error) -> DeliveryOutcome {
    match error.status() {
        Some(code) => {
            let text = error.to_string();
            let answer = text
                .split_once("): ")
                .map(|(_, rest)| rest)
                .unwrap_or(&text)
                .trim()
                .to_owned();
            let enhanced = enhanced_code(&answer).unwrap_or_default();
            DeliveryOutcome::smtp(u16::from(code), &enhanced, answer)
        }
        None => DeliveryOutcome::unreachable("exchange smtp", crate::describe_error(error)),
    }
}

/// The RFC 3463 code at the start of an SMTP reply text (`5.7.30 Basic …` → `5.7.30`).
fn enhanced_code(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let parts: Vec<&str> = first.split('.').collect();
    let valid = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    valid.then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::enhanced_code;

    #[test]
    fn enhanced_codes_are_read_from_reply_texts() {
        assert_eq!(
            enhanced_code("5.7.30 Basic authentication is not supported").as_deref(),
            Some("5.7.30")
        );
        assert_eq!(
            enhanced_code("4.3.2 Concurrent connections limit exceeded").as_deref(),
            Some("4.3.2")
        );
        assert_eq!(enhanced_code("SendAsDenied; x").as_deref(), None);
        assert_eq!(enhanced_code("5.7.1234 x"), None);
    }
}
