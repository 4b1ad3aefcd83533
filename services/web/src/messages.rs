//! The message log: search by customer, device, sender, recipient, state and time,
//! newest first, paginated by a keyset cursor so that a page costs the same with a
//! million rows as with ten; each message with its envelope, client, TLS and every
//! delivery attempt with Microsoft's answer and what it means. Retry and cancel.
//! Bodies are never shown: they are health data.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    bounces::{self, Bounce},
    diagnosis::{self, Diagnosis},
    queue::{self, DeliveryAttempt, MessageState},
    store::message_log,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use strum::VariantArray;
use uuid::Uuid;

use crate::{
    WebState, audit,
    error::{Error, Result},
    i18n::Tr,
    layout::Nav,
    roles::{Actor, CustomerScope, Permission},
    tr,
};

/// Messages on one page of the log.
pub const PAGE_SIZE: i64 = 50;

/// What the control plane calls a state. `accepted` is Microsoft's acceptance
/// (Graph `202`, SMTP `250`), not delivery; `bounced`: a non-delivery report came
/// back after it.
pub fn state_label(state: &MessageState) -> &'static str {
    match state {
        MessageState::Queued => tr!("queued"),
        MessageState::Delivering => tr!("delivering"),
        MessageState::Accepted => tr!("accepted by Microsoft"),
        MessageState::Bounced => tr!("bounced"),
        MessageState::Failed => tr!("failed"),
    }
}

/// A search of the log; every field optional.
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// A message's id: as the UI shows it (dashed), as the edge's SMTP reply gives it
    /// (`250 2.0.0 OK queued as <32 hex digits>`), or as its Message-ID header.
    #[serde(default)]
    pub id: Option<String>,
    /// Customer id.
    pub customer: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Envelope sender (exact).
    pub sender: Option<String>,
    /// A recipient (exact).
    pub recipient: Option<String>,
    /// queued, delivering, accepted, bounced or failed.
    pub state: Option<String>,
    /// Received at or after (`YYYY-MM-DDTHH:MM`, UTC, or RFC 3339).
    pub from: Option<String>,
    /// Received before.
    pub until: Option<String>,
    /// The cursor of the next page: `<received_at micros>_<id>` of the last row seen.
    pub after: Option<String>,
    /// Messages per page (1–500, default 50).
    pub limit: Option<i64>,
}

fn some(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn time(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").map(|t| t.and_utc()))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        })
        .map_err(|_| Error::InvalidValue {
            text: tr!("{} is not a time (expected 2026-12-01T08:30)."),
            value: text.to_owned(),
        })
}

/// The message id in what someone pasted: the dashed form of the UI, the 32 hex
/// digits of the SMTP reply (`queued as …`, with or without those words), or a
/// Message-ID `<id@host>` of a test message.
pub fn message_id(text: &str) -> Result<Uuid> {
    let mut id = text.trim();
    if let Some(at) = id.to_ascii_lowercase().find("queued as") {
        id = id[at + "queued as".len()..].trim();
    }
    let id = id.trim_matches(|c: char| c == '<' || c == '>' || c.is_whitespace());
    let id = id.split('@').next().unwrap_or_default();
    Uuid::parse_str(id).map_err(|_| Error::InvalidValue {
        text: tr!("{} is not a message id (like 0193a5b2-7c1e-7d4f-9a0b-1c2d3e4f5a6b or 0193a5b27c1e7d4f9a0b1c2d3e4f5a6b)."),
        value: text.trim().to_owned(),
    })
}

fn uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| Error::InvalidValue {
        text: tr!("{} is not an id."),
        value: text.to_owned(),
    })
}

pub use message_log::LoggedMessage;

