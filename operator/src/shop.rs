//! The `Shop` custom resource (`souk.dev/v1alpha1`): its spec, its status, and the defaults the
//! operator applies. The CRD in `crds/shop.yaml` is generated from these types by `crdgen`, so
//! every default and bound that the API server should enforce is written here, once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the `Shop` resource.
pub const GROUP: &str = "souk.dev";

/// A whole shop: the gateway, five services, their databases, NATS, and the keys that bind them.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) of the kube derive has its own type_; clippy sees repeats"
)]
#[kube(
    group = "souk.dev",
    version = "v1alpha1",
    kind = "Shop",
    namespaced,
    status = "ShopStatus",
    derive = "PartialEq",
    category = "souk",
    doc = "A Souk shop: the operator turns it into the gateway, the services, their databases and NATS.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Components",
        type_ = "string",
        description = "ready components out of all components",
        json_path = ".status.readyComponents"
    ),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        description = "where the REST API answers",
        json_path = ".status.gatewayAddress"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ShopSpec {
    /// The `souk` image every service and relayer runs.
    #[serde(default)]
    pub image: ImageSpec,

    /// Per service: replicas, resources and extra environment.
    #[serde(default)]
    pub services: ServicesSpec,

    /// Per service with a database: a Postgres managed by the operator (the default) or an
    /// external one.
    #[serde(default)]
    pub databases: DatabasesSpec,

    /// NATS JetStream: managed (a single node, for development; the default) or external.
    #[serde(default)]
    pub nats: NatsSpec,

    /// How the gateway is exposed.
    #[serde(default)]
    pub gateway: GatewaySpec,

    /// A Secret with keys `email` and `password`: the administrator the user service creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret_name: Option<String>,

    /// Lifetime of access tokens, in seconds.
    #[serde(default = "default_token_ttl_seconds")]
    #[schemars(range(min = 60))]
    pub token_ttl_seconds: i64,

    /// The payment service declines charges above this amount (cents).
    #[serde(default = "default_payment_decline_above_cents")]
    #[schemars(range(min = 0))]
    pub payment_decline_above_cents: i64,
}

impl Default for ShopSpec {
    /// The spec of `spec: {}`, every default applied.
    fn default() -> Self {
        Self {
            image: ImageSpec::default(),
            services: ServicesSpec::default(),
            databases: DatabasesSpec::default(),
            nats: NatsSpec::default(),
            gateway: GatewaySpec::default(),
            admin_secret_name: None,
            token_ttl_seconds: default_token_ttl_seconds(),
            payment_decline_above_cents: default_payment_decline_above_cents(),
        }
    }
}

/// `souk`'s own default (`souk_contract::defaults`).
fn default_token_ttl_seconds() -> i64 {
    souk_contract::defaults::TOKEN_TTL_SECONDS as i64
}

fn default_payment_decline_above_cents() -> i64 {
    souk_contract::defaults::PAYMENT_DECLINE_ABOVE_CENTS
}

/// The container image of the services.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository (without tag).
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1))]
    pub repository: String,

    /// Image tag; when unset, the operator's own version, so upgrading the operator upgrades
    /// the shops that do not pin one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,

    /// Kubernetes image pull policy.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            tag: None,
            pull_policy: PullPolicy::default(),
        }
    }
}

fn default_repository() -> String {
    "souk".to_owned()
}

impl ImageSpec {
    /// The tag in use: the spec's, or the operator's version.
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or(env!("CARGO_PKG_VERSION"))
    }

    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag())
    }
}

/// When the kubelet pulls the image.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The six services of a shop: the contract's one description of them.
pub use souk_contract::Service as Component;

