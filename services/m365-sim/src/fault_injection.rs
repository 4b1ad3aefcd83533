//! Fault injection: tests tell the simulator to answer in any of Microsoft's ways —
//! an HTTP error with Graph's JSON, an AADSTS error from the token endpoint, any SMTP
//! reply at any stage, a hang, or a dropped connection — for one tenant or mailbox,
//! for the next N requests or until cleared. Also a log of requests per endpoint with
//! timestamps, so tests can measure how hard a client retries.
//!
//! Available from Rust (`Directory::inject_fault`) and over HTTP (`/_sim/faults`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Directory;

/// Where a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /{tenant}/oauth2/v2.0/token`
    Token,
    /// `POST /v1.0/users/{id}/sendMail`
    GraphSend,
    /// `POST /v1.0/users/{id}/messages` (a draft for the large-message path).
    GraphDraft,
    /// `PUT` of a range to an attachment upload session.
    GraphUpload,
    /// `POST /v1.0/users/{id}/messages/{id}/send`.
    GraphDraftSend,
    /// `DELETE /v1.0/users/{id}/messages/{id}`.
    GraphDelete,
    /// Exchange SMTP: the answer to `AUTH XOAUTH2`.
    SmtpAuth,
    /// Exchange SMTP: the answer to `MAIL FROM`.
    SmtpMail,
    /// Exchange SMTP: the answer to `RCPT TO`.
    SmtpRcpt,
    /// Exchange SMTP: the answer after the final dot.
    SmtpDataEnd,
}

/// What happens instead of the normal answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// An HTTP answer with Graph's error JSON (`code`, `message`).
    Http {
        status: u16,
        code: String,
        message: String,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// An Entra error (`AADSTS{code}: {description}`), HTTP status as Entra sends it.
    Aadsts {
        code: u32,
        error: String,
        description: String,
    },
    /// An SMTP reply line, e.g. `550 5.7.30 Basic authentication is not supported for Client Submission.`
    Smtp { reply: String },
    /// Wait this long, then answer normally (a slow or hanging upstream).
    Delay { seconds: u64 },
    /// Accept the message (Graph `sendMail`, SMTP after the final dot), then wait this
    /// long before answering: Microsoft has it, but the answer is late, or never
    /// arrives if the client gives up or dies meanwhile. Elsewhere the same as `Delay`.
    AcceptThenDelay { seconds: u64 },
    /// Close the connection without an answer.
    Drop,
}

/// A fault rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub endpoint: Endpoint,
    /// Only for this tenant (all when absent).
    #[serde(default)]
    pub tenant: Option<Uuid>,
    /// Only for this mailbox (all when absent).
    #[serde(default)]
    pub mailbox: Option<String>,
    pub effect: Effect,
    /// For the next this many matching requests; until cleared when absent.
    #[serde(default)]
    pub times: Option<u32>,
}

/// One request an endpoint saw.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub endpoint: Endpoint,
    pub tenant: Option<Uuid>,
    pub mailbox: Option<String>,
    pub at: DateTime<Utc>,
    /// Whether a fault answered it.
    pub faulted: bool,
}

impl Directory {
    /// Adds a fault rule; later rules are tried after earlier ones.
    pub fn inject_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    /// Every request seen by the endpoints that can be faulted.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Records a request and returns the fault that answers it, if one does (using up
    /// one of its `times`).
    pub(crate) fn take_fault(
        &self,
        endpoint: Endpoint,
        tenant: Option<Uuid>,
        mailbox: Option<&str>,
    ) -> Option<Effect> {
        let mut state = self.lock();
        let mailbox = mailbox.map(str::to_ascii_lowercase);
        let found = state.faults.iter().position(|f| {
            f.endpoint == endpoint
                && f.tenant.is_none_or(|t| Some(t) == tenant)
                && f.mailbox
                    .as_ref()
                    .is_none_or(|m| Some(m.to_ascii_lowercase()) == mailbox)
                && f.times != Some(0)
        });
        let effect = found.map(|i| {
            let fault = &mut state.faults[i];
            if let Some(times) = fault.times.as_mut() {
                *times -= 1;
            }
            fault.effect.clone()
        });
        state.faults.retain(|f| f.times != Some(0));
        state.requests.push(RequestRecord {
            endpoint,
            tenant,
            mailbox,
            at: Utc::now(),
            faulted: effect.is_some(),
        });
        effect
    }
}

impl Effect {
    /// For a delay (before or after accepting): how long.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self {
            Self::Delay { seconds } | Self::AcceptThenDelay { seconds } => {
                Some(Duration::from_secs(*seconds))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_match_their_scope_and_wear_out() {
        let directory = Directory::new().unwrap();
        let tenant = Uuid::new_v4();
        directory.inject_fault(Fault {
            endpoint: Endpoint::GraphSend,
            tenant: Some(tenant),
            mailbox: Some("Scan@Praxis.example".into()),
            effect: Effect::Drop,
            times: Some(1),
        });
        assert_eq!(
            directory.take_fault(
                Endpoint::GraphSend,
                Some(Uuid::new_v4()),
                Some("scan@praxis.example")
            ),
            None
        );
        assert_eq!(
            directory.take_fault(Endpoint::Token, Some(tenant), Some("scan@praxis.example")),
            None
        );
        assert_eq!(
            directory.take_fault(
                Endpoint::GraphSend,
                Some(tenant),
                Some("scan@praxis.example")
            ),
            Some(Effect::Drop)
        );
        assert_eq!(
            directory.take_fault(
                Endpoint::GraphSend,
                Some(tenant),
                Some("scan@praxis.example")
            ),
            None
        );
        assert!(directory.faults().is_empty());
        assert_eq!(directory.requests().iter().filter(|r| r.faulted).count(), 1);
    }
}
