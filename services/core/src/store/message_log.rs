//! The message log as the control plane searches it (`messages` with its customer's
//! and device's names, and the queue row of a message still on its way): one page
//! at a time, newest first, by a keyset cursor on (received, id), never by offset.

use crate::ids::DeviceId;
use crate::ids::MessageId;
use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::queue::MessageState;

/// One row of the log.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct LoggedMessage {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub device_id: Option<DeviceId>,
    pub device_name: Option<String>,
    pub kind: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub subject: Option<String>,
    pub size_bytes: i64,
    pub state: MessageState,
    pub attempt_count: i32,
    pub received_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub client_addr: String,
    pub tls_protocol: Option<String>,
    pub tls_cipher: Option<String>,
}

/// A search, its values checked already; every part optional.
#[derive(Debug, Default)]
pub struct Search {
    /// Only these customers (a member limited to some); `None`: all.
    pub customers_seen: Option<Vec<TenantId>>,
    pub id: Option<Uuid>,
    pub tenant_id: Option<TenantId>,
    pub device_id: Option<DeviceId>,
    /// The envelope sender, any case.
    pub sender: Option<String>,
    /// An envelope recipient, as given or in lower case.
    pub recipient: Option<String>,
    pub state: Option<MessageState>,
    pub received_from: Option<DateTime<Utc>>,
    pub received_until: Option<DateTime<Utc>>,
    /// Older than this row (the cursor of the next page).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// A message on its way has a queue row: its attempts, due time and last error are
/// there, and a lease makes it `delivering`.
const SELECT: &str = "SELECT m.id, m.tenant_id, t.name AS tenant_name, m.device_id,
        d.name AS device_name, m.kind, m.mail_from, m.rcpt_to, m.subject, m.size_bytes,
        CASE WHEN q.lease_owner IS NOT NULL THEN 'delivering' ELSE m.state END AS state,
        COALESCE(q.attempt_count, m.attempt_count) AS attempt_count, m.received_at,
        COALESCE(q.due_at, m.finished_at, m.received_at) AS next_attempt_at, m.finished_at,
        COALESCE(q.last_error, m.last_error) AS last_error,
        host(m.client_addr) AS client_addr, m.tls_protocol, m.tls_cipher
   FROM messages m JOIN tenants t ON t.id = m.tenant_id LEFT JOIN devices d ON d.id = m.device_id
   LEFT JOIN queue q ON q.message_id = m.id";

/// One page (`limit` rows, and one more if there is a next page) matching `search`.
pub async fn search(pool: &PgPool, search: &Search) -> Result<Vec<LoggedMessage>, sqlx::Error> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(SELECT);
    query.push(" WHERE true");
    if let Some(seen) = &search.customers_seen {
        query
            .push(" AND m.tenant_id = ANY(")
            .push_bind(seen.clone())
            .push(")");
    }
    if let Some(id) = search.id {
        query.push(" AND m.id = ").push_bind(id);
    }
    if let Some(tenant_id) = search.tenant_id {
        query.push(" AND m.tenant_id = ").push_bind(tenant_id);
    }
    if let Some(device_id) = search.device_id {
        query.push(" AND m.device_id = ").push_bind(device_id);
    }
    if let Some(sender) = &search.sender {
        query
            .push(" AND lower(m.mail_from) = ")
            .push_bind(sender.to_lowercase());
    }
    if let Some(recipient) = &search.recipient {
        let variants = vec![recipient.clone(), recipient.to_lowercase()];
        query.push(" AND m.rcpt_to && ").push_bind(variants);
    }
    match search.state {
        // The log says `queued` for both; the queue row tells them apart.
        Some(MessageState::Queued) => {
            query.push(" AND m.state = 'queued' AND q.lease_owner IS NULL");
        }
        Some(MessageState::Delivering) => {
            query.push(" AND m.state = 'queued' AND q.lease_owner IS NOT NULL");
        }
        Some(state) => {
            query.push(" AND m.state = ").push_bind(state);
        }
        None => {}
    }
    if let Some(from) = search.received_from {
        query.push(" AND m.received_at >= ").push_bind(from);
    }
    if let Some(until) = search.received_until {
        query.push(" AND m.received_at < ").push_bind(until);
    }
    if let Some((at, id)) = search.after {
        query
            .push(" AND (m.received_at, m.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY m.received_at DESC, m.id DESC LIMIT ")
        .push_bind(search.limit + 1);
    query.build_query_as().fetch_all(pool).await
}

/// The message `id`, if it exists.
pub async fn get(pool: &PgPool, id: MessageId) -> Result<Option<LoggedMessage>, sqlx::Error> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(SELECT);
    query.push(" WHERE m.id = ").push_bind(id);
    query.build_query_as().fetch_optional(pool).await
}
