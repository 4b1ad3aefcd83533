//! `mailbridge report`: the migration board from the command line — importing a
//! customer's SMTP AUTH clients report (or the exposure list of the PowerShell
//! snippet), printing a customer's board as JSON, and exporting every board as CSV.
//! Imports are written to the audit log like those of the control plane.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use mailbridge_core::{
    migration_board::{self as board, AuditActor},
    smtp_auth_report, tenants,
};
use serde_json::json;
use sqlx::PgPool;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Imports a CSV into a customer's migration board and prints what changed as
    /// JSON: the SMTP AUTH clients report of the Exchange admin center (summary or
    /// details view), or the CSV of the board's PowerShell snippet. A file that is
    /// not readable is refused whole and changes nothing.
    Import {
        /// The customer's name or id.
        #[arg(long)]
        tenant: String,
        /// The CSV file.
        file: PathBuf,
    },
    /// Prints a customer's migration board as JSON.
    Board {
        #[arg(long)]
        tenant: String,
    },
    /// Writes every customer's migration board as CSV to standard output.
    Export,
}

pub async fn run(command: ReportCommand, pool: &PgPool) -> anyhow::Result<()> {
    match command {
        ReportCommand::Import { tenant, file } => {
            let tenant = tenants::find(pool, &tenant).await?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let report = smtp_auth_report::parse(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            let outcome = board::import(
                pool,
                tenant.id,
                &report,
                name.as_deref(),
                &AuditActor::system("cli: mailbridge report import"),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
        }
        ReportCommand::Board { tenant } => {
            let tenant = tenants::find(pool, &tenant).await?;
            let accounts = board::board(pool, tenant.id).await?;
            let accounts: Vec<_> = accounts
                .iter()
                .map(|a| {
                    let mut v = serde_json::to_value(a).expect("accounts serialise");
                    v["state"] = json!(a.stage());
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "customer_id": tenant.id, "accounts": accounts })
                )?
            );
        }
        ReportCommand::Export => {
            print!("{}", board::to_csv(&board::all_accounts(pool).await?));
        }
    }
    Ok(())
}
