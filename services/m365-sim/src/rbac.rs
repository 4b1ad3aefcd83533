//! Exchange Online RBAC for Applications, per tenant
//! (learn.microsoft.com/exchange/permissions-exo/application-rbac): service principal
//! pointers (`New-ServicePrincipal -AppId -ObjectId`), management scopes
//! (`New-ManagementScope -RecipientRestrictionFilter`), and role assignments that give
//! an app an application role such as `Application Mail.Send` over the mailboxes of one
//! scope (`New-ManagementRoleAssignment -App -Role -CustomResourceScope`).
//!
//! It owns the one permission decision every mailbox endpoint of the simulator asks,
//! [`Directory::mailbox_access`]: a tenant-wide Entra app role in the token allows every
//! mailbox (RBAC grants add to Entra's, they do not narrow them); otherwise an RBAC
//! assignment whose scope contains the mailbox allows it; otherwise Graph answers
//! `403 ErrorAccessDenied` and SMTP `535 5.7.3`.
//!
//! It also owns a stand-in for an Exchange Online PowerShell session
//! (`POST /_sim/tenants/{tenant}/exchange-powershell`): the script text an admin would
//! paste, executed line by line with the validation Exchange applies. Where Learn is
//! not explicit the stand-in is strict: it stops at the first error, naming the line.
//!
//! Over 500 lines: 78 of them are unit tests; the rest is the RBAC model, the one
//! access decision that reads it, and the PowerShell stand-in (about 500 lines: the
//! line parser and the cmdlets) that is the only way to change it.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    Directory, ROLE_MAIL_READ_WRITE, ROLE_MAIL_SEND, ROLE_SMTP_SEND_AS_APP,
    directory::State as DirectoryState,
};

/// The Exchange application roles the simulator models, and the Entra app role each
/// one mirrors.
pub const APPLICATION_ROLES: &[(&str, &str)] = &[
    ("Application Mail.Send", ROLE_MAIL_SEND),
    ("Application Mail.ReadWrite", ROLE_MAIL_READ_WRITE),
    ("Application Mail.Read", "Mail.Read"),
    ("Application SMTP.SendAsApp", ROLE_SMTP_SEND_AS_APP),
];

/// What a request wants to do with a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxNeed {
    /// Graph `sendMail` and sending a draft.
    Send,
    /// Graph drafts, attachments, moving messages.
    ReadWrite,
    /// Graph reading messages.
    Read,
    /// SMTP AUTH XOAUTH2 as the mailbox.
    SmtpSendAs,
}

impl MailboxNeed {
    /// The Entra app roles (tenant-wide) that satisfy the need.
    fn entra_roles(self) -> &'static [&'static str] {
        match self {
            Self::Send => &[ROLE_MAIL_SEND],
            Self::ReadWrite => &[ROLE_MAIL_READ_WRITE],
            Self::Read => &[ROLE_MAIL_READ_WRITE, "Mail.Read"],
            Self::SmtpSendAs => &[ROLE_SMTP_SEND_AS_APP],
        }
    }

    /// The Exchange application roles (scoped) that satisfy the need.
    fn exchange_roles(self) -> &'static [&'static str] {
        match self {
            Self::Send => &["Application Mail.Send"],
            Self::ReadWrite => &["Application Mail.ReadWrite"],
            Self::Read => &["Application Mail.ReadWrite", "Application Mail.Read"],
            Self::SmtpSendAs => &["Application SMTP.SendAsApp"],
        }
    }
}

/// Why access to a mailbox was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDenied {
    /// Neither a tenant-wide role nor an RBAC assignment covers the mailbox.
    NotGranted,
}

/// A service principal pointer in Exchange (`New-ServicePrincipal`).
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeServicePrincipal {
    pub app_id: String,
    pub object_id: Uuid,
    pub display_name: String,
}

/// Which recipient property a scope's filter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FilterProperty {
    PrimarySmtpAddress,
    UserPrincipalName,
}

