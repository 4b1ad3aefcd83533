//! The data layer's home for the control plane's people and their sign-ins, and for
//! the worker's shared limits: one module per table group, owning every statement
//! on its tables, with compile-time checked queries (`sqlx::query!`, the offline
//! data in `.sqlx/`). Handlers and the worker call functions here and hold no SQL;
//! `scripts/check-store` keeps it that way.

pub mod api_tokens;
pub mod audit_log;
pub mod consent_links;
pub mod credential_downloads;
pub mod customer_health;
pub mod customer_list;
pub mod device_list;
pub mod graph_usage;
pub mod mailbox_limits;
pub mod message_log;
pub mod secret_reveals;
pub mod sessions;
pub mod sign_in_flows;
pub mod staff;

use sha2::{Digest, Sha256};

/// How a secret that is looked up (a session id, a flow's state, an API token, a
/// bootstrap code) is stored: its SHA-256, never the secret itself.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// How a long list (customers, a customer's devices) is sorted; each list turns it
/// into its own ORDER BY.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum ListSort {
    #[default]
    Name,
    /// Longest unseen first (never seen first of all): what stopped sending.
    LastSeen,
    /// Most queued first.
    Queued,
    /// Most failures first.
    Failures,
}

impl ListSort {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The sort named `name` (as [`Self::as_str`] gives it).
    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Name => crate::tr!("Name"),
            Self::LastSeen => crate::tr!("Last seen"),
            Self::Queued => crate::tr!("Queued"),
            Self::Failures => crate::tr!("Failures"),
        }
    }
}

/// A `LIKE` pattern matching `text` anywhere, its wildcards taken literally.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Ends a list's statement with its order and one page: `limit` rows from `offset`.
fn page_window(
    query: &mut sqlx::QueryBuilder<sqlx::Postgres>,
    order_by: &'static str,
    offset: i64,
    limit: i64,
) {
    query
        .push(order_by)
        .push(" LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
}
