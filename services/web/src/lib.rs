//! mailbridge-web: the control plane MSP staff work in. It owns the HTTP server:
//! the server-rendered pages (askama templates from `web/templates`, by
//! `askama.toml`; the files of `web/static` and `web/data` by the `assets` module),
//! staff sign-in by OpenID Connect, browser sessions, the Entra admin consent that
//! connects a customer (recorded here, verified by the workers: the web holds no
//! Microsoft credential), the JSON API under `/api/v1`, and the health and metrics
//! endpoints. It never shows a message body.

// The plumbing every page and API call shares; handler modules import these, not
// each other.
mod assets;
mod client_addr;
mod cookies;
mod csrf;
mod error;
mod flows;
mod i18n;
mod json_body;
mod landing;
mod layout;
mod list_pager;
mod rate_limit;
mod roles;
mod security;
mod session;

// The pages and the API, one module per area.
mod alerts;
mod api;
mod audit;
mod board;
mod connection;
mod consent;
mod consent_link;
mod customer_list;
mod customers;
mod device_bulk;
mod device_health;
mod device_import;
mod device_models;
mod devices;
mod gauges;
mod holds;
mod least_privilege;
mod messages;
mod openapi;
mod reveal;
mod sign_in;
mod staff;
mod usage;

use std::sync::Arc;

use axum::{
    Router,
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use mailbridge_core::{Settings, crypto::MasterKey, ops::Readiness};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use error::Error as ControlPlaneError;
pub use roles::Role;
pub use staff::{
    ApiToken, Invited, TOKEN_DAYS_DEFAULT, TOKEN_DAYS_MAX, add_staff, create_api_token,
    issue_bootstrap_code,
};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct WebState {
    pool: PgPool,
    /// The MSP app's client id is the only part of it the web knows (to build the
    /// admin-consent URL): its secret or certificate is the workers'.
    settings: Arc<Settings>,
    master_key: Option<MasterKey>,
    sign_in: Arc<sign_in::Provider>,
    /// Sign-ins started per client address (each inserts a flow row).
    sign_in_starts: Arc<rate_limit::RateLimiter>,
    /// Proxies whose `X-Forwarded-For` names the client (`MAILBRIDGE_WEB_TRUSTED_PROXIES`).
    trusted_proxies: Arc<mailbridge_core::config::Networks>,
    /// Microsoft's dates the migration board counts down to.
    deadlines: Arc<board::Deadlines>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState").finish_non_exhaustive()
    }
}

impl WebState {
    fn secure_cookies(&self) -> bool {
        self.settings.web.public_url.starts_with("https://")
    }

    /// An absolute URL of the control plane for `path` (which starts with `/`).
    fn public_url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.web.public_url)
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("TLS set-up for outbound calls: {0}")]
    Tls(#[from] mailbridge_m365::http::HttpSetupError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Config(String),
}

