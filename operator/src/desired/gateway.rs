//! The gateway's optional Ingress (its Service, whose type the spec chooses, is built with the
//! other services in [`super::services`]).

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::services::GATEWAY_SERVICE_PORT;
use super::{metadata, names};
use crate::shop::{Component, Shop};

/// The Ingress `<shop>-gateway` routing every path of the host to the gateway Service, when the
/// spec asks for one.
pub fn ingress(shop: &Shop) -> Option<Ingress> {
    let spec = shop.spec.gateway.ingress.as_ref()?;
    let gateway = names::service(shop, Component::Gateway);
    let host = spec.host.trim().to_owned();
    Some(Ingress {
        metadata: metadata(shop, gateway.clone(), Component::Gateway.name()),
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: gateway,
                                port: Some(ServiceBackendPort {
                                    number: Some(GATEWAY_SERVICE_PORT),
                                    name: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        status: None,
    })
}

/// Where clients reach the gateway when no load balancer or Ingress says otherwise.
pub fn cluster_address(shop: &Shop, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{GATEWAY_SERVICE_PORT}",
        names::service(shop, Component::Gateway)
    )
}
