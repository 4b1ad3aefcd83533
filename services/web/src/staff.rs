//! MSP staff and API tokens. Owners give staff their roles and disable accounts (an
//! owner cannot demote or disable themselves, so there is always one). Admins create
//! API tokens for automation — scoped to a role no higher than their own, shown once,
//! stored as a SHA-256 hash, revocable — and the API authenticates with them.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{
    WebState, audit,
    customers::Nav,
    error::{Error, Result},
    i18n::Tr,
    session::{self, Actor, Permission, Role},
    tr,
};

/// API tokens start with this, so that secret scanners recognise them.
pub const TOKEN_PREFIX: &str = "mbt_";

#[derive(Debug, Serialize, FromRow)]
pub struct StaffMember {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl StaffMember {
    pub fn role_label(&self) -> &'static str {
        Role::parse(&self.role).unwrap_or(Role::Readonly).label()
    }
}

#[derive(Debug, Serialize, FromRow)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub token_prefix: String,
    pub role: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn list_staff(state: &WebState) -> Result<Vec<StaffMember>> {
    Ok(sqlx::query_as(
        "SELECT id, email, display_name, role, enabled, created_at, last_sign_in_at
           FROM staff ORDER BY email",
    )
    .fetch_all(&state.pool)
    .await?)
}

/// Changes a staff member's role and whether they may sign in.
pub async fn change_staff(
    state: &WebState,
    actor: &Actor,
    id: Uuid,
    role: Role,
    enabled: bool,
) -> Result<()> {
    actor.require(Permission::ManageStaff)?;
    if actor.staff_id == Some(id) && (role != Role::Owner || !enabled) {
        return Err(Error::Conflict(
            tr!("You cannot demote or disable yourself: another owner has to.").into(),
        ));
    }
    let before: Option<(String, String, bool)> = sqlx::query_as(
        "UPDATE staff s SET role = $2, enabled = $3 FROM staff old
          WHERE s.id = $1 AND old.id = s.id RETURNING s.email, old.role, old.enabled",
    )
    .bind(id)
    .bind(role.as_str())
    .bind(enabled)
    .fetch_optional(&state.pool)
    .await?;
    let (email, old_role, old_enabled) = before.ok_or(Error::NotFound)?;
    if !enabled {
        sqlx::query("DELETE FROM web_sessions WHERE staff_id = $1")
            .bind(id)
            .execute(&state.pool)
            .await?;
    }
    audit::record(
        &state.pool,
        actor,
        "staff.update",
        None,
        Some(&email),
        json!({ "role": [old_role, role.as_str()], "enabled": [old_enabled, enabled] }),
    )
    .await?;
    Ok(())
}

pub async fn list_tokens(state: &WebState) -> Result<Vec<ApiToken>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.name, t.token_prefix, t.role, s.email AS created_by, t.created_at,
                t.last_used_at, t.revoked_at
           FROM api_tokens t LEFT JOIN staff s ON s.id = t.created_by
          ORDER BY t.revoked_at IS NOT NULL, t.created_at DESC",
    )
    .fetch_all(&state.pool)
    .await?)
}

/// Creates an API token; returns it in clear, this once.
pub async fn create_token(
    state: &WebState,
    actor: &Actor,
    name: &str,
    role: Role,
) -> Result<(ApiToken, String)> {
    actor.require(Permission::ManageApiTokens)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::Invalid(
            tr!("The name must be 1 to 200 characters.").into(),
        ));
    }
    if role == Role::Owner || role < actor.role {
        return Err(Error::Invalid(
            tr!("A token's role can be admin, technician or read-only, and not above your own.")
                .into(),
        ));
    }
    let secret = format!("{TOKEN_PREFIX}{}", session::random_token());
    let token: ApiToken = sqlx::query_as(
        "WITH t AS (
            INSERT INTO api_tokens (name, token_hash, token_prefix, role, created_by)
            VALUES ($1, $2, $3, $4, $5) RETURNING *)
         SELECT t.id, t.name, t.token_prefix, t.role, s.email AS created_by, t.created_at,
                t.last_used_at, t.revoked_at
           FROM t LEFT JOIN staff s ON s.id = t.created_by",
    )
    .bind(name)
    .bind(session::sha256(&secret))
    .bind(&secret[..TOKEN_PREFIX.len() + 6])
    .bind(role.as_str())
    .bind(actor.staff_id)
    .fetch_one(&state.pool)
    .await?;
    audit::record(
        &state.pool,
        actor,
        "api_token.create",
        None,
        Some(name),
        json!({ "token_id": token.id, "role": role.as_str() }),
    )
    .await?;
    Ok((token, secret))
}

