//! The contract between the operator and the `souk` binary: what the operator writes into a pod
//! spec (arguments, environment, ports, files, health services) is what `souk` reads. Both sides
//! take the names from here, so a renamed setting changes both or neither; the operator's test
//! `every_container_parses_with_souks_own_parser` checks the rendered pods against souk's parser.
//!
//! No dependencies: the operator uses it without pulling in the services.

/// gRPC health service that reports the process alive whatever its database does: the liveness
/// probe asks for it, the readiness probe for `""` (which follows the database).
pub const LIVENESS_HEALTH_SERVICE: &str = "liveness";
