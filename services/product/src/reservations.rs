//! Stock reservations for the checkout saga, driven by the order service's events.
//!
//! `order.created`: in one transaction (the consumer's, with the inbox insert), take every
//! line's stock with a conditional `update ... where stock >= quantity`, all or nothing, and
//! answer `stock.reserved` or `stock.rejected` through the outbox. `order.cancelled`: give back
//! what the order holds, once. The `reservations` row per order makes both idempotent and
//! order-independent: a cancellation that overtakes its order.created leaves a tombstone.
//! Stock that moves is part of what a product looks like, so both also say `catalog.changed`.

use std::collections::BTreeMap;

use souk_protos::v1::{OrderCancelled, OrderCreated, StockRejected, StockReserved};
use souk_shared::{
    config::ShopName,
    consumer::{HandleError, HandleResult, Handler},
    events::{Envelope, Event, MalformedEvent, uuid_field},
    outbox,
};
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

/// The events the product service consumes.
pub const EVENTS: &[&str] = &[OrderCreated::TYPE, OrderCancelled::TYPE];

#[derive(Debug)]
pub struct Reservations {
    pub shop: ShopName,
}

/// The lines of an order, merged by product and sorted by id (a fixed lock order, so that two
/// reservations never deadlock).
fn lines(event: &OrderCreated) -> Result<BTreeMap<Uuid, i64>, MalformedEvent> {
    if event.lines.is_empty() {
        return Err(MalformedEvent("order.created without lines".into()));
    }
    let mut lines = BTreeMap::new();
    for line in &event.lines {
        let product = uuid_field("product_id", &line.product_id)?;
        if line.quantity < 1 {
            return Err(MalformedEvent(format!(
                "quantity {} of {product}",
                line.quantity
            )));
        }
        let total: &mut i64 = lines.entry(product).or_default();
        *total = total
            .checked_add(line.quantity)
            .ok_or_else(|| MalformedEvent("quantity overflow".into()))?;
    }
    Ok(lines)
}

/// The advisory-lock class of "one order's reservation" (the two-key lock space, apart from the
/// relayer's one-key lock).
const RESERVATION_LOCK_CLASS: i32 = 0x5e5e;

/// Serialises the handlers of one order's events until the transaction ends. The row lock of
/// `select ... for update` cannot: before the first event of an order commits there is no row,
/// and `order.created` and `order.cancelled` racing would both insert it (the loser failing
/// on the primary key and burning a delivery attempt).
async fn lock_order(tx: &mut PgConnection, order: Uuid) -> Result<(), HandleError> {
    sqlx::query!(
        "select pg_advisory_xact_lock($1, hashtext($2::text))",
        RESERVATION_LOCK_CLASS,
        order.to_string()
    )
    .execute(tx)
    .await?;
    Ok(())
}

impl Reservations {
    async fn reserve(&self, tx: &mut PgConnection, event: OrderCreated) -> Result<(), HandleError> {
        let order = uuid_field("order_id", &event.order_id)?;
        let lines = lines(&event)?;
        lock_order(tx, order).await?;
        let known = sqlx::query_scalar!(
            "select status from reservations where order_id = $1 for update",
            order
        )
        .fetch_optional(&mut *tx)
        .await?;
        if known.is_some() {
            // Decided before (or cancelled first): nothing more to do.
            return Ok(());
        }
        let mut short = Vec::new();
        {
            let mut attempt = tx.begin().await?;
            for (product, quantity) in &lines {
                let taken = sqlx::query!(
                    "update products set stock = stock - $2, version = version + 1, updated_at = now() where id = $1 and stock >= $2",
                    product,
                    quantity
                )
                .execute(&mut *attempt)
                .await?
                .rows_affected();
                if taken == 0 {
                    short.push(*product);
                }
            }
            if short.is_empty() {
                attempt.commit().await?;
            } else {
                attempt.rollback().await?;
            }
        }
        let status = if short.is_empty() {
            "reserved"
        } else {
            "rejected"
        };
        sqlx::query!(
            "insert into reservations (order_id, status) values ($1, $2)",
            order,
            status
        )
        .execute(&mut *tx)
        .await?;
        if short.is_empty() {
            let products: Vec<Uuid> = lines.keys().copied().collect();
            let quantities: Vec<i64> = lines.values().copied().collect();
            sqlx::query!(
                r#"insert into reservation_lines (order_id, product_id, quantity)
                   select $1, * from unnest($2::uuid[], $3::bigint[])"#,
                order,
                &products,
                &quantities
            )
            .execute(&mut *tx)
            .await?;
            crate::store::announce(tx, &self.shop, &products, &[]).await?;
            outbox::enqueue(
                tx,
                &self.shop,
                &StockReserved {
                    order_id: event.order_id,
                },
            )
            .await?;
            tracing::info!(order_id = %order, "stock reserved");
        } else {
            let rejected = StockRejected {
                order_id: event.order_id,
                product_ids: short.iter().map(Uuid::to_string).collect(),
            };
            outbox::enqueue(tx, &self.shop, &rejected).await?;
            tracing::info!(order_id = %order, short = short.len(), "stock rejected");
        }
        Ok(())
    }