pub async fn revoke_token(state: &WebState, actor: &Actor, id: Uuid) -> Result<()> {
    actor.require(Permission::ManageApiTokens)?;
    let name: Option<String> = sqlx::query_scalar(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING name",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let name = name.ok_or(Error::NotFound)?;
    audit::record(
        &state.pool,
        actor,
        "api_token.revoke",
        None,
        Some(&name),
        json!({ "token_id": id }),
    )
    .await?;
    Ok(())
}

/// The actor an API token stands for, if it is valid and not revoked.
pub async fn authenticate_token(
    state: &WebState,
    secret: &str,
    client_addr: Option<std::net::IpAddr>,
    tr: Tr,
) -> Result<Option<Actor>> {
    if !secret.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let found: Option<(String, String, Option<Uuid>)> = sqlx::query_as(
        "UPDATE api_tokens SET last_used_at = now()
          WHERE token_hash = $1 AND revoked_at IS NULL
      RETURNING name, role, created_by",
    )
    .bind(session::sha256(secret))
    .fetch_optional(&state.pool)
    .await?;
    Ok(found.map(|(name, role, created_by)| Actor {
        staff_id: created_by,
        display_name: name.clone(),
        label: format!("api-token:{name}"),
        role: Role::parse(&role).unwrap_or(Role::Readonly),
        client_addr,
        csrf: None,
        tr,
    }))
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/staff", get(staff_page))
        .route("/staff/{id}", post(staff_form))
        .route("/api-tokens", get(tokens_page).post(create_form))
        .route("/api-tokens/{id}/revoke", post(revoke_form))
}

#[derive(Template, WebTemplate)]
#[template(path = "staff.html")]
struct StaffPage {
    t: Tr,
    nav: Nav,
    staff: Vec<StaffMember>,
    roles: [Role; 4],
    me: Option<Uuid>,
}

impl StaffPage {
    fn is_me(&self, member: &StaffMember) -> bool {
        self.me == Some(member.id)
    }
}

async fn staff_page(State(state): State<WebState>, actor: Actor) -> Result<Response> {
    actor.require(Permission::ManageStaff)?;
    Ok(StaffPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "staff"),
        staff: list_staff(&state).await?,
        roles: Role::ALL,
        me: actor.staff_id,
    }
    .into_response())
}

#[derive(Deserialize)]
struct StaffForm {
    role: String,
    #[serde(default, deserialize_with = "crate::customers::checkbox")]
    enabled: Option<bool>,
}

async fn staff_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Form(form): Form<StaffForm>,
) -> Result<Response> {
    let role =
        Role::parse(&form.role).ok_or_else(|| Error::Invalid(tr!("Unknown role.").into()))?;
    change_staff(&state, &actor, id, role, form.enabled.unwrap_or(false)).await?;
    Ok(Redirect::to("/staff").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "api_tokens.html")]
struct TokensPage {
    t: Tr,
    nav: Nav,
    tokens: Vec<ApiToken>,
    roles: Vec<Role>,
    created: Option<(String, String)>,
}

async fn tokens_page(State(state): State<WebState>, actor: Actor) -> Result<Response> {
    tokens_view(&state, &actor, None).await
}

async fn tokens_view(
    state: &WebState,
    actor: &Actor,
    created: Option<(String, String)>,
) -> Result<Response> {
    actor.require(Permission::ManageApiTokens)?;
    Ok(TokensPage {
        t: actor.tr,
        nav: Nav::of(Some(actor), "tokens"),
        tokens: list_tokens(state).await?,
        roles: [Role::Admin, Role::Technician, Role::Readonly]
            .into_iter()
            .filter(|r| *r >= actor.role)
            .collect(),
        created,
    }
    .into_response())
}

#[derive(Deserialize)]
struct TokenForm {
    name: String,
    role: String,
}

async fn create_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<TokenForm>,
) -> Result<Response> {
    let role =
        Role::parse(&form.role).ok_or_else(|| Error::Invalid(tr!("Unknown role.").into()))?;
    let (token, secret) = create_token(&state, &actor, &form.name, role).await?;
    tokens_view(&state, &actor, Some((token.name, secret))).await
}

async fn revoke_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    revoke_token(&state, &actor, id).await?;
    Ok(Redirect::to("/api-tokens").into_response())
}
