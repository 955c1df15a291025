//! Test support: `Shop` builders (`Shop::test().with_replicas(...)`) and a mocked API server that
//! checks each request the reconciler makes, in order, and answers it.

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::shop::{
    Component, DatabaseSpec, ExternalDatabase, ExternalNats, IngressSpec, NatsSpec, ServiceSpec,
    Shop, ShopSpec, ShopStatus,
};

impl Shop {
    /// A stored shop `demo` in namespace `default`, generation 1, every default.
    pub fn test() -> Self {
        let mut shop = Shop::new("demo", ShopSpec::default());
        shop.metadata.namespace = Some("default".into());
        shop.metadata.uid = Some("6a1c7e2e-5b9a-4d7e-9a43-6f2b1f1d0c11".into());
        shop.metadata.generation = Some(1);
        shop
    }

    pub fn with_name(mut self, name: &str) -> Self {
        self.metadata.name = Some(name.into());
        self
    }

    pub fn with_replicas(mut self, service: Component, replicas: i32) -> Self {
        let settings = self.spec.services.get_mut(service);
        settings.get_or_insert_with(ServiceSpec::default).replicas = Some(replicas);
        self
    }

    pub fn with_external_database(mut self, service: Component, secret: &str) -> Self {
        if let Some(db) = self.spec.databases.get_mut(service) {
            *db = Some(DatabaseSpec {
                managed: None,
                external: Some(ExternalDatabase {
                    secret_name: secret.into(),
                    key: "url".into(),
                }),
            });
        }
        self
    }

    pub fn with_external_nats(mut self, url: &str) -> Self {
        self.spec.nats = NatsSpec {
            managed: None,
            external: Some(ExternalNats {
                url: url.into(),
                credentials_secret_name: None,
            }),
        };
        self
    }

    pub fn with_external_nats_credentials(mut self, url: &str, secret: &str) -> Self {
        self.spec.nats = NatsSpec {
            managed: None,
            external: Some(ExternalNats {
                url: url.into(),
                credentials_secret_name: Some(secret.into()),
            }),
        };
        self
    }

    pub fn with_admin_secret(mut self, name: &str) -> Self {
        self.spec.admin_secret_name = Some(name.into());
        self
    }

    pub fn with_ingress(mut self, host: &str) -> Self {
        self.spec.gateway.ingress = Some(IngressSpec {
            host: host.into(),
            class_name: None,
            tls_secret_name: None,
        });
        self
    }

    pub fn with_status(mut self, status: ShopStatus) -> Self {
        self.status = Some(status);
        self
    }
}

/// Runs a client and its scenario to completion. The scenario keeps the server until the client
/// is done, so a request it does not expect is never answered: this guard then fails the test
/// instead of letting it hang.
pub async fn within<F: std::future::Future>(both: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(10), both)
        .await
        .expect("the client made a request the scenario does not expect, or the scenario expects one it never made")
}

/// How the mocked API server reports workloads it is asked to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Just created: no pod ready.
    Pending,
    /// Every replica ready and up to date.
    Ready,
}

/// The far end of a [`Client`]: each `expect_*` waits for the next request, asserts it is the
/// one expected, and answers.
pub struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiServer")
    }
}

