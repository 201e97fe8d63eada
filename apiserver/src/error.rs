//! The one error type of the API, and its mapping to gRPC status codes. Messages are
//! bounded: what they quote from a request is cut at [`MAX_QUOTE_CHARS`] ([`quote`],
//! [`clip`]) and every status message at [`MAX_MESSAGE_BYTES`] ([`bound_message`]), so
//! an answer always fits in the `grpc-message` header (a 100,000-character name must
//! come back as INVALID_ARGUMENT / NOT_FOUND, not as a header-size failure).

use tonic::{Code, Status};

/// Longest quotation of request input in a message, in characters.
pub const MAX_QUOTE_CHARS: usize = 64;
/// Longest status message, in bytes (before the header's percent-encoding).
pub const MAX_MESSAGE_BYTES: usize = 1024;

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

/// `s` cut to [`MAX_QUOTE_CHARS`] characters, with "…" when cut.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE_CHARS) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// `s` quoted and escaped like `{:?}`, cut to [`MAX_QUOTE_CHARS`] characters of the
/// input: `"abc"`, or `"aaaa…" (100000 bytes)` for a long one.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE_CHARS) {
        None => format!("{s:?}"),
        Some((i, _)) => format!("{:?}… ({} bytes)", &s[..i], s.len()),
    }
}

/// `m` cut to at most [`MAX_MESSAGE_BYTES`] bytes (on a character boundary, ending
/// in "…" when cut).
pub fn bound_message(m: &str) -> String {
    if m.len() <= MAX_MESSAGE_BYTES {
        return m.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}

/// A status with its message bounded ([`bound_message`]); also for statuses passed on
/// from elsewhere (a node agent's).
pub fn bounded(code: Code, message: &str) -> Status {
    Status::new(code, bound_message(message))
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
                tracing::error!(error = %bound_message(m), "internal error");
                Code::Internal
            }
        };
        bounded(code, &e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_cut_with_their_length() {
        assert_eq!(quote("web"), "\"web\"");
        assert_eq!(quote("a\0b"), "\"a\\0b\"");
        let long = "x".repeat(100_000);
        let q = quote(&long);
        assert_eq!(q, format!("\"{}\"… (100000 bytes)", "x".repeat(64)));
        // Cut on characters, not bytes.
        let wide = "é".repeat(100);
        assert!(quote(&wide).starts_with(&format!("\"{}\"…", "é".repeat(64))));
        assert_eq!(clip("short"), "short");
        assert_eq!(clip(&long), format!("{}…", "x".repeat(64)));
    }

    #[test]
    fn status_messages_are_bounded() {
        assert_eq!(bound_message("ok"), "ok");
        let m = bound_message(&"é".repeat(5000));
        assert!(
            m.len() <= MAX_MESSAGE_BYTES && m.ends_with('…'),
            "{}",
            m.len()
        );
        let s: Status = ApiError::NotFound("n".repeat(100_000)).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().len() <= MAX_MESSAGE_BYTES);
        let s: Status = ApiError::invalid("metadata.name", "is required").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "metadata.name: is required");
    }
}
