//! Staff sign-in with OpenID Connect (authorization code flow with PKCE, `state` and
//! `nonce`), for Entra ID, Google, Keycloak or any provider with discovery.
//!
//! Entra's multi-tenant discovery (`…/organizations/v2.0`) names its issuer as the
//! template `https://login.microsoftonline.com/{tenantid}/v2.0`: the ID token's `iss`
//! is then compared with the template filled with the token's own `tid`, and `tid`
//! must be on the allow-list — Entra's keys are shared by every tenant, so a valid
//! signature alone proves nothing. The state is bound to the browser by a short
//! cookie as well as stored (hashed) in PostgreSQL (see `flows`), so a sign-in
//! cannot be finished in a browser that did not start it. A newcomer gets the role of their invitation
//! (matched on the address the provider names), or the owner's with a valid bootstrap
//! code, or else waits for approval without seeing any customer data.
//!
//! Longer than most modules because the OpenID Connect client (discovery, keys,
//! the ID token's checks) and the staff record a sign-in creates or approves
//! belong to one security-critical flow, kept readable in one place, with its tests.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, header},
    response::{AppendHeaders, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use mailbridge_core::{config::OidcSettings, store::staff};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, JsonWebKeySet, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
    core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::{
    WebState, audit, client_addr,
    error::{Error, Result},
    flows::{self, Flow, FlowKind, NewFlow},
    i18n::Tr,
    layout::Nav,
    roles::{Actor, Role},
    security::local_path,
    session, tr,
};

/// Discovery documents and keys are fetched again after this long.
const METADATA_LIFETIME: Duration = Duration::from_secs(3600);

type SignInClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// openidconnect's HTTP calls, made with the control plane's client (which trusts the
/// configured extra CA and follows no redirects).
async fn call(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(mailbridge_core::describe_error(&e)))?;
    let mut builder = axum::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| HttpError(e.to_string()))?;
    builder
        .body(body.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}

/// The configured provider and what its discovery said.
pub struct Provider {
    settings: Option<OidcSettings>,
    http: reqwest::Client,
    metadata: RwLock<Option<(Instant, CoreProviderMetadata)>>,
}

impl Provider {
    pub fn new(settings: Option<OidcSettings>, http: reqwest::Client) -> Self {
        Self {
            settings,
            http,
            metadata: RwLock::new(None),
        }
    }

    fn settings(&self) -> Result<&OidcSettings> {
        self.settings.as_ref().ok_or_else(|| {
            Error::Conflict(tr!("No sign-in provider is configured: set MAILBRIDGE_OIDC_ISSUER, MAILBRIDGE_OIDC_CLIENT_ID and MAILBRIDGE_OIDC_CLIENT_SECRET.").into())
        })
    }

    /// The provider's metadata and keys, fetched at most once an hour (or again when
    /// `refresh`: a token signed with a key we do not know yet).
    async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata> {
        if !refresh
            && let Some((at, metadata)) = self.metadata.read().await.as_ref()
            && at.elapsed() < METADATA_LIFETIME
        {
            return Ok(metadata.clone());
        }
        let settings = self.settings()?;
        let unreachable = |why: String| {
            tracing::warn!(issuer = %settings.issuer, error = %why, "sign-in provider discovery failed");
            Error::Internal(format!("the sign-in provider's discovery failed: {why}"))
        };
        let url = format!("{}/.well-known/openid-configuration", settings.issuer);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(mailbridge_core::describe_error(&e)))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("{url} answered {}", response.status())));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let metadata: CoreProviderMetadata =
            serde_json::from_slice(&bytes).map_err(|e| unreachable(e.to_string()))?;
        let issuer = metadata.issuer().as_str().trim_end_matches('/');
        if issuer != settings.issuer && !issuer.contains("{tenantid}") {
            return Err(unreachable(format!(
                "its issuer {issuer:?} is not the configured {:?}",
                settings.issuer
            )));
        }
        let http = self.http.clone();
        let client = move |request| call(http.clone(), request);
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &client)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let metadata = metadata.set_jwks(jwks);
        *self.metadata.write().await = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(&self, metadata: CoreProviderMetadata, redirect: &str) -> Result<SignInClient> {
        let settings = self.settings()?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(settings.client_id.clone()),
            Some(ClientSecret::new(
                settings.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(
            RedirectUrl::new(redirect.to_owned()).map_err(|e| Error::Internal(e.to_string()))?,
        ))
    }
}

