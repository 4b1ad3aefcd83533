//! Structured logging to stderr (stdout is for what commands print): human-readable
//! on a terminal, JSON when `MAILBRIDGE_LOG_FORMAT=json` (production). The filter
//! comes from `RUST_LOG` (default `info`). Every SMTP session has a span with its
//! session id; every message is logged with its queue id from the edge's `250` to
//! the worker's attempts (and sent to Graph as `client-request-id`), so one message
//! can be followed across processes. Passwords, tokens and message bodies are never
//! logged.

use tracing_subscriber::{EnvFilter, fmt};

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MAILBRIDGE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, `dev` starting parts in-process) keeps the first subscriber.
    drop(result);
}
