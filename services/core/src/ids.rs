//! Identifiers that look alike but must never be mixed up, as their own types: a
//! customer (`TenantId`, mailbridge's id) beside its Microsoft 365 tenant
//! (`EntraTenantId`, Microsoft's id), its devices (`DeviceId`) and its messages
//! (`MessageId`). A customer's id where a device's belongs reads another
//! customer's rows; a customer bound to another's Microsoft 365 tenant sends its
//! mail as someone else's — so such swaps do not compile. They read and write as
//! the UUID they wrap: the same text in JSON and URLs, the same `uuid` column in
//! PostgreSQL.

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
            utoipa::ToSchema,
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

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
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
    /// A customer of the MSP (a row of `tenants`): what every customer's row names
    /// as `tenant_id`.
    TenantId
);

id_type!(
    /// A device of a customer (a row of `devices`): its SMTP credential.
    DeviceId
);

id_type!(
    /// A message a device submitted (a row of `messages`, and its queue row while
    /// it waits): the id the edge's `250` names.
    MessageId
);

impl MessageId {
    /// A new message's id: time-ordered (UUIDv7), so that the log's index on it
    /// stays append-only and ids sort by when they were made.
    pub fn now() -> Self {
        Self(Uuid::now_v7())
    }

    /// The 32 hex digits without dashes, as the edge's `250` and Message-IDs
    /// write it.
    pub fn simple(self) -> uuid::fmt::Simple {
        self.0.simple()
    }
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
