//! The cart service's tables, through compile-time checked queries.
//!
//! A change to a cart runs in one transaction that first locks the cart's row (`lock`), so two
//! changes of the same cart (two browser tabs) take turns instead of losing one another's
//! quantities.

use souk_shared::Error;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::Line;

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, Error> {
        Ok(self.pool.begin().await?)
    }

    /// The cart's lines, oldest first.
    pub async fn lines(&self, user_id: Uuid) -> Result<Vec<Line>, Error> {
        lines(&self.pool, user_id).await
    }

    /// Deletes the cart and its lines; deleting no cart is fine.
    pub async fn delete(&self, user_id: Uuid) -> Result<(), Error> {
        sqlx::query!("delete from carts where user_id = $1", user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn lines<'e>(executor: impl sqlx::PgExecutor<'e>, user_id: Uuid) -> Result<Vec<Line>, Error> {
    Ok(sqlx::query_as!(
        Line,
        r#"select product_id, quantity from cart_items
           where user_id = $1
           order by created_at, product_id"#,
        user_id
    )
    .fetch_all(executor)
    .await?)
}

/// Makes the cart exist and holds its row lock until the transaction ends.
pub async fn lock(conn: &mut PgConnection, user_id: Uuid) -> Result<(), Error> {
    sqlx::query!(
        r#"insert into carts (user_id) values ($1)
           on conflict (user_id) do update set updated_at = now()"#,
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The cart's lines, inside a change.
pub async fn locked_lines(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<Line>, Error> {
    lines(conn, user_id).await
}

/// Sets a line's quantity, adding the line when it is not there.
pub async fn set_quantity(
    conn: &mut PgConnection,
    user_id: Uuid,
    product_id: Uuid,
    quantity: i64,
) -> Result<(), Error> {
    sqlx::query!(
        r#"insert into cart_items (user_id, product_id, quantity) values ($1, $2, $3)
           on conflict (user_id, product_id) do update
           set quantity = excluded.quantity, updated_at = now()"#,
        user_id,
        product_id,
        quantity,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes lines; how many there were.
pub async fn remove(
    conn: &mut PgConnection,
    user_id: Uuid,
    product_ids: &[Uuid],
) -> Result<u64, Error> {
    let done = sqlx::query!(
        "delete from cart_items where user_id = $1 and product_id = any($2)",
        user_id,
        product_ids,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Removes every line.
/// Takes `quantities` of `product_ids` out of the cart: a line holding more keeps the rest, a line
/// holding as much or less goes. Products not in the cart are ignored.
pub async fn take_out(
    conn: &mut PgConnection,
    user_id: Uuid,
    product_ids: &[Uuid],
    quantities: &[i64],
) -> Result<(), Error> {
    // Both parts read the same snapshot, so each line is either lowered or deleted, never both.
    sqlx::query!(
        r#"with ordered as (
               select * from unnest($2::uuid[], $3::bigint[]) as o (product_id, quantity)
           ), gone as (
               delete from cart_items c using ordered o
               where c.user_id = $1 and c.product_id = o.product_id and c.quantity <= o.quantity
           )
           update cart_items c set quantity = c.quantity - o.quantity, updated_at = now()
           from ordered o
           where c.user_id = $1 and c.product_id = o.product_id and c.quantity > o.quantity"#,
        user_id,
        product_ids,
        quantities,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn clear(conn: &mut PgConnection, user_id: Uuid) -> Result<(), Error> {
    sqlx::query!("delete from cart_items where user_id = $1", user_id)
        .execute(conn)
        .await?;
    Ok(())
}
