//! The simulated Entra ID over real HTTPS: client-credentials tokens (secrets and
//! certificates), admin consent, and the OIDC sign-in flow, as a relay and a
//! browser meet them.

mod admin_consent;
mod harness;
mod sign_in;
mod tokens;
