//! mailbridge-worker: turns queued messages into messages in the customer's
//! Microsoft 365.
//!
//! A worker leases due messages from PostgreSQL (`FOR UPDATE SKIP LOCKED`, so any
//! number of workers share one queue), is woken by LISTEN/NOTIFY with a periodic
//! sweep for retries as a safety net, gets an app-only token for the message's
//! tenant, delivers through Graph `sendMail`, records the attempt, and settles the
//! message. It never answers a device and never deletes a message it has not
//! settled.
//!
//! Its parts: `run` (the lease loop), `delivery` (one attempt: the path, the app,
//! the limits, the call through the Microsoft 365 client, `mailbridge_m365`),
//! `settle` (what an outcome means for its message: the settlement policy, retries,
//! holds, reports), `housekeeping` (purge, presence, the MSP app's certificate).

use mailbridge_core::ids::MessageId;
mod alerting;
mod bounces;
pub mod consent_check;
mod delivery;
pub mod graph_budget;
mod group_settle;
pub mod holds;
mod housekeeping;
pub mod limits;
mod ndr;
mod notify;
mod run;
mod settle;
mod sign_in_log;

use std::{collections::HashMap, sync::Mutex};

use mailbridge_core::{Settings, crypto::MasterKey};
use mailbridge_m365::{
    credentials::{CredentialError, msp_app},
    graph::GraphClient,
    smtp::{self, SmtpClient},
    token::{AppCredentials, TokenCache},
};
use sqlx::PgPool;

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
    /// The messages this worker is delivering now, each with the number of its
    /// deliveries not yet finished; any other lease in its name is an orphan (see
    /// [`queue::lease_due`]).
    in_flight: Mutex<HashMap<MessageId, usize>>,
    /// Held while this worker takes leases and enters them into `in_flight`
    /// (see `Worker::take_leases`).
    leasing: tokio::sync::Mutex<()>,
    /// Settles the attempts that finish together in one transaction.
    settlements: group_settle::GroupSettle,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Tls(#[from] mailbridge_core::tls::TlsError),
    #[error(transparent)]
    HttpSetup(#[from] mailbridge_m365::http::HttpSetupError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Smtp(#[from] smtp::SmtpSetupError),
    #[error("the MSP app's credential: {0}")]
    Credential(#[from] CredentialError),
    #[error("{0}")]
    Config(String),
}

impl Worker {
    pub fn new(pool: PgPool, settings: Settings) -> Result<Self, WorkerError> {
        let http = mailbridge_m365::http::builder(settings.extra_ca_file.as_deref())?
            .pool_idle_timeout(std::time::Duration::from_secs(60))
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
            leasing: Default::default(),
            settlements: Default::default(),
        })
    }
}
