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

use utoipa::ToSchema;

use crate::{
    State,
    error::ApiResult,
    extract::{self, AuthUser, IdPath, Json},
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

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CartLine)]
pub(crate) struct NewLine {
    #[schema(format = Uuid)]
    product_id: String,
    #[serde(deserialize_with = "extract::integer")]
    quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Quantity {
    #[serde(deserialize_with = "extract::integer")]
    quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Cart)]
pub(crate) struct CartBody {
    #[schema(format = Uuid)]
    user_id: String,
    /// In the order they were first added.
    items: Vec<LineBody>,
    total_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CartItem)]
pub(crate) struct LineBody {
    #[schema(format = Uuid)]
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

/// The caller's cart, at current prices.
#[utoipa::path(get, path = "/api/carts", tag = "cart", security(("bearer" = [])), responses(
    (status = 200, description = "The cart", body = CartBody),
))]
pub(crate) async fn get_cart(AxumState(state): AxumState<State>, caller: AuthUser) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .get_cart(caller.request(GetCartRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

/// Add a product to the cart (to its line, if it has one).
#[utoipa::path(post, path = "/api/carts/products", tag = "cart", security(("bearer" = [])), request_body = NewLine,
    responses(
        (status = 200, description = "The cart", body = CartBody),
        (status = 404, description = "No such product"),
        (status = 409, description = "Beyond the product's stock or a line's bound, or a line too many"),
    ),
)]
pub(crate) async fn add_item(
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

/// Set the quantity of a product in the cart.
#[utoipa::path(put, path = "/api/carts/products/{productId}", tag = "cart", security(("bearer" = [])),
    params(("productId" = Uuid, Path, description = "The product's id")),
    request_body = Quantity,
    responses(
        (status = 200, description = "The cart", body = CartBody),
        (status = 404, description = "No such product"),
        (status = 409, description = "Beyond the product's stock, or a line too many"),
    ),
)]
pub(crate) async fn set_quantity(
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

/// Remove a product from the cart.
#[utoipa::path(delete, path = "/api/carts/products/{productId}", tag = "cart", security(("bearer" = [])),
    params(("productId" = Uuid, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The cart", body = CartBody),
        (status = 404, description = "The product is not in the cart"),
    ),
)]
pub(crate) async fn remove_item(
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

/// Empty the cart.
#[utoipa::path(delete, path = "/api/carts/products", tag = "cart", security(("bearer" = [])), responses(
    (status = 200, description = "The empty cart", body = CartBody),
))]
pub(crate) async fn clear_cart(AxumState(state): AxumState<State>, caller: AuthUser) -> CartReply {
    let cart = state
        .services
        .cart
        .clone()
        .clear_cart(caller.request(ClearCartRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(cart.into()))
}

/// Delete the cart.
#[utoipa::path(delete, path = "/api/carts", tag = "cart", security(("bearer" = [])), responses(
    (status = 204, description = "Deleted"),
))]
pub(crate) async fn delete_cart(
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
