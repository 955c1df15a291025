//! A cart's rules: valid quantities, how many lines a cart holds, and pricing a cart's lines
//! with the catalog's current products.

use std::collections::HashMap;

use souk_shared::Error;
use uuid::Uuid;

/// The most of one product a cart line holds (`souk_contract::api`, stated in the OpenAPI
/// document too). With the catalog's price cap ($100,000,000.00) and `MAX_LINES`, no total can
/// overflow an `i64`.
pub use souk_contract::api::MAX_QUANTITY;

/// The most different products one cart holds.
pub const MAX_LINES: usize = 100;

/// A quantity of 1 to `MAX_QUANTITY`.
pub fn parse_quantity(quantity: i64) -> Result<i64, Error> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(Error::invalid(
            "quantity",
            format!("must be 1 to {MAX_QUANTITY}"),
        ))
    }
}

/// A product id given by a client.
pub fn parse_product_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw.trim()).map_err(|_| Error::invalid("product_id", "must be a UUID"))
}

/// One stored line of a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// What the cart needs to know of a product, as the product service has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    pub name: String,
    pub price_cents: i64,
    pub stock: i64,
}

pub type Products = HashMap<Uuid, ProductInfo>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: Uuid,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCart {
    pub user_id: Uuid,
    pub items: Vec<PricedLine>,
    pub total_cents: i64,
}

/// The cart at current prices. A line whose product is no longer in the catalog (it was
/// deleted) is left out: it cannot be bought, and it is pruned at the cart's next change.
pub fn price(user_id: Uuid, lines: &[Line], products: &Products) -> Result<PricedCart, Error> {
    let overflow = || Error::Internal(anyhow::anyhow!("cart total of {user_id} overflows"));
    let mut items = Vec::with_capacity(lines.len());
    let mut total_cents: i64 = 0;
    for line in lines {
        let Some(product) = products.get(&line.product_id) else {
            continue;
        };
        let line_total_cents = product
            .price_cents
            .checked_mul(line.quantity)
            .ok_or_else(overflow)?;
        total_cents = total_cents
            .checked_add(line_total_cents)
            .ok_or_else(overflow)?;
        items.push(PricedLine {
            product_id: line.product_id,
            name: product.name.clone(),
            unit_price_cents: product.price_cents,
            quantity: line.quantity,
            line_total_cents,
        });
    }
    Ok(PricedCart {
        user_id,
        items,
        total_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str, price_cents: i64) -> ProductInfo {
        ProductInfo {
            name: name.into(),
            price_cents,
            stock: 10,
        }
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(parse_quantity(0).is_err());
        assert!(parse_quantity(-3).is_err());
        assert_eq!(parse_quantity(1).expect("valid"), 1);
        assert_eq!(parse_quantity(MAX_QUANTITY).expect("valid"), MAX_QUANTITY);
        let Err(Error::InvalidField { field, .. }) = parse_quantity(MAX_QUANTITY + 1) else {
            panic!("too many accepted");
        };
        assert_eq!(field, "quantity");
    }

    #[test]
    fn a_cart_is_priced_line_by_line_and_in_total() {
        let (tea, cup) = (Uuid::now_v7(), Uuid::now_v7());
        let products = Products::from([(tea, product("Tea", 250)), (cup, product("Cup", 1_000))]);
        let lines = [
            Line {
                product_id: tea,
                quantity: 3,
            },
            Line {
                product_id: cup,
                quantity: 1,
            },
        ];
        let user = Uuid::now_v7();
        let cart = price(user, &lines, &products).expect("priced");
        assert_eq!(cart.user_id, user);
        assert_eq!(cart.total_cents, 1_750);
        assert_eq!(cart.items[0].line_total_cents, 750);
        assert_eq!(cart.items[0].name, "Tea");
        assert_eq!(cart.items[1].unit_price_cents, 1_000);
    }

    #[test]
    fn lines_of_deleted_products_are_left_out() {
        let (tea, gone) = (Uuid::now_v7(), Uuid::now_v7());
        let products = Products::from([(tea, product("Tea", 250))]);
        let lines = [
            Line {
                product_id: gone,
                quantity: 2,
            },
            Line {
                product_id: tea,
                quantity: 2,
            },
        ];
        let cart = price(Uuid::now_v7(), &lines, &products).expect("priced");
        assert_eq!(cart.items.len(), 1);
        assert_eq!(cart.items[0].product_id, tea);
        assert_eq!(cart.total_cents, 500);
    }

    #[test]
    fn the_largest_cart_does_not_overflow() {
        let products: Products = (0..MAX_LINES)
            .map(|i| (Uuid::now_v7(), product(&format!("p{i}"), 10_000_000_000)))
            .collect();
        let lines: Vec<Line> = products
            .keys()
            .map(|&product_id| Line {
                product_id,
                quantity: MAX_QUANTITY,
            })
            .collect();
        let cart = price(Uuid::now_v7(), &lines, &products).expect("no overflow");
        assert_eq!(cart.total_cents, 1_000_000_000_000_000_000);
    }
}
