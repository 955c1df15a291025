//! The product service: the catalog (products and categories) and the stock of each product.
//!
//! `service` builds it from its `Settings`; its database is migrated when it is made ready.
//! Reads are public; writes need role `admin`, checked here from the caller's forwarded token.
//!
//! `domain` validates what clients send, `store` owns the tables (every write one statement),
//! `grpc` adapts the two to the contract in `protos/souk/v1/product.proto`. With an event bus
//! (`Settings::events`), `reservations` also takes and gives back stock for the checkout saga, and
//! its answers leave through the outbox.

mod domain;
mod grpc;
mod reservations;
mod store;

use std::sync::Arc;

use souk_shared::{
    config::ShopName,
    consumer::Participation,
    db::{Database, DatabaseLocation},
    grpc::GrpcService,
    jwt::Verifier,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// What the product service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    /// The shop, whose subjects the catalog's events travel on.
    pub shop: ShopName,
    /// Verifies the callers' tokens (writes need role `admin`).
    pub verifier: Verifier,
    /// With a bus, it takes part in the checkout saga: it reserves and releases stock on the
    /// order events.
    pub events: Option<Participation>,
}

/// The product service, its database not reached yet: made ready by
/// [`GrpcService::ready`], or by serving, which answers health meanwhile.
pub fn service(settings: Settings) -> anyhow::Result<GrpcService> {
    let database = Database::new(&settings.database, &MIGRATOR)?;
    let pool = database.pool().clone();
    let consumer = settings.events.map(|events| {
        let handler = Arc::new(reservations::Reservations {
            shop: events.bus.shop().clone(),
        });
        events.consume(pool.clone(), "product", reservations::EVENTS, handler)
    });
    let state = Arc::new(grpc::State {
        store: store::Store::new(pool, settings.shop),
        verifier: settings.verifier,
    });
    let routes = tonic::service::Routes::new(grpc::server(state));
    Ok(GrpcService {
        beside: consumer.into_iter().collect(),
        ..GrpcService::on_database(grpc::SERVICE_NAME, routes, database)
    })
}
