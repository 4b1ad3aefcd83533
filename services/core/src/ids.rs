//! Identifiers that look alike but must never be mixed up, as their own types: a
//! customer's Microsoft 365 tenant (`EntraTenantId`, Microsoft's id) beside the
//! customer itself (a `Uuid`, mailbridge's id). Binding a customer to another's
//! tenant would send its mail as someone else's, so a swap of the two does not
//! compile. They read and write as the UUID they wrap: the same text in JSON, the
//! same `uuid` column in PostgreSQL.

use std::{fmt, str::FromStr};

use uuid::Uuid;

/// Defines an id type wrapping a `Uuid`.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            serde::Serialize,
            serde::Deserialize,
            sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

id_type!(
    /// A Microsoft 365 (Entra ID) tenant: Microsoft's id of a customer's directory,
    /// where its admin consented and its mail is sent from.
    EntraTenantId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entra_tenant_id_reads_and_writes_as_its_uuid() {
        let uuid = Uuid::new_v4();
        let id = EntraTenantId::from_uuid(uuid);
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(id.to_string().parse::<EntraTenantId>().unwrap(), id);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            serde_json::to_string(&uuid).unwrap()
        );
        assert!("not-a-tenant".parse::<EntraTenantId>().is_err());
    }
}
