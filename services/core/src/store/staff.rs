//! The MSP's staff (`staff`), invitations (`staff_invitations`), the one-time codes
//! that make the first owner (`staff_bootstrap_codes`) and the customers assigned to
//! a limited member (`staff_customers`): every statement on these tables, and the
//! roles with what each may do.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

/// How long a bootstrap code printed at start stays valid.
const BOOTSTRAP_LIFETIME_SECS: f64 = 86_400.0;

/// A staff member's role, from most to least powerful. Stored as its lower-case name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Everything, including who may do what.
    Owner,
    /// Customers, their Microsoft 365 connection, devices, API tokens, the audit log.
    Admin,
    /// Devices, test messages, retrying and cancelling messages.
    Technician,
    /// Looks, changes nothing.
    Readonly,
    /// Signed in uninvited: waits for an owner or admin to approve, sees nothing.
    Pending,
}

impl Role {
    pub const ALL: [Role; 4] = [Self::Owner, Self::Admin, Self::Technician, Self::Readonly];

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    /// The role's name as shown, in English (the catalogue key).
    pub fn label(self) -> &'static str {
        match self {
            Self::Owner => crate::tr!("Owner"),
            Self::Admin => crate::tr!("Admin"),
            Self::Technician => crate::tr!("Technician"),
            Self::Readonly => crate::tr!("Read-only"),
            Self::Pending => crate::tr!("Waiting for approval"),
        }
    }

    /// Whether this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        let needed = match what {
            Permission::View => Self::Readonly,
            Permission::ManageDevices | Permission::SendTest | Permission::HandleMessages => {
                Self::Technician
            }
            Permission::ManageCustomers
            | Permission::ManageApiTokens
            | Permission::ViewAudit
            | Permission::InviteStaff => Self::Admin,
            Permission::ManageStaff => Self::Owner,
        };
        self <= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl sqlx::Type<Postgres> for Role {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl sqlx::Decode<'_, Postgres> for Role {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<Postgres>>::decode(value)?;
        // A role this version does not know ranks nowhere: it may do nothing.
        Ok(Self::parse(text).unwrap_or(Self::Pending))
    }
}

/// What a request wants to do, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    View,
    ManageDevices,
    SendTest,
    HandleMessages,
    ManageCustomers,
    ManageApiTokens,
    ViewAudit,
    /// Invite staff and approve those waiting, with a role no higher than one's own.
    InviteStaff,
    ManageStaff,
}

#[derive(Debug, Serialize)]
pub struct StaffMember {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// Sees every customer (owners and admins always do).
    pub all_customers: bool,
    /// The customers assigned, when not all.
    pub customers: Vec<TenantId>,
}

#[derive(Debug, Serialize)]
pub struct Invitation {
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub created_at: DateTime<Utc>,
}

/// A member as a sign-in, an invitation or an API token finds them.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: Uuid,
    pub role: Role,
    pub enabled: bool,
    pub display_name: String,
}

pub async fn list(pool: &PgPool) -> Result<Vec<StaffMember>, sqlx::Error> {
    sqlx::query_as!(
        StaffMember,
        r#"SELECT id, email, display_name, role AS "role: Role", enabled, created_at,
                  last_sign_in_at, all_customers,
                  ARRAY(SELECT tenant_id FROM staff_customers sc WHERE sc.staff_id = staff.id)
                    AS "customers!: Vec<TenantId>"
             FROM staff ORDER BY email"#
    )
    .fetch_all(pool)
    .await
}

/// The oldest member with the address `email` (any case), enabled or not.
pub async fn by_email(pool: &PgPool, email: &str) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"SELECT id, role AS "role: Role", enabled, display_name FROM staff
            WHERE lower(email) = lower($1) ORDER BY created_at LIMIT 1"#,
        email
    )
    .fetch_optional(pool)
    .await
}

