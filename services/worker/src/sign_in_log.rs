//! The migration board's second source: each connected customer's Entra sign-in log,
//! read through Microsoft Graph (`GET /v1.0/auditLogs/signIns`, filtered on the
//! client app "Authenticated SMTP", the last 30 days), every
//! `MAILBRIDGE_SIGN_IN_LOG_INTERVAL_SECONDS`. Every sign-in there is a password login
//! to SMTP AUTH (Basic): an account that has one still needs moving, whether the
//! login succeeded or not. The facts go through the same import as an uploaded
//! report, so a read without an account's Basic use after its device was linked
//! moves it to done.
//!
//! It needs the application permission `AuditLog.Read.All` granted by the customer
//! and an Entra ID P1 licence in the customer's tenant; without them Graph answers
//! 403, which is recorded for the board to show and tried again a period later.
//! A customer is claimed with a lease in `smtp_auth_signin_reads`, so two worker
//! replicas never read one tenant at once, and a crashed worker's claim expires.

use mailbridge_core::ids::TenantId;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use mailbridge_core::{
    migration_board::{self, AuditActor},
    smtp_auth_report::{AccountUse, ParsedReport, ReportKind},
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    Worker,
    delivery::{CustomerGraph, CustomerGraphError},
};

/// The client app Entra names password logins to SMTP AUTH by.
pub const AUTHENTICATED_SMTP: &str = "Authenticated SMTP";
/// How far back each read looks (Entra keeps P1 sign-in logs for 30 days).
const LOOKBACK_DAYS: i64 = 30;
/// How long a claim on a customer lasts before another worker may take it.
const CLAIM: Duration = Duration::from_secs(600);
/// After a failure that is not a refusal (Graph unreachable …): the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(900);
/// At most this many pages (of up to 1,000 sign-ins) per read.
const MAX_PAGES: usize = 200;

