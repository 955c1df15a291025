//! What every Souk service stands on: configuration pieces, telemetry, the database pool and
//! migrations, JWT signing and verification, the caller's identity on gRPC calls, the mapping of
//! domain errors to `tonic::Status`, the gRPC server bootstrap and the shutdown signal.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod jwt;
pub mod shutdown;
pub mod telemetry;
pub mod time;

#[cfg(feature = "test-support")]
pub mod testing;

pub use error::{Error, Result};
pub use shutdown::Shutdown;
