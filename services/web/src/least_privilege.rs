//! A customer's permissions as the control plane shows them: the permission mode of
//! the Graph path (limited to the sender mailbox, or tenant-wide), the state of the
//! limited mode's Exchange step (waiting for the script, refused by Exchange,
//! verified), the warning for tenant-wide mail roles in the customer's tokens, and the
//! ready-to-paste Exchange Online PowerShell script (page, download and API).

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use mailbridge_core::ids::MessageId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    diagnosis::Lang,
    least_privilege::{self, PermissionMode, Permissions, ScriptInput},
    tenants::{DeliveryMethod, Tenant},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::{
    WebState, audit, customers,
    error::{Error, Result},
    holds::HoldView,
    i18n::Tr,
    roles::{Actor, Permission},
    tr,
};

/// The diagnosis key of Graph's refusal when no permission covers the mailbox.
const ACCESS_DENIED: &str = "ErrorAccessDenied";

/// A customer's permissions, for its page, the overview and the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Permissions)]
pub struct PermissionsView {
    pub mode: PermissionMode,
    /// Whether the mode applies: the Graph path (SMTP AUTH is mailbox-scoped anyway).
    pub graph_path: bool,
    /// The app's service principal (enterprise application) in the customer's tenant,
    /// from the `oid` of its tokens.
    pub service_principal_id: Option<Uuid>,
    /// Tenant-wide mail roles (Mail.Send, Mail.ReadWrite …) the last inspected token
    /// carried: the app can use every mailbox of the tenant.
    pub tenant_wide_roles: Vec<String>,
    pub roles_seen_at: Option<DateTime<Utc>>,
    /// Limited mode: when a message as the sender mailbox was first accepted.
    pub exchange_verified_at: Option<DateTime<Utc>>,
    /// Limited mode, consent verified, Exchange grant not proved yet.
    pub waiting_for_exchange_script: bool,
    /// While waiting: Graph refused the sender mailbox (`403 ErrorAccessDenied`).
    pub exchange_refused: bool,
}

impl PermissionsView {
    pub fn of(permissions: &Permissions, tenant: &Tenant, holds: &[HoldView]) -> Self {
        let limited = permissions.limited_on_graph(tenant);
        let waiting =
            limited && tenant.consented_at.is_some() && permissions.exchange_verified_at.is_none();
        Self {
            mode: permissions.mode,
            graph_path: tenant.delivery_method == DeliveryMethod::Graph,
            service_principal_id: permissions.service_principal_id,
            tenant_wide_roles: permissions.tenant_wide_roles.clone(),
            roles_seen_at: permissions.roles_seen_at,
            exchange_verified_at: permissions.exchange_verified_at,
            waiting_for_exchange_script: waiting,
            exchange_refused: waiting && holds.iter().any(|h| h.reason == ACCESS_DENIED),
        }
    }

    pub fn limited(&self) -> bool {
        self.mode == PermissionMode::Limited
    }

    /// The label of the overview's column.
    pub fn label(&self) -> &'static str {
        match self.mode {
            PermissionMode::Limited => tr!("limited"),
            PermissionMode::TenantWide => tr!("tenant-wide"),
        }
    }

    pub fn warns(&self) -> bool {
        !self.tenant_wide_roles.is_empty()
    }

    /// The token's tenant-wide roles let the app send as every mailbox.
    pub fn sends_as_everyone(&self) -> bool {
        self.tenant_wide_roles.iter().any(|r| r == "Mail.Send")
    }

    /// … and read every mailbox.
    pub fn reads_everyone(&self) -> bool {
        self.tenant_wide_roles.iter().any(|r| r != "Mail.Send")
    }

    pub fn roles_text(&self) -> String {
        self.tenant_wide_roles.join(", ")
    }
}

/// The script for a customer in the reader's language, when the consent told the
/// service principal's object id.
pub fn script_for(
    state: &WebState,
    tenant: &Tenant,
    permissions: &Permissions,
    lang: Lang,
) -> Option<String> {
    let app_id = tenant
        .client_id
        .as_deref()
        .or(state.settings.m365.client_id.as_deref())?;
    let service_principal_id = permissions.service_principal_id?;
    Some(least_privilege::exchange_script(
        &ScriptInput {
            customer: &tenant.name,
            app_id,
            service_principal_id,
            sender_mailbox: &tenant.sender_mailbox,
        },
        lang,
    ))
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/customers/{id}/exchange-script", get(download))
        .route("/customers/{id}/exchange-check", post(check_form))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScriptQuery {
    /// `en` or `de`; the reader's language when absent.
    lang: Option<String>,
}

fn language(query: &ScriptQuery, tr: Tr) -> Result<Lang> {
    match query.lang.as_deref().map(str::trim) {
        None | Some("") => Ok(tr.lang()),
        Some("en") => Ok(Lang::En),
        Some("de") => Ok(Lang::De),
        Some(_) => Err(Error::Invalid(
            tr!("The script's language is en or de.").into(),
        )),
    }
}

/// What the API answers for the script.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExchangeScript {
    /// The script can be filled in (consent granted, service principal known).
    pub ready: bool,
    #[schema(value_type = String)]
    pub language: &'static str,
    pub mode: PermissionMode,
    pub app_id: Option<String>,
    pub service_principal_id: Option<Uuid>,
    pub sender_mailbox: String,
    pub script: Option<String>,
    /// Why it is not ready.
    pub reason: Option<String>,
}

