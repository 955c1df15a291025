//! The cart service: one cart per user, priced at the catalog's current prices.
//!
//! `CartService::start` connects to its database (running the embedded migrations) and makes a
//! lazily connected client of the product service; `CartService::serve` then answers gRPC on
//! the given listener until shutdown (`CartService::new` leaves the database to `serve`, which
//! answers health meanwhile). Every call acts on the caller's own cart, from its token.
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
//! - With an event bus (`with_events`), a confirmed order empties its user's cart (`checkout`).
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
    Shutdown,
    bus::Bus,
    consumer::{ConsumerMetrics, Participation},
    db::{Database, DatabaseLocation},
    grpc::{GrpcService, Preparation},
    jwt::Verifier,
};
use tokio::net::TcpListener;

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
}

/// A cart service; its database is made ready by `start`, or by `serve` while it already
/// answers health.
#[derive(Debug)]
pub struct CartService {
    state: Arc<grpc::State>,
    events: Option<Participation>,
    /// Readies the database; `None` once done.
    prepare: Option<Preparation>,
}

impl CartService {
    /// The service, its database not reached yet: `serve` answers health at once and its calls
    /// (and events) once the database is ready.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let catalog = catalog::Catalog::new(&settings.product_url)?;
        let database = Database::new(&settings.database, &MIGRATOR)?;
        Ok(Self {
            state: Arc::new(grpc::State {
                carts: carts::Carts {
                    store: store::Store::new(database.pool().clone()),
                    catalog,
                },
                verifier: settings.verifier,
            }),
            events: None,
            prepare: Some(Preparation::database(database)),
        })
    }

    /// The service with its database ready (waiting for it as long as it takes).
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let mut service = Self::new(settings)?;
        Preparation::run_held(&mut service.prepare).await?;
        Ok(service)
    }

    /// Takes part in the checkout saga: empties a cart when its order is confirmed on `bus`,
    /// dead-lettering an event after `max_deliver` failed attempts.
    pub fn with_events(mut self, bus: Bus, max_deliver: i64, metrics: ConsumerMetrics) -> Self {
        self.events = Some(Participation {
            bus,
            max_deliver,
            metrics,
        });
        self
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let database = self.state.carts.store.pool().clone();
        let consumer = self.events.map(|events| {
            let handler = Arc::new(checkout::TakeOutOnConfirm);
            events.consume(
                database.clone(),
                "cart",
                checkout::EVENTS,
                handler,
                &shutdown,
            )
        });
        let service = GrpcService {
            database: Some(database),
            prepare: self.prepare,
            beside: consumer.into_iter().collect(),
            ..GrpcService::new(
                grpc::SERVICE_NAME,
                tonic::service::Routes::new(grpc::server(self.state)),
            )
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
