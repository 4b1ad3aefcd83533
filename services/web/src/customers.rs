//! Customers (tenants) in the control plane: the overview with every customer's
//! health at a glance, a customer's page (Microsoft 365 connection, delivery
//! settings, test message, devices), and creating, changing and deleting customers.
//! The operations here are shared with the API; each one checks the role and writes
//! the audit log.
//!
//! Longer than most modules because a customer's health is put together here from
//! several grouped queries (messages, refusals, devices, holds, permissions), and
//! every customer operation the API shares sits beside its form handler.

use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use mailbridge_core::ids::EntraTenantId;
use mailbridge_core::{
    devices::Device,
    i18n::{self, Lang},
    least_privilege::{self, PermissionMode},
    own_mail::OwnMail,
    queue::{self, MessageKind, NewMessage},
    store::customer_health,
    tenants::{self, DeliveryMethod, DeliverySettings, NewTenant, Tenant},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;

use crate::{
    WebState, audit,
    error::{Error, Result},
    i18n::Tr,
    layout::{Nav, checkbox},
    roles::{Actor, CustomerScope, Permission},
    tr,
};

/// Devices not seen for this many days are flagged on the overview.
pub const STALE_DEVICE_DAYS: i64 = 7;

/// A customer's health, as the overview and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Connected to its Microsoft 365 tenant by a verified admin consent.
    pub connected: bool,
    /// Connected, and no token refusal since the last token was issued.
    pub consent_ok: bool,
    /// A consent was granted and a worker is verifying it (see `connection`).
    pub connecting: bool,
    pub last_token_error: Option<String>,
    pub last_token_error_at: Option<DateTime<Utc>>,
    /// The holds that keep the customer's messages waiting (its mailbox's, its
    /// own, its app's), widest first.
    pub holds: Vec<crate::holds::HoldView>,
    pub queued: i64,
    /// Accepted by Microsoft (Graph `202`, SMTP `250`) in the last 24 hours.
    pub accepted_24h: i64,
    /// Accepted, then reported undeliverable by Microsoft (an NDR).
    pub bounced_24h: i64,
    pub failed_24h: i64,
    /// Microsoft's refusals in the last 24 hours by diagnosis, most frequent first,
    /// 5.7.30 (basic authentication refused) always first.
    pub rejects_24h: Vec<RejectCount>,
    pub devices: i64,
    pub stale_devices: i64,
    /// Whether mailbridge can read the sender mailbox for Microsoft's bounces
    /// (`None` until the mailbox was first watched).
    pub bounces: Option<mailbridge_core::bounces::Visibility>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RejectCount {
    pub code: String,
    pub count: i64,
}

impl RejectCount {
    /// Basic authentication refused: the reason mailbridge exists; highlighted.
    pub fn is_basic_auth(&self) -> bool {
        self.code == mailbridge_core::diagnosis::BASIC_AUTH_REFUSED.key
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Customer)]
pub struct CustomerView {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub health: Health,
    /// Limited to the sender mailbox or tenant-wide (see `least_privilege`).
    pub permissions: crate::least_privilege::PermissionsView,
}

/// Every customer with its health (or just `only`), in three grouped queries.
/// Customers (all, or `only` one) that `scope` sees, with their health.
pub async fn with_health(
    pool: &PgPool,
    only: Option<TenantId>,
    scope: &CustomerScope,
) -> Result<Vec<CustomerView>> {
    let all: Vec<Tenant> = match only {
        Some(id) => tenants::get(pool, id).await?.into_iter().collect(),
        None => tenants::list(pool).await?,
    };
    health_of(pool, all, only.map(|id| vec![id]), scope).await
}

/// Customers `ids` (in that order) with their health: a page of the overview.
pub async fn with_health_of(
    pool: &PgPool,
    ids: &[TenantId],
    scope: &CustomerScope,
) -> Result<Vec<CustomerView>> {
    let mut found: HashMap<TenantId, Tenant> = tenants::list_of(pool, ids)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let all = ids.iter().filter_map(|id| found.remove(id)).collect();
    health_of(pool, all, Some(ids.to_vec()), scope).await
}

/// The health of `all`; `only` (the same customers) narrows the grouped queries.
async fn health_of(
    pool: &PgPool,
    mut all: Vec<Tenant>,
    only: Option<Vec<TenantId>>,
    scope: &CustomerScope,
) -> Result<Vec<CustomerView>> {
    all.retain(|t| scope.sees(t.id));
    let counts = customer_health::message_counts(pool, only.as_deref()).await?;
    let rejects = customer_health::refusals(pool, only.as_deref()).await?;
    let devices =
        customer_health::device_counts(pool, only.as_deref(), STALE_DEVICE_DAYS as i32).await?;
    let connecting = customer_health::connecting(pool, only.as_deref()).await?;
    let mut visibility = mailbridge_core::bounces::visibility(pool, only.as_deref()).await?;
    let counts: HashMap<TenantId, customer_health::MessageCounts> =
        counts.into_iter().map(|c| (c.tenant_id, c)).collect();
    let mut reject_map: HashMap<TenantId, Vec<RejectCount>> = HashMap::new();
    for refused in rejects {
        reject_map
            .entry(refused.tenant_id)
            .or_default()
            .push(RejectCount {
                code: refused.code,
                count: refused.count,
            });
    }
    let devices: HashMap<TenantId, (i64, i64)> = devices
        .into_iter()
        .map(|d| (d.tenant_id, (d.devices, d.stale)))
        .collect();
    let holds = crate::holds::for_customers(pool, &all).await?;
    let ids: Vec<TenantId> = all.iter().map(|t| t.id).collect();
    let mut permissions: HashMap<TenantId, mailbridge_core::least_privilege::Permissions> =
        mailbridge_core::least_privilege::of_customers(pool, &ids)
            .await?
            .into_iter()
            .map(|p| (p.tenant_id, p))
            .collect();
    Ok(all
        .into_iter()
        .zip(holds)
        .map(|(tenant, holds)| {
            let c = counts.get(&tenant.id);
            let mut rejects = reject_map.remove(&tenant.id).unwrap_or_default();
            rejects.sort_by_key(|r| (!r.is_basic_auth(), -r.count));
            let (device_count, stale) = devices.get(&tenant.id).copied().unwrap_or((0, 0));
            let recorded = permissions.remove(&tenant.id).unwrap_or_else(|| {
                mailbridge_core::least_privilege::Permissions::unrecorded(tenant.id)
            });
            let permissions =
                crate::least_privilege::PermissionsView::of(&recorded, &tenant, &holds);
            let (connected, consent_ok) = connection(&tenant);
            // Limited mode: connected once Exchange lets the app use the sender mailbox.
            let connected = connected && !permissions.waiting_for_exchange_script;
            let consent_ok = consent_ok && connected;
            CustomerView {
                permissions,
                health: Health {
                    connected,
                    consent_ok,
                    connecting: connecting.contains(&tenant.id),
                    last_token_error: tenant.last_token_error.clone(),
                    last_token_error_at: tenant.last_token_error_at,
                    holds,
                    queued: c.map_or(0, |c| c.queued),
                    accepted_24h: c.map_or(0, |c| c.accepted),
                    bounced_24h: c.map_or(0, |c| c.bounced),
                    failed_24h: c.map_or(0, |c| c.failed),
                    rejects_24h: rejects,
                    devices: device_count,
                    stale_devices: stale,
                    bounces: visibility.remove(&tenant.id),
                },
                tenant,
            }
        })
        .collect())
}

/// Whether a customer is connected to its Microsoft 365 tenant, and whether that
/// connection works (no token refusal since the last token issued). Connected means a
/// verified admin consent, or — for a customer set up with its tenant id by the CLI or
/// the API, whose consent was granted outside mailbridge — a token issued for it.
pub fn connection(tenant: &Tenant) -> (bool, bool) {
    let refused_since_ok = match (tenant.last_token_error_at, tenant.last_token_ok_at) {
        (Some(err), Some(ok)) => err > ok,
        (Some(_), None) => true,
        _ => false,
    };
    let token_worked = tenant.last_token_ok_at.is_some();
    let connected =
        tenant.entra_tenant_id.is_some() && (tenant.consented_at.is_some() || token_worked);
    (connected, connected && !refused_since_ok)
}

/// A customer, or not found.
pub async fn load(pool: &PgPool, id: TenantId) -> Result<Tenant> {
    tenants::get(pool, id).await?.ok_or(Error::NotFound)
}

/// What creating or changing a customer takes (form and API alike).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CustomerInput {
    pub name: String,
    pub sender_mailbox: String,
    #[serde(default)]
    pub delivery_method: Option<String>,
    /// Known before consent (optional): the consent then goes to this tenant.
    #[serde(default)]
    pub entra_tenant_id: Option<String>,
    #[serde(default, deserialize_with = "checkbox")]
    pub save_to_sent_items: Option<bool>,
    #[serde(default, deserialize_with = "checkbox")]
    pub smtp_for_large_messages: Option<bool>,
    #[serde(default)]
    pub notification_address: Option<String>,
    #[serde(default)]
    pub rate_limit_per_minute: Option<String>,
    /// The largest message the customer's devices may send, in MB (the sender
    /// mailbox's maximum send size in Exchange Online: 35 unless raised, at most 150).
    #[serde(default)]
    pub max_message_size_mb: Option<String>,
    /// The same in bytes (the API's form); takes precedence over the MB.
    #[serde(skip)]
    pub max_message_bytes: Option<i64>,
    /// `limited` (to the sender mailbox; the default for new customers) or
    /// `tenant_wide`.
    #[serde(default)]
    pub permission_mode: Option<String>,
}

