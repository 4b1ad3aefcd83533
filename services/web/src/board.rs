//! The migration board in the control plane: the MSP-wide readiness overview with
//! Microsoft's dates as a countdown (`/board`), each customer's board of SMTP AUTH
//! accounts (`/customers/{id}/board`) with the report upload, the one-click relay
//! device, linking, ignoring and reopening, the read-only PowerShell snippet for
//! the exposure list, the board's CSV export, and the same through the JSON API.
//! The data and its rules live in `mailbridge_core::migration_board`; Microsoft's
//! dates in `web/data/microsoft-deadlines.toml` (carried by `assets`, overridable at
//! run time).
//!
//! Longer than most modules because the board's pages and its API calls sit side
//! by side over the same operations, with Microsoft's dates (and their file
//! format) and the tests of both.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Multipart, Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, NaiveDate, Utc};
use mailbridge_core::ids::DeviceId;
use mailbridge_core::ids::TenantId;
use mailbridge_core::{
    devices::{Device, DeviceKind, IssuedCredential},
    migration_board::{
        self as board, AuditActor, BoardAccount, BoardError, ImportOutcome, Readiness, Stage,
    },
    smtp_auth_report::{self, ReportError},
    tenants::Tenant,
};
use serde::{Deserialize, Serialize};
use strum::VariantArray;

use crate::{
    WebState, assets, customers,
    devices::{self, DeviceInput, ListInput},
    error::{Error, Result},
    i18n::{Lang, Tr},
    json_body::ApiJson,
    layout::Nav,
    roles::{Actor, Permission},
    tr,
};

/// Where an operator points the control plane at their own copy of the dates.
pub const DEADLINES_ENV: &str = "MAILBRIDGE_MICROSOFT_DEADLINES_FILE";

/// Upload limit of the report routes: the largest file plus the form around it.
const UPLOAD_LIMIT: usize = smtp_auth_report::MAX_FILE_BYTES + 64 * 1024;

/// One of Microsoft's dates.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    pub id: String,
    pub title: String,
    pub title_de: Option<String>,
    /// The day, once Microsoft has named it.
    pub date: Option<NaiveDate>,
    /// When the day will be named, while it is not.
    pub expected: Option<String>,
    pub expected_de: Option<String>,
    pub source: String,
    pub checked: Option<NaiveDate>,
}

impl Deadline {
    pub fn title(&self, t: &Tr) -> &str {
        match (t.lang(), &self.title_de) {
            (Lang::De, Some(de)) => de,
            _ => &self.title,
        }
    }

    pub fn expected(&self, t: &Tr) -> &str {
        match (t.lang(), &self.expected_de, &self.expected) {
            (Lang::De, Some(de), _) => de,
            (_, _, Some(en)) => en,
            _ => "",
        }
    }

    /// Days from `today` until the date (negative once passed).
    pub fn days_left(&self, today: NaiveDate) -> Option<i64> {
        self.date.map(|d| (d - today).num_days())
    }
}

