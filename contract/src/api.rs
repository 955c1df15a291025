//! The REST API's bounds on what a client sends. The services enforce them (`souk-user`,
//! `souk-product`, `souk-cart`; the gateway checks the paging query itself) and the gateway's
//! OpenAPI document states them, both from these constants.

/// A user's password, in characters (not bytes).
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;
/// A user's display name, in characters, after trimming.
pub const USER_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=100;
/// A product's name, in characters, after trimming.
pub const PRODUCT_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=200;
/// A category's name, in characters, after trimming.
pub const CATEGORY_NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=100;
/// The longest description of a product or category, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;

/// The most a product may cost, in cents ($100,000,000.00). With the cart's bounds (at most
/// `MAX_QUANTITY` of a product per line, at most 100 lines) no cart or order total can overflow
/// an `i64`.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;
/// The most stock an admin may set: a billion units (why: `souk-product`'s domain).
pub const MAX_STOCK: i64 = 1_000_000_000;
/// The most of one product a cart line holds.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// The page size of a listing when the caller gives none, and the largest allowed; pages
/// count from 1.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
pub const MAX_PAGE_SIZE: i64 = 100;

/// The longest `Idempotency-Key` of an order, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
