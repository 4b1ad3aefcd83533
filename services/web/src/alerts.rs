//! Alerts in the control plane: the alerts page (open and recent alerts with
//! "Acknowledge", the rules, where alert e-mails go, the MSP app's secret expiry),
//! the alerts on a customer's and a device's page, a device's silence alert, the
//! webhooks (create with a secret shown once, delivery log, test event, delete), and
//! the API for alerts. The workers evaluate the rules and post the webhooks; the web
//! only reads and changes the rows (`mailbridge_core::alerts`, `::webhooks`).
//!
//! Longer than most modules because alerts, their rules, the silence alert and
//! webhooks are one feature with one permission model, each with its page handler
//! and its API call side by side.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::NaiveDate;
use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    alerts::{self, Alert, AlertSettings, Filter, Kind, Rule},
    webhooks::{self, Delivery, UrlPolicy, Webhook, WebhookError},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::{
    WebState, audit,
    error::{Error, Result},
    i18n::{Lang, Tr},
    layout::Nav,
    roles::{Actor, Permission},
    tr,
};

/// An alert as the pages and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub title: String,
    pub text: String,
}

impl AlertView {
    fn of(alert: Alert, lang: Lang) -> Self {
        Self {
            title: alert.title(lang).to_owned(),
            text: alert.text(lang),
            alert,
        }
    }

    pub fn customer(&self) -> String {
        self.alert.customer_name().unwrap_or_default()
    }

    pub fn device(&self) -> String {
        self.alert.device_name().unwrap_or_default()
    }

    /// The severity as shown (translated there).
    pub fn severity_label(&self) -> &'static str {
        if self.alert.severity == "critical" {
            tr!("critical")
        } else {
            tr!("warning")
        }
    }
}

fn scope_filter(actor: &Actor, mut filter: Filter) -> Filter {
    filter.only = actor.customers.only().map(<[TenantId]>::to_vec);
    filter
}

/// The alerts `filter` selects that `actor` may see.
pub async fn visible(state: &WebState, actor: &Actor, filter: Filter) -> Result<Vec<AlertView>> {
    Ok(alerts::list(&state.pool, &scope_filter(actor, filter))
        .await?
        .into_iter()
        .map(|a| AlertView::of(a, actor.tr.lang()))
        .collect())
}

/// The alerts of a customer's page (open ones and the last resolved).
pub async fn for_customer(
    state: &WebState,
    actor: &Actor,
    tenant: TenantId,
) -> Result<Vec<AlertView>> {
    let mut list = visible(
        state,
        actor,
        Filter {
            tenant_id: Some(tenant),
            ..Filter::default()
        },
    )
    .await?;
    list.truncate(20);
    Ok(list)
}

pub async fn for_device(
    state: &WebState,
    actor: &Actor,
    tenant: TenantId,
    device: DeviceId,
) -> Result<Vec<AlertView>> {
    let mut list = visible(
        state,
        actor,
        Filter {
            tenant_id: Some(tenant),
            device_id: Some(device),
            ..Filter::default()
        },
    )
    .await?;
    list.truncate(20);
    Ok(list)
}

/// The alerts card of a customer's or a device's page.
#[derive(Debug, Clone, Default)]
pub struct AlertsCard {
    pub alerts: Vec<AlertView>,
    pub can_ack: bool,
    /// Where "Acknowledge" comes back to.
    pub back: String,
    /// A device's silence alert (device pages only).
    pub silence: Option<Silence>,
    pub can_manage_device: bool,
}

/// A device's silence alert as set, and the hours suggested for its kind.
#[derive(Debug, Clone)]
pub struct Silence {
    pub hours: Option<i32>,
    pub suggested: i32,
}

impl Silence {
    pub fn value(&self) -> String {
        self.hours.map(|h| h.to_string()).unwrap_or_default()
    }
}

/// The card of a customer's page.
pub async fn customer_card(
    state: &WebState,
    actor: &Actor,
    tenant: TenantId,
) -> Result<AlertsCard> {
    Ok(AlertsCard {
        alerts: for_customer(state, actor, tenant).await?,
        can_ack: actor.may(Permission::HandleMessages),
        back: format!("/customers/{tenant}"),
        silence: None,
        can_manage_device: false,
    })
}