/// Microsoft's dates and where they were read from.
#[derive(Debug, Clone, Serialize)]
pub struct Deadlines {
    #[serde(rename = "deadlines")]
    pub all: Vec<Deadline>,
    /// `built-in` or the file's path.
    pub origin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineFile {
    deadline: Vec<Deadline>,
}

impl Deadlines {
    fn parse(text: &str, origin: String) -> std::result::Result<Self, String> {
        let file: DeadlineFile =
            toml::from_str(text).map_err(|e| format!("{origin}: {}", e.message()))?;
        for d in &file.deadline {
            if d.id.is_empty() || !d.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!(
                    "{origin}: deadline id {:?} is not letters, digits and -",
                    d.id
                ));
            }
            if d.date.is_none() && d.expected.is_none() {
                return Err(format!(
                    "{origin}: deadline {} needs a date or an expected",
                    d.id
                ));
            }
            if !d.source.starts_with("https://") {
                return Err(format!(
                    "{origin}: deadline {} needs an https:// source",
                    d.id
                ));
            }
        }
        Ok(Self {
            all: file.deadline,
            origin,
        })
    }

    /// The built-in dates, or the operator's file named by
    /// `MAILBRIDGE_MICROSOFT_DEADLINES_FILE`.
    pub fn from_env() -> std::result::Result<Self, String> {
        match std::env::var_os(DEADLINES_ENV).filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = std::path::PathBuf::from(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{DEADLINES_ENV}={}: {e}", path.display()))?;
                Self::parse(&text, path.display().to_string())
            }
            None => Self::parse(assets::MICROSOFT_DEADLINES, "built-in".to_owned()),
        }
    }

    /// The next dated deadline still ahead (or the last one passed).
    pub fn next(&self, today: NaiveDate) -> Option<&Deadline> {
        let mut dated: Vec<&Deadline> = self.all.iter().filter(|d| d.date.is_some()).collect();
        dated.sort_by_key(|d| d.date);
        dated
            .iter()
            .find(|d| d.date >= Some(today))
            .or(dated.last())
            .copied()
    }
}

/// Texts of `mailbridge_core` the board shows (stage labels, the reasons a report
/// row is refused), listed here so that the catalogue check sees them.
#[cfg(test)]
const CORE_TEXTS: [&str; 13] = [
    tr!("To migrate"),
    tr!("Relay device created"),
    tr!("Relay traffic seen"),
    tr!("Done"),
    tr!("Ignored"),
    tr!("Exposed but unused"),
    tr!("No Basic use"),
    tr!("\"{}\" in the sender column is not an email address."),
    tr!("\"{}\" in the column SmtpAuthEnabled is not True or False."),
    tr!("\"{}\" in the messages column is not a number of messages."),
    tr!("\"{}\" is not an authentication protocol (expected Basic or OAuth)."),
    tr!("\"{}\" is not a date (expected e.g. 2026-11-30, 11/30/2026 or 30.11.2026)."),
    tr!("The line cannot be read as CSV: {}"),
];

fn audit_actor(actor: &Actor) -> AuditActor {
    AuditActor {
        label: actor.label.clone(),
        staff_id: actor.staff_id,
        client_addr: actor.client_addr.map(ipnet::IpNet::from),
    }
}

impl From<BoardError> for Error {
    fn from(e: BoardError) -> Self {
        match e {
            BoardError::UnknownAccount => Error::NotFound,
            BoardError::ForeignDevice => {
                Error::Invalid(tr!("The device does not belong to this customer.").into())
            }
            BoardError::Reason => Error::Invalid(
                tr!("Give a reason for ignoring the account (at most 500 characters).").into(),
            ),
            BoardError::Database(e) => Error::Database(e),
        }
    }
}

/// A report refused, in the page's language.
fn refusal(e: &ReportError, t: &Tr) -> String {
    match e {
        ReportError::Empty => t.t(tr!("The file is empty.")).to_owned(),
        ReportError::TooLarge => t
            .t(tr!("The file is larger than 20 MB; export a shorter period."))
            .to_owned(),
        ReportError::NotAReport { found } => t.fill(
            tr!(
                "This is not an SMTP AUTH clients report. Expected the CSV exported from the Exchange admin center (Reports → Mail flow → SMTP AUTH clients report, summary or details view) with the columns \"Sender address\" and \"Messages sent\" (and, since October 2024, \"Authentication protocol\"), or the CSV of mailbridge's PowerShell snippet with \"PrimarySmtpAddress\" and \"SmtpAuthEnabled\". Columns found: {}."
            ),
            found,
        ),
        ReportError::Row {
            row,
            problem,
            value,
        } => format!(
            "{} {}",
            t.fill(tr!("Row {}:"), &row.to_string()),
            t.fill(problem, value)
        ),
        ReportError::Csv(detail) => t.fill(tr!("The file is not readable as CSV: {}"), detail),
    }
}

