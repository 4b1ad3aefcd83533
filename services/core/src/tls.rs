//! TLS material: the edge's server certificate (from PEM files, re-read when they
//! change, or self-signed when none is configured), and the client configuration for
//! every outbound call — the system roots plus an optional extra CA bundle. There is
//! deliberately no way to turn certificate verification off.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
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
        let resolver = Arc::new(ServedCertificate::new(self.served()?, None));
        Ok(server_config_with(resolver))
    }

    /// The chain and key ready to serve; refused when the key is not the
    /// certificate's.
    pub fn certified_key(self) -> Result<Arc<CertifiedKey>, TlsError> {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        Ok(Arc::new(CertifiedKey::from_der(
            self.chain, self.key, &provider,
        )?))
    }
}

/// The server configuration around a certificate resolver.
pub fn server_config_with(resolver: Arc<ServedCertificate>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The server's order (strongest first), not the client's, picks the cipher.
    config.ignore_client_order = true;
    Arc::new(config)
}

/// When a certificate (DER) stops being valid, in seconds since the epoch.
pub fn not_after(certificate: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(certificate)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

/// The certificate every new handshake gets: the one from the configured files, read
/// again when their content changes (cert-manager renews a mounted Secret in place),
/// so that a long-running edge never serves an expired certificate. A new pair that
/// does not load (half written, the key not the certificate's) is refused, logged and
/// the previous one kept. Sessions already open keep what they negotiated.
#[derive(Debug)]
pub struct ServedCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    /// The same pair as DER, numbered by load, for TLS stacks other than rustls (the
    /// legacy-TLS listener builds its own acceptor from it when the number changes).
    der: RwLock<(u64, Arc<IdentityDer>)>,
    files: Option<(PathBuf, PathBuf)>,
    /// A digest of the files' content when last loaded (or tried).
    seen: Mutex<[u8; 32]>,
}

/// What a check of the files found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
}

/// A certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), DER.
#[derive(Debug)]
pub struct IdentityDer {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
}

impl Identity {
    /// The pair ready to serve, and the same as DER.
    fn served(self) -> Result<(Arc<CertifiedKey>, Arc<IdentityDer>), TlsError> {
        let der = IdentityDer {
            chain: self.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            key: self.key.secret_der().to_vec(),
        };
        Ok((self.certified_key()?, Arc::new(der)))
    }
}

impl ServedCertificate {
    fn new(
        (key, der): (Arc<CertifiedKey>, Arc<IdentityDer>),
        files: Option<(PathBuf, PathBuf)>,
    ) -> Self {
        Self {
            current: RwLock::new(key),
            der: RwLock::new((1, der)),
            files,
            seen: Mutex::new([0; 32]),
        }
    }

    /// The pair served now as DER, with its load number (it grows with each reload).
    pub fn current_der(&self) -> (u64, Arc<IdentityDer>) {
        let der = self.der.read().unwrap_or_else(|p| p.into_inner());
        (der.0, der.1.clone())
    }

    /// Serves the pair in `cert` and `key`, to be re-read by [`Self::reload_if_changed`].
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let served = Self::new(
            Identity::from_pem_files(cert, key)?.served()?,
            Some((cert.to_owned(), key.to_owned())),
        );
        *served.seen.lock().unwrap_or_else(|p| p.into_inner()) = files_digest(cert, key)?;
        Ok(served)
    }

    /// Serves a fixed identity (self-signed; nothing to re-read).
    pub fn fixed(identity: Identity) -> Result<Self, TlsError> {
        Ok(Self::new(identity.served()?, None))
    }

    /// Loads the files again if their content changed since the last look. An error
    /// leaves the certificate served as it was (and is not retried until the files
    /// change again).
    pub fn reload_if_changed(&self) -> Result<Reload, TlsError> {
        let Some((cert, key)) = &self.files else {
            return Ok(Reload::Unchanged);
        };
        let digest = files_digest(cert, key)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == digest {
                return Ok(Reload::Unchanged);
            }
            *seen = digest;
        }
        let (loaded, der) = Identity::from_pem_files(cert, key)?.served()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        let mut current_der = self.der.write().unwrap_or_else(|p| p.into_inner());
        *current_der = (current_der.0 + 1, der);
        Ok(Reload::Reloaded)
    }

    /// When the certificate served now expires (seconds since the epoch).
    pub fn not_after(&self) -> Option<i64> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.cert.first().and_then(|c| not_after(c.as_ref()))
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A digest of two files' content: whether a certificate and key pair changed.
pub fn files_digest(cert: &Path, key: &Path) -> Result<[u8; 32], TlsError> {
    use sha2::{Digest, Sha256};
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let mut hasher = Sha256::new();
    hasher.update(read(cert)?);
    hasher.update([0]);
    hasher.update(read(key)?);
    Ok(hasher.finalize().into())
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