/// A page of the log and the cursor of the next one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = MessagePage)]
pub struct LogPage {
    pub messages: Vec<LoggedMessage>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

/// The messages of the customers `scope` sees that match `filter`, a page at a time.
pub async fn search(
    pool: &PgPool,
    scope: &CustomerScope,
    filter: &MessageFilter,
) -> Result<LogPage> {
    let limit = filter.limit.unwrap_or(PAGE_SIZE).clamp(1, 500);
    let mut search = message_log::Search {
        customers_seen: scope.only().map(<[TenantId]>::to_vec),
        limit,
        ..Default::default()
    };
    if let Some(id) = some(&filter.id) {
        search.id = Some(message_id(id)?);
    }
    if let Some(customer) = some(&filter.customer) {
        search.tenant_id = Some((uuid(customer)?).into());
    }
    if let Some(device) = some(&filter.device) {
        search.device_id = Some((uuid(device)?).into());
    }
    search.sender = some(&filter.sender).map(str::to_owned);
    search.recipient = some(&filter.recipient).map(str::to_owned);
    if let Some(state) = some(&filter.state) {
        search.state = Some(state.parse().map_err(|_| Error::InvalidValue {
            text: tr!("{} is not a message state."),
            value: state.to_owned(),
        })?);
    }
    if let Some(from) = some(&filter.from) {
        search.received_from = Some(time(from)?);
    }
    if let Some(until) = some(&filter.until) {
        search.received_until = Some(time(until)?);
    }
    if let Some(after) = some(&filter.after) {
        let (micros, id) = after
            .split_once('_')
            .and_then(|(m, id)| Some((m.parse::<i64>().ok()?, Uuid::parse_str(id).ok()?)))
            .ok_or_else(|| Error::Invalid(tr!("The page cursor is not valid.").into()))?;
        let at = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| Error::Invalid(tr!("The page cursor is not valid.").into()))?;
        search.after = Some((at, id));
    }
    let mut messages = message_log::search(pool, &search).await?;
    let next = if messages.len() as i64 > limit {
        messages.truncate(limit as usize);
        messages
            .last()
            .map(|m| format!("{}_{}", m.received_at.timestamp_micros(), m.id))
    } else {
        None
    };
    Ok(LogPage { messages, next })
}

/// An attempt as the API gives it: with the explanation in both languages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExplainedAttempt {
    #[serde(flatten)]
    pub attempt: DeliveryAttempt,
    pub explanation: Option<Explanation>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub class: diagnosis::Class,
    pub en: ExplanationText,
    pub de: ExplanationText,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExplanationText {
    #[schema(value_type = String)]
    pub what: &'static str,
    #[schema(value_type = String)]
    pub fix: &'static str,
}

/// A bounced recipient with what its code means (the API's view).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExplainedBounce {
    #[serde(flatten)]
    pub bounce: Bounce,
    pub explanation: Option<Explanation>,
}

impl Explanation {
    pub fn of(d: &'static Diagnosis) -> Self {
        let text = |lang| ExplanationText {
            what: d.title(lang),
            fix: d.fix(lang),
        };
        Self {
            class: d.class,
            en: text(diagnosis::Lang::En),
            de: text(diagnosis::Lang::De),
        }
    }
}

/// A message of a customer `scope` sees, or not found.
pub async fn load(pool: &PgPool, scope: &CustomerScope, id: MessageId) -> Result<LoggedMessage> {
    let message = message_log::get(pool, id).await?.ok_or(Error::NotFound)?;
    if scope.sees(message.tenant_id) {
        Ok(message)
    } else {
        Err(Error::NotFound)
    }
}

/// Tries a waiting message again now (its backoff is skipped, the holds of its
/// customer probed at once) and wakes the workers.
pub async fn retry(state: &WebState, actor: &Actor, id: MessageId) -> Result<()> {
    actor.require(Permission::HandleMessages)?;
    let message = load(&state.pool, &actor.customers, id).await?;
    if !queue::retry_now(&state.pool, id).await? {
        return Err(Error::Conflict(
            tr!(
                "Only a waiting message can be retried: the content of a message Microsoft accepted, or that failed, is deleted."
            )
            .into(),
        ));
    }
    record_change(state, actor, &message, "message.retry").await
}

/// Gives up on a waiting message: it fails, its content is deleted.
pub async fn cancel(state: &WebState, actor: &Actor, id: MessageId) -> Result<()> {
    actor.require(Permission::HandleMessages)?;
    let message = load(&state.pool, &actor.customers, id).await?;
    let reason = format!("cancelled by {}", actor.label);
    if !queue::cancel(&state.pool, id, &reason).await? {
        return Err(Error::Conflict(
            tr!("Only a waiting message can be cancelled (one being delivered right now cannot).")
                .into(),
        ));
    }
    record_change(state, actor, &message, "message.cancel").await
}

/// Records a change to a waiting message in the audit log.
async fn record_change(
    state: &WebState,
    actor: &Actor,
    message: &LoggedMessage,
    action: &str,
) -> Result<()> {
    let id = message.id;
    audit::record(
        &state.pool,
        actor,
        action,
        Some(message.tenant_id),
        Some(&id.to_string()),
        json!({}),
    )
    .await?;
    Ok(())
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/messages", get(log_page))
        .route("/messages/{id}", get(detail))
        .route("/messages/{id}/retry", post(retry_form))
        .route("/messages/{id}/cancel", post(cancel_form))
}

