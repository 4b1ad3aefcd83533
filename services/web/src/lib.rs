//! mailbridge-web: the control plane's HTTP server — the HTML pages (askama
//! templates from `web/templates`, assets from `web/static`), health endpoints, and
//! later the JSON API. For now it shows the customers and their queues, read-only.

use askama::Template;
use askama_web::WebTemplate;
use std::sync::Arc;

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use mailbridge_core::ops::Readiness;
use sqlx::{FromRow, PgPool};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
struct AppState {
    pool: PgPool,
}

/// One customer row on the overview.
#[derive(Debug, FromRow)]
struct TenantOverview {
    name: String,
    entra_tenant_id: sqlx::types::Uuid,
    sender_mailbox: String,
    delivery_method: String,
    queued: i64,
    delivered: i64,
    failed: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct HomePage {
    tenants: Vec<TenantOverview>,
}

pub fn router(pool: PgPool, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/static/mailbridge.css", get(stylesheet))
        .with_state(AppState { pool })
        .merge(mailbridge_core::ops::router(readiness))
        .layer(middleware::from_fn(record_request))
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

/// Serves the control plane until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: PgPool,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "control plane listening");
    let readiness = Readiness::new(pool.clone());
    readiness.set_listening(true);
    axum::serve(listener, router(pool, readiness))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn home(State(state): State<AppState>) -> Response {
    let tenants = sqlx::query_as::<_, TenantOverview>(
        "SELECT t.name, t.entra_tenant_id, t.sender_mailbox, t.delivery_method,
                count(m.id) FILTER (WHERE m.state IN ('queued', 'delivering')) AS queued,
                count(m.id) FILTER (WHERE m.state = 'delivered') AS delivered,
                count(m.id) FILTER (WHERE m.state = 'failed') AS failed
           FROM tenants t LEFT JOIN messages m ON m.tenant_id = t.id AND m.received_at > now() - interval '24 hours'
          GROUP BY t.id ORDER BY t.name",
    )
    .fetch_all(&state.pool)
    .await;
    match tenants {
        Ok(tenants) => HomePage { tenants }.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "overview query failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not reachable right now.",
            )
                .into_response()
        }
    }
}

async fn stylesheet() -> Response {
    const CSS: &str = include_str!("../../../web/static/mailbridge.css");
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}
