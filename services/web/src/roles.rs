//! Who makes a request and what they may do: the [`Actor`] (a signed-in staff
//! member or an API token), their [`Role`] and its [`Permission`]s (defined with the
//! staff table in `mailbridge_core::store::staff`), and the [`CustomerScope`] of a
//! technician or read-only member limited to assigned customers. The pages' and the
//! API's middleware put the actor in the request; handlers take it as an extractor
//! and check it here.

use mailbridge_core::ids::TenantId;
use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::request::Parts,
};
use mailbridge_core::store::customer_health;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{error::Error, i18n::Tr};

pub use mailbridge_core::store::staff::{Permission, Role};

/// The customers a staff member may see. Owners and admins see all; a technician or
/// read-only member limited to assigned customers sees only those, everywhere: lists,
/// pages, the API (with their tokens) — anything else answers "not found".
#[derive(Debug, Clone, Default)]
pub enum CustomerScope {
    #[default]
    All,
    Only(Arc<[TenantId]>),
}

impl CustomerScope {
    /// From the database: `None` for all customers, else the assigned ones.
    pub fn from_assigned(assigned: Option<Vec<TenantId>>) -> Self {
        match assigned {
            None => Self::All,
            Some(ids) => Self::Only(ids.into()),
        }
    }

    pub fn sees(&self, tenant_id: TenantId) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(&tenant_id),
        }
    }

    /// The assigned customers, or `None` for all.
    pub fn only(&self) -> Option<&[TenantId]> {
        match self {
            Self::All => None,
            Self::Only(ids) => Some(ids),
        }
    }

    /// The id and name of every customer in the scope, for the pages' filters.
    pub async fn names(&self, pool: &PgPool) -> Result<Vec<(TenantId, String)>, Error> {
        let mut names = customer_health::names(pool).await?;
        names.retain(|(id, _)| self.sees(*id));
        Ok(names)
    }
}

/// The customer a path is about (`/customers/{id}…`, `/api/v1/customers/{id}…`),
/// percent-decoded as the router decodes it, so no spelling of an id slips past.
pub fn customer_in_path(path: &str) -> Option<TenantId> {
    let rest = path
        .strip_prefix("/api/v1/customers/")
        .or_else(|| path.strip_prefix("/customers/"))?;
    let segment = rest.split('/').next()?;
    let decoded: String = url::form_urlencoded::parse(segment.as_bytes())
        .map(|(key, _)| key.into_owned())
        .next()?;
    decoded.parse::<TenantId>().ok()
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
    pub fn sees(&self, tenant_id: TenantId) -> bool {
        self.customers.sees(tenant_id)
    }

    /// The CSRF token forms of this session carry.
    pub fn csrf(&self) -> &str {
        self.csrf.as_deref().unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or(Error::Unauthenticated)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Actor>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_of_a_path_however_it_is_spelt() {
        let id: TenantId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
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
}