/// The card of a device's page, with its silence alert.
pub async fn device_card(
    state: &WebState,
    actor: &Actor,
    tenant: TenantId,
    device: &mailbridge_core::devices::Device,
) -> Result<AlertsCard> {
    let hours = mailbridge_core::devices::silent_alert_hours(&state.pool, device.id).await?;
    Ok(AlertsCard {
        alerts: for_device(state, actor, tenant, device.id).await?,
        can_ack: actor.may(Permission::HandleMessages),
        back: format!("/customers/{tenant}/devices/{}", device.id),
        silence: Some(Silence {
            hours,
            suggested: alerts::suggested_silence_hours(device.kind.as_str()),
        }),
        can_manage_device: actor.may(Permission::ManageDevices),
    })
}

/// A rule with its texts, for the rules form.
pub struct RuleView {
    pub rule: Rule,
    pub kind: Kind,
}

impl RuleView {
    pub fn title(&self) -> &'static str {
        self.kind.title()
    }

    pub fn meaning(&self) -> &'static str {
        match self.kind {
            Kind::DeviceSilent => tr!("set per device, on the device's page (hours without mail)"),
            Kind::DeviceLockout => tr!("any lock of the device's logins after wrong passwords"),
            Kind::CustomerToken => tr!("any token refusal or hold of the customer"),
            Kind::Refusals => tr!("permanent refusals within the window"),
            Kind::QueueAge => tr!("minutes the oldest waiting message may be old"),
            Kind::BounceRate => tr!("per cent of messages bounced or failed within the window"),
            Kind::AppCredential | Kind::EdgeCertificate => tr!("days before expiry"),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "alerts.html")]
struct AlertsPage {
    t: Tr,
    nav: Nav,
    alerts: Vec<AlertView>,
    can_ack: bool,
    can_manage: bool,
    rules: Vec<RuleView>,
    settings: AlertSettings,
    customers: Vec<(TenantId, String)>,
    webhooks: Vec<Webhook>,
    notice: Option<&'static str>,
    /// A new webhook's secret, shown this once.
    created: Option<(Webhook, String)>,
}

impl AlertsPage {
    fn chosen(&self, id: &TenantId) -> bool {
        self.settings.email_tenant_id.as_ref() == Some(id)
    }

    fn secret_expiry(&self) -> String {
        self.settings
            .app_secret_expires_on
            .map(|d| d.to_string())
            .unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
struct PageQuery {
    notice: Option<String>,
    /// Only open alerts.
    open: Option<String>,
}

fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "acknowledged" => tr!("The alert was acknowledged."),
        "saved" => tr!("The settings were saved."),
        "testing" => tr!("A test event is on its way: its answer appears in the delivery log."),
        "deleted" => tr!("The webhook was deleted."),
        _ => return None,
    })
}

async fn page(
    state: &WebState,
    actor: &Actor,
    query: PageQuery,
    created: Option<(Webhook, String)>,
) -> Result<AlertsPage> {
    actor.require(Permission::View)?;
    let can_manage = actor.may(Permission::ManageCustomers);
    let rules = alerts::rules(&state.pool)
        .await?
        .into_iter()
        .filter_map(|rule| Kind::parse(&rule.kind).map(|kind| RuleView { rule, kind }))
        .collect();
    Ok(AlertsPage {
        t: actor.tr,
        nav: Nav::of(Some(actor), "alerts"),
        alerts: visible(
            state,
            actor,
            Filter {
                open: query.open.is_some(),
                ..Filter::default()
            },
        )
        .await?,
        can_ack: actor.may(Permission::HandleMessages),
        can_manage,
        rules,
        settings: alerts::settings(&state.pool).await?,
        customers: actor.customers.names(&state.pool).await?,
        webhooks: if can_manage {
            webhooks::list(&state.pool).await?
        } else {
            Vec::new()
        },
        notice: query.notice.as_deref().and_then(notice_text),
        created,
    })
}

async fn alerts_page(
    State(state): State<WebState>,
    actor: Actor,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    Ok(page(&state, &actor, query, None).await?.into_response())
}

/// One alert (where e-mails and webhooks link to): the alerts page's row for it.
async fn alert_page(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let alert = visible_alert(&state, &actor, id).await?;
    let mut page = page(&state, &actor, PageQuery::default(), None).await?;
    page.alerts = vec![AlertView::of(alert, actor.tr.lang())];
    Ok(page.into_response())
}

async fn visible_alert(state: &WebState, actor: &Actor, id: Uuid) -> Result<Alert> {
    let alert = alerts::get(&state.pool, id).await?.ok_or(Error::NotFound)?;
    if alert.tenant_id.is_some_and(|t| !actor.sees(t)) {
        return Err(Error::NotFound);
    }
    Ok(alert)
}

