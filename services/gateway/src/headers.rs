//! Headers every answer carries, and checks of the headers every request carries: `nosniff`
//! everywhere, `no-store` on account and token answers, a client's `X-Request-Id` echoed only
//! when it is short and plain, and a 431 problem for a head over the limit.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, header};

use crate::error::ApiError;

pub(crate) const REQUEST_ID: &str = "x-request-id";

/// The longest client request id echoed back.
const MAX_REQUEST_ID: usize = 64;

/// Whether a client's request id may be kept (and echoed, and logged): 1 to 64 of letters,
/// digits, `-`, `_`, `.` and `:`. Anything else is replaced by a fresh UUID.
pub(crate) fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_REQUEST_ID).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops an unacceptable `X-Request-Id`, so that the next layer makes one up.
pub(crate) async fn drop_invalid_request_id(mut request: Request, next: Next) -> Response {
    if request
        .headers()
        .get_all(REQUEST_ID)
        .iter()
        .any(|value| !valid_request_id(value))
        || request.headers().get_all(REQUEST_ID).iter().count() > 1
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// `X-Content-Type-Options: nosniff` on every answer: a browser must not guess that a JSON
/// body is HTML.
pub(crate) async fn nosniff(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `Cache-Control: no-store`: tokens and account details stay out of every cache.
pub(crate) async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The size of a request's head as sent: start line and `name: value\r\n` per header.
fn head_bytes(request: &Request) -> usize {
    let start_line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n ".len();
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + start_line
}

/// 431 as a problem when the head is over `limit` bytes.
pub(crate) async fn limit_head(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    if head_bytes(&request) > limit {
        return ApiError::HeadersTooLarge(limit).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        for good in ["abc", "0b1e-42_x.y:z", &"a".repeat(64)] {
            assert!(valid_request_id(
                &HeaderValue::from_str(good).expect("value")
            ));
        }
        for bad in ["", "a b", "<script>", "id\u{7f}", "a\"b", &"a".repeat(65)] {
            let Ok(value) = HeaderValue::from_str(bad) else {
                continue;
            };
            assert!(!valid_request_id(&value), "{bad:?}");
        }
    }
}
