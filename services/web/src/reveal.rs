//! The once-shown device password after a form (redirect-after-POST). Adding a
//! device or rotating its password answers with a redirect to the device's
//! credential page, a GET that can be reloaded or switched to another language
//! without re-sending the form. The password waits for that one view in a
//! `credential_reveals` row, sealed with a fresh key that only the browser that sent
//! the form holds (in a cookie scoped to the credential page): the row alone reveals
//! nothing, the cookie alone neither, and the URL carries no secret. The first view
//! deletes the row; an unused one expires after [`REVEAL_TTL_SECS`].

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use std::time::Duration;

use mailbridge_core::{
    crypto::MasterKey,
    devices::{Device, IssuedCredential},
    store::{api_tokens, secret_reveals},
    tenants::Tenant,
};
use uuid::Uuid;

use crate::{
    WebState, cookies, customers,
    error::{Error, Result},
    i18n::Tr,
    layout::Nav,
    roles::Actor,
};

/// How long an unviewed password waits for its page.
pub const REVEAL_TTL_SECS: u64 = 600;

/// The credential page of a device.
pub fn page_path(tenant_id: TenantId, device_id: DeviceId) -> String {
    format!("/customers/{tenant_id}/devices/{device_id}/credential")
}

/// The reveal cookie, scoped to the one page that reads it (`max_age` 0 deletes it).
fn cookie(state: &WebState, path: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = state.secure_cookies();
    let cookie = cookies::set_for_page(cookies::reveal_name(secure), path, value, max_age, secure);
    HeaderValue::from_str(&cookie).expect("a cookie of ids and base64 is a valid header")
}

fn context(reveal: Uuid, subject: Uuid) -> String {
    format!("credential-reveal:{reveal}:{subject}")
}

/// Keeps `issued`'s password for one view and redirects (303) to its page.
pub async fn stash(
    state: &WebState,
    actor: &Actor,
    issued: IssuedCredential,
    rotated: bool,
) -> Result<Response> {
    let page = page_path(issued.device.tenant_id, issued.device.id);
    keep(
        state,
        actor,
        issued.device.id.as_uuid(),
        &issued.password,
        rotated,
        &page,
    )
    .await
}

/// Keeps `secret` of `subject` (a device, an API token) for one view on `page`
/// and redirects (303) there.
pub async fn keep(
    state: &WebState,
    actor: &Actor,
    subject: Uuid,
    secret: &str,
    rotated: bool,
    page: &str,
) -> Result<Response> {
    let id = Uuid::new_v4();
    let key_text = MasterKey::generate_base64();
    let key = MasterKey::from_base64(&key_text).map_err(|e| Error::Internal(e.to_string()))?;
    let sealed = key.seal(&context(id, subject), secret.as_bytes());
    secret_reveals::keep(
        &state.pool,
        &secret_reveals::Kept {
            id,
            subject_id: subject,
            staff_id: actor.staff_id,
            rotated,
            sealed: &sealed,
            lifetime: Duration::from_secs(REVEAL_TTL_SECS),
        },
    )
    .await?;
    let mut response =
        (StatusCode::SEE_OTHER, [(header::LOCATION, page.to_owned())]).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(state, page, &format!("{id}.{key_text}"), REVEAL_TTL_SECS),
    );
    Ok(response)
}

/// Opens and deletes the secret of `subject` kept for this browser, if any, and
/// the cookie that deletes the key on `page`.
pub async fn take(
    state: &WebState,
    actor: &Actor,
    subject: Uuid,
    headers: &HeaderMap,
    page: &str,
) -> Result<(Option<(String, bool)>, HeaderValue)> {
    let forget = cookie(state, page, "", 0);
    let Some(value) = cookies::get(headers, cookies::reveal_name(state.secure_cookies())) else {
        return Ok((None, forget));
    };
    let Some((id, key_text)) = value.split_once('.') else {
        return Ok((None, forget));
    };
    let (Ok(id), Ok(key)) = (Uuid::parse_str(id), MasterKey::from_base64(key_text)) else {
        return Ok((None, forget));
    };
    let taken = secret_reveals::take(&state.pool, id, subject, actor.staff_id).await?;
    let secret = taken.and_then(|taken| {
        let secret = key.open(&context(id, subject), &taken.sealed).ok()?;
        Some((String::from_utf8(secret).ok()?, taken.rotated))
    });
    Ok((secret, forget))
}

/// The page that shows a password, once.
#[derive(Template, WebTemplate)]
#[template(path = "device_credential.html")]
struct CredentialPage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    device: Device,
    /// `None`: it was shown already (or never kept for this browser).
    password: Option<String>,
    rotated: bool,
}

/// The credential page: the password the first time, after that a note that it
/// was shown (a reload or a language switch does not re-send the form).
pub async fn page(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, device_id)): Path<(TenantId, DeviceId)>,
    headers: HeaderMap,
) -> Result<Response> {
    let tenant = customers::load(&state.pool, id).await?;
    let device = crate::devices::load(&state, id, device_id).await?;
    let (taken, forget) = take(
        &state,
        &actor,
        device.id.as_uuid(),
        &headers,
        &page_path(id, device_id),
    )
    .await?;
    let (password, rotated) = match taken {
        Some((password, rotated)) => (Some(password), rotated),
        None => (None, false),
    };
    let mut response = CredentialPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        tenant,
        device,
        password,
        rotated,
    }
    .into_response();
    response.headers_mut().insert(header::SET_COOKIE, forget);
    Ok(response)
}

/// The page of a new API token: the token the first time, after that the list.
pub async fn token_page(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response> {
    let page = token_page_path(id);
    let (taken, forget) = take(&state, &actor, id, &headers, &page).await?;
    let name = api_tokens::name(&state.pool, id).await?;
    let created = taken.zip(name).map(|((secret, _), name)| (name, secret));
    let mut response = crate::staff::tokens_view(&state, &actor, created).await?;
    response.headers_mut().insert(header::SET_COOKIE, forget);
    Ok(response)
}

/// The page a new API token is shown on.
pub fn token_page_path(id: Uuid) -> String {
    format!("/api-tokens/{id}/created")
}

pub fn router() -> axum::Router<WebState> {
    axum::Router::new()
        .route(
            "/customers/{id}/devices/{device}/credential",
            axum::routing::get(page),
        )
        .route("/api-tokens/{id}/created", axum::routing::get(token_page))
}
