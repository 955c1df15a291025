//! The order service: orders, and the checkout saga it orchestrates (`saga.rs`).
//!
//! `serve` runs three things until shutdown: the gRPC API, the consumer of the product
//! service's stock events, and the worker that carries out the saga's steps (charges, refunds)
//! and times out stalled sagas; the last two start once the database is ready. Its events leave
//! through its outbox, drained by a relayer (`souk relay order`, or inside `souk up`).

mod grpc;
mod saga;
mod store;

use std::{sync::Arc, time::Duration};

use souk_protos::v1::{
    cart_service_client::CartServiceClient, payment_service_client::PaymentServiceClient,
    product_service_client::ProductServiceClient,
};
use souk_shared::{
    Shutdown,
    bus::Bus,
    consumer::{ConsumerMetrics, Participation},
    db::{Database, DatabaseLocation},
    grpc::{GrpcService, Preparation, channel},
    jwt::{Signer, Verifier},
};
use tokio::net::TcpListener;

pub use saga::SagaMetrics;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The default saga deadline (`SOUK_SAGA_TIMEOUT`).
pub const DEFAULT_SAGA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the services the order service calls are.
#[derive(Debug, Clone)]
pub struct Peers {
    pub cart: String,
    pub product: String,
    pub payment: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    pub bus: Bus,
    pub verifier: Verifier,
    /// Signs the service tokens of the payment calls the saga makes on its own.
    pub signer: Signer,
    pub peers: Peers,
    pub saga_timeout: Duration,
    /// Redeliveries of a failing event before it is dead-lettered.
    pub max_deliver: i64,
    pub saga_metrics: SagaMetrics,
    pub consumer_metrics: ConsumerMetrics,
}

/// An order service; its database is made ready by `start`, or by `serve` while it already
/// answers health.
#[derive(Debug)]
pub struct OrderService {
    state: Arc<grpc::State>,
    events: Participation,
    /// Readies the database; `None` once done.
    prepare: Option<Preparation>,
}

impl OrderService {
    /// The service, its database not reached yet: `serve` answers health at once, and its calls,
    /// events and saga steps once the database is ready.
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let database = Database::new(&settings.database, &MIGRATOR)?;
        let pool = database.pool().clone();
        let saga = Arc::new(saga::Saga {
            shop: settings.bus.shop().clone(),
            pool: pool.clone(),
            cart: CartServiceClient::new(channel("SOUK_CART_URL", &settings.peers.cart)?),
            product: ProductServiceClient::new(channel(
                "SOUK_PRODUCT_URL",
                &settings.peers.product,
            )?),
            payment: PaymentServiceClient::new(channel(
                "SOUK_PAYMENT_URL",
                &settings.peers.payment,
            )?),
            timeout: chrono::TimeDelta::from_std(settings.saga_timeout)?,
            signer: settings.signer,
            metrics: settings.saga_metrics,
            wake: tokio::sync::Notify::new(),
        });
        Ok(Self {
            state: Arc::new(grpc::State {
                pool,
                saga,
                verifier: settings.verifier,
            }),
            events: Participation {
                bus: settings.bus,
                max_deliver: settings.max_deliver,
                metrics: settings.consumer_metrics,
            },
            prepare: Some(Preparation::database(database)),
        })
    }

    /// The service with its database ready (waiting for it as long as it takes).
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let mut service = Self::new(settings)?;
        Preparation::run_held(&mut service.prepare).await?;
        Ok(service)
    }

    /// The order database, for the relayer of its outbox.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.state.pool
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let pool = self.state.pool.clone();
        let consumer = self.events.consume(
            pool.clone(),
            "order",
            saga::EVENTS,
            self.state.saga.clone(),
            &shutdown,
        );
        let steps = Box::pin(saga::run_steps(self.state.saga.clone(), shutdown.clone()));
        let service = GrpcService {
            database: Some(pool),
            prepare: self.prepare,
            beside: vec![consumer, steps],
            ..GrpcService::new(
                grpc::SERVICE_NAME,
                tonic::service::Routes::new(grpc::server(self.state)),
            )
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