/// Reads and imports a file for a customer; a refused file changes nothing.
pub async fn import(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    bytes: &[u8],
    file_name: Option<&str>,
) -> Result<std::result::Result<board::ImportOutcome, ReportError>> {
    actor.require(Permission::ManageDevices)?;
    let tenant = customers::load(&state.pool, tenant_id).await?;
    let report = match smtp_auth_report::parse(bytes) {
        Ok(report) => report,
        Err(e) => return Ok(Err(e)),
    };
    let file_name = file_name.map(|n| n.chars().take(200).collect::<String>());
    let outcome = board::import(
        &state.pool,
        tenant.id,
        &report,
        file_name.as_deref(),
        &audit_actor(actor),
    )
    .await?;
    Ok(Ok(outcome))
}

/// Creates a relay device for an account in one step — named after it, allowed to
/// send as it — and links the two. Returns the device with its password.
pub async fn create_device(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    account: &str,
    name: Option<&str>,
    kind: Option<&str>,
) -> Result<mailbridge_core::devices::IssuedCredential> {
    actor.require(Permission::ManageDevices)?;
    let entry = board::account(&state.pool, tenant_id, account)
        .await?
        .ok_or(Error::NotFound)?;
    let base = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| entry.suggested_device_name());
    let mut attempt = 1;
    let issued = loop {
        let candidate = if attempt == 1 {
            base.clone()
        } else {
            format!("{base} {attempt}")
        };
        let input = DeviceInput {
            name: Some(candidate),
            kind: kind.map(str::to_owned),
            allowed_senders: Some(ListInput::Items(vec![entry.account.clone()])),
            ..DeviceInput::default()
        };
        match devices::create(state, actor, tenant_id, &input).await {
            // A suggested name already taken: the next free one.
            Err(Error::InvalidValue { text, .. })
                if name.is_none()
                    && attempt < 20
                    && text == "This customer already has a device named {}." =>
            {
                attempt += 1
            }
            other => break other?,
        }
    };
    board::link_device(
        &state.pool,
        tenant_id,
        &entry.account,
        issued.device.id,
        &audit_actor(actor),
    )
    .await?;
    Ok(issued)
}

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/board", get(overview))
        .route("/board.csv", get(export_csv))
        .route("/customers/{id}/board", get(customer_board))
        .route(
            "/customers/{id}/board/import",
            post(import_form).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/customers/{id}/board/device", post(device_form))
        .route("/customers/{id}/board/link", post(link_form))
        .route("/customers/{id}/board/ignore", post(ignore_form))
        .route("/customers/{id}/board/reopen", post(reopen_form))
}

#[derive(Template, WebTemplate)]
#[template(path = "board.html")]
struct OverviewPage {
    t: Tr,
    nav: Nav,
    deadlines: Deadlines,
    today: NaiveDate,
    rows: Vec<Readiness>,
    filter: String,
    totals: Totals,
}

impl OverviewPage {
    fn days_left(&self, d: &Deadline) -> Option<i64> {
        d.days_left(self.today)
    }

    /// The next date, the days to it (or since it) and whether it is still ahead.
    fn headline(&self) -> Option<(&Deadline, String, bool)> {
        let next = self.deadlines.next(self.today)?;
        let days = next.days_left(self.today)?;
        Some((next, days.abs().to_string(), days >= 0))
    }
}

/// The customers' readiness added up.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Totals {
    customers: usize,
    still_basic: i64,
    in_progress: i64,
    migrated: i64,
    not_connected: usize,
    no_data: usize,
}

