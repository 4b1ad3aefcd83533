//! What every page shares: the page header ([`Nav`]: who is signed in, what they may
//! open), the error page a rejected request becomes ([`render_rejection`], used by the
//! pages' middleware), the page of someone waiting for approval, and the form fields
//! read the same way everywhere ([`checkbox`]). The templates themselves are in the
//! top-level `web/templates` (see `askama.toml`), `base.html` the frame of them all.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::{
    error::Rejection,
    i18n::Tr,
    roles::{Actor, Permission},
};

/// The page header: who is signed in and what they may open.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub signed_in: bool,
    pub name: String,
    pub email: String,
    pub role: &'static str,
    pub active: &'static str,
    pub csrf: String,
    pub can_audit: bool,
    pub can_staff: bool,
    pub can_tokens: bool,
}

impl Nav {
    pub fn of(actor: Option<&Actor>, active: &'static str) -> Self {
        match actor {
            Some(a) => Self {
                signed_in: true,
                name: a.display_name.clone(),
                email: a.label.clone(),
                role: a.role.label(),
                active,
                csrf: a.csrf().to_owned(),
                can_audit: a.may(Permission::ViewAudit),
                can_staff: a.may(Permission::InviteStaff),
                can_tokens: a.may(Permission::ManageApiTokens),
            },
            None => Self {
                active,
                ..Self::default()
            },
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub t: Tr,
    pub nav: Nav,
    pub status: u16,
    pub message: String,
    /// After a form: the page the form was on.
    pub form_page: Option<String>,
}

/// What someone waiting for approval sees instead of any page.
#[derive(Template, WebTemplate)]
#[template(path = "pending.html")]
pub struct PendingPage {
    t: Tr,
    nav: Nav,
}

impl PendingPage {
    pub fn of(actor: &Actor) -> Self {
        Self {
            t: actor.tr,
            nav: Nav::of(Some(actor), ""),
        }
    }
}

/// Renders a rejected response as a page (or, unauthenticated, a way to sign in);
/// any other response passes unchanged. `form_page`: after a form, the page it was
/// on, for the error page's way back.
pub fn render_rejection(
    tr: Tr,
    actor: Option<&Actor>,
    response: Response,
    method: &Method,
    uri: &Uri,
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
    let page = ErrorPage {
        t: tr,
        nav: Nav::of(actor, ""),
        status: rejection.status.as_u16(),
        message: rejection.translated(tr),
        form_page: form_page.map(str::to_owned),
    };
    (rejection.status, page).into_response()
}

/// A checkbox: an HTML form's (`on`), or a JSON boolean.
pub fn checkbox<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Value>::deserialize(d)? {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(Value::Text(t)) => Some(matches!(t.as_str(), "on" | "true" | "1" | "yes")),
    })
}