#[derive(Debug, Deserialize)]
struct Page {
    value: Vec<SignIn>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignIn {
    created_date_time: DateTime<Utc>,
    user_principal_name: Option<String>,
    ip_address: Option<String>,
    client_app_used: Option<String>,
}

/// Why a read did not work.
#[derive(Debug)]
enum ReadError {
    /// Graph refused: no permission, no P1 (kept until the next period).
    Refused(String),
    /// Anything else (tried again sooner).
    Failed(String),
}

/// The sign-ins as board facts: per account, all its Basic logins.
fn accounts_of(sign_ins: &[SignIn]) -> ParsedReport {
    let mut accounts: BTreeMap<String, AccountUse> = BTreeMap::new();
    let mut rows = 0;
    for s in sign_ins {
        // The filter asked for these only; Graph's answer is checked all the same.
        if s.client_app_used.as_deref() != Some(AUTHENTICATED_SMTP) {
            continue;
        }
        let Some(upn) = s
            .user_principal_name
            .as_deref()
            .map(|u| u.trim().to_lowercase())
            .filter(|u| u.contains('@'))
        else {
            continue;
        };
        rows += 1;
        let at = s.created_date_time;
        let entry = accounts.entry(upn.clone()).or_insert_with(|| AccountUse {
            account: upn,
            basic_messages: 0,
            oauth_messages: 0,
            unknown_messages: 0,
            first_seen: None,
            last_seen: None,
            last_basic: None,
            sources: Vec::new(),
        });
        entry.basic_messages += 1;
        entry.first_seen = Some(entry.first_seen.map_or(at, |d| d.min(at)));
        entry.last_seen = Some(entry.last_seen.map_or(at, |d| d.max(at)));
        entry.last_basic = entry.last_seen;
        if let Some(ip) = s.ip_address.as_deref().filter(|ip| !ip.is_empty())
            && !entry.sources.iter().any(|known| known == ip)
        {
            entry.sources.push(ip.to_owned());
        }
    }
    ParsedReport {
        kind: ReportKind::SignIns,
        rows,
        has_protocol: true,
        accounts: accounts.into_values().collect(),
        exposures: Vec::new(),
    }
}

impl Worker {
    /// Reads due customers' sign-in logs until `shutdown`.
    pub(crate) async fn sign_in_log_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = self.settings.worker.sign_in_log_interval_seconds;
        if interval == 0 {
            return;
        }
        let tick = Duration::from_secs(self.settings.worker.sweep_seconds.clamp(1, 60));
        loop {
            // One customer after another while any is due, then wait for the next tick.
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                match self.claim_sign_in_read().await {
                    Ok(Some(tenant_id)) => self.read_sign_in_log(tenant_id.into(), interval).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim a sign-in-log read");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Claims the connected customer whose read is most overdue, if any.
    async fn claim_sign_in_read(&self) -> sqlx::Result<Option<Uuid>> {
        migration_board::claim_sign_in_read(&self.pool, &self.identity, CLAIM).await
    }

    /// Reads one customer's log into its board and records how it went.
    async fn read_sign_in_log(&self, tenant_id: TenantId, interval: u64) {
        let result = self.fetch_sign_ins(tenant_id).await;
        let outcome = match result {
            Ok(sign_ins) => {
                let report = accounts_of(&sign_ins);
                migration_board::import(
                    &self.pool,
                    tenant_id,
                    &report,
                    Some("Entra sign-in log"),
                    &AuditActor::system("mailbridge worker (sign-in log)"),
                )
                .await
                .map(|outcome| {
                    tracing::info!(
                        %tenant_id,
                        sign_ins = report.rows,
                        accounts = report.accounts.len(),
                        done = outcome.done.len(),
                        "sign-in log read into the migration board"
                    );
                })
                .map_err(|e| ReadError::Failed(e.to_string()))
            }
            Err(e) => Err(e),
        };
        let (next, error) = match &outcome {
            Ok(()) => (Duration::from_secs(interval), None),
            Err(ReadError::Refused(why)) => (Duration::from_secs(interval), Some(why.as_str())),
            Err(ReadError::Failed(why)) => (
                RETRY_AFTER_FAILURE.min(Duration::from_secs(interval)),
                Some(why.as_str()),
            ),
        };
        if let Some(why) = error {
            tracing::info!(%tenant_id, error = why, "could not read the sign-in log");
        }
        let recorded = migration_board::record_sign_in_read(
            &self.pool,
            tenant_id,
            &self.identity,
            next,
            error,
        )
        .await;
        if let Err(e) = recorded {
            tracing::warn!(%tenant_id, error = %e, "could not record the sign-in-log read");
        }
    }

    async fn fetch_sign_ins(&self, tenant_id: TenantId) -> Result<Vec<SignIn>, ReadError> {
        let failed = |e: &dyn std::fmt::Display| ReadError::Failed(e.to_string());
        let CustomerGraph { graph, key, token } =
            self.customer_graph(tenant_id).await.map_err(|e| match e {
                CustomerGraphError::Database(e) => ReadError::Failed(e),
                CustomerGraphError::Gone => ReadError::Failed("the customer is gone".into()),
                CustomerGraphError::NotConnected => {
                    ReadError::Refused("not connected to Microsoft 365".into())
                }
                CustomerGraphError::NoApp => {
                    ReadError::Refused("no app to read the sign-in log with".into())
                }
                CustomerGraphError::Token(e) => ReadError::Refused(format!("token: {e}")),
            })?;
        let since = (Utc::now() - chrono::Duration::days(LOOKBACK_DAYS))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut url =
            url::Url::parse(&format!("{graph}/v1.0/auditLogs/signIns")).map_err(|e| failed(&e))?;
        url.query_pairs_mut().append_pair(
            "$filter",
            &format!("clientAppUsed eq '{AUTHENTICATED_SMTP}' and createdDateTime ge {since}"),
        );
        let mut next = Some(url.to_string());
        let mut sign_ins = Vec::new();
        let mut pages = 0;
        while let Some(url) = next.take() {
            // The token goes to Graph only, never to wherever a link points.
            if !url.starts_with(&format!("{graph}/")) {
                return Err(ReadError::Failed(format!(
                    "Graph's next link leaves Graph: {url}"
                )));
            }
            pages += 1;
            if pages > MAX_PAGES {
                return Err(ReadError::Failed(format!(
                    "more than {MAX_PAGES} pages of sign-ins"
                )));
            }
            let response = self
                .graph
                .http()
                .get(&url)
                .bearer_auth(token.access_token.expose_secret())
                .timeout(self.settings.m365.request_timeout)
                .send()
                .await
                .map_err(|e| ReadError::Failed(mailbridge_m365::describe_http_error(&e)))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| failed(&e))?;
            if !status.is_success() {
                let error: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let code = error["error"]["code"].as_str().unwrap_or("");
                let message = error["error"]["message"].as_str().unwrap_or(&body);
                let text = format!("Graph {}: {code}: {message}", status.as_u16());
                if status.as_u16() == 401 {
                    self.tokens.invalidate(&key).await;
                }
                return Err(if status.as_u16() == 403 {
                    ReadError::Refused(text)
                } else {
                    ReadError::Failed(text)
                });
            }
            let page: Page = serde_json::from_str(&body)
                .map_err(|e| ReadError::Failed(format!("Graph's answer: {e}")))?;
            sign_ins.extend(page.value);
            next = page.next_link;
        }
        Ok(sign_ins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_password_login_counts_per_account() {
        let at = |d: &str| DateTime::parse_from_rfc3339(d).unwrap().with_timezone(&Utc);
        let sign_in = |upn: &str, ip: &str, day: &str, app: &str| SignIn {
            created_date_time: at(day),
            user_principal_name: Some(upn.into()),
            ip_address: Some(ip.into()),
            client_app_used: Some(app.into()),
        };
        let report = accounts_of(&[
            sign_in(
                "Scan@P.example",
                "192.0.2.1",
                "2026-11-20T08:00:00Z",
                AUTHENTICATED_SMTP,
            ),
            sign_in(
                "scan@p.example",
                "192.0.2.2",
                "2026-11-28T08:00:00Z",
                AUTHENTICATED_SMTP,
            ),
            sign_in(
                "scan@p.example",
                "192.0.2.2",
                "2026-11-29T08:00:00Z",
                "Browser",
            ),
        ]);
        assert_eq!(report.rows, 2);
        let scan = &report.accounts[0];
        assert_eq!(scan.basic_messages, 2);
        assert_eq!(scan.sources, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(scan.last_basic, Some(at("2026-11-28T08:00:00Z")));
    }
}
