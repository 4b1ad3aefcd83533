//! The one error type of the control plane's handlers. An error becomes a response
//! carrying a [`Rejection`]; the pages' middleware renders it as a translated HTML
//! page, the API's as JSON. 4xx errors tell the user what to change; 5xx errors are
//! logged with their cause and shown as a generic message.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// What went wrong, as the user should hear it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No session, or it ended: sign in (again).
    #[error("Please sign in.")]
    Unauthenticated,
    /// The staff member's role does not allow this.
    #[error("Your role does not allow this.")]
    Forbidden,
    /// A form came without the session's CSRF token (or from another site).
    #[error(
        "This form has expired or did not come from mailbridge. Reload the page and try again."
    )]
    Csrf,
    #[error("Not found.")]
    NotFound,
    /// Bad input; the text says what to change (English; translated when shown).
    #[error("{0}")]
    Invalid(String),
    /// Bad input naming the value at fault: `text` has a `{}` for it.
    #[error("{}", text.replacen("{}", value, 1))]
    InvalidValue { text: &'static str, value: String },
    /// The change conflicts with what exists (a name taken, a state that forbids it).
    #[error("{0}")]
    Conflict(String),
    /// Too many requests from one client address.
    #[error("Too many sign-in attempts from your address. Wait a minute and try again.")]
    TooManyRequests,
    #[error("The database is not reachable right now. Try again in a moment.")]
    Database(#[from] sqlx::Error),
    #[error(
        "Something went wrong on our side. Try again; if it keeps happening, check mailbridge's logs."
    )]
    Internal(String),
}

/// The error as a response carries it to the rendering middleware.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: StatusCode,
    /// A stable machine-readable code for the API.
    pub code: &'static str,
    /// The English message (the catalogue key for its translation).
    pub message: String,
    /// A message naming a value: its English text with `{}`, and the value.
    pub template: Option<(&'static str, String)>,
}

impl Rejection {
    /// The message in the page's language.
    pub fn translated(&self, tr: crate::i18n::Tr) -> String {
        match &self.template {
            Some((text, value)) => tr.fill(text, value),
            None => tr.t(&self.message).to_owned(),
        }
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Invalid(_) | Self::InvalidValue { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::Csrf => "csrf",
            Self::NotFound => "not_found",
            Self::Invalid(_) | Self::InvalidValue { .. } => "invalid",
            Self::Conflict(_) => "conflict",
            Self::TooManyRequests => "rate_limited",
            Self::Database(_) => "database_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(e) => tracing::error!(error = %e, "control plane database error"),
            Self::Internal(e) => tracing::error!(error = %e, "control plane error"),
            _ => {}
        }
        let rejection = Rejection {
            status: self.status(),
            code: self.code(),
            message: self.to_string(),
            template: match &self {
                Self::InvalidValue { text, value } => Some((*text, value.clone())),
                _ => None,
            },
        };
        let mut response = (rejection.status, rejection.message.clone()).into_response();
        response.extensions_mut().insert(rejection);
        response
    }
}

impl From<mailbridge_core::tenants::TenantError> for Error {
    fn from(e: mailbridge_core::tenants::TenantError) -> Self {
        use mailbridge_core::tenants::TenantError as E;
        match e {
            E::NameTaken(name) => Self::InvalidValue {
                text: crate::tr!(
                    "A customer named {} already exists (upper and lower case do not make names different)."
                ),
                value: name,
            },
            E::InvalidName => {
                Self::Invalid(crate::tr!("The name must be 1 to 200 characters.").into())
            }
            E::InvalidMailbox(bad) => Self::invalid_address(bad.0),
            E::InvalidRateLimit => Self::Invalid(
                crate::tr!("The rate limit must be a positive number of messages per minute.")
                    .into(),
            ),
            E::InvalidMaxMessageSize => Self::Invalid(
                crate::tr!(
                    "The maximum message size must be 1 to 150 MB (Exchange Online: 35 MB unless the customer's admin raised the mailbox's send size)."
                )
                .into(),
            ),
            E::NotFound(_) => Self::NotFound,
            E::Database(e) => Self::Database(e),
            E::NoMasterKey | E::Crypto(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<mailbridge_core::devices::DeviceError> for Error {
    fn from(e: mailbridge_core::devices::DeviceError) -> Self {
        use mailbridge_core::devices::DeviceError as E;
        match e {
            E::NameTaken(name) => Self::InvalidValue {
                text: crate::tr!("This customer already has a device named {}."),
                value: name,
            },
            E::InvalidName => {
                Self::Invalid(crate::tr!("The name must be 1 to 200 characters.").into())
            }
            E::AllowListTooWide { network, .. } => Self::InvalidValue {
                text: crate::tr!(
                    "{} is too wide for an allow-list: name the site's own address or network, not a provider's range or the internet."
                ),
                value: network.to_string(),
            },
            E::Database(e) => Self::Database(e),
            E::Crypto(_) => Self::Internal(e.to_string()),
        }
    }
}

impl Error {
    pub fn invalid_address(value: impl Into<String>) -> Self {
        Self::InvalidValue {
            text: crate::tr!("{} is not a mail address (expected name@domain)."),
            value: value.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
