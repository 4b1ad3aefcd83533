//! Devices in the control plane: adding one (a generated username and password, the
//! password shown exactly once), its policy (IP allow-list, sender policy, rate
//! limit, listener), rotating its password, disabling and deleting it, and the
//! printable setup card a technician takes to the site. Every device is addressed
//! under its customer, and a device of another customer is not found.
//!
//! Longer than most modules because each device operation (shared with the API and
//! audited) sits beside its form handler, and the device page, the connection
//! settings a device is given and the setup card all read the same device.

use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use std::net::IpAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use ipnet::IpNet;
use mailbridge_core::{
    devices::{
        self, Device, DeviceKind, DeviceListener, IssuedCredential, PolicyChange, SenderPolicy,
    },
    logins::{self, LoginFailures},
    tenants::Tenant,
    transcripts::{Finding, StoredTranscript},
};
use serde::Deserialize;
use serde_json::json;
use strum::VariantArray;

use crate::{
    WebState, audit, customers,
    device_models::{self, ModelNote},
    error::{Error, Result},
    i18n::Tr,
    layout::{Nav, checkbox},
    roles::{Actor, Permission},
    tr,
};

/// What adding or changing a device takes (form and API alike). Absent fields stay
/// as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct DeviceInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub listener: Option<String>,
    /// Addresses or CIDR networks, separated by commas, spaces or lines.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_networks: Option<ListInput>,
    /// Addresses or `@domain`s.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_senders: Option<ListInput>,
    #[serde(default)]
    pub sender_policy: Option<String>,
    #[serde(default)]
    pub rate_limit_per_minute: Option<String>,
    #[serde(default, deserialize_with = "checkbox")]
    pub enabled: Option<bool>,
    /// May log in on the legacy-TLS listener (TLS 1.0/1.1, CBC suites).
    #[serde(default, deserialize_with = "checkbox")]
    pub legacy_tls: Option<bool>,
    /// A model family key of the model notes; empty clears it.
    #[serde(default)]
    pub model_family: Option<String>,
}

/// A list as a form's text (split on commas and white space) or a JSON array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ListInput {
    Items(Vec<String>),
    Text(String),
}

impl ListInput {
    fn items(&self) -> Vec<String> {
        match self {
            Self::Items(items) => items
                .iter()
                .map(|i| i.trim().to_owned())
                .collect::<Vec<_>>(),
            Self::Text(text) => text
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(str::to_owned)
                .collect(),
        }
        .into_iter()
        .filter(|i| !i.is_empty())
        .collect()
    }
}

pub(crate) fn parse_networks(input: &ListInput) -> Result<Vec<IpNet>> {
    input
        .items()
        .iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| Error::InvalidValue {
                    text: tr!(
                        "{} is not an IP address or network (e.g. 192.0.2.10 or 192.0.2.0/24)."
                    ),
                    value: item.clone(),
                })
        })
        .collect()
}

pub(crate) fn parse_senders(input: &ListInput) -> Result<Vec<String>> {
    input
        .items()
        .into_iter()
        .map(|item| {
            let domain = item.strip_prefix('@');
            let valid = match domain {
                Some(d) => !d.is_empty() && d.contains('.') && !d.contains('@'),
                None => mailbridge_core::address::EmailAddress::parse(&item).is_ok(),
            };
            if valid {
                Ok(item.to_ascii_lowercase())
            } else {
                Err(Error::InvalidValue {
                    text: tr!("{} is neither an address (scan@praxis.example) nor a domain (@praxis.example)."),
                    value: item,
                })
            }
        })
        .collect()
}

