//! The cart's part in the checkout saga: a confirmed order empties its user's cart.

use souk_protos::v1::OrderConfirmed;
use souk_shared::{
    consumer::{HandleError, HandleResult, Handler},
    events::{Envelope, Event, uuid_field},
};
use sqlx::PgConnection;

use crate::store;

/// The events the cart service consumes.
pub const EVENTS: &[&str] = &[OrderConfirmed::TYPE];

#[derive(Debug)]
pub struct EmptyOnConfirm;

impl Handler for EmptyOnConfirm {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, event: &'a Envelope) -> HandleResult<'a> {
        Box::pin(async move {
            if event.event_type != OrderConfirmed::TYPE {
                return Err(HandleError::Rejected(format!(
                    "unexpected event type {}",
                    event.event_type
                )));
            }
            let confirmed: OrderConfirmed = event.event()?;
            let user = uuid_field("user_id", &confirmed.user_id)?;
            store::lock(tx, user).await?;
            store::clear(tx, user).await?;
            tracing::info!(user_id = %user, order_id = %confirmed.order_id, "cart emptied after checkout");
            Ok(())
        })
    }
}
