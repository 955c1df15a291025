//! The cart's part in the checkout saga: a confirmed order takes exactly its own lines out of its
//! user's cart. What the shopper added after placing the order, or the amount by which a line was
//! raised since, stays; a line lowered below what was ordered goes.

use souk_protos::v1::OrderConfirmed;
use souk_shared::{
    consumer::{HandleResult, Handler},
    events::{Envelope, Event, MalformedEvent, uuid_field},
};
use sqlx::PgConnection;

use crate::store;

/// The events the cart service consumes.
pub const EVENTS: &[&str] = &[OrderConfirmed::TYPE];

#[derive(Debug)]
pub struct TakeOutOnConfirm;

impl Handler for TakeOutOnConfirm {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, event: &'a Envelope) -> HandleResult<'a> {
        // `event()` rejects any other type (and the consumer reads only this one's subject).
        Box::pin(async move {
            let confirmed: OrderConfirmed = event.event()?;
            let user = uuid_field("user_id", &confirmed.user_id)?;
            let (products, quantities) = ordered_lines(&confirmed)?;
            store::lock(tx, user).await?;
            if products.is_empty() {
                // Written before order.confirmed carried its lines: that version emptied the cart.
                store::clear(tx, user).await?;
            } else {
                store::take_out(tx, user, &products, &quantities).await?;
            }
            tracing::info!(user_id = %user, order_id = %confirmed.order_id, "ordered lines taken out of the cart");
            Ok(())
        })
    }
}

/// The order's lines as product ids and quantities; a malformed line rejects the event.
fn ordered_lines(
    confirmed: &OrderConfirmed,
) -> Result<(Vec<uuid::Uuid>, Vec<i64>), MalformedEvent> {
    confirmed
        .lines
        .iter()
        .map(|line| {
            let product = uuid_field("lines.product_id", &line.product_id)?;
            if line.quantity < 1 {
                return Err(MalformedEvent(format!(
                    "lines.quantity: {} is not a positive quantity",
                    line.quantity
                )));
            }
            Ok((product, line.quantity))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|lines| lines.into_iter().unzip())
}
