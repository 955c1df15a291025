//! The gateway's catalog cache over HTTP: strong entity tags and 304s, the writer reading its
//! own write at once, and a second gateway replica dropping its copy when the product service's
//! `catalog.changed` event arrives.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use souk_e2e::{Reply, TestShop, json};

const SETTLE: Duration = Duration::from_secs(20);

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn create_product(shop: &TestShop, token: &str, name: &str) -> String {
    let body = json!({"name": name, "description": "cached", "price_cents": 300, "stock": 4});
    shop.post("/api/products", Some(token), &body)
        .await
        .expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn get_if_none_match(shop: &TestShop, path: &str, etag: &str) -> Reply {
    shop.send(
        shop.request(Method::GET, path)
            .header("if-none-match", etag),
    )
    .await
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs a shop no other test writes to")]
async fn catalog_reads_carry_a_strong_etag_and_if_none_match_answers_304() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let id = create_product(&shop, &admin.token, "Tagged").await;
    for path in [
        format!("/api/products/{id}"),
        "/api/products?page=1&page_size=5".to_owned(),
        "/api/products/categories".to_owned(),
    ] {
        let first = shop.get(&path, None).await;
        first.expect(StatusCode::OK);
        let etag = header(&first, "etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong tag: {etag}"
        );
        assert_eq!(header(&first, "cache-control"), "no-cache");
        let again = get_if_none_match(&shop, &path, &etag).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.text, "", "a 304 has no body");
        assert_eq!(header(&again, "etag"), etag);
        let stale = get_if_none_match(&shop, &path, "\"not-it\"").await;
        assert_eq!(stale.status, StatusCode::OK, "{path}");
        assert_eq!(stale.body, first.body);
    }
}

#[tokio::test]
async fn the_writer_reads_its_write_at_once_and_a_tag_it_held_no_longer_matches() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let id = create_product(&shop, &admin.token, "Before").await;
    let path = format!("/api/products/{id}");
    // Cached, when the cache hears events (it may still be connecting: then this is a miss).
    let before = shop.get(&path, None).await;
    let old_tag = header(&before, "etag").to_owned();
    shop.get(&path, None).await.expect(StatusCode::OK);

    let body = json!({"name": "After", "description": "cached", "price_cents": 300, "stock": 4});
    shop.put(&path, Some(&admin.token), &body)
        .await
        .expect(StatusCode::OK);
    let after = get_if_none_match(&shop, &path, &old_tag).await;
    assert_eq!(after.status, StatusCode::OK, "the old tag is stale");
    assert_eq!(after.body["name"], "After");
    assert_ne!(header(&after, "etag"), old_tag);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn another_replica_serves_from_memory_and_drops_its_copy_when_the_catalog_changes() {
    let mut shop = TestShop::start().await;
    let admin = shop.admin().await;
    let id = create_product(&shop, &admin.token, "Shared").await;
    let category = shop
        .post(
            "/api/products/categories",
            Some(&admin.token),
            &json!({"name": format!("Cached {}", uuid::Uuid::new_v4().simple())}),
        )
        .await
        .expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let local = shop.local();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let replica = format!("http://{}", listener.local_addr().expect("addr"));
    local.shop.start_gateway_replica(listener);
    let http = reqwest::Client::new();
    let read = |path: String| {
        let (http, replica) = (http.clone(), replica.clone());
        async move {
            let response = http
                .get(format!("{replica}{path}"))
                .send()
                .await
                .expect("replica answers");
            let hit = response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                == Some("hit");
            let body: Value = response.json().await.expect("json");
            (body, hit)
        }
    };
    let product_path = format!("/api/products/{id}");
    let categories_path = "/api/products/categories".to_owned();
    for path in [&product_path, &categories_path] {
        souk_shared::testing::eventually("the replica to serve from memory", SETTLE, || async {
            read(path.clone()).await.1.then_some(())
        })
        .await;
    }

    let body = json!({"name": "Renamed", "description": "cached", "price_cents": 300, "stock": 4});
    shop.put(&product_path, Some(&admin.token), &body)
        .await
        .expect(StatusCode::OK);
    let renamed = json!({"name": format!("Renamed {}", uuid::Uuid::new_v4().simple())});
    shop.put(
        &format!("/api/products/categories/{category}"),
        Some(&admin.token),
        &renamed,
    )
    .await
    .expect(StatusCode::OK);
    souk_shared::testing::eventually("the replica to see the rename", SETTLE, || async {
        (read(product_path.clone()).await.0["name"] == "Renamed").then_some(())
    })
    .await;
    souk_shared::testing::eventually("the replica to see the category", SETTLE, || async {
        let (list, _) = read(categories_path.clone()).await;
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|c| c["id"] == category.as_str() && c["name"] == renamed["name"])
            .then_some(())
    })
    .await;
}