/// A management scope: `<Property> -eq '<value>'`.
#[derive(Debug, Clone, Serialize)]
pub struct ManagementScope {
    pub name: String,
    pub property: FilterProperty,
    /// Lower-cased.
    pub value: String,
    pub filter: String,
}

impl ManagementScope {
    /// Whether the mailbox (lower-cased address) is a recipient of the scope. The
    /// simulator's mailboxes have one address, which is also their user principal name.
    fn contains(&self, mailbox: &str) -> bool {
        self.value == mailbox
    }
}

/// `New-ManagementRoleAssignment -App … -Role … -CustomResourceScope …`.
#[derive(Debug, Clone, Serialize)]
pub struct RoleAssignment {
    pub name: String,
    /// The Exchange service principal's app id.
    pub app_id: String,
    pub role: String,
    pub scope: String,
}

/// One tenant's RBAC for Applications configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExchangeRbac {
    pub service_principals: Vec<ExchangeServicePrincipal>,
    pub scopes: Vec<ManagementScope>,
    pub assignments: Vec<RoleAssignment>,
}

/// The object id of an app's service principal (enterprise application) in a tenant:
/// stable per (tenant, app), as in Entra, and the `oid` of its app-only tokens.
pub(crate) fn service_principal_object_id(tenant: Uuid, client_id: &str) -> Uuid {
    Uuid::new_v5(&tenant, client_id.as_bytes())
}

/// The permission decision (see the module documentation): `roles` are the token's
/// (tenant-wide) app roles, `mailbox` the mailbox asked for.
pub(crate) fn mailbox_access(
    state: &DirectoryState,
    tenant: Uuid,
    app_id: &str,
    roles: &[String],
    mailbox: &str,
    need: MailboxNeed,
) -> Result<(), AccessDenied> {
    let mailbox = mailbox.to_ascii_lowercase();
    let tenant_wide = roles
        .iter()
        .any(|role| need.entra_roles().contains(&role.as_str()));
    // SMTP AUTH with the Entra role also needs the mailbox permission in Exchange
    // (FullAccess / SendAs for the app's service principal).
    let tenant_wide = tenant_wide
        && (need != MailboxNeed::SmtpSendAs
            || state
                .exchange_access
                .get(&(tenant, app_id.to_owned()))
                .is_some_and(|mailboxes| mailboxes.contains(&mailbox)));
    if tenant_wide {
        return Ok(());
    }
    let Some(rbac) = state.exchange_rbac.get(&tenant) else {
        return Err(AccessDenied::NotGranted);
    };
    let exists = state
        .tenants
        .get(&tenant)
        .is_some_and(|t| t.mailboxes.contains_key(&mailbox));
    let granted = exists
        && rbac.assignments.iter().any(|a| {
            a.app_id.eq_ignore_ascii_case(app_id)
                && need.exchange_roles().contains(&a.role.as_str())
                && rbac
                    .scopes
                    .iter()
                    .find(|s| s.name.eq_ignore_ascii_case(&a.scope))
                    .is_some_and(|s| s.contains(&mailbox))
        });
    if granted {
        Ok(())
    } else {
        Err(AccessDenied::NotGranted)
    }
}

pub fn router() -> Router<Arc<Directory>> {
    Router::new().route(
        "/_sim/tenants/{tenant_id}/exchange-powershell",
        post(run_script),
    )
}

/// What a script run answers: the lines' output, and the first error.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptRun {
    pub output: Vec<String>,
    pub error: Option<ScriptError>,
}

/// The first error of a script, with the line it is on (1-based).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ScriptError {
    pub line: usize,
    pub message: String,
}

async fn run_script(
    State(directory): State<Arc<Directory>>,
    Path(tenant_id): Path<Uuid>,
    script: String,
) -> Response {
    let run = directory.run_exchange_powershell(tenant_id, &script);
    let status = if run.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, Json(run)).into_response()
}

