//! Who is asking, and whether their form is theirs.
//!
//! - The session is the pair of tokens the user service issued at login, each in a cookie:
//!   `HttpOnly` (no script reads it), `SameSite=Lax` (no other site's form posts with it),
//!   `Secure` when the request came over TLS, and as long-lived as its token. The access token
//!   (`souk_session`) is verified like a bearer token on every request and forwarded to the
//!   services, which check it again.
//! - When the access token has expired (or its cookie with it), [`renew`] exchanges the refresh
//!   token (`souk_refresh`) for a new pair before the page sees the request, so a shopper stays
//!   signed in for as long as the refresh token lasts. A browser loads pages in parallel, and the
//!   user service treats a rotated refresh token presented again as stolen (it revokes the whole
//!   family), so the requests carrying one refresh token share one exchange and its answer for a
//!   few seconds ([`Renewals`]). A refresh token the user service refuses ends the session; one
//!   it cannot answer leaves the cookies for the next request, and a page that needs the
//!   session says the shop is unavailable. The sharing is per gateway replica: behind a load
//!   balancer that spreads one browser's requests over replicas, two of them racing with one
//!   refresh token can still end the session (the shopper logs in again).
//! - CSRF: a random token in the `souk_csrf` cookie (set on the first page a browser sees),
//!   which every form repeats in a hidden `csrf` field. Another site can make a browser post,
//!   but cannot read the cookie to repeat it (double-submit). A post whose `Origin` is another
//!   host is refused as well.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State as AxumState;
use http::{HeaderMap, HeaderValue, header, request::Parts};
use serde::de::DeserializeOwned;
use souk_protos::v1::{LoginResponse, LogoutRequest, RefreshRequest};
use souk_shared::jwt::Role;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::page::PageError;
use crate::{State, extract::AuthUser};

pub(crate) const SESSION_COOKIE: &str = "souk_session";
const REFRESH_COOKIE: &str = "souk_refresh";
const CSRF_COOKIE: &str = "souk_csrf";
/// The hidden form field that repeats the CSRF cookie.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the browser reached the shop over TLS (directly, or through a proxy that says so).
fn over_tls(headers: &HeaderMap, uri: &http::Uri) -> bool {
    uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value; `max_age` 0 removes the cookie.
fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value =
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&value).expect("cookie names and values are visible ASCII")
}

/// The CSRF token of this request, put in its extensions by `ensure_csrf_cookie`.
#[derive(Debug, Clone)]
struct CsrfToken(String);

/// Gives a browser without a CSRF cookie a new one with the response.
pub(crate) async fn ensure_csrf_cookie(mut request: Request, next: Next) -> Response {
    let sent = cookie(request.headers(), CSRF_COOKIE)
        .filter(|token| Uuid::parse_str(token).is_ok())
        .map(str::to_owned);
    let secure = over_tls(request.headers(), request.uri());
    let token = sent
        .clone()
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if sent.is_none() {
        // A browser session's lifetime would do, but a day survives a restart of the browser
        // between showing a form and sending it.
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &token, 86_400, secure),
        );
    }
    response
}

/// Whoever is asking: the signed-in user, if any, and what a page needs to render its forms.
#[derive(Debug, Clone)]
pub(crate) struct Visitor {
    pub user: Option<AuthUser>,
    /// The session's access token had expired and could not be renewed for now: a page that
    /// needs the session says the shop is unavailable rather than asking to log in.
    pub renewal_unavailable: bool,
    pub csrf: String,
    /// The path (and query) this page was asked for, to come back to after logging in.
    pub path: String,
}

impl Visitor {
    pub fn is_admin(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|user| user.role == Role::Admin)
    }
}

impl FromRequestParts<State> for Visitor {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &State,
    ) -> Result<Self, Self::Rejection> {
        // What `renew`, which every page goes through, found.
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(PageError::Internal)?;
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .map(|token| token.0.clone())
            .ok_or(PageError::Internal)?;
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            user: session.user,
            renewal_unavailable: session.renewal_unavailable,
            csrf,
            path,
        })
    }
}

/// A signed-in visitor; anyone else is sent to log in and brought back here after.
#[derive(Debug, Clone)]
pub(crate) struct Shopper {
    pub user: AuthUser,
    pub visitor: Visitor,
}

impl FromRequestParts<State> for Shopper {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        // After a post, come back to the page the form was on, not to the action.
        let back = if parts.method == http::Method::GET {
            visitor.path.clone()
        } else {
            referring_path(&parts.headers).unwrap_or_else(|| "/".to_owned())
        };
        match visitor.user.clone() {
            Some(user) => Ok(Self { user, visitor }),
            None if visitor.renewal_unavailable => Err(PageError::Unavailable),
            None => Err(PageError::LogIn { next: back }),
        }
    }
}

