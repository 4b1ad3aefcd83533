//! MSP staff and API tokens. Nobody becomes staff by signing in alone: owners and
//! admins invite by e-mail address with a role (`mailbridge staff add` does the same
//! from the command line), and whoever signs in uninvited waits, seeing no customer
//! data, until an owner or admin approves them. While nobody is owner, the web prints
//! a one-time bootstrap code at start that makes the first owner. Owners give staff
//! their roles and disable accounts (an owner cannot demote or disable themselves, so
//! there is always one). Admins create API tokens for automation — scoped to a role no
//! higher than their own, shown once, stored as a SHA-256 hash, expiring (90 days by
//! default, a year at most), revocable — and the API authenticates with them while
//! their creator is enabled and still holds the token's role.
//!
//! Longer than most modules because staff, invitations, the bootstrap code and API
//! tokens share one set of rules — which role may grant which, and that an owner
//! always remains — and the command line calls the same operations; the pages
//! that show them are short.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Router,
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use mailbridge_core::ids::TenantId;
use mailbridge_core::store::{
    api_tokens,
    staff::{self, AssignRefused},
};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    WebState, audit, cookies,
    error::{Error, Result},
    i18n::Tr,
    layout::Nav,
    roles::{Actor, CustomerScope, Permission, Role},
    tr,
};

/// API tokens start with this, so that secret scanners recognise them.
pub const TOKEN_PREFIX: &str = "mbt_";
/// An API token's lifetime unless chosen otherwise, and the longest.
pub const TOKEN_DAYS_DEFAULT: u32 = 90;
pub const TOKEN_DAYS_MAX: u32 = 365;
pub use mailbridge_core::store::{
    api_tokens::ApiToken,
    staff::{Invitation, StaffMember},
};

/// How the pages show a member's or an invitation's role.
pub trait RoleShown {
    fn role(&self) -> Role;

    fn role_label(&self) -> &'static str {
        self.role().label()
    }

    fn pending(&self) -> bool {
        self.role() == Role::Pending
    }
}

impl RoleShown for StaffMember {
    fn role(&self) -> Role {
        self.role
    }
}

impl RoleShown for Invitation {
    fn role(&self) -> Role {
        self.role
    }
}

/// The command line (or `mailbridge dev`) as the audit log names it.
fn command_line() -> Actor {
    Actor {
        staff_id: None,
        label: "cli".into(),
        display_name: "mailbridge command line".into(),
        role: Role::Owner,
        client_addr: None,
        csrf: None,
        tr: Tr::new(crate::i18n::Lang::En),
        customers: Default::default(),
    }
}

/// What inviting someone did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invited {
    /// An invitation waits for their first sign-in.
    Invitation,
    /// They had signed in already (perhaps waiting for approval) and now have the role.
    RoleGiven,
}

/// `mailbridge staff add`: invites `email` with `role` (they get it at their first
/// sign-in), or gives a member who signed in already that role and enables them.
pub async fn add_staff(pool: &PgPool, email: &str, role: Role) -> Result<Invited> {
    invite(pool, &command_line(), email, role).await
}

/// Invites `email` with `role`: owners and admins, with a role no higher than their
/// own. Someone already waiting for approval is approved with it; the command line
/// may also change the role of an existing member.
pub async fn invite(pool: &PgPool, actor: &Actor, email: &str, role: Role) -> Result<Invited> {
    actor.require(Permission::InviteStaff)?;
    if role == Role::Pending || role < actor.role {
        return Err(Error::Invalid(
            tr!("You can invite with a role up to your own.").into(),
        ));
    }
    let email = email.trim().to_ascii_lowercase();
    if mailbridge_core::address::EmailAddress::parse(&email).is_err() {
        return Err(Error::InvalidValue {
            text: tr!("{} is not an e-mail address."),
            value: email,
        });
    }
    if let Some(member) = staff::by_email(pool, &email).await? {
        if member.role != Role::Pending && actor.label != "cli" {
            return Err(Error::Conflict(
                tr!("This person is staff already: change their role in the list.").into(),
            ));
        }
        staff::approve(pool, member.id, role).await?;
        audit::record(
            pool,
            actor,
            "staff.approve",
            None,
            Some(&email),
            json!({ "role": [member.role.as_str(), role.as_str()] }),
        )
        .await?;
        return Ok(Invited::RoleGiven);
    }
    staff::invite(pool, &email, role, &actor.label).await?;
    audit::record(
        pool,
        actor,
        "staff.invite",
        None,
        Some(&email),
        json!({ "role": role.as_str() }),
    )
    .await?;
    Ok(Invited::Invitation)
}

