//! mailbridge-worker: turns queued messages into messages in the customer's
//! Microsoft 365.
//!
//! A worker leases due messages from PostgreSQL (`FOR UPDATE SKIP LOCKED`, so any
//! number of workers share one queue), is woken by LISTEN/NOTIFY with a periodic
//! sweep for retries as a safety net, gets an app-only token for the message's
//! tenant, delivers through Graph `sendMail`, records the attempt, and settles the
//! message. It never answers a device and never deletes a message it has not
//! settled.

mod alerting;
mod bounces;
pub mod consent_check;
pub mod graph;
pub mod graph_budget;
mod graph_json;
mod graph_large;
pub mod holds;
mod housekeeping;
pub mod limits;
pub mod mime;
mod ndr;
mod notify;
pub mod outcome;
mod sign_in_log;
pub mod smtp;
pub mod token;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::Utc;
use mailbridge_core::{
    Settings,
    crypto::MasterKey,
    diagnosis,
    holds::{AppIdentity, Condition, HoldKey},
    metrics::metrics,
    queue::{self, AttemptOutcome, DeliveryAttempt, LeasedMessage, MessageKind, Settlement},
    tenants::{self, AppCredential, CertificateCredential, DeliveryMethod, Tenant},
};
use secrecy::SecretString;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{
    graph::GraphClient,
    outcome::{DeliveryOutcome, Source},
    smtp::SmtpClient,
    token::{AppCredentials, TokenCache, TokenKey},
};

/// How long a worker with deliveries finishing waits to lease several messages at once.
const LEASE_GATHER: Duration = Duration::from_millis(2);

/// One delivery worker process.
#[derive(Debug)]
pub struct Worker {
    pool: PgPool,
    settings: Settings,
    /// Opens queued bodies and customers' own app secrets.
    master_key: MasterKey,
    tokens: TokenCache,
    graph: GraphClient,
    smtp: SmtpClient,
    /// The MSP's multi-tenant app, for tenants without their own; its certificate
    /// credential is read again when the files change (see `housekeeping`).
    msp_app: std::sync::RwLock<Option<AppCredentials>>,
    /// Written into leases and attempts: which worker did it.
    identity: String,
    /// The messages this worker is delivering now; any other lease in its name is
    /// an orphan (see [`queue::lease_due`]).
    in_flight: Mutex<HashSet<uuid::Uuid>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Tls(#[from] mailbridge_core::tls::TlsError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Smtp(#[from] smtp::SmtpSetupError),
    #[error("the MSP app's credential: {0}")]
    Credential(String),
    #[error("{0}")]
    Config(String),
}

/// The MSP's app from the settings: a client secret, or a certificate and its key.
pub fn msp_app(settings: &Settings) -> Result<Option<AppCredentials>, WorkerError> {
    let m365 = &settings.m365;
    let Some(client_id) = m365.client_id.clone() else {
        return Ok(None);
    };
    let credential = match (
        &m365.client_certificate_file,
        &m365.client_key_file,
        &m365.client_secret,
    ) {
        (Some(cert), Some(key), _) => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| WorkerError::Credential(format!("{}: {e}", path.display())))
            };
            let certificate_pem = read(cert)?;
            // Its expiry, for the alert before Entra starts refusing it.
            if let Some(expiry) =
                mailbridge_core::tls::load_certificates(cert)
                    .ok()
                    .and_then(|chain| {
                        chain
                            .first()
                            .and_then(|c| mailbridge_core::tls::not_after(c))
                    })
            {
                mailbridge_core::metrics::metrics()
                    .tls_certificate_expiry
                    .with_label_values(&["entra_app"])
                    .set(expiry);
            }
            AppCredential::Certificate(CertificateCredential {
                certificate_pem,
                private_key_pem: SecretString::from(read(key)?),
            })
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(WorkerError::Credential(
                "set both MAILBRIDGE_ENTRA_CLIENT_CERTIFICATE_FILE and MAILBRIDGE_ENTRA_CLIENT_KEY_FILE".into(),
            ));
        }
        (None, None, Some(secret)) => AppCredential::ClientSecret(secret.clone()),
        (None, None, None) => return Ok(None),
    };
    Ok(Some(AppCredentials {
        client_id,
        credential,
    }))
}

/// A readable account of an HTTP failure, with its causes (TLS, DNS, timeout …).
pub(crate) fn describe_http_error(error: &reqwest::Error) -> String {
    let mut text = describe_error(error);
    if error.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}

pub(crate) use mailbridge_core::describe_error;

