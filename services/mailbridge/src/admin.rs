//! The administration commands (`tenant`, `device`) and the standalone simulator
//! (`sim`). Output is JSON, for scripts; errors go to stderr with a non-zero exit.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use mailbridge_core::{
    Settings, devices,
    tenants::{self, DeliveryMethod, NewTenant, OwnApp},
};
use mailbridge_m365_sim::Simulator;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Adds a customer and prints it as JSON.
    Add {
        #[arg(long)]
        name: String,
        /// The customer's Entra (Azure AD) tenant id.
        #[arg(long)]
        entra_tenant_id: Uuid,
        /// The mailbox mail is sent as.
        #[arg(long)]
        sender_mailbox: String,
        #[arg(long, default_value = "graph")]
        method: DeliveryMethod,
        /// The customer's own app registration (instead of the MSP's app).
        #[arg(long, requires = "client_secret_env")]
        client_id: Option<String>,
        /// Name of the environment variable holding that app's client secret
        /// (secrets are not taken on the command line, where `ps` shows them).
        #[arg(long, requires = "client_id")]
        client_secret_env: Option<String>,
    },
    /// Lists the customers as JSON.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Adds a device and prints its username and password (shown this once) as JSON.
    Add {
        /// The customer's name or id.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// Lists a customer's devices as JSON.
    List {
        #[arg(long)]
        tenant: String,
    },
}

pub async fn tenant(
    command: TenantCommand,
    pool: &PgPool,
    settings: &Settings,
) -> anyhow::Result<()> {
    match command {
        TenantCommand::Add {
            name,
            entra_tenant_id,
            sender_mailbox,
            method,
            client_id,
            client_secret_env,
        } => {
            let own_app = match (client_id, client_secret_env) {
                (Some(client_id), Some(var)) => {
                    let secret = std::env::var(&var)
                        .with_context(|| format!("reading the client secret from ${var}"))?;
                    Some(OwnApp {
                        client_id,
                        client_secret: SecretString::from(secret),
                    })
                }
                _ => None,
            };
            let new = NewTenant {
                name,
                entra_tenant_id,
                sender_mailbox,
                delivery_method: method,
                own_app,
            };
            let tenant = tenants::create(pool, settings.master_key.as_ref(), new).await?;
            print_json(&tenant)
        }
        TenantCommand::List => print_json(&tenants::list(pool).await?),
    }
}

pub async fn device(command: DeviceCommand, pool: &PgPool) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Add { tenant, name } => {
            let tenant = tenants::find(pool, &tenant).await?;
            let issued = devices::create(pool, tenant.id, &name).await?;
            print_json(&issued)
        }
        DeviceCommand::List { tenant } => {
            let tenant = tenants::find(pool, &tenant).await?;
            print_json(&devices::list(pool, tenant.id).await?)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Where the simulator listens (HTTPS).
    #[arg(long, env = "MAILBRIDGE_SIM_LISTEN", default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Where to write the simulator's CA certificate (PEM) for clients to trust.
    #[arg(
        long,
        env = "MAILBRIDGE_SIM_CA_FILE",
        default_value = "m365-simulator-ca.pem"
    )]
    ca_file: PathBuf,
}

pub async fn run_sim(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let simulator = Simulator::start(args.listen).await?;
    std::fs::write(&args.ca_file, simulator.ca_pem())
        .with_context(|| format!("writing {}", args.ca_file.display()))?;
    println!("Microsoft 365 simulator at {}", simulator.base_url());
    println!(
        "  trust its CA:      MAILBRIDGE_EXTRA_CA_FILE={}",
        args.ca_file.display()
    );
    println!(
        "  endpoints:         MAILBRIDGE_M365_LOGIN_URL={0} MAILBRIDGE_M365_GRAPH_URL={0}",
        simulator.base_url()
    );
    println!(
        "  register an app:   POST {}/_sim/apps {{\"client_id\",\"client_secret\"}}",
        simulator.base_url()
    );
    println!(
        "  add a tenant:      POST {}/_sim/tenants {{\"tenant_id\",\"mailboxes\":[…],\"consents\":{{\"<client_id>\":[\"Mail.Send\"]}}}}",
        simulator.base_url()
    );
    println!("  mailboxes:         {}/_sim/inbox", simulator.base_url());
    shutdown.cancelled().await;
    Ok(())
}
