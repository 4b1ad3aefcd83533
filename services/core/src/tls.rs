//! TLS material: the edge's server certificate (from PEM files, or self-signed when
//! none is configured), and the client configuration for every outbound call — the
//! system roots plus an optional extra CA bundle. There is deliberately no way to
//! turn certificate verification off.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path}: {detail}")]
    Pem { path: String, detail: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Reads every certificate of a PEM bundle.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            chain: load_certificates(cert)?,
            key: load_private_key(key)?,
        })
    }

    /// Writes the chain and the key as PEM files, as `from_pem_files` reads them
    /// (for processes started with this identity).
    pub fn write_pem_files(&self, cert: &Path, key: &Path) -> std::io::Result<()> {
        let chain: String = self
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c.as_ref()))
            .collect();
        std::fs::write(cert, chain)?;
        std::fs::write(key, pem("PRIVATE KEY", self.key.secret_der()))
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let signing_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        set_validity(&mut params);
        let cert = params.self_signed(&signing_key)?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(signing_key.serialize_der()).map_err(|e| {
                TlsError::Pem {
                    path: "generated key".into(),
                    detail: e.to_string(),
                }
            })?,
        })
    }

    /// A server configuration offering TLS 1.2 and 1.3 with rustls' safe defaults
    /// (ECDHE key exchange and AEAD ciphers only).
    pub fn server_config(self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        // The server's order (strongest first), not the client's, picks the cipher.
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

/// From yesterday, 825 days in all: the longest that clients accept for a server
/// certificate (rcgen's default runs to the year 4096).
fn set_validity(params: &mut rcgen::CertificateParams) {
    use chrono::Datelike;
    let date = |d: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    params.not_before = date(now - chrono::Duration::days(1));
    params.not_after = date(now + chrono::Duration::days(824));
}

/// A small certificate authority and a server certificate it signed, for the
/// simulator and for tests: clients trust the CA through `MAILBRIDGE_EXTRA_CA_FILE`.
#[derive(Debug)]
pub struct LocalAuthority {
    pub ca_pem: String,
    pub server: Identity,
}

impl LocalAuthority {
    pub fn generate(common_name: &str, server_names: &[String]) -> Result<Self, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut ca_params);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(server_names.to_vec())?;
        set_validity(&mut params);
        params.distinguished_name.push(
            DnType::CommonName,
            server_names
                .first()
                .map(String::as_str)
                .unwrap_or(common_name),
        );
        let server_cert = params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server: Identity {
                chain: vec![server_cert.der().clone()],
                key: PrivateKeyDer::try_from(server_key.serialize_der()).map_err(|e| {
                    TlsError::Pem {
                        path: "generated key".into(),
                        detail: e.to_string(),
                    }
                })?,
            },
        })
    }
}

/// The client configuration for outbound TLS (token endpoint, Graph, SMTP):
/// the system's trusted roots plus `extra_ca_file`, TLS 1.2 or newer.
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(root_store(extra_ca_file)?)
            .with_no_client_auth(),
    ))
}

/// The system roots (those that parse) plus the extra bundle.
pub fn root_store(extra_ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca_file {
        for cert in load_certificates(path)? {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// Installs the process-wide crypto provider once; rustls needs it before the first
/// configuration is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// One DER item as PEM.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
