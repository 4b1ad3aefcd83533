//! The consent link an MSP sends to its customer's admin ("Send to the customer's
//! admin"): made on the customer's page, bound to the customer's Microsoft 365
//! tenant (whoever holds the link can answer only for that tenant), single use and
//! valid for a day. The page shows it once with a copy button and a ready e-mail in
//! English and German; the customer's page then shows when each link was made,
//! until when it works, and whether and when it was used. Only the hash of a link's
//! state is kept, never the link.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{DateTime, Utc};
use mailbridge_core::ids::EntraTenantId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    i18n::{self, Lang},
    store::consent_links,
    tenants::{self, Tenant},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    WebState, audit, cookies, customers,
    error::{Error, Result},
    flows::CONSENT_LIFETIME,
    i18n::Tr,
    layout::Nav,
    roles::{Actor, Permission},
    tr,
};

pub use consent_links::SentLink;

/// Records a link made to be sent (its state hashed, as its flow keeps it).
pub async fn record(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    entra_tenant_id: EntraTenantId,
    csrf_state: &str,
) -> Result<()> {
    consent_links::record(
        &state.pool,
        &cookies::sha256(csrf_state),
        tenant_id,
        entra_tenant_id,
        &actor.label,
        CONSENT_LIFETIME,
    )
    .await?;
    Ok(())
}

/// The customer's admin came back through the link (whatever they answered).
pub async fn mark_used(pool: &PgPool, csrf_state: &str) -> Result<()> {
    consent_links::mark_used(pool, &cookies::sha256(csrf_state)).await?;
    Ok(())
}

/// The consent answered through the link was granted.
pub async fn mark_granted(pool: &PgPool, csrf_state: &str) -> Result<()> {
    consent_links::mark_granted(pool, &cookies::sha256(csrf_state)).await?;
    Ok(())
}

/// The customer's latest links, newest first.
pub async fn latest(pool: &PgPool, tenant_id: TenantId) -> Result<Vec<SentLink>> {
    Ok(consent_links::latest(pool, tenant_id, 3).await?)
}

/// What making a link takes: the customer's tenant id, when it is not known yet.
#[derive(Debug, Default, Deserialize)]
pub struct LinkInput {
    #[serde(default)]
    pub entra_tenant_id: Option<String>,
}

/// Makes a consent link to send to the customer's admin. A customer whose tenant id
/// is not known yet gets it from `input` first (a link to send must be bound to it).
pub async fn make(
    state: &WebState,
    actor: &Actor,
    id: TenantId,
    input: &LinkInput,
) -> Result<(Tenant, String)> {
    actor.require(Permission::ManageCustomers)?;
    let mut tenant = customers::load(&state.pool, id).await?;
    let given = input
        .entra_tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let (None, Some(text)) = (tenant.entra_tenant_id, given) {
        let entra = text.parse::<EntraTenantId>().map_err(|_| {
            Error::Invalid(
                tr!("The Entra tenant ID is a GUID (Entra admin center → Overview → Tenant ID).")
                    .into(),
            )
        })?;
        let bound = tenants::bind_entra_tenant(&state.pool, id, entra)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(
                    tr!("Another customer is already connected to this Microsoft 365 tenant.")
                        .into(),
                ),
                _ => Error::from(e),
            })?;
        if bound {
            audit::record(
                &state.pool,
                actor,
                "customer.update",
                Some(id),
                Some(&tenant.name),
                json!({ "entra_tenant_id": [Value::Null, entra] }),
            )
            .await?;
        }
        tenant = customers::load(&state.pool, id).await?;
    }
    let (url, _cookie) = crate::consent::start_flow(state, actor, id, false).await?;
    Ok((tenant, url))
}

/// The e-mail the MSP pastes into its mail program, in one language.
#[derive(Debug, Clone)]
pub struct MailText {
    pub subject: String,
    pub body: String,
}

/// The ready e-mail to the customer's admin in English and German.
pub fn mail_texts(
    tenant: &Tenant,
    url: &str,
    expires_at: DateTime<Utc>,
    from: &str,
) -> (MailText, MailText) {
    let text = |lang: Lang| {
        let expires = expires_at
            .format(i18n::translate(lang, "%Y-%m-%d %H:%M UTC"))
            .to_string();
        let values: [(&str, &dyn std::fmt::Display); 5] = [
            ("customer", &tenant.name),
            ("mailbox", &tenant.sender_mailbox),
            ("url", &url),
            ("expires", &expires),
            ("from", &from),
        ];
        MailText {
            subject: i18n::format(
                lang,
                "Please allow mailbridge to send mail for {customer} (Microsoft 365 admin consent)",
                &values,
            ),
            body: i18n::format(
                lang,
                "Hello,\n\
         \n\
         your scanners, printers and other devices will soon no longer be able to send e-mail with a password directly through Microsoft 365 (Microsoft is switching off basic authentication). We relay them through mailbridge, which sends as your mailbox {mailbox} with Microsoft's modern sign-in instead.\n\
         \n\
         For that, a Global Administrator (or Privileged Role Administrator) of your Microsoft 365 organisation must agree once. Please open this link, sign in with such an administrator account of your own organisation and select \"Accept\":\n\
         \n\
         {url}\n\
         \n\
         The link works once, until {expires}. It grants permission to send mail only; it does not give anyone your password, and you can remove it at any time under Microsoft Entra admin center > Enterprise applications.\n\
         \n\
         If you have questions, just reply to this e-mail.\n\
         \n\
         Kind regards\n\
         {from}\n\
         ",
                &values,
            ),
        }
    };
    (text(Lang::En), text(Lang::De))
}

pub fn router() -> Router<WebState> {
    Router::new().route("/customers/{id}/consent-link", post(make_form))
}

/// The page that shows a link to send, once.
#[derive(Template, WebTemplate)]
#[template(path = "consent_link.html")]
struct LinkPage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    url: String,
    expires_at: DateTime<Utc>,
    en: MailText,
    de: MailText,
}

async fn make_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(input): Form<LinkInput>,
) -> Result<Response> {
    let (tenant, url) = make(&state, &actor, id, &input).await?;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(CONSENT_LIFETIME).unwrap_or(chrono::Duration::days(1));
    let (en, de) = mail_texts(&tenant, &url, expires_at, &actor.display_name);
    Ok(LinkPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        tenant,
        url,
        expires_at,
        en,
        de,
    }
    .into_response())
}
