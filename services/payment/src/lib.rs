//! The payment service: simulated card payments in its own database.
//!
//! A charge captures the amount unless it is above the decline limit. Charge and refund are
//! idempotent by order id: a retried charge returns the first answer and never charges twice; a
//! refund of a captured payment refunds it once; a refund that comes before any charge (a
//! cancelled saga whose charge may still be in flight) voids the order, so that the late charge
//! is refused. Only Souk services may call it.

mod grpc;
mod store;

use std::sync::Arc;

use souk_shared::{
    db::{Database, DatabaseLocation},
    grpc::GrpcService,
    jwt::Verifier,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    pub verifier: Verifier,
    /// Charges above this many cents are declined.
    pub decline_above_cents: i64,
}

/// The payment service, its database not reached yet: made ready by [`GrpcService::ready`],
/// or by serving, which answers health meanwhile.
pub fn service(settings: Settings) -> anyhow::Result<GrpcService> {
    let database = Database::new(&settings.database, &MIGRATOR)?;
    let state = Arc::new(grpc::State {
        store: store::Store::new(database.pool().clone()),
        verifier: settings.verifier,
        decline_above_cents: settings.decline_above_cents,
    });
    let routes = tonic::service::Routes::new(grpc::server(state));
    Ok(GrpcService::on_database(
        grpc::SERVICE_NAME,
        routes,
        database,
    ))
}
