//! Bulk device import from CSV (columns name, kind, site, listener, allow-list,
//! sender): a dry run that shows every line as it would be created, or every error
//! of every line; then, confirmed, all devices created in one transaction. All or
//! nothing: when any line is bad nothing is created, so that a fixed file can
//! simply be uploaded again (a half-done import would leave the MSP to work out
//! which lines are missing). The passwords go into one credentials CSV that can be
//! downloaded once (see `device_bulk`). Technicians and up; the same operation
//! serves the API.
//!
//! Longer than most modules because the import is one piece: the line-by-line
//! checks of the CSV with the error of each line (most of the file), the
//! all-or-nothing transaction, and the page and API call that run them.

use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use std::collections::HashSet;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    body::Bytes,
    extract::{Multipart, Path, State},
    response::{IntoResponse, Response},
    routing::get,
};
use ipnet::IpNet;
use mailbridge_core::{
    crypto,
    devices::{self, DeviceKind, DeviceListener},
    tenants::Tenant,
};
use serde::Serialize;
use serde_json::json;

use crate::{
    WebState, audit, customers,
    device_bulk::{self, Issued},
    devices::{ListInput, parse_networks, parse_senders},
    error::{Error, Result},
    i18n::Tr,
    layout::Nav,
    roles::{Actor, Permission},
    tr,
};

/// The most devices one import may create (each password is hashed with argon2id,
/// which takes a while on purpose).
pub const MAX_ROWS: usize = 500;

/// The columns, in the order a template file has them.
pub const COLUMNS: [&str; 6] = ["name", "kind", "site", "listener", "allow-list", "sender"];

/// What is wrong with a line: an English text (with `{}` for `value`).
#[derive(Debug, Clone, Serialize)]
pub struct LineError {
    pub text: String,
    pub value: String,
}

impl LineError {
    fn new(text: &'static str, value: impl Into<String>) -> Self {
        Self {
            text: text.to_owned(),
            value: value.into(),
        }
    }

    fn of(error: Error) -> Self {
        match error {
            Error::InvalidValue { text, value } => Self::new(text, value),
            other => Self {
                text: other.to_string(),
                value: String::new(),
            },
        }
    }

    /// In English, for the API.
    pub fn english(&self) -> String {
        self.text.replacen("{}", &self.value, 1)
    }
}

/// One line of the file: the device it would create, or its errors.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportLine {
    /// The line number in the file (the header is line 1).
    pub line: u64,
    pub name: String,
    pub kind: DeviceKind,
    pub site: Option<String>,
    pub listener: DeviceListener,
    #[schema(value_type = Vec<String>)]
    pub allowed_networks: Vec<IpNet>,
    pub allowed_senders: Vec<String>,
    #[serde(skip)]
    pub errors_found: Vec<LineError>,
    pub errors: Vec<String>,
}

/// The whole file checked.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub lines: Vec<ImportLine>,
    /// Errors of the file itself (its header, its size).
    pub file_errors: Vec<String>,
    #[serde(skip)]
    pub file_errors_found: Vec<LineError>,
}

impl Checked {
    pub fn valid(&self) -> bool {
        self.file_errors_found.is_empty()
            && !self.lines.is_empty()
            && self.lines.iter().all(|l| l.errors_found.is_empty())
    }

    pub fn bad_lines(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| !l.errors_found.is_empty())
            .count()
    }

    fn finish(mut self) -> Self {
        self.file_errors = self
            .file_errors_found
            .iter()
            .map(LineError::english)
            .collect();
        for line in &mut self.lines {
            line.errors = line.errors_found.iter().map(LineError::english).collect();
        }
        self
    }
}

/// The column a header names (a few spellings accepted, case and spaces ignored).
fn column(header: &str) -> Option<usize> {
    let key: String = header
        .trim()
        .trim_start_matches('\u{feff}')
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    Some(match key.as_str() {
        "name" => 0,
        "kind" | "type" => 1,
        "site" | "location" => 2,
        "listener" | "port" => 3,
        "allowlist" | "allowednetworks" | "allowedaddresses" | "networks" => 4,
        "sender" | "senders" | "allowedsenders" => 5,
        _ => return None,
    })
}

