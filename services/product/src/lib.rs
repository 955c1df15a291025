//! The product service: the catalog (products and categories) and the stock of each product.
//!
//! `ProductService::start` connects to its database (running the embedded migrations);
//! `ProductService::serve` then answers gRPC on the given listener until shutdown. Reads are
//! public; writes need role `admin`, checked here from the caller's forwarded token.
//!
//! `domain` validates what clients send, `store` owns the tables (every write one statement),
//! `grpc` adapts the two to the contract in `protos/souk/v1/product.proto`. With an event bus
//! (`with_events`), `reservations` also takes and gives back stock for the checkout saga, and
//! its answers leave through the outbox.

mod domain;
mod grpc;
mod reservations;
mod store;

use std::sync::Arc;

use souk_shared::{
    Shutdown,
    bus::Bus,
    config::ShopName,
    consumer::{ConsumerMetrics, Participation},
    db::{self, DatabaseLocation},
    grpc::GrpcService,
    jwt::Verifier,
};
use tokio::net::TcpListener;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// What the product service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    /// The shop, whose subjects the catalog's events travel on.
    pub shop: ShopName,
    /// Verifies the callers' tokens (writes need role `admin`).
    pub verifier: Verifier,
}

/// A started product service: database ready and migrated.
#[derive(Debug)]
pub struct ProductService {
    state: Arc<grpc::State>,
    events: Option<Participation>,
}

impl ProductService {
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database, &MIGRATOR).await?;
        Ok(Self {
            state: Arc::new(grpc::State {
                store: store::Store::new(pool, settings.shop),
                verifier: settings.verifier,
            }),
            events: None,
        })
    }

    /// Takes part in the checkout saga: reserves and releases stock on the order events of
    /// `bus`, dead-lettering an event after `max_deliver` failed attempts.
    pub fn with_events(mut self, bus: Bus, max_deliver: i64, metrics: ConsumerMetrics) -> Self {
        self.events = Some(Participation {
            bus,
            max_deliver,
            metrics,
        });
        self
    }

    /// The product database, for the relayer of its outbox.
    pub fn pool(&self) -> &sqlx::PgPool {
        self.state.store.pool()
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let database = self.state.store.pool().clone();
        let consumer = self.events.map(|events| {
            let handler = Arc::new(reservations::Reservations {
                shop: events.bus.shop().clone(),
            });
            let events_handled = reservations::EVENTS;
            events.spawn(
                database.clone(),
                "product",
                events_handled,
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
