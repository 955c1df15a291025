//! The contracts between Souk's services: gRPC services and event messages of package
//! `souk.v1`, compiled from `protos/souk/v1/*.proto`.
//!
//! The Rust code is generated ahead of time and committed in `src/gen/` (so building needs no
//! `protoc` and no build script). `tests/generated.rs` regenerates it with `protox`, a pure Rust
//! protobuf compiler, and fails when the committed code is stale; run
//! `SOUK_UPDATE_GENERATED=1 cargo test -p souk-protos` to rewrite it.

/// Package `souk.v1`.
#[allow(
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod v1 {
    include!("gen/souk.v1.rs");
}

/// The `.proto` files of the contract, relative to the `protos/` directory.
pub const PROTO_FILES: &[&str] = &[
    "souk/v1/user.proto",
    "souk/v1/product.proto",
    "souk/v1/cart.proto",
    "souk/v1/order.proto",
    "souk/v1/payment.proto",
    "souk/v1/events.proto",
];
