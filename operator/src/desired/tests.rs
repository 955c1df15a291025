//! Unit tests of the desired state for representative shops.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, Service};

use super::*;
use crate::shop::{Component, DatabaseSpec, ManagedDatabase, ServiceType, Shop};

fn deployment(desired: &Desired, name: &str) -> Deployment {
    desired
        .children
        .iter()
        .find_map(|c| match c {
            Child::Deployment(d) if d.name_any() == name => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn stateful_set(desired: &Desired, name: &str) -> Option<StatefulSet> {
    desired.children.iter().find_map(|c| match c {
        Child::StatefulSet(s) if s.name_any() == name => Some(s.clone()),
        _ => None,
    })
}

fn service(desired: &Desired, name: &str) -> Service {
    desired
        .children
        .iter()
        .find_map(|c| match c {
            Child::Service(s) if s.name_any() == name => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn containers(deployment: &Deployment) -> Vec<Container> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.clone())
        .unwrap_or_default()
}

fn env_of(container: &Container) -> Vec<EnvVar> {
    container.env.clone().unwrap_or_default()
}

fn value(container: &Container, name: &str) -> Option<String> {
    env_of(container)
        .into_iter()
        .find(|v| v.name == name)
        .and_then(|v| v.value)
}

fn secret_ref(container: &Container, name: &str) -> Option<(String, String)> {
    env_of(container)
        .into_iter()
        .find(|v| v.name == name)
        .and_then(|v| v.value_from)
        .and_then(|f| f.secret_key_ref)
        .map(|r| (r.name, r.key))
}

fn built(shop: &Shop) -> Desired {
    desired(shop).expect("a valid shop")
}

#[test]
fn the_default_shop_needs_everything_in_order() {
    let desired = built(&Shop::test());
    let order: Vec<String> = desired
        .children
        .iter()
        .map(|c| format!("{}/{}", c.kind(), c.name()))
        .collect();
    let mut expected = Vec::new();
    for service in ["user", "product", "cart", "order", "payment"] {
        expected.push(format!("Service/demo-{service}-db"));
        expected.push(format!("StatefulSet/demo-{service}-db"));
    }
    expected.push("Service/demo-nats".into());
    expected.push("StatefulSet/demo-nats".into());
    for service in ["gateway", "user", "product", "cart", "order", "payment"] {
        expected.push(format!("Service/demo-{service}"));
        if service != "gateway" {
            expected.push(format!("Service/demo-{service}-grpc"));
        }
        expected.push(format!("Deployment/demo-{service}"));
    }
    assert_eq!(order, expected);

    let secrets: Vec<&str> = desired.generated_secrets.iter().map(|s| s.name()).collect();
    assert_eq!(
        secrets,
        [
            "demo-jwt",
            "demo-user-db",
            "demo-product-db",
            "demo-cart-db",
            "demo-order-db",
            "demo-payment-db"
        ]
    );
}

#[test]
fn every_child_has_the_owner_reference_and_the_standard_labels() {
    let shop = Shop::test();
    for child in built(&shop).children {
        let json = child.to_json().expect("json");
        let meta = &json["metadata"];
        let owner = &meta["ownerReferences"][0];
        assert_eq!(owner["kind"], "Shop", "{}", child.name());
        assert_eq!(owner["uid"], shop.metadata.uid.clone().unwrap_or_default());
        assert_eq!(owner["controller"], true);
        assert_eq!(meta["namespace"], "default");
        for label in [
            "name",
            "instance",
            "component",
            "part-of",
            "managed-by",
            "version",
        ] {
            assert!(
                meta["labels"][format!("app.kubernetes.io/{label}")].is_string(),
                "{} lacks app.kubernetes.io/{label}",
                child.name()
            );
        }
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "demo");
    }
}

#[test]
fn every_container_runs_unprivileged_on_a_read_only_root() {
    for child in built(&Shop::test()).children {
        let pod = match &child {
            Child::Deployment(d) => d.spec.as_ref().and_then(|s| s.template.spec.clone()),
            Child::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.template.spec.clone()),
            _ => continue,
        }
        .expect("pod spec");
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        for container in &pod.containers {
            let security = container
                .security_context
                .clone()
                .expect("security context");
            assert_eq!(
                security.read_only_root_filesystem,
                Some(true),
                "{}",
                child.name()
            );
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(
                security.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_owned()])
            );
            assert!(container.resources.is_some(), "{}", child.name());
            assert!(
                container.liveness_probe.is_some(),
                "{}/{}",
                child.name(),
                container.name
            );
        }
    }
}

