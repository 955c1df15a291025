//! The Auth section of docs/api.md: registration, login, reading users.

use axum::{Router, extract::State as AxumState, http::StatusCode, routing::get, routing::post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use souk_protos::v1::{
    GetUserRequest, LoginRequest, LoginResponse, LogoutRequest, RefreshRequest, RegisterRequest,
    User,
};
use souk_shared::time;

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

#[derive(Debug, Deserialize)]
struct Registration {
    email: String,
    password: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct UserBody {
    id: String,
    email: String,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            created_at: time::from_proto(user.created_at.as_ref()),
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Debug, Serialize)]
struct TokenBody {
    access_token: String,
    token_type: String,
    expires_in: i64,
    refresh_token: String,
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

async fn register(
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

async fn login(
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
async fn refresh(
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
async fn logout(
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

async fn me(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
) -> ApiResult<axum::Json<UserBody>> {
    read_user(&state, &caller, caller.user_id).await
}

async fn user(
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