/// A parsed command: its name and `-Parameter value` pairs (a switch has no value).
struct Command {
    name: String,
    parameters: Vec<(String, Option<String>)>,
}

/// Splits a PowerShell command line into words, honouring '…' and "…" quoting.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '\'' || c == '"' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == quote {
                    // A doubled quote is a literal one.
                    if chars.peek() == Some(&quote) {
                        chars.next();
                        word.push(quote);
                        continue;
                    }
                    closed = true;
                    break;
                }
                if quote == '"' && c == '$' {
                    return Err(
                        "variables are not supported by this Exchange PowerShell stand-in".into(),
                    );
                }
                word.push(c);
            }
            if !closed {
                return Err(format!("The string is missing the terminator: {quote}."));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '$' {
                    return Err(
                        "variables are not supported by this Exchange PowerShell stand-in".into(),
                    );
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

fn parse_command(line: &str) -> Result<Command, String> {
    // A trailing `| Format-Table` / `| Format-List` only formats the output.
    let line = match line.split_once('|') {
        Some((command, formatter)) => {
            let formatter = formatter.trim();
            if !["Format-Table", "Format-List", "ft", "fl"]
                .iter()
                .any(|f| formatter.eq_ignore_ascii_case(f))
            {
                return Err(format!(
                    "only '| Format-Table' and '| Format-List' may follow a command here, not '| {formatter}'"
                ));
            }
            command
        }
        None => line,
    };
    let mut words = words(line)?.into_iter();
    let name = words.next().unwrap_or_default();
    let mut parameters: Vec<(String, Option<String>)> = Vec::new();
    let mut positional = Vec::new();
    let mut pending: Option<String> = None;
    for word in words {
        if let Some(parameter) = word
            .strip_prefix('-')
            .filter(|p| p.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        {
            if let Some(previous) = pending.take() {
                parameters.push((previous, None));
            }
            pending = Some(parameter.trim_end_matches(':').to_owned());
        } else if let Some(parameter) = pending.take() {
            parameters.push((parameter, Some(word)));
        } else {
            positional.push(word);
        }
    }
    if let Some(previous) = pending.take() {
        parameters.push((previous, None));
    }
    // The only positional parameter the supported cmdlets take is -Identity.
    match positional.as_slice() {
        [] => {}
        [identity] => parameters.push(("Identity".into(), Some(identity.clone()))),
        _ => {
            return Err(format!(
                "A positional parameter cannot be found that accepts argument '{}'.",
                positional[1]
            ));
        }
    }
    Ok(Command { name, parameters })
}

impl Command {
    /// Checks that only `allowed` parameters are used (case-insensitively; common
    /// switches such as -Confirm:$false are not supported: they need variables).
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        for (name, _) in &self.parameters {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return Err(format!(
                    "A parameter cannot be found that matches parameter name '{name}'."
                ));
            }
        }
        Ok(())
    }

    fn value(&self, name: &str) -> Result<Option<&str>, String> {
        match self
            .parameters
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            None => Ok(None),
            Some((_, Some(value))) => Ok(Some(value.as_str())),
            Some((n, None)) => Err(format!(
                "Missing an argument for parameter '{n}'. Specify a parameter of type 'System.String' and try again."
            )),
        }
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.value(name)?.ok_or_else(|| {
            format!(
                "Cannot process command because of one or more missing mandatory parameters: {name}."
            )
        })
    }
}

/// `<Property> -eq '<value>'` (the only filter form the simulator evaluates).
fn parse_filter(filter: &str) -> Result<(FilterProperty, String), String> {
    let unsupported = || {
        format!(
            "The recipient restriction filter \"{filter}\" is not supported by the simulator: use \"PrimarySmtpAddress -eq 'mailbox@domain'\" or \"UserPrincipalName -eq 'mailbox@domain'\"."
        )
    };
    let parts = words(filter).map_err(|_| unsupported())?;
    let [property, operator, value] = parts.as_slice() else {
        return Err(unsupported());
    };
    if !operator.eq_ignore_ascii_case("-eq") || value.is_empty() {
        return Err(unsupported());
    }
    let property = if property.eq_ignore_ascii_case("PrimarySmtpAddress") {
        FilterProperty::PrimarySmtpAddress
    } else if property.eq_ignore_ascii_case("UserPrincipalName") {
        FilterProperty::UserPrincipalName
    } else {
        return Err(unsupported());
    };
    Ok((property, value.to_ascii_lowercase()))
}

