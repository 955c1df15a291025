//! The desired state of a shop: pure functions from a [`Shop`] to the Kubernetes objects it
//! needs. Nothing here talks to the API server or reads the clock, so the same `Shop` always gives
//! the same objects, and tests can look at every field.
//!
//! The only objects not fully described here are the Secrets the operator generates (database
//! credentials, the JWT key pair, the NATS users' passwords): their contents are random, so [`Desired`] names them and
//! [`secrets`] builds them from a random source, once, when they are absent.

pub mod gateway;
pub mod nats;
pub mod network_policies;
pub mod postgres;
pub mod secrets;
pub mod services;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, PodSecurityContext, SeccompProfile, SecurityContext, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
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
    /// Objects applied server-side on every reconcile: the NetworkPolicies first (a store is
    /// never open before its policy), then backing stores (databases, NATS), then the services,
    /// then the gateway's Ingress.
    pub children: Vec<Child>,
}

/// A Secret generated once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// `<shop>-jwt`: the ES256 key pair.
    Jwt { name: String },
    /// `<shop>-<service>-db`: the credentials of a managed Postgres.
    Database { name: String, service: Component },
    /// `<shop>-nats`: the password and bcrypt hash of each user of the managed NATS.
    Nats { name: String },
}

impl GeneratedSecret {
    /// The Secret's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Jwt { name } | Self::Database { name, .. } | Self::Nats { name } => name,
        }
    }
}

/// One object applied server-side.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    NetworkPolicy(NetworkPolicy),
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    Ingress(Ingress),
}

impl Child {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NetworkPolicy(_) => "NetworkPolicy",
            Self::ConfigMap(_) => "ConfigMap",
            Self::Service(_) => "Service",
            Self::StatefulSet(_) => "StatefulSet",
            Self::Deployment(_) => "Deployment",
            Self::Ingress(_) => "Ingress",
        }
    }

    /// The object's name.
    pub fn name(&self) -> String {
        match self {
            Self::NetworkPolicy(o) => o.name_any(),
            Self::ConfigMap(o) => o.name_any(),
            Self::Service(o) => o.name_any(),
            Self::StatefulSet(o) => o.name_any(),
            Self::Deployment(o) => o.name_any(),
            Self::Ingress(o) => o.name_any(),
        }
    }

    /// The object as JSON, with `apiVersion` and `kind` (as it is applied and rendered).
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Self::NetworkPolicy(o) => serde_json::to_value(o),
            Self::ConfigMap(o) => serde_json::to_value(o),
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
    let mut children: Vec<Child> = network_policies::network_policies(shop)
        .into_iter()
        .map(Child::NetworkPolicy)
        .collect();

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
        generated_secrets.push(GeneratedSecret::Nats {
            name: names::nats(shop),
        });
        children.push(Child::ConfigMap(nats::config_map(shop)));
        children.push(Child::Service(nats::service(shop)));
        children.push(Child::StatefulSet(nats::stateful_set(shop, &nats)));
    }
    for service in Component::ALL {
        children.push(Child::Service(services::service(shop, service)));
        if service != Component::Gateway {
            children.push(Child::Service(services::grpc_service(shop, service)));
        }
        let mut deployment = services::deployment(shop, service);
        nats::add_credentials(&mut deployment, shop, service);
        children.push(Child::Deployment(deployment));
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
    NetworkPolicy,
    ConfigMap,
}

impl ObsoleteKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::StatefulSet => "StatefulSet",
            Self::Ingress => "Ingress",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::ConfigMap => "ConfigMap",
        }
    }
}

/// The objects the shop may have made before and does not need now, workloads before their
/// Services, Services before their NetworkPolicies. The generated Secrets are never in it:
/// credentials outlive a switch to an external database and back.
pub fn obsolete(shop: &Shop) -> Vec<Obsolete> {
    let mut obsolete = Vec::new();
    let mut store = |name: String, config_map: bool| {
        for kind in [
            ObsoleteKind::StatefulSet,
            ObsoleteKind::Service,
            ObsoleteKind::NetworkPolicy,
        ] {
            obsolete.push(Obsolete {
                kind,
                name: name.clone(),
            });
        }
        if config_map {
            obsolete.push(Obsolete {
                kind: ObsoleteKind::ConfigMap,
                name,
            });
        }
    };
    for service in Component::WITH_DATABASE {
        if let Database::External(_) = shop.spec.databases.resolve(service) {
            store(names::database(shop, service), false);
        }
    }
    if let Nats::External(_) = shop.spec.nats.resolve() {
        store(names::nats(shop), true);
    }
    if shop.spec.gateway.ingress.is_none() {
        obsolete.push(Obsolete {
            kind: ObsoleteKind::Ingress,
            name: names::service(shop, Component::Gateway),
        });
    }
    obsolete
}

/// The annotation of a pod template that carries [`secrets_hash`] of the Secrets its pods read.
pub const SECRETS_HASH_ANNOTATION: &str = "souk.dev/secrets-hash";

/// The Secrets the pods of `deployment` read, through environment variables or volumes.
pub fn secrets_read(deployment: &Deployment) -> BTreeSet<String> {
    secrets_read_by(
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref()),
    )
}