fn permission_mode(text: Option<&str>) -> Result<Option<PermissionMode>> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            Error::Invalid(tr!("The permission mode is limited or tenant_wide.").into())
        }),
    }
}

fn method(text: Option<&str>) -> Result<DeliveryMethod> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(DeliveryMethod::Graph),
        Some(t) => t.parse().map_err(Error::Invalid),
    }
}

/// An optional positive number from a form or the API.
pub fn optional_number(text: Option<&str>) -> Result<Option<i32>> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => match t.parse::<i32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Error::Invalid(
                tr!("The rate limit must be a positive number of messages per minute.").into(),
            )),
        },
    }
}

fn blank_to_none(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

pub async fn create(state: &WebState, actor: &Actor, input: &CustomerInput) -> Result<Tenant> {
    actor.require(Permission::ManageCustomers)?;
    let entra_tenant_id = match blank_to_none(input.entra_tenant_id.as_deref()) {
        None => None,
        Some(text) => Some(text.parse::<EntraTenantId>().map_err(|_| {
            Error::Invalid(
                tr!("The Entra tenant ID is a GUID (Entra admin center → Overview → Tenant ID).")
                    .into(),
            )
        })?),
    };
    let mode =
        permission_mode(input.permission_mode.as_deref())?.unwrap_or(PermissionMode::Limited);
    let tenant = tenants::create(
        &state.pool,
        state.master_key.as_ref(),
        NewTenant {
            name: input.name.clone(),
            entra_tenant_id,
            sender_mailbox: input.sender_mailbox.clone(),
            delivery_method: method(input.delivery_method.as_deref())?,
            own_app: None,
        },
    )
    .await?;
    least_privilege::set_mode(&state.pool, tenant.id, mode).await?;
    // The rest of the settings, where given.
    let tenant = update_settings(state, &tenant, input).await?;
    audit::record(
        &state.pool,
        actor,
        "customer.create",
        Some(tenant.id),
        Some(&tenant.name),
        json!({ "sender_mailbox": tenant.sender_mailbox, "delivery_method": tenant.delivery_method, "permission_mode": mode }),
    )
    .await?;
    Ok(tenant)
}

async fn update_settings(
    state: &WebState,
    tenant: &Tenant,
    input: &CustomerInput,
) -> Result<Tenant> {
    let settings = DeliverySettings {
        sender_mailbox: input.sender_mailbox.clone(),
        delivery_method: match input.delivery_method.as_deref() {
            Some(_) => method(input.delivery_method.as_deref())?,
            None => tenant.delivery_method,
        },
        save_to_sent_items: input
            .save_to_sent_items
            .unwrap_or(tenant.save_to_sent_items),
        smtp_for_large_messages: input
            .smtp_for_large_messages
            .unwrap_or(tenant.smtp_for_large_messages),
        notification_address: match &input.notification_address {
            Some(text) => blank_to_none(Some(text)),
            None => tenant.notification_address.clone(),
        },
        rate_limit_per_minute: match &input.rate_limit_per_minute {
            Some(text) => optional_number(Some(text))?,
            None => tenant.rate_limit_per_minute,
        },
    };
    tenants::update(&state.pool, tenant.id, &input.name, &settings)
        .await?
        .ok_or(Error::NotFound)
}

pub async fn update(
    state: &WebState,
    actor: &Actor,
    id: TenantId,
    input: &CustomerInput,
) -> Result<Tenant> {
    actor.require(Permission::ManageCustomers)?;
    let before = load(&state.pool, id).await?;
    let mode = permission_mode(input.permission_mode.as_deref())?;
    let mode_before = least_privilege::get(&state.pool, id).await?.mode;
    let mut after = update_settings(state, &before, input).await?;
    let megabytes = input
        .max_message_size_mb
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|mb| {
            mb.parse::<i64>()
                .ok()
                .and_then(|mb| mb.checked_mul(1024 * 1024))
                .ok_or(tenants::TenantError::InvalidMaxMessageSize)
        })
        .transpose()?;
    if let Some(bytes) = input.max_message_bytes.or(megabytes) {
        tenants::set_max_message_size(&state.pool, id, bytes).await?;
        after.max_message_bytes = bytes;
    }
    if let Some(mode) = mode {
        least_privilege::set_mode(&state.pool, id, mode).await?;
    }
    // A changed setting may clear the customer's holds: the workers probe them now.
    mailbridge_core::holds::probe_customer_now(&state.pool, id).await?;
    audit::record(
        &state.pool,
        actor,
        "customer.update",
        Some(id),
        Some(&after.name),
        json!({
            "name": [before.name, after.name.clone()],
            "sender_mailbox": [before.sender_mailbox, after.sender_mailbox.clone()],
            "delivery_method": [before.delivery_method, after.delivery_method],
            "save_to_sent_items": [before.save_to_sent_items, after.save_to_sent_items],
            "smtp_for_large_messages": [before.smtp_for_large_messages, after.smtp_for_large_messages],
            "notification_address": [before.notification_address, after.notification_address.clone()],
            "rate_limit_per_minute": [before.rate_limit_per_minute, after.rate_limit_per_minute],
            "max_message_bytes": [before.max_message_bytes, after.max_message_bytes],
            "permission_mode": [mode_before, mode.unwrap_or(mode_before)],
        }),
    )
    .await?;
    Ok(after)
}