#[test]
fn services_get_the_container_contract() {
    let shop = Shop::test();
    let desired = built(&shop);
    for service in Component::ALL {
        let deployment = deployment(&desired, &format!("demo-{service}"));
        let main = &containers(&deployment)[0];
        assert_eq!(
            main.args,
            Some(vec!["serve".to_owned(), service.name().to_owned()])
        );
        assert_eq!(
            main.image.as_deref(),
            Some(format!("souk:{}", env!("CARGO_PKG_VERSION")).as_str())
        );
        assert_eq!(value(main, "SOUK_SHOP_NAME").as_deref(), Some("demo"));
        assert_eq!(value(main, "SOUK_LOG_FORMAT").as_deref(), Some("json"));
        assert_eq!(
            value(main, "SOUK_METRICS_ADDR").as_deref(),
            Some("0.0.0.0:9090")
        );
        // Each service is given what it reads, and nothing else (`souk serve <service>`
        // offers only its own settings; the souk crate's contract test parses these).
        assert_eq!(
            value(main, "SOUK_NATS_URL").as_deref(),
            service.uses_bus().then_some("nats://demo-nats:4222"),
            "{service}"
        );
        assert_eq!(
            value(main, "SOUK_ORDER_URL").as_deref(),
            (service == Component::Gateway).then_some("http://demo-order-grpc:50051"),
            "{service}"
        );
        assert_eq!(
            value(main, "SOUK_TOKEN_TTL_SECONDS").as_deref(),
            matches!(service, Component::User | Component::Order).then_some("900"),
            "{service}"
        );
        assert_eq!(
            value(main, "SOUK_JWT_PUBLIC_KEY_FILE").as_deref(),
            Some("/etc/souk/jwt/public.pem")
        );
        let database = format!("SOUK_{}_DATABASE_URL", service.name().to_uppercase());
        if service.has_database() {
            assert_eq!(
                secret_ref(main, &database),
                Some((format!("demo-{service}-db"), "url".to_owned()))
            );
            assert_eq!(
                value(main, "SOUK_GRPC_ADDR").as_deref(),
                Some("0.0.0.0:50051")
            );
            let probe = main
                .readiness_probe
                .clone()
                .and_then(|p| p.grpc)
                .expect("gRPC probe");
            assert_eq!(probe.port, 50051);
            assert_eq!(probe.service, None, "readiness follows the database");
            let liveness = main
                .liveness_probe
                .clone()
                .and_then(|p| p.grpc)
                .expect("gRPC liveness probe");
            assert_eq!(
                liveness.service.as_deref(),
                Some(souk_contract::LIVENESS_HEALTH_SERVICE),
                "liveness must not follow the database: an outage would restart every pod"
            );
            let startup = main
                .startup_probe
                .clone()
                .and_then(|p| p.grpc)
                .expect("gRPC startup probe");
            assert_eq!(
                startup.service.as_deref(),
                Some(souk_contract::LIVENESS_HEALTH_SERVICE),
                "startup must not wait for the database: a late one would restart the pod"
            );
        } else {
            assert_eq!(secret_ref(main, &database), None);
            assert_eq!(
                value(main, "SOUK_HTTP_ADDR").as_deref(),
                Some("0.0.0.0:8080")
            );
            let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.clone().and_then(|p| p.http_get).and_then(|h| h.path)
            };
            assert_eq!(
                path(&main.readiness_probe).as_deref(),
                Some("/healthz"),
                "the gateway is ready when it serves, whatever one upstream does"
            );
            assert_eq!(path(&main.liveness_probe).as_deref(), Some("/healthz"));
        }
        let names: Vec<String> = env_of(main).into_iter().map(|v| v.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "duplicate env in {service}");
        assert_eq!(
            value(main, "SOUK_PAYMENT_DECLINE_ABOVE_CENTS").is_some(),
            service == Component::Payment
        );
        assert_eq!(
            value(main, "SOUK_JWT_PRIVATE_KEY_FILE").is_some(),
            matches!(service, Component::User | Component::Order),
            "only the user and order services sign"
        );
    }
}