#[derive(Template, WebTemplate)]
#[template(path = "messages.html")]
struct LogPageView {
    t: Tr,
    nav: Nav,
    filter: MessageFilter,
    customers: Vec<(TenantId, String)>,
    states: &'static [MessageState],
    page: LogPage,
    next_query: Option<String>,
    /// The device the log is filtered by (its name), and the same search without it.
    device_filter: Option<(String, String)>,
}

/// The name of the device the log is filtered by (of a customer the actor sees),
/// and the query of the same search for every device.
async fn device_filter(
    state: &WebState,
    actor: &Actor,
    filter: &MessageFilter,
) -> Result<Option<(String, String)>> {
    let Some(id) = some(&filter.device).and_then(|d| d.parse::<DeviceId>().ok()) else {
        return Ok(None);
    };
    let name = match mailbridge_core::devices::get(&state.pool, id).await? {
        Some(device) if actor.sees(device.tenant_id) => device.name,
        _ => return Ok(None),
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("customer", &filter.customer),
        ("sender", &filter.sender),
        ("recipient", &filter.recipient),
        ("state", &filter.state),
        ("from", &filter.from),
        ("until", &filter.until),
    ] {
        if let Some(value) = some(value) {
            query.append_pair(key, value);
        }
    }
    Ok(Some((name, query.finish())))
}

async fn log_page(
    State(state): State<WebState>,
    actor: Actor,
    Query(mut filter): Query<MessageFilter>,
) -> Result<Response> {
    filter.limit = None;
    // A message found by its id opens at once.
    if some(&filter.id).is_some() {
        let found = search(&state.pool, &actor.customers, &filter).await?;
        if let [message] = found.messages.as_slice() {
            return Ok(Redirect::to(&format!("/messages/{}", message.id)).into_response());
        }
    }
    let page = search(&state.pool, &actor.customers, &filter).await?;
    let next_query = page.next.as_ref().map(|next| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("customer", &filter.customer),
            ("device", &filter.device),
            ("sender", &filter.sender),
            ("recipient", &filter.recipient),
            ("state", &filter.state),
            ("from", &filter.from),
            ("until", &filter.until),
            ("id", &filter.id),
        ] {
            if let Some(value) = some(value) {
                query.append_pair(key, value);
            }
        }
        query.append_pair("after", next);
        query.finish()
    });
    Ok(LogPageView {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "messages"),
        customers: actor.customers.names(&state.pool).await?,
        states: MessageState::VARIANTS,
        device_filter: device_filter(&state, &actor, &filter).await?,
        filter,
        page,
        next_query,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
struct MessagePage {
    t: Tr,
    nav: Nav,
    message: LoggedMessage,
    attempts: Vec<DeliveryAttempt>,
    /// The recipients Microsoft reported undeliverable after accepting it.
    bounces: Vec<Bounce>,
    can_handle: bool,
    /// Reload while the message is on its way (a test message, typically).
    refresh: bool,
}

async fn detail(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<MessageId>,
) -> Result<Response> {
    let message = load(&state.pool, &actor.customers, id).await?;
    let attempts = queue::attempts(&state.pool, id).await?;
    let bounces = bounces::of_message(&state.pool, id).await?;
    let refresh = message.state == MessageState::Delivering
        || (message.state == MessageState::Queued
            && message.next_attempt_at < Utc::now() + chrono::Duration::seconds(30));
    Ok(MessagePage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "messages"),
        can_handle: actor.may(Permission::HandleMessages),
        message,
        attempts,
        bounces,
        refresh,
    }
    .into_response())
}

async fn retry_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<MessageId>,
) -> Result<Response> {
    retry(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/messages/{id}")).into_response())
}

async fn cancel_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<MessageId>,
) -> Result<Response> {
    cancel(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/messages/{id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_found_in_every_form() {
        let id = Uuid::parse_str("0193a5b2-7c1e-7d4f-9a0b-1c2d3e4f5a6b").unwrap();
        for text in [
            "0193a5b2-7c1e-7d4f-9a0b-1c2d3e4f5a6b",
            " 0193a5b27c1e7d4f9a0b1c2d3e4f5a6b ",
            "250 2.0.0 OK queued as 0193a5b27c1e7d4f9a0b1c2d3e4f5a6b",
            "<0193a5b2-7c1e-7d4f-9a0b-1c2d3e4f5a6b@relay.example>",
            "0193A5B27C1E7D4F9A0B1C2D3E4F5A6B",
        ] {
            assert_eq!(message_id(text).unwrap(), id, "{text}");
        }
        assert!(message_id("0193a5b2").is_err());
        assert!(message_id("scanner@praxis.example").is_err());
    }
}
