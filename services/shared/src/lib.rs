//! What every Souk service stands on: configuration pieces, telemetry, the database pool and
//! migrations, JWT signing and verification, the caller's identity on gRPC calls, the mapping of
//! domain errors to `tonic::Status`, the gRPC server bootstrap and the shutdown signal; and the
//! event plumbing: envelopes, the transactional outbox, the JetStream bus with its inbox-backed
//! consumers, and the trace context that follows a request across all of it.

pub mod auth;
pub mod bus;
pub mod config;
pub mod consumer;
pub mod db;
pub mod discovery;
pub mod error;
pub mod events;
pub mod fault;
pub mod grpc;
pub mod jwt;
pub mod metrics;
pub mod outbox;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod trace;

#[cfg(feature = "test-support")]
pub mod testing;

pub use error::{Error, Result};
pub use shutdown::Shutdown;
