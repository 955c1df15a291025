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
    Shutdown,
    db::{Database, DatabaseLocation},
    grpc::{GrpcService, Preparation},
    jwt::Verifier,
};
use tokio::net::TcpListener;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    pub verifier: Verifier,
    /// Charges above this many cents are declined.
    pub decline_above_cents: i64,
}

#[derive(Debug)]
pub struct PaymentService {
    state: Arc<grpc::State>,
    /// Readies the database; `None` once done.
    prepare: Option<Preparation>,
}

impl PaymentService {
    /// The service, its database not reached yet: `serve` answers health at once and its calls
    /// once the database is ready.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let database = Database::new(&settings.database, &MIGRATOR)?;
        Ok(Self {
            state: Arc::new(grpc::State {
                store: store::Store::new(database.pool().clone()),
                verifier: settings.verifier,
                decline_above_cents: settings.decline_above_cents,
            }),
            prepare: Some(Preparation::database(database)),
        })
    }

    /// The service with its database ready (waiting for it as long as it takes).
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let mut service = Self::new(settings)?;
        Preparation::run_held(&mut service.prepare).await?;
        Ok(service)
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let service = GrpcService {
            database: Some(self.state.store.pool().clone()),
            prepare: self.prepare,
            ..GrpcService::new(
                grpc::SERVICE_NAME,
                tonic::service::Routes::new(grpc::server(self.state)),
            )
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