/// Acknowledges an open alert (technicians and up); audited.
pub async fn acknowledge(state: &WebState, actor: &Actor, id: Uuid) -> Result<Alert> {
    actor.require(Permission::HandleMessages)?;
    visible_alert(state, actor, id).await?;
    let alert = alerts::acknowledge(
        &state.pool,
        id,
        &actor.label,
        &state.settings.web.public_url,
    )
    .await?
    .ok_or_else(|| {
        Error::Conflict(
            tr!("Only an open alert that nobody acknowledged yet can be acknowledged.").into(),
        )
    })?;
    audit::record(
        &state.pool,
        actor,
        "alert.acknowledge",
        alert.tenant_id,
        Some(&id.to_string()),
        json!({"kind": alert.kind, "subject": alert.subject}),
    )
    .await?;
    Ok(alert)
}

async fn acknowledge_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Form(form): Form<BackForm>,
) -> Result<Response> {
    acknowledge(&state, &actor, id).await?;
    let back = crate::security::local_path(form.back.as_deref());
    let back = if back == "/" {
        "/alerts".to_owned()
    } else {
        back
    };
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{back}{sep}notice=acknowledged")).into_response())
}

#[derive(Deserialize)]
struct BackForm {
    back: Option<String>,
}

/// The rules form: `enabled_<kind>`, `threshold_<kind>`, `window_<kind>`.
async fn rules_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response> {
    actor.require(Permission::ManageCustomers)?;
    let value = |name: String| form.iter().find(|(k, _)| *k == name).map(|(_, v)| v.trim());
    let mut changed = Vec::new();
    for rule in alerts::rules(&state.pool).await? {
        let enabled = value(format!("enabled_{}", rule.kind)).is_some();
        let number = |name: String, current: i32| -> Result<i32> {
            match value(name) {
                None | Some("") => Ok(current),
                Some(v) => v.parse().map_err(|_| Error::InvalidValue {
                    text: tr!("{} is not a whole number."),
                    value: v.to_owned(),
                }),
            }
        };
        let threshold = number(format!("threshold_{}", rule.kind), rule.threshold)?;
        let window = number(format!("window_{}", rule.kind), rule.window_minutes)?;
        if (enabled, threshold, window) != (rule.enabled, rule.threshold, rule.window_minutes) {
            alerts::set_rule(&state.pool, &rule.kind, enabled, threshold, window)
                .await
                .map_err(|e| match e {
                    alerts::RuleError::Database(d) => Error::from(d),
                    other => Error::Invalid(other.to_string()),
                })?;
            changed.push(json!({"kind": rule.kind, "enabled": enabled, "threshold": threshold, "window_minutes": window}));
        }
    }
    if !changed.is_empty() {
        audit::record(
            &state.pool,
            &actor,
            "alerts.rules",
            None,
            None,
            json!({"changed": changed}),
        )
        .await?;
    }
    Ok(Redirect::to("/alerts?notice=saved").into_response())
}

#[derive(Deserialize)]
struct SettingsForm {
    email_to: Option<String>,
    email_tenant_id: Option<String>,
    app_secret_expires_on: Option<String>,
}

async fn settings_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<SettingsForm>,
) -> Result<Response> {
    actor.require(Permission::ManageCustomers)?;
    let text = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let email_to = text(form.email_to);
    if let Some(address) = &email_to {
        mailbridge_core::address::EmailAddress::parse(address).map_err(|_| {
            Error::InvalidValue {
                text: tr!("{} is not an e-mail address."),
                value: address.clone(),
            }
        })?;
    }
    let email_tenant_id = match text(form.email_tenant_id) {
        None => None,
        Some(id) => Some(
            id.parse::<TenantId>()
                .ok()
                .filter(|id| actor.sees(*id))
                .ok_or(Error::NotFound)?,
        ),
    };
    let app_secret_expires_on =
        match text(form.app_secret_expires_on) {
            None => None,
            Some(d) => Some(NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| {
                Error::InvalidValue {
                    text: tr!("{} is not a date (YYYY-MM-DD)."),
                    value: d.clone(),
                }
            })?),
        };
    let settings = AlertSettings {
        email_to,
        email_tenant_id,
        app_secret_expires_on,
    };
    alerts::save_settings(&state.pool, &settings).await?;
    audit::record(
        &state.pool,
        &actor,
        "alerts.settings",
        None,
        None,
        json!(settings),
    )
    .await?;
    Ok(Redirect::to("/alerts?notice=saved").into_response())
}

#[derive(Deserialize)]
struct SilenceForm {
    hours: Option<String>,
}

