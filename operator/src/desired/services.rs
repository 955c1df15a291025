//! The Deployment and Service of each of the six services, with the relayer sidecar in the pods
//! whose service writes an outbox (product, order).
//!
//! The container contract (args, ports, environment) is the one the `souk` binary reads; see the
//! crate documentation.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction, KeyToPath, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use souk_contract::{command, defaults, env as settings, file};

use super::{
    labels, metadata, names, restricted_container_security, restricted_pod_security, selector,
};
use crate::shop::{Component, Database, Nats, Shop};

/// The uid the `souk` image runs as.
pub const SOUK_UID: i64 = 65532;
/// gRPC port of every service but the gateway.
pub const GRPC_PORT: i32 = souk_contract::port::GRPC as i32;
/// HTTP port of the gateway container.
pub const HTTP_PORT: i32 = souk_contract::port::HTTP as i32;
/// Port of the gateway Service.
pub const GATEWAY_SERVICE_PORT: i32 = 80;
/// Metrics port of the service container.
pub const METRICS_PORT: i32 = souk_contract::port::METRICS as i32;
/// Metrics port of the relayer sidecar.
pub const RELAYER_METRICS_PORT: i32 = souk_contract::port::RELAYER_METRICS as i32;
/// Where the JWT key pair is mounted.
pub const JWT_DIR: &str = "/etc/souk/jwt";