/// The Secrets the pods of the managed NATS read (its users' hashes); `None` for another
/// StatefulSet. A database's pods are not rolled for their Secret: Postgres reads its password
/// once, when it creates its data.
pub fn nats_secrets_read(shop: &Shop, set: &StatefulSet) -> Option<BTreeSet<String>> {
    (set.metadata.name.as_deref() == Some(names::nats(shop).as_str()))
        .then(|| secrets_read_by(set.spec.as_ref().and_then(|s| s.template.spec.as_ref())))
}

fn secrets_read_by(pod: Option<&k8s_openapi::api::core::v1::PodSpec>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(pod) = pod else {
        return names;
    };
    for container in &pod.containers {
        for var in container.env.iter().flatten() {
            if let Some(secret) = var
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                names.insert(secret.name.clone());
            }
        }
    }
    for volume in pod.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            names.insert(name);
        }
    }
    names
}

/// A hash of Secrets' contents (name, then each key and value, in order); an absent Secret counts
/// as absent. Its change, stamped on a pod template, rolls the pods: a process reads its
/// Secrets when it starts.
pub fn secrets_hash(secrets: &BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (name, data) in secrets {
        hash.update(name.as_bytes());
        hash.update([0]);
        match data {
            None => hash.update([0]),
            Some(data) => {
                hash.update([1]);
                for (key, value) in data {
                    hash.update(key.as_bytes());
                    hash.update([0]);
                    hash.update((value.len() as u64).to_be_bytes());
                    hash.update(value);
                }
            }
        }
    }
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sets [`SECRETS_HASH_ANNOTATION`] on the pod template of `deployment`.
pub fn stamp_secrets_hash(deployment: &mut Deployment, hash: String) {
    if let Some(spec) = deployment.spec.as_mut() {
        stamp(&mut spec.template, hash);
    }
}

/// Sets [`SECRETS_HASH_ANNOTATION`] on the pod template of the managed NATS: a new users'
/// Secret (deleted to rotate the passwords) restarts NATS with the new hashes, as it rolls the
/// services with the new passwords.
pub fn stamp_nats_secrets_hash(set: &mut StatefulSet, hash: String) {
    if let Some(spec) = set.spec.as_mut() {
        stamp(&mut spec.template, hash);
    }
}

fn stamp(template: &mut k8s_openapi::api::core::v1::PodTemplateSpec, hash: String) {
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SECRETS_HASH_ANNOTATION.to_owned(), hash);
}

/// Every Secret the shop's pods read or the operator generates for it: a change to any of them
/// is a reason to reconcile the shop.
pub fn secrets_of(shop: &Shop) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = crate::validate::required_secrets(shop)
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.insert(names::jwt_secret(shop));
    for service in Component::WITH_DATABASE {
        names.insert(names::database(shop, service));
    }
    names.insert(names::nats(shop));
    names
}

/// Object names, all prefixed by the shop's name.
pub mod names {
    use super::*;

    /// `<shop>-<service>`: the Deployment and Service of a service.
    pub fn service(shop: &Shop, service: Component) -> String {
        format!("{}-{service}", shop.name_any())
    }

    /// `<shop>-<service>-grpc`: the headless Service of a gRPC service, that its callers use.
    pub fn grpc_service(shop: &Shop, service: Component) -> String {
        format!("{}-{service}-grpc", shop.name_any())
    }

    /// `<shop>-<service>-db`: StatefulSet, Service and Secret of a managed database.
    pub fn database(shop: &Shop, service: Component) -> String {
        format!("{}-{service}-db", shop.name_any())
    }

    /// `<shop>-nats`: StatefulSet, Service, ConfigMap, Secret and NetworkPolicy of the managed
    /// NATS.
    pub fn nats(shop: &Shop) -> String {
        format!("{}-nats", shop.name_any())
    }

    /// `<shop>-jwt`: the JWT key pair.
    pub fn jwt_secret(shop: &Shop) -> String {
        format!("{}-jwt", shop.name_any())
    }
}

/// The standard labels of an object of `component` (`gateway`, `user-db`, `nats`, `jwt`),
/// with `app.kubernetes.io/version` when the image tag can be a label value.
pub fn labels(shop: &Shop, component: &str) -> BTreeMap<String, String> {
    let mut labels = unversioned_labels(shop, component);
    if let Some(version) = version_label(shop.spec.image.tag()) {
        labels.insert("app.kubernetes.io/version".into(), version);
    }
    labels
}

/// The standard labels without the version: for what must not change when the souk image does
/// (the pod templates of the databases and NATS, whose change would restart them; volume claim
/// templates, which the API server refuses to change).
pub fn unversioned_labels(shop: &Shop, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(shop, component);
    labels.insert("app.kubernetes.io/part-of".into(), "souk".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    labels
}

/// The image tag as a label value, if it can be one: at most 63 characters of letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit. A tag with a digest
/// (`1.2@sha256:...`) gives its tag part; a tag too long for a label (skaffold's 64-hex tags) or
/// with other characters gives none, since the API server would refuse the whole object.
pub fn version_label(tag: &str) -> Option<String> {
    let tag = tag.split_once('@').map_or(tag, |(tag, _digest)| tag);
    let edges_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let valid = !tag.is_empty()
        && tag.len() <= 63
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edges_ok(tag.chars().next())
        && edges_ok(tag.chars().last());
    valid.then(|| tag.to_owned())
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