/// The member a provider's `issuer` and `subject` name.
pub async fn by_subject(
    tx: &mut PgConnection,
    issuer: &str,
    subject: &str,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as!(
        Member,
        r#"SELECT id, role AS "role: Role", enabled, display_name FROM staff
            WHERE issuer = $1 AND subject = $2"#,
        issuer,
        subject
    )
    .fetch_optional(tx)
    .await
}

/// One sign-in at a time decides who takes an invitation or the bootstrap code.
pub async fn lock_sign_ins(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('mailbridge.staff'))")
        .execute(tx)
        .await
        .map(drop)
}

/// A newcomer, signed in for the first time now.
pub async fn insert_signed_in(
    tx: &mut PgConnection,
    issuer: &str,
    subject: &str,
    email: &str,
    display_name: &str,
    role: Role,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO staff (issuer, subject, email, display_name, role, last_sign_in_at)
         VALUES ($1, $2, $3, $4, $5, now()) RETURNING id",
        issuer,
        subject,
        email,
        display_name,
        role.as_str()
    )
    .fetch_one(tx)
    .await
}

/// A member signed in again: what the provider says of them now, and their role.
pub async fn update_signed_in(
    tx: &mut PgConnection,
    id: Uuid,
    email: &str,
    display_name: &str,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE staff SET email = $2, display_name = $3, role = $4, last_sign_in_at = now()
          WHERE id = $1",
        id,
        email,
        display_name,
        role.as_str()
    )
    .execute(tx)
    .await
    .map(drop)
}

/// Gives `id` the role `role` and lets them sign in.
pub async fn approve(pool: &PgPool, id: Uuid, role: Role) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE staff SET role = $2, enabled = true WHERE id = $1",
        id,
        role.as_str()
    )
    .execute(pool)
    .await
    .map(drop)
}

pub async fn role_of(pool: &PgPool, id: Uuid) -> Result<Option<Role>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT role AS "role: Role" FROM staff WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// What [`change`] changed: the member's address and their role and state before.
pub struct Changed {
    pub email: String,
    pub role_before: Role,
    pub enabled_before: bool,
}

/// Sets `id`'s role and whether they may sign in; a disabled member's sessions end
/// with it. `None` when there is no such member.
pub async fn change(
    pool: &PgPool,
    id: Uuid,
    role: Role,
    enabled: bool,
) -> Result<Option<Changed>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query_as!(
        Changed,
        r#"UPDATE staff s SET role = $2, enabled = $3 FROM staff old
            WHERE s.id = $1 AND old.id = s.id
        RETURNING s.email, old.role AS "role_before: Role", old.enabled AS enabled_before"#,
        id,
        role.as_str(),
        enabled
    )
    .fetch_optional(&mut *tx)
    .await?;
    if changed.is_some() && !enabled {
        sqlx::query!("DELETE FROM web_sessions WHERE staff_id = $1", id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Why [`assign_customers`] refused.
pub enum AssignRefused {
    NoSuchMember,
    /// Owners and admins always see every customer.
    SeesAll,
    UnknownCustomer,
}

/// Limits `id` to `customers` (or lets them see all). The member's address and the
/// customers' names, for the audit log.
pub async fn assign_customers(
    pool: &PgPool,
    id: Uuid,
    all: bool,
    customers: &[TenantId],
) -> Result<Result<(String, Vec<String>), AssignRefused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let member = sqlx::query!(
        r#"SELECT email, role AS "role: Role" FROM staff WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(member) = member else {
        return Ok(Err(AssignRefused::NoSuchMember));
    };
    if matches!(member.role, Role::Owner | Role::Admin) {
        return Ok(Err(AssignRefused::SeesAll));
    }
    let names = sqlx::query_scalar!(
        "SELECT name FROM tenants WHERE id = ANY($1) ORDER BY name",
        customers as &[TenantId]
    )
    .fetch_all(&mut *tx)
    .await?;
    if names.len() != customers.len() {
        return Ok(Err(AssignRefused::UnknownCustomer));
    }
    sqlx::query!("UPDATE staff SET all_customers = $2 WHERE id = $1", id, all)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM staff_customers WHERE staff_id = $1", id)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO staff_customers (staff_id, tenant_id) SELECT $1, unnest($2::uuid[])",
        id,
        customers as &[TenantId]
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok((member.email, names)))
}

