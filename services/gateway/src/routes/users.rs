//! The Auth section of docs/api.md: registration, login, reading users.

use axum::{Router, extract::State as AxumState, http::StatusCode, routing::get, routing::post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use souk_protos::v1::{
    GetUserRequest, LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, RegisterRequest,
    User,
};
use souk_shared::{jwt::Role, time};
use utoipa::ToSchema;

use crate::{
    State,
    error::ApiResult,
    extract::{AuthUser, IdPath, Json},
    headers,
    throttle::ClientAddr,
};

pub fn router() -> Router<State> {
    Router::new()
        .route("/api/users", post(register))
        .route("/api/users/me", get(me))
        .route("/api/users/{id}", get(user))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .layer(axum::middleware::from_fn(headers::no_store))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Registration {
    /// Trimmed, NFKC; unique regardless of case.
    #[schema(format = Email)]
    email: String,
    password: String,
    /// Trimmed.
    name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub(crate) struct UserBody {
    #[schema(format = Uuid)]
    id: String,
    email: String,
    name: String,
    #[schema(inline)]
    role: RoleName,
    created_at: DateTime<Utc>,
}

/// The roles a client can see (services' own tokens are never handed out).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum RoleName {
    Customer,
    Admin,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            created_at: time::from_proto(user.created_at.as_ref()),
            id: user.id,
            email: user.email,
            name: user.name,
            role: if user.role == Role::Admin.as_str() {
                RoleName::Admin
            } else {
                RoleName::Customer
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = RefreshToken)]
pub(crate) struct RefreshBody {
    refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Token)]
pub(crate) struct TokenBody {
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds the access token is valid for.
    expires_in: i64,
    /// Single use: exchanged at `/api/auth/refresh` for the next pair.
    refresh_token: String,
    /// Seconds the refresh token is valid for.
    refresh_expires_in: i64,
}

impl From<LoginResponse> for TokenBody {
    fn from(token: LoginResponse) -> Self {
        Self {
            access_token: token.access_token,
            token_type: token.token_type,
            expires_in: token.expires_in,
            refresh_token: token.refresh_token,
            refresh_expires_in: token.refresh_expires_in,
        }
    }
}

/// Register a customer.
#[utoipa::path(post, path = "/api/users", tag = "auth", request_body = Registration, responses(
    (status = 201, description = "The new customer", body = UserBody),
    (status = 409, description = "The email is taken"),
    (status = 429, description = "Too many registrations from this address"),
))]
pub(crate) async fn register(
    AxumState(state): AxumState<State>,
    client: ClientAddr,
    Json(body): Json<Registration>,
) -> ApiResult<(StatusCode, axum::Json<UserBody>)> {
    state.throttle.register(client)?;
    let user = state
        .services
        .user
        .clone()
        .register(RegisterRequest {
            email: body.email,
            password: body.password,
            name: body.name,
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Log in: an access token and a refresh token.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = Credentials, responses(
    (status = 200, description = "The tokens", body = TokenBody),
    (status = 401, description = "Wrong email or password"),
    (status = 429, description = "Too many failed logins for this account, or logins from this address"),
))]
pub(crate) async fn login(
    AxumState(state): AxumState<State>,
    client: ClientAddr,
    Json(body): Json<Credentials>,
) -> ApiResult<axum::Json<TokenBody>> {
    state.throttle.login(client, &body.email)?;
    let answer = state
        .services
        .user
        .clone()
        .login(LoginRequest {
            email: body.email.clone(),
            password: body.password,
        })
        .await;
    let token = match answer {
        Ok(token) => token.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            state.throttle.login_failed(&body.email)?;
            return Err(status.into());
        }
        Err(status) => return Err(status.into()),
    };
    Ok(axum::Json(token.into()))
}

/// A refresh token for the next access and refresh tokens (the old one is spent).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshBody, responses(
    (status = 200, description = "The next tokens", body = TokenBody),
    (status = 401, description = "An unknown, spent, expired or revoked refresh token"),
))]
pub(crate) async fn refresh(
    AxumState(state): AxumState<State>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<axum::Json<TokenBody>> {
    let token = state
        .services
        .user
        .clone()
        .refresh(RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await?
        .into_inner();
    Ok(axum::Json(token.into()))
}

/// Ends the session of a refresh token: it and every token of its family are revoked.
///
/// An unknown token is no error.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", request_body = RefreshBody, responses(
    (status = 204, description = "Logged out"),
))]
pub(crate) async fn logout(
    AxumState(state): AxumState<State>,
    Json(body): Json<RefreshBody>,
) -> ApiResult<StatusCode> {
    state
        .services
        .user
        .clone()
        .logout(LogoutRequest {
            refresh_token: body.refresh_token,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own account.
#[utoipa::path(get, path = "/api/users/me", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, description = "The caller", body = UserBody),
    (status = 404, description = "The account was deleted"),
))]
pub(crate) async fn me(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
) -> ApiResult<axum::Json<UserBody>> {
    read_user(&state, &caller, caller.user_id).await
}

/// A user: a customer may read only itself, an admin anyone.
#[utoipa::path(get, path = "/api/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 403, description = "A customer reading another user"),
        (status = 404, description = "No such user"),
    ),
)]
pub(crate) async fn user(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<UserBody>> {
    read_user(&state, &caller, id).await
}

async fn read_user(
    state: &State,
    caller: &AuthUser,
    id: uuid::Uuid,
) -> ApiResult<axum::Json<UserBody>> {
    let user = state
        .services
        .user
        .clone()
        .get_user(caller.request(GetUserRequest { id: id.to_string() }))
        .await?
        .into_inner();
    Ok(axum::Json(user.into()))
}
