//! mailbridge-m365: the Microsoft 365 client. App-only tokens from Entra ID (client
//! secret or certificate), Graph `sendMail` (MIME and JSON) and its large-message
//! path, SMTP `XOAUTH2` delivery to Exchange Online, the classification of every
//! answer into a [`outcome::DeliveryOutcome`], the MSP app's credentials from the
//! settings, and the one HTTP client builder both the workers and the control plane
//! use. It holds no SQL: what a delivery must remember between attempts (a
//! large message's draft) it asks its caller to keep through a small trait.

pub mod credentials;
pub mod graph;
pub mod graph_json;
pub mod graph_large;
pub mod http;
pub mod meter;
pub mod mime;
pub mod outcome;
pub mod smtp;
pub mod token;

pub use mailbridge_core::describe_error;

/// A readable account of an HTTP failure, with its causes (TLS, DNS, timeout …).
pub fn describe_http_error(error: &reqwest::Error) -> String {
    let mut text = describe_error(error);
    if error.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}