/// A device's silence alert: hours, or empty for off.
async fn silence_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((tenant, device)): Path<(TenantId, DeviceId)>,
    Form(form): Form<SilenceForm>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let hours = match form
        .hours
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        None => None,
        Some(h) => Some(
            h.parse::<i32>()
                .ok()
                .filter(|h| (1..=8_760).contains(h))
                .ok_or_else(|| Error::InvalidValue {
                    text: tr!("{} is not a number of hours from 1 to 8760."),
                    value: h.to_owned(),
                })?,
        ),
    };
    if !alerts::set_device_silence(&state.pool, tenant, device, hours).await? {
        return Err(Error::NotFound);
    }
    audit::record(
        &state.pool,
        &actor,
        "device.silence_alert",
        Some(tenant),
        Some(&device.to_string()),
        json!({"hours": hours}),
    )
    .await?;
    Ok(Redirect::to(&format!("/customers/{tenant}/devices/{device}?saved=1")).into_response())
}

fn url_policy(state: &WebState) -> UrlPolicy {
    UrlPolicy {
        allowed: state.settings.worker.webhook_allowed_networks.clone(),
    }
}

/// Creates a webhook (admins); returns it with its secret (shown once). Audited.
pub async fn create_webhook(
    state: &WebState,
    actor: &Actor,
    name: &str,
    url: &str,
) -> Result<(Webhook, String)> {
    actor.require(Permission::ManageCustomers)?;
    let key = state.master_key.as_ref().ok_or_else(|| {
        Error::Invalid(tr!("Webhooks need MAILBRIDGE_MASTER_KEY to keep their secrets.").into())
    })?;
    let created = webhooks::create(&state.pool, key, &url_policy(state), name, url)
        .await
        .map_err(|e| match e {
            WebhookError::Database(d) => Error::from(d),
            WebhookError::NameTaken(_) => Error::Conflict(e.to_string()),
            other => Error::Invalid(other.to_string()),
        })?;
    audit::record(
        &state.pool,
        actor,
        "webhook.create",
        None,
        Some(&created.0.id.to_string()),
        json!({"name": created.0.name, "url": created.0.url}),
    )
    .await?;
    Ok(created)
}

#[derive(Deserialize)]
struct WebhookForm {
    name: String,
    url: String,
}

async fn create_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<WebhookForm>,
) -> Result<Response> {
    let created = create_webhook(&state, &actor, &form.name, &form.url).await?;
    Ok(page(&state, &actor, PageQuery::default(), Some(created))
        .await?
        .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "webhook.html")]
struct WebhookPage {
    t: Tr,
    nav: Nav,
    webhook: Webhook,
    deliveries: Vec<Delivery>,
    notice: Option<&'static str>,
}

async fn webhook_page(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    actor.require(Permission::ManageCustomers)?;
    let webhook = webhooks::get(&state.pool, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(WebhookPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "alerts"),
        deliveries: webhooks::deliveries(&state.pool, id, 50).await?,
        webhook,
        notice: query.notice.as_deref().and_then(notice_text),
    }
    .into_response())
}

/// Queues a test event for a webhook; audited.
pub async fn test_webhook(state: &WebState, actor: &Actor, id: Uuid) -> Result<()> {
    actor.require(Permission::ManageCustomers)?;
    if !webhooks::enqueue_test(&state.pool, id, &state.settings.web.public_url).await? {
        return Err(Error::NotFound);
    }
    audit::record(
        &state.pool,
        actor,
        "webhook.test",
        None,
        Some(&id.to_string()),
        json!({}),
    )
    .await?;
    Ok(())
}

async fn test_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    test_webhook(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/webhooks/{id}?notice=testing")).into_response())
}

async fn delete_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    actor.require(Permission::ManageCustomers)?;
    if !webhooks::delete(&state.pool, id).await? {
        return Err(Error::NotFound);
    }
    audit::record(
        &state.pool,
        &actor,
        "webhook.delete",
        None,
        Some(&id.to_string()),
        json!({}),
    )
    .await?;
    Ok(Redirect::to("/alerts?notice=deleted").into_response())
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/alerts", get(alerts_page))
        .route("/alerts/{id}", get(alert_page))
        .route("/alerts/{id}/acknowledge", post(acknowledge_form))
        .route("/alerts/rules", post(rules_form))
        .route("/alerts/settings", post(settings_form))
        .route("/webhooks", post(create_form))
        .route("/webhooks/{id}", get(webhook_page))
        .route("/webhooks/{id}/test", post(test_form))
        .route("/webhooks/{id}/delete", post(delete_form))
        .route(
            "/customers/{id}/devices/{device}/silence-alert",
            post(silence_form),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ApiQuery {
    /// Customer id.
    customer: Option<TenantId>,
    /// Device id.
    device: Option<Uuid>,
    /// true: open alerts only.
    open: Option<bool>,
}

/// Alerts, open first, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AlertList {
    alerts: Vec<AlertView>,
}

