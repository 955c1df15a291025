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
use souk_contract::api::MAX_IDEMPOTENCY_KEY_CHARS;
use souk_protos::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderStatus,
};
use souk_shared::time;

use utoipa::ToSchema;

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

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderItem)]
pub(crate) struct ItemBody {
    #[schema(format = Uuid)]
    product_id: String,
    name: String,
    unit_price_cents: i64,
    quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub(crate) struct OrderBody {
    #[schema(format = Uuid)]
    id: String,
    #[schema(inline)]
    status: Status,
    items: Vec<ItemBody>,
    total_cents: i64,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Where an order is: `PENDING` while the checkout runs, then `CONFIRMED` or `CANCELLED`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    Pending,
    Confirmed,
    Cancelled,
}

impl From<Order> for OrderBody {
    fn from(order: Order) -> Self {
        let status = match order.status() {
            OrderStatus::Pending | OrderStatus::Unspecified => Status::Pending,
            OrderStatus::Confirmed => Status::Confirmed,
            OrderStatus::Cancelled => Status::Cancelled,
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

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrderList {
    items: Vec<OrderBody>,
}

/// The optional `Idempotency-Key` header: visible ASCII, at most `MAX_IDEMPOTENCY_KEY_CHARS`.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid_field("Idempotency-Key", "must be visible ASCII"))?;
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            &format!("must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Place an order of the whole cart; the checkout runs on (poll the order).
///
/// The same `Idempotency-Key` again answers the order it placed.
#[utoipa::path(post, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Visible ASCII")),
    responses(
        (status = 202, description = "The order, `PENDING`", body = OrderBody),
        (status = 409, description = "The cart is empty, or changed while it was priced"),
    ),
)]
pub(crate) async fn place(
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

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/orders", tag = "orders", security(("bearer" = [])), responses(
    (status = 200, description = "The orders", body = OrderList),
))]
pub(crate) async fn list(
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

/// One of the caller's orders.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 404, description = "No such order of the caller's"),
    ),
)]
pub(crate) async fn read(
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

/// Cancel one of the caller's orders.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 404, description = "No such order of the caller's"),
        (status = 409, description = "The order is cancelled already"),
    ),
)]
pub(crate) async fn cancel(
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