impl Worker {
    pub fn new(pool: PgPool, settings: Settings) -> Result<Self, WorkerError> {
        mailbridge_core::tls::install_crypto_provider();
        let tls = mailbridge_core::tls::client_config(settings.extra_ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("mailbridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let identity = format!(
            "{}:{}:{}",
            settings.edge.hostname,
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Ok(Self {
            tokens: TokenCache::new(http.clone(), settings.m365.login_url.clone()),
            graph: GraphClient::new(
                http,
                settings.m365.graph_url.clone(),
                settings.m365.request_timeout,
            ),
            smtp: SmtpClient::new(
                &settings.m365.smtp_endpoint,
                settings.extra_ca_file.as_deref(),
                settings.m365.request_timeout,
            )?,
            msp_app: std::sync::RwLock::new(msp_app(&settings)?),
            master_key: settings
                .require_master_key()
                .map_err(|e| WorkerError::Config(e.to_string()))?
                .clone(),
            pool,
            settings,
            identity,
            in_flight: Default::default(),
        })
    }

    /// Delivers until `shutdown` is cancelled, then waits for deliveries in flight.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(housekeeping::purge_loop(
            self.pool.clone(),
            mailbridge_core::retention::Retention::from_settings(&self.settings),
            shutdown.clone(),
        ));
        // Held until the deliveries in flight are done, not just until shutdown
        // begins: others take this worker's leases as soon as it is gone.
        let leaving = CancellationToken::new();
        tokio::spawn(housekeeping::certificate_loop(
            self.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(consent_check::check_loop(self.clone(), shutdown.clone()));
        tokio::spawn(self.clone().sign_in_log_loop(shutdown.clone()));
        tokio::spawn(self.clone().bounce_loop(shutdown.clone()));
        tokio::spawn(holds::probe_loop(self.clone(), shutdown.clone()));
        tokio::spawn(alerting::evaluate_loop(self.clone(), shutdown.clone()));
        tokio::spawn(alerting::outbox_loop(self.clone(), shutdown.clone()));
        let presence = tokio::spawn(housekeeping::presence_loop(
            self.pool.clone(),
            self.identity.clone(),
            Duration::from_secs(self.settings.worker.sweep_seconds.max(1)),
            leaving.clone(),
        ));
        let concurrency = self.settings.worker.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let sweep = Duration::from_secs(self.settings.worker.sweep_seconds.max(1));
        let mut listener = None;
        // A delivery that ends may free its mailbox for the next message.
        let finished = Arc::new(Notify::new());
        let gather = (concurrency / 4).max(1);
        let mut busy = false;
        tracing::info!(worker = %self.identity, concurrency, "delivery worker started");
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit.expect("semaphore never closes"),
            };
            let mut batch = vec![first];
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                batch.push(permit);
            }
            if busy && batch.len() < gather {
                // Deliveries are finishing one by one: lease for a few at once
                // rather than one lease query per message.
                let deadline = tokio::time::Instant::now() + LEASE_GATHER;
                while batch.len() < gather {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        permit = permits.clone().acquire_owned() => {
                            batch.push(permit.expect("semaphore never closes"));
                        }
                    }
                }
            }
            let wanted = batch.len();
            let lease = Duration::from_secs(self.settings.worker.lease_seconds);
            let in_flight: Vec<_> = self.in_flight().iter().copied().collect();
            let leased = match queue::lease_due(
                &self.pool,
                &self.identity,
                wanted as i64,
                lease,
                &in_flight,
                self.msp_identity().as_ref(),
            )
            .await
            {
                Ok(leased) => leased,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease messages: database unavailable");
                    drop(batch);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let got = leased.len();
            busy = got > 0;
            for (message, permit) in leased.into_iter().zip(batch.drain(..)) {
                let (worker, finished) = (self.clone(), finished.clone());
                self.in_flight().insert(message.id);
                tokio::spawn(async move {
                    let id = message.id;
                    worker.deliver(message, None).await;
                    worker.in_flight().remove(&id);
                    drop(permit);
                    finished.notify_one();
                });
            }
            drop(batch);
            if got == wanted {
                continue; // There may be more due right now.
            }
            // Nothing (more) due, or only for mailboxes busy to their limit: sleep
            // until a new message, a delivery that frees a mailbox, the sweep, or
            // shutdown.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = finished.notified() => {}
                _ = tokio::time::sleep(sweep) => {}
                woke = wait_for_notification(&mut listener) => {
                    if let Err(e) = woke {
                        tracing::warn!(error = %e, "queue notifications lost; reconnecting");
                        listener = None;
                    }
                }
            }
        }
        tracing::info!("worker stopping: waiting for deliveries in flight");
        let _ = tokio::time::timeout(
            self.settings.worker.shutdown_grace,
            permits.acquire_many(concurrency as u32),
        )
        .await;
        leaving.cancel();
        let _ = presence.await;
    }

    fn in_flight(&self) -> MutexGuard<'_, HashSet<uuid::Uuid>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(queue::QUEUE_CHANNEL).await.ok()?;
        Some(listener)
    }

    /// One attempt for one leased message, recorded and settled; `probe`: the hold
    /// this message was leased to probe.
    async fn deliver(&self, message: LeasedMessage, probe: Option<HoldKey>) {
        if message.recovered {
            metrics().worker.recovered_leases.inc();
            tracing::warn!(queue_id = %message.id, "message recovered from an expired lease; it may arrive twice");
        }
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        let (method, mailbox, outcome) = self.attempt(&message, probe.is_some()).await;
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
        match self.settle(&message, &attempt, settlement).await {
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
        if let (Settlement::Failed, MessageKind::Device) = (settlement, message.kind) {
            let failure = outcome
                .failure()
                .expect("a failed settlement has a failure");
            if let Err(e) = notify::report_undeliverable(
                &self.pool,
                &self.settings,
                &self.master_key,
                &message,
                failure,
                expired,
            )
            .await
            {
                tracing::warn!(queue_id = %message.id, error = %e, "could not queue the failure report");
            }
        }
    }

    /// Records the attempt and settles the message, retrying while the database is
    /// unreachable — for most of the lease, so that an answer Microsoft already gave
    /// is recorded rather than the message delivered again after the lease expires.
    async fn settle(
        &self,
        message: &LeasedMessage,
        attempt: &DeliveryAttempt,
        settlement: Settlement,
    ) -> Result<bool, sqlx::Error> {
        let patience = Duration::from_secs(self.settings.worker.lease_seconds).mul_f64(0.8);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            match queue::settle(&self.pool, message.id, &self.identity, attempt, settlement).await {
                // The database answered and refused: the message is gone (its customer
                // was deleted meanwhile); trying again cannot help.
                Err(sqlx::Error::Database(e))
                    if e.code().is_some_and(|code| code.starts_with("23")) =>
                {
                    return Err(sqlx::Error::Database(e));
                }
                Err(e) if started.elapsed() + pause < patience => {
                    tracing::warn!(queue_id = %message.id, error = %e, "could not record the attempt yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                result => return result,
            }
        }
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
        match self.settle(&message, &attempt, Settlement::Failed).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(queue_id = %message.id, error = %e, "could not settle message");
                return;
            }
        }
        if message.kind == MessageKind::Device
            && let Err(e) = notify::report_undeliverable(
                &self.pool,
                &self.settings,
                &self.master_key,
                &message,
                &failure,
                true,
            )
            .await
        {
            tracing::warn!(queue_id = %message.id, error = %e, "could not queue the failure report");
        }
    }

    /// One try, by the tenant's delivery method, as the tenant's sender mailbox.
    async fn attempt(
        &self,
        message: &LeasedMessage,
        probe: bool,
    ) -> (DeliveryMethod, Option<String>, DeliveryOutcome) {
        let tenant = match tenants::get(&self.pool, message.tenant_id).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => {
                let gone = DeliveryOutcome::local(&diagnosis::GONE, "the customer was deleted");
                return (DeliveryMethod::Graph, None, gone);
            }
            Err(e) => {
                let internal = DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string());
                return (DeliveryMethod::Graph, None, internal);
            }
        };
        let method = match tenant.delivery_method {
            // Too large for one Graph request: by SMTP where the customer allows it.
            DeliveryMethod::Graph if tenant.smtp_for_large_messages => {
                match queue::body_size(&self.pool, message.id).await {
                    Ok(Some(size)) if !graph::fits_one_request(size) => DeliveryMethod::Smtp,
                    _ => DeliveryMethod::Graph,
                }
            }
            method => method,
        };
        let outcome = self.attempt_with(message, &tenant, method, probe).await;
        (method, Some(tenant.sender_mailbox), outcome)
    }

    async fn attempt_with(
        &self,
        message: &LeasedMessage,
        tenant: &Tenant,
        method: DeliveryMethod,
        probe: bool,
    ) -> DeliveryOutcome {
        let body = match queue::body(&self.pool, &self.master_key, message.id).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                return DeliveryOutcome::local(
                    &diagnosis::GONE,
                    "the message body is no longer stored",
                );
            }
            Err(e) => return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string()),
        };
        // Every message leaves with a Message-ID (a bounce is matched by it); the
        // edge adds one, a message queued before it did gets one here.
        let body = if mailbridge_core::message_id::find(&body).is_none() {
            let (body, id) = mailbridge_core::message_id::ensure(
                body,
                0,
                message.id,
                &self.settings.edge.hostname,
            );
            if let Err(e) =
                mailbridge_core::bounces::set_message_id(&self.pool, message.id, &id).await
            {
                return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string());
            }
            body
        } else {
            body
        };
        let Some(entra_tenant_id) = tenant.entra_tenant_id else {
            return DeliveryOutcome::local(
                &diagnosis::NOT_CONNECTED,
                "no admin consent has connected this customer to a Microsoft 365 tenant",
            );
        };
        let app = match self.app_for(tenant).await {
            Ok(app) => app,
            Err(outcome) => return outcome,
        };
        let resource = match method {
            DeliveryMethod::Graph => &self.settings.m365.graph_resource,
            DeliveryMethod::Smtp => &self.settings.m365.exchange_resource,
        };
        let key = TokenKey {
            entra_tenant_id,
            client_id: app.client_id.clone(),
            scope: format!("{resource}/.default"),
        };
        if probe {
            // A probe asks Entra itself: not the refusal remembered moments ago, nor
            // a token issued before the condition changed (a new consent's roles
            // are only in a new token).
            self.tokens.invalidate(&key).await;
        }
        let token = match self.tokens.get(&key, &app, &tenant.id.to_string()).await {
            Ok(token) => token,
            Err(e) => return DeliveryOutcome::token(&e),
        };
        if token.fresh {
            if let Err(e) = tenants::record_token_success(&self.pool, tenant.id).await {
                tracing::debug!(error = %e, "could not record the token success");
            }
            // Tenant-wide mail roles granted (or removed) since the consent show on the
            // customer's page with each new Graph token (about hourly).
            if method == DeliveryMethod::Graph {
                consent_check::record_token_roles(&self.pool, tenant.id, &token.access_token).await;
            }
            // The MSP app works with this credential: holds of its others are stale.
            if tenant.client_id.is_none()
                && let Some(app) = self.msp_identity()
                && let Err(e) =
                    mailbridge_core::holds::release_other_credentials(&self.pool, &app).await
            {
                tracing::debug!(error = %e, "could not release the app's stale holds");
            }
        }
        let recipients = message.rcpt_to.len();
        let slot = match limits::admit(
            &self.pool,
            method,
            &app.client_id,
            &tenant.sender_mailbox,
            recipients,
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(wait)) => return DeliveryOutcome::Deferred(wait),
            Err(e) => return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string()),
        };
        let outcome = match method {
            DeliveryMethod::Graph => {
                let (token, mailbox) = (&token.access_token, &tenant.sender_mailbox);
                let ledger = graph_large::DraftLedger {
                    pool: &self.pool,
                    message_id: message.id,
                };
                // Only the JSON form can leave Sent Items out; it must fit one request.
                let unsaved = (!tenant.save_to_sent_items)
                    .then(|| graph_json::send_mail_request(&body, &message.rcpt_to))
                    .flatten()
                    .filter(|json| json.len() <= graph::MAX_REQUEST_BYTES);
                let mime = mime::with_envelope_recipients(&body, &message.rcpt_to);
                let one_request = graph::fits_one_request(mime.len());
                let cost = match &unsaved {
                    Some(json) => graph_budget::Cost {
                        requests: 1,
                        bytes: json.len() as i64,
                    },
                    None if one_request => graph_budget::Cost {
                        requests: 1,
                        bytes: (mime.len().div_ceil(3) * 4) as i64,
                    },
                    None => graph_large::cost(&mime),
                };
                let reservation =
                    match graph_budget::reserve(&self.pool, &app.client_id, mailbox, cost).await {
                        Ok(Ok(reservation)) => reservation,
                        Ok(Err(over)) => {
                            slot.release().await;
                            return DeliveryOutcome::Deferred(match over {
                                graph_budget::Over::Requests => limits::Wait::GraphRequests,
                                graph_budget::Over::Upload => limits::Wait::GraphUpload,
                            });
                        }
                        Err(e) => {
                            slot.release().await;
                            return DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string());
                        }
                    };
                let meter = Arc::new(graph_budget::Meter::default());
                let outcome = graph_budget::metered(meter.clone(), async {
                    if let Some(json) = unsaved {
                        self.graph.send_json(token, mailbox, json, message.id).await
                    } else if one_request {
                        let outcome = self
                            .graph
                            .send_mime(token, mailbox, &mime, message.id)
                            .await;
                        // Graph's own count of the request was over its limit: the
                        // large-message path takes any size the mailbox allows.
                        if outcome.status() == Some(413) {
                            self.graph.send_large(token, mailbox, &mime, ledger).await
                        } else {
                            outcome
                        }
                    } else {
                        self.graph.send_large(token, mailbox, &mime, ledger).await
                    }
                })
                .await;
                graph_budget::settle(&self.pool, reservation, meter.cost()).await;
                outcome
            }
            DeliveryMethod::Smtp => {
                self.smtp
                    .send(
                        &token.access_token,
                        &tenant.sender_mailbox,
                        &message.rcpt_to,
                        &body,
                    )
                    .await
            }
        };
        slot.release().await;
        if outcome.token_refused() {
            self.tokens.invalidate(&key).await;
        }
        outcome
    }

    /// The MSP's multi-tenant app as holds name it: its client id and a fingerprint
    /// of the credential this worker presents.
    pub(crate) fn msp_identity(&self) -> Option<AppIdentity> {
        self.msp_app().map(|app| AppIdentity {
            credential: holds::credential_fingerprint(&app),
            client_id: app.client_id,
        })
    }

    /// The MSP's multi-tenant app as configured now.
    fn msp_app(&self) -> Option<AppCredentials> {
        self.msp_app
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

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

    /// A Graph token of the app that serves customer `tenant_id` (its own app or the
    /// MSP's), with the key it is cached under and Graph's base URL: what the bounce
    /// watcher and the sign-in-log reader read with.
    pub(crate) async fn customer_graph(
        &self,
        tenant_id: uuid::Uuid,
    ) -> Result<CustomerGraph, CustomerGraphError> {
        let tenant = tenants::get(&self.pool, tenant_id)
            .await
            .map_err(|e| CustomerGraphError::Database(e.to_string()))?
            .ok_or(CustomerGraphError::Gone)?;
        let entra_tenant_id = tenant
            .entra_tenant_id
            .ok_or(CustomerGraphError::NotConnected)?;
        let app = self
            .app_for(&tenant)
            .await
            .map_err(|_| CustomerGraphError::NoApp)?;
        let key = token::TokenKey {
            entra_tenant_id,
            client_id: app.client_id.clone(),
            scope: format!("{}/.default", self.settings.m365.graph_resource),
        };
        let token = self
            .tokens
            .get(&key, &app, &tenant_id.to_string())
            .await
            .map_err(|e| CustomerGraphError::Token(e.to_string()))?;
        Ok(CustomerGraph {
            graph: self.graph.base_url().trim_end_matches('/').to_owned(),
            key,
            token,
        })
    }

    /// The tenant's own app registration, or the MSP's multi-tenant app.
    async fn app_for(&self, tenant: &Tenant) -> Result<AppCredentials, DeliveryOutcome> {
        match tenants::own_app(&self.pool, Some(&self.master_key), tenant.id).await {
            Ok(Some(app)) => Ok(AppCredentials {
                client_id: app.client_id,
                credential: app.credential,
            }),
            Ok(None) => self.msp_app().ok_or_else(|| {
                DeliveryOutcome::local(
                    &diagnosis::NOT_CONFIGURED,
                    "MAILBRIDGE_ENTRA_CLIENT_ID and MAILBRIDGE_ENTRA_CLIENT_SECRET (or a certificate) are not set",
                )
            }),
            Err(e) => Err(DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string())),
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

/// Waits for a new message's notification, and takes the others already received
/// with it: one commit of many customers' messages notifies once per customer, and
/// one lease serves them all.
async fn wait_for_notification(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => {
            l.recv().await?;
            while l.next_buffered().is_some() {}
            Ok(())
        }
        None => std::future::pending().await,
    }
}

/// A customer's Graph, ready to read with (see [`Worker::customer_graph`]).
pub(crate) struct CustomerGraph {
    /// Graph's base URL, without a trailing slash.
    pub graph: String,
    pub key: token::TokenKey,
    pub token: token::Token,
}

/// Why a customer's Graph cannot be read.
#[derive(Debug)]
pub(crate) enum CustomerGraphError {
    Database(String),
    /// The customer was deleted.
    Gone,
    /// No Microsoft 365 tenant yet.
    NotConnected,
    /// Neither its own app nor the MSP's.
    NoApp,
    /// Entra refused or was unreachable.
    Token(String),
}
