//! The order tables: reads for the API; row-locking reads and transitions for the saga; and the
//! queue of saga steps to carry out (orders in `charging` or `refunding`).
//!
//! One calling convention: every function takes the connection it runs on, so the caller decides
//! what shares a transaction (`&mut tx` inside one, `&mut *pool.acquire().await?` alone).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use souk_shared::Error;
use sqlx::PgConnection;
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

/// Where an order's saga is (`orders.saga_step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting for the product service's `stock.reserved` or `stock.rejected`.
    ReservingStock,
    /// Stock reserved; the payment is to be charged. Carried out by `Saga::carry_out`.
    Charging,
    /// The order is to be refunded (or voided), then cancelled. Carried out by `Saga::carry_out`.
    Refunding,
    /// Ended `CONFIRMED`.
    Completed,
    /// Ended `CANCELLED`.
    Compensated,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservingStock => "reserving_stock",
            Self::Charging => "charging",
            Self::Refunding => "refunding",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
        }
    }

    fn parse(stored: &str) -> Result<Self, Error> {
        [
            Self::ReservingStock,
            Self::Charging,
            Self::Refunding,
            Self::Completed,
            Self::Compensated,
        ]
        .into_iter()
        .find(|step| step.as_str() == stored)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("orders.saga_step {stored:?}")))
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

    fn parse(stored: &str) -> Result<Self, Error> {
        [
            Self::OutOfStock,
            Self::PaymentDeclined,
            Self::Timeout,
            Self::CancelledByUser,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == stored)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("order cancel reason {stored:?}")))
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
    pub failure_reason: Option<FailureReason>,
    pub total_cents: i64,
    pub items: Vec<Item>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a saga step needs of an order (locked, or claimed by `claim_due`).
#[derive(Debug, Clone)]
pub struct Locked {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: Status,
    pub step: Step,
    /// Set while `Refunding`: the `failure_reason` the order will end with.
    pub cancel_reason: Option<FailureReason>,
    pub failure_reason: Option<FailureReason>,
    pub total_cents: i64,
}

struct LockedRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    saga_step: String,
    cancel_reason: Option<String>,
    failure_reason: Option<String>,
    total_cents: i64,
}