fn totals(rows: &[Readiness]) -> Totals {
    Totals {
        customers: rows.len(),
        still_basic: rows.iter().map(|r| r.to_migrate).sum(),
        in_progress: rows.iter().map(|r| r.in_progress).sum(),
        migrated: rows.iter().map(|r| r.done).sum(),
        not_connected: rows.iter().filter(|r| !r.connected).count(),
        no_data: rows.iter().filter(|r| r.unknown()).count(),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// `at-risk` (open accounts or no data), `no-data`, `done` or all.
    #[serde(default)]
    pub filter: Option<String>,
    /// `risk` (default) or `name`.
    #[serde(default)]
    pub sort: Option<String>,
}

/// The readiness rows the query asks for.
pub async fn readiness(
    state: &WebState,
    actor: &Actor,
    query: &OverviewQuery,
) -> Result<Vec<Readiness>> {
    let mut rows = board::readiness(&state.pool).await?;
    rows.retain(|r| actor.sees(r.tenant_id));
    match query.filter.as_deref().unwrap_or("") {
        "at-risk" => rows.retain(|r| r.unknown() || r.open() > 0),
        "no-data" => rows.retain(Readiness::unknown),
        "done" => rows.retain(|r| !r.unknown() && r.open() == 0),
        "" | "all" => {}
        other => {
            return Err(Error::InvalidValue {
                text: tr!("Unknown filter {} (at-risk, no-data, done or all)."),
                value: other.to_owned(),
            });
        }
    }
    match query.sort.as_deref().unwrap_or("risk") {
        "risk" => {}
        "name" => rows.sort_by_key(|r| r.tenant_name.to_lowercase()),
        other => {
            return Err(Error::InvalidValue {
                text: tr!("Unknown sort {} (risk or name)."),
                value: other.to_owned(),
            });
        }
    }
    Ok(rows)
}

async fn overview(
    State(state): State<WebState>,
    actor: Actor,
    Query(query): Query<OverviewQuery>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let rows = readiness(&state, &actor, &query).await?;
    Ok(OverviewPage {
        t: actor.tr,
        nav: Nav::of(Some(&actor), "board"),
        deadlines: (*state.deadlines).clone(),
        today: Utc::now().date_naive(),
        totals: totals(&rows),
        rows,
        filter: query.filter.unwrap_or_default(),
    }
    .into_response())
}

/// The board of every customer as CSV.
pub async fn csv(state: &WebState, actor: &Actor) -> Result<Response> {
    actor.require(Permission::View)?;
    let mut rows = board::all_accounts(&state.pool).await?;
    rows.retain(|(_, account)| actor.sees(account.tenant_id));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"smtp-auth-migration-board.csv\"",
            ),
        ],
        board::to_csv(&rows),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/board.csv",
    operation_id = "exportBoard",
    summary = "Every customer's migration board as CSV",
    responses((status = 200, description = "The boards", body = String, content_type = "text/csv")),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
async fn export_csv(State(state): State<WebState>, actor: Actor) -> Result<Response> {
    csv(&state, &actor).await
}

#[derive(Template, WebTemplate)]
#[template(path = "customer_board.html")]
struct BoardPage {
    t: Tr,
    nav: Nav,
    tenant: Tenant,
    accounts: Vec<BoardAccount>,
    devices: Vec<Device>,
    kinds: &'static [DeviceKind],
    can_manage: bool,
    notice: Option<String>,
    refused: Option<String>,
    snippet: String,
    sign_in_log: Option<SignInRead>,
}

/// How the worker's last read of the customer's sign-in log went.
use board::SignInRead;

impl BoardPage {
    fn count(&self, stage: &Stage) -> usize {
        self.accounts.iter().filter(|a| a.stage() == *stage).count()
    }

    fn stages(&self) -> &'static [Stage] {
        Stage::VARIANTS
    }

    fn day(&self, at: &Option<DateTime<Utc>>) -> String {
        day(&self.t, at)
    }
}