fn listener(text: &str) -> Option<DeviceListener> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "587" | "starttls" => Some(DeviceListener::Submission),
        "465" | "tls" | "ssl" | "ssl/tls" => Some(DeviceListener::Submissions),
        "25" => Some(DeviceListener::Relay),
        other => DeviceListener::parse(other),
    }
}

/// Checks a CSV file against the customer's existing device names (`taken`) and the
/// allow-list limits; never touches the database.
pub fn check(state: &WebState, text: &str, taken: &HashSet<String>) -> Checked {
    let mut checked = Checked {
        lines: Vec::new(),
        file_errors: Vec::new(),
        file_errors_found: Vec::new(),
    };
    let text = text.trim_start_matches('\u{feff}');
    // Spreadsheets in German settings save with semicolons.
    let first_line = text.lines().next().unwrap_or_default();
    let delimiter = if first_line.contains(';') && !first_line.contains(',') {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            checked.file_errors_found.push(LineError::new(
                tr!("The file is not CSV: {}"),
                e.to_string(),
            ));
            return checked.finish();
        }
    };
    let mut at = [None; 6];
    for (i, header) in headers.iter().enumerate() {
        match column(header) {
            Some(c) => at[c] = Some(i),
            None if header.trim().is_empty() => {}
            None => checked.file_errors_found.push(LineError::new(
                tr!("Unknown column {} (the columns are name, kind, site, listener, allow-list, sender)."),
                header,
            )),
        }
    }
    if at[0].is_none() {
        checked.file_errors_found.push(LineError::new(
            tr!("The first line must name the columns, at least name (name, kind, site, listener, allow-list, sender)."),
            "",
        ));
        return checked.finish();
    }
    let mut seen: HashSet<String> = HashSet::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                checked.file_errors_found.push(LineError::new(
                    tr!("The file is not CSV: {}"),
                    e.to_string(),
                ));
                break;
            }
        };
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        let field = |c: usize| at[c].and_then(|i| record.get(i)).unwrap_or("").trim();
        let mut errors = Vec::new();
        let name = field(0).to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push(LineError::new(
                tr!("The name must be 1 to 200 characters."),
                "",
            ));
        } else if taken.contains(&name) {
            errors.push(LineError::new(
                tr!("This customer already has a device named {}."),
                name.clone(),
            ));
        } else if !seen.insert(name.clone()) {
            errors.push(LineError::new(
                tr!("The name {} is in the file twice."),
                name.clone(),
            ));
        }
        let kind = match field(1).to_ascii_lowercase().as_str() {
            "" => DeviceKind::Other,
            k => DeviceKind::parse(k).unwrap_or_else(|| {
                errors.push(LineError::new(
                    tr!("Unknown device kind {} (printer, scanner, medical, software, other)."),
                    k,
                ));
                DeviceKind::Other
            }),
        };
        let listener = listener(field(3)).unwrap_or_else(|| {
            errors.push(LineError::new(
                tr!("Unknown listener {} (submission or 587, submissions or 465, relay or 25)."),
                field(3),
            ));
            DeviceListener::Submission
        });
        let allowed_networks = match parse_networks(&ListInput::Text(field(4).to_owned())) {
            Ok(networks) => {
                if let Err(e) = state.settings.allow_list.check(&networks) {
                    errors.push(LineError::of(Error::from(e)));
                }
                networks
            }
            Err(e) => {
                errors.push(LineError::of(e));
                Vec::new()
            }
        };
        if listener == DeviceListener::Relay && allowed_networks.is_empty() && errors.is_empty() {
            errors.push(LineError::new(
                tr!(
                    "A port-25 device logs in with no password: it needs its allowed IP addresses."
                ),
                "",
            ));
        }
        let allowed_senders =
            parse_senders(&ListInput::Text(field(5).to_owned())).unwrap_or_else(|e| {
                errors.push(LineError::of(e));
                Vec::new()
            });
        checked.lines.push(ImportLine {
            line,
            name,
            kind,
            site: Some(field(2).to_owned()).filter(|s| !s.is_empty()),
            listener,
            allowed_networks,
            allowed_senders,
            errors_found: errors,
            errors: Vec::new(),
        });
        if checked.lines.len() > MAX_ROWS {
            checked.file_errors_found.push(LineError::new(
                tr!("At most {} devices per import: split the file."),
                MAX_ROWS.to_string(),
            ));
            checked.lines.truncate(MAX_ROWS);
            break;
        }
    }
    if checked.lines.is_empty() && checked.file_errors_found.is_empty() {
        checked
            .file_errors_found
            .push(LineError::new(tr!("The file names no device."), ""));
    }
    checked.finish()
}

