//! `souk-operator`: turns a `Shop` (`souk.dev/v1alpha1`) into a running shop.
//!
//! - [`shop`]: the resource's types; the CRD (`crds/shop.yaml`) is generated from them (`crdgen`).
//! - [`validate`]: what the schema cannot check; a bad spec becomes `Degraded`, nothing applied.
//! - [`desired`]: the desired objects, pure functions of a `Shop`.
//! - [`status`]: the status, computed from the objects as the API server returned them.
//! - [`controller`]: the reconciler, its error policy and the controller loop.
//! - [`leader`], [`http`], [`metrics`]: running two replicas, health and metrics endpoints.
//! - [`render`]: the objects of a `Shop` file, offline (CI validates them).
//!
//! # RBAC the operator needs (a ClusterRole; the Helm chart binds it to the operator's account)
//!
//! | apiGroups | resources | verbs |
//! |---|---|---|
//! | `souk.dev` | `shops` | get, list, watch |
//! | `souk.dev` | `shops/status` | get, patch, update |
//! | `apps` | `deployments` | get, list, watch, create, patch |
//! | `apps` | `statefulsets` | get, list, watch, create, patch |
//! | `""` | `services` | get, list, watch, create, patch, delete |
//! | `""` | `secrets` | get, list, watch, create |
//! | `""` | `configmaps` | get, list, watch, create, patch, delete |
//! | `networking.k8s.io` | `ingresses` | get, list, watch, create, patch, delete |
//! | `networking.k8s.io` | `networkpolicies` | get, list, watch, create, patch, delete |
//! | `events.k8s.io` | `events` | create, patch |
//! | `coordination.k8s.io` | `leases` | get, create, update (only with leader election; may be a Role in the lease namespace) |
//!
//! Children are removed by the garbage collector through their owner references when the `Shop`
//! is deleted. `delete` is needed only to prune what a changed spec no longer needs (the Service
//! and NetworkPolicy of a database or NATS switched to external, NATS's ConfigMap, an Ingress
//! removed), and only objects the Shop
//! controls are deleted. A data-holding StatefulSet is never deleted by the operator: switched to
//! external, it is scaled to zero with its volume (switch back and it returns with its data).
//! Secrets are watched (a Secret a Shop reads, created or changed, reconciles that Shop).

pub mod controller;
pub mod desired;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod shop;
pub mod status;
pub mod validate;

#[cfg(test)]
mod fixtures;

pub use shop::{Shop, ShopSpec, ShopStatus};