#[utoipa::path(
    get,
    path = "/alerts",
    operation_id = "listAlerts",
    summary = "Alerts, open first, newest first",
    params(ApiQuery),
    responses((status = 200, description = "The alerts", body = AlertList)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
async fn api_list(
    State(state): State<WebState>,
    actor: Actor,
    Query(q): Query<ApiQuery>,
) -> Result<Json<AlertList>> {
    actor.require(Permission::View)?;
    if q.customer.is_some_and(|c| !actor.sees(c)) {
        return Err(Error::NotFound);
    }
    let alerts = visible(
        &state,
        &actor,
        Filter {
            tenant_id: q.customer,
            device_id: q.device.map(Into::into),
            open: q.open.unwrap_or(false),
            only: None,
        },
    )
    .await?;
    Ok(Json(AlertList { alerts }))
}

#[utoipa::path(
    post,
    path = "/alerts/{id}/acknowledge",
    operation_id = "acknowledgeAlert",
    summary = "Acknowledge an open alert (someone is on it)",
    responses((status = 200, description = "The alert", body = AlertView)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
async fn api_acknowledge(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Json<AlertView>> {
    let alert = acknowledge(&state, &actor, id).await?;
    Ok(Json(AlertView::of(alert, actor.tr.lang())))
}

/// A webhook to add.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = WebhookInput)]
struct ApiWebhook {
    name: String,
    /// https:// (http:// only to an allowed loopback address); internal addresses
    /// are refused unless the operator allows them.
    url: String,
}

/// The webhooks alert events are posted to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WebhookList {
    webhooks: Vec<Webhook>,
}

#[utoipa::path(
    get,
    path = "/webhooks",
    operation_id = "listWebhooks",
    summary = "The webhooks alert events are posted to",
    responses((status = 200, description = "The webhooks", body = WebhookList)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
async fn api_webhooks(State(state): State<WebState>, actor: Actor) -> Result<Json<WebhookList>> {
    actor.require(Permission::ManageCustomers)?;
    Ok(Json(WebhookList {
        webhooks: webhooks::list(&state.pool).await?,
    }))
}

/// A webhook just added, with its signing secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreatedWebhook {
    webhook: Webhook,
    /// whsec_…: verify X-Mailbridge-Signature with it; shown this once.
    secret: String,
}

#[utoipa::path(
    post,
    path = "/webhooks",
    operation_id = "createWebhook",
    summary = "Add a webhook; its signing secret is in the answer, this once",
    request_body = ApiWebhook,
    responses((status = 201, description = "The webhook and its secret", body = CreatedWebhook)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
async fn api_create_webhook(
    State(state): State<WebState>,
    actor: Actor,
    crate::json_body::ApiJson(input): crate::json_body::ApiJson<ApiWebhook>,
) -> Result<Response> {
    let (webhook, secret) = create_webhook(&state, &actor, &input.name, &input.url).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(CreatedWebhook { webhook, secret }),
    )
        .into_response())
}

/// A webhook's delivery log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct WebhookDeliveries {
    deliveries: Vec<webhooks::Delivery>,
}

#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    operation_id = "listWebhookDeliveries",
    summary = "The webhook's delivery log: the last tries with the receiver's answers",
    responses((status = 200, description = "The deliveries", body = WebhookDeliveries)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
async fn api_webhook_deliveries(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Json<WebhookDeliveries>> {
    actor.require(Permission::ManageCustomers)?;
    webhooks::get(&state.pool, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Json(WebhookDeliveries {
        deliveries: webhooks::deliveries(&state.pool, id, 50).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/webhooks/{id}/test",
    operation_id = "testWebhook",
    summary = "Post a test event to the webhook (its answer appears in the delivery log)",
    responses((status = 202, description = "Posted")),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
async fn api_test_webhook(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    test_webhook(&state, &actor, id).await?;
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}

/// The API's alert and webhook routes (merged into `/api/v1`).
pub fn api_router() -> Router<WebState> {
    Router::new()
        .route("/alerts", get(api_list))
        .route("/alerts/{id}/acknowledge", post(api_acknowledge))
        .route("/webhooks", get(api_webhooks).post(api_create_webhook))
        .route("/webhooks/{id}/deliveries", get(api_webhook_deliveries))
        .route("/webhooks/{id}/test", post(api_test_webhook))
}
