//! Browser sessions of MSP staff (kept in PostgreSQL; the cookie holds only a random
//! id whose SHA-256 is stored), and the pages' middleware ([`authenticate`]) that runs
//! before every page: it finds the session and the language, keeps the actor to the
//! customers they may see, refuses a POST that fails the CSRF check, keeps someone
//! waiting for approval on that page, and renders errors as pages.

use std::net::IpAddr;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use mailbridge_core::store::sessions;
use uuid::Uuid;

use crate::{
    WebState, client_addr, cookies, csrf,
    error::Error,
    i18n::{self, Tr},
    landing,
    layout::{self, PendingPage},
    roles::{Actor, CustomerScope, Role, customer_in_path},
};

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
    let id = cookies::random_token();
    sessions::start(
        &state.pool,
        &cookies::sha256(&id),
        staff_id,
        &cookies::random_token(),
        addr.map(ipnet::IpNet::from),
        lifetimes(state),
    )
    .await?;
    Ok(cookies::set(
        cookies::session_name(state.secure_cookies()),
        &id,
        None,
        state.secure_cookies(),
    ))
}

/// Ends the session the request carries; returns the cookie that clears it.
pub async fn end(state: &WebState, headers: &HeaderMap) -> Result<String, Error> {
    let name = cookies::session_name(state.secure_cookies());
    if let Some(id) = cookies::get(headers, name) {
        sessions::end(&state.pool, &cookies::sha256(id)).await?;
    }
    Ok(cookies::set(name, "", Some(0), state.secure_cookies()))
}

/// The signed-in staff member of a request, if its session is alive.
async fn find_session(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<sessions::Session>, sqlx::Error> {
    let Some(id) = cookies::get(headers, cookies::session_name(state.secure_cookies())) else {
        return Ok(None);
    };
    sessions::find(&state.pool, &cookies::sha256(id), lifetimes(state)).await
}

/// The pages' middleware: session, language, CSRF, and errors rendered as pages.
pub async fn authenticate(State(state): State<WebState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let tr = Tr::new(i18n::negotiate(&parts.headers));
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    // An error after a form leads back to the page the form was on.
    let form_page =
        (method == Method::POST).then(|| landing::form_page(&parts.headers, uri.path()));
    let render = |actor: Option<&Actor>, response: Response| {
        layout::render_rejection(tr, actor, response, &method, &uri, form_page.as_deref())
    };
    parts.extensions.insert(tr);
    let session = match find_session(&state, &parts.headers).await {
        Ok(session) => session,
        Err(e) => return render(None, Error::Database(e).into_response()),
    };
    let addr = client_addr::of(&parts.extensions);
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
    if let (Some(actor), Some(customer)) = (&actor, customer_in_path(uri.path()))
        && !actor.sees(customer)
    {
        return render(Some(actor), Error::NotFound.into_response());
    }
    let mut body = Body::new(body);
    if method == Method::POST {
        let Some(actor) = &actor else {
            return render(None, Error::Unauthenticated.into_response());
        };
        match csrf::check_form(&state.settings.web.public_url, &parts.headers, body, actor).await {
            Ok(bytes) => body = Body::from(bytes),
            Err(e) => return render(Some(actor), e.into_response()),
        }
    }
    if let Some(actor) = &actor {
        // Someone waiting for approval sees that page and can sign out, nothing else.
        let path = uri.path();
        let open =
            path == "/sign-out" || path.starts_with("/sign-in") || path.starts_with("/lang/");
        if actor.role == Role::Pending && !open {
            let status = if path == "/" {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            return (status, PendingPage::of(actor)).into_response();
        }
        parts.extensions.insert(actor.clone());
    }
    let response = next.run(Request::from_parts(parts, body)).await;
    render(actor.as_ref(), response)
}