/// The customer's device names (an import must not repeat one).
async fn taken_names(state: &WebState, tenant_id: TenantId) -> Result<HashSet<String>> {
    Ok(devices::names_of(&state.pool, tenant_id)
        .await?
        .into_iter()
        .collect())
}

/// Checks `text` for customer `tenant_id` (the dry run).
pub async fn dry_run(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    text: &str,
) -> Result<(Tenant, Checked)> {
    actor.require(Permission::ManageDevices)?;
    let tenant = customers::load(&state.pool, tenant_id).await?;
    let taken = taken_names(state, tenant_id).await?;
    Ok((tenant, check(state, text, &taken)))
}

/// Checks `text` again and, when every line is good, creates every device in one
/// transaction. Returns the devices with their passwords (the only time they exist).
pub async fn create(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    text: &str,
) -> Result<(Tenant, Checked, Vec<Issued>)> {
    let (tenant, checked) = dry_run(state, actor, tenant_id, text).await?;
    if !checked.valid() {
        let first = checked
            .file_errors
            .first()
            .cloned()
            .or_else(|| {
                checked
                    .lines
                    .iter()
                    .find(|l| !l.errors.is_empty())
                    .map(|l| format!("line {}: {}", l.line, l.errors.join(" ")))
            })
            .unwrap_or_default();
        return Err(Error::InvalidValue {
            text: tr!("Nothing was imported: {}"),
            value: first,
        });
    }
    // The passwords are hashed before the transaction, which then stays short.
    let mut hashed = Vec::with_capacity(checked.lines.len());
    for line in &checked.lines {
        let password = crypto::generate_password();
        let for_hashing = password.clone();
        let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&for_hashing))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Internal(e.to_string()))?;
        hashed.push((line, password, hash));
    }
    let mut tx = state.pool.begin().await?;
    let mut issued = Vec::with_capacity(hashed.len());
    for (line, password, hash) in hashed {
        let mut created: Option<(DeviceId, String)> = None;
        // A username collision is astronomically unlikely; another costs nothing.
        for _ in 0..3 {
            let username = crypto::generate_username(&line.name);
            created = devices::insert_imported(
                &mut tx,
                &devices::Imported {
                    tenant_id,
                    name: &line.name,
                    username: &username,
                    password_hash: &hash,
                    kind: line.kind,
                    site: line.site.as_deref(),
                    listener: line.listener,
                    allowed_networks: &line.allowed_networks,
                    allowed_senders: &line.allowed_senders,
                },
            )
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db)
                    if db.constraint() == Some("devices_tenant_id_name_key") =>
                {
                    Error::InvalidValue {
                        text: tr!("This customer already has a device named {}."),
                        value: line.name.clone(),
                    }
                }
                _ => Error::from(e),
            })?
            .map(|id| (id, username));
            if created.is_some() {
                break;
            }
        }
        let (id, username) =
            created.ok_or_else(|| Error::Internal("could not find a free username".into()))?;
        issued.push(Issued {
            device_id: id,
            name: line.name.clone(),
            username,
            password: Some(password).filter(|_| line.listener != DeviceListener::Relay),
            listener: line.listener,
        });
    }
    audit::record_in(
        &mut tx,
        actor,
        "device.import",
        Some(tenant_id),
        Some(&tenant.name),
        json!({
            "devices": issued.iter().map(|i| json!({ "device_id": i.device_id, "name": i.name, "username": i.username })).collect::<Vec<_>>(),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok((tenant, checked, issued))
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route(
            "/customers/{id}/devices/import",
            get(upload_page).post(dry_run_form),
        )
        .route(
            "/customers/{id}/devices/import/confirm",
            axum::routing::post(confirm_form),
        )
}

#[derive(Template, WebTemplate)]
#[template(path = "device_import.html")]
struct ImportPage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    /// `None`: the upload form; else the dry run of the file.
    checked: Option<Checked>,
    /// The file, carried to the confirmation.
    text: String,
    columns: [&'static str; 6],
    max_rows: usize,
}

async fn upload_page(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let tenant = customers::load(&state.pool, id).await?;
    Ok(ImportPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        tenant,
        checked: None,
        text: String::new(),
        columns: COLUMNS,
        max_rows: MAX_ROWS,
    }
    .into_response())
}

/// The file from the form: an uploaded file, or text pasted into the box.
async fn file_text(mut multipart: Multipart) -> Result<String> {
    let mut file: Option<Bytes> = None;
    let mut pasted = String::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| Error::Invalid(e.body_text()))?
    {
        match field.name() {
            Some("file") => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| Error::Invalid(e.body_text()))?;
                if !bytes.is_empty() {
                    file = Some(bytes);
                }
            }
            Some("csv") => {
                pasted = field
                    .text()
                    .await
                    .map_err(|e| Error::Invalid(e.body_text()))?
            }
            _ => {}
        }
    }
    match file {
        Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::Invalid(tr!("The file is not UTF-8 text: save it as \"CSV UTF-8\".").into())
        }),
        None if !pasted.trim().is_empty() => Ok(pasted),
        None => Err(Error::Invalid(
            tr!("Choose a CSV file or paste its lines.").into(),
        )),
    }
}

