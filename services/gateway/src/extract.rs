//! Extractors that turn a request into checked values or a problem: JSON bodies (400 with the
//! serde path of what is wrong, 413 over the limit), ids in paths (400 when not a UUID), query
//! strings, and the authenticated caller (401).

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
};
use http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use souk_shared::{auth::Caller, jwt::Role};
use uuid::Uuid;

use crate::{State, error::ApiError};

/// A JSON integer as JSON Schema counts them, for `#[serde(deserialize_with)]`: `2`, and also
/// `2.0` (a number whose fraction is zero, as some encoders write every number); never `2.5`,
/// nor one outside 64 bits.
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};

    struct Integer;

    impl Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
        }

        fn visit_f64<E: Error>(self, value: f64) -> Result<i64, E> {
            // -2^63 and 2^63 are exact as f64; i64 holds [-2^63, 2^63).
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value) {
                #[allow(clippy::cast_possible_truncation)]
                Ok(value as i64)
            } else {
                Err(E::invalid_value(Unexpected::Float(value), &self))
            }
        }
    }

    deserializer.deserialize_any(Integer)
}

/// A JSON body. Unlike axum's own, every rejection is a problem, and the body is read as JSON
/// whatever its `Content-Type` says (`curl -d` sends form encoding by default).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<State> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &State) -> Result<Self, Self::Rejection> {
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else if timed_out(&rejection) {
                        ApiError::RequestTimeout
                    } else {
                        ApiError::bad_request("the request body could not be read")
                    }
                })?;
        parse_json(&bytes).map(Json)
    }
}

/// Whether reading the body failed because the body timeout passed.
fn timed_out(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Parses a JSON document; the error names the field and what was expected.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // A document that is not JSON at all is not one field's fault, wherever it broke off.
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("malformed JSON: {inner}"));
        }
        let message = strip_position(&inner.to_string());
        if path.is_empty() || path == "." {
            ApiError::bad_request(message)
        } else {
            ApiError::invalid_field(&path, &message)
        }
    })
}

/// serde_json appends " at line 1 column 5", which says nothing to an API client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string; malformed or out-of-range values are 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|err| {
                let path = err.path().to_string();
                ApiError::invalid_field(&path, &err.into_inner().to_string())
            })
    }
}

/// The single `{id}` of a path, which must be a UUID.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_request("malformed path"))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::bad_request(format!("{raw:?} is not a valid id (a UUID)")))
    }
}

/// The authenticated caller: a valid ES256 bearer token, checked as the services check it
/// (`souk_shared::auth`). Handlers that take it are for signed-in users only; the token is
/// forwarded to the services, which check it again.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Caller);

impl std::ops::Deref for AuthUser {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequestParts<State> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        souk_shared::auth::from_authorization(header, &state.verifier)
            .map(Self)
            .map_err(|err| ApiError::Unauthorized(err.to_string()))
    }
}

/// An authenticated caller with role `admin`: 401 without a valid token, 403 with another
/// role, decided before the body is read. The services check the forwarded token again.
#[derive(Debug, Clone)]
pub struct Admin(pub AuthUser);

impl FromRequestParts<State> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.role == Role::Admin {
            Ok(Self(user))
        } else {
            Err(ApiError::Forbidden("this needs role admin".into()))
        }
    }
}

#[cfg(test)]
mod tests {

    #[derive(Debug, serde::Deserialize)]
    struct Counted {
        #[serde(deserialize_with = "super::integer")]
        n: i64,
    }

    #[test]
    fn an_integer_may_be_written_with_a_zero_fraction_and_nothing_else() {
        let n = |json: &str| serde_json::from_str::<Counted>(json).map(|c| c.n);
        assert_eq!(n(r#"{"n": 2}"#).ok(), Some(2));
        assert_eq!(n(r#"{"n": -7}"#).ok(), Some(-7));
        assert_eq!(n(r#"{"n": 2.0}"#).ok(), Some(2));
        assert_eq!(n(r#"{"n": -2e3}"#).ok(), Some(-2000));
        assert_eq!(n(r#"{"n": 9223372036854775807}"#).ok(), Some(i64::MAX));
        assert_eq!(n(r#"{"n": -9223372036854775808.0}"#).ok(), Some(i64::MIN));
        for refused in [
            r#"{"n": 2.5}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": 9223372036854775808.0}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "2"}"#,
            r#"{"n": null}"#,
        ] {
            let error = n(refused).expect_err(refused);
            assert!(error.to_string().contains("integer"), "{refused}: {error}");
        }
    }
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "only deserialised")]
    struct Body {
        name: String,
        count: i64,
    }

    fn error(json: &str) -> ApiError {
        parse_json::<Body>(json.as_bytes()).expect_err("rejected")
    }

    #[test]
    fn json_errors_name_the_field() {
        let ApiError::BadRequest { errors, .. } = error(r#"{"name": "a", "count": 1.5}"#) else {
            panic!("400 expected");
        };
        assert!(errors["count"].contains("floating point"), "{errors:?}");
        let ApiError::BadRequest { detail, .. } = error(r#"{"name": "a"}"#) else {
            panic!("400 expected");
        };
        assert!(detail.contains("missing field `count`"), "{detail}");
        let ApiError::BadRequest { detail, .. } = error(r#"{"name": "#) else {
            panic!("400 expected");
        };
        assert!(detail.starts_with("malformed JSON"), "{detail}");
    }
}
