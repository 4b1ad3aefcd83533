//! Every upstream answer, classified once: accepted by Microsoft, or failed with a diagnosis
//! (retry later, or permanent) and Microsoft's own code and text. Everything
//! downstream — the queue's settlement, the attempt record, the tenant pause, the
//! metrics, what the control plane explains — reads this, never the raw answer.

use std::time::Duration;

use mailbridge_core::{
    diagnosis::{self, Class, Diagnosis},
    queue::AttemptOutcome,
};

use crate::token::TokenError;

/// Who gave the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Microsoft 365 itself (Graph, Exchange SMTP).
    Resource,
    /// The Entra token endpoint.
    TokenEndpoint,
    /// Nobody: the network, TLS or a timeout.
    Network,
    /// mailbridge's own state (configuration, database).
    Local,
}

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub diagnosis: &'static Diagnosis,
    pub source: Source,
    /// HTTP status or SMTP reply code.
    pub status: Option<u16>,
    /// Microsoft's own code: enhanced status code, Graph error code, `AADSTS…`.
    pub code: String,
    pub message: String,
    /// The upstream's own `Retry-After`, honoured as a minimum.
    pub retry_after: Option<Duration>,
    /// The same refusal as moments ago, remembered rather than asked again.
    pub repeated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Microsoft accepted the message.
    Accepted {
        status: u16,
    },
    Failed(Failure),
    /// Not attempted: sending now would break a limit of the mailbox.
    Deferred(Wait),
}

impl DeliveryOutcome {
    pub fn graph(
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::Failed(Failure {
            diagnosis: diagnosis::graph(status, &code, &message),
            source: Source::Resource,
            status: Some(status),
            code,
            message,
            retry_after,
            repeated: false,
        })
    }

    pub fn smtp(reply: u16, enhanced: &str, text: String) -> Self {
        Self::Failed(Failure {
            diagnosis: diagnosis::smtp(reply, enhanced, &text),
            source: Source::Resource,
            status: Some(reply),
            code: if enhanced.is_empty() {
                reply.to_string()
            } else {
                enhanced.to_owned()
            },
            message: text,
            retry_after: None,
            repeated: false,
        })
    }

    pub fn token(error: &TokenError) -> Self {
        match error {
            TokenError::Rejected {
                status,
                error,
                aadsts,
                description,
            } => Self::Failed(Failure {
                diagnosis: diagnosis::token(*aadsts),
                source: Source::TokenEndpoint,
                status: Some(*status),
                code: aadsts
                    .map(|c| format!("AADSTS{c}"))
                    .unwrap_or_else(|| error.clone()),
                message: description.clone(),
                retry_after: None,
                repeated: false,
            }),
            TokenError::Unreachable(detail) => {
                match Self::unreachable("token endpoint", detail.clone()) {
                    // Entra gave no answer: which matters for its scope (see `holds`).
                    Self::Failed(failure) => Self::Failed(Failure {
                        source: Source::TokenEndpoint,
                        ..failure
                    }),
                    other => other,
                }
            }
            TokenError::RecentlyRefused(error) => match Self::token(error) {
                Self::Failed(failure) => Self::Failed(Failure {
                    repeated: true,
                    ..failure
                }),
                delivered => delivered,
            },
        }
    }

    pub fn unreachable(what: &str, detail: String) -> Self {
        Self::Failed(Failure {
            diagnosis: &diagnosis::UNREACHABLE,
            source: Source::Network,
            status: None,
            code: "unreachable".to_owned(),
            message: format!("{what}: {detail}"),
            retry_after: None,
            repeated: false,
        })
    }

