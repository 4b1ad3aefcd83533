//! One delivery attempt: the customer and its delivery method (Graph, or SMTP for
//! customers set to it and for large messages where allowed), the app and its token,
//! the mailbox's limits and Graph budget, then the call through the Microsoft 365
//! client. Also the app that serves a customer (its own or the MSP's) and a
//! customer's Graph for the bounce watcher and the sign-in-log reader.

use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use std::sync::Arc;

use chrono::Utc;
use mailbridge_core::{
    diagnosis,
    holds::{AppIdentity, HoldKey},
    metrics::metrics,
    queue::{self, DeliveryJob, LeasedMessage},
    tenants::{self, DeliveryMethod, OwnApp, Tenant},
};
use mailbridge_m365::{
    graph, graph_json, graph_large, mime,
    outcome::DeliveryOutcome,
    token::{self, AppCredentials, TokenKey},
};
use sqlx::PgPool;

use crate::{Worker, consent_check, graph_budget, holds, limits, settle::Attempted};

impl Worker {
    /// One attempt for one leased message, recorded and settled; `probe`: the hold
    /// this message was leased to probe.
    pub(crate) async fn deliver(&self, message: LeasedMessage, probe: Option<HoldKey>) {
        if message.recovered {
            metrics().worker.recovered_leases.inc();
            tracing::warn!(queue_id = %message.id, "message recovered from an expired lease; it may arrive twice");
        }
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        let (method, mailbox, outcome) = self.attempt(&message, probe.is_some()).await;
        let attempted = Attempted {
            started_at,
            clock,
            method,
            mailbox,
            outcome,
        };
        self.conclude(message, probe, attempted).await;
    }

    /// One try, by the tenant's delivery method, as the tenant's sender mailbox.
    async fn attempt(
        &self,
        message: &LeasedMessage,
        probe: bool,
    ) -> (DeliveryMethod, Option<String>, DeliveryOutcome) {
        let job = queue::delivery_job(&self.pool, &self.master_key, message);
        let DeliveryJob {
            tenant,
            own_app,
            body,
        } = match job.await {
            Ok(Some(job)) => job,
            Ok(None) => {
                let gone = DeliveryOutcome::local(&diagnosis::GONE, "the customer was deleted");
                return (DeliveryMethod::Graph, None, gone);
            }
            Err(e) => {
                let internal = DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string());
                return (DeliveryMethod::Graph, None, internal);
            }
        };
        let Some(body) = body else {
            let gone =
                DeliveryOutcome::local(&diagnosis::GONE, "the message body is no longer stored");
            return (tenant.delivery_method, Some(tenant.sender_mailbox), gone);
        };
        let method = match tenant.delivery_method {
            // Too large for one Graph request: by SMTP where the customer allows it.
            DeliveryMethod::Graph
                if tenant.smtp_for_large_messages && !graph::fits_one_request(body.len()) =>
            {
                DeliveryMethod::Smtp
            }
            method => method,
        };
        let app = self.app_from(own_app);
        let outcome = self
            .attempt_with(message, &tenant, app, body, method, probe)
            .await;
        (method, Some(tenant.sender_mailbox), outcome)
    }

    async fn attempt_with(
        &self,
        message: &LeasedMessage,
        tenant: &Tenant,
        app: Result<AppCredentials, DeliveryOutcome>,
        body: Vec<u8>,
        method: DeliveryMethod,
        probe: bool,
    ) -> DeliveryOutcome {
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
        let app = match app {
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
                let ledger = Drafts {
                    pool: &self.pool,
                    message_id: message.id,
                    owner: &self.identity,
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
                        self.graph
                            .send_json(token, mailbox, json, message.id.as_uuid())
                            .await
                    } else if one_request {
                        let outcome = self
                            .graph
                            .send_mime(token, mailbox, &mime, message.id.as_uuid())
                            .await;
                        // Graph's own count of the request was over its limit: the
                        // large-message path takes any size the mailbox allows.
                        if outcome.status() == Some(413) {
                            self.graph.send_large(token, mailbox, &mime, &ledger).await
                        } else {
                            outcome
                        }
                    } else {
                        self.graph.send_large(token, mailbox, &mime, &ledger).await
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
    pub(crate) fn msp_app(&self) -> Option<AppCredentials> {
        self.msp_app
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A Graph token of the app that serves customer `tenant_id` (its own app or the
    /// MSP's), with the key it is cached under and Graph's base URL: what the bounce
    /// watcher and the sign-in-log reader read with.
    pub(crate) async fn customer_graph(
        &self,
        tenant_id: TenantId,
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
            Ok(own_app) => self.app_from(own_app),
            Err(e) => Err(DeliveryOutcome::local(&diagnosis::INTERNAL, e.to_string())),
        }
    }

    /// `own_app`, or the MSP's multi-tenant app where the customer has none.
    fn app_from(&self, own_app: Option<OwnApp>) -> Result<AppCredentials, DeliveryOutcome> {
        match own_app {
            Some(app) => Ok(AppCredentials {
                client_id: app.client_id,
                credential: app.credential,
            }),
            None => self.msp_app().ok_or_else(|| {
                DeliveryOutcome::local(
                    &diagnosis::NOT_CONFIGURED,
                    "MAILBRIDGE_ENTRA_CLIENT_ID and MAILBRIDGE_ENTRA_CLIENT_SECRET (or a certificate) are not set",
                )
            }),
        }
    }
}

/// Where a large message's Graph draft is recorded: on the queued message, while
/// this worker (`owner`) holds its lease.
struct Drafts<'a> {
    pool: &'a PgPool,
    message_id: MessageId,
    owner: &'a str,
}

impl graph_large::DraftLedger for Drafts<'_> {
    fn message_id(&self) -> uuid::Uuid {
        self.message_id.as_uuid()
    }

    async fn recorded(&self) -> Result<Option<String>, graph_large::LedgerError> {
        Ok(queue::graph_draft(self.pool, self.message_id).await?)
    }

    async fn record(&self, draft: Option<&str>) -> Result<(), graph_large::LedgerError> {
        if queue::set_graph_draft(self.pool, self.message_id, self.owner, draft).await? {
            Ok(())
        } else {
            Err("the lease on this message passed to another worker".into())
        }
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
