//! Who is asking: browser sessions of MSP staff (kept in PostgreSQL, the cookie holds
//! only a random id whose SHA-256 is stored), their roles and what each role may do,
//! and the CSRF check every state-changing form passes. The pages' middleware
//! ([`authenticate`]) runs before every page: it finds the session and language,
//! refuses a POST without the session's CSRF token, and renders errors as pages.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mailbridge_core::store::sessions;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    WebState,
    error::{Error, Rejection},
    i18n::{self, Lang, Tr},
};

/// The largest form the control plane reads.
const MAX_FORM_BYTES: usize = 256 * 1024;
/// A `multipart/form-data` upload: the largest report file and its form.
const MAX_UPLOAD_BYTES: usize = mailbridge_core::smtp_auth_report::MAX_FILE_BYTES + 64 * 1024;

/// The boundary of a `multipart/form-data` request.
fn multipart_boundary(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let (kind, params) = value.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// The value of the small text part `name` of a multipart body.
fn multipart_text_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    let wanted = format!("name=\"{name}\"");
    let text = String::from_utf8_lossy(body);
    text.split(delimiter.as_str()).find_map(|part| {
        let (head, value) = part.split_once("\r\n\r\n")?;
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let is_it = disposition.split(';').any(|p| p.trim() == wanted);
        (is_it && !disposition.contains("filename="))
            .then(|| value.strip_suffix("\r\n").unwrap_or(value).to_owned())
    })
}

pub use mailbridge_core::store::staff::{Permission, Role};

/// The customers a staff member may see. Owners and admins see all; a technician or
/// read-only member limited to assigned customers sees only those, everywhere: lists,
/// pages, the API (with their tokens) — anything else answers "not found".
#[derive(Debug, Clone, Default)]
pub enum CustomerScope {
    #[default]
    All,
    Only(Arc<[Uuid]>),
}

impl CustomerScope {
    /// From the database: `None` for all customers, else the assigned ones.
    pub fn from_assigned(assigned: Option<Vec<Uuid>>) -> Self {
        match assigned {
            None => Self::All,
            Some(ids) => Self::Only(ids.into()),
        }
    }

    pub fn sees(&self, tenant_id: Uuid) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(&tenant_id),
        }
    }

    /// The assigned customers, or `None` for all.
    pub fn only(&self) -> Option<&[Uuid]> {
        match self {
            Self::All => None,
            Self::Only(ids) => Some(ids),
        }
    }
}

/// The customer a path is about (`/customers/{id}…`, `/api/v1/customers/{id}…`),
/// percent-decoded as the router decodes it, so no spelling of an id slips past.
pub fn customer_in_path(path: &str) -> Option<Uuid> {
    let rest = path
        .strip_prefix("/api/v1/customers/")
        .or_else(|| path.strip_prefix("/customers/"))?;
    let segment = rest.split('/').next()?;
    let decoded: String = url::form_urlencoded::parse(segment.as_bytes())
        .map(|(key, _)| key.into_owned())
        .next()?;
    Uuid::parse_str(&decoded).ok()
}

/// Who makes a request: a signed-in staff member or an API token.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The staff member (for an API token: who created it, if still there).
    pub staff_id: Option<Uuid>,
    /// As the audit log names them: an e-mail address, or `api-token:<name>`.
    pub label: String,
    pub display_name: String,
    pub role: Role,
    pub client_addr: Option<IpAddr>,
    /// The session's CSRF token (browser sessions only).
    pub csrf: Option<String>,
    pub tr: Tr,
    /// The customers this actor may see.
    pub customers: CustomerScope,
}

impl Actor {
    /// Refuses what the actor's role does not allow.
    pub fn require(&self, what: Permission) -> Result<(), Error> {
        if self.role.may(what) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    pub fn may(&self, what: Permission) -> bool {
        self.role.may(what)
    }

    /// Whether the actor may see the customer `tenant_id` (and all that is its).
    pub fn sees(&self, tenant_id: Uuid) -> bool {
        self.customers.sees(tenant_id)
    }

    /// The CSRF token forms of this session carry.
    pub fn csrf(&self) -> &str {
        self.csrf.as_deref().unwrap_or_default()
    }
}

impl FromRequestParts<WebState> for Actor {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &WebState) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or(Error::Unauthenticated)
    }
}

impl axum::extract::OptionalFromRequestParts<WebState> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &WebState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Actor>().cloned())
    }
}

/// The language of a request, signed in or not.
impl FromRequestParts<WebState> for Tr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &WebState) -> Result<Self, Error> {
        Ok(parts
            .extensions
            .get::<Tr>()
            .copied()
            .unwrap_or(Tr::new(Lang::En)))
    }
}

/// The client's address: the TCP peer, or the address a trusted proxy forwarded
/// (see [`crate::client_addr`]).
pub fn client_addr(parts_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    parts_extensions
        .get::<crate::client_addr::ClientAddr>()
        .map(|c| c.0)
        .or_else(|| {
            parts_extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical())
        })
}

pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-mailbridge_session"
    } else {
        "mailbridge_session"
    }
}

/// The cookie that binds a sign-in or consent flow to the browser that started it.
/// Over HTTPS it carries the `__Host-` prefix like the session's: the browser then
/// accepts it only `Secure`, for `Path=/` and without `Domain`, so a sibling host
/// cannot plant or overwrite it.
pub fn flow_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-mailbridge_flow"
    } else {
        "mailbridge_flow"
    }
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the sign-in and consent callbacks
/// are top-level navigations from Microsoft), Secure over HTTPS; always `Path=/` and
/// never `Domain`, as a `__Host-` name requires.
pub fn set_cookie(name: &str, value: &str, max_age_secs: Option<u64>, secure: bool) -> String {
    debug_assert!(
        secure || !name.starts_with("__Host-"),
        "a __Host- cookie must be Secure"
    );
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age_secs {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub use mailbridge_core::store::secret_hash as sha256;

/// How long the settings let sessions live.
fn lifetimes(state: &WebState) -> sessions::Lifetimes {
    sessions::Lifetimes {
        idle: state.settings.web.session_idle,
        max: state.settings.web.session_max,
    }
}

/// Starts a session for `staff_id`; returns the cookie to set.
pub async fn create(
    state: &WebState,
    staff_id: Uuid,
    addr: Option<IpAddr>,
) -> Result<String, Error> {
    let id = random_token();
    sessions::start(
        &state.pool,
        &sha256(&id),
        staff_id,
        &random_token(),
        addr.map(ipnet::IpNet::from),
        lifetimes(state),
    )
    .await?;
    Ok(set_cookie(
        session_cookie_name(state.secure_cookies()),
        &id,
        None,
        state.secure_cookies(),
    ))
}

/// Ends the session the request carries; returns the cookie that clears it.
pub async fn end(state: &WebState, headers: &HeaderMap) -> Result<String, Error> {
    let name = session_cookie_name(state.secure_cookies());
    if let Some(id) = cookie(headers, name) {
        sessions::end(&state.pool, &sha256(id)).await?;
    }
    Ok(set_cookie(name, "", Some(0), state.secure_cookies()))
}

/// The signed-in staff member of a request, if its session is alive.
async fn find_session(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<sessions::Session>, sqlx::Error> {
    let Some(id) = cookie(headers, session_cookie_name(state.secure_cookies())) else {
        return Ok(None);
    };
    sessions::find(&state.pool, &sha256(id), lifetimes(state)).await
}

/// Whether a state-changing request comes from our own pages: `Origin` (or, without
/// it, `Referer`) must name the control plane, when the browser sends either.
fn same_origin(state: &WebState, headers: &HeaderMap) -> bool {
    let public = state.settings.web.public_url.trim_end_matches('/');
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let matches = |origin: &str| {
        origin == public
            || host.is_some_and(|h| {
                origin == format!("http://{h}") || origin == format!("https://{h}")
            })
    };
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some("null") => false,
        Some(origin) => matches(origin),
        None => match headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
            Some(referer) => url::Url::parse(referer)
                .ok()
                .map(|u| u.origin().ascii_serialization())
                .is_some_and(|o| matches(&o)),
            None => true,
        },
    }
}

/// The pages' middleware: session, language, CSRF, and errors rendered as pages.
pub async fn authenticate(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let tr = Tr::new(i18n::negotiate(&parts.headers));
    // An error after a form leads back to the page the form was on.
    let form_page = (parts.method == Method::POST)
        .then(|| crate::landing::form_page(&parts.headers, parts.uri.path()));
    parts.extensions.insert(tr);
    let session = match find_session(&state, &parts.headers).await {
        Ok(session) => session,
        Err(e) => {
            return render(
                tr,
                None,
                Error::Database(e).into_response(),
                &parts.method,
                &parts.uri,
                form_page.as_deref(),
            );
        }
    };
    let addr = client_addr(&parts.extensions);
    let actor = session.map(|s| Actor {
        staff_id: Some(s.staff_id),
        label: s.email,
        display_name: s.display_name,
        role: s.role,
        client_addr: addr,
        csrf: Some(s.csrf_token),
        tr,
        customers: CustomerScope::from_assigned(s.customers),
    });
    if let (Some(actor), Some(customer)) = (&actor, customer_in_path(parts.uri.path()))
        && !actor.sees(customer)
    {
        return render(
            tr,
            Some(actor),
            Error::NotFound.into_response(),
            &parts.method,
            &parts.uri,
            form_page.as_deref(),
        );
    }
    let mut body = Body::new(body);
    if parts.method == Method::POST {
        let Some(actor) = &actor else {
            return render(
                tr,
                None,
                Error::Unauthenticated.into_response(),
                &parts.method,
                &parts.uri,
                form_page.as_deref(),
            );
        };
        // A file upload (the migration board's report) carries its token as a part.
        let boundary = multipart_boundary(&parts.headers);
        let limit = if boundary.is_some() {
            MAX_UPLOAD_BYTES
        } else {
            MAX_FORM_BYTES
        };
        let bytes = match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return render(
                    tr,
                    Some(actor),
                    Error::Invalid("The form is too large.".into()).into_response(),
                    &parts.method,
                    &parts.uri,
                    form_page.as_deref(),
                );
            }
        };
        let token = match &boundary {
            Some(boundary) => multipart_text_field(&bytes, boundary, "csrf"),
            None => url::form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned()),
        };
        let token_ok = token.is_some_and(|t| {
            // Compared in constant time: the token is a secret of the session.
            let (a, b) = (Sha256::digest(t.as_bytes()), Sha256::digest(actor.csrf()));
            a == b
        });
        if !token_ok || !same_origin(&state, &parts.headers) {
            return render(
                tr,
                Some(actor),
                Error::Csrf.into_response(),
                &parts.method,
                &parts.uri,
                form_page.as_deref(),
            );
        }
        body = Body::from(bytes);
    }
    if let Some(actor) = &actor {
        // Someone waiting for approval sees that page and can sign out, nothing else.
        let path = parts.uri.path();
        let open =
            path == "/sign-out" || path.starts_with("/sign-in") || path.starts_with("/lang/");
        if actor.role == Role::Pending && !open {
            let status = if path == "/" {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            return (status, crate::staff::PendingPage::of(actor)).into_response();
        }
        parts.extensions.insert(actor.clone());
    }
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    render(
        tr,
        actor.as_ref(),
        response,
        &method,
        &uri,
        form_page.as_deref(),
    )
}

