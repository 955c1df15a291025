//! The shop's status, computed from what the API server answered when the children were applied
//! (a server-side apply returns the whole object, status included). Pure: the clock comes in as
//! an argument, and a condition keeps its `lastTransitionTime` while its status does not change,
//! so reconciling an unchanged, settled shop computes an identical status and patches nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::desired::{Child, gateway, names};
use crate::shop::{Component, ComponentStatus, ServiceType, Shop, ShopStatus};

/// Condition types.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What the applied children say about the shop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Readiness per workload, keyed by component (`gateway`, `user-db`, `nats`).
    pub components: BTreeMap<String, ComponentStatus>,
    /// Workloads that stopped making progress, as messages.
    pub stuck: Vec<String>,
    /// Where the gateway answers, when known.
    pub gateway_address: Option<String>,
    /// The gateway is a LoadBalancer that has no address yet.
    pub waiting_for_load_balancer: bool,
}

/// Reads readiness from the objects as the API server returned them.
pub fn observe(shop: &Shop, namespace: &str, applied: &[Child]) -> Observation {
    let mut observation = Observation::default();
    for child in applied {
        match child {
            Child::Deployment(deployment) => {
                let spec_replicas = deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1);
                let status = deployment.status.clone().unwrap_or_default();
                let rolled_out =
                    caught_up(deployment.metadata.generation, status.observed_generation);
                let ready_replicas = status.ready_replicas.unwrap_or(0);
                let updated = status.updated_replicas.unwrap_or(0);
                observation.components.insert(
                    component_of(child, &deployment.metadata),
                    ComponentStatus {
                        kind: "Deployment".into(),
                        replicas: spec_replicas,
                        ready_replicas,
                        ready: rolled_out
                            && ready_replicas >= spec_replicas
                            && updated >= spec_replicas,
                    },
                );
                for condition in status.conditions.iter().flatten() {
                    if condition.type_ == "Progressing"
                        && condition.status == "False"
                        && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
                    {
                        observation.stuck.push(format!(
                            "Deployment {} is not progressing ({}); see `kubectl describe deployment {}` and its pods' events",
                            deployment.name_any(),
                            condition.message.as_deref().unwrap_or("progress deadline exceeded"),
                            deployment.name_any(),
                        ));
                    }
                }
            }
            Child::StatefulSet(set) => {
                let spec_replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = set.status.clone().unwrap_or_default();
                let rolled_out = caught_up(set.metadata.generation, status.observed_generation);
                let ready_replicas = status.ready_replicas.unwrap_or(0);
                let updated = status.updated_replicas.unwrap_or(0);
                observation.components.insert(
                    component_of(child, &set.metadata),
                    ComponentStatus {
                        kind: "StatefulSet".into(),
                        replicas: spec_replicas,
                        ready_replicas,
                        ready: rolled_out
                            && ready_replicas >= spec_replicas
                            && updated >= spec_replicas,
                    },
                );
            }
            Child::Service(service)
                if service.name_any() == names::service(shop, Component::Gateway)
                    && shop.spec.gateway.ingress.is_none() =>
            {
                if shop.spec.gateway.service_type == ServiceType::LoadBalancer {
                    let address = service
                        .status
                        .as_ref()
                        .and_then(|s| s.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .and_then(|ingress| ingress.first())
                        .and_then(|i| i.hostname.clone().or_else(|| i.ip.clone()));
                    match address {
                        Some(host) => observation.gateway_address = Some(format!("http://{host}")),
                        None => observation.waiting_for_load_balancer = true,
                    }
                } else {
                    observation.gateway_address = Some(gateway::cluster_address(shop, namespace));
                }
            }
            Child::Ingress(_) => {
                if let Some(ingress) = &shop.spec.gateway.ingress {
                    let scheme = if ingress.tls_secret_name.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    observation.gateway_address =
                        Some(format!("{scheme}://{}", ingress.host.trim()));
                }
            }
            Child::Service(_) => {}
        }
    }
    observation
}

fn caught_up(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(generation), Some(observed)) => observed >= generation,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn component_of(
    child: &Child,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    meta.labels
        .as_ref()
        .and_then(|labels| labels.get("app.kubernetes.io/component"))
        .cloned()
        .unwrap_or_else(|| child.name())
}

/// The status of a shop whose children were all applied.
pub fn applied(
    shop: &Shop,
    observation: Observation,
    previous: Option<&ShopStatus>,
    now: Timestamp,
) -> ShopStatus {
    let generation = shop.metadata.generation;
    let total = observation.components.len();
    let ready = observation.components.values().filter(|c| c.ready).count();
    let waiting: Vec<String> = observation
        .components
        .iter()
        .filter(|(_, c)| !c.ready)
        .map(|(name, c)| format!("{name} {}/{} ready", c.ready_replicas, c.replicas))
        .collect();
    let gateway = names::service(shop, Component::Gateway);

    let (ready_condition, progressing) = if !waiting.is_empty() {
        let message = format!("waiting for {}", waiting.join(", "));
        (
            (false, "ComponentsNotReady", message.clone()),
            (true, "RollingOut", message),
        )
    } else if observation.waiting_for_load_balancer {
        let message = format!(
            "the gateway Service {gateway} has no load-balancer address yet; check that the cluster provisions LoadBalancer Services, or set spec.gateway.serviceType to ClusterIP or NodePort"
        );
        (
            (false, "WaitingForLoadBalancer", message.clone()),
            (true, "WaitingForLoadBalancer", message),
        )
    } else {
        let address = observation
            .gateway_address
            .as_deref()
            .unwrap_or("its Service");
        (
            (
                true,
                "AllComponentsReady",
                format!("all {total} components are ready; the gateway answers at {address}"),
            ),
            (
                false,
                "RolloutComplete",
                format!("generation {} is rolled out", generation.unwrap_or(0)),
            ),
        )
    };
    let degraded = if observation.stuck.is_empty() {
        (
            false,
            "AsExpected",
            "every object of the spec is applied".to_owned(),
        )
    } else {
        (true, "RolloutStuck", observation.stuck.join("; "))
    };

    let old = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    ShopStatus {
        observed_generation: generation,
        conditions: vec![
            condition(old, READY, ready_condition, generation, now),
            condition(old, PROGRESSING, progressing, generation, now),
            condition(old, DEGRADED, degraded, generation, now),
        ],
        components: observation.components,
        ready_components: Some(format!("{ready}/{total}")),
        gateway_address: observation.gateway_address,
    }
}

/// The status of a shop the operator could not apply (`reason` and `message` say why). The
/// components and gateway address last seen are kept: nothing was changed.
pub fn failed(
    shop: &Shop,
    reason: &str,
    message: &str,
    previous: Option<&ShopStatus>,
    now: Timestamp,
) -> ShopStatus {
    let generation = shop.metadata.generation;
    let old = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = vec![
        condition(
            old,
            READY,
            (false, reason, message.to_owned()),
            generation,
            now,
        ),
        condition(
            old,
            PROGRESSING,
            (
                false,
                reason,
                "the operator stopped applying this shop until the problem is fixed".to_owned(),
            ),
            generation,
            now,
        ),
        condition(
            old,
            DEGRADED,
            (true, reason, message.to_owned()),
            generation,
            now,
        ),
    ];
    status
}

fn condition(
    previous: &[Condition],
    type_: &str,
    (status, reason, message): (bool, &str, String),
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}
