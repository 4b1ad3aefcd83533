//! `mailbridge`: one binary, one subcommand per part (edge, worker, web, sim), plus
//! `migrate`, the administration commands for scripting (`tenant`, `device`), and
//! `dev`, everything in one process for a first look.

mod admin;
#[cfg(feature = "dev")]
mod dev;
mod report;
#[cfg(feature = "dev")]
mod sim;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailbridge_core::{
    Settings, db,
    ops::{self, Readiness},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "mailbridge",
    version,
    about = "SMTP relay for devices into Microsoft 365 with OAuth 2.0"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process: throwaway PostgreSQL (unless DATABASE_URL is set),
    /// the Microsoft 365 simulator, edge, worker and web, with a demo customer and device.
    #[cfg(feature = "dev")]
    Dev,
    /// The SMTP listeners.
    Edge,
    /// The delivery workers.
    Worker,
    /// The control plane (HTML, health endpoints).
    Web,
    /// The Microsoft 365 simulator on its own.
    #[cfg(feature = "dev")]
    Sim(sim::SimArgs),
    /// Applies the database migrations.
    Migrate(MigrateArgs),
    /// Customers (Microsoft 365 tenants).
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Devices and their SMTP credentials.
    #[command(subcommand)]
    Device(admin::DeviceCommand),
    /// MSP staff of the control plane (invitations, the first owner).
    #[command(subcommand)]
    Staff(admin::StaffCommand),
    /// API tokens for automation.
    #[command(subcommand, name = "api-token")]
    ApiToken(admin::ApiTokenCommand),
    /// Re-seals every secret and queued message body under MAILBRIDGE_MASTER_KEY that
    /// is still sealed with a key in MAILBRIDGE_MASTER_KEY_PREVIOUS (or queued in
    /// clear), while everything keeps running.
    #[command(name = "rotate-master-key")]
    RotateMasterKey,
    /// The migration board: SMTP AUTH clients reports, boards, CSV export.
    #[command(subcommand)]
    Report(report::ReportCommand),
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Wait up to this many seconds for PostgreSQL to answer before migrating (for an
    /// init container that may start before the database).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mailbridge_core::allocator::return_large_blocks();
    mailbridge_core::telemetry::init();
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    match cli.command {
        #[cfg(feature = "dev")]
        Command::Dev => dev::run(settings).await,
        Command::Edge => run_edge(settings).await,
        Command::Worker => run_worker(settings).await,
        Command::Web => run_web(settings).await,
        #[cfg(feature = "dev")]
        Command::Sim(args) => sim::run_sim(args, shutdown_on_signal()).await,
        Command::Migrate(args) => migrate(&settings, args).await,
        Command::Tenant(command) => admin::tenant(command, &connect(&settings)?, &settings).await,
        Command::Device(command) => admin::device(command, &connect(&settings)?, &settings).await,
        Command::Staff(command) => admin::staff(command, &connect(&settings)?).await,
        Command::ApiToken(command) => admin::api_token(command, &connect(&settings)?).await,
        Command::RotateMasterKey => {
            admin::rotate_master_key(&connect(&settings)?, settings.require_master_key()?).await
        }
        Command::Report(command) => report::run(command, &connect(&settings)?).await,
    }
}

fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let defaults = db::PoolOptions::default();
    let options = db::PoolOptions {
        max_connections: settings
            .database_max_connections
            .unwrap_or(defaults.max_connections),
        ..defaults
    };
    Ok(db::pool(settings.require_database_url()?, options)?)
}

/// `mailbridge migrate`: waits for the database if asked to, then migrates. A database
/// already migrated by a newer release is left alone (see `db::migrate`).
async fn migrate(settings: &Settings, args: MigrateArgs) -> anyhow::Result<()> {
    let pool = connect(settings)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait);
    loop {
        match mailbridge_core::db::ping(&pool).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for the database");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e).context("connecting to the database"),
        }
    }
    match db::migrate(&pool).await.context("applying migrations")? {
        db::Migrated::Current => println!("migrations applied"),
        db::Migrated::Ahead { newer } => {
            tracing::warn!(
                ?newer,
                "the database has migrations of a newer mailbridge; this release's are all applied, nothing to do"
            );
            println!(
                "the database schema is ahead of this release (migrations {newer:?}); nothing applied"
            );
        }
    }
    Ok(())
}

/// A token cancelled on Ctrl-C or SIGTERM (what Kubernetes sends before it kills a pod).
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

/// Serves `/metrics`, `/healthz` and `/readyz` on the metrics port, if configured.
async fn serve_ops(
    settings: &Settings,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = settings.metrics_listen {
        let listener = ops::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} (MAILBRIDGE_METRICS_LISTEN)"))?;
        tracing::info!(%addr, "operations endpoints listening");
        tokio::spawn(async move {
            if let Err(e) = ops::serve(
                listener,
                readiness,
                async move { shutdown.cancelled().await },
            )
            .await
            {
                tracing::error!(error = %e, "operations endpoints stopped");
            }
        });
    }
    Ok(())
}

async fn run_edge(settings: Settings) -> anyhow::Result<()> {
    let pool = connect(&settings)?;
    let shutdown = shutdown_on_signal();
    let readiness = Readiness::listener_only(pool.clone());
    let certificate = mailbridge_edge::certificate_from_settings(&settings.edge)?;
    let edge = mailbridge_edge::Edge::bind(
        &settings.edge,
        pool,
        certificate,
        settings.require_master_key()?.clone(),
    )
    .await?;
    readiness.set_listening(true);
    serve_ops(&settings, readiness.clone(), shutdown.clone()).await?;
    // Unready as soon as draining starts, so the load balancer stops sending.
    let draining = shutdown.clone();
    tokio::spawn(async move {
        draining.cancelled().await;
        readiness.set_listening(false);
    });
    edge.run(shutdown).await;
    Ok(())
}

async fn run_worker(settings: Settings) -> anyhow::Result<()> {
    // Each delivery may hold a connection for its mailbox slot besides its queries.
    let connections = settings
        .database_max_connections
        .unwrap_or(settings.worker.concurrency as u32 * 2 + 4);
    let options = db::PoolOptions {
        max_connections: connections,
        ..db::PoolOptions::default()
    };
    let pool = db::pool(settings.require_database_url()?, options)?;
    let shutdown = shutdown_on_signal();
    let readiness = Readiness::new(pool.clone());
    readiness.set_listening(true);
    serve_ops(&settings, readiness, shutdown.clone()).await?;
    let worker = Arc::new(mailbridge_worker::Worker::new(pool, settings)?);
    worker.run(shutdown).await;
    Ok(())
}

async fn run_web(settings: Settings) -> anyhow::Result<()> {
    let pool = connect(&settings)?;
    let listener = ops::bind(settings.web_listen)
        .await
        .with_context(|| format!("listening on {}", settings.web_listen))?;
    mailbridge_web::serve(listener, pool, settings, shutdown_on_signal()).await?;
    Ok(())
}
