//! Holds in the control plane: which mailboxes, customers or apps are held (see
//! `mailbridge_core::holds`), why in plain words, since when, the next probe and the
//! messages waiting — on the overview, the customer's page and the API — and "retry
//! now", which only asks the workers (through PostgreSQL) to probe at once: the web
//! makes no Microsoft calls itself.

use mailbridge_core::ids::TenantId;
use std::collections::HashSet;

use axum::{
    Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::post,
};
use chrono::{DateTime, Utc};
use mailbridge_core::{
    holds::{self, Hold, Scope},
    tenants::Tenant,
};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    WebState, audit,
    error::{Error, Result},
    messages::Explanation,
    roles::{Actor, Permission},
    tr,
};

/// A hold as the pages and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Hold)]
pub struct HoldView {
    pub id: Uuid,
    pub scope: Scope,
    /// The app's client id, the customer's id, or the mailbox.
    pub subject: String,
    pub customer_id: Option<TenantId>,
    pub customer_name: Option<String>,
    /// The diagnosis key.
    pub reason: String,
    pub explanation: Option<Explanation>,
    /// Microsoft's code and text as last heard.
    pub detail: String,
    pub since: DateTime<Utc>,
    pub next_probe_at: DateTime<Utc>,
    pub last_probe_at: Option<DateTime<Utc>>,
    pub probe_failures: i32,
    pub messages_held: i64,
}

impl HoldView {
    fn of(hold: &Hold) -> Self {
        Self {
            id: hold.id,
            scope: hold.scope,
            subject: hold.subject.clone(),
            customer_id: hold.tenant_id,
            customer_name: hold.tenant_name.clone(),
            reason: hold.reason.clone(),
            explanation: hold.explained().map(Explanation::of),
            detail: hold.detail.clone(),
            since: hold.since,
            next_probe_at: hold.next_probe_at,
            last_probe_at: hold.last_probe_at,
            probe_failures: hold.probe_failures,
            messages_held: hold.messages_held,
        }
    }

    /// The scope as the pages name it (translated there).
    pub fn scope_label(&self) -> &'static str {
        match self.scope {
            Scope::App => tr!("App"),
            Scope::Customer => tr!("Customer"),
            Scope::Mailbox => tr!("Mailbox"),
        }
    }

    /// What the reason means, in the reader's language.
    pub fn what(&self, lang: mailbridge_core::diagnosis::Lang) -> &'static str {
        mailbridge_core::diagnosis::by_key(&self.reason).map_or("", |d| d.title(lang))
    }

    pub fn fix(&self, lang: mailbridge_core::diagnosis::Lang) -> &'static str {
        mailbridge_core::diagnosis::by_key(&self.reason).map_or("", |d| d.fix(lang))
    }
}

/// Every hold `actor` may see (the app's, and those of their customers), widest
/// first.
pub async fn all(pool: &PgPool, actor: &Actor) -> Result<Vec<HoldView>> {
    Ok(holds::list(pool, None)
        .await?
        .iter()
        .map(HoldView::of)
        .filter(|h| h.customer_id.is_none_or(|c| actor.sees(c)))
        .collect())
}

/// The holds that keep each of `tenants`' messages, in their order.
pub async fn for_customers(pool: &PgPool, tenants: &[Tenant]) -> Result<Vec<Vec<HoldView>>> {
    let only = match tenants {
        [one] => Some(one.id),
        _ => None,
    };
    let holds = holds::list(pool, only).await?;
    if only.is_some() {
        return Ok(vec![holds.iter().map(HoldView::of).collect()]);
    }
    let own_apps: HashSet<&str> = tenants
        .iter()
        .filter_map(|t| t.client_id.as_deref())
        .collect();
    Ok(tenants
        .iter()
        .map(|t| {
            holds
                .iter()
                .filter(|h| h.applies_to(t.id, t.client_id.as_deref(), &own_apps))
                .map(HoldView::of)
                .collect()
        })
        .collect())
}

/// "Retry now": the workers probe the hold at once. Audited. Returns the hold's
/// customer, if it has one.
pub async fn probe_now(state: &WebState, actor: &Actor, id: Uuid) -> Result<Option<Uuid>> {
    actor.require(Permission::HandleMessages)?;
    let visible = all(&state.pool, actor).await?.iter().any(|h| h.id == id);
    if !visible {
        return Err(Error::NotFound);
    }
    let Some(tenant) = holds::probe_now(&state.pool, id).await? else {
        return Err(Error::NotFound);
    };
    mailbridge_core::queue::wake_workers(&state.pool, "hold probe").await?;
    audit::record(
        &state.pool,
        actor,
        "hold.probe",
        tenant.map(Into::into),
        Some(&id.to_string()),
        json!({}),
    )
    .await?;
    Ok(tenant)
}

/// Exports the held messages and the oldest hold by scope and reason; removes the
/// series of those no longer held. Returns the label sets exported.
pub async fn export_gauges(
    pool: &PgPool,
    previous: HashSet<(Scope, String)>,
) -> std::result::Result<HashSet<(Scope, String)>, sqlx::Error> {
    let web = &mailbridge_core::metrics::metrics().web;
    let mut now = HashSet::new();
    for held in holds::by_reason(pool).await? {
        let labels = [held.scope.as_str(), held.reason.as_str()];
        web.held_messages
            .with_label_values(&labels)
            .set(held.messages);
        web.hold_age_seconds
            .with_label_values(&labels)
            .set(held.oldest_seconds);
        now.insert((held.scope, held.reason));
    }
    for (scope, reason) in previous.difference(&now) {
        let labels = [scope.as_str(), reason.as_str()];
        let _ = web.held_messages.remove_label_values(&labels);
        let _ = web.hold_age_seconds.remove_label_values(&labels);
    }
    Ok(now)
}

pub fn router() -> Router<WebState> {
    Router::new().route("/holds/{id}/probe", post(probe_form))
}

async fn probe_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let back = match probe_now(&state, &actor, id).await? {
        Some(tenant) => format!("/customers/{tenant}?notice=probing"),
        None => "/?notice=probing".to_owned(),
    };
    Ok(Redirect::to(&back).into_response())
}
