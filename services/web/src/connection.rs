//! A customer's connection to Microsoft 365 as its page and the API show it:
//! not connected, connecting (a consent granted, a worker verifying it while Entra
//! propagates it), connected, or failed (with Microsoft's refusal explained), and the
//! JSON the customer's page polls to update itself.

use axum::{
    Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use mailbridge_core::ids::EntraTenantId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    consent_checks::{self, CheckState, ConsentCheck},
    diagnosis,
    tenants::Tenant,
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    WebState, customers,
    error::Result,
    i18n::Tr,
    roles::{Actor, Permission},
};

pub fn router() -> Router<WebState> {
    Router::new().route("/customers/{id}/connection", get(status))
}

/// Where a customer's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    NotConnected,
    Connecting,
    /// Limited mode: the consent is verified, and Exchange does not let the app use
    /// the sender mailbox yet (the customer's admin has to run the script).
    WaitingForExchangeScript,
    Connected,
    Failed,
}

/// A consent check, with its last refusal explained in the reader's language.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ConsentCheck)]
pub struct CheckView {
    pub id: Uuid,
    pub state: CheckState,
    #[schema(value_type = Uuid)]
    pub entra_tenant_id: EntraTenantId,
    pub requested_at: DateTime<Utc>,
    pub attempts: i32,
    /// While pending: when the worker asks Microsoft again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The last refusal's diagnosis key (e.g. `AADSTS700016`, `MissingRole`).
    pub error_code: Option<String>,
    /// Microsoft's answer in its own words.
    pub error_detail: Option<String>,
    /// What the refusal means.
    pub problem: Option<String>,
    /// What to do about it.
    pub fix: Option<String>,
}

impl CheckView {
    pub fn of(check: &ConsentCheck, tr: Tr) -> Self {
        let diagnosis = check.last_error_code.as_deref().and_then(diagnosis::by_key);
        Self {
            id: check.id,
            state: check.state,
            entra_tenant_id: check.entra_tenant_id,
            requested_at: check.requested_at,
            attempts: check.attempts,
            next_attempt_at: (check.state == CheckState::Pending).then_some(check.next_attempt_at),
            finished_at: check.finished_at,
            error_code: check.last_error_code.clone(),
            error_detail: check.last_error_detail.clone(),
            problem: diagnosis.map(|d| d.title(tr.lang()).to_owned()),
            fix: diagnosis.map(|d| d.fix(tr.lang()).to_owned()),
        }
    }

    /// What the admin who granted the consent may see without signing in: whether
    /// it worked, and if not, why and what to do (not Microsoft's raw answer).
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state,
            "problem": self.problem.as_deref().filter(|_| self.state == CheckState::Failed),
            "fix": self.fix.as_deref().filter(|_| self.state == CheckState::Failed),
        })
    }

    pub fn pending(&self) -> bool {
        self.state == CheckState::Pending
    }

    pub fn failed(&self) -> bool {
        self.state == CheckState::Failed
    }
}

/// A customer's connection: its state and its latest consent check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Connection {
    pub state: ConnectionState,
    #[schema(value_type = Option<Uuid>)]
    pub entra_tenant_id: Option<EntraTenantId>,
    pub consented_at: Option<DateTime<Utc>>,
    /// The latest consent check (null before the first consent through mailbridge).
    pub check: Option<CheckView>,
}

impl Connection {
    pub fn of(
        tenant: &Tenant,
        latest: Option<&ConsentCheck>,
        permissions: &crate::least_privilege::PermissionsView,
        tr: Tr,
    ) -> Self {
        let (connected, _) = customers::connection(tenant);
        let state = match latest {
            Some(c) if c.state == CheckState::Pending => ConnectionState::Connecting,
            // A failed check counts until a consent verified after it (or outside
            // mailbridge) connects the customer.
            Some(c)
                if c.state == CheckState::Failed
                    && tenant.consented_at.is_none_or(|at| at <= c.requested_at) =>
            {
                ConnectionState::Failed
            }
            _ if connected && permissions.waiting_for_exchange_script => {
                ConnectionState::WaitingForExchangeScript
            }
            _ if connected => ConnectionState::Connected,
            _ => ConnectionState::NotConnected,
        };
        Self {
            state,
            entra_tenant_id: tenant.entra_tenant_id,
            consented_at: tenant.consented_at,
            check: latest.map(|c| CheckView::of(c, tr)),
        }
    }

    /// Reads the customer's connection. The check comes first: a check that is
    /// verified was committed with its customer's consent, so the customer read
    /// after it shows the consent. Read the other way round, a check verified
    /// between the two reads showed a customer just connected as not connected.
    pub async fn load(state: &WebState, id: TenantId, tr: Tr) -> Result<Self> {
        let latest = consent_checks::latest(&state.pool, id).await?;
        let tenant = customers::load(&state.pool, id).await?;
        let recorded = mailbridge_core::least_privilege::get(&state.pool, id).await?;
        let holds = crate::holds::for_customers(&state.pool, std::slice::from_ref(&tenant))
            .await?
            .pop()
            .unwrap_or_default();
        let permissions = crate::least_privilege::PermissionsView::of(&recorded, &tenant, &holds);
        Ok(Self::of(&tenant, latest.as_ref(), &permissions, tr))
    }

    pub fn connecting(&self) -> bool {
        self.state == ConnectionState::Connecting
    }

    pub fn failed(&self) -> bool {
        self.state == ConnectionState::Failed
    }
}

/// The connection of customer `id`, for its page (which polls it while connecting)
/// and the API.
#[utoipa::path(
    get,
    path = "/customers/{id}/connection",
    operation_id = "getConnection",
    summary = "The customer's connection to Microsoft 365: not connected, connecting (a consent being verified while Microsoft propagates it), connected or failed, with its latest consent check",
    responses((status = 200, description = "The connection", body = Connection)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub async fn status(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    Ok(Json(Connection::load(&state, id, actor.tr).await?).into_response())
}
