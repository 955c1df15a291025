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
            Child::Service(_) | Child::NetworkPolicy(_) | Child::ConfigMap(_) => {}
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
                "the operator cannot apply this generation; see the Degraded condition".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::desired;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
    use k8s_openapi::jiff::SignedDuration;

    /// The desired children of `shop` as the API server would answer, all ready or none.
    fn answered(shop: &Shop, ready: bool) -> Vec<Child> {
        desired(shop)
            .expect("valid")
            .children
            .into_iter()
            .map(|child| match child {
                Child::Deployment(mut d) => {
                    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let n = if ready { replicas } else { 0 };
                    d.metadata.generation = Some(1);
                    d.status = Some(DeploymentStatus {
                        observed_generation: Some(1),
                        ready_replicas: Some(n),
                        updated_replicas: Some(n),
                        ..DeploymentStatus::default()
                    });
                    Child::Deployment(d)
                }
                Child::StatefulSet(mut s) => {
                    let n = if ready { 1 } else { 0 };
                    s.metadata.generation = Some(1);
                    s.status = Some(StatefulSetStatus {
                        observed_generation: Some(1),
                        ready_replicas: Some(n),
                        updated_replicas: Some(n),
                        ..StatefulSetStatus::default()
                    });
                    Child::StatefulSet(s)
                }
                other => other,
            })
            .collect()
    }

    fn conditions(status: &ShopStatus) -> Vec<(String, String, String)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    #[test]
    fn a_shop_with_pods_not_ready_is_progressing() {
        let shop = Shop::test();
        let observation = observe(&shop, "default", &answered(&shop, false));
        let status = applied(&shop, observation, None, Timestamp::now());
        assert_eq!(
            conditions(&status),
            [
                triple(READY, "False", "ComponentsNotReady"),
                triple(PROGRESSING, "True", "RollingOut"),
                triple(DEGRADED, "False", "AsExpected"),
            ]
        );
        assert_eq!(status.ready_components.as_deref(), Some("0/12"));
        assert_eq!(status.observed_generation, Some(1));
        let message = &status.conditions[0].message;
        assert!(message.contains("user-db 0/1 ready"), "{message}");
    }

    #[test]
    fn a_shop_with_every_component_ready_is_ready_with_its_address() {
        let shop = Shop::test().with_replicas(Component::Gateway, 2);
        let observation = observe(&shop, "default", &answered(&shop, true));
        let status = applied(&shop, observation, None, Timestamp::now());
        assert_eq!(
            conditions(&status)[0],
            triple(READY, "True", "AllComponentsReady")
        );
        assert_eq!(
            conditions(&status)[1],
            triple(PROGRESSING, "False", "RolloutComplete")
        );
        assert_eq!(status.ready_components.as_deref(), Some("12/12"));
        assert_eq!(
            status.gateway_address.as_deref(),
            Some("http://demo-gateway.default.svc:80")
        );
        assert_eq!(
            status.components["gateway"],
            ComponentStatus {
                kind: "Deployment".into(),
                replicas: 2,
                ready_replicas: 2,
                ready: true
            }
        );
        assert!(status.components["nats"].ready);
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let shop = Shop::test();
        let earlier = Timestamp::now() - SignedDuration::from_hours(1);
        let first = applied(
            &shop,
            observe(&shop, "default", &answered(&shop, false)),
            None,
            earlier,
        );
        let again = applied(
            &shop,
            observe(&shop, "default", &answered(&shop, false)),
            Some(&first),
            Timestamp::now(),
        );
        assert_eq!(first, again, "a settled shop computes the same status");
        let ready = applied(
            &shop,
            observe(&shop, "default", &answered(&shop, true)),
            Some(&first),
            Timestamp::now(),
        );
        let time = |s: &ShopStatus, t: &str| s.condition(t).map(|c| c.last_transition_time.0);
        assert_ne!(time(&ready, READY), time(&first, READY), "Ready flipped");
        assert_eq!(
            time(&ready, DEGRADED),
            time(&first, DEGRADED),
            "Degraded did not"
        );
    }

    #[test]
    fn a_stuck_rollout_is_degraded_with_the_deployment_named() {
        let shop = Shop::test();
        let mut children = answered(&shop, false);
        for child in &mut children {
            if let Child::Deployment(d) = child
                && d.name_any() == "demo-cart"
                && let Some(status) = d.status.as_mut()
            {
                status.conditions = Some(vec![DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    message: Some("ReplicaSet \"demo-cart-5d8\" has timed out progressing.".into()),
                    ..DeploymentCondition::default()
                }]);
            }
        }
        let status = applied(
            &shop,
            observe(&shop, "default", &children),
            None,
            Timestamp::now(),
        );
        let degraded = status.condition(DEGRADED).expect("Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "RolloutStuck")
        );
        assert!(
            degraded.message.contains("Deployment demo-cart"),
            "{}",
            degraded.message
        );
    }

    #[test]
    fn a_load_balancer_without_address_keeps_the_shop_not_ready() {
        let mut shop = Shop::test();
        shop.spec.gateway.service_type = crate::shop::ServiceType::LoadBalancer;
        let mut children = answered(&shop, true);
        let status = applied(
            &shop,
            observe(&shop, "default", &children),
            None,
            Timestamp::now(),
        );
        assert_eq!(
            conditions(&status)[0],
            triple(READY, "False", "WaitingForLoadBalancer")
        );

        for child in &mut children {
            if let Child::Service(s) = child
                && s.name_any() == "demo-gateway"
            {
                s.status = Some(ServiceStatus {
                    load_balancer: Some(LoadBalancerStatus {
                        ingress: Some(vec![LoadBalancerIngress {
                            ip: Some("203.0.113.7".into()),
                            ..LoadBalancerIngress::default()
                        }]),
                    }),
                    ..ServiceStatus::default()
                });
            }
        }
        let status = applied(
            &shop,
            observe(&shop, "default", &children),
            None,
            Timestamp::now(),
        );
        assert_eq!(
            conditions(&status)[0],
            triple(READY, "True", "AllComponentsReady")
        );
        assert_eq!(
            status.gateway_address.as_deref(),
            Some("http://203.0.113.7")
        );
    }

    #[test]
    fn the_ingress_host_is_the_address() {
        let shop = Shop::test().with_ingress("shop.example.com");
        let status = applied(
            &shop,
            observe(&shop, "default", &answered(&shop, true)),
            None,
            Timestamp::now(),
        );
        assert_eq!(
            status.gateway_address.as_deref(),
            Some("http://shop.example.com")
        );
    }

    #[test]
    fn a_failure_is_degraded_and_keeps_what_was_seen() {
        let shop = Shop::test();
        let before = applied(
            &shop,
            observe(&shop, "default", &answered(&shop, true)),
            None,
            Timestamp::now(),
        );
        let status = failed(
            &shop,
            "InvalidSpec",
            "spec.services.cart.replicas is -1",
            Some(&before),
            Timestamp::now(),
        );
        assert_eq!(
            conditions(&status),
            [
                triple(READY, "False", "InvalidSpec"),
                triple(PROGRESSING, "False", "InvalidSpec"),
                triple(DEGRADED, "True", "InvalidSpec"),
            ]
        );
        assert_eq!(status.components, before.components);
        assert_eq!(
            status.condition(DEGRADED).map(|c| c.message.as_str()),
            Some("spec.services.cart.replicas is -1")
        );
    }
}