pub async fn script_answer(
    state: &WebState,
    actor: &Actor,
    id: TenantId,
    query: &ScriptQuery,
) -> Result<ExchangeScript> {
    actor.require(Permission::View)?;
    if !actor.customers.sees(id) {
        return Err(Error::NotFound);
    }
    let lang = language(query, actor.tr)?;
    let tenant = customers::load(&state.pool, id).await?;
    let permissions = least_privilege::get(&state.pool, id).await?;
    let script = script_for(state, &tenant, &permissions, lang);
    let reason = script.is_none().then(|| {
        Tr::new(lang)
            .t(tr!(
                "The script needs the object id of mailbridge's enterprise application in the customer's tenant: it is known once the customer's admin has granted the consent (Connect Microsoft 365)."
            ))
            .to_owned()
    });
    Ok(ExchangeScript {
        ready: script.is_some(),
        language: match lang {
            Lang::En => "en",
            Lang::De => "de",
        },
        mode: permissions.mode,
        app_id: tenant
            .client_id
            .clone()
            .or_else(|| state.settings.m365.client_id.clone()),
        service_principal_id: permissions.service_principal_id,
        sender_mailbox: tenant.sender_mailbox,
        script,
        reason,
    })
}

/// `GET /api/v1/customers/{id}/exchange-script`.
#[utoipa::path(
    get,
    path = "/customers/{id}/exchange-script",
    operation_id = "getExchangeScript",
    summary = "Limited mode: the Exchange Online PowerShell script for the customer's admin (New-ServicePrincipal, New-ManagementScope for the sender mailbox, New-ManagementRoleAssignment for Application Mail.Send and Mail.ReadWrite, Test-ServicePrincipalAuthorization); ready once the consent is granted",
    params(ScriptQuery),
    responses((status = 200, description = "The script, or why it is not ready", body = ExchangeScript)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
pub async fn api_script(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Query(query): Query<ScriptQuery>,
) -> Result<Response> {
    Ok(Json(script_answer(&state, &actor, id, &query).await?).into_response())
}

/// The script as a file to save (`mailbridge-exchange-<customer>.ps1`).
async fn download(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Query(query): Query<ScriptQuery>,
) -> Result<Response> {
    let answer = script_answer(&state, &actor, id, &query).await?;
    let Some(script) = answer.script else {
        return Err(Error::Conflict(answer.reason.unwrap_or_default()));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mailbridge-exchange-{id}.ps1\""),
            ),
        ],
        script,
    )
        .into_response())
}

/// "I ran the script — check now": the verification message (queued again if it is
/// gone) and the customer's holds are tried at once.
pub async fn check_now(state: &WebState, actor: &Actor, id: TenantId) -> Result<Option<MessageId>> {
    actor.require(Permission::SendTest)?;
    if !actor.customers.sees(id) {
        return Err(Error::NotFound);
    }
    let tenant = customers::load(&state.pool, id).await?;
    let permissions = least_privilege::get(&state.pool, id).await?;
    if !permissions.limited_on_graph(&tenant) || tenant.consented_at.is_none() {
        return Err(Error::Conflict(
            tr!("Only a customer in limited mode whose consent is verified waits for the Exchange script.").into(),
        ));
    }
    let key = state.master_key.as_ref().ok_or(Error::from(
        mailbridge_core::tenants::TenantError::NoMasterKey,
    ))?;
    let queued = least_privilege::queue_verification(
        &state.pool,
        key,
        &tenant,
        &state.settings.edge.hostname,
    )
    .await?;
    mailbridge_core::holds::probe_customer_now(&state.pool, id).await?;
    audit::record(
        &state.pool,
        actor,
        "customer.exchange_check",
        Some(id),
        Some(&tenant.name),
        json!({ "queued": queued }),
    )
    .await?;
    Ok(queued)
}

async fn check_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    check_now(&state, &actor, id).await?;
    Ok(Redirect::to(&format!("/customers/{id}?notice=exchange-check")).into_response())
}