/// A signed-in admin: others get 403, visitors are sent to log in.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub Shopper);

impl FromRequestParts<State> for Admin {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let shopper = Shopper::from_request_parts(parts, state).await?;
        if shopper.user.role == Role::Admin {
            Ok(Self(shopper))
        } else {
            Err(PageError::Forbidden)
        }
    }
}

/// The path of the `Referer`, when it is a page of this shop.
fn referring_path(headers: &HeaderMap) -> Option<String> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let uri: http::Uri = referer.parse().ok()?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    if uri.authority().map(|a| a.as_str()) != Some(host) {
        return None;
    }
    uri.path_and_query().map(|p| p.as_str().to_owned())
}

/// A path to go to after logging in: only a path of this shop (`/…`, never `//host`).
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => {
            next.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A posted HTML form whose CSRF token matches the browser's cookie. Fields that are not in `T`
/// (the token itself) are ignored; every rejection is a page.
#[derive(Debug)]
pub(crate) struct Form<T>(pub T);

impl<T: DeserializeOwned> FromRequest<State> for Form<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &State) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let expected = request.extensions().get::<CsrfToken>().map(|t| t.0.clone());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| PageError::BadRequest("the form could not be read".into()))?;
        let sent = form_urlencoded::parse(&bytes)
            .find(|(key, _)| key == CSRF_FIELD)
            .map(|(_, value)| value.into_owned());
        let same_origin = match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
            (Some(origin), Some(host)) => origin
                .to_str()
                .ok()
                .and_then(|o| o.parse::<http::Uri>().ok())
                .is_some_and(|o| {
                    o.authority().map(|a| a.as_str().as_bytes()) == Some(host.as_bytes())
                }),
            // Browsers send Origin with every cross-site post; its absence is a same-origin
            // navigation or a client that is not a browser.
            _ => true,
        };
        let token_matches = matches!((&expected, &sent), (Some(e), Some(s)) if constant_time_eq(e.as_bytes(), s.as_bytes()));
        if !same_origin || !token_matches {
            return Err(PageError::Csrf);
        }
        serde_urlencoded::from_bytes(&bytes)
            .map(Form)
            .map_err(|err| PageError::BadRequest(format!("the form is not complete: {err}")))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookies that hold `tokens`.
fn session_cookies(tokens: &LoginResponse, secure: bool) -> [HeaderValue; 2] {
    [
        set_cookie(
            SESSION_COOKIE,
            &tokens.access_token,
            tokens.expires_in,
            secure,
        ),
        set_cookie(
            REFRESH_COOKIE,
            &tokens.refresh_token,
            tokens.refresh_expires_in,
            secure,
        ),
    ]
}

/// The cookies that forget the session.
fn no_session_cookies(secure: bool) -> [HeaderValue; 2] {
    [
        set_cookie(SESSION_COOKIE, "", 0, secure),
        set_cookie(REFRESH_COOKIE, "", 0, secure),
    ]
}

fn append_cookies(response: &mut Response, cookies: [HeaderValue; 2]) {
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// Whether `response` sets the session's cookies itself (logging in or out): then they are the
/// ones that count, and [`renew`] adds none after them (a browser keeps the last).
fn sets_the_session(response: &Response) -> bool {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value.starts_with(&format!("{SESSION_COOKIE}="))
                || value.starts_with(&format!("{REFRESH_COOKIE}="))
        })
}

/// A redirect (303) to `to` that also signs the browser in with `tokens`.
pub(crate) fn sign_in(
    headers: &HeaderMap,
    uri: &http::Uri,
    tokens: &LoginResponse,
    to: &str,
) -> Response {
    let mut response = Redirect::to(to).into_response();
    append_cookies(
        &mut response,
        session_cookies(tokens, over_tls(headers, uri)),
    );
    response
}

/// A redirect (303) home that ends the session: its refresh token is revoked (with every one
/// rotated from the same login), and the cookies are forgotten.
pub(crate) async fn sign_out(state: &State, headers: &HeaderMap, uri: &http::Uri) -> Response {
    if let Some(refresh_token) = cookie(headers, REFRESH_COOKIE) {
        let revoked = state
            .services
            .user
            .clone()
            .logout(LogoutRequest {
                refresh_token: refresh_token.to_owned(),
            })
            .await;
        if let Err(status) = revoked {
            // The cookies go anyway; the token expires on its own.
            tracing::warn!(code = ?status.code(), message = status.message(), "could not revoke a refresh token at log-out");
        }
    }
    let mut response = Redirect::to("/").into_response();
    append_cookies(&mut response, no_session_cookies(over_tls(headers, uri)));
    response
}

