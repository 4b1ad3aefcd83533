//! Credentials CSVs of a bulk import or rotation waiting for their one download
//! (`credential_downloads`): sealed, for the member who made them, until fetched
//! or expired.

use crate::ids::TenantId;
use uuid::Uuid;

/// A download about to be kept.
pub struct Kept<'a> {
    pub id: Uuid,
    pub staff_id: Option<Uuid>,
    pub tenant_id: TenantId,
    pub sealed_csv: &'a [u8],
    /// How many devices the CSV names.
    pub devices: i32,
    pub minutes: i32,
}

/// Keeps a download; expired ones go first.
pub async fn keep(pool: &sqlx::PgPool, kept: &Kept<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM credential_downloads WHERE expires_at < now()")
        .execute(pool)
        .await?;
    sqlx::query!(
        "INSERT INTO credential_downloads (id, staff_id, tenant_id, sealed_csv, devices, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6))",
        kept.id,
        kept.staff_id,
        kept.tenant_id as TenantId,
        kept.sealed_csv,
        kept.devices,
        kept.minutes
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Takes the download `id` out, if the same member made it for `tenant_id` and it
/// has not expired: its sealed CSV.
pub async fn take(
    pool: &sqlx::PgPool,
    id: Uuid,
    tenant_id: TenantId,
    staff_id: Option<Uuid>,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar!(
        "DELETE FROM credential_downloads
          WHERE id = $1 AND tenant_id = $2 AND staff_id IS NOT DISTINCT FROM $3
            AND expires_at > now()
          RETURNING sealed_csv",
        id,
        tenant_id as TenantId,
        staff_id
    )
    .fetch_optional(pool)
    .await
}
