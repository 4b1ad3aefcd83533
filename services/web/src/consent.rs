//! Connecting a customer to Microsoft 365: the Entra admin consent (v2) for the
//! MSP's multi-tenant app, and its callback. The callback's `tenant` is never
//! trusted alone: `state` must name a consent this control plane started (in this
//! browser, when staff started it here), and the tenant must be the customer's. The
//! callback only records the consent: the web holds no Microsoft credential, so a
//! worker verifies it with a real token request (see `consent_checks`), retrying
//! while Entra propagates it, and the customer is "connecting" until then.
//! Microsoft's refusals are explained in plain words, with what to do.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use mailbridge_core::ids::EntraTenantId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    consent_checks, diagnosis,
    metrics::metrics,
    tenants::{self, Tenant},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    WebState, audit, connection, cookies, customers,
    error::{Error, Result},
    flows::{self, FlowKind, NewFlow},
    i18n::Tr,
    layout::Nav,
    roles::{Actor, Permission, Role},
    tr,
};

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/customers/{id}/connect", post(connect))
        .route("/consent/callback", get(callback))
        .route("/consent/done", get(done))
        .route("/consent/checks/{check}", get(check_status))
}

#[derive(Template, WebTemplate)]
#[template(path = "consent_done.html")]
struct DonePage {
    t: Tr,
    nav: Nav,
    check: Option<connection::CheckView>,
}

#[derive(Deserialize)]
struct DoneQuery {
    check: Option<Uuid>,
}

/// Where a customer's admin who followed a consent link lands: the consent is being
/// verified, and the page follows it (by the check's id, which only that admin's
/// browser was sent).
async fn done(
    State(state): State<WebState>,
    tr: Tr,
    Query(query): Query<DoneQuery>,
) -> Result<Response> {
    let check = match query.check {
        Some(id) => consent_checks::get(&state.pool, id)
            .await?
            .map(|c| connection::CheckView::of(&c, tr)),
        None => None,
    };
    Ok(DonePage {
        t: tr,
        nav: Nav::default(),
        check,
    }
    .into_response())
}

/// Where a consent check stands, for the page of whoever granted it (no customer
/// data: the state and, if it failed, the explanation).
async fn check_status(
    State(state): State<WebState>,
    tr: Tr,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let check = consent_checks::get(&state.pool, id)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(axum::Json(connection::CheckView::of(&check, tr).public()).into_response())
}

/// Starts an admin consent for customer `id`: the URL the customer's admin opens, and
/// the cookie binding it to this browser. `staff_id` is `None` for a link made by the
/// API (to be sent to the customer's admin): then `state` alone identifies it.
pub async fn start(state: &WebState, actor: &Actor, id: TenantId) -> Result<(String, String)> {
    start_flow(state, actor, id, actor.csrf.is_some()).await
}