pub async fn delete(state: &WebState, actor: &Actor, id: TenantId) -> Result<()> {
    actor.require(Permission::ManageCustomers)?;
    let tenant = load(&state.pool, id).await?;
    audit::record(
        &state.pool,
        actor,
        "customer.delete",
        None,
        Some(&tenant.name),
        json!({ "id": id }),
    )
    .await?;
    tenants::delete(&state.pool, id).await?;
    Ok(())
}

/// Queues a test message from the customer's sender mailbox to `recipient`; it
/// goes the same way as a device's. Returns its queue id.
pub async fn send_test(
    state: &WebState,
    actor: &Actor,
    id: TenantId,
    recipient: &str,
) -> Result<MessageId> {
    actor.require(Permission::SendTest)?;
    let tenant = load(&state.pool, id).await?;
    let recipient = mailbridge_core::address::EmailAddress::parse(recipient)
        .map_err(|e| Error::invalid_address(e.0))?;
    let queue_id = MessageId::now();
    // The subject in the language of the page it was sent from; the text in both.
    let subject = actor.tr.t(tr!("mailbridge test message"));
    let text = [Lang::En, Lang::De]
        .map(|lang| {
            i18n::format(
                lang,
                "This is a test message from the mailbridge control plane, sent by {who} for {customer}.\nIf it arrived, the customer's devices can send through mailbridge.\n",
                &[("who", &actor.label), ("customer", &tenant.name)],
            )
        })
        .join("\n");
    let body = OwnMail {
        id: queue_id,
        host: &state.settings.edge.hostname,
        from: &tenant.sender_mailbox,
        from_name: None,
        to: recipient.as_str(),
        subject,
        text,
        auto_submitted: false,
    }
    .build()
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let key = state
        .master_key
        .as_ref()
        .ok_or(Error::from(tenants::TenantError::NoMasterKey))?;
    queue::enqueue(
        &state.pool,
        key,
        &NewMessage {
            id: queue_id,
            tenant_id: tenant.id,
            device_id: None,
            mail_from: tenant.sender_mailbox.clone(),
            rcpt_to: vec![recipient.as_str().to_owned()],
            client_addr: actor
                .client_addr
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            tls_protocol: None,
            tls_cipher: None,
            kind: MessageKind::Test,
            subject: Some(subject.to_owned()),
            body,
        },
    )
    .await?;
    audit::record(
        &state.pool,
        actor,
        "customer.test_message",
        Some(tenant.id),
        Some(recipient.as_str()),
        json!({ "queue_id": queue_id }),
    )
    .await?;
    Ok(queue_id)
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/customers", post(create_form))
        .route("/customers/{id}", get(detail).post(update_form))
        .route("/customers/{id}/delete", post(delete_form))
        .route("/customers/{id}/test-message", post(test_form))
}

