//! The Cart section of docs/api.md: the signed-in caller's own cart. The caller's token is
//! forwarded and the cart service takes the user from it, so no route can name another cart.

use axum::{
    Router,
    extract::State as AxumState,
    http::StatusCode,
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use souk_protos::v1::{
    AddItemRequest, Cart, ClearCartRequest, DeleteCartRequest, GetCartRequest, RemoveItemRequest,
    SetItemQuantityRequest,
};

use crate::{
    State,
    error::ApiResult,
    extract::{AuthUser, IdPath, Json},
};

pub fn router() -> Router<State> {
    Router::new()
        .route("/api/carts", get(get_cart).delete(delete_cart))
        .route("/api/carts/products", post(add_item).delete(clear_cart))
        .route(
            "/api/carts/products/{productId}",
            put(set_quantity).delete(remove_item),
        )
}

#[derive(Debug, Deserialize)]
struct NewLine {
    product_id: String,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct Quantity {
    quantity: i64,
}

#[derive(Debug, Serialize)]
struct CartBody {
    user_id: String,
    items: Vec<LineBody>,
    total_cents: i64,
}

#[derive(Debug, Serialize)]
struct LineBody {
    product_id: String,
    name: String,
    unit_price_cents: i64,
    quantity: i64,
    line_total_cents: i64,
}

impl From<Cart> for CartBody {
    fn from(cart: Cart) -> Self {
        Self {
            user_id: cart.user_id,
            items: cart
                .items
                .into_iter()
                .map(|item| LineBody {
                    product_id: item.product_id,
                    name: item.name,
                    unit_price_cents: item.unit_price_cents,
                    quantity: item.quantity,
                    line_total_cents: item.line_total_cents,
                })
                .collect(),
            total_cents: cart.total_cents,
        }
    }
}

type CartReply = ApiResult<axum::Json<CartBody>>;

async fn get_cart(AxumState(state): AxumState<State>, caller: AuthUser) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .get_cart(caller.request(GetCartRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

async fn add_item(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    Json(body): Json<NewLine>,
) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .add_item(caller.request(AddItemRequest {
            product_id: body.product_id,
            quantity: body.quantity,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

async fn set_quantity(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    IdPath(product_id): IdPath,
    Json(body): Json<Quantity>,
) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .set_item_quantity(caller.request(SetItemQuantityRequest {
            product_id: product_id.to_string(),
            quantity: body.quantity,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

async fn remove_item(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
    IdPath(product_id): IdPath,
) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .remove_item(caller.request(RemoveItemRequest {
            product_id: product_id.to_string(),
        }))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

async fn clear_cart(AxumState(state): AxumState<State>, caller: AuthUser) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .clear_cart(caller.request(ClearCartRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

async fn delete_cart(
    AxumState(state): AxumState<State>,
    caller: AuthUser,
) -> ApiResult<StatusCode> {
    state
        .services
        .cart
        .clone()
        .delete_cart(caller.request(DeleteCartRequest {}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
