//! `mailbridge sim`: the Microsoft 365 simulator on its own, for trying a part
//! against it by hand (only with the `dev` feature).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Args;
use mailbridge_m365_sim::Simulator;
use tokio_util::sync::CancellationToken;

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
    /// How long an admin consent takes to reach the token endpoint (Entra: seconds
    /// to minutes); also `PUT /_sim/consent-propagation {"seconds": …}`.
    #[arg(
        long,
        env = "MAILBRIDGE_SIM_CONSENT_PROPAGATION_SECONDS",
        default_value_t = 0
    )]
    consent_propagation_seconds: u64,
    /// The cloud the simulator answers as: public, usgov-high (GCC High) or china
    /// (21Vianet); also `PUT /_sim/cloud {"cloud": …}`.
    #[arg(long, env = "MAILBRIDGE_M365_CLOUD", default_value = "public")]
    cloud: mailbridge_core::cloud::Cloud,
}

pub async fn run_sim(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let simulator = Simulator::start(args.listen).await?;
    simulator
        .directory
        .set_consent_propagation(std::time::Duration::from_secs(
            args.consent_propagation_seconds,
        ));
    simulator.directory.set_cloud(args.cloud);
    std::fs::write(&args.ca_file, simulator.ca_pem())
        .with_context(|| format!("writing {}", args.ca_file.display()))?;
    println!(
        "Microsoft 365 simulator at {} (answering as the {} cloud)",
        simulator.base_url(),
        args.cloud
    );
    println!(
        "  trust its CA:      MAILBRIDGE_EXTRA_CA_FILE={}",
        args.ca_file.display()
    );
    println!(
        "  endpoints:         MAILBRIDGE_M365_CLOUD={1} MAILBRIDGE_M365_LOGIN_URL={0} MAILBRIDGE_M365_GRAPH_URL={0}",
        simulator.base_url(),
        args.cloud
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
