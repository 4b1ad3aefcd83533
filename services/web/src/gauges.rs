//! The gauges read from PostgreSQL for the whole cluster: queue depth, the age of the
//! oldest due message and whether consent works, per customer. The web exports them
//! (every replica the same values; the alert rules take the maximum per tenant), so
//! they do not depend on any worker running — a queue that grows while every worker
//! is down still shows. Only customers with something to report have series:
//! messages queued, or a consent that a token refusal has shown broken. The others'
//! series are removed, so idle customers cost nothing. `mailbridge_tenant_info`
//! (tenant id to name, for every customer) lets dashboards and the workers' counters
//! be read by name. Held messages by scope and reason come from `holds`.

use std::{collections::HashSet, time::Duration};

use mailbridge_core::queue::{self, CustomerQueue};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The label sets exported in the last round, to remove those that stop reporting.
#[derive(Debug, Default)]
struct Exported {
    reporting: HashSet<(String, String)>,
    named: HashSet<(String, String)>,
}

/// Updates the gauges every `every` until `shutdown`.
pub async fn report(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    let mut exported = Exported::default();
    let mut held = HashSet::new();
    loop {
        match read(&pool).await {
            Ok(rows) => exported = export(rows, exported),
            // Kept as they were: a database outage has its own signs (readiness, 451s).
            Err(e) => tracing::debug!(error = %e, "cluster gauges not updated"),
        }
        match crate::holds::export_gauges(&pool, held.clone()).await {
            Ok(now) => held = now,
            Err(e) => tracing::debug!(error = %e, "hold gauges not updated"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn read(pool: &PgPool) -> Result<Vec<CustomerQueue>, sqlx::Error> {
    queue::per_customer(pool).await
}

fn export(rows: Vec<CustomerQueue>, previous: Exported) -> Exported {
    let web = &mailbridge_core::metrics::metrics().web;
    let info = &mailbridge_core::metrics::metrics().tenant_info;
    let mut now = Exported::default();
    for row in rows {
        let labels = (row.tenant_id.to_string(), row.name);
        let values = [labels.0.as_str(), labels.1.as_str()];
        info.with_label_values(&values).set(1);
        if row.reports {
            web.queue_depth.with_label_values(&values).set(row.depth);
            web.queue_oldest_due_seconds
                .with_label_values(&values)
                .set(row.oldest_due_seconds.max(0.0) as i64);
            web.tenant_consent_ok
                .with_label_values(&values)
                .set(i64::from(row.consent_ok));
            now.reporting.insert(labels.clone());
        }
        now.named.insert(labels);
    }
    for gone in previous.reporting.difference(&now.reporting) {
        let values = [gone.0.as_str(), gone.1.as_str()];
        let _ = web.queue_depth.remove_label_values(&values);
        let _ = web.queue_oldest_due_seconds.remove_label_values(&values);
        let _ = web.tenant_consent_ok.remove_label_values(&values);
    }
    for gone in previous.named.difference(&now.named) {
        let _ = info.remove_label_values(&[gone.0.as_str(), gone.1.as_str()]);
    }
    now
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn row(name: &str, depth: i64, consent_ok: bool, connected: bool) -> CustomerQueue {
        CustomerQueue {
            tenant_id: Uuid::new_v4().into(),
            name: name.to_owned(),
            depth,
            oldest_due_seconds: 60.0 * depth as f64,
            consent_ok,
            reports: depth > 0 || (connected && !consent_ok),
        }
    }

    #[test]
    fn only_customers_with_something_to_report_have_series() {
        let busy = row("Praxis Busy", 3, true, true);
        let revoked = row("Kanzlei Revoked", 0, false, true);
        let idle = row("Idle GmbH", 0, true, true);
        let onboarding = row("New Customer", 0, false, false);
        let busy_id = busy.tenant_id.to_string();
        let exported = export(vec![busy, revoked, idle, onboarding], Exported::default());
        let text = mailbridge_core::metrics::metrics().encode();
        assert!(text.contains(&format!(
            "mailbridge_queue_depth{{customer=\"Praxis Busy\",tenant=\"{busy_id}\"}} 3"
        )));
        assert!(text.contains(&format!(
            "mailbridge_queue_oldest_due_seconds{{customer=\"Praxis Busy\",tenant=\"{busy_id}\"}} 180"
        )));
        assert!(text.contains("mailbridge_tenant_consent_ok{customer=\"Kanzlei Revoked\""));
        assert!(!text.contains("customer=\"Idle GmbH\""));
        assert!(!text.contains("customer=\"New Customer\""));
        assert!(text.contains("mailbridge_tenant_info{name=\"Idle GmbH\""));
        assert_eq!(exported.reporting.len(), 2);

        // The queue drains: its series go, the name stays while the customer exists.
        let mut drained = row("Praxis Busy", 0, true, true);
        drained.tenant_id = busy_id.parse().unwrap();
        export(vec![drained], exported);
        let text = mailbridge_core::metrics::metrics().encode();
        assert!(!text.contains("customer=\"Praxis Busy\""), "{text}");
        assert!(!text.contains("Kanzlei Revoked"), "{text}");
        assert!(text.contains(&format!(
            "mailbridge_tenant_info{{name=\"Praxis Busy\",tenant=\"{busy_id}\"}} 1"
        )));
    }
}
