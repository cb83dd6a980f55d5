//! The one error type of the API layer and its single mapping to
//! `tonic::Status`.
//!
//! Handlers return `Result<_, AppError>`; nothing else builds a `Status`. Each
//! variant carries a `google.rpc.ErrorInfo` reason (domain `unio`) so clients
//! branch on `reason` rather than parse messages, and INVALID_ARGUMENT carries
//! a `google.rpc.BadRequest` naming every bad field. Unexpected failures are
//! logged with their cause chain and reach the client as an opaque INTERNAL.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::ValidationError;

/// A BadRequest names at most this many fields; the rest are counted in
/// the message. 50,000 bad enum values must not become tens of MB of
/// trailers.
pub const MAX_VIOLATIONS: usize = 20;

/// One bad field of a request and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    /// PERMISSION_DENIED; `reason` is PERMISSION_DENIED or one of its own
    /// (KICKED, REMOVED_BY_HOST, EMAIL_NOT_VERIFIED).
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    NotFound {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    AlreadyExists {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Unavailable(String),
    /// UNAVAILABLE with reason PROVIDER_UNAVAILABLE: an identity provider
    /// could not be reached.
    #[error("{0}")]
    ProviderUnavailable(String),
    #[error("database: {0}")]
    Database(#[from] crate::store::Error),
    /// A failure of ours: logged with its cause chain, opaque to clients.
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl AppError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            reason,
            message: message.into(),
        }
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::denied("PERMISSION_DENIED", message)
    }

    /// PERMISSION_DENIED with a reason of its own.
    pub fn denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::PermissionDenied {
            reason,
            message: message.into(),
        }
    }

    /// An internal failure without an underlying error.
    pub fn internal(context: impl Into<String>) -> Self {
        Self::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// An internal failure caused by `source`, kept for the log.
    pub fn internal_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Internal {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable(_) | Self::ProviderUnavailable(_) => Code::Unavailable,
            Self::Database(err) if err.is_transient() => Code::Unavailable,
            Self::Database(_) | Self::Internal { .. } => Code::Internal,
        }
    }
}

/// Collects every bad field of one request before answering, so a client
/// fixes them all in one round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the error of `result` under `field` and returns the value.
    pub fn check<T>(&mut self, field: &str, result: Result<T, ValidationError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(field, err.to_string());
                None
            }
        }
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        // Past the cap only the count matters: keep a placeholder.
        if self.0.len() > MAX_VIOLATIONS {
            self.0.push(FieldViolation {
                field: String::new(),
                description: String::new(),
            });
            return;
        }
        self.0.push(FieldViolation {
            field: field.to_owned(),
            description: description.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<(), AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::InvalidArgument(self.0))
        }
    }

    /// The error for a request where some `check` returned `None`.
    pub fn into_error(self) -> AppError {
        debug_assert!(!self.0.is_empty(), "into_error without a violation");
        if self.0.is_empty() {
            return AppError::internal("validation failed without a recorded violation");
        }
        AppError::InvalidArgument(self.0)
    }
}

const DOMAIN: &str = "unio";

/// Lets handlers `?` a store call directly.
impl From<crate::store::Error> for Status {
    fn from(err: crate::store::Error) -> Self {
        AppError::from(err).into()
    }
}

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        let code = err.code();
        let mut details = ErrorDetails::new();
        let info = |details: &mut ErrorDetails, reason: &str| {
            details.set_error_info(reason, DOMAIN, HashMap::<String, String>::new());
        };
        let message = match err {
            AppError::InvalidArgument(mut violations) => {
                info(&mut details, "INVALID_ARGUMENT");
                let more = violations.len().saturating_sub(MAX_VIOLATIONS);
                violations.truncate(MAX_VIOLATIONS);
                let mut message = violations
                    .iter()
                    .map(|v| format!("{}: {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("; ");
                if more > 0 {
                    message.push_str(&format!("; and {more} more"));
                }
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                message
            }
            AppError::Unauthenticated { reason, message }
            | AppError::NotFound { reason, message }
            | AppError::AlreadyExists { reason, message }
            | AppError::FailedPrecondition { reason, message }
            | AppError::PermissionDenied { reason, message } => {
                info(&mut details, reason);
                message
            }
            AppError::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                info(&mut details, reason);
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                message
            }
            AppError::Unavailable(message) => {
                info(&mut details, "UNAVAILABLE");
                message
            }
            AppError::ProviderUnavailable(message) => {
                info(&mut details, "PROVIDER_UNAVAILABLE");
                message
            }
            AppError::Database(err) if err.is_transient() => {
                tracing::warn!(error = %error_chain(&err), "database unavailable");
                info(&mut details, "DATABASE_UNAVAILABLE");
                details.set_retry_info(Some(Duration::from_secs(1)));
                "the database is busy or unreachable; retry shortly".to_owned()
            }
            err @ (AppError::Database(_) | AppError::Internal { .. }) => {
                tracing::error!(error = %error_chain(&err), "internal error");
                info(&mut details, "INTERNAL");
                "internal error".to_owned()
            }
        };
        Status::with_error_details(code, message, details)
    }
}

/// `err: cause: cause…` for logs.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_every_field() {
        let mut v = Violations::new();
        v.add("email", "must contain @");
        v.add("password", "too short");
        let status = Status::from(v.finish().unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "email: must contain @; password: too short"
        );
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "password"]);
        assert_eq!(details.error_info().unwrap().domain, "unio");
    }

    #[test]
    fn violations_are_capped_with_a_count_of_the_rest() {
        let mut v = Violations::new();
        for i in 0..50_000 {
            v.add(&format!("statuses[{i}]"), "is not a known status");
        }
        let status = Status::from(v.finish().unwrap_err());
        let fields = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .len();
        assert_eq!(fields, MAX_VIOLATIONS);
        assert!(
            status.message().ends_with("; and 49980 more"),
            "{}",
            status.message()
        );
        assert!(status.message().len() < 2_000);
    }

    #[test]
    fn internal_errors_keep_their_cause_for_the_log() {
        let io = std::io::Error::other("disk on fire");
        let err = AppError::internal_from("storing a blob", io);
        assert_eq!(error_chain(&err), "storing a blob: disk on fire");
        let status = Status::from(err);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn internal_errors_are_opaque() {
        let status = Status::from(AppError::internal("secret detail"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status = Status::from(AppError::ResourceExhausted {
            reason: "TOO_MANY_ATTEMPTS",
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(30)),
        });
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(30))
        );
        assert_eq!(details.error_info().unwrap().reason, "TOO_MANY_ATTEMPTS");
    }
}
