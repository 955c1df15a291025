//! The product service: the catalog (products and categories) and the stock of each product.
//!
//! `ProductService::start` connects to its database (running the embedded migrations);
//! `ProductService::serve` then answers gRPC on the given listener until shutdown. Reads are
//! public; writes need role `admin`, checked here from the caller's forwarded token.
//!
//! `domain` validates what clients send, `store` owns the tables (every write one statement),
//! `grpc` adapts the two to the contract in `protos/souk/v1/product.proto`.

mod domain;
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

/// What the product service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    /// Verifies the callers' tokens (writes need role `admin`).
    pub verifier: Verifier,
}

/// A started product service: database ready and migrated.
#[derive(Debug)]
pub struct ProductService {
    state: Arc<grpc::State>,
}

impl ProductService {
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database, &MIGRATOR).await?;
        Ok(Self {
            state: Arc::new(grpc::State {
                store: store::Store::new(pool),
                verifier: settings.verifier,
            }),
        })
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let database = self.state.store.pool().clone();
        let service = GrpcService {
            name: grpc::SERVICE_NAME,
            routes: tonic::service::Routes::new(grpc::server(self.state)),
            database: Some(database),
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
