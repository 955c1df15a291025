//! The frame every page shares (head, navigation, main), the error pages, and how money and
//! statuses read.

use axum::response::{Html, IntoResponse, Redirect, Response};
use http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use souk_protos::v1::OrderStatus;

use super::{
    assets::{ICON, SCRIPT, STYLE},
    session::{CSRF_FIELD, Visitor},
};
use crate::error::ApiError;

/// The shop's name, as every page title ends.
const SHOP: &str = "Souk";

/// A whole page: `title` is also its heading's text.
pub(crate) fn render(visitor: &Visitor, title: &str, head_extra: Markup, body: Markup) -> Response {
    Html(frame(Some(visitor), title, head_extra, body).into_string()).into_response()
}

fn frame(visitor: Option<&Visitor>, title: &str, head_extra: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (SHOP) }
                link rel="icon" href=(ICON.path) type="image/svg+xml";
                link rel="stylesheet" href=(STYLE.path);
                script src=(SCRIPT.path) defer {}
                (head_extra)
            }
            body {
                header class="site" {
                    a class="brand" href="/" { (SHOP) }
                    nav aria-label="Main" {
                        ul {
                            li { a href="/products" { "All products" } }
                            li { a href="/cart" { "Cart" } }
                            li { a href="/orders" { "Orders" } }
                            @if let Some(visitor) = visitor {
                                @if visitor.is_admin() {
                                    li { a href="/admin" { "Admin" } }
                                }
                                @if visitor.user.is_some() {
                                    li {
                                        form method="post" action="/logout" {
                                            (csrf(visitor))
                                            button type="submit" { "Log out" }
                                        }
                                    }
                                } @else {
                                    li { a href={ "/login" (come_back(visitor)) } { "Log in" } }
                                    li { a href={ "/register" (come_back(visitor)) } { "Register" } }
                                }
                            }
                        }
                    }
                }
                main id="main" {
                    (body)
                }
            }
        }
    }
}

/// The query that brings a visitor back to this page after logging in or registering.
fn come_back(visitor: &Visitor) -> String {
    let path = visitor.path.as_str();
    if path == "/" || path.starts_with("/login") || path.starts_with("/register") {
        return String::new();
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", path)
        .finish();
    format!("?{query}")
}

/// The hidden field that carries the CSRF token; every form has it.
pub(crate) fn csrf(visitor: &Visitor) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(visitor.csrf); }
}

/// `1250` cents in `USD` read as "$12.50"; other currencies by their code ("12.50 EUR").
pub(crate) fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let (whole, fraction) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    match currency {
        "USD" | "" => format!("{sign}${whole}.{fraction:02}"),
        code => format!("{sign}{whole}.{fraction:02} {code}"),
    }
}

/// The shop's one currency: carts and orders carry amounts without one.
pub(crate) const CURRENCY: &str = "USD";

pub(crate) fn status_text(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending | OrderStatus::Unspecified => "PENDING",
        OrderStatus::Confirmed => "CONFIRMED",
        OrderStatus::Cancelled => "CANCELLED",
    }
}

/// Why a page could not be shown, as a page (never a JSON problem: a person reads it).
#[derive(Debug)]
pub(crate) enum PageError {
    /// Not signed in (or the session expired): go log in, then come back to `next`.
    LogIn {
        next: String,
    },
    Forbidden,
    Csrf,
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    /// Too many attempts: try again after this many seconds.
    TooManyRequests {
        detail: String,
        retry_after: u64,
    },
    Unavailable,
    Internal,
}

pub(crate) type PageResult<T = Response> = Result<T, PageError>;

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        Self::from(ApiError::from(status))
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::BadRequest { detail, .. } => Self::BadRequest(detail),
            ApiError::Unauthorized(_) => Self::LogIn { next: "/".into() },
            ApiError::Forbidden(_) => Self::Forbidden,
            ApiError::NotFound(detail) => Self::NotFound(detail),
            ApiError::Conflict(detail) | ApiError::PreconditionFailed(detail) => {
                Self::Conflict(detail)
            }
            ApiError::PayloadTooLarge => Self::BadRequest("the form is too large".into()),
            ApiError::RequestTimeout => Self::BadRequest("the form did not arrive in time".into()),
            ApiError::HeadersTooLarge(_) => Self::BadRequest("the request is too large".into()),
            ApiError::TooManyRequests {
                detail,
                retry_after,
            } => Self::TooManyRequests {
                detail,
                retry_after,
            },
            ApiError::MethodNotAllowed => Self::NotFound("no such page".into()),
            ApiError::Unavailable(_) => Self::Unavailable,
            ApiError::Internal => Self::Internal,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::LogIn { next } => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &next)
                    .finish();
                return Redirect::to(&format!("/login?{query}")).into_response();
            }
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "This page is for admins only.".to_owned(),
            ),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from this shop's page, or it expired. Go back, reload the page and try again.".to_owned(),
            ),
            Self::BadRequest(detail) => (StatusCode::BAD_REQUEST, "Please check your input", detail),
            Self::NotFound(detail) => (StatusCode::NOT_FOUND, "Not found", detail),
            Self::Conflict(detail) => (StatusCode::CONFLICT, "That did not work", detail),
            Self::TooManyRequests {
                detail,
                retry_after,
            } => {
                let body = html! {
                    h1 { "Too many attempts" }
                    p role="alert" { (detail) " Please wait " (retry_after) " seconds and try again." }
                    p { a href="/" { "Back to the shop" } }
                };
                let page = Html(frame(None, "Too many attempts", html! {}, body).into_string());
                let wait = [(http::header::RETRY_AFTER, retry_after.to_string())];
                return (StatusCode::TOO_MANY_REQUESTS, wait, page).into_response();
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Part of the shop is not answering right now. Please try again in a moment.".to_owned(),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "An unexpected error occurred. Please try again.".to_owned(),
            ),
        };
        let body = html! {
            h1 { (title) }
            p role="alert" { (detail) }
            p { a href="/" { "Back to the shop" } }
        };
        (
            status,
            Html(frame(None, title, html! {}, body).into_string()),
        )
            .into_response()
    }
}

/// An error shown inside a form, announced to screen readers.
pub(crate) fn form_error(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p class="error" role="alert" { (message) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_currency() {
        assert_eq!(money(1250, "USD"), "$12.50");
        assert_eq!(money(5, "USD"), "$0.05");
        assert_eq!(money(100_000, "EUR"), "1000.00 EUR");
        assert_eq!(money(-150, "USD"), "-$1.50");
    }
}
