//! The Orders section of docs/api.md: placing an order from the cart (202, the saga runs on),
//! listing, reading and cancelling the caller's own orders.

use axum::{
    Router,
    extract::State as AxumState,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use souk_protos::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderStatus,
};
use souk_shared::time;

use crate::{
    State,
    error::{ApiError, ApiResult},
    extract::{AuthUser, IdPath},
};

pub fn router() -> Router<State> {
    Router::new()
        .route("/api/orders", post(place).get(list))
        .route("/api/orders/{id}", get(read))
        .route("/api/orders/{id}/cancel", post(cancel))
}

#[derive(Debug, Serialize)]
struct ItemBody {
    product_id: String,
    name: String,
    unit_price_cents: i64,
    quantity: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct OrderBody {
    id: String,
    status: &'static str,
    items: Vec<ItemBody>,
    total_cents: i64,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Order> for OrderBody {
    fn from(order: Order) -> Self {
        let status = match order.status() {
            OrderStatus::Pending | OrderStatus::Unspecified => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
        };
        Self {
            id: order.id,
            status,
            items: order
                .items
                .into_iter()
                .map(|item| ItemBody {
                    product_id: item.product_id,
                    name: item.name,
                    unit_price_cents: item.unit_price_cents,
                    quantity: item.quantity,
                })
                .collect(),
            total_cents: order.total_cents,
            failure_reason: order.failure_reason,
            created_at: time::from_proto(order.created_at.as_ref()),
            updated_at: time::from_proto(order.updated_at.as_ref()),
        }
    }
}

#[derive(Debug, Serialize)]
struct OrderList {
    items: Vec<OrderBody>,
}

/// The optional `Idempotency-Key` header: at most 255 characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid_field("Idempotency-Key", "must be visible ASCII"))?;
    if key.is_empty() || key.chars().count() > 255 {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

async fn place(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, axum::Json<OrderBody>)> {
    let request = CreateOrderRequest {
        idempotency_key: idempotency_key(&headers)?,
    };
    let order = state
        .services
        .order
        .clone()
        .create_order(caller.request(request))
        .await?
        .into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(order.into())))
}

async fn list(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
) -> ApiResult<axum::Json<OrderList>> {
    let orders = state
        .services
        .order
        .clone()
        .list_orders(caller.request(ListOrdersRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(OrderList {
        items: orders.items.into_iter().map(OrderBody::from).collect(),
    }))
}

async fn read(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<OrderBody>> {
    let order = state
        .services
        .order
        .clone()
        .get_order(caller.request(GetOrderRequest { id: id.to_string() }))
        .await?
        .into_inner();
    Ok(axum::Json(order.into()))
}

async fn cancel(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<OrderBody>> {
    let order = state
        .services
        .order
        .clone()
        .cancel_order(caller.request(CancelOrderRequest { id: id.to_string() }))
        .await?
        .into_inner();
    Ok(axum::Json(order.into()))
}
