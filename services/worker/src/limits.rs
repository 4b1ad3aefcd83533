//! Microsoft's limits per mailbox, kept by all worker processes together through
//! PostgreSQL (never per process):
//!
//! - concurrency: 4 Graph requests per app and mailbox, 3 SMTP connections per
//!   mailbox. A delivery holds one of the mailbox's slots — a transaction-scoped
//!   advisory lock — for as long as it talks to Microsoft; a worker that dies drops
//!   its connection and with it the slot, so no slot is ever lost.
//! - rate: 30 messages a minute per mailbox by SMTP (more would only be delayed by
//!   Exchange), and 10 000 recipients a day per mailbox (more are refused).
//! - Graph's budget: 10 000 requests per 10 minutes and 150 MB uploaded per 5
//!   minutes per app and mailbox (see `graph_budget`).
//! - throttling: a mailbox Graph answered `429`/`503` with `Retry-After` is held
//!   (see `mailbridge_core::holds`): no worker leases its messages until then.
//!
//! A message that would break a limit is not attempted: it is deferred a little
//! (no attempt recorded, nothing counted against it).

use std::time::Duration;

use mailbridge_core::store::mailbox_limits;
use mailbridge_core::tenants::DeliveryMethod;
use sqlx::{PgPool, Postgres, Transaction};

pub use mailbridge_core::queue::{GRAPH_CONCURRENCY_PER_MAILBOX, SMTP_CONNECTIONS_PER_MAILBOX};
pub use mailbridge_m365::outcome::Wait;
pub const SMTP_MESSAGES_PER_MINUTE: i64 = 30;
pub const RECIPIENTS_PER_DAY: i64 = 10_000;

/// How long releasing a slot may take before it is left to its connection.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A held concurrency slot; dropping it ends the transaction and frees the slot
/// (a moment later: the rollback is sent in the background).
pub struct Slot {
    transaction: Transaction<'static, Postgres>,
}

impl Slot {
    /// Frees the slot now, so that the mailbox's next message finds it free. Bounded:
    /// with the database unreachable the slot goes with its connection instead.
    pub async fn release(self) {
        let rollback = tokio::time::timeout(RELEASE_TIMEOUT, self.transaction.rollback());
        if !matches!(rollback.await, Ok(Ok(()))) {
            tracing::debug!("a mailbox slot was not released in time; it goes with its connection");
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// Takes a slot for sending as `mailbox` with `method` (for the app `client_id`), or
/// says why not now. `recipients` is what this message would add to the day's count.
pub async fn admit(
    pool: &PgPool,
    method: DeliveryMethod,
    client_id: &str,
    mailbox: &str,
    recipients: usize,
) -> Result<Result<Slot, Wait>, sqlx::Error> {
    let mailbox = mailbox.to_ascii_lowercase();
    let (scope, slots) = match method {
        DeliveryMethod::Graph => (
            format!("graph:{client_id}:{mailbox}"),
            GRAPH_CONCURRENCY_PER_MAILBOX,
        ),
        DeliveryMethod::Smtp => (format!("smtp:{mailbox}"), SMTP_CONNECTIONS_PER_MAILBOX),
    };
    let mut transaction = pool.begin().await?;
    let smtp_cap = (method == DeliveryMethod::Smtp).then_some(SMTP_MESSAGES_PER_MINUTE);
    let used =
        mailbox_limits::admission(&mut transaction, &mailbox, smtp_cap, &scope, slots).await?;
    if used.recipients_today + recipients as i64 > RECIPIENTS_PER_DAY {
        return Ok(Err(Wait::RecipientsPerDay));
    }
    if used.smtp_last_minute >= SMTP_MESSAGES_PER_MINUTE {
        return Ok(Err(Wait::RatePerMinute));
    }
    if used.slot.is_some() {
        return Ok(Ok(Slot { transaction }));
    }
    Ok(Err(Wait::Busy))
}
