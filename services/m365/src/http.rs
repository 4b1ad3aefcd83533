//! The HTTP client builder for calls to Microsoft (Entra ID, Graph) and to the
//! identity provider: the relay's TLS roots (with the operator's extra CA), a
//! connect timeout and mailbridge's user agent. Each user adds what is its own
//! (the control plane's overall timeout and refusal of redirects, the workers'
//! idle-connection lifetime).

use std::{path::Path, time::Duration};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the builder could not be made.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct HttpSetupError(#[from] mailbridge_core::tls::TlsError);

/// A client builder with the relay's TLS configuration (`extra_ca_file`: an
/// additional CA to trust), the connect timeout and the user agent.
pub fn builder(extra_ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, HttpSetupError> {
    mailbridge_core::tls::install_crypto_provider();
    let tls = mailbridge_core::tls::client_config(extra_ca_file)?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("mailbridge/", env!("CARGO_PKG_VERSION"))))
}
