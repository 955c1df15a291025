//! The desired state of a shop: pure functions from a [`Shop`] to the Kubernetes objects it
//! needs. Nothing here talks to the API server or reads the clock, so the same `Shop` always gives
//! the same objects, and tests can look at every field.
//!
//! The only objects not fully described here are the Secrets the operator generates (database
//! credentials, the JWT key pair): their contents are random, so [`Desired`] names them and
//! [`secrets`] builds them from a random source, once, when they are absent.

pub mod gateway;
pub mod nats;
pub mod network_policies;
pub mod postgres;
pub mod secrets;
pub mod services;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext, Service,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::shop::{Component, Database, Nats, Shop};
use crate::validate::{SpecError, validate};

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "souk-operator";

/// Everything one shop needs, in the order it is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Secrets the operator generates when absent and never overwrites.
    pub generated_secrets: Vec<GeneratedSecret>,
    /// Objects applied server-side on every reconcile: backing stores first (databases, NATS),
    /// then the services, then the gateway's Ingress.
    pub children: Vec<Child>,
}

/// A Secret generated once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// `<shop>-jwt`: the ES256 key pair.
    Jwt { name: String },
    /// `<shop>-<service>-db`: the credentials of a managed Postgres.
    Database { name: String, service: Component },
}

impl GeneratedSecret {
    /// The Secret's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Jwt { name } | Self::Database { name, .. } => name,
        }
    }
}

/// One object applied server-side.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    Ingress(Ingress),
}

impl Child {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Service(_) => "Service",
            Self::StatefulSet(_) => "StatefulSet",
            Self::Deployment(_) => "Deployment",
            Self::Ingress(_) => "Ingress",
        }
    }

    /// The object's name.
    pub fn name(&self) -> String {
        match self {
            Self::Service(o) => o.name_any(),
            Self::StatefulSet(o) => o.name_any(),
            Self::Deployment(o) => o.name_any(),
            Self::Ingress(o) => o.name_any(),
        }
    }

    /// The object as JSON, with `apiVersion` and `kind` (as it is applied and rendered).
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Self::Service(o) => serde_json::to_value(o),
            Self::StatefulSet(o) => serde_json::to_value(o),
            Self::Deployment(o) => serde_json::to_value(o),
            Self::Ingress(o) => serde_json::to_value(o),
        }
    }
}

/// The desired state of `shop`, or why there is none. Validation runs first, so a bad spec
/// yields no object at all.
pub fn desired(shop: &Shop) -> Result<Desired, SpecError> {
    validate(shop)?;
    let mut generated_secrets = vec![GeneratedSecret::Jwt {
        name: names::jwt_secret(shop),
    }];
    let mut children = Vec::new();

    for service in Component::WITH_DATABASE {
        if let Database::Managed(db) = shop.spec.databases.resolve(service) {
            generated_secrets.push(GeneratedSecret::Database {
                name: names::database(shop, service),
                service,
            });
            children.push(Child::Service(postgres::service(shop, service)));
            children.push(Child::StatefulSet(postgres::stateful_set(
                shop, service, &db,
            )));
        }
    }
    if let Nats::Managed(nats) = shop.spec.nats.resolve() {
        children.push(Child::Service(nats::service(shop)));
        children.push(Child::StatefulSet(nats::stateful_set(shop, &nats)));
    }
    for service in Component::ALL {
        children.push(Child::Service(services::service(shop, service)));
        children.push(Child::Deployment(services::deployment(shop, service)));
    }
    if let Some(ingress) = gateway::ingress(shop) {
        children.push(Child::Ingress(ingress));
    }
    Ok(Desired {
        generated_secrets,
        children,
    })
}

/// An object an earlier spec of the shop needed and the current one does not (a database or NATS
/// that became external, an Ingress no longer asked for). The controller deletes it if the shop
/// owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obsolete {
    pub kind: ObsoleteKind,
    pub name: String,
}

/// The kinds of object that can become obsolete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObsoleteKind {
    Service,
    StatefulSet,
    Ingress,
}

impl ObsoleteKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::StatefulSet => "StatefulSet",
            Self::Ingress => "Ingress",
        }
    }
}

/// The objects the shop may have made before and does not need now, workloads before their
/// Services. The generated Secrets are never in it: credentials outlive a switch to an external
/// database and back.
pub fn obsolete(shop: &Shop) -> Vec<Obsolete> {
    let mut obsolete = Vec::new();
    let mut both = |name: String| {
        obsolete.push(Obsolete {
            kind: ObsoleteKind::StatefulSet,
            name: name.clone(),
        });
        obsolete.push(Obsolete {
            kind: ObsoleteKind::Service,
            name,
        });
    };
    for service in Component::WITH_DATABASE {
        if let Database::External(_) = shop.spec.databases.resolve(service) {
            both(names::database(shop, service));
        }
    }
    if let Nats::External(_) = shop.spec.nats.resolve() {
        both(names::nats(shop));
    }
    if shop.spec.gateway.ingress.is_none() {
        obsolete.push(Obsolete {
            kind: ObsoleteKind::Ingress,
            name: names::service(shop, Component::Gateway),
        });
    }
    obsolete
}

/// Object names, all prefixed by the shop's name.
pub mod names {
    use super::*;

    /// `<shop>-<service>`: the Deployment and Service of a service.
    pub fn service(shop: &Shop, service: Component) -> String {
        format!("{}-{service}", shop.name_any())
    }

    /// `<shop>-<service>-db`: StatefulSet, Service and Secret of a managed database.
    pub fn database(shop: &Shop, service: Component) -> String {
        format!("{}-{service}-db", shop.name_any())
    }

    /// `<shop>-nats`: StatefulSet and Service of the managed NATS.
    pub fn nats(shop: &Shop) -> String {
        format!("{}-nats", shop.name_any())
    }

    /// `<shop>-jwt`: the JWT key pair.
    pub fn jwt_secret(shop: &Shop) -> String {
        format!("{}-jwt", shop.name_any())
    }
}

/// The standard labels of an object of `component` (`gateway`, `user-db`, `nats`, `jwt`).
pub fn labels(shop: &Shop, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(shop, component);
    labels.insert("app.kubernetes.io/part-of".into(), "souk".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    labels.insert(
        "app.kubernetes.io/version".into(),
        shop.spec.image.tag().to_owned(),
    );
    labels
}

/// The labels that select the pods of `component`; a subset of [`labels`] that never changes.
pub fn selector(shop: &Shop, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "souk".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), shop.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ])
}

/// Metadata of a child: name, namespace, labels and the controller owner reference (absent only
/// for a `Shop` that was never stored, which has no uid).
pub fn metadata(shop: &Shop, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: shop.namespace(),
        labels: Some(labels(shop, component)),
        owner_references: shop.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// A container that runs as a non-root user, on a read-only root filesystem, with every
/// capability dropped.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// A pod whose processes run as `uid`, with the runtime's default seccomp profile.
pub fn restricted_pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}
