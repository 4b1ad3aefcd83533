//! The JSON API under `/api/v1`: everything the pages can do, for MSP automation
//! (RMM, PSA). Requests authenticate with an API token (`Authorization: Bearer
//! mbt_…`) created in the control plane; cookies are never accepted here, so no
//! CSRF token is needed. Errors are JSON (`{"error": {"code", "message"}}`); the
//! message log and the audit log paginate with a cursor, the customer and device
//! lists like their pages (search, sort, offset and a bounded limit, a bad value a
//! 400 naming the parameter). Every body read or answered is a typed serde struct
//! whose OpenAPI schema is derived from it; `/api/v1/openapi.json` describes it all
//! (see `openapi`).

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    devices::{Device, IssuedCredential},
    logins::LoginFailures,
    store::{audit_log::AuditEntry, message_log::LoggedMessage},
    tenants::Tenant,
    transcripts::StoredTranscript,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    WebState, audit,
    client_addr::of as client_addr,
    connection, consent,
    customer_list::{self, CustomerQuery},
    customers::{self, CustomerInput, CustomerView},
    device_health::{self, DeviceHealth, DeviceQuery},
    devices::{self, DeviceInput},
    error::{Error, Rejection, Result},
    holds::HoldView,
    i18n::{self, Tr},
    json_body::ApiJson,
    layout,
    messages::{self, ExplainedAttempt, ExplainedBounce, Explanation, LogPage, MessageFilter},
    openapi,
    roles::{Actor, Permission, customer_in_path},
    staff,
};

pub fn router(state: WebState) -> Router<WebState> {
    let authenticated = Router::new()
        .route("/customers", get(list_customers).post(create_customer))
        .route(
            "/customers/{id}",
            get(get_customer)
                .patch(update_customer)
                .delete(delete_customer),
        )
        .route("/customers/{id}/consent", post(consent_link))
        .route("/customers/{id}/connection", get(connection::status))
        .route(
            "/customers/{id}/exchange-script",
            get(crate::least_privilege::api_script),
        )
        .route("/customers/{id}/test-message", post(test_message))
        .route(
            "/customers/{id}/devices",
            get(list_devices).post(create_device),
        )
        .route(
            "/customers/{id}/devices/import",
            post(crate::device_import::api_import),
        )
        .route(
            "/customers/{id}/devices/bulk",
            post(crate::device_bulk::api_bulk),
        )
        .route(
            "/customers/{id}/devices/{device}",
            get(get_device).patch(update_device).delete(delete_device),
        )
        .route(
            "/customers/{id}/devices/{device}/rotate",
            post(rotate_device),
        )
        .route(
            "/customers/{id}/devices/{device}/logins",
            get(device_logins),
        )
        .route(
            "/customers/{id}/devices/{device}/unlock",
            post(unlock_device),
        )
        .route(
            "/customers/{id}/devices/{device}/transcripts",
            get(device_transcripts),
        )
        .route("/messages", get(list_messages))
        .route("/messages/{id}", get(get_message))
        .route("/messages/{id}/retry", post(retry_message))
        .route("/messages/{id}/cancel", post(cancel_message))
        .route("/audit", get(list_audit))
        .merge(crate::board::api_router())
        .merge(crate::alerts::api_router())
        .merge(crate::usage::api_router())
        .route("/holds", get(list_holds))
        .route("/holds/{id}/probe", post(probe_hold))
        .layer(middleware::from_fn_with_state(state, authenticate));
    Router::new()
        .merge(authenticated)
        .route("/openapi.json", get(openapi_document))
        .fallback(|| async { Error::NotFound })
        .layer(middleware::from_fn(render_errors))
}