#[test]
fn product_and_order_pods_carry_the_relayer() {
    let desired = built(&Shop::test());
    for service in Component::ALL {
        let containers = containers(&deployment(&desired, &format!("demo-{service}")));
        let relayer = containers.iter().find(|c| c.name == "relayer");
        assert_eq!(relayer.is_some(), service.has_relayer(), "{service}");
        if let Some(relayer) = relayer {
            assert_eq!(
                relayer.args,
                Some(vec!["relay".to_owned(), service.name().to_owned()])
            );
            assert_eq!(
                value(relayer, "SOUK_METRICS_ADDR").as_deref(),
                Some("0.0.0.0:9091")
            );
            let database = format!("SOUK_{}_DATABASE_URL", service.name().to_uppercase());
            assert_eq!(
                secret_ref(relayer, &database),
                Some((format!("demo-{service}-db"), "url".to_owned()))
            );
        }
    }
}

#[test]
fn services_expose_their_ports() {
    let shop = Shop::test();
    let desired = built(&shop);
    let ports = |name: &str| -> Vec<(String, i32)> {
        service(&desired, name)
            .spec
            .and_then(|s| s.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect()
    };
    assert_eq!(
        ports("demo-gateway"),
        [("http".into(), 80)],
        "the gateway Service is what gets published: no metrics port"
    );
    assert_eq!(
        ports("demo-cart"),
        [("grpc".into(), 50051), ("metrics".into(), 9090)]
    );
    assert_eq!(
        ports("demo-order"),
        [
            ("grpc".into(), 50051),
            ("metrics".into(), 9090),
            ("relay-metrics".into(), 9091)
        ]
    );
    assert_eq!(ports("demo-user-db"), [("postgres".into(), 5432)]);
    assert_eq!(ports("demo-nats")[0], ("client".into(), 4222));
}

#[test]
fn each_grpc_service_has_a_headless_service_its_callers_are_given() {
    let shop = Shop::test();
    let desired = built(&shop);
    for peer in Component::WITH_DATABASE {
        let name = format!("demo-{peer}-grpc");
        let spec = service(&desired, &name).spec.expect("spec");
        assert_eq!(
            spec.cluster_ip.as_deref(),
            Some("None"),
            "{name} is headless"
        );
        assert_eq!(spec.publish_not_ready_addresses, Some(false), "{name}");
        assert_eq!(
            spec.selector,
            service(&desired, &format!("demo-{peer}"))
                .spec
                .and_then(|s| s.selector),
            "{name} selects the pods of its service"
        );
        let ports: Vec<_> = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(ports, [("grpc".to_owned(), 50051)], "{name}");
        let setting = souk_contract::env::service_url(peer.name()).expect("a gRPC service");
        for caller in Component::ALL
            .into_iter()
            .filter(|c| c.calls().contains(&peer))
        {
            let main = &containers(&deployment(&desired, &format!("demo-{caller}")))[0];
            assert_eq!(
                value(main, setting).as_deref(),
                Some(format!("http://{name}:50051").as_str()),
                "{caller} calls {peer} through its headless Service"
            );
        }
    }
    assert!(
        desired
            .children
            .iter()
            .all(|c| c.name() != "demo-gateway-grpc"),
        "the gateway serves HTTP, not gRPC"
    );
}

#[test]
fn a_managed_database_is_a_statefulset_with_a_claim_and_its_credentials() {
    let mut shop = Shop::test();
    shop.spec.databases.user = Some(DatabaseSpec {
        managed: Some(ManagedDatabase {
            image: "postgres:17.2-alpine".into(),
            storage_size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into()),
            storage_class_name: Some("fast".into()),
            resources: None,
        }),
        external: None,
    });
    let desired = built(&shop);
    let set = stateful_set(&desired, "demo-user-db").expect("StatefulSet");
    let spec = set.spec.expect("spec");
    let container = &spec.template.spec.as_ref().expect("pod").containers[0];
    assert_eq!(container.image.as_deref(), Some("postgres:17.2-alpine"));
    assert_eq!(
        secret_ref(container, "POSTGRES_PASSWORD"),
        Some(("demo-user-db".into(), "password".into()))
    );
    assert_eq!(value(container, "POSTGRES_DB").as_deref(), Some("user"));
    let claim = &spec.volume_claim_templates.expect("claims")[0];
    let claim_spec = claim.spec.clone().expect("claim spec");
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .and_then(|r| r.requests)
            .map(|r| r["storage"].0.clone()),
        Some("5Gi".into())
    );
    // The others keep the defaults.
    let cart = stateful_set(&desired, "demo-cart-db").expect("cart db");
    let cart_pod = cart.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(
        cart_pod.containers[0].image.as_deref(),
        Some("postgres:17-alpine")
    );
}

