//! Verifying customers' admin consents, in the worker (which holds the MSP app's
//! credential; the web holds none). The web records a consent when Microsoft sends
//! the customer's admin back; here a worker claims the due check, asks Entra for a
//! token for the customer's tenant with the MSP app, and looks at the app roles it
//! carries. Right after a consent Entra may not know the app in the tenant yet
//! (`AADSTS700016`) or issue tokens without the new roles: the check is retried with
//! backoff until its limit (15 minutes by default), and only then fails, with the
//! explanation of the last refusal.

use mailbridge_core::ids::TenantId;
use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use mailbridge_core::{
    consent_checks::{self, ConsentCheck, Refusal},
    diagnosis, least_privilege,
    metrics::metrics,
    tenants::{self, Tenant},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use mailbridge_m365::token::{TokenError, TokenKey};

use crate::Worker;

/// How long a worker holds a check it works on; a token request takes at most 30 s.
const CLAIM: Duration = Duration::from_secs(90);
/// The longest wait between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(120);

/// Works the due consent checks until `shutdown` is cancelled.
pub(crate) async fn check_loop(worker: Arc<Worker>, shutdown: CancellationToken) {
    let pool = worker.pool.clone();
    let sweep = Duration::from_secs(worker.settings.worker.sweep_seconds.max(1));
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            listener = listen(&pool).await;
        }
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match consent_checks::claim_due(&pool, &worker.identity, CLAIM).await {
                Ok(Some(check)) => worker.work_consent_check(check).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim consent checks: database unavailable");
                    break;
                }
            }
        }
        let wait = match consent_checks::next_due(&pool).await {
            Ok(Some(due)) => (due - Utc::now()).to_std().unwrap_or_default().min(sweep),
            _ => sweep,
        };
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(drop),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            received = notified => if received.is_err() { listener = None },
        }
    }
}

async fn listen(pool: &sqlx::PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(consent_checks::CHANNEL).await.ok()?;
    Some(listener)
}

/// What one attempt found.
enum Attempt {
    /// Every role delivery needs is in the tokens.
    Verified,
    /// Not yet: Microsoft may still be propagating the consent.
    NotYet(Refusal),
    /// Waiting cannot help (the MSP app's own credential, a wrong tenant …).
    Refused(Refusal),
}

fn refusal(diagnosis: &diagnosis::Diagnosis, detail: impl Into<String>) -> Refusal {
    Refusal {
        code: diagnosis.key.to_owned(),
        detail: detail.into(),
    }
}

impl Worker {
    async fn work_consent_check(&self, check: ConsentCheck) {
        let outcome = match tenants::get(&self.pool, check.tenant_id).await {
            Ok(Some(tenant)) => self.consent_attempt(&check, &tenant).await,
            // Deleted meanwhile: its check went with it.
            Ok(None) => return,
            Err(e) => Attempt::NotYet(refusal(&diagnosis::INTERNAL, e.to_string())),
        };
        let limit = self.settings.worker.consent_check_limit;
        let deadline =
            check.requested_at + chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        let stage;
        let result = match outcome {
            Attempt::Verified => {
                stage = "verified";
                consent_checks::verify(&self.pool, &check, &self.identity).await
            }
            Attempt::NotYet(refusal) if now < deadline => {
                stage = "retried";
                let first = self
                    .settings
                    .worker
                    .consent_retry_first
                    .max(Duration::from_secs(1));
                let wait = consent_checks::backoff(check.attempts, first, BACKOFF_CAP);
                let next =
                    (now + chrono::Duration::from_std(wait).unwrap_or_default()).min(deadline);
                tracing::info!(tenant = %check.tenant_id, attempt = check.attempts, reason = %refusal.code, retry_in = ?(next - now), "consent not usable yet: Microsoft may still be propagating it");
                consent_checks::retry_at(&self.pool, check.id, &self.identity, next, &refusal).await
            }
            Attempt::NotYet(refusal) | Attempt::Refused(refusal) => {
                stage = "failed";
                tracing::warn!(tenant = %check.tenant_id, attempts = check.attempts, reason = %refusal.code, detail = %refusal.detail, "consent check failed");
                consent_checks::fail(&self.pool, &check, &self.identity, &refusal).await
            }
        };
        match result {
            Ok(true) => {
                metrics().web.consents.with_label_values(&[stage]).inc();
                if stage == "verified" {
                    self.on_consent_verified(&check).await;
                }
            }
            Ok(false) => {
                tracing::info!(tenant = %check.tenant_id, "consent check taken over by another worker or replaced by a newer consent")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record a consent check's outcome; it is tried again when its claim expires")
            }
        }
    }

    /// Called once a customer's consent is verified and the customer connected (its
    /// waiting messages were made due in the same transaction): a hold on the
    /// customer (consent missing or revoked) is probed at once, so its messages go
    /// the moment the probe succeeds.
    async fn on_consent_verified(&self, check: &ConsentCheck) {
        tracing::info!(tenant = %check.tenant_id, entra_tenant = %check.entra_tenant_id, attempts = check.attempts, "consent verified: the customer is connected");
        // Limited mode: the consent granted no mail permission; a message sent as the
        // sender mailbox proves the Exchange grant once the customer's admin ran the
        // script (it waits, held, until then).
        if let Err(e) = self.queue_exchange_verification(check).await {
            tracing::warn!(error = %e, tenant = %check.tenant_id, "could not queue the Exchange permission check; it is queued again from the customer's page");
        }
        if let Err(e) =
            mailbridge_core::holds::probe_customer_now(&self.pool, check.tenant_id).await
        {
            tracing::warn!(error = %e, tenant = %check.tenant_id, "could not probe the customer's holds after its consent; they are probed on their schedule");
        }
    }