/// Who the provider says signed in, after every check.
#[derive(Debug)]
struct Identity {
    issuer: String,
    subject: String,
    email: String,
    name: String,
}

/// The claims the library does not model that the checks need.
#[derive(Deserialize)]
struct ExtraClaims {
    iss: String,
    tid: Option<String>,
    preferred_username: Option<String>,
}

/// Entra's multi-tenant issuer template, filled with the token's tenant.
fn expected_issuer(template: &str, tid: Option<&str>) -> Option<String> {
    if template.contains("{tenantid}") {
        tid.map(|tid| template.replace("{tenantid}", tid))
    } else {
        Some(template.to_owned())
    }
}

/// Whether the allow-list lets this identity in. With Entra ID (`entra`: the issuer
/// is Entra's, or its tokens carry `tid`) the tenant must be allowed — and, when
/// domains are set too, the e-mail domain must match as well: Entra never verifies
/// its `email` claim, so a domain alone would admit any tenant's user. With another
/// provider the domain decides, and only for an address it says is verified.
fn allowed(
    settings: &OidcSettings,
    entra: bool,
    tid: Option<&str>,
    email: &str,
    email_verified: Option<bool>,
) -> bool {
    let tenant_ok = tid.is_some_and(|tid| {
        settings
            .allowed_tenants
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tid))
    });
    let domain_ok = email.rsplit_once('@').is_some_and(|(_, domain)| {
        settings
            .allowed_domains
            .iter()
            .any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain))
    });
    if entra {
        tenant_ok && (settings.allowed_domains.is_empty() || domain_ok)
    } else {
        domain_ok && email_verified == Some(true)
    }
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/sign-in", get(page))
        .route("/sign-in/start", get(start))
        .route("/sign-in/callback", get(callback))
        .route("/sign-out", post(sign_out))
}

#[derive(Template, WebTemplate)]
#[template(path = "sign_in.html")]
struct SignInPage {
    t: Tr,
    nav: Nav,
    next: String,
    configured: bool,
    problem: Option<String>,
    /// Nobody is owner yet: a bootstrap code may be entered.
    bootstrap: bool,
}

#[derive(Deserialize)]
struct PageQuery {
    next: Option<String>,
    /// A one-time bootstrap code (the first owner's sign-in).
    bootstrap: Option<String>,
}

async fn page(
    State(state): State<WebState>,
    tr: Tr,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    Ok(SignInPage {
        t: tr,
        nav: Nav::default(),
        next: local_path(query.next.as_deref()),
        configured: state.settings.web.oidc.is_some(),
        problem: None,
        bootstrap: crate::staff::bootstrap_open(&state.pool).await?,
    }
    .into_response())
}

fn problem_page(state: &WebState, tr: Tr, problem: String) -> Response {
    (
        axum::http::StatusCode::FORBIDDEN,
        SignInPage {
            t: tr,
            nav: Nav::default(),
            next: "/".into(),
            configured: state.settings.web.oidc.is_some(),
            problem: Some(problem),
            bootstrap: false,
        },
    )
        .into_response()
}

