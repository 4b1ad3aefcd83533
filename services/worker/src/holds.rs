//! The worker's side of holds (`mailbridge_core::holds`): which scope a failure
//! belongs to — the message, its mailbox, its customer, or the app — and the loop
//! that probes due holds and fails held messages past their maximum age.

use std::{sync::Arc, time::Duration};

use mailbridge_core::{
    diagnosis::{self, Class},
    holds::{self, Scope},
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use mailbridge_m365::{
    outcome::{Failure, Source},
    token::AppCredentials,
};

use crate::Worker;

/// Holds probed at once by one worker at most per round.
const PROBES_PER_ROUND: i64 = 16;
/// How often a worker looks for due probes (an index probe).
const PROBE_TICK: Duration = Duration::from_secs(1);
/// How often a worker looks for held messages past their maximum age.
const EXPIRY_TICK: Duration = Duration::from_secs(5);
/// Held messages failed per round.
const EXPIRED_PER_ROUND: i64 = 100;

/// The scope of a condition `failure` reveals, if it is wider than its message:
/// its messages are held rather than retried one by one. `None`: the message's own
/// failure (or a permanent one), settled as before.
pub fn scope_of(failure: &Failure) -> Option<Scope> {
    let d = failure.diagnosis;
    if d.class != Class::Retry {
        return None;
    }
    let is = |other: &diagnosis::Diagnosis| std::ptr::eq(d, other);
    if is(&diagnosis::EXPIRED_SECRET)
        || is(&diagnosis::INVALID_SECRET)
        || is(&diagnosis::BAD_ASSERTION)
    {
        return Some(Scope::App);
    }
    if failure.source == Source::TokenEndpoint {
        // No answer from Entra (down, overloaded): nobody gets a token.
        if is(&diagnosis::UNREACHABLE) {
            return Some(Scope::App);
        }
        // The customer's tenant, its consent, or an answer not known in detail.
        return Some(Scope::Customer);
    }
    if is(&diagnosis::NOT_CONNECTED)
        || is(&diagnosis::ACCESS_DENIED)
        || is(&diagnosis::SMTP_AUTH_DISABLED)
        || is(&diagnosis::SMTP_AUTH_REFUSED)
    {
        return Some(Scope::Customer);
    }
    // Throttling, the sending quota, and the mailbox's server being unwell (an
    // outage of Microsoft 365 holds each mailbox, probed one request at a time).
    if is(&diagnosis::THROTTLED)
        || is(&diagnosis::QUOTA_EXCEEDED)
        || is(&diagnosis::SERVER_ERROR)
        || is(&diagnosis::TEMPORARY)
        || (is(&diagnosis::UNREACHABLE) && failure.source == Source::Network)
    {
        return Some(Scope::Mailbox);
    }
    None
}

/// Identifies `app`'s credential in an app hold: a digest, never the secret.
pub fn credential_fingerprint(app: &AppCredentials) -> String {
    use mailbridge_core::tenants::AppCredential;
    use secrecy::ExposeSecret;
    let mut digest = Sha256::new();
    match &app.credential {
        AppCredential::ClientSecret(secret) => {
            digest.update(b"secret\0");
            digest.update(secret.expose_secret().as_bytes());
        }
        AppCredential::Certificate(certificate) => {
            digest.update(b"certificate\0");
            digest.update(certificate.certificate_pem.as_bytes());
        }
    }
    digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Probes due holds and fails held messages past their maximum age, until
/// `shutdown`. At start, the MSP app's holds are probed at once: this worker may
/// bring the credential that clears them.
pub async fn probe_loop(worker: Arc<Worker>, shutdown: CancellationToken) {
    if let Some(app) = worker.msp_identity()
        && let Err(e) = holds::probe_app_now(&worker.pool, &app.client_id).await
    {
        tracing::warn!(error = %e, "could not ask for a probe of the app's holds");
    }
    let lease = Duration::from_secs(worker.settings.worker.lease_seconds);
    let max_age = Duration::from_secs(worker.settings.worker.max_age_seconds);
    let mut expiry_due = tokio::time::Instant::now();
    loop {
        let app = worker.msp_identity();
        let probes = worker.take_leases(
            |_| {
                holds::lease_probes(
                    &worker.pool,
                    &worker.identity,
                    lease,
                    app.as_ref(),
                    PROBES_PER_ROUND,
                )
            },
            |p| p.message.id,
        );
        match probes.await {
            Ok(probes) => {
                for probe in probes {
                    tracing::info!(scope = probe.hold.scope.as_str(), subject = %probe.hold.subject, queue_id = %probe.message.id, "probing a hold");
                    let worker = worker.clone();
                    tokio::spawn(async move {
                        let id = probe.message.id;
                        worker.deliver(probe.message, Some(probe.hold)).await;
                        worker.finished(id);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for holds to probe"),
        }
        if tokio::time::Instant::now() >= expiry_due {
            expiry_due = tokio::time::Instant::now() + EXPIRY_TICK;
            let expired = worker.take_leases(
                |_| {
                    holds::lease_expired(
                        &worker.pool,
                        &worker.identity,
                        lease,
                        max_age,
                        app.as_ref(),
                        EXPIRED_PER_ROUND,
                    )
                },
                |e| e.message.id,
            );
            match expired.await {
                Ok(expired) => {
                    for held in expired {
                        let id = held.message.id;
                        worker.give_up_held(held).await;
                        worker.finished(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for held messages past their maximum age")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailbridge_m365::outcome::DeliveryOutcome;

    fn scope(outcome: DeliveryOutcome) -> Option<Scope> {
        scope_of(outcome.failure().expect("a failure"))
    }

    #[test]
    fn failures_are_scoped() {
        use mailbridge_m365::token::TokenError;
        let refused = |code| {
            DeliveryOutcome::token(&TokenError::Rejected {
                status: 401,
                error: "invalid_client".into(),
                aadsts: Some(code),
                description: String::new(),
            })
        };
        assert_eq!(scope(refused(7000222)), Some(Scope::App));
        assert_eq!(scope(refused(7000215)), Some(Scope::App));
        assert_eq!(scope(refused(65001)), Some(Scope::Customer));
        assert_eq!(scope(refused(700016)), Some(Scope::Customer));
        assert_eq!(scope(refused(90002)), Some(Scope::Customer));
        assert_eq!(
            scope(DeliveryOutcome::token(&TokenError::Unreachable("x".into()))),
            Some(Scope::App)
        );
        let graph = |status, code: &str| {
            scope(DeliveryOutcome::graph(
                status,
                code.into(),
                String::new(),
                None,
            ))
        };
        assert_eq!(graph(429, "ApplicationThrottled"), Some(Scope::Mailbox));
        assert_eq!(graph(503, "ServiceUnavailable"), Some(Scope::Mailbox));
        assert_eq!(graph(403, "ErrorAccessDenied"), Some(Scope::Customer));
        assert_eq!(graph(401, "InvalidAuthenticationToken"), None);
        assert_eq!(graph(403, "ErrorSendAsDenied"), None);
        assert_eq!(
            scope(DeliveryOutcome::smtp(535, "5.7.139", String::new())),
            Some(Scope::Customer)
        );
        assert_eq!(
            scope(DeliveryOutcome::smtp(432, "4.3.2", String::new())),
            None
        );
    }
}