/// Finds the API token's actor, or answers 401.
async fn authenticate(State(state): State<WebState>, mut request: Request, next: Next) -> Response {
    let tr = Tr::new(i18n::negotiate(request.headers()));
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let Some(token) = token else {
        return unauthenticated("send an API token: Authorization: Bearer mbt_…");
    };
    let addr = client_addr(request.extensions());
    match staff::authenticate_token(&state, &token, addr, tr).await {
        Ok(Some(actor)) => {
            if let Some(customer) = customer_in_path(request.uri().path())
                && !actor.sees(customer)
            {
                return Error::NotFound.into_response();
            }
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
        Ok(None) => unauthenticated(
            "the API token is unknown, revoked or expired, or its creator is disabled or no longer holds its role",
        ),
        Err(e) => e.into_response(),
    }
}

fn unauthenticated(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(ApiError::new("unauthenticated", message.to_owned())),
    )
        .into_response()
}

/// Every error answer of the API.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code: unauthenticated, forbidden, not_found,
    /// invalid, invalid_parameter, conflict, rate_limited, database_unavailable or
    /// internal.
    #[schema(value_type = String)]
    pub code: &'static str,
    /// invalid_parameter: the query parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub parameter: Option<&'static str>,
    /// What to change (English).
    pub message: String,
}

impl ApiError {
    fn new(code: &'static str, message: String) -> Self {
        Self {
            error: ErrorDetail {
                code,
                parameter: None,
                message,
            },
        }
    }
}

/// Errors as JSON.
async fn render_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    match response.extensions().get::<Rejection>() {
        Some(rejection) => (
            rejection.status,
            Json(ApiError::new(rejection.code, rejection.message.clone())),
        )
            .into_response(),
        None => response,
    }
}

async fn openapi_document(State(state): State<WebState>) -> Response {
    Json(openapi::document(&state.settings.web.public_url)).into_response()
}

/// A bad query parameter: 400, naming it.
fn bad_parameter(parameter: &'static str, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(ApiError {
            error: ErrorDetail {
                code: "invalid_parameter",
                parameter: Some(parameter),
                message,
            },
        }),
    )
        .into_response()
}

/// The longest search text a list takes.
const MAX_SEARCH: usize = 200;

/// The search, sort and page of a list (customers, a customer's devices), checked
/// strictly: where a page quietly falls back or caps, the API says what is wrong
/// (a 400 naming the parameter).
fn checked_list(
    q: Option<&str>,
    sort: Option<&str>,
    offset: Option<&str>,
    limit: Option<&str>,
) -> Option<Response> {
    use crate::device_health::{MAX_OFFSET, MAX_PAGE_SIZE};
    let number = |text: Option<&str>| {
        text.map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<i64>().ok())
    };
    let (parameter, message) = if q.is_some_and(|q| q.chars().count() > MAX_SEARCH) {
        ("q", format!("q: at most {MAX_SEARCH} characters"))
    } else if let Err(e) = crate::list_pager::parse_sort(sort) {
        ("sort", format!("sort: {e}"))
    } else if !matches!(number(offset), None | Some(Some(0..=MAX_OFFSET))) {
        (
            "offset",
            format!(
                "offset: a whole number from 0 to {MAX_OFFSET} (beyond it, narrow the list with q)"
            ),
        )
    } else if !matches!(number(limit), None | Some(Some(1..=MAX_PAGE_SIZE))) {
        (
            "limit",
            format!("limit: a whole number from 1 to {MAX_PAGE_SIZE}"),
        )
    } else {
        return None;
    };
    Some(bad_parameter(parameter, message))
}

/// Where a page of a long list (customers, a customer's devices) stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paging {
    /// Entries matching the search.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
    /// The offset of the next page; null on the last (or at the deepest offset:
    /// narrow with q).
    pub next_offset: Option<i64>,
}

impl Paging {
    fn of(total: i64, offset: i64, limit: i64, next_offset: Option<i64>) -> Self {
        Self {
            total,
            offset,
            limit,
            next_offset,
        }
    }
}

/// A page of the customers: searched, sorted, a page at a time.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerList {
    pub customers: Vec<CustomerView>,
    #[serde(flatten)]
    pub paging: Paging,
}

