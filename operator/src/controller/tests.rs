//! The reconciler against a mocked API server: every request is checked, in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;

use super::{Context, Error, RESYNC_MISSING_SECRET, RESYNC_PROGRESSING, RESYNC_READY, reconcile};
use crate::fixtures::{ApiServer, Rollout, within};
use crate::metrics::Metrics;
use crate::shop::{Component, Shop, ShopStatus};
use crate::status::{DEGRADED, PROGRESSING, READY};

/// Runs one reconcile of `shop` against `scenario` (see [`within`] for how an unexpected
/// request fails the test).
async fn reconcile_with<F, Fut>(shop: Shop, scenario: F) -> (Result<Action, Error>, Arc<Metrics>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer>,
{
    let (client, server) = ApiServer::new();
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(client, metrics.clone(), None));
    let both = futures::future::join(reconcile(Arc::new(shop), ctx), scenario(server));
    let (result, _server) = within(both).await;
    (result, metrics)
}

const DB_SERVICES: [&str; 5] = ["user", "product", "cart", "order", "payment"];

fn existing_secret(name: &str) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.data = Some(
        [
            "url",
            "email",
            "password",
            "private.pem",
            "public.pem",
            "username",
        ]
        .into_iter()
        .map(|k| (k.to_owned(), k8s_openapi::ByteString(b"x".to_vec())))
        .collect(),
    );
    secret
}

/// Every child of the default `demo` shop, in the order they must be applied; returns the NATS
/// StatefulSet as applied.
async fn expect_default_children(server: &mut ApiServer, rollout: Rollout) -> serde_json::Value {
    for service in DB_SERVICES {
        server
            .expect_apply("NetworkPolicy", &format!("demo-{service}-db"), rollout)
            .await;
    }
    server
        .expect_apply("NetworkPolicy", "demo-nats", rollout)
        .await;
    for service in DB_SERVICES {
        server
            .expect_apply("Service", &format!("demo-{service}-db"), rollout)
            .await;
        server
            .expect_apply("StatefulSet", &format!("demo-{service}-db"), rollout)
            .await;
    }
    server.expect_apply("ConfigMap", "demo-nats", rollout).await;
    server.expect_apply("Service", "demo-nats", rollout).await;
    let nats = server
        .expect_apply("StatefulSet", "demo-nats", rollout)
        .await;
    for service in ["gateway", "user", "product", "cart", "order", "payment"] {
        server
            .expect_apply("Service", &format!("demo-{service}"), rollout)
            .await;
        if service != "gateway" {
            server
                .expect_apply("Service", &format!("demo-{service}-grpc"), rollout)
                .await;
        }
        server
            .expect_apply("Deployment", &format!("demo-{service}"), rollout)
            .await;
    }
    // No Ingress asked for: one that the shop made earlier would be pruned.
    server.expect_get("Ingress", "demo-gateway", None).await;
    nats
}

fn condition(status: &ShopStatus, type_: &str) -> (String, String) {
    let c = status
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_}"));
    (c.status.clone(), c.reason.clone())
}

/// The status the first reconcile of the default shop writes (children applied, none ready).
async fn first_reconcile() -> ShopStatus {
    let shop = Shop::test();
    let mut status = None;
    let (result, _) = reconcile_with(shop.clone(), |mut server| {
        let status = &mut status;
        async move {
            server.expect_get_secret("demo-jwt", None).await;
            server.expect_create_secret("demo-jwt").await;
            for service in DB_SERVICES {
                let name = format!("demo-{service}-db");
                server.expect_get_secret(&name, None).await;
                server.expect_create_secret(&name).await;
            }
            server.expect_get_secret("demo-nats", None).await;
            let nats = server.expect_create_secret("demo-nats").await;
            let users = nats.string_data.expect("string data");
            for user in ["admin", "product", "cart", "order", "gateway"] {
                assert!(users.contains_key(user), "no password for {user}");
                assert!(
                    users[&format!("{user}.bcrypt")].starts_with("$2a$"),
                    "no bcrypt hash for {user}"
                );
            }
            expect_default_children(&mut server, Rollout::Pending).await;
            *status = Some(server.expect_status_patch(&shop).await);
            let note = server.expect_event("Normal", "SecretsGenerated").await;
            assert_eq!(
                note,
                "generated demo-jwt, demo-user-db, demo-product-db, demo-cart-db, demo-order-db, demo-payment-db, demo-nats"
            );
            server
        }
    })
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(RESYNC_PROGRESSING)
    );
    status.expect("a status patch")
}