#[derive(Template, WebTemplate)]
#[template(path = "customers.html")]
struct OverviewPage {
    t: Tr,
    nav: Nav,
    customers: Vec<CustomerView>,
    can_create: bool,
    /// Every hold, widest first.
    holds: Vec<crate::holds::HoldView>,
    /// May press "Retry now" on a hold.
    can_retry: bool,
    /// Search, sort and pages of the list.
    pager: crate::list_pager::Pager,
}

pub async fn overview(
    State(state): State<WebState>,
    actor: Actor,
    axum::extract::Query(search): axum::extract::Query<crate::customer_list::CustomerQuery>,
) -> Result<Response> {
    let list = crate::customer_list::page(&state.pool, &actor.customers, &search).await?;
    let sort = crate::list_pager::parse_sort(search.sort.as_deref())?;
    let pager = crate::list_pager::Pager::new(
        "/".into(),
        "customers",
        search.q.as_deref(),
        sort.as_str(),
        <crate::list_pager::ListSort as strum::VariantArray>::VARIANTS
            .iter()
            .map(|s| (s.as_str(), s.label()))
            .collect(),
        list.total,
        (list.first_row(), list.last_row()),
        (list.previous_offset(), list.next_offset()),
    );
    Ok(OverviewPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        customers: list.customers,
        pager,
        can_create: actor.may(Permission::ManageCustomers),
        holds: crate::holds::all(&state.pool, &actor).await?,
        can_retry: actor.may(Permission::HandleMessages),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "customer.html")]
