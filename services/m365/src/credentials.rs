//! The MSP's multi-tenant app from the settings: its client id with a client secret,
//! or with a certificate and its private key. Only the workers read the secret or
//! the key; the control plane asks only whether they were (wrongly) given to it.

use mailbridge_core::{
    Settings,
    tenants::{AppCredential, CertificateCredential},
};
use secrecy::SecretString;

use crate::token::AppCredentials;

/// Why the MSP app's credential cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(String);

/// The MSP's app from the settings: a client secret, or a certificate and its key.
pub fn msp_app(settings: &Settings) -> Result<Option<AppCredentials>, CredentialError> {
    let m365 = &settings.m365;
    let Some(client_id) = m365.client_id.clone() else {
        return Ok(None);
    };
    let credential = match (
        &m365.client_certificate_file,
        &m365.client_key_file,
        &m365.client_secret,
    ) {
        (Some(cert), Some(key), _) => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| CredentialError(format!("{}: {e}", path.display())))
            };
            let certificate_pem = read(cert)?;
            // Its expiry, for the alert before Entra starts refusing it.
            if let Some(expiry) =
                mailbridge_core::tls::load_certificates(cert)
                    .ok()
                    .and_then(|chain| {
                        chain
                            .first()
                            .and_then(|c| mailbridge_core::tls::not_after(c))
                    })
            {
                mailbridge_core::metrics::metrics()
                    .tls_certificate_expiry
                    .with_label_values(&["entra_app"])
                    .set(expiry);
            }
            AppCredential::Certificate(CertificateCredential {
                certificate_pem,
                private_key_pem: SecretString::from(read(key)?),
            })
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(CredentialError(
                "set both MAILBRIDGE_ENTRA_CLIENT_CERTIFICATE_FILE and MAILBRIDGE_ENTRA_CLIENT_KEY_FILE".into(),
            ));
        }
        (None, None, Some(secret)) => AppCredential::ClientSecret(secret.clone()),
        (None, None, None) => return Ok(None),
    };
    Ok(Some(AppCredentials {
        client_id,
        credential,
    }))
}

/// Whether the settings carry the MSP app's secret or private key: what only the
/// workers may hold (the control plane warns when it was given them).
pub fn holds_msp_secret(settings: &Settings) -> bool {
    settings.m365.client_secret.is_some() || settings.m365.client_key_file.is_some()
}
