//! The NetworkPolicies of a shop (issue 13): each managed database is reachable only from its
//! own service's pods, on Postgres' port; a managed NATS only from the shop's pods, on its
//! client port. A database or NATS the shop does not manage (external) gets none: it is not in
//! the cluster's pod network of this shop.
//!
//! Pure like the rest of `desired`; the reconciler applies them before the stores they guard,
//! and deletes the policy of a store that became external.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt as _;

use super::{metadata, names, nats, postgres, selector};
use crate::shop::{Component, Database, Nats, Shop};

/// Every pod of this shop (services, relayers, databases, NATS).
fn shop_pods(shop: &Shop) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "souk".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), shop.name_any()),
    ])
}

fn only_from(
    shop: &Shop,
    name: String,
    component: &str,
    from: BTreeMap<String, String>,
    port: i32,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: metadata(shop, name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(shop, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(from),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".to_owned()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The shop's NetworkPolicies, named after what they protect.
pub fn network_policies(shop: &Shop) -> Vec<NetworkPolicy> {
    let mut policies = Vec::new();
    for service in Component::WITH_DATABASE {
        if let Database::Managed(_) = shop.spec.databases.resolve(service) {
            policies.push(only_from(
                shop,
                names::database(shop, service),
                &postgres::component(service),
                selector(shop, service.name()),
                postgres::PORT,
            ));
        }
    }
    if let Nats::Managed(_) = shop.spec.nats.resolve() {
        policies.push(only_from(
            shop,
            names::nats(shop),
            nats::COMPONENT,
            shop_pods(shop),
            nats::CLIENT_PORT,
        ));
    }
    policies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_labels(policy: &NetworkPolicy) -> BTreeMap<String, String> {
        let spec = policy.spec.as_ref().expect("spec");
        let rules = spec.ingress.as_ref().expect("ingress");
        assert_eq!(rules.len(), 1);
        let peers = rules[0].from.as_ref().expect("from");
        assert_eq!(peers.len(), 1);
        peers[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .expect("pod selector")
    }

    #[test]
    fn each_database_admits_only_its_service_and_nats_only_the_shop() {
        let shop = Shop::test();
        let policies = network_policies(&shop);
        let names: Vec<String> = policies.iter().map(|p| p.name_any()).collect();
        for service in Component::WITH_DATABASE {
            let name = names::database(&shop, service);
            let policy = policies
                .iter()
                .find(|p| p.name_any() == name)
                .unwrap_or_else(|| panic!("{name} missing from {names:?}"));
            let spec = policy.spec.as_ref().expect("spec");
            assert_eq!(
                spec.pod_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone()),
                Some(selector(&shop, &postgres::component(service)))
            );
            assert_eq!(from_labels(policy), selector(&shop, service.name()));
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_owned()][..])
            );
        }
        let nats = policies
            .iter()
            .find(|p| p.name_any() == names::nats(&shop))
            .expect("nats policy");
        assert_eq!(from_labels(nats), shop_pods(&shop));
    }

    #[test]
    fn external_stores_get_no_policy() {
        let shop = Shop::test()
            .with_external_database(Component::User, "user-db-secret")
            .with_external_nats("nats://nats.example:4222");
        let names: Vec<String> = network_policies(&shop)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert!(!names.contains(&names::database(&shop, Component::User)));
        assert!(!names.contains(&names::nats(&shop)));
        assert!(names.contains(&names::database(&shop, Component::Order)));
    }
}
