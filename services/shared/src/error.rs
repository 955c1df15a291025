//! One error type for the services' domain and storage code, and its mapping to `tonic::Status`.
//!
//! Client mistakes carry a message meant for the client; a field's violation also travels as the
//! standard `google.rpc.BadRequest` detail, which the gateway reads (never the message). Everything
//! unexpected is `Internal`: logged once with its cause chain where it becomes a `Status`, and
//! answered without details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request as a whole is invalid ("the cart is empty").
    #[error("{0}")]
    InvalidArgument(String),
    /// One field of the request is invalid.
    #[error("{field}: {description}")]
    InvalidField { field: String, description: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A dependency (database, NATS, another service) is down; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A validation failure of one field.
    pub fn invalid(field: &str, description: impl std::fmt::Display) -> Self {
        Self::InvalidField {
            field: field.to_owned(),
            description: description.to_string(),
        }
    }

    /// Carries a downstream service's answer on: client errors keep their code, message and
    /// field, anything else becomes `Unavailable` (retryable) or `Internal`.
    pub fn from_upstream(service: &str, status: Status) -> Self {
        if is_retryable(&status) {
            return Self::Unavailable(format!("the {service} service is unavailable"));
        }
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => match field_violations(&status).first() {
                Some((field, description)) => Self::invalid(field, description),
                None => Self::InvalidArgument(message),
            },
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::FailedPrecondition | Code::Aborted => Self::FailedPrecondition(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::Unauthenticated => Self::Unauthenticated(message),
            _ => Self::Internal(anyhow::anyhow!("{service} service answered {status:?}")),
        }
    }
}

/// Whether a failed call may succeed when made again: the callee is down, overloaded or slow, or
/// the call broke in transport. The one rule for every caller (services, gateway, consumers).
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled
    ) || is_transport_failure(status)
}

/// The `(field, description)` pairs of a status's `google.rpc.BadRequest` detail, if any.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|violation| (violation.field, violation.description))
                .collect()
        })
        .unwrap_or_default()
}

/// What the messages of a call that broke in transport say (the peer died mid-call, the
/// connection was reset), as tonic reports them: `Unknown` with the transport's message.
const TRANSPORT_FAILURES: &[&str] = &[
    "transport error",
    "connection reset",
    "connection closed",
    "broken pipe",
    "error trying to connect",
    "h2 protocol error",
];

/// Whether a failed call is the channel's failure rather than the service's answer: the service
/// died or the connection broke mid-call. Retryable, like `Unavailable`. (A status made from a
/// local error carries it as its source; one received from a peer never does.)
pub fn is_transport_failure(status: &Status) -> bool {
    status.code() == Code::Unknown
        && (std::error::Error::source(status).is_some()
            || TRANSPORT_FAILURES
                .iter()
                .any(|failure| status.message().to_ascii_lowercase().contains(failure)))
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if is_connection_error(&err) {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable("the database is unavailable, try again".into())
        } else {
            Self::Internal(err.into())
        }
    }
}

/// Whether the database could not be reached or cannot serve yet (as opposed to rejecting a
/// statement): unreachable, shutting down or starting up (`57P01`-`57P03`), a broken connection
/// (class `08`), out of connections (class `53`), or a server that answered the TLS probe with
/// garbage (as one does while it starts: "unexpected response from SSLRequest").
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(message) => message.contains("SSLRequest"),
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c.starts_with("53")),
        _ => false,
    }
}

/// The name of the constraint a statement violated, if it was a unique violation.
pub fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::InvalidField { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {description}"),
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status = Status::from(Error::Internal(anyhow::anyhow!(
            "relation users does not exist"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("users"));
    }

    #[test]
    fn a_field_violation_travels_as_a_bad_request_detail() {
        let status = Status::from(Error::invalid("price_cents", "must be positive"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            field_violations(&status),
            [("price_cents".to_owned(), "must be positive".to_owned())]
        );
        // Passed on by a service that called another, the field is kept.
        let passed_on = Error::from_upstream("product", status);
        assert!(
            matches!(&passed_on, Error::InvalidField { field, .. } if field == "price_cents"),
            "{passed_on:?}"
        );
        // A message that merely looks like "field: why" names no field.
        let plain =
            Error::from_upstream("order", Status::invalid_argument("note: the cart is empty"));
        assert!(matches!(plain, Error::InvalidArgument(_)), "{plain:?}");
    }

    #[test]
    fn upstream_outages_become_retryable() {
        let err =
            Error::from_upstream("product", Status::unavailable("tcp connect error 10.0.0.1"));
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.1"));
        let err = Error::from_upstream("product", Status::not_found("product not found"));
        assert_eq!(Status::from(err).code(), Code::NotFound);
    }

    #[test]
    fn a_call_broken_in_transport_is_retryable() {
        let err = Error::from_upstream("payment", Status::unknown("transport error"));
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let status = Status::from_error(Box::new(io));
        assert!(is_transport_failure(&status), "{status:?}");
        // A peer's own Unknown answer is not a transport failure.
        assert!(!is_transport_failure(&Status::unknown("x")));
    }

    #[test]
    fn a_database_starting_up_is_unavailable() {
        let err = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x45".into());
        assert!(is_connection_error(&err));
        assert!(!is_connection_error(&sqlx::Error::Protocol("other".into())));
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        assert!(matches!(
            Error::from(sqlx::Error::PoolTimedOut),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            Error::from(sqlx::Error::RowNotFound),
            Error::Internal(_)
        ));
    }
}
