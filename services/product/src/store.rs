//! The product service's tables, through compile-time checked queries.
//!
//! Every write is one statement, so no change is a read-modify-write: stock is set by the
//! admin's create or update, and taken by reservations with `stock = stock - q where stock >= q`.
//! The database enforces what must hold whatever the code does: `stock >= 0`, unique category
//! names, no category deleted under its products.
//!
//! Every write also announces itself (`catalog.changed`, through the outbox, in the write's own
//! transaction), so that those who keep copies of the catalog (the gateway's cache) drop them.

use chrono::{DateTime, Utc};
use souk_protos::v1::CatalogChanged;
use souk_shared::{Error, config::ShopName, error::unique_violation, outbox};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{CategoryDraft, PageRequest, ProductDraft};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub category_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// One more on every write to the product, stock included.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub id: Uuid,
    pub name: String,
    pub description: String,
}

/// One page of products and how many there are in all.
#[derive(Debug, Clone)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub total: i64,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    shop: ShopName,
}

/// Tells, through the outbox in the transaction of `conn`, that these products and categories
/// changed. Nothing is said of nothing.
pub async fn announce(
    conn: &mut PgConnection,
    shop: &ShopName,
    products: &[Uuid],
    categories: &[Uuid],
) -> Result<(), sqlx::Error> {
    if products.is_empty() && categories.is_empty() {
        return Ok(());
    }
    let event = CatalogChanged {
        product_ids: products.iter().map(Uuid::to_string).collect(),
        category_ids: categories.iter().map(Uuid::to_string).collect(),
    };
    outbox::enqueue(conn, shop, &event).await?;
    Ok(())
}

/// The name of the constraint a statement violated, if it was a foreign key violation.
fn foreign_key_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => db.constraint(),
        _ => None,
    }
}

/// Errors of a product write that are the client's: a category that does not exist.
fn product_write_error(err: sqlx::Error) -> Error {
    match foreign_key_violation(&err) {
        Some("products_category_fkey") => Error::invalid("category_id", "no such category"),
        _ => err.into(),
    }
}

fn category_write_error(err: sqlx::Error) -> Error {
    match unique_violation(&err) {
        Some("categories_name_key") => {
            Error::AlreadyExists("a category with this name already exists".into())
        }
        _ => err.into(),
    }
}

impl Store {
    pub fn new(pool: PgPool, shop: ShopName) -> Self {
        Self { pool, shop }
    }