#[tokio::test(flavor = "current_thread")]
async fn the_first_reconcile_creates_secrets_then_applies_everything_in_order() {
    let status = first_reconcile().await;
    assert_eq!(
        condition(&status, READY),
        ("False".into(), "ComponentsNotReady".into())
    );
    assert_eq!(
        condition(&status, PROGRESSING),
        ("True".into(), "RollingOut".into())
    );
    assert_eq!(
        condition(&status, DEGRADED),
        ("False".into(), "AsExpected".into())
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.ready_components.as_deref(), Some("0/12"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_reconcile_changes_nothing_and_regenerates_no_secret() {
    let status = first_reconcile().await;
    let shop = Shop::test().with_status(status);
    let (result, _) = reconcile_with(shop, |mut server| async move {
        server
            .expect_get_secret("demo-jwt", Some(existing_secret("demo-jwt")))
            .await;
        for service in DB_SERVICES {
            let name = format!("demo-{service}-db");
            server
                .expect_get_secret(&name, Some(existing_secret(&name)))
                .await;
        }
        server
            .expect_get_secret("demo-nats", Some(existing_secret("demo-nats")))
            .await;
        // Same objects applied again (a no-op for the API server); no Secret created, no
        // status patch (nothing changed), no Event.
        expect_default_children(&mut server, Rollout::Pending).await;
        server
    })
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(RESYNC_PROGRESSING)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_status_turns_ready_when_the_children_do() {
    let status = first_reconcile().await;
    let shop = Shop::test().with_status(status);
    let patched = shop.clone();
    let (result, _) = reconcile_with(shop, |mut server| async move {
        server
            .expect_get_secret("demo-jwt", Some(existing_secret("demo-jwt")))
            .await;
        for service in DB_SERVICES {
            let name = format!("demo-{service}-db");
            server
                .expect_get_secret(&name, Some(existing_secret(&name)))
                .await;
        }
        server
            .expect_get_secret("demo-nats", Some(existing_secret("demo-nats")))
            .await;
        expect_default_children(&mut server, Rollout::Ready).await;
        let status = server.expect_status_patch(&patched).await;
        assert_eq!(
            condition(&status, READY),
            ("True".into(), "AllComponentsReady".into())
        );
        assert_eq!(
            condition(&status, PROGRESSING),
            ("False".into(), "RolloutComplete".into())
        );
        assert_eq!(status.ready_components.as_deref(), Some("12/12"));
        assert_eq!(
            status.gateway_address.as_deref(),
            Some("http://demo-gateway.default.svc:80")
        );
        server.expect_event("Normal", "ShopReady").await;
        server
    })
    .await;
    assert_eq!(result.expect("reconcile"), Action::requeue(RESYNC_READY));
}

#[tokio::test(flavor = "current_thread")]
async fn a_bad_spec_is_degraded_and_nothing_is_applied() {
    let shop = Shop::test().with_replicas(Component::Cart, -1);
    let patched = shop.clone();
    let (result, metrics) = reconcile_with(shop, |mut server| async move {
        // The only writes: the status and a Warning Event. No Secret, no child.
        let status = server.expect_status_patch(&patched).await;
        assert_eq!(
            condition(&status, READY),
            ("False".into(), "InvalidSpec".into())
        );
        assert_eq!(
            condition(&status, DEGRADED),
            ("True".into(), "InvalidSpec".into())
        );
        assert_eq!(
            status.condition(DEGRADED).map(|c| c.message.as_str()),
            Some("spec.services.cart.replicas is -1; set it to 0 or more")
        );
        let note = server.expect_event("Warning", "InvalidSpec").await;
        assert_eq!(
            note,
            "spec.services.cart.replicas is -1; set it to 0 or more"
        );
        server
    })
    .await;
    assert_eq!(
        result.expect("a spec problem is not a reconcile error"),
        Action::requeue(RESYNC_READY)
    );
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains("souk_operator_reconcile_errors_total{reason=\"InvalidSpec\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_service_is_degraded_and_nothing_is_applied() {
    let mut shop = Shop::test();
    shop.spec
        .services
        .unknown
        .insert("shipping".into(), serde_json::json!({"replicas": 1}));
    let patched = shop.clone();
    let (result, _) = reconcile_with(shop, |mut server| async move {
        let status = server.expect_status_patch(&patched).await;
        let message = status
            .condition(DEGRADED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            message.starts_with("spec.services.shipping names no Souk service"),
            "{message}"
        );
        server.expect_event("Warning", "InvalidSpec").await;
        server
    })
    .await;
    assert!(result.is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn an_external_database_without_its_secret_is_degraded_and_nothing_is_applied() {
    let shop = Shop::test().with_external_database(Component::Order, "orders-db");
    let patched = shop.clone();
    let (result, _) = reconcile_with(shop, |mut server| async move {
        server.expect_get_secret("orders-db", None).await;
        let status = server.expect_status_patch(&patched).await;
        assert_eq!(condition(&status, DEGRADED), ("True".into(), "SecretNotFound".into()));
        let message = status.condition(DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        assert_eq!(
            message,
            "Secret orders-db (spec.databases.order.external.secretName) was not found in namespace default; \
             create it with key \"url\" holding the database URL (postgres://user:password@host:5432/db)"
        );
        server.expect_event("Warning", "SecretNotFound").await;
        server
    })
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(RESYNC_MISSING_SECRET)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_spec_already_reported_is_not_reported_again() {
    let shop = Shop::test().with_replicas(Component::Cart, -1);
    let patched = shop.clone();
    let mut reported = None;
    let (_, _) = reconcile_with(shop.clone(), |mut server| {
        let reported = &mut reported;
        async move {
            *reported = Some(server.expect_status_patch(&patched).await);
            server.expect_event("Warning", "InvalidSpec").await;
            server
        }
    })
    .await;
    let shop = shop.with_status(reported.expect("status"));
    // Same problem again: no status patch, no Event.
    let (result, _) = reconcile_with(shop, |server| async move { server }).await;
    assert!(result.is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_apply_is_an_error_reported_in_the_status() {
    let shop = Shop::test();
    let patched = shop.clone();
    let (result, _) = reconcile_with(shop, |mut server| async move {
        for name in [
            "demo-jwt",
            "demo-user-db",
            "demo-product-db",
            "demo-cart-db",
            "demo-order-db",
            "demo-payment-db",
            "demo-nats",
        ] {
            server
                .expect_get_secret(name, Some(existing_secret(name)))
                .await;
        }
        server
            .expect_failing_apply(
                "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
                "demo-user-db",
            )
            .await;
        let status = server.expect_status_patch(&patched).await;
        assert_eq!(
            condition(&status, DEGRADED),
            ("True".into(), "ApplyFailed".into())
        );
        let message = status
            .condition(DEGRADED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            message.starts_with("could not apply NetworkPolicy demo-user-db"),
            "{message}"
        );
        server.expect_event("Warning", "ApplyFailed").await;
        server
    })
    .await;
    let error = result.expect_err("the apply failed");
    assert_eq!(error.reason(), "ApplyFailed");
}

#[test]
fn backoff_doubles_from_five_seconds_up_to_five_minutes() {
    let delays: Vec<u64> = (1..=9).map(|n| super::backoff(n).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
}

#[tokio::test(flavor = "current_thread")]
async fn the_error_policy_backs_off_per_shop_and_resets_on_success() {
    let (client, _server) = ApiServer::new();
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), None));
    let shop = Arc::new(Shop::test());
    let error = || Error::NoNamespace;
    let first = super::error_policy(shop.clone(), &error(), ctx.clone());
    let second = super::error_policy(shop.clone(), &error(), ctx.clone());
    let other = super::error_policy(
        Arc::new(Shop::test().with_name("other")),
        &error(),
        ctx.clone(),
    );
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    assert_eq!(other, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_database_switched_to_external_keeps_its_postgres_scaled_to_zero() {
    let shop = Shop::test().with_external_database(Component::Order, "orders-db");
    let uid = shop.metadata.uid.clone().unwrap_or_default();
    let owned = |kind: &str, name: &str, object_uid: &str| {
        serde_json::json!({
            "apiVersion": match kind {
                "Service" | "ConfigMap" => "v1",
                "NetworkPolicy" => "networking.k8s.io/v1",
                _ => "apps/v1",
            },
            "kind": kind,
            "metadata": {"name": name, "namespace": "default", "uid": object_uid,
                         "ownerReferences": [{"apiVersion": "souk.dev/v1alpha1", "kind": "Shop",
                                              "name": "demo", "uid": uid, "controller": true}]},
        })
    };
    let foreign_nats = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "demo-nats", "namespace": "default", "uid": "someone-else"},
    });
    let patched = shop.clone().with_external_nats("nats://nats.infra:4222");
    let shop = patched.clone();
    let (result, _) = reconcile_with(shop, |mut server| async move {
        server
            .expect_get_secret("orders-db", Some(existing_secret("orders-db")))
            .await;
        for name in [
            "demo-jwt",
            "demo-user-db",
            "demo-product-db",
            "demo-cart-db",
            "demo-payment-db",
        ] {
            server
                .expect_get_secret(name, Some(existing_secret(name)))
                .await;
        }
        for service in ["user", "product", "cart", "payment"] {
            server
                .expect_apply(
                    "NetworkPolicy",
                    &format!("demo-{service}-db"),
                    Rollout::Ready,
                )
                .await;
        }
        for service in ["user", "product", "cart", "payment"] {
            server
                .expect_apply("Service", &format!("demo-{service}-db"), Rollout::Ready)
                .await;
            server
                .expect_apply("StatefulSet", &format!("demo-{service}-db"), Rollout::Ready)
                .await;
        }
        for service in ["gateway", "user", "product", "cart", "order", "payment"] {
            server
                .expect_apply("Service", &format!("demo-{service}"), Rollout::Ready)
                .await;
            if service != "gateway" {
                server
                    .expect_apply("Service", &format!("demo-{service}-grpc"), Rollout::Ready)
                    .await;
            }
            server
                .expect_apply("Deployment", &format!("demo-{service}"), Rollout::Ready)
                .await;
        }
        // The old order database is scaled to zero, never deleted (its volume holds the data);
        // its Service goes; a NATS Service someone else made stays.
        let mut running = owned("StatefulSet", "demo-order-db", "sts-1");
        running["spec"] = serde_json::json!({"replicas": 1});
        server
            .expect_get("StatefulSet", "demo-order-db", Some(running))
            .await;
        server
            .expect_scale_to_zero("StatefulSet", "demo-order-db")
            .await;
        server
            .expect_get(
                "Service",
                "demo-order-db",
                Some(owned("Service", "demo-order-db", "svc-1")),
            )
            .await;
        server
            .expect_delete("Service", "demo-order-db", "svc-1")
            .await;
        server
            .expect_get(
                "NetworkPolicy",
                "demo-order-db",
                Some(owned("NetworkPolicy", "demo-order-db", "np-1")),
            )
            .await;
        server
            .expect_delete("NetworkPolicy", "demo-order-db", "np-1")
            .await;
        server.expect_get("StatefulSet", "demo-nats", None).await;
        server
            .expect_get("Service", "demo-nats", Some(foreign_nats))
            .await;
        server.expect_get("NetworkPolicy", "demo-nats", None).await;
        server.expect_get("ConfigMap", "demo-nats", None).await;
        server.expect_get("Ingress", "demo-gateway", None).await;
        let status = server.expect_status_patch(&patched).await;
        assert_eq!(status.ready_components.as_deref(), Some("10/10"));
        let note = server.expect_event("Normal", "Pruned").await;
        assert_eq!(
            note,
            "pruned StatefulSet/demo-order-db, Service/demo-order-db, NetworkPolicy/demo-order-db, no longer in the spec (a database's or NATS's StatefulSet is scaled to zero, its volume kept)"
        );
        server.expect_event("Normal", "ShopReady").await;
        server
    })
    .await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_shop_being_deleted_is_left_to_the_garbage_collector() {
    let mut shop = Shop::test();
    shop.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let (result, _) = reconcile_with(shop, |server| async move { server }).await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
}

#[tokio::test(flavor = "current_thread")]
async fn an_admin_secret_without_a_password_is_degraded_and_nothing_is_applied() {
    let shop = Shop::test().with_admin_secret("demo-admin");
    let patched = shop.clone();
    let mut admin = Secret::default();
    admin.metadata.name = Some("demo-admin".into());
    admin.string_data = Some([("email".to_owned(), "admin@example.com".to_owned())].into());
    let (result, _) = reconcile_with(shop, |mut server| async move {
        server.expect_get_secret("demo-admin", Some(admin)).await;
        let status = server.expect_status_patch(&patched).await;
        let degraded = status.condition(DEGRADED).expect("Degraded");
        assert_eq!(degraded.reason, "SecretKeyMissing");
        assert_eq!(
            degraded.message,
            "Secret demo-admin (spec.adminSecretName) has no key \"password\"; add it (the administrator's e-mail and password)"
        );
        server.expect_event("Warning", "SecretKeyMissing").await;
        server
    })
    .await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(RESYNC_MISSING_SECRET)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_nats_users_secret_restarts_nats_with_it() {
    let status = first_reconcile().await;
    let shop = Shop::test().with_status(status);
    let mut hashes = Vec::new();
    for password in ["first", "rotated"] {
        let mut nats_secret = existing_secret("demo-nats");
        nats_secret
            .data
            .get_or_insert_with(Default::default)
            .insert(
                "cart".to_owned(),
                k8s_openapi::ByteString(password.as_bytes().to_vec()),
            );
        let mut applied = None;
        let (result, _) = reconcile_with(shop.clone(), |mut server| {
            let applied = &mut applied;
            async move {
                server
                    .expect_get_secret("demo-jwt", Some(existing_secret("demo-jwt")))
                    .await;
                for service in DB_SERVICES {
                    let name = format!("demo-{service}-db");
                    server
                        .expect_get_secret(&name, Some(existing_secret(&name)))
                        .await;
                }
                server
                    .expect_get_secret("demo-nats", Some(nats_secret))
                    .await;
                *applied = Some(expect_default_children(&mut server, Rollout::Pending).await);
                server
            }
        })
        .await;
        result.expect("reconcile");
        let nats = applied.expect("NATS applied");
        let hash = nats["spec"]["template"]["metadata"]["annotations"]["souk.dev/secrets-hash"]
            .as_str()
            .expect("a secrets hash on the NATS pods")
            .to_owned();
        hashes.push(hash);
    }
    assert_ne!(hashes[0], hashes[1], "NATS would keep the old hashes");
}
