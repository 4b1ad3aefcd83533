//! Delivery by SMTP to Exchange Online with SASL XOAUTH2: STARTTLS (TLS 1.2 or newer,
//! certificate verified against the system roots and the extra CA bundle), `AUTH
//! XOAUTH2` as the sender mailbox with an app-only token for
//! `https://outlook.office365.com/.default`, the mailbox as envelope sender.
//! Connections are pooled per mailbox (at most 3, Exchange Online's limit per
//! mailbox) and reused for the next messages while the token stays the same.

use std::{collections::HashMap, path::Path, sync::Mutex, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    address::Envelope,
    transport::smtp::{
        PoolConfig,
        authentication::{Credentials, Mechanism},
        client::{Certificate, CertificateStore, Tls, TlsParameters, TlsVersion},
    },
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::outcome::DeliveryOutcome;

/// Connections Exchange Online allows per mailbox at once.
const CONNECTIONS_PER_MAILBOX: u32 = 3;

type Transport = AsyncSmtpTransport<Tokio1Executor>;

pub struct SmtpClient {
    host: String,
    port: u16,
    timeout: Duration,
    extra_roots: Vec<Certificate>,
    /// Mailbox → (fingerprint of the token it logs in with, its pooled transport).
    transports: Mutex<HashMap<String, ([u8; 32], Transport)>>,
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
        let extra_roots = match extra_ca_file {
            Some(path) => mailbridge_core::tls::load_certificates(path)
                .map_err(|e| SmtpSetupError::ExtraCa(e.to_string()))?
                .into_iter()
                .map(|der| {
                    Certificate::from_der(der.to_vec())
                        .map_err(|e| SmtpSetupError::ExtraCa(e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            host,
            port,
            timeout,
            extra_roots,
            transports: Mutex::default(),
        })
    }

    fn transport(&self, mailbox: &str, token: &SecretString) -> Result<Transport, String> {
        let fingerprint: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        let mut transports = self.transports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, transport)) = transports.get(mailbox)
            && *known == fingerprint
        {
            return Ok(transport.clone());
        }
        let mut tls = TlsParameters::builder(self.host.clone())
            .certificate_store(CertificateStore::Default)
            .set_min_tls_version(TlsVersion::Tlsv12);
        for root in &self.extra_roots {
            tls = tls.add_root_certificate(root.clone());
        }
        let tls = tls.build_rustls().map_err(|e| e.to_string())?;
        let transport = Transport::builder_dangerous(&self.host)
            .port(self.port)
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(
                mailbox.to_owned(),
                token.expose_secret().to_owned(),
            ))
            .authentication(vec![Mechanism::Xoauth2])
            .timeout(Some(self.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(CONNECTIONS_PER_MAILBOX)
                    .idle_timeout(Duration::from_secs(60)),
            )
            .build();
        transports.insert(mailbox.to_owned(), (fingerprint, transport.clone()));
        Ok(transport)
    }

    /// Forgets the pooled connections of `mailbox` (its token was refused).
    pub fn forget(&self, mailbox: &str) {
        self.transports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(mailbox);
    }

    pub async fn send(
        &self,
        token: &SecretString,
        mailbox: &str,
        recipients: &[String],
        mime: &[u8],
    ) -> DeliveryOutcome {
        let transport = match self.transport(mailbox, token) {
            Ok(t) => t,
            Err(e) => return DeliveryOutcome::unreachable("exchange smtp", e),
        };
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
        match transport.send_raw(&envelope, mime).await {
            Ok(response) => DeliveryOutcome::Delivered {
                status: u16::from(response.code()),
            },
            Err(error) => match error.status() {
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
                None => {
                    DeliveryOutcome::unreachable("exchange smtp", crate::describe_error(&error))
                }
            },
        }
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
