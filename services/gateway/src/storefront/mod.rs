//! The storefront: HTML pages for shoppers and admins, served by the gateway at `/` (the same
//! origin as the API).
//!
//! Pages are rendered on the server (maud) and work with JavaScript off: every action is a form
//! that posts and is answered with a redirect (303) to the page that shows its result. The one
//! script (`assets/app.js`) only enhances: the order page follows the order's status without a
//! reload. Pages call the services through the gateway's gRPC clients, never over HTTP.
//!
//! Safety: the session is the user's access token in an `HttpOnly`, `SameSite=Lax` cookie
//! (`Secure` when the request came over TLS); every form carries a CSRF token checked against a
//! cookie of its own (`session.rs`); every response carries a Content-Security-Policy that allows
//! only this origin's scripts and styles (no `unsafe-inline`), so no request leaves the shop.

mod account;
mod admin;
mod assets;
mod cart;
mod catalog;
mod orders;
mod page;
pub(crate) mod session;

use axum::{
    Router,
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, header};

use crate::State;

/// What the storefront allows a page to load: its own scripts, styles, images and status polls.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: State) -> Router<State> {
    Router::new()
        .merge(catalog::router())
        .merge(account::router())
        .merge(cart::router())
        .merge(orders::router())
        .merge(admin::router())
        .layer(axum::middleware::from_fn_with_state(state, session::renew))
        .layer(axum::middleware::from_fn(session::ensure_csrf_cookie))
        .layer(axum::middleware::from_fn(security_headers))
        // Assets carry no cookie and no policy of their own: they are the same for everyone.
        .merge(assets::router())
}

/// Whether an unrouted `path` is the storefront's to answer (a page that does not exist), not
/// the API's (which answers problems, in JSON).
pub(crate) fn owns(path: &str) -> bool {
    !(path == "/api" || path.starts_with("/api/") || path == "/healthz" || path == "/readyz")
}

/// The page for a path nothing answers.
pub(crate) fn not_found() -> Response {
    let mut response =
        page::PageError::NotFound("There is no page at this address.".into()).into_response();
    secure(&mut response);
    response
}

/// Headers every page carries. Pages hold a CSRF token and the shopper's own data: no cache
/// may keep them.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    secure(&mut response);
    response
}

fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}
