//! The legacy-TLS listener's TLS: OpenSSL, because rustls (rightly) speaks only TLS
//! 1.2 and 1.3 with AEAD suites, and many printers and scanners still in use speak
//! only TLS 1.0/1.1 or only CBC suites. OpenSSL's security level is lowered on this
//! one acceptor only (`@SECLEVEL=0`, which TLS 1.0/1.1 need in OpenSSL 3); the
//! normal listeners never use it.
//!
//! What it offers, exactly (docs/edge.md says the same, and `scripts/check-tls`
//! checks it): TLS 1.0, 1.1, 1.2 and 1.3; for TLS 1.3 OpenSSL's three AEAD suites;
//! below 1.3 ECDHE with AES-GCM or ChaCha20, ECDHE with AES-CBC (SHA-1), and RSA key
//! exchange with AES-GCM or AES-CBC (SHA-1) — no 3DES, RC4, export or anonymous
//! suites, no SSL 3.0, no compression, no renegotiation; the server's order wins.
//!
//! It serves the same certificate as the normal listeners: the acceptor is built
//! from the certificate's DER and rebuilt when the edge reloads the files.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
};

use mailbridge_core::tls::ServedCertificate;
use openssl::{
    error::ErrorStack,
    pkey::PKey,
    ssl::{Ssl, SslAcceptor, SslMethod, SslOptions, SslRef, SslVersion},
    x509::X509,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use crate::session::TlsInfo;

/// The cipher suites below TLS 1.3, strongest first (OpenSSL names).
pub const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:\
AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA";

/// The TLS 1.3 suites.
pub const TLS13_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// The acceptor for the certificate served now, cached until it is reloaded.
pub struct LegacyAcceptor {
    certificate: Arc<ServedCertificate>,
    built: Mutex<Option<(u64, SslAcceptor)>>,
}

impl std::fmt::Debug for LegacyAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyAcceptor").finish_non_exhaustive()
    }
}

impl LegacyAcceptor {
    pub fn new(certificate: Arc<ServedCertificate>) -> Self {
        Self {
            certificate,
            built: Mutex::new(None),
        }
    }

    /// The acceptor for the certificate served now (built again after a reload).
    pub fn acceptor(&self) -> Result<SslAcceptor, ErrorStack> {
        let (generation, der) = self.certificate.current_der();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, acceptor)) = built.as_ref()
            && *g == generation
        {
            return Ok(acceptor.clone());
        }
        let acceptor = build(&der.chain, &der.key)?;
        *built = Some((generation, acceptor.clone()));
        Ok(acceptor)
    }

    /// The TLS handshake on `stream`; on failure, OpenSSL's reason in words.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<SslStream<S>, String> {
        let acceptor = self
            .acceptor()
            .map_err(|e| format!("the server's TLS setup failed: {e}"))?;
        let ssl = Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
        let mut stream = SslStream::new(ssl, stream).map_err(|e| e.to_string())?;
        match Pin::new(&mut stream).accept().await {
            Ok(()) => Ok(stream),
            Err(e) => Err(reason(&e)),
        }
    }
}

fn build(chain: &[Vec<u8>], key: &[u8]) -> Result<SslAcceptor, ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate(SslMethod::tls_server())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1))?;
    builder.set_max_proto_version(None)?;
    builder.set_cipher_list(&format!("{CIPHERS}:@SECLEVEL=0"))?;
    builder.set_ciphersuites(TLS13_SUITES)?;
    builder.set_options(
        SslOptions::NO_SSLV2
            | SslOptions::NO_SSLV3
            | SslOptions::NO_COMPRESSION
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_TICKET,
    );
    // The Mozilla profile this starts from switches TLS 1.3 off, and older versions
    // may be off in OpenSSL's own defaults: the versions are the minimum's alone.
    builder.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1 | SslOptions::NO_TLSV1_3);
    builder.set_groups_list("X25519:P-256:P-384")?;
    let mut certificates = chain.iter();
    if let Some(leaf) = certificates.next() {
        let leaf = X509::from_der(leaf)?;
        builder.set_certificate(&leaf)?;
    }
    for intermediate in certificates {
        builder.add_extra_chain_cert(X509::from_der(intermediate)?)?;
    }
    let key = PKey::private_key_from_der(key)?;
    builder.set_private_key(&key)?;
    builder.check_private_key()?;
    Ok(builder.build())
}