pub async fn list_invitations(state: &WebState) -> Result<Vec<Invitation>> {
    Ok(staff::invitations(&state.pool).await?)
}

pub async fn withdraw_invitation(state: &WebState, actor: &Actor, email: &str) -> Result<()> {
    actor.require(Permission::InviteStaff)?;
    let role = staff::take_invitation(&state.pool, email).await?;
    let role = role.ok_or(Error::NotFound)?;
    audit::record(
        &state.pool,
        actor,
        "staff.invitation_withdrawn",
        None,
        Some(email),
        json!({ "role": role.as_str() }),
    )
    .await?;
    Ok(())
}

/// A code as typed: upper case, without spaces or dashes.
fn normalised_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// While nobody is owner (nor invited as one): a new one-time code that makes whoever
/// signs in with it owner, valid a day; only its hash is stored. `None` otherwise.
pub async fn issue_bootstrap_code(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    if staff::owner_known(pool).await? {
        staff::store_bootstrap_code(pool, None).await?;
        return Ok(None);
    }
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let random = cookies::random_token();
    let letters: String = random
        .bytes()
        .take(20)
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect();
    let code = letters
        .as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect::<Vec<_>>()
        .join("-");
    let hash = cookies::sha256(&normalised_code(&code));
    staff::store_bootstrap_code(pool, Some(&hash)).await?;
    Ok(Some(code))
}

/// Whether a bootstrap code may still be entered (nobody is owner, a code is fresh).
pub async fn bootstrap_open(pool: &PgPool) -> Result<bool> {
    Ok(staff::bootstrap_open(pool).await?)
}

/// The stored hash of `code` if it is a valid bootstrap code now.
pub async fn bootstrap_hash(pool: &PgPool, code: &str) -> Result<Option<Vec<u8>>> {
    let hash = cookies::sha256(&normalised_code(code));
    let valid = staff::bootstrap_valid(pool, &hash).await?;
    Ok(valid.then_some(hash))
}

pub async fn list_staff(state: &WebState) -> Result<Vec<StaffMember>> {
    Ok(staff::list(&state.pool).await?)
}

/// Changes a staff member's role and whether they may sign in (owners), or approves
/// someone waiting with a role up to one's own (owners and admins).
pub async fn change_staff(
    state: &WebState,
    actor: &Actor,
    id: Uuid,
    role: Role,
    enabled: bool,
) -> Result<()> {
    let current = staff::role_of(&state.pool, id).await?;
    let approving = current == Some(Role::Pending);
    if approving {
        actor.require(Permission::InviteStaff)?;
        if role < actor.role {
            return Err(Error::Invalid(
                tr!("You can invite with a role up to your own.").into(),
            ));
        }
    } else {
        actor.require(Permission::ManageStaff)?;
    }
    if role == Role::Pending {
        return Err(Error::Invalid(tr!("Unknown role.").into()));
    }
    if actor.staff_id == Some(id) && (role != Role::Owner || !enabled) {
        return Err(Error::Conflict(
            tr!("You cannot demote or disable yourself: another owner has to.").into(),
        ));
    }
    let changed = staff::change(&state.pool, id, role, enabled)
        .await?
        .ok_or(Error::NotFound)?;
    audit::record(
        &state.pool,
        actor,
        if approving {
            "staff.approve"
        } else {
            "staff.update"
        },
        None,
        Some(&changed.email),
        json!({
            "role": [changed.role_before.as_str(), role.as_str()],
            "enabled": [changed.enabled_before, enabled],
        }),
    )
    .await?;
    Ok(())
}

/// Limits a technician or read-only member to `customers` (or lets them see all);
/// owners and admins may do this. Takes effect with their next request, their API
/// tokens included.
pub async fn assign_customers(
    state: &WebState,
    actor: &Actor,
    id: Uuid,
    all: bool,
    customers: &[TenantId],
) -> Result<()> {
    actor.require(Permission::InviteStaff)?;
    let (email, names) = match staff::assign_customers(&state.pool, id, all, customers).await? {
        Ok(assigned) => assigned,
        Err(AssignRefused::NoSuchMember) => return Err(Error::NotFound),
        Err(AssignRefused::SeesAll) => {
            return Err(Error::Invalid(
                tr!("Owners and admins always see every customer.").into(),
            ));
        }
        Err(AssignRefused::UnknownCustomer) => {
            return Err(Error::Invalid(tr!("Unknown customer.").into()));
        }
    };
    audit::record(
        &state.pool,
        actor,
        "staff.customers",
        None,
        Some(&email),
        json!({ "all_customers": all, "customers": names }),
    )
    .await?;
    Ok(())
}

