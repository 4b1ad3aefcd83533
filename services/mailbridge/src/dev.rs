//! `mailbridge dev`: a throwaway PostgreSQL (unless `DATABASE_URL` is set), the
//! migrations, the Microsoft 365 simulator, edge, worker and web in one process, a
//! demo customer and device, and what a newcomer needs printed on the terminal.
//! Ctrl-C stops everything and removes the throwaway database.

use std::net::SocketAddr;

use anyhow::Context;
use mailbridge::stack::{Stack, StackOptions};
use mailbridge_core::{
    Settings, db, devices,
    tenants::{self, DeliveryMethod, NewTenant, TenantError},
};
use mailbridge_devtools::scratch_postgres::{ScratchOptions, ScratchPostgres};
use mailbridge_m365_sim::{
    ROLE_MAIL_SEND,
    sign_ins::{ROLE_AUDIT_LOG_READ, SimSignIn},
};
use uuid::Uuid;

const DEMO_TENANT: &str = "Praxis Dr. Sonnenschein (demo)";
const DEMO_MAILBOX: &str = "scanner@praxis-sonnenschein.example";
const DEMO_RECIPIENT: &str = "empfang@praxis-sonnenschein.example";
/// A second practice, in the simulated Microsoft 365 only: onboard it in the browser.
const ONBOARDING_TENANT: &str = "Zahnarztpraxis am See";
const ONBOARDING_MAILBOXES: [&str; 2] = [
    "scanner@zahnarzt-am-see.example",
    "praxis@zahnarzt-am-see.example",
];
/// MSP staff who can sign in to the control plane, invited with their roles (as
/// `mailbridge staff add` does).
const DEMO_STAFF: [(&str, &str, mailbridge_web::Role); 3] = [
    (
        "ines.inhaber@msp.example",
        "Ines Inhaber",
        mailbridge_web::Role::Owner,
    ),
    (
        "tim.technik@msp.example",
        "Tim Technik",
        mailbridge_web::Role::Technician,
    ),
    (
        "lea.lesen@msp.example",
        "Lea Lesen",
        mailbridge_web::Role::Readonly,
    ),
];

/// How long the simulated Entra takes to make a new consent usable in `dev`.
const DEFAULT_CONSENT_PROPAGATION_SECONDS: &str = "10";