/// The Service of `service`: port 80 → `http` for the gateway, and nothing else: the gateway
/// Service is what the Ingress, a LoadBalancer or a NodePort publishes, and metrics are not for
/// the public (Prometheus scrapes the pods' `metrics` port). The others: 50051 (`grpc`) and their
/// metrics ports, inside the cluster.
pub fn service(shop: &Shop, service: Component) -> Service {
    let mut ports = vec![if service == Component::Gateway {
        service_port("http", GATEWAY_SERVICE_PORT, "http")
    } else {
        service_port("grpc", GRPC_PORT, "grpc")
    }];
    if service != Component::Gateway {
        ports.push(service_port("metrics", METRICS_PORT, "metrics"));
    }
    if service.has_relayer() {
        ports.push(service_port(
            "relay-metrics",
            RELAYER_METRICS_PORT,
            "relay-metrics",
        ));
    }
    let type_ = if service == Component::Gateway {
        shop.spec.gateway.service_type.as_str()
    } else {
        "ClusterIP"
    };
    Service {
        metadata: metadata(shop, names::service(shop, service), service.name()),
        spec: Some(ServiceSpec {
            type_: Some(type_.to_owned()),
            selector: Some(selector(shop, service.name())),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The headless Service of a gRPC service (`<shop>-<service>-grpc`, no cluster IP): its name
/// resolves to the address of every ready pod, and the callers' channels balance their calls
/// over those addresses and resolve again as pods come and go (`souk_shared::discovery`). A
/// gRPC channel is one HTTP/2 connection, and a ClusterIP Service balances per connection:
/// through it, every call of a caller would go to one replica and the others would sit idle.
///
/// The ClusterIP Service [`service`] stays beside it: the metrics ports, port-forwards and
/// people use it, pods of an earlier version call through it during an upgrade, and its cluster
/// IP cannot be changed to `None` in place.
pub fn grpc_service(shop: &Shop, service: Component) -> Service {
    Service {
        metadata: metadata(shop, names::grpc_service(shop, service), service.name()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some("None".to_owned()),
            // Only ready pods: readiness follows the service's database.
            publish_not_ready_addresses: Some(false),
            selector: Some(selector(shop, service.name())),
            ports: Some(vec![service_port("grpc", GRPC_PORT, "grpc")]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// What the other services are told to call `peer` at: its headless Service.
pub fn grpc_url(shop: &Shop, peer: Component) -> String {
    format!("http://{}:{GRPC_PORT}", names::grpc_service(shop, peer))
}

fn service_port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(target.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The Deployment of `service`.
pub fn deployment(shop: &Shop, service: Component) -> Deployment {
    let settings = shop.spec.services.get(service).cloned().unwrap_or_default();
    let mut containers = vec![service_container(
        shop,
        service,
        &settings.env,
        settings.resources,
    )];
    if service.has_relayer() {
        containers.push(relayer_container(shop, service));
    }
    let pod_labels = Some(labels(shop, service.name()));
    Deployment {
        metadata: metadata(shop, names::service(shop, service), service.name()),
        spec: Some(DeploymentSpec {
            replicas: settings.replicas,
            selector: LabelSelector {
                match_labels: Some(selector(shop, service.name())),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: pod_labels,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    volumes: Some(vec![jwt_volume(shop, service)]),
                    security_context: Some(restricted_pod_security(SOUK_UID)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn service_container(
    shop: &Shop,
    service: Component,
    extra_env: &[EnvVar],
    resources: Option<ResourceRequirements>,
) -> Container {
    let (main_port, probes) = if service == Component::Gateway {
        (
            container_port("http", HTTP_PORT),
            // Ready as soon as it serves: the gateway answers 503 for a route whose service is
            // down, and the others work meanwhile. Its /readyz (every upstream serving) is for
            // people and `helm test`; as a readiness probe it would take the whole API out of
            // the Service for one upstream, and never let in a shop with a service at 0 replicas.
            Probes {
                startup: http_probe("/healthz", 2, 30),
                liveness: http_probe("/healthz", 10, 3),
                readiness: http_probe("/healthz", 5, 3),
            },
        )
    } else {
        (
            container_port("grpc", GRPC_PORT),
            // Readiness follows the database (the service's gRPC health); startup and liveness
            // ask only whether the process answers (the `liveness` health service, serving from
            // the moment the port opens), so a database that is down, at start or later, takes
            // pods out of the Service without restarting them.
            Probes {
                startup: grpc_probe(Some(souk_contract::LIVENESS_HEALTH_SERVICE), 2, 30),
                liveness: grpc_probe(Some(souk_contract::LIVENESS_HEALTH_SERVICE), 10, 3),
                readiness: grpc_probe(None, 5, 3),
            },
        )
    };
    Container {
        name: service.name().to_owned(),
        image: Some(shop.spec.image.reference()),
        image_pull_policy: Some(shop.spec.image.pull_policy.as_str().to_owned()),
        args: Some(vec![command::SERVE.to_owned(), service.name().to_owned()]),
        ports: Some(vec![main_port, container_port("metrics", METRICS_PORT)]),
        env: Some(merge_env(service_env(shop, service), extra_env)),
        resources: Some(resources.unwrap_or_else(|| {
            default_resources(
                "50m",
                &mebibytes(defaults::SERVICE_MEMORY_REQUEST_MIB),
                &mebibytes(defaults::SERVICE_MEMORY_LIMIT_MIB),
            )
        })),
        startup_probe: Some(probes.startup),
        liveness_probe: Some(probes.liveness),
        readiness_probe: Some(probes.readiness),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "jwt".to_owned(),
            mount_path: JWT_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The relayer sidecar. The service's extra environment is the service container's alone: the
/// relayer is another program, with its own settings.
fn relayer_container(shop: &Shop, service: Component) -> Container {
    let mut vars = common_env(shop, &format!("0.0.0.0:{RELAYER_METRICS_PORT}"));
    vars.push(env(settings::NATS_URL, &nats_url(shop)));
    vars.push(database_url_env(shop, service));
    Container {
        name: "relayer".to_owned(),
        image: Some(shop.spec.image.reference()),
        image_pull_policy: Some(shop.spec.image.pull_policy.as_str().to_owned()),
        args: Some(vec![command::RELAY.to_owned(), service.name().to_owned()]),
        ports: Some(vec![container_port("relay-metrics", RELAYER_METRICS_PORT)]),
        env: Some(vars),
        resources: Some(default_resources(
            "10m",
            &mebibytes(defaults::RELAYER_MEMORY_REQUEST_MIB),
            &mebibytes(defaults::RELAYER_MEMORY_LIMIT_MIB),
        )),
        // The relayer serves only /metrics; a process that stops answering it is restarted.
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".to_owned()),
                port: IntOrString::String("relay-metrics".to_owned()),
                ..HTTPGetAction::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    }
}

/// What every `souk` process reads: the shop's name, log format and metrics address.
fn common_env(shop: &Shop, metrics_addr: &str) -> Vec<EnvVar> {
    vec![
        env(settings::SHOP_NAME, &shop.name_any()),
        env(settings::LOG_FORMAT, "json"),
        env(settings::METRICS_ADDR, metrics_addr),
    ]
}

/// The environment of the service container, before the user's extra variables.
fn service_env(shop: &Shop, service: Component) -> Vec<EnvVar> {
    let mut vars = common_env(shop, &format!("0.0.0.0:{METRICS_PORT}"));
    if service == Component::Gateway {
        vars.push(env(settings::HTTP_ADDR, &format!("0.0.0.0:{HTTP_PORT}")));
    } else {
        vars.push(env(settings::GRPC_ADDR, &format!("0.0.0.0:{GRPC_PORT}")));
    }
    if service.has_database() {
        vars.push(database_url_env(shop, service));
    }
    if service.uses_bus() {
        vars.push(env(settings::NATS_URL, &nats_url(shop)));
    }
    for &peer in service.calls() {
        vars.push(env(
            settings::service_url(peer.name()).unwrap_or_default(),
            &grpc_url(shop, peer),
        ));
    }
    vars.push(env(
        settings::JWT_PUBLIC_KEY_FILE,
        &format!("{JWT_DIR}/{}", file::JWT_PUBLIC_KEY),
    ));
    if signs_tokens(service) {
        vars.push(env(
            settings::JWT_PRIVATE_KEY_FILE,
            &format!("{JWT_DIR}/{}", file::JWT_PRIVATE_KEY),
        ));
        vars.push(env(
            settings::TOKEN_TTL_SECONDS,
            &shop.spec.token_ttl_seconds.to_string(),
        ));
    }
    if service == Component::User
        && let Some(admin) = &shop.spec.admin_secret_name
    {
        vars.push(secret_env(settings::ADMIN_EMAIL, admin, "email"));
        vars.push(secret_env(settings::ADMIN_PASSWORD, admin, "password"));
    }
    if service == Component::Payment {
        vars.push(env(
            settings::PAYMENT_DECLINE_ABOVE_CENTS,
            &shop.spec.payment_decline_above_cents.to_string(),
        ));
    }
    vars
}

/// The URL of the shop's NATS: the external one, or the managed Service.
pub fn nats_url(shop: &Shop) -> String {
    match shop.spec.nats.resolve() {
        Nats::External(external) => external.url.trim().to_owned(),
        Nats::Managed(_) => format!("nats://{}:{}", names::nats(shop), super::nats::CLIENT_PORT),
    }
}

/// `SOUK_<SERVICE>_DATABASE_URL`, from the managed database's Secret or the external one.
fn database_url_env(shop: &Shop, service: Component) -> EnvVar {
    let name = settings::database_url(service.name()).unwrap_or_default();
    match shop.spec.databases.resolve(service) {
        Database::Managed(_) => secret_env(name, &names::database(shop, service), "url"),
        Database::External(external) => secret_env(name, &external.secret_name, &external.key),
    }
}

/// The user's variables replace the operator's of the same name, in place; new ones follow.
/// (Duplicate names would make the server-side apply fail.)
fn merge_env(mut base: Vec<EnvVar>, extra: &[EnvVar]) -> Vec<EnvVar> {
    for var in extra {
        match base.iter_mut().find(|v| v.name == var.name) {
            Some(existing) => *existing = var.clone(),
            None => base.push(var.clone()),
        }
    }
    base
}

/// Whether a service signs tokens: the user service its users' access tokens, the order
/// service the short-lived service tokens of the payments its saga makes.
fn signs_tokens(service: Component) -> bool {
    matches!(service, Component::User | Component::Order)
}

/// The JWT key pair, read-only; only the services that sign see the private key.
fn jwt_volume(shop: &Shop, service: Component) -> Volume {
    let item = |key: &str| KeyToPath {
        key: key.to_owned(),
        path: key.to_owned(),
        mode: None,
    };
    let mut items = vec![item(file::JWT_PUBLIC_KEY)];
    if signs_tokens(service) {
        items.push(item(file::JWT_PRIVATE_KEY));
    }
    Volume {
        name: "jwt".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(names::jwt_secret(shop)),
            items: Some(items),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

struct Probes {
    startup: Probe,
    liveness: Probe,
    readiness: Probe,
}

fn grpc_probe(service: Option<&str>, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: GRPC_PORT,
            service: service.map(str::to_owned),
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

pub(crate) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// A quantity of memory in MiB, as Kubernetes writes it.
fn mebibytes(mib: u32) -> String {
    format!("{mib}Mi")
}

pub(crate) fn default_resources(
    cpu: &str,
    memory: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

pub(crate) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

pub(crate) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}
