//! The product service: the catalog (products and categories) and the stock of each product.
//!
//! `ProductService::start` connects to its database (running the embedded migrations);
//! `ProductService::serve` then answers gRPC on the given listener until shutdown
//! (`ProductService::new` leaves the database to `serve`, which answers health meanwhile).
//! Reads are public; writes need role `admin`, checked here from the caller's forwarded token.
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
    db::{Database, DatabaseLocation},
    grpc::{GrpcService, Preparation},
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

/// A product service; its database is made ready by `start`, or by `serve` while it already
/// answers health.
#[derive(Debug)]
pub struct ProductService {
    state: Arc<grpc::State>,
    events: Option<Participation>,
    /// Readies the database; `None` once done.
    prepare: Option<Preparation>,
}

impl ProductService {
    /// The service, its database not reached yet: `serve` answers health at once and its calls
    /// (and events) once the database is ready.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let database = Database::new(&settings.database, &MIGRATOR)?;
        Ok(Self {
            state: Arc::new(grpc::State {
                store: store::Store::new(database.pool().clone(), settings.shop),
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
            events.consume(
                database.clone(),
                "product",
                reservations::EVENTS,
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