pub async fn list_tokens(state: &WebState) -> Result<Vec<ApiToken>> {
    Ok(api_tokens::list(&state.pool).await?)
}

/// Creates an API token valid `days` days; returns it in clear, this once.
pub async fn create_token(
    state: &WebState,
    actor: &Actor,
    name: &str,
    role: Role,
    days: u32,
) -> Result<(ApiToken, String)> {
    actor.require(Permission::ManageApiTokens)?;
    insert_token(&state.pool, actor, name, role, days).await
}

/// `mailbridge api-token add`: a token in the name of the staff member `email` (who
/// must be enabled and hold at least `role`), valid `days` days; returns it in clear.
pub async fn create_api_token(
    pool: &PgPool,
    email: &str,
    name: &str,
    role: Role,
    days: u32,
) -> Result<(ApiToken, String)> {
    let member = staff::by_email(pool, email.trim())
        .await?
        .filter(|m| m.enabled);
    let Some(member) = member else {
        return Err(Error::InvalidValue {
            text: tr!("{} is not an enabled member of staff (they must have signed in once)."),
            value: email.to_owned(),
        });
    };
    let actor = Actor {
        staff_id: Some(member.id),
        label: email.trim().to_ascii_lowercase(),
        display_name: member.display_name,
        role: member.role,
        ..command_line()
    };
    insert_token(pool, &actor, name, role, days).await
}

async fn insert_token(
    pool: &PgPool,
    actor: &Actor,
    name: &str,
    role: Role,
    days: u32,
) -> Result<(ApiToken, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::Invalid(
            tr!("The name must be 1 to 200 characters.").into(),
        ));
    }
    if role == Role::Owner || role == Role::Pending || role < actor.role {
        return Err(Error::Invalid(
            tr!("A token's role can be admin, technician or read-only, and not above your own.")
                .into(),
        ));
    }
    if !(1..=TOKEN_DAYS_MAX).contains(&days) {
        return Err(Error::Invalid(
            tr!("A token is valid for 1 to 365 days.").into(),
        ));
    }
    let secret = format!("{TOKEN_PREFIX}{}", cookies::random_token());
    let secret_hash = cookies::sha256(&secret);
    let token = api_tokens::insert(
        pool,
        &api_tokens::NewToken {
            name,
            secret_hash: &secret_hash,
            prefix: &secret[..TOKEN_PREFIX.len() + 6],
            role,
            created_by: actor.staff_id,
            days: i32::try_from(days).unwrap_or(i32::MAX),
        },
    )
    .await?;
    audit::record(
        pool,
        actor,
        "api_token.create",
        None,
        Some(name),
        json!({ "token_id": token.id, "role": role.as_str(), "expires_at": token.expires_at }),
    )
    .await?;
    Ok((token, secret))
}

pub async fn revoke_token(state: &WebState, actor: &Actor, id: Uuid) -> Result<()> {
    actor.require(Permission::ManageApiTokens)?;
    let name = api_tokens::revoke(&state.pool, id).await?;
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
    // Refused once expired, and when its creator is gone, disabled or no longer
    // holds the token's role (a pending or unknown role ranks nowhere: refused).
    // A token sees the customers its creator sees now.
    let found = api_tokens::use_token(&state.pool, &cookies::sha256(secret)).await?;
    Ok(found.map(|token| Actor {
        staff_id: token.created_by,
        display_name: token.name.clone(),
        label: format!("api-token:{}", token.name),
        role: token.role,
        client_addr,
        csrf: None,
        tr,
        customers: CustomerScope::from_assigned(token.customers),
    }))
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/staff", get(staff_page))
        .route("/staff/invitations", post(invite_form))
        .route("/staff/invitations/withdraw", post(withdraw_form))
        .route("/staff/{id}", post(staff_form))
        .route("/staff/{id}/customers", post(customers_form))
        .route("/api-tokens", get(tokens_page).post(create_form))
        .route("/api-tokens/{id}/revoke", post(revoke_form))
}

#[derive(Template, WebTemplate)]
#[template(path = "staff.html")]
struct StaffPage {
    t: Tr,
    nav: Nav,
    staff: Vec<StaffMember>,
    invitations: Vec<Invitation>,
    /// Every role the actor may change a member to (owners only).
    roles: [Role; 4],
    /// The roles the actor may invite or approve with.
    grantable: Vec<Role>,
    /// Every customer, for assigning them.
    customers: Vec<(TenantId, String)>,
    can_manage: bool,
    me: Option<Uuid>,
    notice: Option<&'static str>,
}

impl StaffPage {
    fn is_me(&self, member: &StaffMember) -> bool {
        self.me == Some(member.id)
    }

