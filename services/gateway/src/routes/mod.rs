//! One module per section of docs/api.md, each with its own `router()`.

pub mod cart;
pub mod catalog;
pub mod ops;
pub mod orders;
pub mod users;
