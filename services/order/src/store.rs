//! The order tables. Reads for the API; row-locking reads and transitions for the saga.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use souk_shared::Error;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Confirmed,
    Cancelled,
}

impl Status {
    fn parse(stored: &str) -> Result<Self, Error> {
        match stored {
            "PENDING" => Ok(Self::Pending),
            "CONFIRMED" => Ok(Self::Confirmed),
            "CANCELLED" => Ok(Self::Cancelled),
            other => Err(Error::Internal(anyhow::anyhow!("orders.status {other:?}"))),
        }
    }
}

/// Why a saga ended in `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    OutOfStock,
    PaymentDeclined,
    Timeout,
    CancelledByUser,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::Timeout => "timeout",
            Self::CancelledByUser => "cancelled_by_user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub product_id: Uuid,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: Status,
    pub failure_reason: Option<String>,
    pub total_cents: i64,
    pub items: Vec<Item>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a saga step needs of a locked order.
#[derive(Debug, Clone)]
pub struct Locked {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: Status,
    pub total_cents: i64,
}

struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    failure_reason: Option<String>,
    total_cents: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct ItemRow {
    order_id: Uuid,
    product_id: Uuid,
    name: String,
    unit_price_cents: i64,
    quantity: i64,
}

#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub idempotency_key: Option<&'a str>,
    pub total_cents: i64,
    pub deadline: DateTime<Utc>,
    pub items: &'a [Item],
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts the order and its items, and returns it as stored (`PENDING`); `None` when the
    /// user already has an order with this idempotency key (nothing is inserted then).
    pub async fn insert(
        tx: &mut PgConnection,
        order: &NewOrder<'_>,
    ) -> Result<Option<Order>, Error> {
        let inserted = sqlx::query!(
            r#"insert into orders (id, user_id, status, total_cents, idempotency_key, saga_step, deadline)
               values ($1, $2, 'PENDING', $3, $4, 'reserving_stock', $5)
               on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
               returning created_at, updated_at"#,
            order.id,
            order.user_id,
            order.total_cents,
            order.idempotency_key,
            order.deadline,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(stamps) = inserted else {
            return Ok(None);
        };
        let product_ids: Vec<Uuid> = order.items.iter().map(|i| i.product_id).collect();
        let names: Vec<String> = order.items.iter().map(|i| i.name.clone()).collect();
        let prices: Vec<i64> = order.items.iter().map(|i| i.unit_price_cents).collect();
        let quantities: Vec<i64> = order.items.iter().map(|i| i.quantity).collect();
        sqlx::query!(
            r#"insert into order_items (order_id, product_id, name, unit_price_cents, quantity)
               select $1, * from unnest($2::uuid[], $3::text[], $4::bigint[], $5::bigint[])"#,
            order.id,
            &product_ids,
            &names,
            &prices,
            &quantities,
        )
        .execute(&mut *tx)
        .await?;
        Ok(Some(Order {
            id: order.id,
            user_id: order.user_id,
            status: Status::Pending,
            failure_reason: None,
            total_cents: order.total_cents,
            items: order.items.to_vec(),
            created_at: stamps.created_at,
            updated_at: stamps.updated_at,
        }))
    }

    pub async fn find_by_key(&self, user_id: Uuid, key: &str) -> Result<Option<Order>, Error> {
        let id = sqlx::query_scalar!(
            "select id from orders where user_id = $1 and idempotency_key = $2",
            user_id,
            key
        )
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => self.find(id).await,
            None => Ok(None),
        }
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<Order>, Error> {
        let row = sqlx::query_as!(
            OrderRow,
            "select id, user_id, status, failure_reason, total_cents, created_at, updated_at from orders where id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(self.with_items(vec![row]).await?.pop())
    }

    /// A user's orders, newest first.
    pub async fn list(&self, user_id: Uuid, limit: i64) -> Result<Vec<Order>, Error> {
        let rows = sqlx::query_as!(
            OrderRow,
            r#"select id, user_id, status, failure_reason, total_cents, created_at, updated_at
               from orders where user_id = $1 order by created_at desc, id desc limit $2"#,
            user_id,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        self.with_items(rows).await
    }

    async fn with_items(&self, rows: Vec<OrderRow>) -> Result<Vec<Order>, Error> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let items = sqlx::query_as!(
            ItemRow,
            r#"select order_id, product_id, name, unit_price_cents, quantity
               from order_items where order_id = any($1) order by created_at, product_id"#,
            &ids
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_order: HashMap<Uuid, Vec<Item>> = HashMap::new();
        for item in items {
            by_order.entry(item.order_id).or_default().push(Item {
                product_id: item.product_id,
                name: item.name,
                unit_price_cents: item.unit_price_cents,
                quantity: item.quantity,
            });
        }
        rows.into_iter()
            .map(|row| {
                Ok(Order {
                    items: by_order.remove(&row.id).unwrap_or_default(),
                    status: Status::parse(&row.status)?,
                    id: row.id,
                    user_id: row.user_id,
                    failure_reason: row.failure_reason,
                    total_cents: row.total_cents,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                })
            })
            .collect()
    }

    /// Locks an order for a saga step (waits for a step already under way).
    pub async fn lock(tx: &mut PgConnection, id: Uuid) -> Result<Option<Locked>, Error> {
        let row = sqlx::query!(
            "select id, user_id, status, total_cents from orders where id = $1 for update",
            id
        )
        .fetch_optional(tx)
        .await?;
        row.map(|row| {
            Ok(Locked {
                id: row.id,
                user_id: row.user_id,
                status: Status::parse(&row.status)?,
                total_cents: row.total_cents,
            })
        })
        .transpose()
    }

    /// Confirms the order and returns its lines (product, quantity), for `order.confirmed`.
    pub async fn confirm(tx: &mut PgConnection, id: Uuid) -> Result<Vec<(Uuid, i64)>, Error> {
        sqlx::query!(
            "update orders set status = 'CONFIRMED', saga_step = 'completed', updated_at = now() where id = $1",
            id
        )
        .execute(&mut *tx)
        .await?;
        let lines = sqlx::query!(
            "select product_id, quantity from order_items where order_id = $1 order by product_id",
            id
        )
        .fetch_all(tx)
        .await?;
        Ok(lines
            .into_iter()
            .map(|line| (line.product_id, line.quantity))
            .collect())
    }

    pub async fn cancel(
        tx: &mut PgConnection,
        id: Uuid,
        reason: FailureReason,
    ) -> Result<(), Error> {
        sqlx::query!(
            r#"update orders set status = 'CANCELLED', failure_reason = $2, saga_step = 'compensated', updated_at = now()
               where id = $1"#,
            id,
            reason.as_str()
        )
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Pending orders past their deadline, locked; those another step holds are skipped.
    pub async fn lock_expired(tx: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, Error> {
        Ok(sqlx::query_scalar!(
            r#"select id from orders where status = 'PENDING' and deadline < now()
               order by deadline limit $1 for update skip locked"#,
            limit
        )
        .fetch_all(tx)
        .await?)
    }
}