#[test]
fn an_external_database_replaces_the_managed_one() {
    let shop = Shop::test().with_external_database(Component::Order, "orders-db");
    let desired = built(&shop);
    assert!(stateful_set(&desired, "demo-order-db").is_none());
    assert!(
        !desired
            .generated_secrets
            .iter()
            .any(|s| s.name() == "demo-order-db")
    );
    assert!(stateful_set(&desired, "demo-user-db").is_some());
    let order = containers(&deployment(&desired, "demo-order"));
    for container in &order {
        assert_eq!(
            secret_ref(container, "SOUK_ORDER_DATABASE_URL"),
            Some(("orders-db".into(), "url".into())),
            "{}",
            container.name
        );
    }
}

#[test]
fn external_nats_replaces_the_managed_one() {
    let shop = Shop::test().with_external_nats("nats://nats.infra:4222");
    let desired = built(&shop);
    assert!(stateful_set(&desired, "demo-nats").is_none());
    let cart = &containers(&deployment(&desired, "demo-cart"))[0];
    assert_eq!(
        value(cart, "SOUK_NATS_URL").as_deref(),
        Some("nats://nats.infra:4222")
    );
}

#[test]
fn replicas_follow_the_spec() {
    let shop = Shop::test()
        .with_replicas(Component::Gateway, 3)
        .with_replicas(Component::Cart, 0);
    let desired = built(&shop);
    let replicas = |name: &str| deployment(&desired, name).spec.and_then(|s| s.replicas);
    assert_eq!(replicas("demo-gateway"), Some(3));
    assert_eq!(replicas("demo-cart"), Some(0));
    assert_eq!(
        replicas("demo-user"),
        None,
        "unset: the Deployment's own count, which an autoscaler may own"
    );
}

#[test]
fn the_users_env_overrides_the_operators_and_comes_after() {
    let mut shop = Shop::test();
    shop.spec.services.user = Some(crate::shop::ServiceSpec {
        replicas: Some(1),
        resources: None,
        env: vec![
            super::services::env("SOUK_LOG_FORMAT", "pretty"),
            super::services::env("SOUK_LOG", "debug"),
        ],
    });
    let desired = built(&shop);
    let user = &containers(&deployment(&desired, "demo-user"))[0];
    assert_eq!(value(user, "SOUK_LOG_FORMAT").as_deref(), Some("pretty"));
    let names: Vec<String> = env_of(user).into_iter().map(|v| v.name).collect();
    assert_eq!(names.iter().filter(|n| *n == "SOUK_LOG_FORMAT").count(), 1);
    assert_eq!(names.last().map(String::as_str), Some("SOUK_LOG"));
}

