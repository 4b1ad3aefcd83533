//! The administration commands (`tenant`, `device`, `staff`, `api-token`,
//! `rotate-master-key`). Output is JSON, for scripts; errors go to stderr with a
//! non-zero exit.
//!
//! Over 500 lines: about 260 of them are the clap definitions, whose help text is the
//! commands' documentation; the handlers that follow are short and share the argument
//! parsers, the device policy arguments and `print_json`.

use anyhow::Context;
use clap::{Args, Subcommand};
use mailbridge_core::{
    Settings,
    config::parse_network,
    crypto::MasterKey,
    devices::{self, AllowListLimits, DeviceKind, DeviceListener, PolicyChange, SenderPolicy},
    logins, queue,
    tenants::{self, AppCredential, CertificateCredential, DeliveryMethod, NewTenant, OwnApp},
};
use secrecy::SecretString;
use sqlx::PgPool;
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
        #[arg(long)]
        client_id: Option<String>,
        /// Name of the environment variable holding that app's client secret
        /// (secrets are not taken on the command line, where `ps` shows them).
        #[arg(
            long,
            requires = "client_id",
            conflicts_with = "client_certificate_file"
        )]
        client_secret_env: Option<String>,
        /// Or that app's certificate (PEM) for client assertions instead of a secret.
        #[arg(long, requires_all = ["client_id", "client_key_file"])]
        client_certificate_file: Option<std::path::PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "client_certificate_file")]
        client_key_file: Option<std::path::PathBuf>,
    },
    /// Lists the customers as JSON.
    List,
    /// Changes a customer's settings.
    Set {
        /// The customer's name or id.
        #[arg(long)]
        tenant: String,
        /// Where reports of undeliverable messages go (`none` to clear).
        #[arg(long)]
        notification_address: Option<String>,
        /// Messages per minute for all the customer's devices together (0: no limit).
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Send messages over Graph's 4 MB request limit by SMTP XOAUTH2 (`true`/`false`).
        #[arg(long)]
        smtp_for_large_messages: Option<bool>,
        /// Keep a copy in the sender mailbox's Sent Items (`true`/`false`).
        #[arg(long)]
        save_to_sent_items: Option<bool>,
        /// The largest message the customer's devices may send: its sender mailbox's
        /// maximum send size in Exchange Online (`35MB` by default, up to `150MB`;
        /// bytes, or with KB/MB).
        #[arg(long, value_name = "SIZE", value_parser = parse_message_size)]
        max_message_size: Option<i64>,
    },
}