fn change_from(state: &WebState, input: &DeviceInput) -> Result<PolicyChange> {
    let invalid = |what: &str| Error::Invalid(what.to_owned());
    let allowed_networks = input
        .allowed_networks
        .as_ref()
        .map(parse_networks)
        .transpose()?;
    if let Some(networks) = &allowed_networks {
        state.settings.allow_list.check(networks)?;
    }
    Ok(PolicyChange {
        allowed_networks,
        allowed_senders: input
            .allowed_senders
            .as_ref()
            .map(parse_senders)
            .transpose()?,
        sender_policy: input
            .sender_policy
            .as_deref()
            .map(|p| p.parse::<SenderPolicy>().map_err(Error::Invalid))
            .transpose()?,
        rate_limit_per_minute: match &input.rate_limit_per_minute {
            Some(text) => Some(customers::optional_number(Some(text))?),
            None => None,
        },
        enabled: input.enabled,
        kind: input
            .kind
            .as_deref()
            .map(|k| DeviceKind::parse(k).ok_or_else(|| invalid(tr!("Unknown device kind."))))
            .transpose()?,
        site: input
            .site
            .as_ref()
            .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        listener: input
            .listener
            .as_deref()
            .map(|l| DeviceListener::parse(l).ok_or_else(|| invalid(tr!("Unknown listener."))))
            .transpose()?,
        legacy_tls: input.legacy_tls,
        model_family: input
            .model_family
            .as_deref()
            .map(str::trim)
            .map(|key| match key {
                "" => Ok(None),
                key => device_models::find(key)
                    .map(|m| Some(m.key.clone()))
                    .ok_or_else(|| invalid(tr!("Unknown model family."))),
            })
            .transpose()?,
    })
}

/// The device `device_id` of customer `tenant_id` — never one of another customer.
pub async fn load(state: &WebState, tenant_id: TenantId, device_id: DeviceId) -> Result<Device> {
    devices::get(&state.pool, device_id)
        .await?
        .filter(|d| d.tenant_id == tenant_id)
        .ok_or(Error::NotFound)
}

pub async fn create(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    input: &DeviceInput,
) -> Result<IssuedCredential> {
    actor.require(Permission::ManageDevices)?;
    let tenant = customers::load(&state.pool, tenant_id).await?;
    let change = change_from(state, input)?;
    let name = input.name.as_deref().unwrap_or_default();
    let mut issued = devices::create(&state.pool, tenant.id, name).await?;
    if let Some(device) = devices::change_policy(&state.pool, issued.device.id, change).await? {
        issued.device = device;
    }
    audit::record(
        &state.pool,
        actor,
        "device.create",
        Some(tenant.id),
        Some(&issued.device.name),
        json!({
            "device_id": issued.device.id,
            "username": issued.device.username,
            "listener": issued.device.listener,
            "allowed_networks": issued.device.allowed_networks,
            "legacy_tls": issued.device.legacy_tls,
            "model_family": issued.device.model_family,
        }),
    )
    .await?;
    Ok(issued)
}

pub async fn update(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    device_id: DeviceId,
    input: &DeviceInput,
) -> Result<Device> {
    actor.require(Permission::ManageDevices)?;
    let before = load(state, tenant_id, device_id).await?;
    let change = change_from(state, input)?;
    let after = devices::change_policy(&state.pool, device_id, change)
        .await?
        .ok_or(Error::NotFound)?;
    audit::record(
        &state.pool,
        actor,
        "device.update",
        Some(tenant_id),
        Some(&after.name),
        json!({
            "device_id": device_id,
            "allowed_networks": [before.allowed_networks, after.allowed_networks.clone()],
            "allowed_senders": [before.allowed_senders, after.allowed_senders.clone()],
            "sender_policy": [before.sender_policy, after.sender_policy],
            "rate_limit_per_minute": [before.rate_limit_per_minute, after.rate_limit_per_minute],
            "enabled": [before.enabled, after.enabled],
            "kind": [before.kind, after.kind],
            "site": [before.site, after.site.clone()],
            "listener": [before.listener, after.listener],
            "legacy_tls": [before.legacy_tls, after.legacy_tls],
            "model_family": [before.model_family, after.model_family.clone()],
        }),
    )
    .await?;
    Ok(after)
}

