//! Registering, logging in and out. Logging in asks the user service for an access token and
//! keeps it in the session cookie; registering logs the new user in at once.

use axum::{
    Router,
    extract::{Query, State as AxumState},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderMap, StatusCode, Uri};
use maud::{Markup, html};
use serde::Deserialize;
use souk_protos::v1::{LoginRequest, RegisterRequest};

use super::{
    page::{PageError, PageResult, csrf, form_error, render},
    session::{Form, Visitor, local_path, sign_in, sign_out},
};
use crate::{State, error::ApiError, throttle::ClientAddr};

pub fn router() -> Router<State> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/register", get(register_page).post(register))
        .route("/logout", post(logout))
}

#[derive(Debug, Deserialize)]
struct Next {
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
    next: Option<String>,
}

fn next_query(next: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish()
}

fn login_form(visitor: &Visitor, next: &str, email: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Log in" }
        form method="post" action="/login" class="stacked" {
            (form_error(error))
            (csrf(visitor))
            input type="hidden" name="next" value=(next);
            label for="email" { "Email" }
            input id="email" name="email" type="email" autocomplete="username" value=(email) required;
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Log in" }
        }
        p { "New here? " a href={ "/register?" (next_query(next)) } { "Create an account" } }
    }
}

fn register_form(
    visitor: &Visitor,
    next: &str,
    fields: &Credentials,
    error: Option<&str>,
) -> Markup {
    html! {
        h1 { "Register" }
        form method="post" action="/register" class="stacked" {
            (form_error(error))
            (csrf(visitor))
            input type="hidden" name="next" value=(next);
            label for="name" { "Name" }
            input id="name" name="name" type="text" autocomplete="name" value=(fields.name) required;
            label for="email" { "Email" }
            input id="email" name="email" type="email" autocomplete="username" value=(fields.email) required;
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="new-password" required;
            button type="submit" { "Register" }
        }
        p { "Already registered? " a href={ "/login?" (next_query(next)) } { "Log in instead" } }
    }
}

async fn login_page(visitor: Visitor, Query(query): Query<Next>) -> Response {
    let next = local_path(query.next.as_deref());
    render(
        &visitor,
        "Log in",
        html! {},
        login_form(&visitor, &next, "", None),
    )
}

async fn register_page(visitor: Visitor, Query(query): Query<Next>) -> Response {
    let next = local_path(query.next.as_deref());
    let form = register_form(&visitor, &next, &Credentials::default(), None);
    render(&visitor, "Register", html! {}, form)
}

/// A form shown again with what went wrong, with the status the error has.
fn again(status: StatusCode, page: Response) -> Response {
    (status, page).into_response()
}

/// A service's refusal that the person can fix in the form, as a status and a message; other
/// errors are pages of their own.
fn fixable(error: tonic::Status) -> Result<(StatusCode, String), PageError> {
    match ApiError::from(error) {
        ApiError::BadRequest { detail, .. } => Ok((StatusCode::BAD_REQUEST, detail)),
        ApiError::Unauthorized(_) => Ok((
            StatusCode::UNAUTHORIZED,
            "That email and password do not match an account.".into(),
        )),
        ApiError::Conflict(detail) => Ok((StatusCode::CONFLICT, detail)),
        other => Err(other.into()),
    }
}

async fn start_session(
    state: &State,
    headers: &HeaderMap,
    uri: &Uri,
    email: String,
    password: String,
    next: &str,
) -> Result<Response, tonic::Status> {
    let token = state
        .services
        .user
        .clone()
        .login(LoginRequest { email, password })
        .await?
        .into_inner();
    Ok(sign_in(headers, uri, &token, next))
}

async fn login(
    AxumState(state): AxumState<State>,
    client: ClientAddr,
    visitor: Visitor,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<Credentials>,
) -> PageResult {
    let next = local_path(form.next.as_deref());
    // The same limits as the API's login: the form is no way around them.
    state.throttle.login(client, &form.email)?;
    match start_session(
        &state,
        &headers,
        &uri,
        form.email.clone(),
        form.password,
        &next,
    )
    .await
    {
        Ok(response) => Ok(response),
        Err(error) => {
            if error.code() == tonic::Code::Unauthenticated {
                state.throttle.login_failed(&form.email)?;
            }
            let (status, message) = fixable(error)?;
            let page = login_form(&visitor, &next, &form.email, Some(&message));
            Ok(again(status, render(&visitor, "Log in", html! {}, page)))
        }
    }
}

async fn register(
    AxumState(state): AxumState<State>,
    client: ClientAddr,
    visitor: Visitor,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<Credentials>,
) -> PageResult {
    let next = local_path(form.next.as_deref());
    state.throttle.register(client)?;
    let registered = state
        .services
        .user
        .clone()
        .register(RegisterRequest {
            email: form.email.clone(),
            password: form.password.clone(),
            name: form.name.clone(),
        })
        .await;
    let outcome = match registered {
        Ok(_) => {
            start_session(
                &state,
                &headers,
                &uri,
                form.email.clone(),
                form.password.clone(),
                &next,
            )
            .await
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(response) => Ok(response),
        Err(error) => {
            let (status, message) = fixable(error)?;
            let page = register_form(&visitor, &next, &form, Some(&message));
            Ok(again(status, render(&visitor, "Register", html! {}, page)))
        }
    }
}

async fn logout(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    uri: Uri,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Response {
    sign_out(&state, &headers, &uri).await
}
