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
    db::{self, DatabaseLocation},
    grpc::GrpcService,
    jwt::Verifier,
};
use tokio::net::TcpListener;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The default decline limit (docs/api.md): charges above 1,000,000 cents are declined.
pub const DEFAULT_DECLINE_ABOVE_CENTS: i64 = 1_000_000;

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
}

impl PaymentService {
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database, &MIGRATOR).await?;
        Ok(Self {
            state: Arc::new(grpc::State {
                store: store::Store::new(pool),
                verifier: settings.verifier,
                decline_above_cents: settings.decline_above_cents,
            }),
        })
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let service = GrpcService {
            name: grpc::SERVICE_NAME,
            database: Some(self.state.store.pool().clone()),
            routes: tonic::service::Routes::new(grpc::server(self.state)),
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