async fn start(
    State(state): State<WebState>,
    tr: Tr,
    Query(query): Query<PageQuery>,
    request: axum::extract::Request,
) -> Result<Response> {
    // Every start stores a flow (and may try a setup code): limited per address.
    if let Some(addr) = client_addr::of(request.extensions())
        && !state.sign_in_starts.allow(addr)
    {
        tracing::info!(%addr, "sign-in starts limited");
        return Err(Error::TooManyRequests);
    }
    let bootstrap_hash = match query.bootstrap.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(code) => match crate::staff::bootstrap_hash(&state.pool, code).await? {
            Some(hash) => Some(hash),
            None => {
                return Ok(problem_page(
                    &state,
                    tr,
                    tr.t(tr!("The setup code is wrong or has expired: the web's log shows the current one after a restart.")).into(),
                ));
            }
        },
    };
    let metadata = state.sign_in.metadata(false).await?;
    let client = state
        .sign_in
        .client(metadata, &state.public_url("/sign-in/callback"))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf_state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let return_to = local_path(query.next.as_deref());
    let cookie = flows::store(
        &state,
        NewFlow {
            kind: FlowKind::SignIn,
            csrf_state: csrf_state.secret(),
            nonce: Some(nonce.secret()),
            pkce_verifier: Some(verifier.secret()),
            return_to: Some(&return_to),
            bootstrap_hash: bootstrap_hash.as_deref(),
            ..NewFlow::default()
        },
    )
    .await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(state): State<WebState>,
    tr: Tr,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
    request: axum::extract::Request,
) -> Result<Response> {
    let clear_flow = flows::clear_cookie(&state);
    let Some(csrf_state) = query.state.as_deref() else {
        return Ok(problem_page(
            &state,
            tr,
            tr.t(tr!(
                "The sign-in answer carried no state. Start the sign-in again."
            ))
            .into(),
        ));
    };
    let Some(flow) = flows::take(&state, &headers, FlowKind::SignIn, csrf_state).await? else {
        return Ok(problem_page(
            &state,
            tr,
            tr.t(tr!(
                "This sign-in has expired or was already used. Start the sign-in again."
            ))
            .into(),
        ));
    };
    if !flow.same_browser {
        return Ok(problem_page(
            &state,
            tr,
            tr.t(tr!(
                "This sign-in was started in another browser. Start the sign-in again here."
            ))
            .into(),
        ));
    }
    if let Some(error) = &query.error {
        let description = query.error_description.as_deref().unwrap_or_default();
        tracing::info!(%error, description, "sign-in refused by the provider");
        let text = if error == "access_denied" {
            tr.t(tr!("The sign-in was cancelled.")).to_owned()
        } else {
            tr.fill(
                tr!("The sign-in provider refused: {}"),
                &format!("{error}: {description}"),
            )
        };
        return Ok(problem_page(&state, tr, text));
    }
    let Some(code) = query.code else {
        return Ok(problem_page(
            &state,
            tr,
            tr.t(tr!(
                "The sign-in answer carried no code. Start the sign-in again."
            ))
            .into(),
        ));
    };
    let identity = match verify(&state, code, &flow).await {
        Ok(identity) => identity,
        Err(why) => {
            tracing::warn!(error = %why, "sign-in refused");
            return Ok(problem_page(
                &state,
                tr,
                tr.fill(tr!("The sign-in could not be verified: {}"), &why),
            ));
        }
    };
    let addr = client_addr::of(request.extensions());
    let (staff_id, role) = match upsert_staff(
        &state,
        &identity,
        addr,
        flow.stored.bootstrap_hash.as_deref(),
    )
    .await?
    {
        Some(found) => found,
        None => {
            return Ok(problem_page(
                &state,
                tr,
                tr.t(tr!(
                    "Your account is disabled in mailbridge. Ask an owner to enable it."
                ))
                .into(),
            ));
        }
    };
    tracing::info!(email = %identity.email, role = role.as_str(), "staff signed in");
    let cookie = session::create(&state, staff_id, addr).await?;
    let target = local_path(flow.stored.return_to.as_deref());
    Ok((
        AppendHeaders([
            (header::SET_COOKIE, cookie),
            (header::SET_COOKIE, clear_flow),
        ]),
        Redirect::to(&target),
    )
        .into_response())
}

