//! The managed NATS: a single-node JetStream StatefulSet (`-js`) with a file-storage volume, and
//! its Service on 4222. Meant for development; production shops point at an external NATS.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::postgres::{mount, retention, volume_claim};
use super::services::{container_port, default_resources};
use super::{
    metadata, names, restricted_container_security, restricted_pod_security, selector,
    unversioned_labels,
};
use crate::shop::{ManagedNats, Shop};

/// Client port.
pub const CLIENT_PORT: i32 = 4222;
/// Monitoring port (`/healthz`, `/varz`).
pub const MONITOR_PORT: i32 = 8222;
/// The `component` label.
pub const COMPONENT: &str = "nats";
/// Any unprivileged uid works: NATS writes only to its data volume.
const NATS_UID: i64 = 1000;
const DATA_DIR: &str = "/data";

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
        args: Some(
            [
                "-js",
                "-sd",
                DATA_DIR,
                "-p",
                &CLIENT_PORT.to_string(),
                "-m",
                &MONITOR_PORT.to_string(),
            ]
            .map(str::to_owned)
            .to_vec(),
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
        volume_mounts: Some(vec![mount("data", DATA_DIR)]),
        ..Container::default()
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
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
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
