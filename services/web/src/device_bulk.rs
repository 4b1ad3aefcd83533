//! Acting on many devices of a customer at once: disabling them, or giving them new
//! passwords (selected with checkboxes, then confirmed), and the one-time download
//! of credentials issued in bulk (by an import or a bulk rotation). The credentials
//! CSV is sealed with the master key in PostgreSQL (so any replica can serve it) and
//! deleted by its one download, or an hour after it was made: it is never shown
//! again. Technicians and up; every step is in the audit log.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
    routing::post,
};
use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    crypto,
    devices::{self, DeviceListener},
    store::credential_downloads,
    tenants::Tenant,
};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    WebState, audit, customers,
    error::{Error, Result},
    i18n::Tr,
    layout::Nav,
    roles::{Actor, Permission},
    tr,
};

/// How long a credentials download waits for its one download.
pub const DOWNLOAD_MINUTES: i32 = 60;
/// The most devices one bulk action may take.
pub const MAX_DEVICES: usize = 500;
const SEAL_CONTEXT: &str = "credential-download";

/// A device whose credentials were issued in bulk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Issued {
    pub device_id: DeviceId,
    pub name: String,
    pub username: String,
    /// Shown this once; null for a port-25 device (it logs in by address, not by
    /// password) or when disabling. mailbridge keeps only its hash.
    pub password: Option<String>,
    pub listener: DeviceListener,
}

/// What was done to the devices a page of credentials is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Imported,
    Rotated,
    Disabled,
}

/// A bulk action on selected devices.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum BulkAction {
    Disable,
    Rotate,
}