/// Per-service settings; a service left out gets the defaults.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<ServiceSpec>,
    /// Keys that name no service. The schema prunes them; they only arrive when something got
    /// past it (an old CRD, a file rendered offline), and then the operator reports them.
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl ServicesSpec {
    /// The settings of one service, if given.
    pub fn get(&self, component: Component) -> Option<&ServiceSpec> {
        match component {
            Component::Gateway => self.gateway.as_ref(),
            Component::User => self.user.as_ref(),
            Component::Product => self.product.as_ref(),
            Component::Cart => self.cart.as_ref(),
            Component::Order => self.order.as_ref(),
            Component::Payment => self.payment.as_ref(),
        }
    }

    /// The settings of one service, to change them.
    pub fn get_mut(&mut self, component: Component) -> &mut Option<ServiceSpec> {
        match component {
            Component::Gateway => &mut self.gateway,
            Component::User => &mut self.user,
            Component::Product => &mut self.product,
            Component::Cart => &mut self.cart,
            Component::Order => &mut self.order,
            Component::Payment => &mut self.payment,
        }
    }
}

/// One service's Deployment settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Number of pods. When unset, the operator leaves the Deployment's count alone (1 when it is
    /// created), so that a HorizontalPodAutoscaler can own it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// CPU and memory of the service container; when unset, modest defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment, after (and so overriding) what the operator sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// The database of each service that has one.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabasesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart: Option<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<DatabaseSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<DatabaseSpec>,
    /// Keys that name no service with a database (see [`ServicesSpec::unknown`]).
    #[serde(flatten, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl DatabasesSpec {
    /// The database settings of one service, if given.
    pub fn get(&self, component: Component) -> Option<&DatabaseSpec> {
        match component {
            Component::Gateway => None,
            Component::User => self.user.as_ref(),
            Component::Product => self.product.as_ref(),
            Component::Cart => self.cart.as_ref(),
            Component::Order => self.order.as_ref(),
            Component::Payment => self.payment.as_ref(),
        }
    }

    /// The database settings of one service, to change them (`None` for the gateway).
    pub fn get_mut(&mut self, component: Component) -> Option<&mut Option<DatabaseSpec>> {
        match component {
            Component::Gateway => None,
            Component::User => Some(&mut self.user),
            Component::Product => Some(&mut self.product),
            Component::Cart => Some(&mut self.cart),
            Component::Order => Some(&mut self.order),
            Component::Payment => Some(&mut self.payment),
        }
    }
}

/// Where one service's database lives: set `managed` or `external`, not both (neither means
/// managed with the defaults).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.managed) && has(self.external))",
    "message": "set either managed or external, not both"
}]))]
pub struct DatabaseSpec {
    /// A Postgres StatefulSet run by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedDatabase>,
    /// A database run elsewhere, reached through the URL in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
}

/// A Postgres instance managed by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDatabase {
    /// Postgres image.
    #[serde(default = "default_postgres_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Size of the data volume.
    #[serde(default = "default_storage_size", deserialize_with = "storage_size")]
    #[schemars(schema_with = "quantity_schema")]
    pub storage_size: Quantity,
    /// StorageClass of the data volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// CPU and memory of the Postgres container; when unset, modest defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ManagedDatabase {
    fn default() -> Self {
        Self {
            image: default_postgres_image(),
            storage_size: default_storage_size(),
            storage_class_name: None,
            resources: None,
        }
    }
}

fn default_postgres_image() -> String {
    "postgres:17-alpine".to_owned()
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_owned())
}

/// A size, as Kubernetes writes quantities (`1Gi`, or a number of bytes), and never `null`.
/// k8s-openapi's schema of a Quantity is nullable, and the API server keeps an explicit `null` of a
/// nullable field instead of defaulting it; without `nullable` it prunes the `null` and applies the
/// default, so every stored Shop decodes.
fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // `nullable: false` said outright: kube's schema transform marks every optional
    // int-or-string nullable unless the schema already says.
    // The API server accepts any string for an int-or-string; the rule refuses what is not a
    // quantity, before a StatefulSet would.
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "nullable": false,
        "x-kubernetes-validations": [{
            "rule": "type(self) == int || string(self).matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')",
            "message": "must be a size such as 1Gi, 500Mi or a number of bytes"
        }]
    })
}

/// A storage size, where a `null` (from a Shop stored before the schema said non-nullable, or
/// rendered offline) means the default, like an absent one.
fn storage_size<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Quantity, D::Error> {
    Ok(Option::<Quantity>::deserialize(deserializer)?.unwrap_or_else(default_storage_size))
}

