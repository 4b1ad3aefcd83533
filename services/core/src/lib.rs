//! mailbridge-core: what every part of mailbridge shares — configuration, the
//! PostgreSQL schema and its queries (tenants, devices, the message queue), secrets
//! at rest and TLS material.
//!
//! It owns no listener and no upstream protocol: the edge, the worker, the web
//! control plane and the simulator build on it.

pub mod address;
mod alert_mail;
pub mod alerts;
pub mod allocator;
pub mod bounces;
pub mod cloud;
pub mod config;
pub mod consent_checks;
pub mod crypto;
pub mod db;
pub mod devices;
pub mod diagnosis;
pub mod group_commit;
pub mod header_fields;
pub mod holds;
pub mod i18n;
pub mod ids;
pub mod least_privilege;
pub mod logins;
pub mod message_id;
pub mod metrics;
pub mod migration_board;
pub mod ops;
pub mod own_mail;
pub mod queue;
pub mod retention;
pub mod smtp_auth_report;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod transcripts;
pub mod usage;
pub mod webhooks;
pub mod workers;

pub use config::Settings;

/// An error with its chain of causes, for logs and recorded answers.
pub fn describe_error(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
