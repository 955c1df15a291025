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
    shop.get("/metrics", None)
        .await
        .expect(StatusCode::NOT_FOUND);
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