/// The read-only PowerShell that lists mailboxes with SMTP AUTH in effect. A mailbox
/// whose own `SmtpClientAuthenticationDisabled` is empty (`$null`) inherits the
/// organisation's setting: filtering on `-eq $false` would miss exactly those.
const SNIPPET: &str = r#"# mailbridge: {title}
# {needs}
Connect-ExchangeOnline
$org = (Get-TransportConfig).SmtpClientAuthenticationDisabled
Get-EXOCasMailbox -ResultSize Unlimited -PropertySets All | ForEach-Object {
    $own = $_.SmtpClientAuthenticationDisabled
    # $null: {inherits}
    $disabled = if ($null -eq $own) { $org } else { $own }
    [pscustomobject]@{
        PrimarySmtpAddress                           = $_.PrimarySmtpAddress
        SmtpClientAuthenticationDisabled             = $own
        OrganizationSmtpClientAuthenticationDisabled = $org
        SmtpAuthEnabled                              = -not $disabled
    }
} | Export-Csv -Path .\smtp-auth-exposure.csv -NoTypeInformation -Encoding UTF8
# {upload}"#;

/// [`SNIPPET`] with its comments in the page's language.
pub fn snippet(t: &Tr) -> String {
    SNIPPET
        .replace(
            "{title}",
            t.t("which mailboxes have SMTP AUTH in effect? Read-only: changes nothing."),
        )
        .replace(
            "{needs}",
            t.t("Needs: Install-Module ExchangeOnlineManagement; an Exchange administrator (View-Only is enough)."),
        )
        .replace(
            "{inherits}",
            t.t("the mailbox follows the organisation's setting ($org)."),
        )
        .replace(
            "{upload}",
            t.t("Upload smtp-auth-exposure.csv to the customer's migration board."),
        )
}

#[derive(Debug, Default, Deserialize)]
struct BoardQuery {
    notice: Option<String>,
}

async fn board_page(
    state: &WebState,
    actor: &Actor,
    tenant_id: TenantId,
    notice: Option<String>,
    refused: Option<String>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let tenant = customers::load(&state.pool, tenant_id).await?;
    let accounts = board::board(&state.pool, tenant.id).await?;
    let devices = mailbridge_core::devices::list(&state.pool, tenant.id).await?;
    let sign_in_log = board::sign_in_read(&state.pool, tenant.id).await?;
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        BoardPage {
            t: actor.tr,
            nav: Nav::of(Some(actor), "board"),
            tenant,
            accounts,
            devices,
            kinds: DeviceKind::VARIANTS,
            can_manage: actor.may(Permission::ManageDevices),
            notice,
            refused,
            sign_in_log,
            snippet: snippet(&actor.tr),
        },
    )
        .into_response())
}

async fn customer_board(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Query(query): Query<BoardQuery>,
) -> Result<Response> {
    let notice = match query.notice.as_deref() {
        Some("linked") => Some(
            actor
                .tr
                .t(tr!("The account is linked to the device."))
                .to_owned(),
        ),
        Some("ignored") => Some(actor.tr.t(tr!("The account is ignored.")).to_owned()),
        Some("reopened") => Some(actor.tr.t(tr!("The account is open again.")).to_owned()),
        _ => None,
    };
    board_page(&state, &actor, id, notice, None).await
}

async fn import_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    mut multipart: Multipart,
) -> Result<Response> {
    let mut file: Option<(Option<String>, Bytes)> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| Error::Invalid(e.body_text()))?
    {
        if field.name() == Some("file") {
            let name = field.file_name().map(str::to_owned);
            let bytes = field
                .bytes()
                .await
                .map_err(|e| Error::Invalid(e.body_text()))?;
            file = Some((name, bytes));
        }
    }
    let Some((name, bytes)) = file else {
        return Err(Error::Invalid(tr!("Choose a file to upload.").into()));
    };
    let tr = actor.tr;
    match import(&state, &actor, id, &bytes, name.as_deref()).await? {
        Ok(outcome) => {
            let notice = format!(
                "{} {} {} {}",
                tr.fill(tr!("Imported {} rows."), &outcome.rows.to_string()),
                tr.fill(tr!("New accounts: {}."), &outcome.added.len().to_string()),
                tr.fill(tr!("Done: {}."), &outcome.done.len().to_string()),
                tr.fill(tr!("Reopened: {}."), &outcome.reopened.len().to_string()),
            );
            board_page(&state, &actor, id, Some(notice), None).await
        }
        Err(refused) => {
            let message = refusal(&refused, &tr);
            board_page(&state, &actor, id, None, Some(message)).await
        }
    }
}

