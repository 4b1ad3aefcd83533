//! The JSON API under `/api/v1`: everything the pages can do, for MSP automation
//! (RMM, PSA). Requests authenticate with an API token (`Authorization: Bearer
//! mbt_…`) created in the control plane; cookies are never accepted here, so no
//! CSRF token is needed. Errors are JSON (`{"error": {"code", "message"}}`); the
//! message log and the audit log paginate with a cursor, the customer and device
//! lists like their pages (search, sort, offset and a bounded limit, a bad value a
//! 400 naming the parameter); `/api/v1/openapi.json` describes it all.

use axum::{
    Json, Router,
    extract::{FromRequest, Path, Query, Request, State, rejection::JsonRejection},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use mailbridge_core::tenants::Tenant;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    WebState, audit,
    client_addr::of as client_addr,
    connection, consent,
    customer_list::{self, CustomerQuery},
    customers::{self, CustomerInput},
    device_health::{self, DeviceHealth, DeviceQuery},
    devices::{self, DeviceInput},
    error::{Error, Rejection, Result},
    i18n::{self, Tr},
    layout,
    messages::{self, ExplainedAttempt, Explanation, MessageFilter},
    openapi,
    roles::{Actor, Permission, customer_in_path},
    staff,
};

/// A JSON body whose rejection is one of our errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Error::Invalid(
                "send the body as JSON with Content-Type: application/json".into(),
            )),
            Err(e) => Err(Error::Invalid(e.body_text())),
        }
    }
}

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
        Json(json!({ "error": { "code": "unauthenticated", "message": message } })),
    )
        .into_response()
}

/// Errors as JSON.
async fn render_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    match response.extensions().get::<Rejection>() {
        Some(rejection) => (
            rejection.status,
            Json(json!({ "error": { "code": rejection.code, "message": rejection.message } })),
        )
            .into_response(),
        None => response,
    }
}

async fn openapi_document(State(state): State<WebState>) -> Response {
    Json(openapi::document(&state.settings.web.public_url)).into_response()
}

fn customer_json(view: &customers::CustomerView) -> Value {
    serde_json::to_value(view).expect("customers serialise")
}

/// A bad query parameter: 400, naming it.
fn bad_parameter(parameter: &'static str, message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": {
            "code": "invalid_parameter",
            "parameter": parameter,
            "message": message,
        } })),
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

/// Where the list goes on, if it does.
fn next_offset(next: Option<i64>) -> Value {
    next.map_or(Value::Null, Value::from)
}

async fn list_customers(
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
    let customers = page.customers.iter().map(customer_json).collect();
    Ok(list_page(
        "customers",
        customers,
        (page.total, page.offset, page.limit),
        page.next_offset(),
    ))
}

async fn one_customer(state: &WebState, id: Uuid) -> Result<Value> {
    customers::with_health(&state.pool, Some(id), &Default::default())
        .await?
        .first()
        .map(customer_json)
        .ok_or(Error::NotFound)
}

async fn get_customer(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(one_customer(&state, id).await?).into_response())
}