    async fn queue_exchange_verification(&self, check: &ConsentCheck) -> Result<(), sqlx::Error> {
        let Some(tenant) = tenants::get(&self.pool, check.tenant_id).await? else {
            return Ok(());
        };
        let permissions = least_privilege::get(&self.pool, tenant.id).await?;
        if permissions.limited_on_graph(&tenant) && permissions.exchange_verified_at.is_none() {
            let queued = least_privilege::queue_verification(
                &self.pool,
                &self.master_key,
                &tenant,
                &self.settings.edge.hostname,
            )
            .await?;
            tracing::info!(tenant = %tenant.id, message = ?queued, "limited mode: waiting for the Exchange script; a message as the sender mailbox checks it");
        }
        Ok(())
    }

    /// One attempt: a fresh token for every resource the customer's delivery needs,
    /// each carrying its app role — except, in limited mode, Graph's `Mail.Send`: the
    /// Exchange grant (RBAC for Applications) does not show in tokens, so a token at
    /// all is what the consent proves there. The Graph token's `oid` (the app's
    /// service principal in the tenant) and its tenant-wide mail roles are recorded.
    async fn consent_attempt(&self, check: &ConsentCheck, tenant: &Tenant) -> Attempt {
        let permissions = match least_privilege::get(&self.pool, tenant.id).await {
            Ok(p) => p,
            Err(e) => return Attempt::NotYet(refusal(&diagnosis::INTERNAL, e.to_string())),
        };
        let limited = permissions.limited_on_graph(tenant);
        let Some(app) = self.msp_app() else {
            return Attempt::Refused(refusal(
                &diagnosis::NOT_CONFIGURED,
                "the workers have no MSP app credential (MAILBRIDGE_ENTRA_CLIENT_ID and a secret or certificate)",
            ));
        };
        for (resource, role) in consent_checks::needed_roles(&self.settings.m365, tenant) {
            let key = TokenKey {
                entra_tenant_id: check.entra_tenant_id,
                client_id: app.client_id.clone(),
                scope: format!("{resource}/.default"),
            };
            // A cached token (or refusal) from before the consent proves nothing.
            self.tokens.invalidate(&key).await;
            let token = match self.tokens.get(&key, &app, &tenant.id.to_string()).await {
                Ok(token) => token,
                Err(TokenError::Rejected {
                    aadsts,
                    description,
                    ..
                }) => {
                    let diagnosis = diagnosis::token(aadsts);
                    let refusal = refusal(diagnosis, description);
                    // The app not (yet) known in the tenant, or its consent not (yet)
                    // there: what propagation looks like. Anything else is the MSP
                    // app's or the tenant's problem, which waiting does not fix.
                    return match aadsts {
                        Some(700016 | 65001) | None => Attempt::NotYet(refusal),
                        Some(_) => Attempt::Refused(refusal),
                    };
                }
                Err(e) => {
                    return Attempt::NotYet(refusal(&diagnosis::UNREACHABLE, e.to_string()));
                }
            };
            let claims = claims_of(token.access_token.expose_secret());
            let roles = claims.roles;
            if resource == self.settings.m365.graph_resource {
                let oid = claims
                    .oid
                    .as_deref()
                    .and_then(|o| uuid::Uuid::parse_str(o).ok());
                if let Err(e) =
                    least_privilege::record_token(&self.pool, tenant.id, oid, &roles).await
                {
                    return Attempt::NotYet(refusal(&diagnosis::INTERNAL, e.to_string()));
                }
                if limited {
                    if oid.is_none() {
                        return Attempt::NotYet(refusal(
                            &diagnosis::MISSING_ROLE,
                            format!(
                                "{resource}: the token carries no oid (service principal object id)"
                            ),
                        ));
                    }
                    continue;
                }
            }
            if !roles.iter().any(|r| r == role) {
                return Attempt::NotYet(refusal(
                    &diagnosis::MISSING_ROLE,
                    format!("{resource}: the token's roles are {roles:?}, {role} is needed"),
                ));
            }
        }
        Attempt::Verified
    }
}

/// Records the service principal and the tenant-wide mail roles a Graph token of the
/// customer's tenant shows (for the customer's page; a failure only loses the update).
pub(crate) async fn record_token_roles(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    access_token: &secrecy::SecretString,
) {
    let claims = claims_of(access_token.expose_secret());
    let oid = claims
        .oid
        .as_deref()
        .and_then(|o| uuid::Uuid::parse_str(o).ok());
    if let Err(e) = least_privilege::record_token(pool, tenant_id, oid, &claims.roles).await {
        tracing::debug!(error = %e, "could not record the token's roles");
    }
}

/// What the consent check reads from an access token.
#[derive(Debug, Default, Deserialize)]
struct Claims {
    /// The app roles (tenant-wide application permissions).
    #[serde(default)]
    roles: Vec<String>,
    /// The app's service principal in the tenant.
    #[serde(default)]
    oid: Option<String>,
}

/// The claims of an access token (read, not verified: it came straight from the
/// token endpoint over TLS, and Microsoft verifies it when it is used).
fn claims_of(access_token: &str) -> Claims {
    access_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_oid_are_read_from_the_token() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"roles":["Mail.Send"],"tid":"x","oid":"o"}"#);
        let claims = claims_of(&format!("h.{payload}.s"));
        assert_eq!(claims.roles, ["Mail.Send"]);
        assert_eq!(claims.oid.as_deref(), Some("o"));
        assert!(claims_of("garbage").roles.is_empty());
    }
}
