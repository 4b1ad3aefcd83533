//! Settlement: what an attempt's outcome means for its message — accepted, failed
//! at once, or due again after a backoff (at once when held, soon after our own
//! database failed or a mailbox slot was busy), failed when past its maximum age —
//! recorded with the attempt (tried again while the database is unreachable, in
//! `group_settle`); the holds and the customer's token record an outcome tells of;
//! the metrics; the report to a device's sender when its message failed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mailbridge_core::{
    diagnosis,
    holds::{Condition, HoldKey},
    metrics::metrics,
    queue::{self, AttemptOutcome, DeliveryAttempt, LeasedMessage, MessageKind, Settlement},
    tenants::{self, DeliveryMethod},
};
use mailbridge_m365::outcome::{self, DeliveryOutcome, Source};

use crate::{Worker, holds, notify};

/// What one attempt did, for its settlement.
pub(crate) struct Attempted {
    pub started_at: DateTime<Utc>,
    /// Started with the attempt: its duration.
    pub clock: Instant,
    pub method: DeliveryMethod,
    /// The sender mailbox, when the customer was found.
    pub mailbox: Option<String>,
    pub outcome: DeliveryOutcome,
}

impl Worker {
    /// Settles one attempt: a deferral puts the message back without counting; any
    /// other outcome is recorded with the holds and credentials it tells of, the
    /// message is settled by the policy (accepted, failed, or due again), and a
    /// failed device message is reported to its sender.
    pub(crate) async fn conclude(
        &self,
        message: LeasedMessage,
        probe: Option<HoldKey>,
        attempted: Attempted,
    ) {
        let Attempted {
            started_at,
            clock,
            method,
            mailbox,
            outcome,
        } = attempted;
        if let DeliveryOutcome::Deferred(wait) = outcome {
            if let Some(hold) = &probe
                && let Err(e) =
                    mailbridge_core::holds::reschedule(&self.pool, hold, wait.delay()).await
            {
                tracing::warn!(error = %e, "could not reschedule a hold's probe");
            }
            let until = Utc::now() + wait.delay();
            metrics()
                .worker
                .deferrals
                .with_label_values(&[&message.tenant_id.to_string(), wait.reason()])
                .inc();
            if let Err(e) = queue::defer(&self.pool, message.id, &self.identity, until).await {
                tracing::warn!(queue_id = %message.id, error = %e, "could not defer message; the next lease takes it up again");
            }
            return;
        }
        let failure = outcome.failure();
        let attempt = DeliveryAttempt {
            started_at,
            duration_ms: clock.elapsed().as_millis().min(i32::MAX as u128) as i32,
            method: method.as_str().to_owned(),
            outcome: outcome.attempt_outcome(),
            upstream_status: outcome.status().map(i32::from),
            upstream_code: failure.map(|f| f.code.clone()),
            upstream_message: failure.map(|f| f.message.chars().take(2000).collect()),
            diagnosis: failure.map(|f| f.diagnosis.key.to_owned()),
            mailbox,
            worker: self.identity.clone(),
        };
        self.track_tenant_credentials(&message, &outcome).await;
        let held = self.track_holds(&message, &outcome, probe.as_ref()).await;
        let mut expired = false;
        let settlement = match (&outcome, attempt.outcome) {
            (DeliveryOutcome::Accepted { .. }, _) => Settlement::Accepted,
            (_, AttemptOutcome::Permanent) => Settlement::Failed,
            (DeliveryOutcome::Deferred(wait), _) => Settlement::RetryAt(Utc::now() + wait.delay()),
            (DeliveryOutcome::Failed(failure), _) => {
                let next = if held {
                    // Held: due the moment its hold is released (no one leases it
                    // before); its own backoff does not grow.
                    Utc::now()
                } else if std::ptr::eq(failure.diagnosis, &diagnosis::INTERNAL) {
                    // Our own database hiccuped: nothing upstream to spare, try soon.
                    Utc::now() + Duration::from_secs(5)
                } else if std::ptr::eq(failure.diagnosis, &diagnosis::CONCURRENCY) {
                    // `432 4.3.2`: the mailbox's connections are taken (by another
                    // client of the customer's, or one closing). A slot frees within
                    // seconds; nothing about the message was wrong, so its backoff
                    // does not grow.
                    Utc::now() + Duration::from_millis(2_000 + rand::random_range(0..3_000))
                } else {
                    Utc::now() + outcome::backoff(message.attempt_count, failure.retry_after)
                };
                let max_age =
                    chrono::Duration::seconds(self.settings.worker.max_age_seconds as i64);
                if next - message.received_at > max_age {
                    // A held message fails with its hold's reason: this failure's.
                    expired = true;
                    Settlement::Failed
                } else {
                    Settlement::RetryAt(next)
                }
            }
        };
        record_metrics(&message, method, &outcome);
        tracing::info!(
            queue_id = %message.id,
            tenant = %message.tenant_id,
            attempt = message.attempt_count,
            outcome = ?attempt.outcome,
            diagnosis = attempt.diagnosis.as_deref().unwrap_or(""),
            code = attempt.upstream_code.as_deref().unwrap_or(""),
            expired,
            "delivery attempt"
        );
        // A failed device message's report goes with its settlement.
        let report = match (settlement, message.kind) {
            (Settlement::Failed, MessageKind::Device) => {
                let failure = outcome
                    .failure()
                    .expect("a failed settlement has a failure");
                self.report(&message, failure, expired).await
            }
            _ => None,
        };
        match self
            .settle(&message, &attempt, settlement, report.as_ref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Another worker took the lease over: if this attempt delivered, the
                // message may be delivered twice.
                if matches!(outcome, DeliveryOutcome::Accepted { .. }) {
                    metrics().worker.duplicates.inc();
                }
                tracing::warn!(queue_id = %message.id, "lease was lost before settling; another worker owns it");
                return;
            }
            // The lease expires and the message is tried again: at least once.
            Err(e) => {
                tracing::error!(queue_id = %message.id, error = %e, "could not settle message");
                return;
            }
        }
        // A test message (or a hold's probe) accepted as the sender mailbox proves a
        // limited customer's Exchange grant.
        if matches!(settlement, Settlement::Accepted)
            && (message.kind == MessageKind::Test || probe.is_some())
        {
            match mailbridge_core::least_privilege::record_exchange_proof(
                &self.pool,
                message.tenant_id,
            )
            .await
            {
                Ok(true) => {
                    tracing::info!(tenant = %message.tenant_id, "limited mode: the Exchange grant works, the customer is connected")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, tenant = %message.tenant_id, "could not record the Exchange proof")
                }
            }
        }
    }

    /// The report that `message` failed (`expired`: past its maximum age), to queue
    /// with its settlement; none when no one has an address for it, or when it
    /// cannot be written now (the failure is settled all the same: a lost report
    /// must not keep a failed message retrying).
    async fn report(
        &self,
        message: &LeasedMessage,
        failure: &outcome::Failure,
        expired: bool,
    ) -> Option<queue::NewMessage> {
        notify::undeliverable(&self.pool, &self.settings, message, failure, expired)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(queue_id = %message.id, error = %e, "could not write the failure report");
                None
            })
    }

    /// Records the attempt and settles the message, retrying while the database is
    /// unreachable — for most of the lease, so that an answer Microsoft already gave
    /// is recorded rather than the message delivered again after the lease expires.
    async fn settle(
        &self,
        message: &LeasedMessage,
        attempt: &DeliveryAttempt,
        settlement: Settlement,
        report: Option<&queue::NewMessage>,
    ) -> Result<bool, std::sync::Arc<sqlx::Error>> {
        let store = crate::group_settle::Database {
            pool: &self.pool,
            key: &self.master_key,
            owner: &self.identity,
        };
        let patience = Duration::from_secs(self.settings.worker.lease_seconds).mul_f64(0.8);
        self.settlements
            .settle_patiently(&store, message.id, attempt, settlement, report, patience)
            .await
    }

    /// Records the tenant's token refusals, for its page (the hold that keeps its
    /// messages waiting is placed by [`Self::track_holds`]).
    async fn track_tenant_credentials(&self, message: &LeasedMessage, outcome: &DeliveryOutcome) {
        let Some(f) = outcome.failure() else { return };
        if f.source != Source::TokenEndpoint || f.repeated || f.status.is_none() {
            return;
        }
        let error = format!("{}: {}", f.code, f.message);
        if let Err(e) = tenants::record_token_failure(&self.pool, message.tenant_id, &error).await {
            tracing::warn!(error = %e, "could not record the token failure");
        }
    }

    /// Puts a hold on the scope a failure belongs to (mailbox, customer, app), and
    /// settles the probe this attempt was: a probe that got past its hold's scope
    /// releases it (every held message is due at once), one that met the same
    /// condition backs the hold's schedule off. Returns whether the message is held.
    async fn track_holds(
        &self,
        message: &LeasedMessage,
        outcome: &DeliveryOutcome,
        probe: Option<&HoldKey>,
    ) -> bool {
        let scope = outcome
            .failure()
            .and_then(|f| holds::scope_of(f).map(|s| (s, f)));
        let mut held = false;
        if let Some((scope, failure)) = scope {
            let app = self.msp_identity();
            let detail = format!("{}: {}", failure.code, failure.message);
            let condition = Condition {
                scope,
                tenant_id: message.tenant_id,
                app: app.as_ref(),
                reason: failure.diagnosis.key,
                detail: &detail,
                retry_after: failure
                    .retry_after
                    .map(|w| w.min(Duration::from_secs(3_600))),
                probe_failed: probe.is_some_and(|p| p.scope == scope),
            };
            match mailbridge_core::holds::hold(&self.pool, &condition).await {
                Ok(Some(key)) => {
                    held = true;
                    if probe.is_none_or(|p| *p != key) {
                        tracing::info!(scope = scope.as_str(), subject = %key.subject, reason = failure.diagnosis.key, "deliveries held");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not hold the scope; the message retries on its own")
                }
            }
        }
        let Some(probe) = probe else { return held };
        let result = match scope {
            Some((scope, _)) if scope == probe.scope => Ok(()),
            // Another, wider condition: this hold was not tested.
            Some((scope, _)) if scope > probe.scope => {
                mailbridge_core::holds::reschedule(
                    &self.pool,
                    probe,
                    mailbridge_core::holds::probe_interval(0),
                )
                .await
            }
            // Accepted, or got past the held scope.
            _ => match mailbridge_core::holds::release(&self.pool, probe).await {
                Ok(released) => {
                    if released {
                        tracing::info!(scope = probe.scope.as_str(), subject = %probe.subject, "hold released: its messages are due");
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not settle a hold's probe");
        }
        held
    }

    /// Fails a held message past its maximum age with its hold's reason, and reports
    /// it like any failure.
    pub(crate) async fn give_up_held(&self, held: mailbridge_core::holds::Expired) {
        let diagnosis = diagnosis::by_key(&held.reason).unwrap_or(&diagnosis::EXPIRED);
        let (code, text) = held
            .detail
            .split_once(": ")
            .map(|(c, t)| (c.to_owned(), t.to_owned()))
            .unwrap_or_else(|| (diagnosis.key.to_owned(), held.detail.clone()));
        let failure = outcome::Failure {
            diagnosis,
            source: Source::Local,
            status: None,
            code,
            message: text,
            retry_after: None,
            repeated: true,
        };
        let message = held.message;
        let attempt = DeliveryAttempt {
            started_at: Utc::now(),
            duration_ms: 0,
            method: held.method,
            outcome: AttemptOutcome::Permanent,
            upstream_status: None,
            upstream_code: Some(failure.code.clone()),
            upstream_message: Some(failure.message.chars().take(2000).collect()),
            diagnosis: Some(diagnosis.key.to_owned()),
            mailbox: None,
            worker: self.identity.clone(),
        };
        tracing::info!(queue_id = %message.id, tenant = %message.tenant_id, diagnosis = diagnosis.key, "held message past its maximum age: failed");
        let report = match message.kind {
            MessageKind::Device => self.report(&message, &failure, true).await,
            _ => None,
        };
        let settled = self
            .settle(&message, &attempt, Settlement::Failed, report.as_ref())
            .await;
        if let Err(e) = settled {
            tracing::error!(queue_id = %message.id, error = %e, "could not settle message");
        }
    }
}

/// Counts the attempt, Microsoft's refusal if it was one, and the latency of a delivery.
fn record_metrics(message: &LeasedMessage, method: DeliveryMethod, outcome: &DeliveryOutcome) {
    let metrics = &metrics().worker;
    let tenant = message.tenant_id.to_string();
    let result = match outcome.attempt_outcome() {
        AttemptOutcome::Accepted => "accepted",
        AttemptOutcome::Retry => "retry",
        AttemptOutcome::Permanent => "permanent",
    };
    metrics
        .deliveries
        .with_label_values(&[&tenant, method.as_str(), result])
        .inc();
    match outcome {
        DeliveryOutcome::Accepted { .. } => {
            let latency = (Utc::now() - message.received_at)
                .to_std()
                .unwrap_or_default();
            metrics
                .delivery_latency
                .with_label_values(&[method.as_str()])
                .observe(latency.as_secs_f64());
        }
        // An answer from Microsoft 365 itself (the token endpoint has its own metric).
        DeliveryOutcome::Failed(f) if f.source == Source::Resource => {
            metrics
                .upstream_rejects
                .with_label_values(&[&tenant, f.diagnosis.key])
                .inc();
        }
        DeliveryOutcome::Failed(_) | DeliveryOutcome::Deferred(_) => {}
    }
}