async fn create_customer(
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
#[derive(Deserialize)]
struct CustomerPatch {
    name: Option<String>,
    sender_mailbox: Option<String>,
    delivery_method: Option<String>,
    #[serde(default, deserialize_with = "layout::checkbox")]
    save_to_sent_items: Option<bool>,
    #[serde(default, deserialize_with = "layout::checkbox")]
    smtp_for_large_messages: Option<bool>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    notification_address: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit_per_minute: Option<Option<u32>>,
    /// The largest message, bytes (1 MB to 150 MB).
    max_message_bytes: Option<i64>,
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

async fn update_customer(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    ApiJson(patch): ApiJson<CustomerPatch>,
) -> Result<Response> {
    actor.require(Permission::ManageCustomers)?;
    let tenant = customers::load(&state.pool, id).await?;
    customers::update(&state, &actor, id, &merged(&tenant, patch)).await?;
    Ok(Json(one_customer(&state, id).await?).into_response())
}

async fn delete_customer(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    customers::delete(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A consent link for the customer's admin (valid a day, single use).
async fn consent_link(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let (url, _cookie) = consent::start(&state, &actor, id).await?;
    Ok(Json(json!({ "consent_url": url })).into_response())
}

#[derive(Deserialize)]
struct TestMessage {
    recipient: String,
}

async fn test_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<TestMessage>,
) -> Result<Response> {
    let queue_id = customers::send_test(&state, &actor, id, &body.recipient).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queue_id": queue_id }))).into_response())
}

/// A device in the list: its settings and its health.
/// A page of a list as the API answers it: the items under `key`, the total that
/// match, where the page starts, its size, and where the next one starts.
fn list_page(
    key: &str,
    items: Vec<Value>,
    (total, offset, limit): (i64, i64, i64),
    next: Option<i64>,
) -> Response {
    let mut body = json!({
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": next_offset(next),
    });
    body[key] = Value::Array(items);
    Json(body).into_response()
}

fn device_health_json(health: &DeviceHealth) -> Value {
    let mut value = serde_json::to_value(health).expect("devices serialise");
    value["last_failed_login_from"] = health
        .last_failed_login_from
        .map_or(Value::Null, |_| Value::from(health.last_failed_from()));
    value["locked"] = Value::from(health.locked());
    value
}

async fn list_devices(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
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
    let devices = page.devices.iter().map(device_health_json).collect();
    Ok(list_page(
        "devices",
        devices,
        (page.total, page.offset, page.limit),
        page.next_offset(),
    ))
}

async fn create_device(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    ApiJson(input): ApiJson<DeviceInput>,
) -> Result<Response> {
    let issued = devices::create(&state, &actor, id, &input).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn get_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(devices::load(&state, id, device).await?).into_response())
}

async fn update_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
    ApiJson(input): ApiJson<DeviceInput>,
) -> Result<Response> {
    Ok(Json(devices::update(&state, &actor, id, device, &input).await?).into_response())
}

async fn delete_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    devices::delete(&state, &actor, id, device).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn rotate_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    Ok(Json(devices::rotate(&state, &actor, id, device).await?).into_response())
}

async fn device_logins(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let logins = devices::failed_logins(&state, id, device).await?;
    Ok(Json(json!({ "logins": logins })).into_response())
}

/// The device's last sessions on the edge, and what they show in words.
async fn device_transcripts(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    let (transcripts, findings) = devices::transcripts(&state, &actor, id, device).await?;
    let diagnosis: Vec<_> = findings
        .iter()
        .map(|f| {
            json!({
                "key": f.key,
                "count": f.count,
                "since": f.since,
                "detail": f.detail,
                "text": f.text(crate::i18n::Lang::En),
                "text_de": f.text(crate::i18n::Lang::De),
            })
        })
        .collect();
    Ok(Json(json!({ "transcripts": transcripts, "diagnosis": diagnosis })).into_response())
}

async fn unlock_device(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    let unlocked = devices::unlock(&state, &actor, id, device).await?;
    Ok(Json(json!({ "unlocked": unlocked })).into_response())
}

async fn list_messages(
    State(state): State<WebState>,
    actor: Actor,
    Query(filter): Query<MessageFilter>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(messages::search(&state.pool, &actor.customers, &filter).await?).into_response())
}

async fn get_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let message = messages::load(&state.pool, &actor.customers, id).await?;
    let attempts: Vec<ExplainedAttempt> = mailbridge_core::queue::attempts(&state.pool, id)
        .await?
        .into_iter()
        .map(|attempt| ExplainedAttempt {
            explanation: attempt.explained().map(Explanation::of),
            attempt,
        })
        .collect();
    let bounces: Vec<messages::ExplainedBounce> =
        mailbridge_core::bounces::of_message(&state.pool, id)
            .await?
            .into_iter()
            .map(|bounce| messages::ExplainedBounce {
                explanation: bounce.explained().map(Explanation::of),
                bounce,
            })
            .collect();
    let mut body = serde_json::to_value(&message).expect("messages serialise");
    body["attempts"] = serde_json::to_value(attempts).expect("attempts serialise");
    body["bounces"] = serde_json::to_value(bounces).expect("bounces serialise");
    Ok(Json(body).into_response())
}

async fn retry_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    messages::retry(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn cancel_message(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    messages::cancel(&state, &actor, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_holds(State(state): State<WebState>, actor: Actor) -> Result<Response> {
    actor.require(Permission::View)?;
    let holds = crate::holds::all(&state.pool, &actor).await?;
    Ok(Json(json!({ "holds": holds })).into_response())
}

/// "Retry now" on a hold: the workers probe it at once.
async fn probe_hold(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    crate::holds::probe_now(&state, &actor, id).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn list_audit(
    State(state): State<WebState>,
    actor: Actor,
    Query(filter): Query<audit::AuditFilter>,
) -> Result<Response> {
    actor.require(Permission::ViewAudit)?;
    let entries = audit::search(&state.pool, &filter).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}
