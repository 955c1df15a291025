//! Step 1 of the saga: placing an order.
//!
//! The cart is read first, priced by the cart service as it is now, with no transaction open. Then the
//! order, its lines and `order.created` commit together (`PENDING`/`reserving_stock`), and the
//! product service takes it from there. A request carrying the idempotency key of an order
//! already placed is answered with that order, whenever it arrives: before, during or after the
//! first request's own placing.

use souk_protos::v1::{GetCartRequest, OrderCreated, OrderLine};
use souk_shared::{Error, auth::Caller, outbox};
use uuid::Uuid;

use super::Saga;
use crate::store::{self, Item, NewOrder, Order};

/// A client's idempotency key: 1 to 255 characters, none of them control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: Option<String>) -> Result<Option<Self>, Error> {
        let Some(key) = raw else { return Ok(None) };
        let chars = key.chars().count();
        if !(1..=255).contains(&chars) || key.chars().any(char::is_control) {
            return Err(Error::invalid(
                "idempotency_key",
                "must be 1 to 255 characters, none of them control characters",
            ));
        }
        Ok(Some(Self(key)))
    }
}

impl Saga {
    /// Places an order for the caller's cart as priced now, or answers with the order already
    /// placed under `key`.
    pub async fn place(
        &self,
        caller: &Caller,
        key: Option<&IdempotencyKey>,
    ) -> Result<Order, Error> {
        if let Some(order) = self.placed(caller, key).await? {
            return Ok(order);
        }
        let items = match self.price_cart(caller).await {
            Ok(items) => items,
            // The first request with this key may have been placed (and have emptied the cart)
            // since we looked: it is the answer then, not the empty cart.
            Err(err) => return self.placed(caller, key).await?.ok_or(err),
        };
        let new = NewOrder {
            id: Uuid::now_v7(),
            user_id: caller.user_id,
            idempotency_key: key.map(|key| key.0.as_str()),
            total_cents: total_cents(&items)?,
            deadline: chrono::Utc::now() + self.timeout,
            items: &items,
        };
        let event = OrderCreated {
            order_id: new.id.to_string(),
            user_id: new.user_id.to_string(),
            lines: items
                .iter()
                .map(|item| OrderLine {
                    product_id: item.product_id.to_string(),
                    quantity: item.quantity,
                })
                .collect(),
            total_cents: new.total_cents,
        };
        let mut tx = self.pool.begin().await?;
        let Some(order) = store::insert(&mut tx, &new).await? else {
            // The same key won a race with this request: answer with its order.
            drop(tx);
            return self.placed(caller, key).await?.ok_or_else(|| {
                Error::Internal(anyhow::anyhow!(
                    "the order under an idempotency key vanished"
                ))
            });
        };
        outbox::enqueue(&mut tx, &self.shop, &event).await?;
        tx.commit().await?;
        tracing::info!(order_id = %order.id, total_cents = order.total_cents, "order placed");
        // The order as placed: the saga may already be further along by the time we answer.
        Ok(order)
    }

    /// The caller's order placed under `key`, if any.
    async fn placed(
        &self,
        caller: &Caller,
        key: Option<&IdempotencyKey>,
    ) -> Result<Option<Order>, Error> {
        let Some(key) = key else { return Ok(None) };
        store::find_by_key(&mut *self.pool.acquire().await?, caller.user_id, &key.0).await
    }

    /// The caller's cart, as the cart service prices it now (it asks the product service for
    /// the current name and price of every line, and leaves out products no longer sold).
    async fn price_cart(&self, caller: &Caller) -> Result<Vec<Item>, Error> {
        let cart = self
            .cart
            .clone()
            .get_cart(caller.request(GetCartRequest {}))
            .await
            .map_err(|status| Error::from_upstream("cart", status))?
            .into_inner();
        if cart.items.is_empty() {
            // The cart's state, not the request, is what is wrong: a 409.
            return Err(Error::FailedPrecondition("the cart is empty".into()));
        }
        cart.items
            .into_iter()
            .map(|line| {
                let product_id = Uuid::parse_str(&line.product_id).map_err(|_| {
                    Error::Internal(anyhow::anyhow!(
                        "cart service gave product id {:?}",
                        line.product_id
                    ))
                })?;
                Ok(Item {
                    product_id,
                    name: line.name,
                    unit_price_cents: line.unit_price_cents,
                    quantity: line.quantity,
                })
            })
            .collect()
    }
}

/// What the items cost together; an error if that does not fit in 64 bits.
fn total_cents(items: &[Item]) -> Result<i64, Error> {
    items
        .iter()
        .try_fold(0i64, |total, item| {
            item.unit_price_cents
                .checked_mul(item.quantity)
                .and_then(|line| total.checked_add(line))
        })
        .ok_or_else(|| Error::InvalidArgument("the order total is too large".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_bounded() {
        assert_eq!(IdempotencyKey::parse(None).expect("none"), None);
        assert!(IdempotencyKey::parse(Some("k".repeat(255))).is_ok());
        assert!(IdempotencyKey::parse(Some("k".repeat(256))).is_err());
        assert!(IdempotencyKey::parse(Some(String::new())).is_err());
        assert!(IdempotencyKey::parse(Some("a\nb".into())).is_err());
    }

    fn item(unit_price_cents: i64, quantity: i64) -> Item {
        Item {
            product_id: Uuid::nil(),
            name: "thing".into(),
            unit_price_cents,
            quantity,
        }
    }

    #[test]
    fn a_total_that_overflows_is_refused() {
        assert_eq!(total_cents(&[item(250, 3), item(1, 1)]).expect("fits"), 751);
        assert!(total_cents(&[item(i64::MAX, 2)]).is_err());
        assert!(total_cents(&[item(i64::MAX, 1), item(1, 1)]).is_err());
    }
}