pub async fn rotate(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<IssuedCredential> {
    actor.require(Permission::ManageDevices)?;
    let device = load(state, tenant_id, device_id).await?;
    let issued = devices::rotate_password(&state.pool, device.id).await?;
    audit::record(
        &state.pool,
        actor,
        "device.rotate_password",
        Some(tenant_id),
        Some(&device.name),
        json!({ "device_id": device_id }),
    )
    .await?;
    Ok(issued)
}

pub async fn delete(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<()> {
    actor.require(Permission::ManageDevices)?;
    let device = load(state, tenant_id, device_id).await?;
    devices::delete(&state.pool, device.id).await?;
    audit::record(
        &state.pool,
        actor,
        "device.delete",
        Some(tenant_id),
        Some(&device.name),
        json!({ "device_id": device_id, "username": device.username }),
    )
    .await?;
    Ok(())
}

/// Recent failed logins and current locks of the device's username: per source
/// network (the pair) or for every unfamiliar address (username-wide).
pub async fn failed_logins(
    state: &WebState,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<Vec<LoginFailures>> {
    let device = load(state, tenant_id, device_id).await?;
    Ok(logins::for_username(
        &state.pool,
        &device.username,
        state.settings.edge.auth_throttle.window,
    )
    .await?)
}

/// The device's last sessions on the edge (and those from its sites' addresses
/// that never named a device), newest first, with what they show in words; for
/// technicians and up (they are personal data about a site's network).
pub async fn transcripts(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<(Vec<StoredTranscript>, Vec<Finding>)> {
    actor.require(Permission::ManageDevices)?;
    let device = load(state, tenant_id, device_id).await?;
    let keep = i64::from(state.settings.edge.transcripts_per_key.max(1));
    let found = mailbridge_core::transcripts::for_device(&state.pool, device.id, keep).await?;
    let findings = mailbridge_core::transcripts::diagnose(&found);
    Ok((found, findings))
}

/// Lifts every lock of the device's username and forgets its failures (the edges
/// see it within seconds). Returns whether anything was locked or counted.
pub async fn unlock(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    device_id: DeviceId,
) -> Result<bool> {
    actor.require(Permission::ManageDevices)?;
    let device = load(state, tenant_id, device_id).await?;
    let before = logins::for_username(
        &state.pool,
        &device.username,
        state.settings.edge.auth_throttle.window,
    )
    .await?;
    let unlocked = logins::unlock(&state.pool, &device.username).await?;
    audit::record(
        &state.pool,
        actor,
        "device.unlock",
        Some(tenant_id),
        Some(&device.name),
        json!({
            "device_id": device_id,
            "username": device.username,
            "locks": before
                .iter()
                .filter(|l| l.locked_until.is_some())
                .map(|l| json!({ "scope": l.scope, "source": l.source, "locked_until": l.locked_until }))
                .collect::<Vec<_>>(),
        }),
    )
    .await?;
    Ok(unlocked)
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/customers/{id}/devices", post(create_form))
        .route("/customers/{id}/devices/{device}/unlock", post(unlock_form))
        .route(
            "/customers/{id}/devices/{device}",
            get(detail).post(update_form),
        )
        .route("/customers/{id}/devices/{device}/rotate", post(rotate_form))
        .route(
            "/customers/{id}/devices/{device}/enabled",
            post(enabled_form),
        )
        .route("/customers/{id}/devices/{device}/delete", post(delete_form))
        .route("/customers/{id}/devices/{device}/setup", get(setup_card))
}

async fn create_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(input): Form<DeviceInput>,
) -> Result<Response> {
    let issued = create(&state, &actor, id, &input).await?;
    // A device that relays by its address (port 25) logs in with no password: there
    // is nothing to copy, its page says how it connects.
    if issued.device.listener == DeviceListener::Relay {
        let device = &issued.device;
        return Ok(
            Redirect::to(&format!("/customers/{id}/devices/{}?added=1", device.id)).into_response(),
        );
    }
    credential_page(&state, &actor, issued, false).await
}

/// Keeps the new password for one view on the device's credential page and sends
/// the browser there (redirect-after-POST).
pub(crate) async fn credential_page(
    state: &WebState,
    actor: &Actor,
    issued: IssuedCredential,
    rotated: bool,
) -> Result<Response> {
    crate::reveal::stash(state, actor, issued, rotated).await
}

#[derive(Template, WebTemplate)]
#[template(path = "device.html")]
struct DevicePage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    device: Device,
    networks: String,
    senders: String,
    kinds: &'static [DeviceKind],
    can_manage: bool,
    notice: Option<&'static str>,
    logins: Vec<LoginFailures>,
    /// Its messages, failures and logins of the last 24 hours.
    health: crate::device_health::DeviceHealth,
    /// `None`: the viewer may not see transcripts.
    transcripts: Option<(Vec<StoredTranscript>, Vec<Finding>)>,
    models: &'static [ModelNote],
    model: Option<&'static ModelNote>,
    card: crate::alerts::AlertsCard,
}

impl DevicePage {
    fn locked(&self) -> bool {
        self.logins.iter().any(|l| l.locked_until.is_some())
    }
}

#[derive(Deserialize)]
struct DeviceQuery {
    saved: Option<String>,
    added: Option<String>,
    unlocked: Option<String>,
}

async fn detail(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
    axum::extract::Query(query): axum::extract::Query<DeviceQuery>,
) -> Result<Response> {
    let tenant = customers::load(&state.pool, id).await?;
    let device = load(&state, id, device_id).await?;
    let logins = failed_logins(&state, id, device_id).await?;
    let health = crate::device_health::one(&state.pool, id, device_id).await?;
    let transcripts = if actor.may(Permission::ManageDevices) {
        Some(transcripts(&state, &actor, id, device_id).await?)
    } else {
        None
    };
    let notice = if query.added.is_some() {
        Some(tr!(
            "The device was added. It sends by its address (allow-list) and needs no password."
        ))
    } else if query.unlocked.is_some() {
        Some(tr!("The device's logins were unlocked."))
    } else {
        query.saved.map(|_| tr!("The settings were saved."))
    };
    Ok(DevicePage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        networks: device
            .allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        senders: device.allowed_senders.join("\n"),
        model: device.model_family.as_deref().and_then(device_models::find),
        models: device_models::all(),
        card: crate::alerts::device_card(&state, &actor, id, &device).await?,
        transcripts,
        tenant,
        device,
        kinds: DeviceKind::VARIANTS,
        can_manage: actor.may(Permission::ManageDevices),
        notice,
        logins,
        health,
    }
    .into_response())
}

async fn update_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
    Form(mut input): Form<DeviceInput>,
) -> Result<Response> {
    // The form always sends both lists (an empty text clears one).
    input
        .allowed_networks
        .get_or_insert(ListInput::Text(String::new()));
    input
        .allowed_senders
        .get_or_insert(ListInput::Text(String::new()));
    input.rate_limit_per_minute.get_or_insert_with(String::new);
    // An unticked box is not sent at all.
    input.legacy_tls.get_or_insert(false);
    input.model_family.get_or_insert_with(String::new);
    update(&state, &actor, id, device_id, &input).await?;
    Ok(Redirect::to(&format!("/customers/{id}/devices/{device_id}?saved=1")).into_response())
}