impl BulkAction {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "disable" => Ok(Self::Disable),
            "rotate" => Ok(Self::Rotate),
            other => Err(Error::InvalidValue {
                text: tr!("{} is not a bulk action (disable, rotate)."),
                value: other.to_owned(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The credentials as CSV: what the technician takes to the sites.
pub fn credentials_csv(issued: &[Issued]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(["name", "username", "password", "listener"]);
    for i in issued {
        let _ = writer.write_record([
            i.name.as_str(),
            i.username.as_str(),
            i.password.as_deref().unwrap_or_default(),
            i.listener.as_str(),
        ]);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Keeps `issued`'s credentials sealed for their one download; returns its id.
pub async fn store_download(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    issued: &[Issued],
) -> Result<Uuid> {
    let key = state.master_key.as_ref().ok_or_else(|| {
        Error::Conflict(
            tr!("Credentials in bulk need mailbridge's master key (MAILBRIDGE_MASTER_KEY) to keep them until their download.").into(),
        )
    })?;
    let id = Uuid::now_v7();
    let sealed = key.seal(SEAL_CONTEXT, credentials_csv(issued).as_bytes());
    credential_downloads::keep(
        &state.pool,
        &credential_downloads::Kept {
            id,
            staff_id: actor.staff_id,
            tenant_id,
            sealed_csv: &sealed,
            devices: issued.len() as i32,
            minutes: DOWNLOAD_MINUTES,
        },
    )
    .await?;
    Ok(id)
}

/// The credentials CSV of download `id`, this once: the row is gone afterwards.
pub async fn take_download(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<String> {
    actor.require(Permission::ManageDevices)?;
    let sealed = credential_downloads::take(&state.pool, id, tenant_id, actor.staff_id).await?;
    let Some(sealed) = sealed else {
        return Err(Error::Conflict(
            tr!("These credentials were already downloaded or have expired: they are shown only once. Give the devices new passwords if they were lost.").into(),
        ));
    };
    let key = state
        .master_key
        .as_ref()
        .ok_or_else(|| Error::Internal("no master key".into()))?;
    let csv = key
        .open(SEAL_CONTEXT, &sealed)
        .map_err(|e| Error::Internal(e.to_string()))?;
    audit::record(
        &state.pool,
        actor,
        "device.credentials_downloaded",
        Some(tenant_id),
        None,
        json!({ "download": id }),
    )
    .await?;
    String::from_utf8(csv).map_err(|e| Error::Internal(e.to_string()))
}

/// The devices `ids` of customer `tenant_id` (all of them, or not found).
async fn selected(state: &WebState, tenant_id: TenantId, ids: &[DeviceId]) -> Result<Vec<Issued>> {
    if ids.is_empty() {
        return Err(Error::Invalid(tr!("Select at least one device.").into()));
    }
    if ids.len() > MAX_DEVICES {
        return Err(Error::InvalidValue {
            text: tr!("At most {} devices at once."),
            value: MAX_DEVICES.to_string(),
        });
    }
    let found: Vec<Issued> = devices::named(&state.pool, tenant_id, ids)
        .await?
        .into_iter()
        .map(|d| Issued {
            device_id: d.id,
            name: d.name,
            username: d.username,
            password: None,
            listener: d.listener,
        })
        .collect();
    let mut unique = ids.to_vec();
    unique.sort();
    unique.dedup();
    if found.len() != unique.len() {
        return Err(Error::NotFound);
    }
    Ok(found)
}

/// Disables the devices or gives them new passwords (returned this once), in one
/// transaction, audited.
pub async fn perform(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    action: BulkAction,
    ids: &[DeviceId],
) -> Result<Vec<Issued>> {
    actor.require(Permission::ManageDevices)?;
    let tenant = customers::load(&state.pool, tenant_id).await?;
    let mut devices = selected(state, tenant_id, ids).await?;
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.device_id).collect();
    let mut tx = state.pool.begin().await?;
    match action {
        BulkAction::Disable => {
            mailbridge_core::devices::disable_all(&mut tx, tenant_id, &ids).await?;
        }
        BulkAction::Rotate => {
            let mut hashes = Vec::with_capacity(devices.len());
            for device in &mut devices {
                let password = crypto::generate_password();
                let for_hashing = password.clone();
                let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&for_hashing))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(|e| Error::Internal(e.to_string()))?;
                hashes.push(hash);
                device.password =
                    Some(password).filter(|_| device.listener != DeviceListener::Relay);
            }
            mailbridge_core::devices::set_password_hashes(&mut tx, tenant_id, &ids, &hashes)
                .await?;
        }
    }
    audit::record_in(
        &mut tx,
        actor,
        match action {
            BulkAction::Disable => "device.bulk_disable",
            BulkAction::Rotate => "device.bulk_rotate_password",
        },
        Some(tenant_id),
        Some(&tenant.name),
        json!({
            "devices": devices.iter().map(|d| json!({ "device_id": d.device_id, "name": d.name })).collect::<Vec<_>>(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(devices)
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/customers/{id}/devices/bulk", post(select_form))
        .route("/customers/{id}/devices/bulk/confirm", post(confirm_form))
        .route(
            "/customers/{id}/credentials/{download}",
            post(download_form),
        )
}

/// The selection of a form: its action and every `device` field (repeated).
fn selection(body: &[u8]) -> Result<(BulkAction, Vec<DeviceId>)> {
    let mut action = None;
    let mut ids = Vec::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "action" => action = Some(BulkAction::parse(&value)?),
            "device" => ids.push(value.parse::<DeviceId>().map_err(|_| Error::InvalidValue {
                text: tr!("{} is not an id."),
                value: value.into_owned(),
            })?),
            _ => {}
        }
    }
    let action = action.ok_or_else(|| {
        Error::Invalid(tr!("Choose what to do with the selected devices.").into())
    })?;
    Ok((action, ids))
}

#[derive(Template, WebTemplate)]
#[template(path = "device_bulk.html")]
struct ConfirmPage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    action: BulkAction,
    devices: Vec<Issued>,
}

async fn select_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    body: Bytes,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let (action, ids) = selection(&body)?;
    let tenant = customers::load(&state.pool, id).await?;
    let devices = selected(&state, id, &ids).await?;
    Ok(ConfirmPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        tenant,
        action,
        devices,
    }
    .into_response())
}

async fn confirm_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    body: Bytes,
) -> Result<Response> {
    let (action, ids) = selection(&body)?;
    let issued = perform(&state, &actor, id, action, &ids).await?;
    let tenant = customers::load(&state.pool, id).await?;
    let done = match action {
        BulkAction::Disable => Done::Disabled,
        BulkAction::Rotate => Done::Rotated,
    };
    issued_page(&state, &actor, tenant, issued, done).await
}

#[derive(Template, WebTemplate)]
#[template(path = "device_issued.html")]
struct IssuedPage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    devices: Vec<Issued>,
    done: Done,
    /// The one download of the credentials (not for disabled devices).
    download: Option<Uuid>,
    minutes: i32,
}

/// What was done, and (for new passwords) the button of their one download.
pub async fn issued_page(
    state: &WebState,
    actor: &Actor,
    tenant: Tenant,
    issued: Vec<Issued>,
    done: Done,
) -> Result<Response> {
    let download = match done {
        Done::Disabled => None,
        Done::Imported | Done::Rotated => {
            Some(store_download(state, actor, tenant.id, &issued).await?)
        }
    };
    Ok(IssuedPage {
        t: actor.tr,
        nav: Nav::of(Some(actor), "customers"),
        tenant,
        devices: issued,
        done,
        download,
        minutes: DOWNLOAD_MINUTES,
    }
    .into_response())
}

async fn download_form(
    State(state): State<WebState>,
    actor: Actor,
    Path((id, download)): Path<(TenantId, Uuid)>,
) -> Result<Response> {
    let csv = take_download(&state, &actor, id, download).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mailbridge-device-credentials.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        csv,
    )
        .into_response())
}

/// A bulk action through the API.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = BulkDevices)]
pub struct BulkRequest {
    pub action: BulkAction,
    /// Device ids of the customer (at most 500).
    pub devices: Vec<DeviceId>,
}

/// What a bulk action through the API answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BulkDevicesResult)]
pub struct BulkResult {
    pub action: BulkAction,
    pub devices: Vec<Issued>,
}

/// `POST /api/v1/customers/{id}/devices/bulk`: the devices acted on (with their new
/// passwords, this once, for `rotate`).
#[utoipa::path(
    post,
    path = "/customers/{id}/devices/bulk",
    operation_id = "bulkDevices",
    summary = "Disable devices, or give them new passwords (in this answer only), in one transaction",
    request_body = BulkRequest,
    responses((status = 200, description = "The devices acted on", body = BulkResult)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub async fn api_bulk(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    crate::json_body::ApiJson(request): crate::json_body::ApiJson<BulkRequest>,
) -> Result<Response> {
    let devices = perform(&state, &actor, id, request.action, &request.devices).await?;
    Ok(axum::Json(BulkResult {
        action: request.action,
        devices,
    })
    .into_response())
}
