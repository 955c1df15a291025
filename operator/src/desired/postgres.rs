//! A managed Postgres for one service: a single-replica StatefulSet with its data volume claim
//! template, and its Service. Its credentials Secret (`<shop>-<service>-db`) is generated once by
//! [`super::secrets::database`]; the pod reads user and password from it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::services::{container_port, default_resources, env, secret_env};
use super::{
    metadata, names, restricted_container_security, restricted_pod_security, selector,
    unversioned_labels,
};
use crate::shop::{Component, ManagedDatabase, Shop};

/// Postgres' port.
pub const PORT: i32 = 5432;
/// The uid of `postgres` in the Alpine images (the Debian ones accept any uid too).
pub const POSTGRES_UID: i64 = 70;
/// The role the services connect as.
pub const USERNAME: &str = "souk";
const DATA_DIR: &str = "/var/lib/postgresql/data";

/// The `component` label of a service's database (`user-db`).
pub fn component(service: Component) -> String {
    format!("{service}-db")
}

/// The URL the service connects with (the database is named after the service).
pub fn url(shop: &Shop, service: Component, password: &str) -> String {
    format!(
        "postgres://{USERNAME}:{password}@{}:{PORT}/{service}",
        names::database(shop, service)
    )
}

/// The database's Service.
pub fn service(shop: &Shop, service: Component) -> Service {
    let component = component(service);
    Service {
        metadata: metadata(shop, names::database(shop, service), &component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector(shop, &component)),
            ports: Some(vec![ServicePort {
                name: Some("postgres".to_owned()),
                port: PORT,
                target_port: Some(IntOrString::String("postgres".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The database's StatefulSet. Its volume claim follows the StatefulSet when the shop is deleted.
pub fn stateful_set(shop: &Shop, service: Component, db: &ManagedDatabase) -> StatefulSet {
    let component = component(service);
    let name = names::database(shop, service);
    let ready = |period, failures| Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    USERNAME,
                    "-d",
                    service.name(),
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    };
    let container = Container {
        name: "postgres".to_owned(),
        image: Some(db.image.clone()),
        ports: Some(vec![container_port("postgres", PORT)]),
        env: Some(vec![
            secret_env("POSTGRES_USER", &name, "username"),
            secret_env("POSTGRES_PASSWORD", &name, "password"),
            env("POSTGRES_DB", service.name()),
            env("PGDATA", &format!("{DATA_DIR}/pgdata")),
        ]),
        resources: Some(
            db.resources
                .clone()
                .unwrap_or_else(|| default_resources("100m", "128Mi", "512Mi")),
        ),
        startup_probe: Some(ready(2, 60)),
        readiness_probe: Some(ready(5, 3)),
        liveness_probe: Some(ready(10, 6)),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            mount("data", DATA_DIR),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: metadata(shop, name.clone(), &component),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(selector(shop, &component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(unversioned_labels(shop, &component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("run"), empty_dir("tmp")]),
                    security_context: Some(restricted_pod_security(POSTGRES_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(
                shop,
                &component,
                "data",
                &db.storage_size,
                db.storage_class_name.as_deref(),
            )]),
            persistent_volume_claim_retention_policy: Some(retention()),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Claims are deleted with their StatefulSet (so with the shop), kept when scaled down.
pub(crate) fn retention() -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some("Delete".to_owned()),
        when_scaled: Some("Retain".to_owned()),
    }
}

pub(crate) fn volume_claim(
    shop: &Shop,
    component: &str,
    name: &str,
    size: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    storage_class_name: Option<&str>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(unversioned_labels(shop, component)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class_name.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}
