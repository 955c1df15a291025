//! What the cart service does: read a cart priced now, and change it.
//!
//! Every change that needs the catalog asks the product service first, for every product the
//! cart holds and the one being changed, in one batch call. When the product service is down
//! that call fails (`Unavailable`, a 503 at the gateway) before anything is written, so the cart
//! stays as it was. Clearing and deleting a cart need no product data and work regardless.
//!
//! Stock is checked against what the product service says at the time of the change: a cart
//! holds no stock, and the checkout's reservation is what finally takes it.

use souk_shared::{Error, auth::Caller};
use uuid::Uuid;

use crate::{
    catalog::Catalog,
    domain::{self, Line, MAX_LINES, MAX_QUANTITY, PricedCart, Products},
    store::{self, Store},
};

/// A change to one product's line (clearing is `Carts::clear`).
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// Adds to the quantity already there (or starts the line).
    Add { product_id: Uuid, quantity: i64 },
    /// Sets the line's quantity (starting the line when needed).
    Set { product_id: Uuid, quantity: i64 },
    /// Removes the line; `NotFound` when the cart has none for this product.
    Remove { product_id: Uuid },
}

impl Change {
    fn product_id(self) -> Uuid {
        match self {
            Self::Add { product_id, .. }
            | Self::Set { product_id, .. }
            | Self::Remove { product_id } => product_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Carts {
    pub store: Store,
    pub catalog: Catalog,
}

fn ids(lines: &[Line]) -> Vec<Uuid> {
    lines.iter().map(|line| line.product_id).collect()
}

fn product_not_found() -> Error {
    Error::NotFound("product not found".into())
}

impl Carts {
    /// The caller's cart at current prices, from one batch call (none for an empty cart).
    pub async fn get(&self, caller: &Caller) -> Result<PricedCart, Error> {
        let lines = self.store.lines(caller.user_id).await?;
        let products = self.catalog.products(caller, &ids(&lines)).await?;
        domain::price(caller.user_id, &lines, &products)
    }

    /// Applies `change` to the caller's cart and answers the cart as it is then.
    pub async fn change(&self, caller: &Caller, change: Change) -> Result<PricedCart, Error> {
        let user_id = caller.user_id;
        let target = change.product_id();

        // The product service first: if it is down, nothing below runs. It is never called
        // inside the transaction (no remote call under the cart's row lock).
        let mut asked = ids(&self.store.lines(user_id).await?);
        if !asked.contains(&target) {
            asked.push(target);
        }
        let (mut tx, mut lines, products) = loop {
            let products = self.catalog.products(caller, &asked).await?;
            let mut tx = self.store.begin().await?;
            store::lock(&mut tx, user_id).await?;
            let lines = store::locked_lines(&mut tx, user_id).await?;
            // Lines added by another change since the batch call above (rare): let go of the
            // lock, ask for them too, and start again.
            let unasked: Vec<Uuid> = ids(&lines)
                .into_iter()
                .filter(|id| !asked.contains(id))
                .collect();
            if unasked.is_empty() {
                break (tx, lines, products);
            }
            tx.rollback().await?;
            asked.extend(unasked);
        };
        // Lines of deleted products are invisible; this change prunes them.
        let gone: Vec<Uuid> = ids(&lines)
            .into_iter()
            .filter(|id| !products.contains_key(id))
            .collect();
        if !gone.is_empty() {
            store::remove(&mut tx, user_id, &gone).await?;
            lines.retain(|line| !gone.contains(&line.product_id));
            tracing::info!(%user_id, lines = gone.len(), "pruned lines of deleted products");
        }

        let current = lines
            .iter()
            .find(|line| line.product_id == target)
            .map(|line| line.quantity);
        match change {
            Change::Add { quantity, .. } => {
                let wanted = current.unwrap_or(0) + quantity;
                check_line(&products, target, current, lines.len(), wanted)?;
                store::set_quantity(&mut tx, user_id, target, wanted).await?;
            }
            Change::Set { quantity, .. } => {
                check_line(&products, target, current, lines.len(), quantity)?;
                store::set_quantity(&mut tx, user_id, target, quantity).await?;
            }
            Change::Remove { .. } => {
                if current.is_none() {
                    return Err(Error::NotFound("this product is not in the cart".into()));
                }
                store::remove(&mut tx, user_id, &[target]).await?;
            }
        }
        let lines = store::locked_lines(&mut tx, user_id).await?;
        tx.commit().await?;
        domain::price(user_id, &lines, &products)
    }

    /// Empties the caller's cart.
    pub async fn clear(&self, caller: &Caller) -> Result<PricedCart, Error> {
        let mut tx = self.store.begin().await?;
        store::lock(&mut tx, caller.user_id).await?;
        store::clear(&mut tx, caller.user_id).await?;
        tx.commit().await?;
        domain::price(caller.user_id, &[], &Products::new())
    }

    /// Deletes the caller's cart (a later read finds it empty).
    pub async fn delete(&self, caller: &Caller) -> Result<(), Error> {
        self.store.delete(caller.user_id).await
    }
}

/// Whether the line of `product_id` may hold `wanted`: the product exists, the cart has room
/// for a new line, the quantity is within bounds and within the stock.
fn check_line(
    products: &Products,
    product_id: Uuid,
    current: Option<i64>,
    lines: usize,
    wanted: i64,
) -> Result<(), Error> {
    let product = products.get(&product_id).ok_or_else(product_not_found)?;
    if current.is_none() && lines >= MAX_LINES {
        return Err(Error::FailedPrecondition(format!(
            "a cart holds at most {MAX_LINES} different products"
        )));
    }
    // The quantity asked for is within bounds (`domain::parse_quantity`); an addition to what
    // the line holds may not be. The request is valid, the cart's state stands in its way.
    if wanted > MAX_QUANTITY {
        return Err(Error::FailedPrecondition(format!(
            "a cart line holds at most {MAX_QUANTITY}: this one holds {}",
            current.unwrap_or(0)
        )));
    }
    if wanted > product.stock {
        return Err(Error::FailedPrecondition(format!(
            "more than the stock: {} in stock, the cart would hold {wanted}",
            product.stock
        )));
    }
    Ok(())
}