fn listen_or(env: &str, default: &str) -> anyhow::Result<SocketAddr> {
    let value = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    value
        .parse()
        .with_context(|| format!("{env}={value:?} is not an address:port"))
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    // Webhooks to a receiver on this machine (http://127.0.0.1:…) for trying them
    // out; production allows no internal network unless the operator says so.
    if settings.worker.webhook_allowed_networks.0.is_empty() {
        settings.worker.webhook_allowed_networks = "127.0.0.0/8,::1/128".parse().expect("networks");
    }
    let (scratch, url) = match settings.database_url.clone() {
        Some(url) => (None, url),
        None => {
            println!("Starting a throwaway PostgreSQL …");
            let scratch =
                tokio::task::spawn_blocking(|| ScratchPostgres::start(&ScratchOptions::default()))
                    .await??;
            let admin = db::pool(&scratch.url("postgres"), db::PoolOptions::default())?;
            db::create_database(&admin, "mailbridge").await?;
            admin.close().await;
            let url = scratch.url("mailbridge");
            (Some(scratch), url)
        }
    };
    let pool = db::pool(&url, db::PoolOptions::default())?;
    db::migrate(&pool).await.context("applying migrations")?;

    let sim_listen = listen_or("MAILBRIDGE_SIM_LISTEN", "127.0.0.1:9443")?;
    let options = StackOptions {
        smtp_listen: listen_or("MAILBRIDGE_SUBMISSION_LISTEN", "127.0.0.1:2587")?,
        smtps_listen: Some(listen_or(
            "MAILBRIDGE_SUBMISSIONS_LISTEN",
            "127.0.0.1:2465",
        )?),
        relay_listen: Some(listen_or("MAILBRIDGE_RELAY_LISTEN", "127.0.0.1:2525")?),
        web_listen: listen_or("MAILBRIDGE_WEB_LISTEN", "127.0.0.1:8080")?,
        ops_listen: listen_or("MAILBRIDGE_METRICS_LISTEN", "127.0.0.1:9090")?,
        sim_listen,
        // The browser visits the simulated sign-in and consent pages: over plain
        // HTTP on loopback it shows them without a certificate warning.
        sim_plain_http: sim_listen.ip().is_loopback(),
        start_worker: true,
    };
    // The setup cards name the address the banner prints (unless a public SMTP host
    // name is configured), not the machine's host name, which a device cannot reach.
    if settings.web.smtp_host.is_none() {
        settings.web.smtp_host = Some(options.smtp_listen.ip().to_string());
    }
    let stack = Stack::start(pool.clone(), settings, options).await?;
    // As with Entra, a new consent takes a while to be usable: onboarding shows
    // "connecting" first.
    let propagation = std::env::var("MAILBRIDGE_SIM_CONSENT_PROPAGATION_SECONDS")
        .unwrap_or_else(|_| DEFAULT_CONSENT_PROPAGATION_SECONDS.to_owned());
    let propagation: u64 = propagation.parse().with_context(|| {
        format!(
            "MAILBRIDGE_SIM_CONSENT_PROPAGATION_SECONDS={propagation:?} is not a number of seconds"
        )
    })?;
    stack
        .simulator
        .directory
        .set_consent_propagation(std::time::Duration::from_secs(propagation));

    // The demo customer, in mailbridge and in the simulated Microsoft 365.
    let tenant = match tenants::find(&pool, DEMO_TENANT).await {
        Ok(existing) => existing,
        Err(TenantError::NotFound(_)) => {
            tenants::create(
                &pool,
                stack.settings.master_key.as_ref(),
                NewTenant {
                    name: DEMO_TENANT.to_owned(),
                    entra_tenant_id: Some(Uuid::new_v4().into()),
                    sender_mailbox: DEMO_MAILBOX.to_owned(),
                    delivery_method: DeliveryMethod::Graph,
                    own_app: None,
                },
            )
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    let entra_tenant = tenant
        .entra_tenant_id
        .context("the demo customer has no Entra tenant")?
        .as_uuid();
    let directory = &stack.simulator.directory;
    directory.add_tenant(entra_tenant, &[&tenant.sender_mailbox, DEMO_RECIPIENT]);
    // It grants the sign-in log and has Entra ID P1: the migration board reads its
    // password logins to SMTP AUTH without an upload.
    directory.consent(
        entra_tenant,
        &stack.client_id,
        &[ROLE_MAIL_SEND, ROLE_AUDIT_LOG_READ],
    );
    directory.set_premium(entra_tenant, true);
    let now = chrono::Utc::now();
    directory.add_sign_ins(
        entra_tenant,
        (1..=12).flat_map(|day| {
            let at = now - chrono::Duration::days(day) - chrono::Duration::hours(day);
            [
                SimSignIn::authenticated_smtp(
                    "fax@praxis-sonnenschein.example",
                    "203.0.113.40",
                    at,
                ),
                SimSignIn::authenticated_smtp(
                    "labor@praxis-sonnenschein.example",
                    "203.0.113.41",
                    at,
                ),
            ]
        }),
    );
    let onboarding = Uuid::new_v4();
    directory.add_tenant(onboarding, &ONBOARDING_MAILBOXES);
    directory.set_tenant_name(onboarding, ONBOARDING_TENANT);
    directory.add_user(
        onboarding,
        "admin@zahnarzt-am-see.example",
        "Dr. Meier (Global Admin)",
    );
    directory.set_default_admin_tenant(Some(onboarding));
    for (email, name, role) in DEMO_STAFF {
        stack.add_staff_user(email, name);
        let known: bool = mailbridge_core::store::staff::by_email(&pool, email)
            .await?
            .is_some();
        if !known {
            mailbridge_web::add_staff(&pool, email, role).await?;
        }
    }
    let existing = devices::list(&pool, tenant.id).await?.len();
    let device_name = format!("Empfang scanner {}", existing + 1);
    let device = devices::create(&pool, tenant.id, &device_name).await?;

    let smtp = stack.smtp_addr;
    let ca = stack.edge_ca_file.display();
    println!(
        r#"
mailbridge is running.

  Control plane   http://{web}/  sign in as {staff} (simulated Entra ID)
                  onboard "{onboarding}": sender mailbox {onboarding_mailbox}
  Metrics         http://{ops}/metrics (edge and worker), http://{web}/metrics (web)
  SMTP            {smtp} (STARTTLS), {smtps} (implicit TLS), {relay} (relay by address)
                  AUTH PLAIN/LOGIN; CA certificate: {ca}
  Device          username {user}
                  password {password}
  Customer        {tenant} → sends as {mailbox}
  Microsoft 365   simulated at {sim}; CA certificate: {sim_ca}
                  a new consent propagates in {propagation} s (MAILBRIDGE_SIM_CONSENT_PROPAGATION_SECONDS)
                  mailboxes: {sim}/_sim/inbox (JSON: {sim}/_sim/messages)

Send a test message:

  printf 'From: {mailbox}\r\nTo: {rcpt}\r\nSubject: Hello from mailbridge\r\n\r\nIt works.\r\n' | curl --ssl-reqd --cacert {ca} --url smtp://{smtp} --user '{user}:{password}' --mail-from {mailbox} --mail-rcpt {rcpt} --upload-file -

then look at {sim}/_sim/inbox (over HTTPS, its certificate is signed by the simulator's CA above).
Ctrl-C stops everything{cleanup}.
"#,
        web = stack.web_addr,
        staff = DEMO_STAFF
            .map(|(email, _, role)| format!("{email} ({})", role.as_str()))
            .join(", "),
        onboarding = ONBOARDING_TENANT,
        onboarding_mailbox = ONBOARDING_MAILBOXES[0],
        ops = stack.ops_addr,
        smtps = stack.smtps_addr.map(|a| a.to_string()).unwrap_or_default(),
        relay = stack.relay_addr.map(|a| a.to_string()).unwrap_or_default(),
        user = device.device.username,
        password = device.password,
        tenant = tenant.name,
        mailbox = tenant.sender_mailbox,
        rcpt = DEMO_RECIPIENT,
        sim = stack.simulator.base_url(),
        propagation = propagation,
        sim_ca = stack
            .settings
            .extra_ca_file
            .as_deref()
            .unwrap_or(std::path::Path::new("?"))
            .display(),
        cleanup = if scratch.is_some() {
            " and removes the throwaway database"
        } else {
            ""
        },
    );

    crate::shutdown_on_signal().cancelled().await;
    stack.shutdown().await;
    pool.close().await;
    drop(scratch);
    Ok(())
}
