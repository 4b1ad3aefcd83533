//! Sign-ins and admin consents in flight to an identity provider (`oauth_flows`):
//! stored under the SHA-256 of their `state` parameter, taken out once when the
//! provider sends the browser back, refused once older than their lifetime.

use crate::ids::TenantId;
use std::time::Duration;

use uuid::Uuid;

/// What a flow is for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum FlowKind {
    /// A member of staff signing in.
    #[default]
    SignIn,
    /// A customer's admin consenting to the MSP's app.
    Consent,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A flow about to leave for the provider.
#[derive(Debug, Default)]
pub struct NewFlow<'a> {
    pub kind: FlowKind,
    /// The `state` parameter: the flow's key, random (stored hashed).
    pub csrf_state: &'a str,
    pub nonce: Option<&'a str>,
    pub pkce_verifier: Option<&'a str>,
    pub tenant_id: Option<TenantId>,
    pub staff_id: Option<Uuid>,
    pub return_to: Option<&'a str>,
    /// The hash of the bootstrap code the sign-in started with.
    pub bootstrap_hash: Option<&'a [u8]>,
}

/// A flow as stored.
#[derive(Debug)]
pub struct Flow {
    pub nonce: Option<String>,
    pub pkce_verifier: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub staff_id: Option<Uuid>,
    pub return_to: Option<String>,
    pub bootstrap_hash: Option<Vec<u8>>,
}

/// Stores `flow` under its state's hash; flows older than `oldest` (the longest
/// lifetime) go.
pub async fn store(
    pool: &sqlx::PgPool,
    flow: &NewFlow<'_>,
    oldest: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM oauth_flows WHERE created_at < now() - make_interval(secs => $1)",
        oldest.as_secs_f64()
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "INSERT INTO oauth_flows
                (state_hash, kind, nonce, pkce_verifier, tenant_id, staff_id, return_to, bootstrap_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        super::secret_hash(flow.csrf_state),
        flow.kind.as_str(),
        flow.nonce,
        flow.pkce_verifier,
        flow.tenant_id as Option<TenantId>,
        flow.staff_id,
        flow.return_to,
        flow.bootstrap_hash
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Takes the flow whose state is `csrf_state` out (it is single use), if it is of
/// `kind` and not older than `lifetime`.
pub async fn take(
    pool: &sqlx::PgPool,
    csrf_state: &str,
    kind: FlowKind,
    lifetime: Duration,
) -> Result<Option<Flow>, sqlx::Error> {
    sqlx::query_as!(
        Flow,
        "DELETE FROM oauth_flows WHERE state_hash = $1 AND kind = $2
            AND created_at > now() - make_interval(secs => $3)
        RETURNING nonce, pkce_verifier, tenant_id AS \"tenant_id: TenantId\", staff_id, return_to, bootstrap_hash",
        super::secret_hash(csrf_state),
        kind.as_str(),
        lifetime.as_secs_f64()
    )
    .fetch_optional(pool)
    .await
}