impl Directory {
    /// The permission decision of every mailbox endpoint (see the module docs).
    pub fn mailbox_access(
        &self,
        tenant: Uuid,
        app_id: &str,
        roles: &[String],
        mailbox: &str,
        need: MailboxNeed,
    ) -> Result<(), AccessDenied> {
        mailbox_access(&self.lock(), tenant, app_id, roles, mailbox, need)
    }

    /// The object id of `client_id`'s service principal in `tenant`, if it has one.
    pub fn service_principal_id(&self, tenant: Uuid, client_id: &str) -> Option<Uuid> {
        self.lock()
            .tenants
            .get(&tenant)
            .filter(|t| t.consents.contains_key(client_id))
            .map(|_| service_principal_object_id(tenant, client_id))
    }

    /// A tenant's RBAC for Applications configuration.
    pub fn exchange_rbac(&self, tenant: Uuid) -> ExchangeRbac {
        self.lock()
            .exchange_rbac
            .get(&tenant)
            .cloned()
            .unwrap_or_default()
    }

    /// Runs an Exchange Online PowerShell script in `tenant`, line by line, stopping
    /// at the first error. Changes made by the lines before it stay (as in a real
    /// session).
    pub fn run_exchange_powershell(&self, tenant: Uuid, script: &str) -> ScriptRun {
        let mut output = Vec::new();
        let mut connected = false;
        let mut state = self.lock();
        let mut number = 0;
        let mut lines = script.lines().peekable();
        while let Some(first) = lines.next() {
            number += 1;
            let start = number;
            // A backtick at the end of a line continues the command on the next.
            let mut line = first.trim_end().to_owned();
            while line.ends_with('`') {
                line.pop();
                match lines.next() {
                    Some(next) => {
                        number += 1;
                        line.push(' ');
                        line.push_str(next.trim());
                    }
                    None => break,
                }
            }
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message: String| ScriptRun {
                output: output.clone(),
                error: Some(ScriptError {
                    line: start,
                    message,
                }),
            };
            let command = match parse_command(line) {
                Ok(command) => command,
                Err(message) => return fail(message),
            };
            let name = command.name.to_ascii_lowercase();
            if !connected && name != "connect-exchangeonline" && name != "import-module" {
                return fail(format!(
                    "The term '{}' is not recognized as a name of a cmdlet, function, script file, or executable program. (Run Connect-ExchangeOnline first.)",
                    command.name
                ));
            }
            let result = match name.as_str() {
                "import-module" => command.only(&["Identity", "Name"]).map(|_| Vec::new()),
                "connect-exchangeonline" => command
                    .only(&[
                        "UserPrincipalName",
                        "Organization",
                        "ShowBanner",
                        "DelegatedOrganization",
                    ])
                    .map(|_| {
                        connected = true;
                        Vec::new()
                    }),
                "disconnect-exchangeonline" => command.only(&[]).map(|_| {
                    connected = false;
                    Vec::new()
                }),
                "new-serviceprincipal" => new_service_principal(&mut state, tenant, &command),
                "new-managementscope" => new_management_scope(&mut state, tenant, &command),
                "new-managementroleassignment" => new_role_assignment(&mut state, tenant, &command),
                "test-serviceprincipalauthorization" => {
                    test_authorization(&state, tenant, &command)
                }
                _ => Err(format!(
                    "The term '{}' is not recognized as a name of a cmdlet supported by the simulator's Exchange Online PowerShell (Connect-ExchangeOnline, New-ServicePrincipal, New-ManagementScope, New-ManagementRoleAssignment, Test-ServicePrincipalAuthorization, Disconnect-ExchangeOnline).",
                    command.name
                )),
            };
            match result {
                Ok(lines) => output.extend(lines),
                Err(message) => return fail(message),
            }
        }
        ScriptRun {
            output,
            error: None,
        }
    }
}

