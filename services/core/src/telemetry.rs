//! Structured logging: human-readable on a terminal, JSON when `MAILBRIDGE_LOG_FORMAT=json`
//! (production). The filter comes from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt};

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MAILBRIDGE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt().with_env_filter(filter).with_target(true);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, `dev` starting parts in-process) keeps the first subscriber.
    drop(result);
}