/// A database outside the shop.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// The Secret (in the Shop's namespace) holding the database URL.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// The key of the URL in that Secret.
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_url_key() -> String {
    "url".to_owned()
}

/// The database of one service, once defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Database<'a> {
    Managed(std::borrow::Cow<'a, ManagedDatabase>),
    External(&'a ExternalDatabase),
}

impl DatabasesSpec {
    /// The database of a service, defaults applied: managed unless an external one is given.
    pub fn resolve(&self, component: Component) -> Database<'_> {
        match self.get(component) {
            Some(DatabaseSpec {
                external: Some(external),
                ..
            }) => Database::External(external),
            Some(DatabaseSpec {
                managed: Some(managed),
                ..
            }) => Database::Managed(std::borrow::Cow::Borrowed(managed)),
            _ => Database::Managed(std::borrow::Cow::Owned(ManagedDatabase::default())),
        }
    }
}

/// NATS JetStream: set `managed` or `external`, not both (neither means managed).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.managed) && has(self.external))",
    "message": "set either managed or external, not both"
}]))]
pub struct NatsSpec {
    /// A single-node JetStream run by the operator, for development.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedNats>,
    /// A NATS cluster run elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalNats>,
}

/// A single-node NATS with JetStream, managed by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNats {
    /// NATS image.
    #[serde(default = "default_nats_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Size of the JetStream volume.
    #[serde(default = "default_storage_size", deserialize_with = "storage_size")]
    #[schemars(schema_with = "quantity_schema")]
    pub storage_size: Quantity,
    /// StorageClass of the JetStream volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for ManagedNats {
    fn default() -> Self {
        Self {
            image: default_nats_image(),
            storage_size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

pub use souk_contract::NATS_VERSION;

fn default_nats_image() -> String {
    format!("nats:{NATS_VERSION}-alpine")
}

/// An external NATS server.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalNats {
    /// Its URL (`nats://host:4222` or `tls://host:4222`).
    #[schemars(length(min = 1))]
    pub url: String,
    /// A Secret (in the Shop's namespace) with the keys `user` and `password` that every
    /// service and relayer connects with. Without it they connect with no credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_name: Option<String>,
}

/// NATS once defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Nats<'a> {
    Managed(std::borrow::Cow<'a, ManagedNats>),
    External(&'a ExternalNats),
}

impl NatsSpec {
    /// NATS with defaults applied: managed unless an external one is given.
    pub fn resolve(&self) -> Nats<'_> {
        match (&self.external, &self.managed) {
            (Some(external), _) => Nats::External(external),
            (None, Some(managed)) => Nats::Managed(std::borrow::Cow::Borrowed(managed)),
            (None, None) => Nats::Managed(std::borrow::Cow::Owned(ManagedNats::default())),
        }
    }
}

/// How the gateway is reached.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Type of the gateway Service.
    #[serde(default)]
    pub service_type: ServiceType,
    /// An Ingress in front of the gateway Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

/// Kubernetes Service types the gateway may use.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// An Ingress for the gateway.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name the Ingress answers for.
    #[schemars(length(min = 1))]
    pub host: String,
    /// IngressClass; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// A TLS Secret for the host; plain HTTP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// What the operator last saw of the shop.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShopStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// Readiness of each workload (services, databases, NATS).
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStatus>,

    /// Ready components out of all, such as `12/12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_components: Option<String>,

    /// Where the gateway answers (URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_address: Option<String>,
}