fn new_service_principal(
    state: &mut DirectoryState,
    tenant: Uuid,
    command: &Command,
) -> Result<Vec<String>, String> {
    command.only(&["AppId", "ObjectId", "DisplayName", "Organization"])?;
    let app_id = command.required("AppId")?.to_ascii_lowercase();
    let object_id = command.required("ObjectId")?;
    let object_id = Uuid::parse_str(object_id)
        .map_err(|_| format!("Cannot bind parameter 'ObjectId': '{object_id}' is not a GUID."))?;
    let registered = state
        .tenants
        .get(&tenant)
        .and_then(|t| t.consents.keys().find(|c| c.eq_ignore_ascii_case(&app_id)))
        .cloned();
    let Some(app_id) = registered else {
        return Err(format!(
            "The service principal with AppId '{app_id}' was not found in Microsoft Entra ID of this organization. Grant admin consent to the application first (it creates the enterprise application)."
        ));
    };
    let expected = service_principal_object_id(tenant, &app_id);
    if object_id != expected {
        return Err(format!(
            "The ObjectId '{object_id}' is not the object id of the service principal (enterprise application) of AppId '{app_id}' in this organization. Use the Object ID from Entra admin center → Enterprise applications, not the app registration's."
        ));
    }
    let display_name = command
        .value("DisplayName")?
        .map(str::to_owned)
        .or_else(|| state.apps.get(&app_id).and_then(|a| a.display_name.clone()))
        .unwrap_or_else(|| app_id.clone());
    let rbac = state.exchange_rbac.entry(tenant).or_default();
    if rbac
        .service_principals
        .iter()
        .any(|sp| sp.app_id.eq_ignore_ascii_case(&app_id))
    {
        return Err(format!(
            "A service principal with AppId '{app_id}' already exists in this organization."
        ));
    }
    rbac.service_principals.push(ExchangeServicePrincipal {
        app_id: app_id.clone(),
        object_id,
        display_name: display_name.clone(),
    });
    Ok(vec![format!(
        "DisplayName: {display_name}  ObjectId: {object_id}  AppId: {app_id}"
    )])
}

fn new_management_scope(
    state: &mut DirectoryState,
    tenant: Uuid,
    command: &Command,
) -> Result<Vec<String>, String> {
    command.only(&["Name", "RecipientRestrictionFilter"])?;
    let name = command.required("Name")?.to_owned();
    let filter = command.required("RecipientRestrictionFilter")?.to_owned();
    let (property, value) = parse_filter(&filter)?;
    let rbac = state.exchange_rbac.entry(tenant).or_default();
    if rbac
        .scopes
        .iter()
        .any(|s| s.name.eq_ignore_ascii_case(&name))
    {
        return Err(format!(
            "The management scope \"{name}\" already exists. Choose another name, or remove it first (Remove-ManagementScope)."
        ));
    }
    rbac.scopes.push(ManagementScope {
        name: name.clone(),
        property,
        value,
        filter: filter.clone(),
    });
    Ok(vec![format!(
        "Name: {name}  ScopeRestrictionType: RecipientScope  RecipientFilter: {filter}"
    )])
}

/// The Exchange service principal an `-App`/`-Identity` value names: its app id,
/// object id or display name.
fn find_service_principal<'a>(
    rbac: &'a ExchangeRbac,
    identity: &str,
) -> Option<&'a ExchangeServicePrincipal> {
    rbac.service_principals.iter().find(|sp| {
        sp.app_id.eq_ignore_ascii_case(identity)
            || sp.object_id.to_string().eq_ignore_ascii_case(identity)
            || sp.display_name.eq_ignore_ascii_case(identity)
    })
}