struct CustomerPage {
    t: Tr,
    nav: Nav,
    customer: CustomerView,
    devices: Vec<crate::device_health::DeviceHealth>,
    /// Search, sort and pages of the device list.
    pager: crate::list_pager::Pager,
    can_manage: bool,
    can_devices: bool,
    can_test: bool,
    can_retry: bool,
    stale_before: DateTime<Utc>,
    notice: Option<String>,
    connection: crate::connection::Connection,
    /// Limited mode, waiting for the customer's admin: the script to run.
    exchange_script: Option<String>,
    /// The consent links made to be sent, newest first.
    consent_links: Vec<crate::consent_link::SentLink>,
    card: crate::alerts::AlertsCard,
}

impl CustomerPage {
    /// An enabled device not seen for a week (or never seen in the week since it was
    /// added): probably not sending any more.
    fn stale(&self, device: &Device) -> bool {
        device.enabled && device.last_seen_at.unwrap_or(device.created_at) < self.stale_before
    }
}

#[derive(Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
}

async fn detail(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    axum::extract::Query(query): axum::extract::Query<NoticeQuery>,
    axum::extract::Query(search): axum::extract::Query<crate::device_health::DeviceQuery>,
) -> Result<Response> {
    // The consent check before the customer, as `Connection::load` reads them.
    let latest = mailbridge_core::consent_checks::latest(&state.pool, id).await?;
    let customer = with_health(&state.pool, Some(id), &actor.customers)
        .await?
        .pop()
        .ok_or(Error::NotFound)?;
    let list = crate::device_health::page(&state.pool, id, &search).await?;
    let pager = crate::list_pager::Pager::new(
        format!("/customers/{id}"),
        "devices",
        search.q.as_deref(),
        crate::list_pager::parse_sort(search.sort.as_deref())?.as_str(),
        <crate::list_pager::ListSort as strum::VariantArray>::VARIANTS
            .iter()
            .map(|s| (s.as_str(), s.label()))
            .collect(),
        list.total,
        (list.first_row(), list.last_row()),
        (list.previous_offset(), list.next_offset()),
    );
    let devices = list.devices;
    let connection = crate::connection::Connection::of(
        &customer.tenant,
        latest.as_ref(),
        &customer.permissions,
        actor.tr,
    );
    let exchange_script = if customer.permissions.waiting_for_exchange_script {
        let recorded = least_privilege::get(&state.pool, id).await?;
        crate::least_privilege::script_for(&state, &customer.tenant, &recorded, actor.tr.lang())
    } else {
        None
    };
    let notice = query
        .notice
        .and_then(|n| notice_text(&n))
        .map(|n| actor.tr.t(n).to_owned());
    Ok(CustomerPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        customer,
        devices,
        pager,
        can_manage: actor.may(Permission::ManageCustomers),
        can_devices: actor.may(Permission::ManageDevices),
        can_test: actor.may(Permission::SendTest),
        can_retry: actor.may(Permission::HandleMessages),
        stale_before: Utc::now() - chrono::Duration::days(STALE_DEVICE_DAYS),
        notice,
        connection,
        exchange_script,
        consent_links: crate::consent_link::latest(&state.pool, id).await?,
        card: crate::alerts::customer_card(&state, &actor, id).await?,
    }
    .into_response())
}