/// OpenSSL's reason for a failed handshake, without its error-queue codes.
fn reason(error: &openssl::ssl::Error) -> String {
    let reasons: Vec<String> = error
        .ssl_error()
        .map(|stack| {
            stack
                .errors()
                .iter()
                .filter_map(|e| e.reason().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match reasons.first() {
        Some(reason) => reason.clone(),
        None => match error.io_error() {
            Some(io) => format!("connection error during the handshake: {io}"),
            None => "the connection closed during the handshake".to_owned(),
        },
    }
}

impl TlsInfo {
    /// What an OpenSSL session negotiated, named as rustls names it (`TLSv1.0`, the
    /// IANA suite name).
    pub(crate) fn of_openssl(ssl: &SslRef) -> Self {
        let protocol = match ssl.version_str() {
            "TLSv1" => "TLSv1.0".to_owned(),
            other => other.to_owned(),
        };
        let cipher = ssl
            .current_cipher()
            .map(|c| c.standard_name().unwrap_or(c.name()).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Self { protocol, cipher }
    }
}

#[cfg(test)]
mod tests {
    use openssl::ssl::{SslConnector, SslVerifyMode};

    use super::*;

    /// A TLS 1.0-only client's handshake against `legacy`: what the server saw, and
    /// the certificate the client got.
    async fn tls10_handshake(legacy: &LegacyAcceptor) -> (TlsInfo, Vec<u8>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
        connector.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
        connector
            .set_min_proto_version(Some(SslVersion::TLS1))
            .unwrap();
        connector
            .set_max_proto_version(Some(SslVersion::TLS1))
            .unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        let ssl = connector
            .build()
            .configure()
            .unwrap()
            .into_ssl("mail.example")
            .unwrap();
        let mut client = SslStream::new(ssl, client).unwrap();
        let (server, connected) =
            tokio::join!(legacy.accept(server), Pin::new(&mut client).connect());
        connected.unwrap();
        let server = server.unwrap();
        let peer = client.ssl().peer_certificate().unwrap().to_der().unwrap();
        (TlsInfo::of_openssl(server.ssl()), peer)
    }

    #[tokio::test]
    async fn tls10_is_served_with_the_reloaded_certificate() {
        let dir = std::env::temp_dir().join(format!("legacy-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let first =
            mailbridge_core::tls::Identity::self_signed(&["mail.example".to_owned()]).unwrap();
        let first_der = first.chain[0].as_ref().to_vec();
        first.write_pem_files(&cert, &key).unwrap();
        let served = Arc::new(ServedCertificate::from_files(&cert, &key).unwrap());
        let legacy = LegacyAcceptor::new(served.clone());

        let (info, peer) = tls10_handshake(&legacy).await;
        assert_eq!(info.protocol, "TLSv1.0");
        assert!(
            info.cipher.starts_with("TLS_ECDHE_ECDSA_WITH_AES_")
                && info.cipher.ends_with("_CBC_SHA"),
            "{}",
            info.cipher
        );
        assert_eq!(peer, first_der);

        // A renewed pair: the next handshake gets it, as on the normal listeners.
        let second =
            mailbridge_core::tls::Identity::self_signed(&["mail.example".to_owned()]).unwrap();
        let second_der = second.chain[0].as_ref().to_vec();
        second.write_pem_files(&cert, &key).unwrap();
        assert_eq!(
            served.reload_if_changed().unwrap(),
            mailbridge_core::tls::Reload::Reloaded
        );
        let (_, peer) = tls10_handshake(&legacy).await;
        assert_eq!(peer, second_der);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