pub async fn invitations(pool: &PgPool) -> Result<Vec<Invitation>, sqlx::Error> {
    sqlx::query_as!(
        Invitation,
        r#"SELECT email, role AS "role: Role", invited_by, created_at
             FROM staff_invitations ORDER BY email"#
    )
    .fetch_all(pool)
    .await
}

/// Invites `email` with `role` (again: the newer invitation counts).
pub async fn invite(
    pool: &PgPool,
    email: &str,
    role: Role,
    invited_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO staff_invitations (email, role, invited_by) VALUES ($1, $2, $3)
         ON CONFLICT (email) DO UPDATE SET role = $2, invited_by = $3, created_at = now()",
        email,
        role.as_str(),
        invited_by
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Takes the invitation for `email` out (withdrawn, or used by a sign-in); its role.
pub async fn take_invitation<'c, E>(executor: E, email: &str) -> Result<Option<Role>, sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query_scalar!(
        r#"DELETE FROM staff_invitations WHERE email = $1 RETURNING role AS "role: Role""#,
        email
    )
    .fetch_optional(executor)
    .await
}

/// Whether an owner exists or is invited (then no bootstrap code is needed).
pub async fn owner_known(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM staff WHERE role = 'owner' AND enabled)
               OR EXISTS (SELECT 1 FROM staff_invitations WHERE role = 'owner') AS "known!""#
    )
    .fetch_one(pool)
    .await
}

/// Replaces the bootstrap codes: none when `code_hash` is `None`, else this one
/// (besides others still fresh).
pub async fn store_bootstrap_code(
    pool: &PgPool,
    code_hash: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    let Some(code_hash) = code_hash else {
        sqlx::query!("DELETE FROM staff_bootstrap_codes")
            .execute(pool)
            .await?;
        return Ok(());
    };
    sqlx::query!(
        "DELETE FROM staff_bootstrap_codes WHERE created_at < now() - make_interval(secs => $1)",
        BOOTSTRAP_LIFETIME_SECS
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "INSERT INTO staff_bootstrap_codes (code_hash) VALUES ($1)",
        code_hash
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Whether a bootstrap code may still be entered (nobody is owner, a code is fresh).
pub async fn bootstrap_open(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM staff_bootstrap_codes
                           WHERE created_at > now() - make_interval(secs => $1))
              AND NOT EXISTS (SELECT 1 FROM staff WHERE role = 'owner' AND enabled) AS "open!""#,
        BOOTSTRAP_LIFETIME_SECS
    )
    .fetch_one(pool)
    .await
}

/// Whether `code_hash` is a bootstrap code valid now.
pub async fn bootstrap_valid(pool: &PgPool, code_hash: &[u8]) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM staff_bootstrap_codes WHERE code_hash = $1
                           AND created_at > now() - make_interval(secs => $2)) AS "valid!""#,
        code_hash,
        BOOTSTRAP_LIFETIME_SECS
    )
    .fetch_one(pool)
    .await
}

/// Spends the bootstrap code `code_hash` within `tx` if nobody is owner yet; every
/// other code goes with it. Whether it was spent.
pub async fn claim_bootstrap(tx: &mut PgConnection, code_hash: &[u8]) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query_scalar!(
        "DELETE FROM staff_bootstrap_codes WHERE code_hash = $1
            AND created_at > now() - make_interval(secs => $2)
            AND NOT EXISTS (SELECT 1 FROM staff WHERE role = 'owner' AND enabled)
        RETURNING 1",
        code_hash,
        BOOTSTRAP_LIFETIME_SECS
    )
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_some() {
        sqlx::query!("DELETE FROM staff_bootstrap_codes")
            .execute(&mut *tx)
            .await?;
    }
    Ok(claimed.is_some())
}
