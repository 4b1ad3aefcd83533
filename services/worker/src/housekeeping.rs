//! The worker's share of the cluster's housekeeping: every worker offers to run the
//! purge each interval, and `mailbridge_core::retention` lets one of them do it.

use std::time::Duration;

use mailbridge_core::retention::{self, Retention};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Offers to run the purge at start and every interval, until `shutdown`.
pub async fn purge_loop(pool: PgPool, retention: Retention, shutdown: CancellationToken) {
    let every = retention.interval.max(Duration::from_secs(1));
    loop {
        match retention::purge_if_due(&pool, &retention).await {
            Ok(Some(purged)) => {
                let metrics = &mailbridge_core::metrics::metrics().worker;
                for (table, records) in &purged {
                    metrics.purged.with_label_values(&[table]).inc_by(*records);
                }
                let total: u64 = purged.iter().map(|(_, n)| n).sum();
                if total > 0 {
                    tracing::info!(?purged, "purged records past their retention");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "purge failed; tried again next interval"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
