//! The cart service: one cart per user, priced at the catalog's current prices.
//!
//! `CartService::start` connects to its database (running the embedded migrations) and makes a
//! lazily connected client of the product service; `CartService::serve` then answers gRPC on
//! the given listener until shutdown. Every call acts on the caller's own cart, from its token.
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
    db::{self, DatabaseLocation},
    grpc::GrpcService,
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

/// A started cart service: database ready, product service client made (not yet connected).
#[derive(Debug)]
pub struct CartService {
    state: Arc<grpc::State>,
    events: Option<Participation>,
}

impl CartService {
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let catalog = catalog::Catalog::new(&settings.product_url)?;
        let pool = db::connect(&settings.database, &MIGRATOR).await?;
        Ok(Self {
            state: Arc::new(grpc::State {
                carts: carts::Carts {
                    store: store::Store::new(pool),
                    catalog,
                },
                verifier: settings.verifier,
            }),
            events: None,
        })
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
            events.spawn(
                database.clone(),
                "cart",
                checkout::EVENTS,
                handler,
                &shutdown,
            )
        });
        let service = GrpcService {
            name: grpc::SERVICE_NAME,
            routes: tonic::service::Routes::new(grpc::server(self.state)),
            database: Some(database),
        };
        souk_shared::grpc::serve_with(service, listener, shutdown, consumer.into_iter().collect())
            .await
    }
}