#[test]
fn the_admin_secret_reaches_only_the_user_service() {
    let shop = Shop::test().with_admin_secret("demo-admin");
    let desired = built(&shop);
    let user = &containers(&deployment(&desired, "demo-user"))[0];
    assert_eq!(
        secret_ref(user, "SOUK_ADMIN_PASSWORD"),
        Some(("demo-admin".into(), "password".into()))
    );
    assert_eq!(
        secret_ref(user, "SOUK_ADMIN_EMAIL"),
        Some(("demo-admin".into(), "email".into()))
    );
    let gateway = &containers(&deployment(&desired, "demo-gateway"))[0];
    assert_eq!(secret_ref(gateway, "SOUK_ADMIN_PASSWORD"), None);
}

#[test]
fn the_gateway_service_type_and_ingress_follow_the_spec() {
    let mut shop = Shop::test().with_ingress("shop.example.com");
    shop.spec.gateway.service_type = ServiceType::LoadBalancer;
    let desired = built(&shop);
    let gateway = service(&desired, "demo-gateway");
    assert_eq!(
        gateway.spec.and_then(|s| s.type_).as_deref(),
        Some("LoadBalancer")
    );
    let Some(Child::Ingress(ingress)) = desired.children.last() else {
        panic!("the Ingress comes last");
    };
    let rule = &ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.clone())
        .expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("shop.example.com"));
    let backend = rule.http.as_ref().expect("http").paths[0]
        .backend
        .service
        .clone()
        .expect("svc");
    assert_eq!(backend.name, "demo-gateway");
    assert_eq!(backend.port.and_then(|p| p.number), Some(80));

    assert!(
        !built(&Shop::test())
            .children
            .iter()
            .any(|c| matches!(c, Child::Ingress(_)))
    );
}

#[test]
fn an_unchanged_shop_gives_identical_objects() {
    let shop = Shop::test()
        .with_replicas(Component::Gateway, 2)
        .with_external_database(Component::Order, "orders-db")
        .with_admin_secret("demo-admin")
        .with_ingress("shop.example.com");
    let first = built(&shop);
    let second = built(&shop.clone());
    assert_eq!(first, second);
    let as_yaml = |d: &Desired| -> Vec<String> {
        d.children
            .iter()
            .map(|c| serde_yaml::to_string(&c.to_json().expect("json")).expect("yaml"))
            .collect()
    };
    assert_eq!(as_yaml(&first), as_yaml(&second));
}

#[test]
fn a_bad_spec_gives_no_objects() {
    let result = desired(&Shop::test().with_replicas(Component::Payment, -3));
    assert_eq!(
        result.map(|d| d.children.len()),
        Err(crate::validate::SpecError::NegativeReplicas {
            service: Component::Payment,
            replicas: -3
        })
    );
}

#[test]
fn what_the_spec_no_longer_needs_is_obsolete() {
    let names = |shop: &Shop| -> Vec<String> {
        obsolete(shop)
            .into_iter()
            .map(|o| format!("{}/{}", o.kind.as_str(), o.name))
            .collect()
    };
    assert_eq!(names(&Shop::test()), ["Ingress/demo-gateway"]);
    assert_eq!(
        names(
            &Shop::test()
                .with_external_database(Component::Order, "orders-db")
                .with_external_nats("nats://nats:4222")
                .with_ingress("shop.example.com")
        ),
        [
            "StatefulSet/demo-order-db",
            "Service/demo-order-db",
            "StatefulSet/demo-nats",
            "Service/demo-nats"
        ]
    );
}