    async fn release(
        &self,
        tx: &mut PgConnection,
        event: OrderCancelled,
    ) -> Result<(), HandleError> {
        let order = uuid_field("order_id", &event.order_id)?;
        lock_order(tx, order).await?;
        let status = sqlx::query_scalar!(
            "select status from reservations where order_id = $1 for update",
            order
        )
        .fetch_optional(&mut *tx)
        .await?;
        match status.as_deref() {
            None => {
                sqlx::query!(
                    "insert into reservations (order_id, status) values ($1, 'cancelled')",
                    order
                )
                .execute(&mut *tx)
                .await?;
            }
            Some("reserved") => {
                // Products deleted meanwhile simply get nothing back.
                let products = sqlx::query_scalar!(
                    r#"update products p set stock = p.stock + l.quantity, version = p.version + 1, updated_at = now()
                       from reservation_lines l where l.order_id = $1 and p.id = l.product_id
                       returning p.id"#,
                    order
                )
                .fetch_all(&mut *tx)
                .await?;
                crate::store::announce(tx, &self.shop, &products, &[]).await?;
                sqlx::query!(
                    "update reservations set status = 'released', updated_at = now() where order_id = $1",
                    order
                )
                .execute(&mut *tx)
                .await?;
                tracing::info!(order_id = %order, "stock released");
            }
            Some(_) => {}
        }
        Ok(())
    }
}

impl Handler for Reservations {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, event: &'a Envelope) -> HandleResult<'a> {
        Box::pin(async move {
            match event.event_type.as_str() {
                OrderCreated::TYPE => self.reserve(tx, event.event()?).await,
                OrderCancelled::TYPE => self.release(tx, event.event()?).await,
                other => Err(HandleError::Rejected(format!(
                    "unexpected event type {other}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use souk_protos::v1::OrderLine;

    use super::*;

    fn created(lines: Vec<(String, i64)>) -> OrderCreated {
        OrderCreated {
            order_id: Uuid::new_v4().to_string(),
            lines: lines
                .into_iter()
                .map(|(product_id, quantity)| OrderLine {
                    product_id,
                    quantity,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn lines_are_merged_and_checked() {
        let a = Uuid::new_v4();
        let merged = lines(&created(vec![(a.to_string(), 2), (a.to_string(), 3)])).expect("valid");
        assert_eq!(merged[&a], 5);
        assert!(lines(&created(vec![])).is_err());
        assert!(lines(&created(vec![("nope".into(), 1)])).is_err());
        assert!(lines(&created(vec![(a.to_string(), 0)])).is_err());
        assert!(
            lines(&created(vec![
                (a.to_string(), i64::MAX),
                (a.to_string(), 1)
            ]))
            .is_err()
        );
    }

    /// Issue 12: `order.created` and `order.cancelled` of one order handled at once. Before the
    /// order's lock, the cancel found no row to lock, inserted its tombstone and failed on the
    /// primary key when the reservation committed.
    #[tokio::test]
    async fn a_cancel_racing_its_order_created_waits_and_releases() {
        use souk_shared::testing::{TestDatabase, eventually};
        use sqlx::Connection as _;

        let db = TestDatabase::create().await;
        let pool = souk_shared::db::connect(
            &souk_shared::db::DatabaseLocation::Own(db.url()),
            &crate::MIGRATOR,
        )
        .await
        .expect("database");
        let lamp = Uuid::now_v7();
        sqlx::query(
            "insert into products (id, name, price_cents, stock) values ($1, 'Lamp', 100, 5)",
        )
        .bind(lamp)
        .execute(&pool)
        .await
        .expect("product");
        let reservations = Reservations {
            shop: "race".parse().expect("shop"),
        };
        let order = Uuid::now_v7();
        let created = OrderCreated {
            order_id: order.to_string(),
            lines: vec![OrderLine {
                product_id: lamp.to_string(),
                quantity: 2,
            }],
            ..Default::default()
        };
        let cancelled = OrderCancelled {
            order_id: order.to_string(),
            ..Default::default()
        };

        let mut first = pool.acquire().await.expect("connection");
        let mut reserving = first.begin().await.expect("begin");
        reservations
            .reserve(&mut reserving, created)
            .await
            .expect("reserved");
        let cancel = tokio::spawn({
            let pool = pool.clone();
            async move {
                let reservations = Reservations {
                    shop: "race".parse().expect("shop"),
                };
                let mut conn = pool.acquire().await.expect("connection");
                let mut tx = conn.begin().await.expect("begin");
                reservations.release(&mut tx, cancelled).await?;
                tx.commit().await?;
                Ok::<_, HandleError>(())
            }
        });
        // The cancel is waiting for the reservation's transaction.
        eventually("the cancel to wait", std::time::Duration::from_secs(10), || async {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("pg_stat_activity");
            (waiting > 0).then_some(())
        })
        .await;
        reserving.commit().await.expect("commit");
        cancel
            .await
            .expect("cancel task")
            .expect("the cancel succeeds at its first attempt");

        let status: String =
            sqlx::query_scalar("select status from reservations where order_id = $1")
                .bind(order)
                .fetch_one(&pool)
                .await
                .expect("reservation");
        assert_eq!(status, "released");
        let stock: i64 = sqlx::query_scalar("select stock from products where id = $1")
            .bind(lamp)
            .fetch_one(&pool)
            .await
            .expect("stock");
        assert_eq!(stock, 5);
        // Taking the stock and giving it back are both writes the product's version counts.
        let version: i64 = sqlx::query_scalar("select version from products where id = $1")
            .bind(lamp)
            .fetch_one(&pool)
            .await
            .expect("version");
        assert_eq!(version, 3);
    }
}