fn parse_message_size(text: &str) -> Result<i64, String> {
    let bytes = tenants::parse_size(text)
        .ok_or_else(|| format!("{text:?}: expected bytes, or a size such as 35MB"))?;
    if !(tenants::SMALLEST_MAX_MESSAGE_BYTES..=tenants::LARGEST_MAX_MESSAGE_BYTES).contains(&bytes)
    {
        return Err(format!(
            "{text}: Exchange Online allows 1 MB to 150 MB per mailbox (35 MB by default)"
        ));
    }
    Ok(bytes)
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
        #[command(flatten)]
        policy: DevicePolicyArgs,
    },
    /// Lists a customer's devices as JSON; warns on stderr about allow-lists wider
    /// than allowed.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Changes a device's policy and prints the device as JSON.
    Set {
        #[arg(long)]
        tenant: String,
        /// The device's name or id.
        #[arg(long)]
        device: String,
        #[command(flatten)]
        policy: DevicePolicyArgs,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Issues a new password (the old one stops working at once) and prints it once.
    Rotate {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: String,
    },
    /// Lifts the device's login lockouts and forgets its failed logins.
    Unlock {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Invites a member of staff with a role: they get it at their first sign-in
    /// (matched on the e-mail address or UPN the sign-in provider names). Someone who
    /// signed in already, perhaps waiting for approval, gets the role at once. The
    /// first owner is made this way.
    Add {
        #[arg(long)]
        email: String,
        /// `owner`, `admin`, `technician` or `readonly`.
        #[arg(long, value_parser = parse_role)]
        role: mailbridge_web::Role,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Creates an API token for automation in the name of a member of staff and prints
    /// it once. It stops working when it expires, and when that member is disabled or
    /// no longer holds the token's role.
    Add {
        /// The member of staff the token acts for (they must have signed in once).
        #[arg(long)]
        staff: String,
        /// `admin`, `technician` or `readonly`, not above the member's own.
        #[arg(long, value_parser = parse_role)]
        role: mailbridge_web::Role,
        /// How long it is valid: `30d`, `12h` … (at most a year).
        #[arg(long, default_value = "90d", value_parser = parse_token_days)]
        expires: u32,
        /// A name to recognise it by in the control plane.
        #[arg(long, default_value = "automation")]
        name: String,
    },
}

fn parse_role(text: &str) -> Result<mailbridge_web::Role, String> {
    mailbridge_web::Role::ALL
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not owner, admin, technician or readonly"))
}

/// A duration as whole days (rounded up), at most a year.
fn parse_token_days(text: &str) -> Result<u32, String> {
    let duration = mailbridge_core::config::parse_duration(text)?;
    let days = duration.as_secs().div_ceil(86_400);
    match u32::try_from(days) {
        Ok(days @ 1..=mailbridge_web::TOKEN_DAYS_MAX) => Ok(days),
        _ => Err(format!(
            "{text:?}: a token is valid for 1 day to {} days",
            mailbridge_web::TOKEN_DAYS_MAX
        )),
    }
}

/// `mailbridge rotate-master-key`: re-seals, in small batches (each its own
/// transaction, rows in use skipped and retried), what is not yet sealed with the
/// current key. Ends with an error while anything is left, e.g. because a pod still
/// seals with the old key.
pub async fn rotate_master_key(pool: &PgPool, key: &MasterKey) -> anyhow::Result<()> {
    const BATCH: i64 = 200;
    let (mut secrets, mut bodies) = (0u64, 0u64);
    loop {
        let batch = tenants::reseal_secrets(pool, key, BATCH).await?;
        secrets += batch;
        if batch == 0 {
            break;
        }
    }
    // Bodies come and go while this runs; a bounded number of passes, then a count.
    for _ in 0..10_000 {
        let batch = queue::reseal_bodies(pool, key, BATCH).await?;
        bodies += batch;
        if batch == 0 {
            break;
        }
    }
    let prefix = key.sealed_prefix();
    let (secrets_left, bodies_left) =
        mailbridge_core::db::sealed_with_another_key(pool, &prefix).await?;
    println!(
        "{}",
        serde_json::json!({
            "master_key": key.id(),
            "resealed": { "app_credentials": secrets, "message_bodies": bodies },
            "left": { "app_credentials": secrets_left, "message_bodies": bodies_left },
        })
    );
    if secrets_left + bodies_left > 0 {
        anyhow::bail!(
            "{secrets_left} app credentials and {bodies_left} message bodies are still sealed with another key \
             (rows in use, or a pod that still has the old MAILBRIDGE_MASTER_KEY): roll out the new key to every \
             pod and run this again"
        );
    }
    tracing::info!(
        "nothing is sealed with a previous key any more: MAILBRIDGE_MASTER_KEY_PREVIOUS can be removed"
    );
    Ok(())
}

pub async fn staff(command: StaffCommand, pool: &PgPool) -> anyhow::Result<()> {
    match command {
        StaffCommand::Add { email, role } => {
            let done = mailbridge_web::add_staff(pool, &email, role).await?;
            print_json(&serde_json::json!({
                "email": email.trim().to_ascii_lowercase(),
                "role": role.as_str(),
                "status": match done {
                    mailbridge_web::Invited::Invitation => "invited",
                    mailbridge_web::Invited::RoleGiven => "role given",
                },
            }))
        }
    }
}

pub async fn api_token(command: ApiTokenCommand, pool: &PgPool) -> anyhow::Result<()> {
    match command {
        ApiTokenCommand::Add {
            staff,
            role,
            expires,
            name,
        } => {
            let (token, secret) =
                mailbridge_web::create_api_token(pool, &staff, &name, role, expires).await?;
            print_json(&serde_json::json!({
                "id": token.id,
                "name": token.name,
                "role": token.role,
                "staff": staff,
                "expires_at": token.expires_at,
                "token": secret,
            }))
        }
    }
}

/// What `device add` and `device set` can set, as in the control plane.
#[derive(Debug, Args)]
pub struct DevicePolicyArgs {
    /// `submission` (587, STARTTLS), `submissions` (465, TLS) or `relay` (port 25,
    /// no password: identified by its allow-list).
    #[arg(long, value_parser = parse_listener)]
    listener: Option<DeviceListener>,
    /// `printer`, `scanner`, `medical`, `software` or `other`.
    #[arg(long, value_parser = parse_kind)]
    kind: Option<DeviceKind>,
    /// Where the device stands (`none` to clear).
    #[arg(long)]
    site: Option<String>,
    /// Source networks (CIDR or address; repeat, or `none`). For a relay device they
    /// identify it; for a password device they narrow where it may log in from.
    #[arg(long = "allow-network", value_name = "CIDR")]
    allow_networks: Vec<String>,
    /// Sender addresses or `@domain`s it may use (repeat, or `none`).
    #[arg(long = "allow-sender", value_name = "ADDRESS")]
    allow_senders: Vec<String>,
    /// `rewrite` (a From it may not use becomes the sender mailbox) or `enforce` (refused).
    #[arg(long)]
    sender_policy: Option<SenderPolicy>,
    /// Messages per minute (0: no limit).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Allow the legacy-TLS listener (TLS 1.0/1.1, CBC suites) for a device that
    /// cannot do TLS 1.2; `--legacy-tls false` takes it back.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    legacy_tls: Option<bool>,
}

fn parse_listener(text: &str) -> Result<DeviceListener, String> {
    DeviceListener::parse(text)
        .ok_or_else(|| format!("{text:?}: expected submission, submissions or relay"))
}

fn parse_kind(text: &str) -> Result<DeviceKind, String> {
    DeviceKind::parse(text)
        .ok_or_else(|| format!("{text:?}: expected printer, scanner, medical, software or other"))
}

impl DevicePolicyArgs {
    /// The change these arguments ask for, with the allow-list checked against `limits`.
    fn change(self, limits: &AllowListLimits) -> anyhow::Result<PolicyChange> {
        let list = |values: Vec<String>| match values.as_slice() {
            [] => None,
            [none] if none == "none" => Some(Vec::new()),
            _ => Some(values),
        };
        let networks = list(self.allow_networks)
            .map(|nets| {
                nets.iter()
                    .map(|n| parse_network(n))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(anyhow::Error::msg)?;
        if let Some(networks) = &networks {
            limits.check(networks)?;
        }
        let senders = list(self.allow_senders);
        if let Some(bad) = senders.iter().flatten().find(|s| !valid_sender_pattern(s)) {
            anyhow::bail!("{bad:?} is neither an address nor an @domain");
        }
        Ok(PolicyChange {
            allowed_networks: networks,
            allowed_senders: senders,
            sender_policy: self.sender_policy,
            rate_limit_per_minute: self
                .rate_limit
                .map(|r| (r > 0).then_some(r.min(i32::MAX as u32) as i32)),
            kind: self.kind,
            site: self
                .site
                .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty() && s != "none")),
            listener: self.listener,
            legacy_tls: self.legacy_tls,
            ..PolicyChange::default()
        })
    }
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
            client_certificate_file,
            client_key_file,
        } => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let credential = match (client_secret_env, client_certificate_file, client_key_file) {
                (Some(var), _, _) => {
                    let secret = std::env::var(&var)
                        .with_context(|| format!("reading the client secret from ${var}"))?;
                    Some(AppCredential::ClientSecret(SecretString::from(secret)))
                }
                (None, Some(cert), Some(key)) => {
                    Some(AppCredential::Certificate(CertificateCredential {
                        certificate_pem: read(&cert)?,
                        private_key_pem: SecretString::from(read(&key)?),
                    }))
                }
                _ => None,
            };
            let own_app = match (client_id, credential) {
                (Some(client_id), Some(credential)) => Some(OwnApp {
                    client_id,
                    credential,
                }),
                (Some(_), None) => {
                    anyhow::bail!("--client-id needs --client-secret-env or a certificate and key")
                }
                _ => None,
            };
            let new = NewTenant {
                name,
                entra_tenant_id: Some(entra_tenant_id.into()),
                sender_mailbox,
                delivery_method: method,
                own_app,
            };
            let tenant = tenants::create(pool, settings.master_key.as_ref(), new).await?;
            print_json(&tenant)
        }
        TenantCommand::List => print_json(&tenants::list(pool).await?),
        TenantCommand::Set {
            tenant,
            notification_address,
            rate_limit,
            smtp_for_large_messages,
            save_to_sent_items,
            max_message_size,
        } => {
            let tenant = tenants::find(pool, &tenant).await?;
            if let Some(bytes) = max_message_size {
                tenants::set_max_message_size(pool, tenant.id, bytes).await?;
            }
            if let Some(address) = notification_address {
                let address = (address != "none").then_some(address);
                tenants::set_notification_address(pool, tenant.id, address.as_deref()).await?;
            }
            if let Some(limit) = rate_limit {
                let limit = (limit > 0).then_some(limit.min(i32::MAX as u32) as i32);
                tenants::set_rate_limit(pool, tenant.id, limit).await?;
            }
            if let Some(enabled) = smtp_for_large_messages {
                tenants::set_smtp_for_large_messages(pool, tenant.id, enabled).await?;
            }
            if let Some(save) = save_to_sent_items {
                tenants::set_save_to_sent_items(pool, tenant.id, save).await?;
            }
            print_json(&tenants::get(pool, tenant.id).await?)
        }
    }
}

