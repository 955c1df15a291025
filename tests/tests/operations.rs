//! The Operations section of docs/api.md, and the gateway's behaviour around it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use souk_e2e::{Options, TestShop, json};

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let shop = TestShop::start().await;
    shop.get("/healthz", None).await.expect(StatusCode::OK);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn readyz_follows_the_services() {
    let mut shop = TestShop::start().await;
    let reply = shop.get("/readyz", None).await;
    assert_eq!(reply.expect(StatusCode::OK)["services"]["user"], "serving");

    let local = shop.local();
    local.shop.stop_service("user");
    let down = shop
        .wait_for("/readyz", None, Duration::from_secs(10), |r| {
            r.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    down.expect(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.body["services"]["user"], "unavailable");
    // The gateway stays up and says so for API calls too.
    let register = json!({"email": shop.unique_email(), "password": "password-1", "name": "Ada"});
    let reply = shop.post("/api/users", None, &register).await;
    reply.expect(StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !reply.text.contains("127.0.0.1"),
        "no upstream address leaks: {}",
        reply.text
    );

    let local = shop.local();
    local.shop.restart_service("user").await.expect("restart");
    shop.wait_for("/readyz", None, Duration::from_secs(10), |r| {
        r.status == StatusCode::OK
    })
    .await;
    shop.post("/api/users", None, &register)
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_lost_database_is_a_503_and_the_service_recovers_without_a_restart() {
    let mut shop = TestShop::start_with(Options {
        proxied_databases: vec!["user"],
        ..Options::default()
    })
    .await;
    let local = shop.local();
    local.database_proxies["user"].cut();
    let register = json!({"email": shop.unique_email(), "password": "password-1", "name": "Ada"});
    let reply = shop.post("/api/users", None, &register).await;
    reply.expect(StatusCode::SERVICE_UNAVAILABLE);
    assert!(!reply.text.to_lowercase().contains("sql"), "{}", reply.text);
    shop.wait_for("/readyz", None, Duration::from_secs(10), |r| {
        r.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;

    shop.local().database_proxies["user"].restore().await;
    shop.wait_for("/readyz", None, Duration::from_secs(10), |r| {
        r.status == StatusCode::OK
    })
    .await;
    shop.post("/api/users", None, &register)
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn metrics_count_requests_by_route_template() {
    let shop = TestShop::start().await;
    let ada = shop.customer().await;
    shop.get(&format!("/api/users/{}", ada.id), Some(&ada.token))
        .await
        .expect(StatusCode::OK);
    let reply = shop.metrics().await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = &reply.text;
    assert!(
        text.contains(
            r#"souk_gateway_http_requests_total{method="POST",route="/api/users",status="201"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/users/{id}""#), "{text}");
    assert!(!text.contains(&ada.id), "ids never become labels");
    assert!(
        text.contains("souk_gateway_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let shop = TestShop::start().await;
    let reply = shop.get("/api/openapi.json", None).await;
    let doc = reply.expect(StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/users",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/users/me",
        "/api/users/{id}",
        "/api/products",
        "/api/carts",
        "/api/orders",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

/// What the document promises of bodies and caching, the gateway does: every operation with a
/// body answers 413 to one over the limit, every operation that lists 304 answers it to a
/// current `If-None-Match`, and the operations port's `/metrics` is not in it.
#[tokio::test]
async fn the_openapi_documents_limits_and_caching_as_served() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let doc = shop
        .get("/api/openapi.json", None)
        .await
        .expect(StatusCode::OK)
        .clone();
    assert!(
        doc["paths"]["/metrics"].is_null(),
        "/metrics is not the API's"
    );
    let some_id = uuid::Uuid::new_v4().to_string();
    let over_limit = "x".repeat(souk_gateway::BODY_LIMIT + 1);
    let (mut bodies, mut cached) = (0, 0);
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{id}", &some_id)
            .replace("{categoryId}", &some_id)
            .replace("{productId}", &some_id);
        for (method, operation) in operations.as_object().expect("operations") {
            let method: Method = method.to_uppercase().parse().expect("a method");
            let responses = &operation["responses"];
            if !operation["requestBody"].is_null() {
                assert!(responses["413"].is_object(), "{method} {path} lists no 413");
                let reply = shop
                    .send(
                        shop.request(method.clone(), &concrete)
                            .bearer_auth(&admin.token)
                            .header("content-type", "application/json")
                            .body(over_limit.clone()),
                    )
                    .await;
                assert_eq!(
                    reply.status,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "{method} {path}"
                );
                bodies += 1;
            }
            if responses["304"].is_object() && !path.contains('{') {
                let first = shop.get(path, None).await;
                let etag = first.headers["etag"].to_str().expect("etag").to_owned();
                let again = shop
                    .send(
                        shop.request(Method::GET, path)
                            .header("if-none-match", etag),
                    )
                    .await;
                assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
                cached += 1;
            }
        }
    }
    assert!(
        bodies >= 10 && cached >= 2,
        "{bodies} bodies, {cached} cached"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let shop = TestShop::start().await;
    shop.get("/api/nothing-here", None)
        .await
        .expect(StatusCode::NOT_FOUND);
    shop.send(shop.request(Method::DELETE, "/api/auth/login"))
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let shop = TestShop::start().await;
    let reply = shop.get("/healthz", None).await;
    assert!(reply.headers.get("x-request-id").is_some());
    let given = shop
        .send(
            shop.request(Method::GET, "/healthz")
                .header("x-request-id", "abc-123"),
        )
        .await;
    assert_eq!(given.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn metrics_are_not_served_on_the_api_port() {
    let shop = TestShop::start().await;
    // Not an API path: the storefront's page for an address with none.
    let reply = shop.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        !reply.text.contains("souk_"),
        "no metric is served: {}",
        reply.text
    );
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn invented_methods_do_not_grow_the_metrics() {
    let shop = TestShop::start().await;
    for n in 0..20 {
        let method =
            reqwest::Method::from_bytes(format!("INVENTED{n}").as_bytes()).expect("method");
        let reply = shop.send(shop.request(method, "/api/products")).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
    }
    let reply = shop.metrics().await;
    let text = &reply.text;
    assert!(!text.contains("INVENTED"), "{text}");
    assert!(
        text.contains(r#"souk_gateway_http_requests_total{method="other",route="/api/products",status="405"} 20"#),
        "{text}"
    );
}
