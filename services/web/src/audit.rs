//! The audit log: every change made through the control plane or its API — who,
//! what, when, from where — written in the same request as the change, and the
//! page and API call that show it, filterable by customer, actor and action.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{Query, State},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{
    WebState,
    customers::Nav,
    error::Result,
    i18n::Tr,
    session::{Actor, Permission},
};

/// Records one change by `actor`.
pub async fn record(
    pool: &PgPool,
    actor: &Actor,
    action: &str,
    tenant_id: Option<Uuid>,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let who = mailbridge_core::audit::Who {
        label: &actor.label,
        staff_id: actor.staff_id,
        client_addr: actor.client_addr.map(ipnet::IpNet::from),
    };
    mailbridge_core::audit::record(pool, who, action, tenant_id, target, details).await
}

/// Records one change by `actor` inside the transaction that makes it.
pub async fn record_in(
    tx: &mut sqlx::PgConnection,
    actor: &Actor,
    action: &str,
    tenant_id: Option<Uuid>,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let who = mailbridge_core::audit::Who {
        label: &actor.label,
        staff_id: actor.staff_id,
        client_addr: actor.client_addr.map(ipnet::IpNet::from),
    };
    mailbridge_core::audit::record(tx, who, action, tenant_id, target, details).await
}

#[derive(Debug, Serialize, FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub tenant_id: Option<Uuid>,
    pub tenant_name: Option<String>,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub client_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditFilter {
    pub customer: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Entries older than this id (the next page).
    pub before: Option<i64>,
}

const PAGE: i64 = 100;

/// Newest first, one page.
pub async fn search(pool: &PgPool, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT a.id, a.at, a.actor, a.action, a.tenant_id, t.name AS tenant_name, a.target,
                a.details, host(a.client_addr) AS client_addr
           FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id WHERE true",
    );
    if let Some(customer) = filter
        .customer
        .as_deref()
        .and_then(|c| Uuid::parse_str(c).ok())
    {
        query.push(" AND a.tenant_id = ").push_bind(customer);
    }
    if let Some(actor) = filter.actor.as_deref().filter(|a| !a.trim().is_empty()) {
        query
            .push(" AND lower(a.actor) = lower(")
            .push_bind(actor.trim().to_owned())
            .push(")");
    }
    if let Some(action) = filter.action.as_deref().filter(|a| !a.trim().is_empty()) {
        query
            .push(" AND a.action LIKE ")
            .push_bind(format!("{}%", action.trim().replace(['%', '_'], "")));
    }
    if let Some(before) = filter.before {
        query.push(" AND a.id < ").push_bind(before);
    }
    query.push(" ORDER BY a.id DESC LIMIT ").push_bind(PAGE);
    Ok(query.build_query_as().fetch_all(pool).await?)
}

pub fn router() -> Router<WebState> {
    Router::new().route("/audit", get(page))
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    t: Tr,
    nav: Nav,
    entries: Vec<AuditEntry>,
    customers: Vec<(Uuid, String)>,
    filter: AuditFilter,
    next: Option<String>,
}

async fn page(
    State(state): State<WebState>,
    actor: Actor,
    Query(filter): Query<AuditFilter>,
) -> Result<AuditPage> {
    actor.require(Permission::ViewAudit)?;
    let entries = search(&state.pool, &filter).await?;
    let next = (entries.len() as i64 == PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten()
        .map(|before| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in [
                ("customer", &filter.customer),
                ("actor", &filter.actor),
                ("action", &filter.action),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
            query.append_pair("before", &before.to_string());
            query.finish()
        });
    Ok(AuditPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "audit"),
        customers: crate::customers::names(&state.pool, &actor.customers).await?,
        entries,
        filter,
        next,
    })
}