fn templates_of(set: &StatefulSet) -> (serde_json::Value, serde_json::Value) {
    let spec = set.spec.clone().expect("spec");
    (
        serde_json::to_value(&spec.template).expect("template"),
        serde_json::to_value(&spec.volume_claim_templates).expect("claims"),
    )
}

#[test]
fn a_new_image_tag_changes_no_database_or_nats_template() {
    let before = built(&Shop::test());
    let mut shop = Shop::test();
    shop.spec.image.tag = Some("0.2.0".into());
    let after = built(&shop);
    for name in ["demo-user-db", "demo-order-db", "demo-nats"] {
        let old = stateful_set(&before, name).expect("StatefulSet");
        let new = stateful_set(&after, name).expect("StatefulSet");
        assert_eq!(
            templates_of(&old),
            templates_of(&new),
            "{name}: claim templates are immutable, and a pod template change restarts the database"
        );
    }
    let gateway = deployment(&after, "demo-gateway");
    let labels = gateway.metadata.labels.expect("labels");
    assert_eq!(labels["app.kubernetes.io/version"], "0.2.0");
}

#[test]
fn an_image_tag_that_cannot_be_a_label_value_is_left_out_of_the_labels() {
    let hex = "a".repeat(64);
    assert_eq!(
        version_label(&hex),
        None,
        "skaffold's 64-hex tags exceed 63"
    );
    assert_eq!(version_label("1.2.3@sha256:abcd").as_deref(), Some("1.2.3"));
    assert_eq!(version_label("0.1.0").as_deref(), Some("0.1.0"));
    assert_eq!(version_label("-dev"), None);
    for tag in [hex.clone(), format!("v1@sha256:{}", "b".repeat(64))] {
        let mut shop = Shop::test();
        shop.spec.image.tag = Some(tag.clone());
        for child in built(&shop).children {
            let json = child.to_json().expect("json");
            let text = json.to_string();
            assert!(
                !text.contains(&format!("\"app.kubernetes.io/version\":\"{tag}\"")),
                "{} carries {tag} as a label",
                child.name()
            );
        }
        let image = containers(&deployment(&built(&shop), "demo-user"))[0]
            .image
            .clone();
        assert_eq!(image, Some(format!("souk:{tag}")));
    }
}

#[test]
fn the_relayer_gets_none_of_the_services_extra_environment() {
    let mut shop = Shop::test();
    shop.spec.services.product = Some(crate::shop::ServiceSpec {
        env: vec![super::services::env("SOUK_LOG", "debug")],
        ..crate::shop::ServiceSpec::default()
    });
    let product = deployment(&built(&shop), "demo-product");
    let all = containers(&product);
    let relayer = all.iter().find(|c| c.name == "relayer").expect("relayer");
    assert_eq!(value(&all[0], "SOUK_LOG").as_deref(), Some("debug"));
    assert_eq!(value(relayer, "SOUK_LOG"), None);
}

#[test]
fn the_secrets_hash_covers_every_secret_a_pod_reads_and_changes_with_them() {
    let shop = Shop::test().with_admin_secret("admin");
    let user = deployment(&built(&shop), "demo-user");
    let read: Vec<String> = secrets_read(&user).into_iter().collect();
    assert_eq!(read, ["admin", "demo-jwt", "demo-user-db"]);
    let contents = |password: &str| {
        read.iter()
            .map(|name| {
                let data = BTreeMap::from([("password".to_owned(), password.as_bytes().to_vec())]);
                (name.clone(), Some(data))
            })
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(secrets_hash(&contents("a")), secrets_hash(&contents("a")));
    assert_ne!(secrets_hash(&contents("a")), secrets_hash(&contents("b")));
    let mut missing = contents("a");
    missing.insert("admin".into(), None);
    assert_ne!(secrets_hash(&contents("a")), secrets_hash(&missing));
}