fn new_role_assignment(
    state: &mut DirectoryState,
    tenant: Uuid,
    command: &Command,
) -> Result<Vec<String>, String> {
    command.only(&["App", "Role", "CustomResourceScope", "Name"])?;
    let app = command.required("App")?;
    let role = command.required("Role")?;
    let scope = command.value("CustomResourceScope")?.ok_or_else(|| {
        "This simulator assigns application roles only with -CustomResourceScope (an assignment without a scope would cover the whole organization)."
            .to_owned()
    })?;
    let Some((role, _)) = APPLICATION_ROLES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(role))
    else {
        return Err(format!(
            "The role \"{role}\" isn't an application role this simulator knows ({}).",
            APPLICATION_ROLES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let rbac = state.exchange_rbac.entry(tenant).or_default();
    let Some(sp) = find_service_principal(rbac, app) else {
        return Err(format!(
            "The service principal \"{app}\" couldn't be found in Exchange. Create its pointer with New-ServicePrincipal first."
        ));
    };
    let Some(scope) = rbac
        .scopes
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(scope))
    else {
        return Err(format!(
            "The management scope \"{scope}\" couldn't be found. Create it with New-ManagementScope first."
        ));
    };
    let name = match command.value("Name")? {
        Some(name) => name.to_owned(),
        None => format!("{role}-{}", sp.display_name),
    };
    if rbac
        .assignments
        .iter()
        .any(|a| a.name.eq_ignore_ascii_case(&name))
    {
        return Err(format!(
            "The role assignment \"{name}\" already exists. Choose another -Name."
        ));
    }
    let assignment = RoleAssignment {
        name: name.clone(),
        app_id: sp.app_id.clone(),
        role: (*role).to_owned(),
        scope: scope.name.clone(),
    };
    rbac.assignments.push(assignment);
    Ok(vec![format!(
        "Name: {name}  Role: {role}  RoleAssigneeType: ServicePrincipal  CustomResourceScope: {}",
        command.value("CustomResourceScope")?.unwrap_or_default()
    )])
}

fn test_authorization(
    state: &DirectoryState,
    tenant: Uuid,
    command: &Command,
) -> Result<Vec<String>, String> {
    command.only(&["Identity", "Resource"])?;
    let identity = command.required("Identity")?;
    let empty = ExchangeRbac::default();
    let rbac = state.exchange_rbac.get(&tenant).unwrap_or(&empty);
    let Some(sp) = find_service_principal(rbac, identity) else {
        return Err(format!(
            "The service principal \"{identity}\" couldn't be found in Exchange."
        ));
    };
    let resource = command.value("Resource")?.map(str::to_ascii_lowercase);
    if let Some(mailbox) = &resource {
        let exists = state
            .tenants
            .get(&tenant)
            .is_some_and(|t| t.mailboxes.contains_key(mailbox));
        if !exists {
            return Err(format!(
                "The operation couldn't be performed because object '{mailbox}' couldn't be found."
            ));
        }
    }
    let scopes: HashMap<String, &ManagementScope> = rbac
        .scopes
        .iter()
        .map(|s| (s.name.to_ascii_lowercase(), s))
        .collect();
    let mut lines =
        vec!["RoleName | GrantedPermissions | AllowedResourceScope | ScopeType | InScope".into()];
    for assignment in rbac
        .assignments
        .iter()
        .filter(|a| a.app_id.eq_ignore_ascii_case(&sp.app_id))
    {
        let in_scope = match (
            &resource,
            scopes.get(&assignment.scope.to_ascii_lowercase()),
        ) {
            (None, _) => "Not Run".to_owned(),
            (Some(mailbox), Some(scope)) => if scope.contains(mailbox) {
                "True"
            } else {
                "False"
            }
            .to_owned(),
            (Some(_), None) => "False".to_owned(),
        };
        lines.push(format!(
            "{} | {} | {} | CustomRecipientScope | {in_scope}",
            assignment.role,
            assignment.role.trim_start_matches("Application "),
            assignment.scope,
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_other_than_an_equality_on_an_address_are_refused() {
        assert_eq!(
            parse_filter("PrimarySmtpAddress -eq 'Scanner@Praxis.example'").unwrap(),
            (
                FilterProperty::PrimarySmtpAddress,
                "scanner@praxis.example".into()
            )
        );
        assert!(parse_filter("UserPrincipalName -eq 'a@b.example'").is_ok());
        assert!(parse_filter("Department -eq 'Lab'").is_err());
        assert!(parse_filter("PrimarySmtpAddress -like '*@b.example'").is_err());
        assert!(parse_filter("PrimarySmtpAddress -eq 'a@b' -or Alias -eq 'x'").is_err());
    }

    #[test]
    fn one_decision_for_every_mailbox_endpoint() {
        let directory = Directory::new().unwrap();
        let tenant = Uuid::new_v4();
        let app = "11111111-2222-3333-4444-555555555555";
        directory.add_tenant(tenant, &["scan@p.example", "dr@p.example"]);
        directory.consent(tenant, app, &[]);
        let sp = directory.service_principal_id(tenant, app).unwrap();
        let run = directory.run_exchange_powershell(
            tenant,
            &format!(
                "Connect-ExchangeOnline\nNew-ServicePrincipal -AppId {app} -ObjectId {sp}\n\
                 New-ManagementScope -Name scan -RecipientRestrictionFilter \"UserPrincipalName -eq 'scan@p.example'\"\n\
                 New-ManagementRoleAssignment -App {app} -Role 'Application Mail.Send' -CustomResourceScope scan\n\
                 New-ManagementRoleAssignment -App {sp} -Role 'Application SMTP.SendAsApp' -CustomResourceScope scan"
            ),
        );
        assert!(run.error.is_none(), "{run:?}");
        let access = |roles: &[&str], mailbox: &str, need| {
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            directory
                .mailbox_access(tenant, app, &roles, mailbox, need)
                .is_ok()
        };
        use MailboxNeed::*;
        assert!(access(&[], "scan@p.example", Send));
        assert!(access(&[], "SCAN@p.example", SmtpSendAs));
        assert!(!access(&[], "scan@p.example", ReadWrite));
        assert!(!access(&[], "dr@p.example", Send));
        assert!(!access(&[], "dr@p.example", SmtpSendAs));
        // Tenant-wide roles reach every mailbox; SMTP's also needs FullAccess/SendAs.
        assert!(access(&["Mail.Send"], "dr@p.example", Send));
        assert!(access(&["Mail.ReadWrite"], "dr@p.example", Read));
        assert!(!access(&["SMTP.SendAsApp"], "dr@p.example", SmtpSendAs));
        directory.grant_exchange_access(tenant, app, "dr@p.example");
        assert!(access(&["SMTP.SendAsApp"], "dr@p.example", SmtpSendAs));
        // Another app gets nothing from this app's assignments.
        assert!(
            directory
                .mailbox_access(tenant, "other", &[], "scan@p.example", Send)
                .is_err()
        );
    }

    #[test]
    fn commands_are_split_into_parameters() {
        let command = parse_command(
            "New-ManagementScope -Name \"mailbridge Praxis\" -RecipientRestrictionFilter \"PrimarySmtpAddress -eq 'a@b.example'\"",
        )
        .unwrap();
        assert_eq!(command.name, "New-ManagementScope");
        assert_eq!(
            command.value("RecipientRestrictionFilter").unwrap(),
            Some("PrimarySmtpAddress -eq 'a@b.example'")
        );
        assert!(parse_command("Get-Mailbox | Remove-Mailbox").is_err());
        assert!(parse_command("New-ServicePrincipal -AppId $app").is_err());
    }
}