async fn dry_run_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    multipart: Multipart,
) -> Result<Response> {
    let text = file_text(multipart).await?;
    let (tenant, checked) = dry_run(&state, &actor, id, &text).await?;
    Ok(ImportPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "customers"),
        tenant,
        checked: Some(checked),
        text,
        columns: COLUMNS,
        max_rows: MAX_ROWS,
    }
    .into_response())
}

#[derive(serde::Deserialize)]
struct ConfirmForm {
    csv: String,
}

async fn confirm_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    axum::Form(form): axum::Form<ConfirmForm>,
) -> Result<Response> {
    let (tenant, _, issued) = create(&state, &actor, id, &form.csv).await?;
    device_bulk::issued_page(&state, &actor, tenant, issued, device_bulk::Done::Imported).await
}

/// An import through the API: `dry_run` only checks.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = DeviceImport)]
pub struct ImportRequest {
    /// The file: a header line naming the columns name, kind, site, listener,
    /// allow-list, sender, then one device per line (at most 500).
    pub csv: String,
    /// Only check every line; create nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What an import through the API answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = DeviceImportResult)]
pub struct ImportResult {
    pub dry_run: bool,
    /// Every line is good (else nothing is created: the whole file is refused with
    /// 422).
    pub valid: bool,
    pub lines: Vec<ImportLine>,
    pub file_errors: Vec<String>,
    /// The devices created, with their passwords this once (empty for a dry run).
    pub devices: Vec<device_bulk::Issued>,
}

/// `POST /api/v1/customers/{id}/devices/import`: the dry run's lines, or (unless
/// `dry_run`) the created devices with their passwords, this once. A file with a
/// bad line is refused as a whole (422, naming the first one) unless it is a dry run.
#[utoipa::path(
    post,
    path = "/customers/{id}/devices/import",
    operation_id = "importDevices",
    summary = "Import devices from CSV (name, kind, site, listener, allow-list, sender): a dry run checks every line; otherwise all are created in one transaction, or none when a line is wrong; the passwords are in this answer only",
    request_body = ImportRequest,
    responses((status = 200, description = "The lines and the devices created", body = ImportResult)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
pub async fn api_import(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    crate::json_body::ApiJson(request): crate::json_body::ApiJson<ImportRequest>,
) -> Result<Response> {
    let (checked, devices) = if request.dry_run {
        (
            dry_run(&state, &actor, id, &request.csv).await?.1,
            Vec::new(),
        )
    } else {
        let (_, checked, issued) = create(&state, &actor, id, &request.csv).await?;
        (checked, issued)
    };
    Ok(axum::Json(ImportResult {
        dry_run: request.dry_run,
        valid: checked.valid(),
        lines: checked.lines,
        file_errors: checked.file_errors,
        devices,
    })
    .into_response())
}