    /// A problem on mailbridge's side.
    pub fn local(diagnosis: &'static Diagnosis, message: impl Into<String>) -> Self {
        Self::Failed(Failure {
            diagnosis,
            source: Source::Local,
            status: None,
            code: diagnosis.key.to_owned(),
            message: message.into(),
            retry_after: None,
            repeated: false,
        })
    }

    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            Self::Accepted { .. } => AttemptOutcome::Accepted,
            Self::Failed(f) if f.diagnosis.class == Class::Retry => AttemptOutcome::Retry,
            Self::Deferred(_) => AttemptOutcome::Retry,
            Self::Failed(_) => AttemptOutcome::Permanent,
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Accepted { .. } | Self::Deferred(_) => None,
            Self::Failed(f) => Some(f),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Accepted { status } => Some(*status),
            Self::Failed(f) => f.status,
            Self::Deferred(_) => None,
        }
    }

    /// Whether the resource refused the token itself, or what it grants (fetch a
    /// new one next time: a consent given since is only in a new token's roles).
    pub fn token_refused(&self) -> bool {
        self.failure().is_some_and(|f| {
            f.source == Source::Resource
                && (std::ptr::eq(f.diagnosis, &diagnosis::TOKEN_REFUSED_BY_RESOURCE)
                    || std::ptr::eq(f.diagnosis, &diagnosis::SMTP_AUTH_REFUSED)
                    || std::ptr::eq(f.diagnosis, &diagnosis::ACCESS_DENIED))
        })
    }
}

/// When to try again: exponential from one minute, doubling to at most an hour,
/// with ±20 % jitter so that a tenant's backlog does not return as one wave; never
/// sooner than the upstream asked.
pub fn backoff(attempt: i32, retry_after: Option<Duration>) -> Duration {
    let exponent = attempt.clamp(1, 7) as u32 - 1;
    let base = Duration::from_secs(60 * 2u64.pow(exponent)).min(Duration::from_secs(3600));
    let jitter = rand::random_range(0.8..1.2);
    base.mul_f64(jitter).max(retry_after.unwrap_or_default())
}

/// Why a delivery has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every concurrency slot of the mailbox is taken.
    Busy,
    /// The mailbox sent its 30 messages this minute.
    RatePerMinute,
    /// The mailbox reached its recipients for the day.
    RecipientsPerDay,
    /// The app used its 10 000 Graph requests of 10 minutes for the mailbox.
    GraphRequests,
    /// The app uploaded its 150 MB of 5 minutes to the mailbox.
    GraphUpload,
}

impl Wait {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Busy => "mailbox_busy",
            Self::RatePerMinute => "mailbox_rate",
            Self::RecipientsPerDay => "mailbox_daily_recipients",
            Self::GraphRequests => "graph_requests",
            Self::GraphUpload => "graph_upload",
        }
    }

    /// How long to put the message back for.
    pub fn delay(self) -> Duration {
        match self {
            Self::Busy => Duration::from_secs(2),
            Self::RatePerMinute => Duration::from_secs(10),
            Self::RecipientsPerDay => Duration::from_secs(15 * 60),
            // A minute's bucket ages out of its window.
            Self::GraphRequests | Self::GraphUpload => Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_answers_are_classified() {
        let c = |status, code: &str| {
            DeliveryOutcome::graph(status, code.into(), "m".into(), None).attempt_outcome()
        };
        assert_eq!(c(429, "ApplicationThrottled"), AttemptOutcome::Retry);
        assert_eq!(c(503, "ServiceUnavailable"), AttemptOutcome::Retry);
        assert_eq!(c(401, "InvalidAuthenticationToken"), AttemptOutcome::Retry);
        assert_eq!(c(403, "ErrorSendAsDenied"), AttemptOutcome::Permanent);
        assert_eq!(
            c(400, "ErrorMimeContentInvalidBase64String"),
            AttemptOutcome::Permanent
        );
        assert!(
            DeliveryOutcome::graph(
                401,
                "InvalidAuthenticationToken".into(),
                String::new(),
                None
            )
            .token_refused()
        );
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let first = backoff(1, None);
        assert!(
            first >= Duration::from_secs(48) && first <= Duration::from_secs(72),
            "{first:?}"
        );
        let late = backoff(20, None);
        assert!(late <= Duration::from_secs(4320), "{late:?}");
        assert!(backoff(1, Some(Duration::from_secs(600))) >= Duration::from_secs(600));
    }
}