async fn unlock_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    unlock(&state, &actor, id, device_id).await?;
    Ok(Redirect::to(&format!("/customers/{id}/devices/{device_id}?unlocked=1")).into_response())
}

async fn rotate_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    let issued = rotate(&state, &actor, id, device_id).await?;
    credential_page(&state, &actor, issued, true).await
}

#[derive(Deserialize)]
struct EnabledForm {
    enabled: String,
}

async fn enabled_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
    Form(form): Form<EnabledForm>,
) -> Result<Response> {
    let input = DeviceInput {
        enabled: Some(form.enabled == "true"),
        ..DeviceInput::default()
    };
    update(&state, &actor, id, device_id, &input).await?;
    Ok(Redirect::to(&format!("/customers/{id}/devices/{device_id}")).into_response())
}

async fn delete_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    delete(&state, &actor, id, device_id).await?;
    Ok(Redirect::to(&format!("/customers/{id}?notice=device-deleted")).into_response())
}

/// How a device reaches the edge, for its setup card.
pub struct Connection {
    pub host: String,
    pub port: Option<u16>,
    /// `STARTTLS`, `SSL/TLS` or none (relay by address).
    pub tls: &'static str,
    pub login: bool,
    /// Through the legacy-TLS listener.
    pub legacy: bool,
}

