//! The cart (change a quantity, remove a line, empty it) and checkout. "Place order" carries an
//! idempotency key made when the checkout page was rendered, so however often the form is sent
//! (a double click, a resend after a lost answer), the order service creates one order.

use axum::{
    Router,
    extract::{Path, State as AxumState},
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;
use souk_protos::v1::{
    AddItemRequest, Cart, ClearCartRequest, CreateOrderRequest, GetCartRequest, RemoveItemRequest,
    SetItemQuantityRequest,
};
use uuid::Uuid;

use super::{
    catalog::parse_id,
    page::{CURRENCY, PageError, PageResult, csrf, money, render},
    session::{Form, Shopper},
};
use crate::State;

pub fn router() -> Router<State> {
    Router::new()
        .route("/cart", get(cart_page))
        .route("/cart/items", post(add))
        .route("/cart/items/{id}", post(set_quantity))
        .route("/cart/items/{id}/remove", post(remove))
        .route("/cart/empty", post(empty))
        .route("/checkout", get(checkout_page).post(place_order))
}

#[derive(Debug, Deserialize)]
struct NewLine {
    product_id: String,
    quantity: String,
}

#[derive(Debug, Deserialize)]
struct Quantity {
    quantity: String,
}

#[derive(Debug, Deserialize)]
struct PlaceOrder {
    idempotency_key: String,
}

#[derive(Debug, Deserialize)]
struct Nothing {}

/// A quantity as typed: a whole number from 1 to 1000 (the cart service checks it again).
fn quantity(raw: &str) -> PageResult<i64> {
    match raw.trim().parse::<i64>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(PageError::BadRequest(
            "Quantity must be a whole number from 1 to 1000.".into(),
        )),
    }
}

async fn read_cart(state: &State, shopper: &Shopper) -> PageResult<Cart> {
    Ok(state
        .services
        .cart
        .clone()
        .get_cart(shopper.user.request(GetCartRequest {}))
        .await?
        .into_inner())
}

fn lines(cart: &Cart, shopper: &Shopper, editable: bool) -> Markup {
    html! {
        table class="lines" {
            caption class="visually-hidden" { "Items in your cart" }
            thead {
                tr {
                    th scope="col" { "Product" }
                    th scope="col" { "Unit price" }
                    th scope="col" { "Quantity" }
                    th scope="col" { "Total" }
                    @if editable { th scope="col" { span class="visually-hidden" { "Actions" } } }
                }
            }
            tbody {
                @for item in &cart.items {
                    tr {
                        td { a href={ "/products/" (item.product_id) } { (item.name) } }
                        td { (money(item.unit_price_cents, CURRENCY)) }
                        @if editable {
                            td {
                                form method="post" action={ "/cart/items/" (item.product_id) } class="inline" {
                                    (csrf(&shopper.visitor))
                                    label for={ "quantity-" (item.product_id) } class="visually-hidden" { "Quantity" }
                                    input id={ "quantity-" (item.product_id) } name="quantity" type="number" min="1" value=(item.quantity) required;
                                    button type="submit" { "Update" }
                                }
                            }
                        } @else {
                            td { (item.quantity) }
                        }
                        td { (money(item.line_total_cents, CURRENCY)) }
                        @if editable {
                            td {
                                form method="post" action={ "/cart/items/" (item.product_id) "/remove" } class="inline" {
                                    (csrf(&shopper.visitor))
                                    button type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p class="total" { "Total: " strong { (money(cart.total_cents, CURRENCY)) } }
    }
}

async fn cart_page(AxumState(state): AxumState<State>, shopper: Shopper) -> PageResult {
    let cart = read_cart(&state, &shopper).await?;
    let body = html! {
        h1 { "Your cart" }
        @if cart.items.is_empty() {
            p { "Your cart is empty. " a href="/products" { "Browse the products" } }
        } @else {
            (lines(&cart, &shopper, true))
            div class="actions" {
                form method="post" action="/cart/empty" class="inline" {
                    (csrf(&shopper.visitor))
                    button type="submit" class="secondary" { "Empty cart" }
                }
                a class="button" href="/checkout" { "Checkout" }
            }
        }
    };
    Ok(render(&shopper.visitor, "Your cart", html! {}, body))
}

async fn add(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Form(form): Form<NewLine>,
) -> PageResult {
    let product_id = parse_id(&form.product_id)?;
    let quantity = quantity(&form.quantity)?;
    state
        .services
        .cart
        .clone()
        .add_item(shopper.user.request(AddItemRequest {
            product_id: product_id.to_string(),
            quantity,
        }))
        .await?;
    Ok(Redirect::to("/cart").into_response())
}

async fn set_quantity(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Path(id): Path<String>,
    Form(form): Form<Quantity>,
) -> PageResult {
    let product_id = parse_id(&id)?;
    let quantity = quantity(&form.quantity)?;
    state
        .services
        .cart
        .clone()
        .set_item_quantity(shopper.user.request(SetItemQuantityRequest {
            product_id: product_id.to_string(),
            quantity,
        }))
        .await?;
    Ok(Redirect::to("/cart").into_response())
}

async fn remove(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Path(id): Path<String>,
    Form(Nothing {}): Form<Nothing>,
) -> PageResult {
    let product_id = parse_id(&id)?;
    state
        .services
        .cart
        .clone()
        .remove_item(shopper.user.request(RemoveItemRequest {
            product_id: product_id.to_string(),
        }))
        .await?;
    Ok(Redirect::to("/cart").into_response())
}

async fn empty(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Form(Nothing {}): Form<Nothing>,
) -> PageResult {
    state
        .services
        .cart
        .clone()
        .clear_cart(shopper.user.request(ClearCartRequest {}))
        .await?;
    Ok(Redirect::to("/cart").into_response())
}

async fn checkout_page(AxumState(state): AxumState<State>, shopper: Shopper) -> PageResult {
    let cart = read_cart(&state, &shopper).await?;
    if cart.items.is_empty() {
        return Ok(Redirect::to("/cart").into_response());
    }
    // Made now, once per rendering: every send of this form is the same order.
    let key = Uuid::new_v4();
    let body = html! {
        h1 { "Checkout" }
        (lines(&cart, &shopper, false))
        p { "Payment is taken when the order is confirmed." }
        form method="post" action="/checkout" class="place-order" {
            (csrf(&shopper.visitor))
            input type="hidden" name="idempotency_key" value=(key);
            button type="submit" { "Place order" }
        }
        p { a href="/cart" { "Back to the cart" } }
    };
    Ok(render(&shopper.visitor, "Checkout", html! {}, body))
}

async fn place_order(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Form(form): Form<PlaceOrder>,
) -> PageResult {
    let key = Uuid::parse_str(form.idempotency_key.trim())
        .map_err(|_| PageError::BadRequest("The checkout form is damaged; reload it.".into()))?;
    let order = state
        .services
        .order
        .clone()
        .create_order(shopper.user.request(CreateOrderRequest {
            idempotency_key: Some(format!("storefront-{key}")),
        }))
        .await?
        .into_inner();
    Ok(Redirect::to(&format!("/orders/{}", order.id)).into_response())
}