/// The whole control plane as one router.
pub fn router(
    pool: PgPool,
    settings: Settings,
    readiness: Arc<Readiness>,
) -> Result<Router, WebError> {
    let http = mailbridge_m365::http::builder(settings.extra_ca_file.as_deref())?
        .timeout(std::time::Duration::from_secs(30))
        // OAuth responses are never followed anywhere: a redirect is an error.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // The internet-facing web never holds the MSP app's credential: with it, anyone
    // who took over the web could send as every mailbox of every customer.
    if mailbridge_m365::credentials::holds_msp_secret(&settings) {
        tracing::warn!(
            "the control plane was given the MSP app's secret or private key (MAILBRIDGE_ENTRA_CLIENT_SECRET / MAILBRIDGE_ENTRA_CLIENT_KEY_FILE): it does not use them; remove them from its environment, only the workers need them"
        );
    }
    // With a metrics port of its own, the web port (the one an ingress publishes)
    // keeps only the health endpoints.
    let ops = if settings.web_metrics_listen.is_some() {
        mailbridge_core::ops::health_router(readiness)
    } else {
        mailbridge_core::ops::router(readiness)
    };
    let trusted_proxies = client_addr::trusted_proxies_from_env().map_err(WebError::Config)?;
    let deadlines = board::Deadlines::from_env().map_err(WebError::Config)?;
    let state = WebState {
        pool,
        master_key: settings.master_key.clone(),
        sign_in: Arc::new(sign_in::Provider::new(settings.web.oidc.clone(), http)),
        settings: Arc::new(settings),
        sign_in_starts: Arc::new(rate_limit::RateLimiter::new(
            rate_limit::SIGN_IN_STARTS_PER_MINUTE,
            std::time::Duration::from_secs(60),
        )),
        trusted_proxies: Arc::new(trusted_proxies),
        deadlines: Arc::new(deadlines),
    };
    let pages = Router::new()
        .route("/", get(customers::overview))
        .merge(sign_in::router())
        .merge(customers::router())
        .merge(consent::router())
        .merge(consent_link::router())
        .merge(connection::router())
        .merge(least_privilege::router())
        .merge(devices::router())
        .merge(device_import::router())
        .merge(device_bulk::router())
        .merge(messages::router())
        .merge(holds::router())
        .merge(staff::router())
        .merge(audit::router())
        .merge(board::router())
        .merge(alerts::router())
        .merge(usage::router())
        .merge(reveal::router())
        .route("/lang/{lang}", get(i18n::switch))
        .method_not_allowed_fallback(landing::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            session::authenticate,
        ));
    Ok(Router::new()
        .merge(pages)
        .nest("/api/v1", api::router(state.clone()))
        .merge(assets::router())
        .with_state(state.clone())
        .merge(ops)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            client_addr::resolve,
        ))
        .layer(middleware::from_fn_with_state(state, security::headers))
        .layer(middleware::from_fn(record_request)))
}

/// Counts every request and its latency by route template (never the raw path, which
/// would carry ids) and status.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let metrics = &mailbridge_core::metrics::metrics().web;
    metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// How often the cluster's gauges are read from PostgreSQL.
const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves the control plane (and, with `MAILBRIDGE_WEB_METRICS_LISTEN`, its metrics
/// on a port of their own) and keeps the cluster's gauges current, until `shutdown`
/// is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: PgPool,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "control plane listening");
    if settings.web.oidc.is_none() {
        tracing::warn!(
            "no OpenID Connect provider is configured (MAILBRIDGE_OIDC_ISSUER …): nobody can sign in to the control plane"
        );
    }
    // While nobody is owner: a one-time code that makes the first one.
    match staff::issue_bootstrap_code(&pool).await {
        Ok(Some(code)) => tracing::warn!(
            bootstrap_code = %code,
            "nobody is owner of the control plane yet: enter this one-time setup code on the sign-in page to become the first owner (valid 24 h; or run `mailbridge staff add --email … --role owner`)"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not check for an owner of the control plane"),
    }
    let readiness = Readiness::new(pool.clone());
    readiness.set_listening(true);
    if let Some(addr) = settings.web_metrics_listen {
        let metrics = mailbridge_core::ops::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("listening on {addr} (MAILBRIDGE_WEB_METRICS_LISTEN): {e}")
        })?;
        tracing::info!(addr = %metrics.local_addr()?, "control plane metrics listening");
        let (readiness, stop) = (readiness.clone(), shutdown.clone());
        tokio::spawn(async move {
            let stopped = async move { stop.cancelled().await };
            if let Err(e) = mailbridge_core::ops::serve(metrics, readiness, stopped).await {
                tracing::error!(error = %e, "control plane metrics stopped");
            }
        });
    }
    tokio::spawn(gauges::report(
        pool.clone(),
        GAUGE_INTERVAL,
        shutdown.clone(),
    ));
    let app = router(pool, settings, readiness)?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}