/// The notices a redirect back to the customer's page may show.
fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => tr!("The customer was created. Next: connect it to Microsoft 365."),
        "saved" => tr!("The settings were saved."),
        "connecting" => tr!(
            "The consent was granted. mailbridge is now checking it with Microsoft, which can take a few minutes: this page updates itself."
        ),
        "device-deleted" => tr!("The device was deleted."),
        "exchange-check" => tr!(
            "mailbridge tries the sender mailbox again now. Exchange can take a while to apply new assignments: it keeps trying, and this page shows when it works."
        ),
        "probing" => {
            tr!("The hold is probed now: its messages go as soon as the probe gets through.")
        }
        _ => return None,
    })
}

async fn create_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(input): Form<CustomerInput>,
) -> Result<Response> {
    let tenant = create(&state, &actor, &input).await?;
    Ok(Redirect::to(&format!("/customers/{}?notice=created", tenant.id)).into_response())
}

/// The settings form: unchecked checkboxes are absent from a form, so they mean false.
async fn update_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(mut input): Form<CustomerInput>,
) -> Result<Response> {
    input.save_to_sent_items = Some(input.save_to_sent_items.unwrap_or(false));
    input.smtp_for_large_messages = Some(input.smtp_for_large_messages.unwrap_or(false));
    update(&state, &actor, id, &input).await?;
    Ok(Redirect::to(&format!("/customers/{id}?notice=saved")).into_response())
}

async fn delete_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    delete(&state, &actor, id).await?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct TestForm {
    recipient: String,
}

async fn test_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(form): Form<TestForm>,
) -> Result<Response> {
    let queue_id = send_test(&state, &actor, id, &form.recipient).await?;
    Ok(Redirect::to(&format!("/messages/{queue_id}")).into_response())
}