/// What the board's buttons send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = BoardAction)]
pub struct AccountAction {
    pub account: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl AccountAction {
    fn device_id(&self) -> Result<DeviceId> {
        self.device_id
            .as_deref()
            .and_then(|d| d.trim().parse().ok())
            .ok_or_else(|| Error::Invalid(tr!("Choose a device.").into()))
    }
}

async fn device_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(form): Form<AccountAction>,
) -> Result<Response> {
    let issued = create_device(
        &state,
        &actor,
        id,
        &form.account,
        form.name.as_deref(),
        form.kind.as_deref(),
    )
    .await?;
    devices::credential_page(&state, &actor, issued, false).await
}

async fn link_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(form): Form<AccountAction>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let device = form.device_id()?;
    board::link_device(&state.pool, id, &form.account, device, &audit_actor(&actor)).await?;
    Ok(Redirect::to(&format!("/customers/{id}/board?notice=linked")).into_response())
}

async fn ignore_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(form): Form<AccountAction>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let reason = form.reason.as_deref().unwrap_or("");
    board::ignore(&state.pool, id, &form.account, reason, &audit_actor(&actor)).await?;
    Ok(Redirect::to(&format!("/customers/{id}/board?notice=ignored")).into_response())
}

async fn reopen_form(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Form(form): Form<AccountAction>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    board::reopen(&state.pool, id, &form.account, &audit_actor(&actor)).await?;
    Ok(Redirect::to(&format!("/customers/{id}/board?notice=reopened")).into_response())
}

// ---- The JSON API ----

/// The board's API routes (nested under `/api/v1` with its authentication).
pub fn api_router() -> Router<WebState> {
    Router::new()
        .route(
            "/customers/{id}/smtp-auth-report",
            post(api_import).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
        .route("/customers/{id}/board", get(api_board))
        .route("/customers/{id}/board/device", post(api_device))
        .route("/customers/{id}/board/link", post(api_link))
        .route("/customers/{id}/board/ignore", post(api_ignore))
        .route("/customers/{id}/board/reopen", post(api_reopen))
        .route("/readiness", get(api_readiness))
        .route("/board.csv", get(export_csv))
}

/// An account on the board with its state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BoardAccountView {
    #[serde(flatten)]
    pub account: BoardAccount,
    pub state: Stage,
}

impl BoardAccountView {
    fn of(account: BoardAccount) -> Self {
        Self {
            state: account.stage(),
            account,
        }
    }
}

/// A customer's migration board.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Board {
    pub customer_id: TenantId,
    pub accounts: Vec<BoardAccountView>,
}

/// A relay device created for an account, and the account linked to it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BoardDevice {
    pub device: IssuedCredential,
    pub account: BoardAccountView,
}

/// One of Microsoft's dates with the days left until it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadlineView {
    #[serde(flatten)]
    pub deadline: Deadline,
    /// Days until the date (negative once passed; null while it is not named).
    pub days_left: Option<i64>,
}

/// A customer's readiness, and whether any data came in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadinessView {
    #[serde(flatten)]
    pub readiness: Readiness,
    /// No report or sign-in data yet.
    pub no_data: bool,
}