pub fn connection(state: &WebState, listener: DeviceListener) -> Connection {
    let edge = &state.settings.edge;
    let port = |addr: Option<std::net::SocketAddr>| addr.map(|a| a.port());
    let (port, tls, login) = match listener {
        DeviceListener::Submission => (port(edge.submission_listen), "STARTTLS", true),
        DeviceListener::Submissions => (port(edge.submissions_listen), "SSL/TLS", true),
        DeviceListener::Relay => (port(edge.relay_listen), "", false),
    };
    Connection {
        host: state
            .settings
            .web
            .smtp_host
            .clone()
            .unwrap_or_else(|| edge.hostname.clone()),
        port,
        tls,
        login,
        legacy: false,
    }
}

/// How a device reaches the edge: the legacy-TLS listener when it is allowed legacy
/// TLS and that listener is on, else its own listener.
pub fn connection_of(state: &WebState, device: &Device) -> Connection {
    let edge = &state.settings.edge;
    let legacy = match device.listener {
        _ if !device.legacy_tls => None,
        DeviceListener::Submission => edge
            .legacy_submission_listen
            .map(|a| (a.port(), "STARTTLS"))
            .or(edge
                .legacy_submissions_listen
                .map(|a| (a.port(), "SSL/TLS"))),
        DeviceListener::Submissions => edge
            .legacy_submissions_listen
            .map(|a| (a.port(), "SSL/TLS"))
            .or(edge
                .legacy_submission_listen
                .map(|a| (a.port(), "STARTTLS"))),
        DeviceListener::Relay => None,
    };
    let mut connection = connection(state, device.listener);
    if let Some((port, tls)) = legacy {
        connection.port = Some(port);
        connection.tls = tls;
        connection.legacy = true;
    }
    connection
}

#[derive(Template, WebTemplate)]
#[template(path = "setup_card.html")]
struct SetupCard {
    t: Tr,
    tenant: Tenant,
    device: Device,
    connection: Connection,
    model: Option<&'static ModelNote>,
}

async fn setup_card(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    let tenant = customers::load(&state.pool, id).await?;
    let device = load(&state, id, device_id).await?;
    Ok(SetupCard {
        t: actor.tr,
        connection: connection_of(&state, &device),
        model: device.model_family.as_deref().and_then(device_models::find),
        tenant,
        device,
    }
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_from_text_and_refuse_nonsense() {
        let nets = parse_networks(&ListInput::Text(
            "192.0.2.10, 10.1.2.3/16\n2001:db8::/48".into(),
        ))
        .unwrap();
        assert_eq!(
            nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["192.0.2.10/32", "10.1.0.0/16", "2001:db8::/48"]
        );
        assert!(parse_networks(&ListInput::Text("printer.local".into())).is_err());
        let senders = parse_senders(&ListInput::Items(vec![
            "Scan@Praxis.example".into(),
            "@labor.example".into(),
        ]))
        .unwrap();
        assert_eq!(senders, ["scan@praxis.example", "@labor.example"]);
        assert!(parse_senders(&ListInput::Text("@".into())).is_err());
        assert!(parse_senders(&ListInput::Text("not an address".into())).is_err());
    }
}
