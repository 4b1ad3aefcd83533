//! Secrets kept for one view after a form (`secret_reveals`): a device password or
//! an API token, sealed with a key only the browser that sent the form holds, for
//! the member who sent it, until it is viewed or expires.

use std::time::Duration;

use uuid::Uuid;

/// A secret about to be kept.
pub struct Kept<'a> {
    pub id: Uuid,
    /// The device or API token the secret belongs to.
    pub subject_id: Uuid,
    pub staff_id: Option<Uuid>,
    /// A new password for an existing device, rather than a first one.
    pub rotated: bool,
    pub sealed: &'a [u8],
    pub lifetime: Duration,
}

/// Keeps a secret; expired ones go first.
pub async fn keep(pool: &sqlx::PgPool, kept: &Kept<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM secret_reveals WHERE expires_at < now()")
        .execute(pool)
        .await?;
    sqlx::query!(
        "INSERT INTO secret_reveals (id, subject_id, staff_id, rotated, sealed, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
        kept.id,
        kept.subject_id,
        kept.staff_id,
        kept.rotated,
        kept.sealed,
        kept.lifetime.as_secs_f64()
    )
    .execute(pool)
    .await
    .map(drop)
}

/// A secret taken for its one view: sealed, and whether it was a rotation.
pub struct Taken {
    pub sealed: Vec<u8>,
    pub rotated: bool,
}

/// Takes the secret `id` of `subject_id` out if the same member kept it and it has
/// not expired.
pub async fn take(
    pool: &sqlx::PgPool,
    id: Uuid,
    subject_id: Uuid,
    staff_id: Option<Uuid>,
) -> Result<Option<Taken>, sqlx::Error> {
    sqlx::query_as!(
        Taken,
        "DELETE FROM secret_reveals
          WHERE id = $1 AND subject_id = $2 AND staff_id IS NOT DISTINCT FROM $3
            AND expires_at > now()
          RETURNING sealed, rotated",
        id,
        subject_id,
        staff_id
    )
    .fetch_optional(pool)
    .await
}
