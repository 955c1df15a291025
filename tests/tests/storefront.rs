//! The storefront over plain HTTP (its journeys run in a browser: `tests/browser`, run by
//! `scripts/browser-test`): pages at the root of the same origin as the API, rendered on the
//! server from what the services hold, under a policy that lets nothing inline run.

use reqwest::StatusCode;
use souk_e2e::{TestShop, json};

#[tokio::test]
async fn the_storefront_shows_the_catalog_at_the_root_of_the_api_origin() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let name = format!("Teapot {}", uuid::Uuid::new_v4().simple());
    let body =
        json!({"name": name, "description": "<b>not bold</b>", "price_cents": 2999, "stock": 2});
    let product = shop.post("/api/products", Some(&admin.token), &body).await;
    let id = product.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let home = shop.get("/", None).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let policy = home.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    assert!(
        home.text.contains(&format!("/products/{id}")),
        "the newest product is linked"
    );

    let page = shop.get(&format!("/products/{id}"), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains(&name));
    assert!(page.text.contains("$29.99"));
    assert!(page.text.contains("Only 2 left"));
    assert!(
        page.text.contains("&lt;b&gt;not bold&lt;/b&gt;"),
        "text is escaped"
    );

    let missing = shop
        .get(&format!("/products/{}", uuid::Uuid::new_v4()), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text.contains("<h1>Not found</h1>"));
}