/// Every customer's readiness for Microsoft's deadline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    pub deadlines: Vec<DeadlineView>,
    /// built-in, or the operator's file.
    pub deadlines_origin: String,
    pub totals: Totals,
    pub customers: Vec<ReadinessView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// The file's name, for the import's record.
    file_name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/customers/{id}/smtp-auth-report",
    operation_id = "importSmtpAuthReport",
    summary = "Import the customer's SMTP AUTH clients report (CSV as exported from the Exchange admin center, summary or details view, or the board's PowerShell exposure list); a file that cannot be read is refused whole",
    params(ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "The report"),
    responses((status = 201, description = "What the import did", body = ImportOutcome)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
async fn api_import(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    Query(query): Query<ImportQuery>,
    body: Bytes,
) -> Result<Response> {
    match import(&state, &actor, id, &body, query.file_name.as_deref()).await? {
        Ok(outcome) => Ok((StatusCode::CREATED, Json(outcome)).into_response()),
        Err(refused) => Err(Error::Invalid(refused.to_string())),
    }
}

#[utoipa::path(
    get,
    path = "/customers/{id}/board",
    operation_id = "getBoard",
    summary = "The customer's migration board: every account Microsoft saw sending with SMTP AUTH and its state",
    responses((status = 200, description = "The board", body = Board)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
async fn api_board(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let tenant = customers::load(&state.pool, id).await?;
    let accounts = board::board(&state.pool, tenant.id).await?;
    Ok(Json(Board {
        customer_id: tenant.id,
        accounts: accounts.into_iter().map(BoardAccountView::of).collect(),
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/customers/{id}/board/device",
    operation_id = "createBoardDevice",
    summary = "Create a relay device for an account (named after it, allowed to send as it) and link them; the password is shown this once",
    request_body = AccountAction,
    responses((status = 201, description = "The device and the account", body = BoardDevice)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
async fn api_device(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(input): ApiJson<AccountAction>,
) -> Result<Response> {
    let issued = create_device(
        &state,
        &actor,
        id,
        &input.account,
        input.name.as_deref(),
        input.kind.as_deref(),
    )
    .await?;
    let account = board::account(&state.pool, id, &input.account)
        .await?
        .ok_or(Error::NotFound)?;
    Ok((
        StatusCode::CREATED,
        Json(BoardDevice {
            device: issued,
            account: BoardAccountView::of(account),
        }),
    )
        .into_response())
}

async fn api_account(state: &WebState, id: TenantId, account: &str) -> Result<Response> {
    let account = board::account(&state.pool, id, account)
        .await?
        .ok_or(Error::NotFound)?;
    Ok(Json(BoardAccountView::of(account)).into_response())
}

#[utoipa::path(
    post,
    path = "/customers/{id}/board/link",
    operation_id = "linkBoardDevice",
    summary = "Link an account to an existing device of the customer",
    request_body = AccountAction,
    responses((status = 200, description = "The account", body = BoardAccountView)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
async fn api_link(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(input): ApiJson<AccountAction>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let device = input.device_id()?;
    board::link_device(
        &state.pool,
        id,
        &input.account,
        device,
        &audit_actor(&actor),
    )
    .await?;
    api_account(&state, id, &input.account).await
}

#[utoipa::path(
    post,
    path = "/customers/{id}/board/ignore",
    operation_id = "ignoreBoardAccount",
    summary = "Set an account aside with a reason",
    request_body = AccountAction,
    responses((status = 200, description = "The account", body = BoardAccountView)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
async fn api_ignore(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(input): ApiJson<AccountAction>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    let reason = input.reason.as_deref().unwrap_or("");
    board::ignore(
        &state.pool,
        id,
        &input.account,
        reason,
        &audit_actor(&actor),
    )
    .await?;
    api_account(&state, id, &input.account).await
}

#[utoipa::path(
    post,
    path = "/customers/{id}/board/reopen",
    operation_id = "reopenBoardAccount",
    summary = "Take an ignored or done account back",
    request_body = AccountAction,
    responses((status = 200, description = "The account", body = BoardAccountView)),
    extensions(("x-mailbridge-role" = json!("technician")))
)]
async fn api_reopen(
    State(state): State<WebState>,
    actor: Actor,
    Path(id): Path<TenantId>,
    ApiJson(input): ApiJson<AccountAction>,
) -> Result<Response> {
    actor.require(Permission::ManageDevices)?;
    board::reopen(&state.pool, id, &input.account, &audit_actor(&actor)).await?;
    api_account(&state, id, &input.account).await
}

#[utoipa::path(
    get,
    path = "/readiness",
    operation_id = "getReadiness",
    summary = "Every customer's readiness for Microsoft's deadline, most at risk first, with the dates",
    params(OverviewQuery),
    responses((status = 200, description = "The readiness", body = ReadinessReport)),
    extensions(("x-mailbridge-role" = json!("readonly")))
)]
async fn api_readiness(
    State(state): State<WebState>,
    actor: Actor,
    Query(query): Query<OverviewQuery>,
) -> Result<Response> {
    actor.require(Permission::View)?;
    let rows = readiness(&state, &actor, &query).await?;
    let today = Utc::now().date_naive();
    let deadlines = state
        .deadlines
        .all
        .iter()
        .map(|d| DeadlineView {
            days_left: d.days_left(today),
            deadline: d.clone(),
        })
        .collect();
    Ok(Json(ReadinessReport {
        deadlines,
        deadlines_origin: state.deadlines.origin.clone(),
        totals: totals(&rows),
        customers: rows
            .into_iter()
            .map(|r| ReadinessView {
                no_data: r.unknown(),
                readiness: r,
            })
            .collect(),
    })
    .into_response())
}

/// A time for the board's cells.
pub fn day(t: &Tr, at: &Option<DateTime<Utc>>) -> String {
    match (at, t.lang()) {
        (None, _) => "–".to_owned(),
        (Some(at), Lang::De) => at.format("%d.%m.%Y").to_string(),
        (Some(at), Lang::En) => at.format("%Y-%m-%d").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_dates_read_and_count_down() {
        let d = Deadlines::parse(assets::MICROSOFT_DEADLINES, "built-in".into()).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let next = d.next(today).unwrap();
        assert_eq!(next.id, "default-off");
        assert_eq!(next.days_left(today), Some(29));
        assert!(
            d.all
                .iter()
                .any(|d| d.date.is_none() && d.expected.is_some())
        );
        assert!(d.all.iter().all(|d| d.source.starts_with("https://")));
    }

    #[test]
    fn a_bad_dates_file_is_refused_naming_the_fault() {
        let bad = "[[deadline]]\nid = \"x\"\ntitle = \"t\"\nsource = \"https://e.example\"\n";
        assert!(
            Deadlines::parse(bad, "f".into())
                .unwrap_err()
                .contains("date or an expected")
        );
        let bad = "[[deadline]]\nid = \"x\"\ntitle = \"t\"\ndate = \"31.12.2026\"\nsource = \"https://e.example\"\n";
        assert!(Deadlines::parse(bad, "f".into()).is_err());
        let bad = "[[deadline]]\nid = \"x\"\ntitle = \"t\"\ndate = \"2026-12-31\"\nsource = \"http://e.example\"\n";
        assert!(
            Deadlines::parse(bad, "f".into())
                .unwrap_err()
                .contains("https://")
        );
    }

    #[test]
    fn core_texts_have_their_german() {
        let de = Tr::new(Lang::De);
        for &stage in Stage::VARIANTS {
            assert!(CORE_TEXTS.contains(&stage.label()), "{}", stage.label());
            assert_ne!(de.t(stage.label()), stage.label(), "{}", stage.label());
        }
        for bad in [
            "Sender address,Messages sent\nnobody,1\n",
            "Sender address,Messages sent\na@b.example,x\n",
            "Sender address,Messages sent,Authentication protocol\na@b.example,1,NTLM\n",
            "Date,Sender address,Messages sent\nnever,a@b.example,1\n",
            "PrimarySmtpAddress,SmtpAuthEnabled\na@b.example,maybe\n",
        ] {
            let Err(ReportError::Row { problem, .. }) = smtp_auth_report::parse(bad.as_bytes())
            else {
                panic!("{bad} was read");
            };
            assert!(CORE_TEXTS.contains(&problem), "{problem}");
            assert_ne!(de.t(problem), problem, "{problem}");
        }
    }
}
