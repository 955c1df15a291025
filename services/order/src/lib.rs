//! The order service: orders, and the checkout saga it orchestrates (`saga/`).
//!
//! `service` builds it from its `Settings`; served, it runs three things until shutdown: the gRPC API, the consumer of the product
//! service's stock events, and the worker that carries out the saga's steps (charges, refunds)
//! and times out stalled sagas; the last two start once the database is ready. Its events leave
//! through its outbox, drained by a relayer (`souk relay order`, or inside `souk up`).

mod grpc;
mod saga;
mod store;

use std::{sync::Arc, time::Duration};

use souk_protos::v1::{
    cart_service_client::CartServiceClient, payment_service_client::PaymentServiceClient,
};
use souk_shared::{
    consumer::Participation,
    db::{Database, DatabaseLocation},
    grpc::{Beside, GrpcService, channel},
    jwt::{ServiceToken, Signer, Verifier},
};

pub use saga::SagaMetrics;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The default saga deadline (`SOUK_SAGA_TIMEOUT`).
pub const DEFAULT_SAGA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the services the order service calls are.
#[derive(Debug, Clone)]
pub struct Peers {
    pub cart: String,
    pub payment: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    /// The saga's events: the order service consumes the product service's answers.
    pub events: Participation,
    pub verifier: Verifier,
    /// Signs the service tokens of the payment calls the saga makes on its own.
    pub signer: Signer,
    pub peers: Peers,
    pub saga_timeout: Duration,
    pub saga_metrics: SagaMetrics,
}

/// The order service, its database not reached yet: made ready by [`GrpcService::ready`], or
/// by serving, which answers health meanwhile; its events and saga steps start once it is.
pub fn service(settings: Settings) -> anyhow::Result<GrpcService> {
    let database = Database::new(&settings.database, &MIGRATOR)?;
    let pool = database.pool().clone();
    let (due, charges) = tokio::sync::mpsc::unbounded_channel();
    let saga = Arc::new(saga::Saga {
        shop: settings.events.bus.shop().clone(),
        pool: pool.clone(),
        cart: CartServiceClient::new(channel("SOUK_CART_URL", &settings.peers.cart)?),
        payment: PaymentServiceClient::new(channel("SOUK_PAYMENT_URL", &settings.peers.payment)?),
        timeout: chrono::TimeDelta::from_std(settings.saga_timeout)?,
        service_token: ServiceToken::new(settings.signer),
        metrics: settings.saga_metrics,
        claimed: saga::Claims::default(),
        due,
    });
    let consumer = settings
        .events
        .consume(pool.clone(), "order", saga::EVENTS, saga.clone());
    let steps: Beside = {
        let saga = saga.clone();
        Box::new(move |shutdown| Box::pin(saga::run_steps(saga, charges, shutdown)))
    };
    let state = Arc::new(grpc::State {
        pool,
        saga,
        verifier: settings.verifier,
    });
    let routes = tonic::service::Routes::new(grpc::server(state));
    Ok(GrpcService {
        beside: vec![consumer, steps],
        ..GrpcService::on_database(grpc::SERVICE_NAME, routes, database)
    })
}
