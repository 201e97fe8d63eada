//! The one error type of the API, and its mapping to gRPC status codes.

use tonic::{Code, Status};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Stale resource_version (optimistic concurrency).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// Watch from a revision outside the window, or a watcher that fell behind.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> ApiError {
        ApiError::Invalid(format!("{field}: {reason}"))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Conflict(_) => Code::Aborted,
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::Exhausted(_) => Code::ResourceExhausted,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Gone(_) => Code::OutOfRange,
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Code::Internal
            }
        };
        Status::new(code, e.to_string())
    }
}