/// A request as the mock saw it.
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl ApiServer {
    /// A client and the mock server it talks to.
    pub fn new() -> (Client, Self) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), Self(handle))
    }

    /// A client whose requests pass `layer` first, and the mock server it talks to.
    pub fn behind<L>(layer: &L) -> (Client, Self)
    where
        L: tower::Layer<tower_test::mock::Mock<Request<Body>, Response<Body>>>,
        L::Service: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
        <L::Service as tower::Service<Request<Body>>>::Error: Into<tower::BoxError>,
    {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::client::ClientBuilder::new(service, "default")
            .with_layer(layer)
            .build();
        (client, Self(handle))
    }

    /// Waits for the next request, checks its method and path, and returns it with a way to
    /// answer.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("the client went away before {method} {path}"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON request body")
            },
        };
        assert_eq!(
            (&seen.method, seen.path.as_str()),
            (&method, path),
            "unexpected request (query {:?})",
            seen.query
        );
        (seen, send)
    }

    /// GET of a Secret, answered with `secret` or 404.
    pub async fn expect_get_secret(&mut self, name: &str, secret: Option<Secret>) {
        let path = format!("/api/v1/namespaces/default/secrets/{name}");
        let (_, send) = self.expect(Method::GET, &path).await;
        match secret {
            Some(secret) => respond(
                send,
                StatusCode::OK,
                serde_json::to_value(secret).expect("secret"),
            ),
            None => not_found(send, "secrets", name),
        }
    }

    /// POST of a Secret named `name`; the created Secret is returned to the test.
    pub async fn expect_create_secret(&mut self, name: &str) -> Secret {
        let (seen, send) = self
            .expect(Method::POST, "/api/v1/namespaces/default/secrets")
            .await;
        assert_eq!(
            seen.body["metadata"]["name"], name,
            "created the wrong Secret"
        );
        assert!(
            seen.query.contains("fieldManager=souk-operator"),
            "{}",
            seen.query
        );
        respond(send, StatusCode::CREATED, seen.body.clone());
        serde_json::from_value(seen.body).expect("a Secret")
    }

    /// A GET of `kind` `name`, answered with `object` or 404.
    pub async fn expect_get(&mut self, kind: &str, name: &str, object: Option<Value>) {
        let (_, send) = self
            .expect(Method::GET, &format!("{}/{name}", collection(kind)))
            .await;
        match object {
            Some(object) => respond(send, StatusCode::OK, object),
            None => not_found(send, kind, name),
        }
    }

    /// A DELETE of `kind` `name` guarded by the object's uid.
    pub async fn expect_delete(&mut self, kind: &str, name: &str, uid: &str) {
        let (seen, send) = self
            .expect(Method::DELETE, &format!("{}/{name}", collection(kind)))
            .await;
        assert_eq!(
            seen.body["preconditions"]["uid"], uid,
            "delete of {kind} {name} without the uid precondition"
        );
        respond(
            send,
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
        );
    }

    /// A merge patch of `kind` `name` that sets its replicas to 0, and nothing else.
    pub async fn expect_scale_to_zero(&mut self, kind: &str, name: &str) {
        let (seen, send) = self
            .expect(Method::PATCH, &format!("{}/{name}", collection(kind)))
            .await;
        assert_eq!(seen.body, json!({"spec": {"replicas": 0}}), "{kind} {name}");
        let mut answer = json!({"apiVersion": "apps/v1", "kind": kind,
                                "metadata": {"name": name, "namespace": "default"}});
        answer["spec"] = seen.body["spec"].clone();
        respond(send, StatusCode::OK, answer);
    }

    /// A server-side apply of `kind` `name` with the operator's field manager, forced. The
    /// applied object is echoed back; workloads get a status according to `rollout`.
    pub async fn expect_apply(&mut self, kind: &str, name: &str, rollout: Rollout) -> Value {
        let (seen, send) = self
            .expect(Method::PATCH, &format!("{}/{name}", collection(kind)))
            .await;
        assert!(
            seen.query.contains("fieldManager=souk-operator") && seen.query.contains("force=true"),
            "apply of {kind} {name} without the field manager: {}",
            seen.query
        );
        assert_eq!(seen.body["kind"], kind);
        let mut answer = seen.body.clone();
        answer["metadata"]["generation"] = json!(1);
        if matches!(kind, "Deployment" | "StatefulSet") {
            let replicas = answer["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = if rollout == Rollout::Ready {
                replicas
            } else {
                0
            };
            answer["status"] = json!({
                "observedGeneration": 1,
                "replicas": replicas,
                "readyReplicas": ready,
                "updatedReplicas": ready,
            });
        }
        respond(send, StatusCode::OK, answer);
        seen.body
    }

    /// The status patch of the shop `demo`; the status sent is returned to the test.
    pub async fn expect_status_patch(&mut self, shop: &Shop) -> ShopStatus {
        let path = format!(
            "/apis/souk.dev/v1alpha1/namespaces/default/shops/{}/status",
            shop.name_any()
        );
        let (seen, send) = self.expect(Method::PATCH, &path).await;
        assert!(
            seen.query.contains("fieldManager=souk-operator"),
            "{}",
            seen.query
        );
        let mut answer = serde_json::to_value(shop).expect("shop");
        answer["status"] = seen.body["status"].clone();
        respond(send, StatusCode::OK, answer);
        serde_json::from_value(seen.body["status"].clone()).expect("a ShopStatus")
    }

    /// An Event about the shop with `reason` and type `type_`; its note is returned.
    pub async fn expect_event(&mut self, type_: &str, reason: &str) -> String {
        let (seen, send) = self
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await;
        assert_eq!(seen.body["reason"], reason, "{}", seen.body);
        assert_eq!(seen.body["type"], type_, "{}", seen.body);
        assert_eq!(seen.body["regarding"]["kind"], "Shop");
        respond(send, StatusCode::CREATED, seen.body.clone());
        seen.body["note"].as_str().unwrap_or_default().to_owned()
    }

    /// Answers the next request with a server error (to test failures).
    pub async fn expect_failing_apply(&mut self, kind_path: &str, name: &str) {
        let (_, send) = self
            .expect(Method::PATCH, &format!("{kind_path}/{name}"))
            .await;
        respond(
            send,
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
        );
    }
}

fn collection(kind: &str) -> &'static str {
    match kind {
        "Service" => "/api/v1/namespaces/default/services",
        "Deployment" => "/apis/apps/v1/namespaces/default/deployments",
        "StatefulSet" => "/apis/apps/v1/namespaces/default/statefulsets",
        "Ingress" => "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        "NetworkPolicy" => "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
        "ConfigMap" => "/api/v1/namespaces/default/configmaps",
        other => panic!("no path for {other}"),
    }
}

pub fn respond(
    send: tower_test::mock::SendResponse<Response<Body>>,
    status: StatusCode,
    body: Value,
) {
    let bytes = serde_json::to_vec(&body).expect("JSON");
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(bytes))
            .expect("response"),
    );
}

fn not_found(send: tower_test::mock::SendResponse<Response<Body>>, resource: &str, name: &str) {
    respond(
        send,
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": format!("{resource} \"{name}\" not found"), "reason": "NotFound", "code": 404}),
    );
}
