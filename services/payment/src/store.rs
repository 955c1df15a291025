//! The payments table. Every write is one statement keyed by the order id, so concurrent or
//! repeated calls for one order cannot charge twice.

use chrono::{DateTime, Utc};
use souk_shared::Error;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Option<Uuid>,
    pub amount_cents: i64,
    pub status: String,
    pub decline_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records the outcome of a first charge, or returns the payment the order already has.
    pub async fn charge(
        &self,
        order_id: Uuid,
        user_id: Uuid,
        amount_cents: i64,
        decline_reason: Option<&str>,
    ) -> Result<Payment, Error> {
        let status = if decline_reason.is_some() {
            "declined"
        } else {
            "captured"
        };
        let inserted = sqlx::query_as!(
            Payment,
            r#"insert into payments (id, order_id, user_id, amount_cents, status, decline_reason)
               values ($1, $2, $3, $4, $5, $6)
               on conflict (order_id) do nothing
               returning id, order_id, user_id, amount_cents, status, decline_reason, created_at, updated_at"#,
            Uuid::now_v7(),
            order_id,
            user_id,
            amount_cents,
            status,
            decline_reason,
        )
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(payment) => Ok(payment),
            None => self.find(order_id).await?.ok_or_else(|| {
                Error::Internal(anyhow::anyhow!(
                    "payment of order {order_id} vanished during a charge"
                ))
            }),
        }
    }

    /// Refunds a captured payment; voids an order not charged yet; leaves the rest as they are.
    pub async fn refund(&self, order_id: Uuid) -> Result<Payment, Error> {
        Ok(sqlx::query_as!(
            Payment,
            r#"insert into payments (id, order_id, amount_cents, status)
               values ($1, $2, 0, 'voided')
               on conflict (order_id) do update
               set status = case when payments.status = 'captured' then 'refunded' else payments.status end,
                   updated_at = case when payments.status = 'captured' then now() else payments.updated_at end
               returning id, order_id, user_id, amount_cents, status, decline_reason, created_at, updated_at"#,
            Uuid::now_v7(),
            order_id,
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn find(&self, order_id: Uuid) -> Result<Option<Payment>, Error> {
        Ok(sqlx::query_as!(
            Payment,
            r#"select id, order_id, user_id, amount_cents, status, decline_reason, created_at, updated_at
               from payments where order_id = $1"#,
            order_id,
        )
        .fetch_optional(&self.pool)
        .await?)
    }
}
