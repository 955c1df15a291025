//! The Operations section of docs/api.md: liveness, readiness and the OpenAPI document
//! (`openapi.rs`, generated when the router is built). Metrics are not here: they are served on
//! the operations port only (`SOUK_METRICS_ADDR`), never on the API.

use axum::{
    Router,
    extract::State as AxumState,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{State, error::problem_response};

pub fn router() -> Router<State> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(openapi))
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// 200 when every service answers its health check as serving, else a 503 problem naming them.
async fn readyz(AxumState(state): AxumState<State>) -> Response {
    let checks = state.services.readiness().await;
    let services: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, serving)| {
            (
                (*name).to_owned(),
                (if *serving { "serving" } else { "unavailable" }).into(),
            )
        })
        .collect();
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, serving)| !serving)
        .map(|(name, _)| *name)
        .collect();
    if down.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready", "services": services })).into_response()
    } else {
        problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            "Service unavailable",
            format!("not ready: {} unavailable", down.join(", ")),
            Some(serde_json::json!({ "services": services })),
        )
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", responses(
    (status = 200, description = "This document", content_type = "application/json", body = Object),
))]
pub(crate) async fn openapi(AxumState(state): AxumState<State>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}
