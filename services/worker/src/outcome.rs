//! Every upstream answer, classified once: delivered, retry later, or permanent.
//! Everything downstream (the queue's settlement, the attempt record, what the
//! control plane shows) reads this and never looks at raw answers again.

use std::time::Duration;

use mailbridge_core::queue::AttemptOutcome;

use crate::token::TokenError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Microsoft accepted the message.
    Delivered { status: u16 },
    /// Try again later: throttling, outages, timeouts, token trouble.
    RetryLater {
        status: Option<u16>,
        code: String,
        message: String,
        /// The upstream's own `Retry-After`, honoured as a minimum.
        retry_after: Option<Duration>,
        /// The resource refused the token: fetch a new one next time.
        invalidate_token: bool,
    },
    /// Retrying cannot help: the message fails with this reason.
    Permanent {
        status: Option<u16>,
        code: String,
        message: String,
    },
}

impl DeliveryOutcome {
    pub fn from_graph(
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    ) -> Self {
        match status {
            401 => Self::RetryLater {
                status: Some(status),
                code,
                message,
                retry_after,
                invalidate_token: true,
            },
            408 | 429 | 500..=599 => Self::RetryLater {
                status: Some(status),
                code,
                message,
                retry_after,
                invalidate_token: false,
            },
            _ => Self::Permanent {
                status: Some(status),
                code,
                message,
            },
        }
    }

    /// No token means no delivery now; the tenant's admin can fix consent or the
    /// secret while the message waits, so token errors are retried until max age.
    pub fn from_token_error(error: &TokenError) -> Self {
        match error {
            TokenError::Rejected {
                status,
                error,
                aadsts,
                description,
            } => Self::RetryLater {
                status: Some(*status),
                code: aadsts
                    .map(|c| format!("AADSTS{c}"))
                    .unwrap_or_else(|| error.clone()),
                message: description.clone(),
                retry_after: None,
                invalidate_token: false,
            },
            TokenError::Unreachable(detail) => Self::unreachable("token endpoint", detail.clone()),
        }
    }

    pub fn unreachable(what: &str, detail: String) -> Self {
        Self::RetryLater {
            status: None,
            code: "unreachable".to_owned(),
            message: format!("{what}: {detail}"),
            retry_after: None,
            invalidate_token: false,
        }
    }

    /// A problem on our side that an operator must fix (configuration, missing data).
    pub fn local(code: &str, message: impl Into<String>, permanent: bool) -> Self {
        let (code, message) = (code.to_owned(), message.into());
        if permanent {
            Self::Permanent {
                status: None,
                code,
                message,
            }
        } else {
            Self::RetryLater {
                status: None,
                code,
                message,
                retry_after: None,
                invalidate_token: false,
            }
        }
    }

    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            Self::Delivered { .. } => AttemptOutcome::Delivered,
            Self::RetryLater { .. } => AttemptOutcome::Retry,
            Self::Permanent { .. } => AttemptOutcome::Permanent,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } => Some(*status),
            Self::RetryLater { status, .. } | Self::Permanent { status, .. } => *status,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Delivered { .. } => None,
            Self::RetryLater { code, .. } | Self::Permanent { code, .. } => Some(code),
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Delivered { .. } => None,
            Self::RetryLater { message, .. } | Self::Permanent { message, .. } => Some(message),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_answers_are_classified() {
        let c = |status| {
            DeliveryOutcome::from_graph(status, "X".into(), "m".into(), None).attempt_outcome()
        };
        assert_eq!(c(429), AttemptOutcome::Retry);
        assert_eq!(c(503), AttemptOutcome::Retry);
        assert_eq!(c(401), AttemptOutcome::Retry);
        assert_eq!(c(403), AttemptOutcome::Permanent);
        assert_eq!(c(400), AttemptOutcome::Permanent);
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
