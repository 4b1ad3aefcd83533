//! Microsoft Graph's sign-in log: `GET /v1.0/auditLogs/signIns`, as the migration
//! board reads it to find accounts still logging in to SMTP AUTH with a password
//! (`clientAppUsed` "Authenticated SMTP").
//!
//! Checks in Graph's order: the bearer token (401 `InvalidAuthenticationToken`), the
//! application permission `AuditLog.Read.All` (403 `Authorization_RequestDenied`),
//! Entra ID P1 (403 `Authentication_RequestFromNonPremiumTenantOrB2CTenant`), then
//! the query. `$filter` accepts what the sign-in resource documents for these
//! properties — `clientAppUsed eq '…'`, `userPrincipalName eq '…'`, `status/errorCode
//! eq N`, `createdDateTime ge|gt|le|lt <ISO 8601>` joined by `and` — and anything
//! else is a 400 `Request_UnsupportedQuery`. Newest first, at most and by default
//! 1,000 a page (`$top` lowers it), further pages by `@odata.nextLink`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    Directory,
    graph::{graph_error, validate_token},
};

/// The application permission that reads the sign-in log.
pub const ROLE_AUDIT_LOG_READ: &str = "AuditLog.Read.All";

/// Graph's largest (and default) page of sign-ins.
const PAGE_MAX: usize = 1000;

/// One sign-in of a tenant's log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimSignIn {
    pub id: String,
    pub created_date_time: DateTime<Utc>,
    pub user_principal_name: String,
    pub user_id: Uuid,
    pub app_display_name: String,
    pub ip_address: String,
    pub client_app_used: String,
    pub status: SignInStatus,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInStatus {
    pub error_code: i64,
    pub failure_reason: Option<String>,
}

impl SimSignIn {
    /// A successful password login to SMTP AUTH (Basic), as Entra logs it.
    pub fn authenticated_smtp(upn: &str, ip: &str, at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::new_v4().to_string(),
            created_date_time: at,
            user_principal_name: upn.to_owned(),
            user_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, upn.to_ascii_lowercase().as_bytes()),
            app_display_name: "Office 365 Exchange Online".to_owned(),
            ip_address: ip.to_owned(),
            client_app_used: "Authenticated SMTP".to_owned(),
            status: SignInStatus {
                error_code: 0,
                failure_reason: None,
            },
        }
    }
}

impl Directory {
    /// Whether the tenant has Entra ID P1 (needed to read sign-in logs via Graph).
    pub fn set_premium(&self, tenant_id: Uuid, premium: bool) {
        self.lock().tenants.entry(tenant_id).or_default().premium = premium;
    }

    /// Adds sign-ins to a tenant's log.
    pub fn add_sign_ins(&self, tenant_id: Uuid, sign_ins: impl IntoIterator<Item = SimSignIn>) {
        self.lock()
            .tenants
            .entry(tenant_id)
            .or_default()
            .sign_ins
            .extend(sign_ins);
    }
}

pub fn router() -> Router<Arc<Directory>> {
    Router::new().route("/v1.0/auditLogs/signIns", get(list))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(rename = "$filter")]
    filter: Option<String>,
    #[serde(rename = "$top")]
    top: Option<String>,
    #[serde(rename = "$skiptoken")]
    skip_token: Option<String>,
}