pub async fn device(
    command: DeviceCommand,
    pool: &PgPool,
    settings: &Settings,
) -> anyhow::Result<()> {
    let limits = &settings.allow_list;
    match command {
        DeviceCommand::Add {
            tenant,
            name,
            policy,
        } => {
            let tenant = tenants::find(pool, &tenant).await?;
            let change = policy.change(limits)?;
            let mut issued = devices::create(pool, tenant.id, &name).await?;
            if let Some(device) = devices::change_policy(pool, issued.device.id, change).await? {
                issued.device = device;
            }
            print_json(&issued)
        }
        DeviceCommand::List { tenant } => {
            let tenant = tenants::find(pool, &tenant).await?;
            let list = devices::list(pool, tenant.id).await?;
            for device in &list {
                if let Some(network) = limits.too_wide(&device.allowed_networks) {
                    eprintln!(
                        "warning: {}: allow-list entry {network} is wider than allowed (at most /{}); narrow it",
                        device.name,
                        limits.widest_for(network)
                    );
                }
            }
            print_json(&list)
        }
        DeviceCommand::Set {
            tenant,
            device,
            policy,
            disable,
            enable,
        } => {
            let device = find_device(pool, &tenant, &device).await?;
            let mut change = policy.change(limits)?;
            change.enabled = if disable {
                Some(false)
            } else if enable {
                Some(true)
            } else {
                None
            };
            let changed = devices::change_policy(pool, device.id, change).await?;
            print_json(&changed)
        }
        DeviceCommand::Rotate { tenant, device } => {
            let device = find_device(pool, &tenant, &device).await?;
            print_json(&devices::rotate_password(pool, device.id).await?)
        }
        DeviceCommand::Unlock { tenant, device } => {
            let device = find_device(pool, &tenant, &device).await?;
            let unlocked = logins::unlock(pool, &device.username).await?;
            print_json(&serde_json::json!({ "device": device.id, "unlocked": unlocked }))
        }
    }
}

async fn find_device(pool: &PgPool, tenant: &str, device: &str) -> anyhow::Result<devices::Device> {
    let tenant = tenants::find(pool, tenant).await?;
    devices::find(pool, tenant.id, device)
        .await?
        .with_context(|| format!("{} has no device {device:?}", tenant.name))
}

/// `someone@domain.tld` or `@domain.tld`.
fn valid_sender_pattern(pattern: &str) -> bool {
    match pattern.strip_prefix('@') {
        Some(domain) => {
            mailbridge_core::address::EmailAddress::parse(&format!("x@{domain}")).is_ok()
        }
        None => mailbridge_core::address::EmailAddress::parse(pattern).is_ok(),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
