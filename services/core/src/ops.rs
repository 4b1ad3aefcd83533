//! The operations endpoints every process serves: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive) and `/readyz` (it can do its work: the database
//! answers, its schema is current, and its listeners are bound). The edge and the
//! worker serve them on their own port; the web serves them next to its pages.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sqlx::PgPool;

use crate::db::MIGRATOR;

/// What `/readyz` checks.
#[derive(Debug)]
pub struct Readiness {
    pool: PgPool,
    listening: AtomicBool,
    /// Whether an unreachable database makes the process unready. Not for the edge:
    /// it answers `451 4.3.0` itself, and taking every edge pod out of the load
    /// balancer would turn that into refused connections.
    needs_database: bool,
}

impl Readiness {
    /// Ready when listening and the database answers with a current schema.
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            listening: AtomicBool::new(false),
            needs_database: true,
        })
    }

    /// Ready when listening; the database is checked only for a current schema
    /// when it answers.
    pub fn listener_only(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            listening: AtomicBool::new(false),
            needs_database: false,
        })
    }

    /// Marks the process's listeners as bound (or not, while draining).
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Why the process is not ready, if it is not.
    pub async fn check(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Acquire) {
            return Err("listeners not bound".to_owned());
        }
        let applied: Option<i64> =
            match sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
            {
                Ok(version) => version,
                Err(e) if self.needs_database => return Err(format!("database unreachable: {e}")),
                Err(_) => return Ok(()),
            };
        let expected = MIGRATOR.iter().map(|m| m.version).max();
        if applied < expected {
            return Err(format!(
                "database schema at {applied:?}, expected {expected:?}: run `mailbridge migrate`"
            ));
        }
        Ok(())
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router(readiness: Arc<Readiness>) -> Router {
    health_router(readiness).route("/metrics", get(metrics))
}

/// `/healthz` and `/readyz` only: for the web's own port when its metrics are served
/// on a port of their own.
pub fn health_router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

/// Binds `addr`. `[::]` is dual-stack on Linux (IPv6, and IPv4 as mapped addresses);
/// on a host without IPv6 it falls back to `0.0.0.0` on the same port.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            let v4 = std::net::SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::warn!(%addr, error = %e, fallback = %v4, "no IPv6 here: listening on IPv4 only");
            tokio::net::TcpListener::bind(v4).await
        }
        bound => bound,
    }
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response()
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    match readiness.check().await {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Serves the operations endpoints on their own listener until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(readiness))
        .with_graceful_shutdown(shutdown)
        .await
}