/// Renders a rejected response as a page (or, unauthenticated, a way to sign-in).
fn render(
    tr: Tr,
    actor: Option<&Actor>,
    response: Response,
    method: &Method,
    uri: &axum::http::Uri,
    form_page: Option<&str>,
) -> Response {
    let Some(rejection) = response.extensions().get::<Rejection>().cloned() else {
        return response;
    };
    if rejection.status == StatusCode::UNAUTHORIZED {
        let next = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let target = if method == Method::GET {
            format!(
                "/sign-in?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            )
        } else {
            "/sign-in".to_owned()
        };
        return Redirect::to(&target).into_response();
    }
    let page = crate::customers::ErrorPage {
        t: tr,
        nav: crate::customers::Nav::of(actor, ""),
        status: rejection.status.as_u16(),
        message: rejection.translated(tr),
        form_page: form_page.map(str::to_owned),
    };
    (rejection.status, page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_of_a_path_however_it_is_spelt() {
        let id = Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        for path in [
            "/customers/67e55044-10b1-426f-9247-bb680e5fe0c8",
            "/customers/67E55044-10B1-426F-9247-BB680E5FE0C8/devices",
            "/api/v1/customers/67e55044-10b1-426f-9247-bb680e5fe0c8/test-message",
            "/customers/%36%37e55044-10b1-426f-9247-bb680e5fe0c8/board",
            "/customers/67e5504410b1426f9247bb680e5fe0c8",
        ] {
            assert_eq!(customer_in_path(path), Some(id), "{path}");
        }
        assert_eq!(customer_in_path("/customers"), None);
        assert_eq!(
            customer_in_path("/messages/67e55044-10b1-426f-9247-bb680e5fe0c8"),
            None
        );
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Owner.may(Permission::ManageStaff));
        assert!(!Role::Admin.may(Permission::ManageStaff));
        assert!(Role::Admin.may(Permission::ManageCustomers));
        assert!(!Role::Technician.may(Permission::ManageCustomers));
        assert!(Role::Technician.may(Permission::ManageDevices));
        assert!(!Role::Readonly.may(Permission::ManageDevices));
        assert!(Role::Readonly.may(Permission::View));
        assert!(Role::Admin.may(Permission::InviteStaff));
        assert!(!Role::Technician.may(Permission::InviteStaff));
        assert!(
            !Role::Pending.may(Permission::View),
            "waiting: sees nothing"
        );
        assert_eq!(Role::parse("pending"), Some(Role::Pending));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "xmailbridge_session=evil; mailbridge_session=abc; other=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&headers, "mailbridge_session"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        let set = set_cookie("__Host-mailbridge_session", "v", None, true);
        assert!(set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Lax"));
    }

    #[test]
    fn cookies_over_https_carry_the_host_prefix() {
        for (name, secure) in [
            (session_cookie_name(true), true),
            (flow_cookie_name(true), true),
        ] {
            assert!(name.starts_with("__Host-"), "{name}");
            let set = set_cookie(name, "v", Some(600), secure);
            assert!(
                set.contains("; Secure") && set.contains("; Path=/;"),
                "{set}"
            );
            assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
        }
        assert!(!flow_cookie_name(false).starts_with("__Host-"));
        assert!(!session_cookie_name(false).starts_with("__Host-"));
    }
}