impl ShopStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Readiness of one workload.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Pods wanted.
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
    /// Whether the workload is fully rolled out and ready.
    pub ready: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_committed_crd_is_what_the_types_generate() {
        let generated = serde_yaml::to_string(&Shop::crd()).expect("CRD as YAML");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/shop.yaml");
        let committed = std::fs::read_to_string(path).expect("crds/shop.yaml");
        assert!(
            committed == generated,
            "crds/shop.yaml is stale; run: cargo run -q -p souk-operator --bin crdgen > crds/shop.yaml"
        );
    }

    #[test]
    fn managed_nats_runs_the_version_that_local_set_up_builds() {
        let go_mod = include_str!("../../tools/nats/go.mod");
        let pinned = go_mod
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix("github.com/nats-io/nats-server/v2 v")
            })
            .and_then(|rest| rest.split_whitespace().next())
            .expect("tools/nats/go.mod requires github.com/nats-io/nats-server/v2");
        assert_eq!(
            pinned, NATS_VERSION,
            "tools/nats/go.mod (scripts/setup) and the operator's default NATS image disagree"
        );
        assert_eq!(
            ManagedNats::default().image,
            format!("nats:{pinned}-alpine")
        );
    }

    #[test]
    fn the_crd_carries_defaults_bounds_enums_and_columns() {
        let crd = serde_json::to_value(Shop::crd()).expect("CRD as JSON");
        let version = &crd["spec"]["versions"][0];
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["tokenTtlSeconds"]["default"], 900);
        assert_eq!(spec["tokenTtlSeconds"]["minimum"], 60.0);
        assert_eq!(spec["paymentDeclineAboveCents"]["minimum"], 0.0);
        assert_eq!(
            spec["services"]["properties"]["gateway"]["properties"]["replicas"]["minimum"],
            0.0
        );
        assert_eq!(
            spec["gateway"]["properties"]["serviceType"]["enum"],
            serde_json::json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
        assert_eq!(spec["image"]["properties"]["repository"]["default"], "souk");
        assert_eq!(
            spec["nats"]["properties"]["external"]["required"],
            serde_json::json!(["url"])
        );
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(columns, ["Ready", "Components", "Gateway", "Reason", "Age"]);
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    }

    #[test]
    fn an_empty_spec_means_managed_everything_and_the_operator_version() {
        let spec: ShopSpec = serde_json::from_value(serde_json::json!({})).expect("empty spec");
        assert_eq!(
            spec.image.reference(),
            format!("souk:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(spec.token_ttl_seconds, 900);
        assert_eq!(spec.payment_decline_above_cents, 1_000_000);
        for service in Component::WITH_DATABASE {
            assert!(matches!(
                spec.databases.resolve(service),
                Database::Managed(_)
            ));
        }
        assert!(matches!(spec.nats.resolve(), Nats::Managed(_)));
        assert_eq!(spec.gateway.service_type, ServiceType::ClusterIP);
        assert_eq!(
            spec,
            ShopSpec::default(),
            "Default agrees with the serde defaults"
        );
    }

    #[test]
    fn unknown_service_keys_are_kept_for_the_operator_to_report() {
        let spec: ShopSpec = serde_json::from_value(serde_json::json!({
            "services": {"gateway": {"replicas": 2}, "shipping": {"replicas": 1}}
        }))
        .expect("spec");
        assert_eq!(
            spec.services.gateway.as_ref().and_then(|g| g.replicas),
            Some(2)
        );
        assert!(spec.services.unknown.contains_key("shipping"));
    }

    #[test]
    fn a_null_storage_size_is_the_default_and_the_schema_does_not_let_one_in() {
        let spec: ShopSpec = serde_json::from_value(serde_json::json!({
            "databases": {"user": {"managed": {"storageSize": null}}},
            "nats": {"managed": {"storageSize": null}}
        }))
        .expect("a stored null decodes");
        match spec.databases.resolve(Component::User) {
            Database::Managed(db) => assert_eq!(db.storage_size, default_storage_size()),
            Database::External(_) => panic!("managed"),
        }
        let crd = serde_json::to_value(Shop::crd()).expect("CRD as JSON");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let managed =
            &spec["properties"]["databases"]["properties"]["user"]["properties"]["managed"];
        // Not nullable: the API server prunes an explicit null and applies the default.
        assert_eq!(managed["properties"]["storageSize"]["nullable"], false);
        assert_eq!(managed["properties"]["storageSize"]["default"], "1Gi");
        // And not any string: a rule the API server runs refuses what is no size.
        let rule = managed["properties"]["storageSize"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .expect("a validation rule");
        assert!(rule.contains("matches("), "{rule}");
    }
}