#[utoipa::path(
    get,
    path = "/customers",
    operation_id = "listCustomers",
    summary = "The customers with their health: searched, sorted, a page at a time",
    params(CustomerQuery),
    responses((status = 200, description = "A page of customers", body = CustomerList)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn list_customers(
    State(state): State<WebState>,
    actor: Actor,
    Query(search): Query<CustomerQuery>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    if let Some(bad) = checked_list(
        search.q.as_deref(),
        search.sort.as_deref(),
        search.offset.as_deref(),
        search.limit.as_deref(),
    ) {
        return Ok(bad);
    }
    let page = customer_list::page(&state.pool, &actor.customers, &search).await?;
    let next_offset = page.next_offset();
    Ok(Json(CustomerList {
        paging: Paging::of(page.total, page.offset, page.limit, next_offset),
        customers: page.customers,
    })
    .into_response())
}

async fn one_customer(state: &WebState, id: TenantId) -> Result<CustomerView> {
    customers::with_health(&state.pool, Some(id), &Default::default())
        .await?
        .into_iter()
        .next()
        .ok_or(Error::NotFound)
}

#[utoipa::path(
    get,
    path = "/customers/{id}",
    operation_id = "getCustomer",
    summary = "One customer with its health",
    responses((status = 200, description = "The customer", body = CustomerView)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn get_customer(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(one_customer(&state, id).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/customers",
    operation_id = "createCustomer",
    summary = "Create a customer (connect it afterwards)",
    request_body = CustomerInput,
    responses((status = 201, description = "The customer created", body = CustomerView)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
pub(crate) async fn create_customer(
    State(state): State<WebState>,
    actor: Actor,
    ApiJson(input): ApiJson<CustomerInput>,
) -> Result<Response> {
    let tenant = customers::create(&state, &actor, &input).await?;
    Ok((
        StatusCode::CREATED,
        Json(one_customer(&state, tenant.id).await?),
    )
        .into_response())
}

/// A partial change of a customer: absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
pub struct CustomerPatch {
    name: Option<String>,
    sender_mailbox: Option<String>,
    /// graph or smtp.
    delivery_method: Option<String>,
    #[serde(default, deserialize_with = "layout::checkbox")]
    save_to_sent_items: Option<bool>,
    #[serde(default, deserialize_with = "layout::checkbox")]
    smtp_for_large_messages: Option<bool>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    notification_address: Option<Option<String>>,
    /// Messages per minute; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>)]
    rate_limit_per_minute: Option<Option<u32>>,
    /// The largest message, bytes (1 MB to 150 MB).
    #[schema(minimum = 1048576, maximum = 157286400)]
    max_message_bytes: Option<i64>,
    /// limited or tenant_wide.
    permission_mode: Option<String>,
}

/// Absent: `None`; `null`: `Some(None)`.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn merged(tenant: &Tenant, patch: CustomerPatch) -> CustomerInput {
    CustomerInput {
        name: patch.name.unwrap_or_else(|| tenant.name.clone()),
        sender_mailbox: patch
            .sender_mailbox
            .unwrap_or_else(|| tenant.sender_mailbox.clone()),
        delivery_method: patch.delivery_method,
        entra_tenant_id: None,
        save_to_sent_items: patch.save_to_sent_items,
        smtp_for_large_messages: patch.smtp_for_large_messages,
        notification_address: patch.notification_address.map(Option::unwrap_or_default),
        rate_limit_per_minute: patch
            .rate_limit_per_minute
            .map(|r| r.map(|r| r.to_string()).unwrap_or_default()),
        max_message_size_mb: None,
        max_message_bytes: patch.max_message_bytes,
        permission_mode: patch.permission_mode,
    }
}

#[utoipa::path(
    patch,
    path = "/customers/{id}",
    operation_id = "updateCustomer",
    summary = "Change a customer's name or delivery settings",
    request_body = CustomerPatch,
    responses((status = 200, description = "The customer changed", body = CustomerView)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
pub(crate) async fn update_customer(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(patch): ApiJson<CustomerPatch>,
) -> Result<Response> {
    actor.require(Permission::ManageCustomers)?;
    let tenant = customers::load(&state.pool, id).await?;
    customers::update(&state, &actor, id, &merged(&tenant, patch)).await?;
    Ok(Json(one_customer(&state, id).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/customers/{id}",
    operation_id = "deleteCustomer",
    summary = "Delete a customer with its devices and messages",
    responses((status = 204, description = "Deleted")),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
pub(crate) async fn delete_customer(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    customers::delete(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A consent link to send to the customer's admin.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentLink {
    /// Microsoft's admin-consent address, bound to the customer's tenant.
    pub consent_url: String,
}

/// A consent link for the customer's admin (valid a day, single use).
#[utoipa::path(
    post,
    path = "/customers/{id}/consent",
    operation_id = "createConsentLink",
    summary = "An Entra admin-consent link for the customer's admin (valid 24 h, single use)",
    responses((status = 200, description = "The link", body = ConsentLink)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
pub(crate) async fn consent_link(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    let (url, _cookie) = consent::start(&state, &actor, id).await?;
    Ok(Json(ConsentLink { consent_url: url }).into_response())
}

/// Where a test message goes.
#[derive(Deserialize, ToSchema)]
pub struct TestMessage {
    recipient: String,
}

/// A message taken into the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub queue_id: MessageId,
}

#[utoipa::path(
    post,
    path = "/customers/{id}/test-message",
    operation_id = "sendTestMessage",
    summary = "Queue a test message from the customer's sender mailbox",
    request_body = TestMessage,
    responses((status = 202, description = "Queued", body = Queued)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn test_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(body): ApiJson<TestMessage>,
) -> Result<Response> {
    let queue_id = customers::send_test(&state, &actor, id, &body.recipient).await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queue_id })).into_response())
}

/// A device in the list: its settings and its health.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeviceHealth)]
pub struct DeviceEntry {
    #[serde(flatten)]
    pub device: Device,
    /// Messages received from it in the last 24 hours.
    pub messages_24h: i64,
    /// Its messages that failed in the last 24 hours.
    pub failed_24h: i64,
    /// Its messages waiting or being delivered.
    pub queued: i64,
    /// Wrong passwords for its username in the last 24 hours.
    pub failed_logins_24h: i64,
    pub last_failed_login_at: Option<DateTime<Utc>>,
    /// The address the last wrong password came from.
    pub last_failed_login_from: Option<String>,
    /// The edge refuses its logins after repeated failures until locked_until or an
    /// unlock (unlockDevice).
    pub locked: bool,
    pub locked_until: Option<DateTime<Utc>>,
}

impl DeviceEntry {
    fn of(health: DeviceHealth) -> Self {
        Self {
            last_failed_login_from: health
                .last_failed_login_from
                .map(|_| health.last_failed_from()),
            locked: health.locked(),
            messages_24h: health.messages_24h,
            failed_24h: health.failed_24h,
            queued: health.queued,
            failed_logins_24h: health.failed_logins_24h,
            last_failed_login_at: health.last_failed_login_at,
            locked_until: health.locked_until,
            device: health.device,
        }
    }
}

/// A page of a customer's devices: searched, sorted, a page at a time.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceEntry>,
    #[serde(flatten)]
    pub paging: Paging,
}

#[utoipa::path(
    get,
    path = "/customers/{id}/devices",
    operation_id = "listDevices",
    summary = "The customer's devices with their health: searched, sorted, a page at a time",
    params(DeviceQuery),
    responses((status = 200, description = "A page of devices", body = DeviceList)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn list_devices(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Query(search): Query<DeviceQuery>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    customers::load(&state.pool, id).await?;
    if let Some(bad) = checked_list(
        search.q.as_deref(),
        search.sort.as_deref(),
        search.offset.as_deref(),
        search.limit.as_deref(),
    ) {
        return Ok(bad);
    }
    let page = device_health::page(&state.pool, id, &search).await?;
    let next_offset = page.next_offset();
    Ok(Json(DeviceList {
        paging: Paging::of(page.total, page.offset, page.limit, next_offset),
        devices: page.devices.into_iter().map(DeviceEntry::of).collect(),
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/customers/{id}/devices",
    operation_id = "createDevice",
    summary = "Add a device: its generated password is in this answer only",
    request_body = DeviceInput,
    responses((status = 201, description = "The device with its password", body = IssuedCredential)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn create_device(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(input): ApiJson<DeviceInput>,
) -> Result<Response> {
    let issued = devices::create(&state, &actor, id, &input).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

#[utoipa::path(
    get,
    path = "/customers/{id}/devices/{device}",
    operation_id = "getDevice",
    summary = "One device",
    responses((status = 200, description = "The device", body = Device)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn get_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(devices::load(&state, id, device).await?).into_response())
}

#[utoipa::path(
    patch,
    path = "/customers/{id}/devices/{device}",
    operation_id = "updateDevice",
    summary = "Change a device's policy, or disable it",
    request_body = DeviceInput,
    responses((status = 200, description = "The device changed", body = Device)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn update_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
    ApiJson(input): ApiJson<DeviceInput>,
) -> Result<Response> {
    Ok(Json(devices::update(&state, &actor, id, device, &input).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/customers/{id}/devices/{device}",
    operation_id = "deleteDevice",
    summary = "Delete a device",
    responses((status = 204, description = "Deleted")),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn delete_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    devices::delete(&state, &actor, id, device).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    post,
    path = "/customers/{id}/devices/{device}/rotate",
    operation_id = "rotateDevicePassword",
    summary = "A new password for the device (in this answer only)",
    responses((status = 200, description = "The device with its new password", body = IssuedCredential)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn rotate_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    Ok(Json(devices::rotate(&state, &actor, id, device).await?).into_response())
}

/// The failed logins and locks of a device's username.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginList {
    pub logins: Vec<LoginFailures>,
}

#[utoipa::path(
    get,
    path = "/customers/{id}/devices/{device}/logins",
    operation_id = "listDeviceLogins",
    summary = "Recent failed logins and current locks of the device's username",
    responses((status = 200, description = "Failures and locks", body = LoginList)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn device_logins(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let logins = devices::failed_logins(&state, id, device).await?;
    Ok(Json(LoginList { logins }).into_response())
}

/// What a device's sessions show, in both languages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Finding {
    #[schema(value_type = String)]
    pub key: &'static str,
    pub count: usize,
    pub since: DateTime<Utc>,
    pub detail: Option<String>,
    /// In English.
    pub text: String,
    /// In German.
    pub text_de: String,
}

/// A device's last sessions on the edge and what they show.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptList {
    pub transcripts: Vec<StoredTranscript>,
    pub diagnosis: Vec<Finding>,
}

/// The device's last sessions on the edge, and what they show in words.
#[utoipa::path(
    get,
    path = "/customers/{id}/devices/{device}/transcripts",
    operation_id = "listDeviceTranscripts",
    summary = "The device's last sessions on the edge (commands and reply codes, TLS, handshake failures) and what they show",
    responses((status = 200, description = "Sessions and findings", body = TranscriptList)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn device_transcripts(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    let (transcripts, findings) = devices::transcripts(&state, &actor, id, device).await?;
    let diagnosis = findings
        .iter()
        .map(|f| Finding {
            key: f.key,
            count: f.count,
            since: f.since,
            detail: f.detail.clone(),
            text: f.text(crate::i18n::Lang::En),
            text_de: f.text(crate::i18n::Lang::De),
        })
        .collect();
    Ok(Json(TranscriptList {
        transcripts,
        diagnosis,
    })
    .into_response())
}

/// Whether an unlock lifted anything.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unlocked {
    /// Whether anything was locked or counted.
    pub unlocked: bool,
}

#[utoipa::path(
    post,
    path = "/customers/{id}/devices/{device}/unlock",
    operation_id = "unlockDevice",
    summary = "Lift every lock of the device's username and forget its failures",
    responses((status = 200, description = "Unlocked", body = Unlocked)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn unlock_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(TenantId, DeviceId)>,
) -> Result<Response> {
    let unlocked = devices::unlock(&state, &actor, id, device).await?;
    Ok(Json(Unlocked { unlocked }).into_response())
}

#[utoipa::path(
    get,
    path = "/messages",
    operation_id = "listMessages",
    summary = "Search the message log, newest first",
    params(MessageFilter),
    responses((status = 200, description = "A page of messages", body = LogPage)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn list_messages(
    State(state): State<WebState>,
    actor: Actor,
    Query(filter): Query<MessageFilter>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(messages::search(&state.pool, &actor.customers, &filter).await?).into_response())
}

/// One message with every delivery attempt and every bounce, explained.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: LoggedMessage,
    pub attempts: Vec<ExplainedAttempt>,
    /// Recipients Microsoft reported undeliverable (non-delivery reports) after
    /// accepting the message.
    pub bounces: Vec<ExplainedBounce>,
}

#[utoipa::path(
    get,
    path = "/messages/{id}",
    operation_id = "getMessage",
    summary = "One message with every delivery attempt, explained",
    responses((status = 200, description = "The message", body = MessageDetail)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn get_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<MessageId>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let message = messages::load(&state.pool, &actor.customers, id).await?;
    let attempts = mailbridge_core::queue::attempts(&state.pool, id)
        .await?
        .into_iter()
        .map(|attempt| ExplainedAttempt {
            explanation: attempt.explained().map(Explanation::of),
            attempt,
        })
        .collect();
    let bounces = mailbridge_core::bounces::of_message(&state.pool, id)
        .await?
        .into_iter()
        .map(|bounce| ExplainedBounce {
            explanation: bounce.explained().map(Explanation::of),
            bounce,
        })
        .collect();
    Ok(Json(MessageDetail {
        message,
        attempts,
        bounces,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/messages/{id}/retry",
    operation_id = "retryMessage",
    summary = "Try a waiting message again now",
    responses((status = 204, description = "Due now")),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn retry_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<MessageId>,
) -> Result<Response> {
    messages::retry(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    post,
    path = "/messages/{id}/cancel",
    operation_id = "cancelMessage",
    summary = "Give up on a waiting message",
    responses((status = 204, description = "Given up")),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn cancel_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<MessageId>,
) -> Result<Response> {
    messages::cancel(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The held deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<HoldView>,
}

#[utoipa::path(
    get,
    path = "/holds",
    operation_id = "listHolds",
    summary = "Held deliveries: mailboxes, customers and apps whose messages wait for a probe",
    responses((status = 200, description = "The holds", body = HoldList)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub(crate) async fn list_holds(State(state): State<WebState>, actor: Actor) -> Result<Response> {
    actor.require(Permission::View)?;
    let holds = crate::holds::all(&state.pool, &actor).await?;
    Ok(Json(HoldList { holds }).into_response())
}

/// "Retry now" on a hold: the workers probe it at once.
#[utoipa::path(
    post,
    path = "/holds/{id}/probe",
    operation_id = "probeHold",
    summary = "Retry now: the workers probe the hold at once",
    responses((status = 202, description = "The probe is due")),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub(crate) async fn probe_hold(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    crate::holds::probe_now(&state, &actor, id).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
}

#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "listAudit",
    summary = "The audit log, newest first",
    params(audit::AuditFilter),
    responses((status = 200, description = "A page of the log", body = AuditPage)),
    extensions(("x-mailbridge-role" = json!("admin")))
)]
pub(crate) async fn list_audit(
    State(state): State<WebState>,
    actor: Actor,
    Query(filter): Query<audit::AuditFilter>,
) -> Result<Response> {
    actor.require(Permission::ViewAudit)?;
    let entries = audit::search(&state.pool, &filter).await?;
    Ok(Json(AuditPage { entries }).into_response())
}
