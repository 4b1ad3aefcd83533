//! The sign-in and consent flows in flight, shared by `sign_in` (OpenID Connect) and
//! `consent` (the Entra admin consent): each is stored in PostgreSQL under the hash
//! of its `state` until its callback takes it (once), and bound to the browser that
//! started it by the flow cookie. A sign-in may take ten minutes; a consent link a
//! day, as it may be sent to the customer's admin.

use std::time::Duration;

use axum::http::HeaderMap;
use mailbridge_core::store::sign_in_flows;

use crate::{WebState, cookies, error::Result};

pub use sign_in_flows::{FlowKind, NewFlow};

/// How long a sign-in may take.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// How long a consent link stays valid: it may be sent to the customer's admin.
pub const CONSENT_LIFETIME: Duration = Duration::from_secs(86_400);

fn lifetime(kind: FlowKind) -> Duration {
    match kind {
        FlowKind::Consent => CONSENT_LIFETIME,
        FlowKind::SignIn => FLOW_LIFETIME,
    }
}

/// The flow cookie's name (`__Host-` over HTTPS).
fn cookie_name(state: &WebState) -> &'static str {
    cookies::flow_name(state.secure_cookies())
}

/// Stores a flow in flight; returns the cookie that binds it to the browser.
pub async fn store(state: &WebState, flow: NewFlow<'_>) -> Result<String> {
    sign_in_flows::store(&state.pool, &flow, CONSENT_LIFETIME).await?;
    Ok(cookies::set(
        cookie_name(state),
        flow.csrf_state,
        Some(lifetime(flow.kind).as_secs()),
        state.secure_cookies(),
    ))
}

/// A flow as stored, and whether the browser that brings it back is the one that
/// started it.
pub struct Flow {
    pub stored: sign_in_flows::Flow,
    pub same_browser: bool,
}

/// Takes the flow `csrf_state` names out of the store (it is single use), if it is
/// of `kind` and not older than its lifetime.
pub async fn take(
    state: &WebState,
    headers: &HeaderMap,
    kind: FlowKind,
    csrf_state: &str,
) -> Result<Option<Flow>> {
    let stored = sign_in_flows::take(&state.pool, csrf_state, kind, lifetime(kind)).await?;
    Ok(stored.map(|stored| Flow {
        stored,
        same_browser: cookies::get(headers, cookie_name(state)) == Some(csrf_state),
    }))
}

/// The `Set-Cookie` value that clears the flow cookie, once its callback came back.
pub fn clear_cookie(state: &WebState) -> String {
    cookies::set(cookie_name(state), "", Some(0), state.secure_cookies())
}