    fn waiting(&self) -> Vec<&StaffMember> {
        self.staff.iter().filter(|s| s.pending()).collect()
    }

    fn members(&self) -> Vec<&StaffMember> {
        self.staff.iter().filter(|s| !s.pending()).collect()
    }

    /// Whether `member`'s customers can be limited (technicians and read-only).
    fn limitable(&self, member: &StaffMember) -> bool {
        matches!(member.role, Role::Technician | Role::Readonly)
    }

    fn assigned(&self, member: &StaffMember, customer: &TenantId) -> bool {
        member.customers.contains(customer)
    }
}

#[derive(Deserialize)]
struct StaffQuery {
    invited: Option<String>,
    changed: Option<String>,
}

async fn staff_page(
    State(state): State<WebState>,
    actor: Actor,
    axum::extract::Query(query): axum::extract::Query<StaffQuery>,
) -> Result<Response> {
    actor.require(Permission::InviteStaff)?;
    Ok(StaffPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "staff"),
        staff: list_staff(&state).await?,
        invitations: list_invitations(&state).await?,
        roles: Role::ALL,
        grantable: Role::ALL.into_iter().filter(|r| *r >= actor.role).collect(),
        customers: actor.customers.names(&state.pool).await?,
        can_manage: actor.may(Permission::ManageStaff),
        me: actor.staff_id,
        notice: match (query.invited, query.changed) {
            (Some(_), _) => Some(tr!("Invited: they get the role when they first sign in.")),
            (None, Some(_)) => Some(tr!("Saved: the new role applies from their next request.")),
            (None, None) => None,
        },
    }
    .into_response())
}

#[derive(Deserialize)]
struct StaffForm {
    role: String,
    #[serde(default, deserialize_with = "crate::layout::checkbox")]
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
    Ok(Redirect::to("/staff?changed=1").into_response())
}

/// `scope=all`, or `scope=assigned` with a `customer=` for each assigned customer
/// (a repeated field, which the form extractor cannot read).
async fn customers_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let mut all = true;
    let mut customers = Vec::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match &*key {
            "scope" => all = value != "assigned",
            "customer" => customers.push(
                value
                    .parse::<TenantId>()
                    .map_err(|_| Error::Invalid(tr!("Unknown customer.").into()))?,
            ),
            _ => {}
        }
    }
    assign_customers(&state, &actor, id, all, &customers).await?;
    Ok(Redirect::to("/staff?changed=1").into_response())
}

#[derive(Deserialize)]
struct InviteForm {
    email: String,
    role: String,
}

async fn invite_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<InviteForm>,
) -> Result<Response> {
    let role =
        Role::parse(&form.role).ok_or_else(|| Error::Invalid(tr!("Unknown role.").into()))?;
    let target = match invite(&state.pool, &actor, &form.email, role).await? {
        Invited::Invitation => "/staff?invited=1",
        Invited::RoleGiven => "/staff",
    };
    Ok(Redirect::to(target).into_response())
}

#[derive(Deserialize)]
struct WithdrawForm {
    email: String,
}

async fn withdraw_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<WithdrawForm>,
) -> Result<Response> {
    withdraw_invitation(&state, &actor, &form.email).await?;
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
    days: [u32; 4],
}

async fn tokens_page(State(state): State<WebState>, actor: Actor) -> Result<Response> {
    tokens_view(&state, &actor, None).await
}

pub(crate) async fn tokens_view(
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
        days: [30, TOKEN_DAYS_DEFAULT, 180, TOKEN_DAYS_MAX],
    }
    .into_response())
}

#[derive(Deserialize)]
struct TokenForm {
    name: String,
    role: String,
    days: Option<String>,
}

async fn create_form(
    State(state): State<WebState>,
    actor: Actor,
    Form(form): Form<TokenForm>,
) -> Result<Response> {
    let role =
        Role::parse(&form.role).ok_or_else(|| Error::Invalid(tr!("Unknown role.").into()))?;
    let days = match form.days.as_deref().map(str::trim) {
        None | Some("") => TOKEN_DAYS_DEFAULT,
        Some(text) => text
            .parse()
            .map_err(|_| Error::Invalid(tr!("A token is valid for 1 to 365 days.").into()))?,
    };
    let (token, secret) = create_token(&state, &actor, &form.name, role, days).await?;
    let page = crate::reveal::token_page_path(token.id);
    crate::reveal::keep(&state, &actor, token.id, &secret, false, &page).await
}

async fn revoke_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    revoke_token(&state, &actor, id).await?;
    Ok(Redirect::to("/api-tokens").into_response())
}
