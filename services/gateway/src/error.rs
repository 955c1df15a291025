//! Every error the API answers, as an RFC 7807 `application/problem+json` body. Statuses follow
//! docs/api.md; a 5xx never carries internals (the cause is logged, not sent).

use std::collections::BTreeMap;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tonic::Code;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: validation, malformed body, query or id.
    BadRequest {
        detail: String,
        errors: BTreeMap<String, String>,
    },
    /// 401: no or invalid token, wrong credentials.
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 409: uniqueness, state or stock conflict.
    Conflict(String),
    /// 412: an `If-Match` that no longer holds.
    PreconditionFailed(String),
    /// 408: the body did not arrive within the body timeout.
    RequestTimeout,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 429: too many attempts; try again after `retry_after` seconds.
    TooManyRequests { detail: String, retry_after: u64 },
    /// 431: the request's head is over this many bytes.
    HeadersTooLarge(usize),
    /// 503: a service behind the gateway is unavailable.
    Unavailable(String),
    /// 500: logged where it happened; the client learns nothing more.
    Internal,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
            errors: BTreeMap::new(),
        }
    }

    /// A validation error of one field.
    pub fn invalid_field(field: &str, message: &str) -> Self {
        Self::BadRequest {
            detail: format!("{field}: {message}"),
            errors: BTreeMap::from([(field.to_owned(), message.to_owned())]),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "validation", "Invalid request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
            ),
            Self::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            ),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request header fields too large",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::BadRequest { detail, .. }
            | Self::Unauthorized(detail)
            | Self::Forbidden(detail)
            | Self::NotFound(detail)
            | Self::Conflict(detail)
            | Self::PreconditionFailed(detail)
            | Self::Unavailable(detail)
            | Self::TooManyRequests { detail, .. } => detail.clone(),
            Self::RequestTimeout => "the request body did not arrive in time".into(),
            Self::HeadersTooLarge(limit) => {
                format!("the request line and headers are over {limit} bytes")
            }
            Self::MethodNotAllowed => "this method is not allowed on this resource".into(),
            Self::PayloadTooLarge => {
                format!("the request body is over {} bytes", crate::BODY_LIMIT)
            }
            Self::Internal => "an unexpected error occurred".into(),
        }
    }
}

/// The problem document (RFC 7807).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `https://souk.dev/problems/<slug>`, the slug naming the kind of error.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub kind: String,
    pub title: &'a str,
    pub status: u16,
    pub detail: String,
    /// On a 400 that concerns fields: each field (a JSON path, a header or a query parameter)
    /// and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub errors: Option<&'a BTreeMap<String, String>>,
    /// Extra members some problems carry (readiness lists its services).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub extra: Option<serde_json::Value>,
}

/// A problem response with any status, for the few places outside `ApiError`.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: String,
    extra: Option<serde_json::Value>,
) -> Response {
    let body = Problem {
        kind: format!("https://souk.dev/problems/{slug}"),
        title,
        status: status.as_u16(),
        detail,
        errors: None,
        extra,
    };
    with_problem_type(status, Json(body).into_response())
}

fn with_problem_type(status: StatusCode, mut response: Response) -> Response {
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let errors = match &self {
            Self::BadRequest { errors, .. } if !errors.is_empty() => Some(errors),
            _ => None,
        };
        let body = Problem {
            kind: format!("https://souk.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
            errors,
            extra: None,
        };
        let mut response = with_problem_type(status, Json(body).into_response());
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::TooManyRequests { retry_after, .. } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Outages and overload (the password hasher's queue full) pass quickly: ask the
            // client to come back in a second rather than hammer.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A service's answer, as the API's status. Client errors keep the service's message, and its
/// field violations (the `google.rpc.BadRequest` detail) become the problem's `errors`; retryable
/// failures become 503 and anything else a bare 500 (logged here).
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        if souk_shared::error::is_retryable(&status) {
            tracing::warn!(code = ?status.code(), message = status.message(), "upstream unavailable");
            return Self::Unavailable("a service is temporarily unavailable, try again".into());
        }
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::BadRequest {
                detail: message,
                errors: souk_shared::error::field_violations(&status)
                    .into_iter()
                    .collect(),
            },
            Code::Unauthenticated => Self::Unauthorized(message),
            Code::PermissionDenied => Self::Forbidden(message),
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                Self::Conflict(message)
            }
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "upstream error");
                Self::Internal
            }
        }
    }
}

/// What answers a path no route does: the storefront's page for its paths, a problem for the
/// API's.
pub async fn not_found(uri: http::Uri) -> Response {
    if crate::storefront::owns(uri.path()) {
        crate::storefront::not_found()
    } else {
        ApiError::NotFound("no such resource".into()).into_response()
    }
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_map_to_api_statuses() {
        let cases = [
            (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (Code::Unauthenticated, StatusCode::UNAUTHORIZED),
            (Code::PermissionDenied, StatusCode::FORBIDDEN),
            (Code::NotFound, StatusCode::NOT_FOUND),
            (Code::AlreadyExists, StatusCode::CONFLICT),
            (Code::FailedPrecondition, StatusCode::CONFLICT),
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Code::DeadlineExceeded, StatusCode::SERVICE_UNAVAILABLE),
            (Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
            (Code::Unknown, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        let broken = ApiError::from(tonic::Status::unknown("transport error")).into_response();
        assert_eq!(broken.status(), StatusCode::SERVICE_UNAVAILABLE);
        for (code, expected) in cases {
            let response = ApiError::from(tonic::Status::new(code, "x")).into_response();
            assert_eq!(response.status(), expected, "{code:?}");
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                expected == StatusCode::SERVICE_UNAVAILABLE,
                "{code:?}"
            );
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
        }
    }

    #[test]
    fn field_errors_are_listed_by_field() {
        let status = tonic::Status::from(souk_shared::Error::invalid(
            "email",
            "must be a valid email address",
        ));
        let ApiError::BadRequest { errors, .. } = ApiError::from(status) else {
            panic!("not a bad request");
        };
        assert_eq!(errors["email"], "must be a valid email address");
        // The message is never parsed for a field.
        let ApiError::BadRequest { errors, .. } =
            ApiError::from(tonic::Status::invalid_argument("note: the cart is empty"))
        else {
            panic!("not a bad request");
        };
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn internal_upstream_messages_are_not_passed_on() {
        let err = ApiError::from(tonic::Status::internal("relation users does not exist"));
        assert_eq!(err, ApiError::Internal);
    }
}