/// Starts an admin consent, bound to this browser (`browser_bound`: staff connect the
/// customer themselves) or made to be sent to the customer's admin (then bound to
/// the customer's tenant and recorded as a consent link).
pub async fn start_flow(
    state: &WebState,
    actor: &Actor,
    id: TenantId,
    browser_bound: bool,
) -> Result<(String, String)> {
    actor.require(Permission::ManageCustomers)?;
    let tenant = customers::load(&state.pool, id).await?;
    // Only the app's client id, which is public: its credential is the workers'.
    let Some(client_id) = state.settings.m365.client_id.as_deref() else {
        return Err(Error::Conflict(tr!("mailbridge has no Entra app to connect customers with: set MAILBRIDGE_ENTRA_CLIENT_ID (and the app's secret or certificate for the workers).").into()));
    };
    let csrf_state = cookies::random_token();
    // A link that leaves the browser (made through the API, sent to the customer's
    // admin) is bound to the customer's tenant: without one, whoever holds the link
    // could answer for another customer's consented tenant.
    if !browser_bound && tenant.entra_tenant_id.is_none() {
        return Err(Error::Conflict(tr!("A consent link to send needs the customer's Microsoft 365 tenant id first (it is bound to that tenant): set it on the customer.").into()));
    }
    let cookie = flows::store(
        state,
        NewFlow {
            kind: FlowKind::Consent,
            csrf_state: &csrf_state,
            tenant_id: Some(tenant.id),
            staff_id: actor.staff_id.filter(|_| browser_bound),
            ..NewFlow::default()
        },
    )
    .await?;
    // Limited mode: a delegated Graph permission instead of `/.default`, so the
    // consent creates the app's service principal in the tenant without granting its
    // application permissions (Mail.Send for every mailbox); Exchange RBAC for
    // Applications then grants the sender mailbox alone.
    let limited = mailbridge_core::least_privilege::get(&state.pool, tenant.id)
        .await?
        .limited_on_graph(&tenant);
    let scope = consent_checks::needed_roles(&state.settings.m365, &tenant)
        .iter()
        .map(|(resource, _)| {
            if limited && *resource == state.settings.m365.graph_resource {
                format!("{resource}/User.Read")
            } else {
                format!("{resource}/.default")
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let authority = tenant
        .entra_tenant_id
        .map(|t| t.to_string())
        .unwrap_or_else(|| "organizations".to_owned());
    let mut url = url::Url::parse(&format!(
        "{}/{authority}/v2.0/adminconsent",
        state.settings.m365.login_url
    ))
    .map_err(|e| Error::Internal(e.to_string()))?;
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("scope", &scope)
        .append_pair("redirect_uri", &state.public_url("/consent/callback"))
        .append_pair("state", &csrf_state);
    if let (false, Some(entra_tenant)) = (browser_bound, tenant.entra_tenant_id) {
        crate::consent_link::record(state, actor, tenant.id, entra_tenant, &csrf_state).await?;
    }
    metrics().web.consents.with_label_values(&["started"]).inc();
    audit::record(
        &state.pool,
        actor,
        "customer.consent_started",
        Some(tenant.id),
        Some(&tenant.name),
        json!({ "authority": authority }),
    )
    .await?;
    Ok((url.to_string(), cookie))
}

async fn connect(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    let (url, cookie) = start(&state, &actor, id).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    tenant: Option<String>,
    admin_consent: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "consent_result.html")]
struct ResultPage {
    t: Tr,
    nav: Nav,
    tenant: Option<Tenant>,
    what: String,
    fix: String,
    detail: Option<String>,
}

/// What went wrong, in the words of the catalogue or of a diagnosis.
enum Why {
    Text(&'static str, &'static str),
    Diagnosed(&'static diagnosis::Diagnosis),
}

impl Why {
    fn texts(&self, tr: Tr) -> (String, String) {
        match self {
            Self::Text(what, fix) => (tr.t(what).to_owned(), tr.t(fix).to_owned()),
            Self::Diagnosed(d) => (d.title(tr.lang()).to_owned(), d.fix(tr.lang()).to_owned()),
        }
    }
}

/// A consent that did not work: counted, recorded where it belongs, and explained.
async fn refused(
    state: &WebState,
    tr: Tr,
    actor: Option<&Actor>,
    tenant: Option<Tenant>,
    why: Why,
    detail: Option<String>,
) -> Result<Response> {
    let (what, fix) = why.texts(tr);
    let english = why.texts(Tr::new(crate::i18n::Lang::En)).0;
    metrics().web.consents.with_label_values(&["failed"]).inc();
    if let (Some(actor), Some(tenant)) = (actor, &tenant) {
        audit::record(
            &state.pool,
            actor,
            "customer.consent_failed",
            Some(tenant.id),
            Some(&tenant.name),
            json!({ "reason": english, "detail": detail }),
        )
        .await?;
    }
    let clear = flows::clear_cookie(state);
    Ok((
        axum::http::StatusCode::BAD_REQUEST,
        [(header::SET_COOKIE, clear)],
        ResultPage {
            t: tr,
            nav: Nav::of(actor, "customers"),
            tenant,
            what,
            fix,
            detail,
        },
    )
        .into_response())
}

fn aadsts(description: &str) -> Option<u32> {
    let at = description.find("AADSTS")? + "AADSTS".len();
    description[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

async fn callback(
    State(state): State<WebState>,
    tr: Tr,
    headers: HeaderMap,
    actor: Option<Actor>,
    Query(query): Query<CallbackQuery>,
) -> Result<Response> {
    let actor = actor.as_ref();
    let Some(csrf_state) = query.state.as_deref() else {
        return refused(
            &state,
            tr,
            actor,
            None,
            Why::Text(
                tr!("Microsoft's answer carried no state, so it cannot be matched to a customer."),
                tr!("Start the connection again from the customer's page."),
            ),
            None,
        )
        .await;
    };
    let Some(flow) = flows::take(&state, &headers, FlowKind::Consent, csrf_state).await? else {
        return refused(&state, tr, actor, None,
            Why::Text(tr!("This consent answer has expired, was already used, or was not started by mailbridge."), tr!("Start the connection again from the customer's page.")), None).await;
    };
    if flow.stored.staff_id.is_none() {
        crate::consent_link::mark_used(&state.pool, csrf_state).await?;
    }
    let tenant = match flow.stored.tenant_id {
        Some(id) => tenants::get(&state.pool, id).await?,
        None => None,
    };
    let Some(tenant) = tenant else {
        return refused(
            &state,
            tr,
            actor,
            None,
            Why::Text(
                tr!("The customer this consent was for no longer exists."),
                tr!("Create the customer again and connect it."),
            ),
            None,
        )
        .await;
    };
    // Started in a browser by a member of staff: it must come back to that browser
    // and session.
    if flow.stored.staff_id.is_some()
        && (!flow.same_browser || actor.and_then(|a| a.staff_id) != flow.stored.staff_id)
    {
        return refused(
            &state,
            tr,
            actor,
            Some(tenant),
            Why::Text(
                tr!("This consent was started in another browser or by another person."),
                tr!("Start the connection again from the customer's page, in this browser."),
            ),
            None,
        )
        .await;
    }
    if let Some(error) = query.error.as_deref() {
        let description = query.error_description.clone().unwrap_or_default();
        let detail = Some(format!("{error}: {description}"));
        let why = match (error, aadsts(&description)) {
            ("access_denied" | "permission_denied", None | Some(65004)) => Why::Text(
                tr!("The customer's admin cancelled the consent."),
                tr!(
                    "Ask the customer's Global Administrator (or Privileged Role Administrator) to open the consent again and accept it."
                ),
            ),
            (_, Some(code)) => Why::Diagnosed(diagnosis::token(Some(code))),
            _ => Why::Text(
                tr!("Microsoft refused the consent."),
                tr!(
                    "Read Microsoft's answer below; the consent must be granted by an admin of the customer's tenant."
                ),
            ),
        };
        return refused(&state, tr, actor, Some(tenant), why, detail).await;
    }
    let Some(entra_tenant) = query
        .tenant
        .as_deref()
        .and_then(|t| t.parse::<EntraTenantId>().ok())
    else {
        return refused(
            &state,
            tr,
            actor,
            Some(tenant),
            Why::Text(
                tr!("Microsoft's answer did not name the customer's tenant."),
                tr!("Start the connection again from the customer's page."),
            ),
            query.admin_consent.map(|c| format!("admin_consent={c}")),
        )
        .await;
    };
    // A link made to be sent names the tenant; one that came back without it (or
    // from a flow no member of staff holds) is not bound and is refused.
    if tenant.entra_tenant_id.is_none() && flow.stored.staff_id.is_none() {
        return refused(
            &state,
            tr,
            actor,
            Some(tenant),
            Why::Text(
                tr!("This consent link was not bound to the customer's Microsoft 365 tenant."),
                tr!("Set the customer's tenant id, then make a new consent link."),
            ),
            Some(entra_tenant.to_string()),
        )
        .await;
    }
    if tenant
        .entra_tenant_id
        .is_some_and(|known| known != entra_tenant)
    {
        return refused(&state, tr, actor, Some(tenant),
            Why::Text(tr!("The consent was granted in a different Microsoft 365 tenant than this customer's."), tr!("Sign in to the consent page with an admin account of this customer's own tenant.")),
            Some(entra_tenant.to_string())).await;
    }
    let record_as = actor.cloned().unwrap_or_else(|| Actor {
        staff_id: None,
        label: "consent-link".into(),
        display_name: "consent link".into(),
        role: Role::Admin,
        client_addr: None,
        csrf: None,
        tr,
        customers: Default::default(),
    });
    // Verified by a worker, with the MSP app's credential, while Entra propagates it.
    let check = consent_checks::record(
        &state.pool,
        tenant.id,
        entra_tenant,
        &record_as.label,
        record_as.staff_id,
    )
    .await?;
    if flow.stored.staff_id.is_none() {
        crate::consent_link::mark_granted(&state.pool, csrf_state).await?;
    }
    metrics().web.consents.with_label_values(&["granted"]).inc();
    audit::record(
        &state.pool,
        &record_as,
        "customer.consent_granted",
        Some(tenant.id),
        Some(&tenant.name),
        json!({ "entra_tenant_id": entra_tenant, "check": check.id }),
    )
    .await?;
    let clear = flows::clear_cookie(&state);
    let target = if actor.is_some() {
        format!("/customers/{}?notice=connecting", tenant.id)
    } else {
        format!("/consent/done?check={}", check.id)
    };
    Ok(([(header::SET_COOKIE, clear)], Redirect::to(&target)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_codes_are_found_in_descriptions() {
        assert_eq!(aadsts("AADSTS65004: User declined to consent"), Some(65004));
        assert_eq!(aadsts("The admin canceled the request"), None);
    }
}