/// Redeems the code and checks the ID token; the reason in plain words if not.
async fn verify(state: &WebState, code: String, flow: &Flow) -> Result<Identity, String> {
    let provider = &state.sign_in;
    let settings = provider.settings().map_err(|e| e.to_string())?;
    let http = provider.http.clone();
    let http_client = move |request| call(http.clone(), request);
    let metadata = provider.metadata(false).await.map_err(|e| e.to_string())?;
    let template = metadata.issuer().as_str().trim_end_matches('/').to_owned();
    let client = provider
        .client(metadata, &state.public_url("/sign-in/callback"))
        .map_err(|e| e.to_string())?;
    let token = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .map_err(|e| e.to_string())?
        .set_pkce_verifier(PkceCodeVerifier::new(
            flow.stored.pkce_verifier.clone().unwrap_or_default(),
        ))
        .request_async(&http_client)
        .await
        .map_err(|e| match e {
            openidconnect::RequestTokenError::ServerResponse(r) => format!(
                "{}{}",
                r.error(),
                r.error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            other => other.to_string(),
        })?;
    let id_token = token.id_token().ok_or("the provider sent no ID token")?;
    let raw = id_token.to_string();
    let extra: ExtraClaims = raw
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or("the ID token is malformed")?;
    let multi_tenant = template.contains("{tenantid}");
    let verifier = client
        .id_token_verifier()
        .require_issuer_match(!multi_tenant);
    let nonce = Nonce::new(flow.stored.nonce.clone().unwrap_or_default());
    let claims = match id_token.claims(&verifier, &nonce) {
        Ok(claims) => claims,
        // Perhaps a key we do not know yet (the provider rotated its keys): they are
        // fetched again for the next sign-in; this code is spent.
        Err(openidconnect::ClaimsVerificationError::SignatureVerification(e)) => {
            let _ = provider.metadata(true).await;
            return Err(format!(
                "the ID token's signature could not be verified: {e}"
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    // Entra multi-tenant: the issuer must be the template with the token's tenant.
    let expected = expected_issuer(&template, extra.tid.as_deref())
        .ok_or("the ID token names no tenant (tid)")?;
    if extra.iss.trim_end_matches('/') != expected || claims.issuer().as_str() != extra.iss {
        return Err(format!(
            "the ID token's issuer {:?} is not {expected:?}",
            extra.iss
        ));
    }
    if claims.email_verified() == Some(false) {
        return Err("the provider says the e-mail address is not verified".into());
    }
    let email = claims
        .email()
        .map(|e| e.as_str().to_owned())
        .or(extra.preferred_username)
        .ok_or("the ID token carries no e-mail address")?
        .to_ascii_lowercase();
    let entra = settings.is_entra() || multi_tenant || extra.tid.is_some();
    if !allowed(
        settings,
        entra,
        extra.tid.as_deref(),
        &email,
        claims.email_verified(),
    ) {
        return Err(format!(
            "{email} (tenant {}) is not on mailbridge's allow-list (MAILBRIDGE_OIDC_ALLOWED_TENANTS / _DOMAINS)",
            extra.tid.as_deref().unwrap_or("–")
        ));
    }
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| email.clone());
    Ok(Identity {
        issuer: extra.iss,
        subject: claims.subject().as_str().to_owned(),
        email,
        name,
    })
}

/// Finds or creates the staff member. A newcomer (or someone still waiting) takes
/// the role of an invitation for their address, or becomes owner with a valid
/// bootstrap code while nobody is owner, or else waits for approval. `None` when
/// the account is disabled.
async fn upsert_staff(
    state: &WebState,
    identity: &Identity,
    addr: Option<IpAddr>,
    bootstrap: Option<&[u8]>,
) -> Result<Option<(Uuid, Role)>> {
    let mut tx = state.pool.begin().await?;
    staff::lock_sign_ins(&mut tx).await?;
    let existing = staff::by_subject(&mut tx, &identity.issuer, &identity.subject).await?;
    if existing.as_ref().is_some_and(|m| !m.enabled) {
        return Ok(None);
    }
    let waiting = existing.as_ref().is_none_or(|m| m.role == Role::Pending);
    // How a newcomer or someone waiting gets a role.
    let mut granted: Option<(Role, &str)> = None;
    if waiting {
        granted = staff::take_invitation(&mut *tx, &identity.email)
            .await?
            .filter(|r| *r != Role::Pending)
            .map(|r| (r, "invitation"));
        if granted.is_none()
            && let Some(hash) = bootstrap
            && staff::claim_bootstrap(&mut tx, hash).await?
        {
            granted = Some((Role::Owner, "bootstrap code"));
        }
    }
    let (id, role, created) = match existing {
        Some(member) => {
            let role = granted.map(|(r, _)| r).unwrap_or(member.role);
            staff::update_signed_in(&mut tx, member.id, &identity.email, &identity.name, role)
                .await?;
            (member.id, role, false)
        }
        None => {
            let role = granted.map(|(r, _)| r).unwrap_or(Role::Pending);
            let id = staff::insert_signed_in(
                &mut tx,
                &identity.issuer,
                &identity.subject,
                &identity.email,
                &identity.name,
                role,
            )
            .await?;
            (id, role, true)
        }
    };
    tx.commit().await?;
    let actor = Actor {
        staff_id: Some(id),
        label: identity.email.clone(),
        display_name: identity.name.clone(),
        role,
        client_addr: addr,
        csrf: None,
        tr: Tr::new(crate::i18n::Lang::En),
        customers: Default::default(),
    };
    let how = granted
        .map(|(_, how)| how)
        .unwrap_or("waiting for approval");
    if created {
        audit::record(
            &state.pool,
            &actor,
            "staff.create",
            None,
            Some(&identity.email),
            json!({ "role": role.as_str(), "by": how, "issuer": identity.issuer }),
        )
        .await?;
    } else if granted.is_some() {
        audit::record(
            &state.pool,
            &actor,
            "staff.approve",
            None,
            Some(&identity.email),
            json!({ "role": [Role::Pending.as_str(), role.as_str()], "by": how }),
        )
        .await?;
    }
    audit::record(&state.pool, &actor, "staff.sign_in", None, None, json!({})).await?;
    Ok(Some((id, role)))
}

async fn sign_out(
    State(state): State<WebState>,
    actor: Actor,
    headers: HeaderMap,
) -> Result<Response> {
    let cookie = session::end(&state, &headers).await?;
    audit::record(&state.pool, &actor, "staff.sign_out", None, None, json!({})).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tenants: &[&str], domains: &[&str]) -> OidcSettings {
        OidcSettings {
            issuer: "https://login.microsoftonline.com/organizations/v2.0".into(),
            client_id: "app".into(),
            client_secret: "s".to_owned().into(),
            allowed_tenants: tenants.iter().map(|t| t.to_string()).collect(),
            allowed_domains: domains.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn multi_tenant_issuer_is_filled_with_the_tokens_tenant() {
        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        assert_eq!(
            expected_issuer(template, Some("72f988bf-86f1-41af-91ab-2d7cd011db47")).unwrap(),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        );
        assert!(expected_issuer(template, None).is_none());
        assert_eq!(
            expected_issuer("https://accounts.google.com", None).unwrap(),
            "https://accounts.google.com"
        );
    }

    #[test]
    fn allow_list_is_tenant_and_domain_with_entra() {
        const MSP: &str = "11111111-1111-1111-1111-111111111111";
        const OTHER: &str = "22222222-2222-2222-2222-222222222222";
        let tenant_only = settings(&[MSP], &[]);
        assert!(allowed(
            &tenant_only,
            true,
            Some(MSP),
            "a@other.example",
            None
        ));
        assert!(!allowed(
            &tenant_only,
            true,
            Some(OTHER),
            "a@msp.example",
            None
        ));
        let both = settings(&[MSP], &["msp.example"]);
        assert!(allowed(&both, true, Some(MSP), "tech@MSP.example", None));
        assert!(
            !allowed(&both, true, Some(MSP), "guest@other.example", None),
            "the domain must match too"
        );
        assert!(
            !allowed(&both, true, Some(OTHER), "fake@msp.example", Some(true)),
            "another tenant's user with a matching address is refused"
        );
        assert!(!allowed(&both, true, None, "tech@msp.example", Some(true)));
        // Another provider: the domain, for a verified address only.
        let domains = settings(&[], &["msp.example"]);
        assert!(allowed(
            &domains,
            false,
            None,
            "tech@msp.example",
            Some(true)
        ));
        assert!(!allowed(&domains, false, None, "tech@msp.example", None));
        assert!(!allowed(
            &domains,
            false,
            None,
            "tech@msp.example",
            Some(false)
        ));
        assert!(!allowed(
            &domains,
            false,
            None,
            "a@evil.example",
            Some(true)
        ));
        assert!(!allowed(
            &settings(&[], &[]),
            false,
            None,
            "a@msp.example",
            Some(true)
        ));
    }

    #[test]
    fn only_local_paths_after_sign_in() {
        assert_eq!(
            local_path(Some("/messages?state=failed")),
            "/messages?state=failed"
        );
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("/%09/evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }
}
