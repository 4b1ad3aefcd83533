//! The worker's share of the cluster's housekeeping: every worker offers to run the
//! purge each interval (`mailbridge_core::retention` lets one of them do it) and
//! queues log rows left without a queue row by an edge of the previous version, and
//! keeps its presence lock while it runs, releasing the leases of workers whose lock
//! is gone (`mailbridge_core::workers`), and reads the MSP app's certificate
//! credential again when its files change.

use std::time::Duration;

use mailbridge_core::{
    metrics::metrics,
    queue,
    retention::{self, Retention},
    workers::{self, Presence},
};
use mailbridge_m365::credentials::msp_app;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// Offers to run the purge at start and every interval, until `shutdown`; adopts
/// orphaned log rows (`queue::adopt_orphans`) as often.
pub async fn purge_loop(pool: PgPool, retention: Retention, shutdown: CancellationToken) {
    let every = retention.interval.max(Duration::from_secs(1));
    loop {
        match queue::adopt_orphans(&pool).await {
            Ok(0) => {}
            Ok(adopted) => tracing::warn!(
                adopted,
                "queued messages written without a queue row (by an edge of the previous version) are queued now"
            ),
            Err(e) => tracing::warn!(error = %e, "could not look for messages without a queue row"),
        }
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

/// Holds this worker's presence lock until `stop`, and every `every` releases the
/// leased messages of workers that died.
pub async fn presence_loop(
    pool: PgPool,
    identity: String,
    every: Duration,
    stop: CancellationToken,
) {
    let mut presence = None;
    loop {
        match presence.as_mut() {
            None => match Presence::register(&pool, &identity).await {
                Ok(p) => presence = Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "could not register the worker's presence; retrying")
                }
            },
            Some(p) => {
                if let Err(e) = p.keep(&pool).await {
                    tracing::warn!(error = %e, "the worker's presence lock was lost; retrying");
                }
            }
        }
        match workers::release_the_departed(&pool, &identity).await {
            Ok(0) => {}
            Ok(released) => {
                mailbridge_core::metrics::metrics()
                    .worker
                    .departed_releases
                    .inc_by(released);
                tracing::warn!(released, "a worker died: its leased messages are due again");
            }
            Err(e) => tracing::debug!(error = %e, "could not look for departed workers"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Some(presence) = presence {
        presence.leave().await;
    }
}

/// Checks the MSP app's certificate files every `MAILBRIDGE_TLS_RELOAD_SECONDS` until
/// `stop`: a renewed certificate credential is used for the next token requests.
pub async fn certificate_loop(worker: std::sync::Arc<Worker>, stop: CancellationToken) {
    let every = worker
        .settings
        .edge
        .tls_reload_interval
        .max(Duration::from_secs(1));
    let mut seen = None;
    loop {
        worker.reload_msp_certificate(&mut seen);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

impl Worker {
    /// Reads the MSP app's certificate credential again if its files changed
    /// (`seen` holds the digest last read); a pair that does not load leaves the
    /// previous credential in use. Returns whether the credential was replaced.
    pub(crate) fn reload_msp_certificate(&self, seen: &mut Option<[u8; 32]>) -> bool {
        let m365 = &self.settings.m365;
        let (Some(cert), Some(key)) = (&m365.client_certificate_file, &m365.client_key_file) else {
            return false;
        };
        let Ok(digest) = mailbridge_core::tls::files_digest(cert, key) else {
            return false;
        };
        let first = seen.is_none();
        if seen.replace(digest) == Some(digest) || first {
            return false;
        }
        let metrics = &metrics().tls_certificate_reloads;
        match msp_app(&self.settings) {
            Ok(app) => {
                *self.msp_app.write().unwrap_or_else(|p| p.into_inner()) = app;
                metrics.with_label_values(&["entra_app", "reloaded"]).inc();
                tracing::info!("the MSP app's certificate credential changed: using the new one");
                true
            }
            Err(e) => {
                metrics.with_label_values(&["entra_app", "failed"]).inc();
                tracing::error!(error = %e, "the MSP app's changed certificate files do not load: still using the previous credential");
                false
            }
        }
    }
}
