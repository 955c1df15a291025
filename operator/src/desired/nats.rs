//! The managed NATS: a single-node JetStream StatefulSet with a file-storage volume, and its
//! Service on 4222. Meant for development; production shops point at an external NATS.
//!
//! It asks for authentication (issue 13): its configuration (a ConfigMap, `<shop>-nats`) is
//! rendered from `souk_contract::bus`, a user per service with only the permissions that
//! service needs, and holds no secret: each user's bcrypt hash comes from the generated Secret
//! `<shop>-nats` through an environment variable of the NATS pod. The services' pods read their
//! own user's password from the same Secret ([`credentials_env`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, HTTPGetAction, PodSpec, PodTemplateSpec,
    Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;
use souk_contract::bus::{self, ADMIN_USER, BUS_USERS, Password};

use super::postgres::{mount, retention, volume_claim};
use super::services::{container_port, default_resources, env, secret_env};
use super::{
    metadata, names, restricted_container_security, restricted_pod_security, selector,
    unversioned_labels,
};
use crate::shop::{Component, ExternalNats, ManagedNats, Nats, Shop};

/// Client port.
pub const CLIENT_PORT: i32 = 4222;
/// Monitoring port (`/healthz`, `/varz`).
pub const MONITOR_PORT: i32 = 8222;
/// The `component` label.
pub const COMPONENT: &str = "nats";
/// Any unprivileged uid works: NATS writes only to its data volume.
const NATS_UID: i64 = 1000;
const DATA_DIR: &str = "/data";
/// Where the configuration is mounted, and its file (the ConfigMap's key).
const CONFIG_DIR: &str = "/etc/nats";
pub const CONFIG_FILE: &str = "nats.conf";
/// The annotation of the pod template carrying a hash of the configuration: a changed
/// configuration (new permissions) restarts NATS, which reads it at start.
pub const CONFIG_HASH_ANNOTATION: &str = "souk.dev/config-hash";

/// Every user of the managed NATS, the administrator first.
pub fn users() -> impl Iterator<Item = &'static str> {
    std::iter::once(ADMIN_USER).chain(BUS_USERS.iter().map(|user| user.name))
}

/// The key of the generated Secret holding `user`'s password (what its service reads).
pub fn password_key(user: &str) -> String {
    user.to_owned()
}

/// The key of the generated Secret holding `user`'s bcrypt hash (what NATS reads).
pub fn hash_key(user: &str) -> String {
    format!("{user}.bcrypt")
}

/// The NATS configuration: ports, JetStream's store, and the users of `souk_contract::bus`,
/// each password a reference to an environment variable of the NATS pod.
pub fn config(shop: &Shop) -> String {
    let variables: BTreeMap<&str, String> = users()
        .map(|user| (user, bus::password_variable(user)))
        .collect();
    let authorization = bus::server_authorization(&shop.name_any(), |user| {
        Password::Environment(variables.get(user).map_or("", String::as_str))
    });
    format!(
        "# Rendered by souk-operator from souk_contract::bus; passwords are bcrypt hashes from the\n\
         # environment (Secret {secret}).\n\
         port: {CLIENT_PORT}\n\
         http_port: {MONITOR_PORT}\n\
         jetstream {{ store_dir: \"{DATA_DIR}\" }}\n\
         {authorization}",
        secret = names::nats(shop),
    )
}

/// The ConfigMap holding [`config`].
pub fn config_map(shop: &Shop) -> ConfigMap {
    ConfigMap {
        metadata: metadata(shop, names::nats(shop), COMPONENT),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), config(shop))])),
        ..ConfigMap::default()
    }
}

/// `SOUK_NATS_USER` and `SOUK_NATS_PASSWORD` of `service`, when it uses the bus: its own user
/// from the generated Secret when the shop's NATS is managed, or the external NATS's user from
/// the Secret the spec names (none without one).
pub fn credentials_env(shop: &Shop, service: Component) -> Vec<EnvVar> {
    let user = service.name();
    if !BUS_USERS.iter().any(|u| u.name == user) {
        return Vec::new();
    }
    match shop.spec.nats.resolve() {
        Nats::Managed(_) => vec![
            env(souk_contract::env::NATS_USER, user),
            secret_env(
                souk_contract::env::NATS_PASSWORD,
                &names::nats(shop),
                &password_key(user),
            ),
        ],
        Nats::External(ExternalNats {
            credentials_secret_name: Some(secret),
            ..
        }) => vec![
            secret_env(souk_contract::env::NATS_USER, secret, "user"),
            secret_env(souk_contract::env::NATS_PASSWORD, secret, "password"),
        ],
        Nats::External(_) => Vec::new(),
    }
}

/// Adds [`credentials_env`] to every container of `deployment` (the service and its relayer,
/// which publishes as its service), unless a container already sets either variable: the
/// service's own `env` wins, whole (half of each would mix two users' credentials; a
/// duplicate name would make the apply fail).
pub fn add_credentials(deployment: &mut Deployment, shop: &Shop, service: Component) {
    let credentials = credentials_env(shop, service);
    let Some(pod) = deployment
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    else {
        return;
    };
    for container in &mut pod.containers {
        let vars = container.env.get_or_insert_with(Vec::new);
        if !vars
            .iter()
            .any(|v| credentials.iter().any(|c| c.name == v.name))
        {
            vars.extend(credentials.iter().cloned());
        }
    }
}

/// The NATS Service.
pub fn service(shop: &Shop) -> Service {
    Service {
        metadata: metadata(shop, names::nats(shop), COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector(shop, COMPONENT)),
            ports: Some(vec![
                ServicePort {
                    name: Some("client".to_owned()),
                    port: CLIENT_PORT,
                    target_port: Some(IntOrString::String("client".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("monitor".to_owned()),
                    port: MONITOR_PORT,
                    target_port: Some(IntOrString::String("monitor".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The NATS StatefulSet.
pub fn stateful_set(shop: &Shop, nats: &ManagedNats) -> StatefulSet {
    let name = names::nats(shop);
    let health = |path: &str, period, failures| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("monitor".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container = Container {
        name: "nats".to_owned(),
        image: Some(nats.image.clone()),
        args: Some(vec!["-c".to_owned(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        env: Some(
            users()
                .map(|user| secret_env(&bus::password_variable(user), &name, &hash_key(user)))
                .collect(),
        ),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("monitor", MONITOR_PORT),
        ]),
        resources: Some(default_resources("50m", "64Mi", "512Mi")),
        startup_probe: Some(health("/healthz", 2, 30)),
        readiness_probe: Some(health("/healthz?js-enabled-only=true", 5, 3)),
        liveness_probe: Some(health("/healthz?js-enabled-only=true", 10, 6)),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            mount("data", DATA_DIR),
            VolumeMount {
                name: "config".to_owned(),
                mount_path: CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let config_hash = {
        use sha2::{Digest, Sha256};
        Sha256::digest(config(shop).as_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    StatefulSet {
        metadata: metadata(shop, name.clone(), COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(selector(shop, COMPONENT)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(unversioned_labels(shop, COMPONENT)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".to_owned(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: names::nats(shop),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    security_context: Some(restricted_pod_security(NATS_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(
                shop,
                COMPONENT,
                "data",
                &nats.storage_size,
                nats.storage_class_name.as_deref(),
            )]),
            persistent_volume_claim_retention_policy: Some(retention()),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}
