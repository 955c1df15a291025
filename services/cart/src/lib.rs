//! The cart service: one cart per user, priced at the catalog's current prices.
//!
//! `service` builds it from its `Settings`, with a lazily connected client of the product
//! service; its database is migrated when it is made ready. Every call acts on the caller's own
//! cart, from its token.
//!
//! - A cart stores product ids and quantities only. Reading it asks the product service for
//!   all of its products in one batch call and answers names, unit prices, line totals and the
//!   total in cents, as they are now.
//! - Adding and setting check with the product service that the product exists (`NotFound`)
//!   and that the line stays within its stock (`FailedPrecondition`, a 409 at the gateway).
//! - A line whose product was deleted from the catalog is left out of the priced cart (it can
//!   no longer be bought, so it neither shows nor counts in the total) and is pruned at the
//!   cart's next change.
//! - When the product service is down, reads and changes fail with `Unavailable` (503) and
//!   leave the cart as it was; clearing and deleting need no product data and still work.
//! - With an event bus (`Settings::events`), a confirmed order empties its user's cart (`checkout`).
//! - Bounds: 1 to 1,000,000 of a product per line (more is a 400), at most 100 different
//!   products per cart (more is a 409).

mod carts;
mod catalog;
mod checkout;
mod domain;
mod grpc;
mod store;

use std::sync::Arc;

use souk_shared::{
    consumer::Participation,
    db::{Database, DatabaseLocation},
    grpc::GrpcService,
    jwt::Verifier,
};

pub use domain::{MAX_LINES, MAX_QUANTITY};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// What the cart service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    /// Verifies the callers' tokens.
    pub verifier: Verifier,
    /// Where the product service listens, as `http://host:port` (`SOUK_PRODUCT_URL`).
    pub product_url: String,
    /// With a bus, a confirmed order takes its lines out of its user's cart.
    pub events: Option<Participation>,
}

/// The cart service, its database not reached yet: made ready by [`GrpcService::ready`], or
/// by serving, which answers health meanwhile.
pub fn service(settings: Settings) -> anyhow::Result<GrpcService> {
    let catalog = catalog::Catalog::new(&settings.product_url)?;
    let database = Database::new(&settings.database, &MIGRATOR)?;
    let pool = database.pool().clone();
    let consumer = settings.events.map(|events| {
        let handler = Arc::new(checkout::TakeOutOnConfirm);
        events.consume(pool.clone(), "cart", checkout::EVENTS, handler)
    });
    let state = Arc::new(grpc::State {
        carts: carts::Carts {
            store: store::Store::new(pool),
            catalog,
        },
        verifier: settings.verifier,
    });
    let routes = tonic::service::Routes::new(grpc::server(state));
    Ok(GrpcService {
        beside: consumer.into_iter().collect(),
        ..GrpcService::on_database(grpc::SERVICE_NAME, routes, database)
    })
}