/// One clause of `$filter`.
#[derive(Debug, PartialEq)]
enum Clause {
    ClientApp(String),
    User(String),
    ErrorCode(i64),
    Created(&'static str, DateTime<Utc>),
}

impl Clause {
    fn holds(&self, s: &SimSignIn) -> bool {
        match self {
            Self::ClientApp(app) => s.client_app_used == *app,
            Self::User(upn) => s.user_principal_name.eq_ignore_ascii_case(upn),
            Self::ErrorCode(code) => s.status.error_code == *code,
            Self::Created(op, at) => match *op {
                "ge" => s.created_date_time >= *at,
                "gt" => s.created_date_time > *at,
                "le" => s.created_date_time <= *at,
                _ => s.created_date_time < *at,
            },
        }
    }
}

fn quoted(value: &str) -> Option<String> {
    let inner = value.strip_prefix('\'')?.strip_suffix('\'')?;
    // OData escapes a quote by doubling it.
    Some(inner.replace("''", "'"))
}

/// Parses `$filter`; `Err` is Graph's message for an unsupported query.
fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = Vec::new();
    for part in filter.split(" and ") {
        let mut words = part.trim().splitn(3, ' ');
        let (Some(property), Some(op), Some(value)) = (words.next(), words.next(), words.next())
        else {
            return Err(format!("Invalid filter clause: {part}"));
        };
        let value = value.trim();
        let clause = match (property, op) {
            ("clientAppUsed", "eq") => quoted(value).map(Clause::ClientApp),
            ("userPrincipalName", "eq") => quoted(value).map(Clause::User),
            ("status/errorCode", "eq") => value.parse().ok().map(Clause::ErrorCode),
            ("createdDateTime", op @ ("ge" | "gt" | "le" | "lt")) => {
                DateTime::parse_from_rfc3339(value).ok().map(|at| {
                    let op: &'static str = match op {
                        "ge" => "ge",
                        "gt" => "gt",
                        "le" => "le",
                        _ => "lt",
                    };
                    Clause::Created(op, at.with_timezone(&Utc))
                })
            }
            _ => None,
        };
        clauses.push(clause.ok_or_else(|| format!("Invalid filter clause: {part}"))?);
    }
    Ok(clauses)
}

async fn list(
    State(directory): State<Arc<Directory>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let claims = match validate_token(&directory, &headers) {
        Ok(c) => c,
        Err(message) => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
        }
    };
    if !claims.roles.iter().any(|r| r == ROLE_AUDIT_LOG_READ) {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let Ok(tenant_id) = Uuid::parse_str(&claims.tid) else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        );
    };
    let premium = directory
        .lock()
        .tenants
        .get(&tenant_id)
        .is_some_and(|t| t.premium);
    if !premium {
        return graph_error(
            StatusCode::FORBIDDEN,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        );
    }
    let clauses = match query.filter.as_deref().map(parse_filter).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(message) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                &message,
            );
        }
    };
    let top = match query.top.as_deref().map(str::parse::<usize>) {
        None => PAGE_MAX,
        Some(Ok(n)) if (1..=PAGE_MAX).contains(&n) => n,
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Invalid $top: between 1 and 1000.",
            );
        }
    };
    let skip = match query.skip_token.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                "Invalid $skiptoken.",
            );
        }
    };
    let mut matching: Vec<SimSignIn> = directory
        .lock()
        .tenants
        .get(&tenant_id)
        .map(|t| t.sign_ins.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| clauses.iter().all(|c| c.holds(s)))
        .collect();
    matching.sort_by_key(|s| std::cmp::Reverse(s.created_date_time));
    let page: Vec<&SimSignIn> = matching.iter().skip(skip).take(top).collect();
    let mut body = serde_json::json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#auditLogs/signIns",
        "value": page,
    });
    if skip + page.len() < matching.len() {
        let mut next = url::Url::parse(&format!("{}/v1.0/auditLogs/signIns", directory.base_url()))
            .expect("the simulator's URL");
        {
            let mut pairs = next.query_pairs_mut();
            if let Some(filter) = &query.filter {
                pairs.append_pair("$filter", filter);
            }
            pairs.append_pair("$top", &top.to_string());
            pairs.append_pair("$skiptoken", &(skip + page.len()).to_string());
        }
        body["@odata.nextLink"] = serde_json::Value::String(next.to_string());
    }
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_as_graph_documents_them_and_nothing_else() {
        let clauses = parse_filter(
            "clientAppUsed eq 'Authenticated SMTP' and createdDateTime ge 2026-11-02T00:00:00Z",
        )
        .unwrap();
        assert_eq!(clauses[0], Clause::ClientApp("Authenticated SMTP".into()));
        assert!(matches!(clauses[1], Clause::Created("ge", _)));
        assert!(parse_filter("clientAppUsed eq Authenticated SMTP").is_err());
        assert!(parse_filter("startswith(userPrincipalName,'a')").is_err());
        assert!(parse_filter("createdDateTime ge 2026-11-02").is_err());
        assert_eq!(
            parse_filter("userPrincipalName eq 'o''brien@x.example'").unwrap(),
            [Clause::User("o'brien@x.example".into())]
        );
    }
}