/// Who the request's session is, as [`renew`] found it, for [`Visitor`] to read: each request's
/// token is verified once.
#[derive(Debug, Clone, Default)]
struct Session {
    user: Option<AuthUser>,
    renewal_unavailable: bool,
}

impl Session {
    /// The user of `token`, when it is a valid access token.
    fn of_token(token: &str, state: &State) -> Self {
        Self {
            user: souk_shared::auth::verified(token, &state.verifier)
                .ok()
                .map(AuthUser),
            renewal_unavailable: false,
        }
    }

    /// The user of the session cookie, when its token is valid.
    fn of(headers: &HeaderMap, state: &State) -> Self {
        cookie(headers, SESSION_COOKIE)
            .map_or_else(Self::default, |token| Self::of_token(token, state))
    }
}

/// How long the answer to one refresh token is kept for the requests that race with it.
const RENEWAL_SHARED_FOR: Duration = Duration::from_secs(10);

/// One exchange per refresh token, shared by the requests that carry it at once.
#[derive(Debug, Default)]
pub(crate) struct Renewals(Mutex<HashMap<String, (Instant, Arc<Exchange>)>>);

type Exchange = OnceCell<Result<LoginResponse, tonic::Code>>;

impl Renewals {
    /// The exchange of `refresh_token`: a new one, or the one a racing request started.
    fn exchange(&self, refresh_token: &str) -> Arc<Exchange> {
        let mut exchanges = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        exchanges.retain(|_, (started, _)| started.elapsed() < RENEWAL_SHARED_FOR);
        exchanges
            .entry(refresh_token.to_owned())
            .or_insert_with(|| (Instant::now(), Arc::default()))
            .1
            .clone()
    }

    /// Forgets `exchange` of `refresh_token` (one that failed for now), so that the next request
    /// tries again instead of sharing its failure.
    fn forget(&self, refresh_token: &str, exchange: &Arc<Exchange>) {
        let mut exchanges = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if exchanges
            .get(refresh_token)
            .is_some_and(|(_, kept)| Arc::ptr_eq(kept, exchange))
        {
            exchanges.remove(refresh_token);
        }
    }
}

/// Renews a session whose access token has expired from its refresh token (see the module's
/// notes), before the page sees the request.
pub(crate) async fn renew(
    AxumState(state): AxumState<State>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let session = Session::of(headers, &state);
    let refresh_token = match cookie(headers, REFRESH_COOKIE) {
        Some(token) if session.user.is_none() && !token.is_empty() => token.to_owned(),
        _ => {
            request.extensions_mut().insert(session);
            return next.run(request).await;
        }
    };
    let secure = over_tls(headers, request.uri());
    let exchange = state.renewals.exchange(&refresh_token);
    let renewed = exchange
        .get_or_init(|| async {
            state
                .services
                .user
                .clone()
                .refresh(RefreshRequest {
                    refresh_token: refresh_token.clone(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| {
                    if status.code() != tonic::Code::Unauthenticated {
                        tracing::warn!(code = ?status.code(), message = status.message(), "could not renew a session");
                    }
                    status.code()
                })
        })
        .await
        .clone();
    match renewed {
        Ok(tokens) => {
            request
                .extensions_mut()
                .insert(Session::of_token(&tokens.access_token, &state));
            let mut response = next.run(request).await;
            if !sets_the_session(&response) {
                append_cookies(&mut response, session_cookies(&tokens, secure));
            }
            response
        }
        // Spent, revoked, expired, or its account deleted: the session is over.
        Err(tonic::Code::Unauthenticated) => {
            request.extensions_mut().insert(Session::default());
            let mut response = next.run(request).await;
            if !sets_the_session(&response) {
                append_cookies(&mut response, no_session_cookies(secure));
            }
            response
        }
        Err(_) => {
            state.renewals.forget(&refresh_token, &exchange);
            request.extensions_mut().insert(Session {
                user: None,
                renewal_unavailable: true,
            });
            next.run(request).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("xsouk_csrf=no; souk_csrf=abc; other=1"),
        );
        assert_eq!(cookie(&headers, "souk_csrf"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn session_cookies_are_http_only_lax_and_secure_only_over_tls() {
        let plain = set_cookie(SESSION_COOKIE, "t", 60, false);
        assert_eq!(
            plain,
            "souk_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        let mut headers = HeaderMap::new();
        let uri: http::Uri = "/".parse().expect("uri");
        assert!(!over_tls(&headers, &uri));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&headers, &uri));
        let secure = set_cookie(SESSION_COOKIE, "t", 60, over_tls(&headers, &uri));
        assert!(secure.to_str().expect("ascii").ends_with("; Secure"));
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/cart")), "/cart");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