    pub async fn insert_product(&self, draft: &ProductDraft) -> Result<Product, Error> {
        let mut tx = self.pool.begin().await?;
        let product = sqlx::query_as!(
            Product,
            r#"insert into products (id, name, description, price_cents, stock, category_id)
               values ($1, $2, $3, $4, $5, $6)
               returning id, name, description, price_cents, currency, stock, category_id,
                         created_at, updated_at, version"#,
            Uuid::now_v7(),
            draft.name,
            draft.description,
            draft.price_cents,
            draft.stock,
            draft.category_id,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(product_write_error)?;
        announce(&mut tx, &self.shop, &[product.id], &[]).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Replaces every field an admin sets; `None` when there is no such product. With
    /// `if_version`, only while the product is still at that version: a stale one is
    /// `FailedPrecondition` and changes nothing.
    pub async fn update_product(
        &self,
        id: Uuid,
        draft: &ProductDraft,
        if_version: Option<i64>,
    ) -> Result<Option<Product>, Error> {
        let mut tx = self.pool.begin().await?;
        let product = sqlx::query_as!(
            Product,
            r#"update products
               set name = $2, description = $3, price_cents = $4, stock = $5, category_id = $6,
                   version = version + 1, updated_at = now()
               where id = $1 and ($7::bigint is null or version = $7)
               returning id, name, description, price_cents, currency, stock, category_id,
                         created_at, updated_at, version"#,
            id,
            draft.name,
            draft.description,
            draft.price_cents,
            draft.stock,
            draft.category_id,
            if_version,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(product_write_error)?;
        let Some(product) = product else {
            let current = sqlx::query_scalar!("select version from products where id = $1", id)
                .fetch_optional(&mut *tx)
                .await?;
            return match (current, if_version) {
                (Some(current), Some(expected)) => Err(Error::FailedPrecondition(format!(
                    "the product changed since it was read: it is at version {current}, not \
                     {expected}; read it again and apply the change to what it is now"
                ))),
                _ => Ok(None),
            };
        };
        announce(&mut tx, &self.shop, &[id], &[]).await?;
        tx.commit().await?;
        Ok(Some(product))
    }

    /// Whether there was such a product.
    pub async fn delete_product(&self, id: Uuid) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query!("delete from products where id = $1", id)
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            announce(&mut tx, &self.shop, &[id], &[]).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    pub async fn find_product(&self, id: Uuid) -> Result<Option<Product>, Error> {
        Ok(sqlx::query_as!(
            Product,
            r#"select id, name, description, price_cents, currency, stock, category_id,
                      created_at, updated_at, version
               from products where id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The products among `ids` that exist, in no particular order.
    pub async fn find_products(&self, ids: &[Uuid]) -> Result<Vec<Product>, Error> {
        Ok(sqlx::query_as!(
            Product,
            r#"select id, name, description, price_cents, currency, stock, category_id,
                      created_at, updated_at, version
               from products where id = any($1)"#,
            ids
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One page of all products, newest first (ties broken by id), and the exact total. Both
    /// come from one snapshot, so the total counts exactly the rows the pages are cut from.
    pub async fn list_products(&self, page: PageRequest) -> Result<ProductPage, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let total = sqlx::query_scalar!(r#"select count(*) as "total!" from products"#)
            .fetch_one(&mut *tx)
            .await?;
        let items = sqlx::query_as!(
            Product,
            r#"select id, name, description, price_cents, currency, stock, category_id,
                      created_at, updated_at, version
               from products
               order by created_at desc, id desc
               limit $1 offset $2"#,
            page.page_size,
            page.offset(),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ProductPage { items, total })
    }

    /// Like `list_products`, for one category; `None` when there is no such category.
    pub async fn list_category_products(
        &self,
        category_id: Uuid,
        page: PageRequest,
    ) -> Result<Option<ProductPage>, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let exists = sqlx::query_scalar!(
            r#"select exists (select 1 from categories where id = $1) as "exists!""#,
            category_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            return Ok(None);
        }
        let total = sqlx::query_scalar!(
            r#"select count(*) as "total!" from products where category_id = $1"#,
            category_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let items = sqlx::query_as!(
            Product,
            r#"select id, name, description, price_cents, currency, stock, category_id,
                      created_at, updated_at, version
               from products
               where category_id = $1
               order by created_at desc, id desc
               limit $2 offset $3"#,
            category_id,
            page.page_size,
            page.offset(),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(ProductPage { items, total }))
    }

    pub async fn insert_category(&self, draft: &CategoryDraft) -> Result<Category, Error> {
        let mut tx = self.pool.begin().await?;
        let category = sqlx::query_as!(
            Category,
            r#"insert into categories (id, name, description) values ($1, $2, $3)
               returning id, name, description"#,
            Uuid::now_v7(),
            draft.name,
            draft.description,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(category_write_error)?;
        announce(&mut tx, &self.shop, &[], &[category.id]).await?;
        tx.commit().await?;
        Ok(category)
    }

    /// `None` when there is no such category.
    pub async fn update_category(
        &self,
        id: Uuid,
        draft: &CategoryDraft,
    ) -> Result<Option<Category>, Error> {
        let mut tx = self.pool.begin().await?;
        let category = sqlx::query_as!(
            Category,
            r#"update categories set name = $2, description = $3, updated_at = now()
               where id = $1
               returning id, name, description"#,
            id,
            draft.name,
            draft.description,
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(category_write_error)?;
        if category.is_some() {
            announce(&mut tx, &self.shop, &[], &[id]).await?;
        }
        tx.commit().await?;
        Ok(category)
    }

    /// Whether there was such a category. The foreign key refuses (whatever runs at the same
    /// time) to delete a category that still has products.
    pub async fn delete_category(&self, id: Uuid) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query!("delete from categories where id = $1", id)
            .execute(&mut *tx)
            .await
            .map_err(|err| match foreign_key_violation(&err) {
                Some("products_category_fkey") => Error::FailedPrecondition(
                    "the category still has products: move or delete them first".into(),
                ),
                _ => err.into(),
            })?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            announce(&mut tx, &self.shop, &[], &[id]).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    pub async fn find_category(&self, id: Uuid) -> Result<Option<Category>, Error> {
        Ok(sqlx::query_as!(
            Category,
            "select id, name, description from categories where id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every category, by name.
    pub async fn list_categories(&self) -> Result<Vec<Category>, Error> {
        Ok(sqlx::query_as!(
            Category,
            "select id, name, description from categories order by lower(name), id"
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