impl LockedRow {
    fn parse(self) -> Result<Locked, Error> {
        Ok(Locked {
            id: self.id,
            user_id: self.user_id,
            status: Status::parse(&self.status)?,
            step: Step::parse(&self.saga_step)?,
            cancel_reason: self
                .cancel_reason
                .as_deref()
                .map(FailureReason::parse)
                .transpose()?,
            failure_reason: self
                .failure_reason
                .as_deref()
                .map(FailureReason::parse)
                .transpose()?,
            total_cents: self.total_cents,
        })
    }
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

/// Inserts the order and its items, and returns it as stored (`PENDING`); `None` when the
/// user already has an order with this idempotency key (nothing is inserted then).
pub async fn insert(db: &mut PgConnection, order: &NewOrder<'_>) -> Result<Option<Order>, Error> {
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
    .fetch_optional(&mut *db)
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
    .execute(&mut *db)
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

pub async fn find_by_key(
    db: &mut PgConnection,
    user_id: Uuid,
    key: &str,
) -> Result<Option<Order>, Error> {
    let id = sqlx::query_scalar!(
        "select id from orders where user_id = $1 and idempotency_key = $2",
        user_id,
        key
    )
    .fetch_optional(&mut *db)
    .await?;
    match id {
        Some(id) => find(db, id).await,
        None => Ok(None),
    }
}

pub async fn find(db: &mut PgConnection, id: Uuid) -> Result<Option<Order>, Error> {
    let row = sqlx::query_as!(
        OrderRow,
        "select id, user_id, status, failure_reason, total_cents, created_at, updated_at from orders where id = $1",
        id
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(with_items(db, vec![row]).await?.pop())
}

/// A user's orders, newest first.
pub async fn list(db: &mut PgConnection, user_id: Uuid, limit: i64) -> Result<Vec<Order>, Error> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"select id, user_id, status, failure_reason, total_cents, created_at, updated_at
           from orders where user_id = $1 order by created_at desc, id desc limit $2"#,
        user_id,
        limit
    )
    .fetch_all(&mut *db)
    .await?;
    with_items(db, rows).await
}

async fn with_items(db: &mut PgConnection, rows: Vec<OrderRow>) -> Result<Vec<Order>, Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items = sqlx::query_as!(
        ItemRow,
        r#"select order_id, product_id, name, unit_price_cents, quantity
           from order_items where order_id = any($1) order by created_at, product_id"#,
        &ids
    )
    .fetch_all(db)
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
                failure_reason: row
                    .failure_reason
                    .as_deref()
                    .map(FailureReason::parse)
                    .transpose()?,
                total_cents: row.total_cents,
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// Locks an order for a saga step (waits for a step already under way). Only the
/// database's own work happens under this lock: no call to another service.
pub async fn lock(db: &mut PgConnection, id: Uuid) -> Result<Option<Locked>, Error> {
    sqlx::query_as!(
        LockedRow,
        r#"select id, user_id, status, saga_step, cancel_reason, failure_reason, total_cents
           from orders where id = $1 for update"#,
        id
    )
    .fetch_optional(db)
    .await?
    .map(LockedRow::parse)
    .transpose()
}

/// Commits the intent to charge: stock is reserved, the payment is to be taken. Like
/// `begin_refund`, the step is due after `lease`: whoever commits it carries it out at once.
pub async fn begin_charge(db: &mut PgConnection, id: Uuid, lease: Duration) -> Result<(), Error> {
    sqlx::query!(
        r#"update orders set saga_step = 'charging', step_due_at = now() + make_interval(secs => $2),
               step_attempts = 0, updated_at = now()
           where id = $1"#,
        id,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Commits the intent to refund and then cancel for `reason`. The step is due after
/// `lease`: whoever commits it means to carry it out at once, and the worker takes it on
/// only if they do not.
pub async fn begin_refund(
    db: &mut PgConnection,
    id: Uuid,
    reason: FailureReason,
    lease: Duration,
) -> Result<(), Error> {
    sqlx::query!(
        r#"update orders set saga_step = 'refunding', cancel_reason = $2,
               step_due_at = now() + make_interval(secs => $3), step_attempts = 0, updated_at = now()
           where id = $1"#,
        id,
        reason.as_str(),
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Sends every `PENDING` order past its deadline that has not been charged yet towards
/// refunding (which voids a charge still in flight); returns their ids.
pub async fn time_out_expired(db: &mut PgConnection) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        r#"update orders set saga_step = 'refunding', cancel_reason = 'timeout',
               step_due_at = now(), step_attempts = 0, updated_at = now()
           where status = 'PENDING' and saga_step in ('reserving_stock', 'charging') and deadline < now()
           returning id"#,
    )
    .fetch_all(db)
    .await?)
}

/// Claims up to `limit` orders whose step is due, for `lease`: until then no other worker
/// takes them (after it, one does: the claimant may have died).
pub async fn claim_due(
    db: &mut PgConnection,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Locked>, Error> {
    sqlx::query_as!(
        LockedRow,
        r#"update orders set step_due_at = now() + make_interval(secs => $2)
           where id in (
               select id from orders
               where saga_step in ('charging', 'refunding') and step_due_at <= now()
               order by step_due_at limit $1 for update skip locked)
           returning id, user_id, status, saga_step, cancel_reason, failure_reason, total_cents"#,
        limit,
        lease.as_secs_f64(),
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(LockedRow::parse)
    .collect()
}

/// A step's call failed: try again later (0.1 s, doubling up to 5 s), unless the order
/// moved on meanwhile.
pub async fn postpone(db: &mut PgConnection, id: Uuid, step: Step) -> Result<(), Error> {
    sqlx::query!(
        r#"update orders
           set step_due_at = now() + least(0.1 * power(2, least(step_attempts, 10)), 5) * interval '1 second',
               step_attempts = step_attempts + 1
           where id = $1 and saga_step = $2"#,
        id,
        step.as_str(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Confirms the order and returns its lines (product, quantity), for `order.confirmed`.
pub async fn confirm(db: &mut PgConnection, id: Uuid) -> Result<Vec<(Uuid, i64)>, Error> {
    sqlx::query!(
        "update orders set status = 'CONFIRMED', saga_step = 'completed', updated_at = now() where id = $1",
        id
    )
    .execute(&mut *db)
    .await?;
    let lines = sqlx::query!(
        "select product_id, quantity from order_items where order_id = $1 order by product_id",
        id
    )
    .fetch_all(db)
    .await?;
    Ok(lines
        .into_iter()
        .map(|line| (line.product_id, line.quantity))
        .collect())
}

pub async fn cancel(db: &mut PgConnection, id: Uuid, reason: FailureReason) -> Result<(), Error> {
    sqlx::query!(
        r#"update orders set status = 'CANCELLED', failure_reason = $2, cancel_reason = null,
               saga_step = 'compensated', updated_at = now()
           where id = $1"#,
        id,
        reason.as_str()
    )
    .execute(db)
    .await?;
    Ok(())
}
