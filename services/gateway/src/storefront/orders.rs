//! The shopper's orders: the history, one order's page, and cancelling. An order is placed
//! `PENDING` and the checkout saga moves it on; the order page follows it without a reload
//! (`assets/app.js` polls `/orders/{id}/status`), and with JavaScript off it refreshes itself
//! while the order is pending.

use axum::{
    Router,
    extract::{Path, State as AxumState},
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use maud::html;
use serde::{Deserialize, Serialize};
use souk_protos::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderStatus};
use souk_shared::time;

use super::{
    catalog::parse_id,
    page::{CURRENCY, PageResult, csrf, money, render, status_text},
    session::{Form, Shopper},
};
use crate::State;

/// Seconds between refreshes of a pending order's page without JavaScript.
const REFRESH_SECONDS: u32 = 2;

pub fn router() -> Router<State> {
    Router::new()
        .route("/orders", get(history))
        .route("/orders/{id}", get(order_page))
        .route("/orders/{id}/status", get(order_status))
        .route("/orders/{id}/cancel", post(cancel))
}

#[derive(Debug, Deserialize)]
struct Nothing {}

/// What the order page's script needs to show the order's state.
#[derive(Debug, Serialize)]
struct StatusBody {
    status: &'static str,
    /// Why it was cancelled, as a sentence.
    reason: Option<String>,
}

fn reason_text(order: &Order) -> Option<String> {
    let reason = order.failure_reason.as_deref()?;
    Some(
        match reason {
            "cancelled_by_user" => "You cancelled this order.",
            "out_of_stock" => "Some items were out of stock.",
            "payment_declined" => "The payment was declined.",
            "timeout" => "The order could not be completed in time.",
            _ => "The order could not be completed.",
        }
        .to_owned(),
    )
}

async fn read(state: &State, shopper: &Shopper, id: &str) -> PageResult<Order> {
    let id = parse_id(id)?;
    Ok(state
        .services
        .order
        .clone()
        .get_order(shopper.user.request(GetOrderRequest { id: id.to_string() }))
        .await?
        .into_inner())
}

/// An order's id as people read it: its last 8 characters (its first ones are a timestamp,
/// the same for orders placed a minute apart).
fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

async fn history(AxumState(state): AxumState<State>, shopper: Shopper) -> PageResult {
    let orders = state
        .services
        .order
        .clone()
        .list_orders(shopper.user.request(ListOrdersRequest {}))
        .await?
        .into_inner()
        .items;
    let body = html! {
        h1 { "Your orders" }
        @if orders.is_empty() {
            p { "You have no orders yet." }
        } @else {
            table class="orders" {
                caption class="visually-hidden" { "Your orders, newest first" }
                thead { tr {
                    th scope="col" { "Order" }
                    th scope="col" { "Placed" }
                    th scope="col" { "Total" }
                    th scope="col" { "Status" }
                } }
                tbody {
                    @for order in &orders {
                        tr {
                            td { a href={ "/orders/" (order.id) } { "Order " (short(&order.id)) } }
                            td { (time::from_proto(order.created_at.as_ref()).format("%Y-%m-%d %H:%M UTC")) }
                            td { (money(order.total_cents, CURRENCY)) }
                            td class="status" { (status_text(order.status())) }
                        }
                    }
                }
            }
        }
    };
    Ok(render(&shopper.visitor, "Your orders", html! {}, body))
}

async fn order_page(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Path(id): Path<String>,
) -> PageResult {
    let order = read(&state, &shopper, &id).await?;
    let status = order.status();
    let pending = matches!(status, OrderStatus::Pending | OrderStatus::Unspecified);
    let title = format!("Order {}", short(&order.id));
    let head = html! {
        @if pending {
            // Without JavaScript the page comes back until the order is decided; with it, the
            // script follows the status in place and this is ignored.
            noscript { meta http-equiv="refresh" content=(REFRESH_SECONDS); }
        }
    };
    let body = html! {
        h1 { (title) }
        p {
            "Status: "
            strong id="order-status" data-poll={ "/orders/" (order.id) "/status" } aria-live="polite" {
                (status_text(status))
            }
        }
        p id="order-reason" aria-live="polite" { (reason_text(&order).unwrap_or_default()) }
        table class="lines" {
            caption class="visually-hidden" { "Items in this order" }
            thead { tr {
                th scope="col" { "Product" }
                th scope="col" { "Unit price" }
                th scope="col" { "Quantity" }
            } }
            tbody {
                @for item in &order.items {
                    tr {
                        td { (item.name) }
                        td { (money(item.unit_price_cents, CURRENCY)) }
                        td { (item.quantity) }
                    }
                }
            }
        }
        p class="total" { "Total: " strong { (money(order.total_cents, CURRENCY)) } }
        @if status != OrderStatus::Cancelled {
            form method="post" action={ "/orders/" (order.id) "/cancel" } id="cancel-order" {
                (csrf(&shopper.visitor))
                button type="submit" class="secondary" { "Cancel order" }
            }
        }
        p { a href="/orders" { "All your orders" } }
    };
    Ok(render(&shopper.visitor, &title, head, body))
}

async fn order_status(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Path(id): Path<String>,
) -> PageResult {
    let order = read(&state, &shopper, &id).await?;
    Ok(axum::Json(StatusBody {
        status: status_text(order.status()),
        reason: reason_text(&order),
    })
    .into_response())
}

async fn cancel(
    AxumState(state): AxumState<State>,
    shopper: Shopper,
    Path(id): Path<String>,
    Form(Nothing {}): Form<Nothing>,
) -> PageResult {
    let id = parse_id(&id)?;
    state
        .services
        .order
        .clone()
        .cancel_order(
            shopper
                .user
                .request(CancelOrderRequest { id: id.to_string() }),
        )
        .await?;
    Ok(Redirect::to(&format!("/orders/{id}")).into_response())
}
