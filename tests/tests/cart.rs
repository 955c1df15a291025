//! The Cart section of docs/api.md, over HTTP: the caller's own cart priced at current prices, its
//! errors, and what happens while the product service is down.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use souk_e2e::{Session, TestShop, json};

/// A product made by the admin; returns its id.
async fn product(
    shop: &TestShop,
    admin: &Session,
    name: &str,
    price_cents: i64,
    stock: i64,
) -> String {
    let body = json!({"name": name, "description": "", "price_cents": price_cents, "stock": stock});
    let reply = shop.post("/api/products", Some(&admin.token), &body).await;
    reply.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn add(shop: &TestShop, who: &Session, product_id: &str, quantity: i64) -> souk_e2e::Reply {
    shop.post(
        "/api/carts/products",
        Some(&who.token),
        &json!({"product_id": product_id, "quantity": quantity}),
    )
    .await
}

fn lines(cart: &Value) -> Vec<(String, i64)> {
    cart["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|line| {
            (
                line["product_id"].as_str().expect("product_id").to_owned(),
                line["quantity"].as_i64().expect("quantity"),
            )
        })
        .collect()
}

fn sorted_keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().expect("object").keys().cloned().collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn a_new_cart_is_empty_and_belongs_to_the_caller() {
    let shop = TestShop::start().await;
    let ada = shop.customer().await;
    let reply = shop.get("/api/carts", Some(&ada.token)).await;
    let cart = reply.expect(StatusCode::OK);
    assert_eq!(
        cart,
        &json!({"user_id": ada.id, "items": [], "total_cents": 0})
    );
}

#[tokio::test]
async fn adding_products_prices_each_line_and_the_total() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 1_250, 10).await;
    let cup = product(&shop, &admin, "Cup", 800, 10).await;
    add(&shop, &ada, &tea, 2).await.expect(StatusCode::OK);
    let reply = add(&shop, &ada, &cup, 1).await;
    let cart = reply.expect(StatusCode::OK).clone();
    assert_eq!(sorted_keys(&cart), ["items", "total_cents", "user_id"]);
    assert_eq!(cart["user_id"], ada.id);
    assert_eq!(
        cart["items"],
        json!([
            {"product_id": tea, "name": "Sencha", "unit_price_cents": 1_250, "quantity": 2, "line_total_cents": 2_500},
            {"product_id": cup, "name": "Cup", "unit_price_cents": 800, "quantity": 1, "line_total_cents": 800},
        ])
    );
    assert_eq!(cart["total_cents"], 3_300);
    assert_eq!(
        shop.get("/api/carts", Some(&ada.token))
            .await
            .expect(StatusCode::OK),
        &cart
    );

    // Adding again adds to the quantity already there.
    let reply = add(&shop, &ada, &tea, 3).await;
    let cart = reply.expect(StatusCode::OK);
    assert_eq!(lines(cart), [(tea, 5), (cup, 1)]);
    assert_eq!(cart["total_cents"], 5 * 1_250 + 800);
}

#[tokio::test]
async fn a_cart_follows_the_catalog_prices() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 100, 10).await;
    add(&shop, &ada, &tea, 3).await.expect(StatusCode::OK);
    let update =
        json!({"name": "Sencha Superior", "description": "", "price_cents": 150, "stock": 10});
    shop.put(&format!("/api/products/{tea}"), Some(&admin.token), &update)
        .await
        .expect(StatusCode::OK);
    let reply = shop.get("/api/carts", Some(&ada.token)).await;
    let cart = reply.expect(StatusCode::OK);
    assert_eq!(cart["items"][0]["name"], "Sencha Superior");
    assert_eq!(cart["items"][0]["unit_price_cents"], 150);
    assert_eq!(cart["items"][0]["line_total_cents"], 450);
    assert_eq!(cart["total_cents"], 450);
}

#[tokio::test]
async fn setting_removing_clearing_and_deleting() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 100, 10).await;
    let cup = product(&shop, &admin, "Cup", 500, 10).await;
    add(&shop, &ada, &tea, 4).await.expect(StatusCode::OK);
    let token = Some(ada.token.as_str());

    let reply = shop
        .put(
            &format!("/api/carts/products/{tea}"),
            token,
            &json!({"quantity": 1}),
        )
        .await;
    assert_eq!(lines(reply.expect(StatusCode::OK)), [(tea.clone(), 1)]);
    // Setting the quantity of a product not yet in the cart starts its line.
    let reply = shop
        .put(
            &format!("/api/carts/products/{cup}"),
            token,
            &json!({"quantity": 2}),
        )
        .await;
    let cart = reply.expect(StatusCode::OK);
    assert_eq!(lines(cart), [(tea.clone(), 1), (cup.clone(), 2)]);
    assert_eq!(cart["total_cents"], 1_100);

    let reply = shop
        .delete(&format!("/api/carts/products/{tea}"), token)
        .await;
    assert_eq!(lines(reply.expect(StatusCode::OK)), [(cup.clone(), 2)]);
    shop.delete(&format!("/api/carts/products/{tea}"), token)
        .await
        .expect(StatusCode::NOT_FOUND);

    let reply = shop.delete("/api/carts/products", token).await;
    assert_eq!(
        reply.expect(StatusCode::OK),
        &json!({"user_id": ada.id, "items": [], "total_cents": 0})
    );

    add(&shop, &ada, &tea, 1).await.expect(StatusCode::OK);
    let reply = shop.delete("/api/carts", token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
    let reply = shop.get("/api/carts", token).await;
    assert_eq!(reply.expect(StatusCode::OK)["items"], json!([]));
}

#[tokio::test]
async fn unknown_products_and_more_than_the_stock_are_refused() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 100, 5).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    add(&shop, &ada, &unknown, 1)
        .await
        .expect(StatusCode::NOT_FOUND);
    let token = Some(ada.token.as_str());
    shop.put(
        &format!("/api/carts/products/{unknown}"),
        token,
        &json!({"quantity": 1}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);

    add(&shop, &ada, &tea, 3).await.expect(StatusCode::OK);
    add(&shop, &ada, &tea, 3).await.expect(StatusCode::CONFLICT);
    shop.put(
        &format!("/api/carts/products/{tea}"),
        token,
        &json!({"quantity": 6}),
    )
    .await
    .expect(StatusCode::CONFLICT);
    let reply = shop.get("/api/carts", token).await;
    assert_eq!(
        lines(reply.expect(StatusCode::OK)),
        [(tea.clone(), 3)],
        "refused changes change nothing"
    );
    let reply = add(&shop, &ada, &tea, 2).await;
    assert_eq!(
        lines(reply.expect(StatusCode::OK)),
        [(tea, 5)],
        "exactly the stock is fine"
    );
}

#[tokio::test]
async fn invalid_lines_are_bad_requests_naming_the_field() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 100, 5).await;
    let token = Some(ada.token.as_str());
    for (body, field) in [
        (json!({"product_id": tea, "quantity": 0}), "quantity"),
        (json!({"product_id": tea, "quantity": -1}), "quantity"),
        (json!({"product_id": tea, "quantity": 1.5}), "quantity"),
        (json!({"product_id": tea, "quantity": "1"}), "quantity"),
        (
            json!({"product_id": tea, "quantity": 1_000_001}),
            "quantity",
        ),
        (json!({"product_id": "tea", "quantity": 1}), "product_id"),
        (json!({"product_id": 42, "quantity": 1}), "product_id"),
    ] {
        let reply = shop.post("/api/carts/products", token, &body).await;
        let problem = reply.expect(StatusCode::BAD_REQUEST);
        assert!(
            problem["errors"][field].is_string(),
            "{body}: {}",
            reply.text
        );
    }
    let reply = shop
        .post("/api/carts/products", token, &json!({"product_id": tea}))
        .await;
    reply.expect(StatusCode::BAD_REQUEST);
    let raw = shop
        .request(Method::POST, "/api/carts/products")
        .bearer_auth(&ada.token)
        .body("{");
    shop.send(raw).await.expect(StatusCode::BAD_REQUEST);

    let path = format!("/api/carts/products/{tea}");
    for body in [json!({"quantity": 0}), json!({"quantity": 2.5}), json!({})] {
        shop.put(&path, token, &body)
            .await
            .expect(StatusCode::BAD_REQUEST);
    }
    shop.put(
        "/api/carts/products/not-a-uuid",
        token,
        &json!({"quantity": 1}),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    shop.delete("/api/carts/products/not-a-uuid", token)
        .await
        .expect(StatusCode::BAD_REQUEST);

    let reply = shop.get("/api/carts", token).await;
    assert_eq!(
        reply.expect(StatusCode::OK)["items"],
        json!([]),
        "nothing was added"
    );
}

#[tokio::test]
async fn the_cart_needs_a_signed_in_caller() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let tea = product(&shop, &admin, "Sencha", 100, 5).await;
    let line = json!({"product_id": tea, "quantity": 1});
    for token in [None, Some("garbage")] {
        shop.get("/api/carts", token)
            .await
            .expect(StatusCode::UNAUTHORIZED);
        shop.post("/api/carts/products", token, &line)
            .await
            .expect(StatusCode::UNAUTHORIZED);
        shop.put(
            &format!("/api/carts/products/{tea}"),
            token,
            &json!({"quantity": 1}),
        )
        .await
        .expect(StatusCode::UNAUTHORIZED);
        shop.delete(&format!("/api/carts/products/{tea}"), token)
            .await
            .expect(StatusCode::UNAUTHORIZED);
        shop.delete("/api/carts/products", token)
            .await
            .expect(StatusCode::UNAUTHORIZED);
        shop.delete("/api/carts", token)
            .await
            .expect(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn every_user_has_a_cart_of_their_own_admins_too() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let (ada, bob) = (shop.customer().await, shop.customer().await);
    let tea = product(&shop, &admin, "Sencha", 100, 10).await;
    add(&shop, &ada, &tea, 2).await.expect(StatusCode::OK);
    add(&shop, &admin, &tea, 1).await.expect(StatusCode::OK);

    let bobs = shop.get("/api/carts", Some(&bob.token)).await;
    assert_eq!(
        bobs.expect(StatusCode::OK),
        &json!({"user_id": bob.id, "items": [], "total_cents": 0})
    );
    shop.delete("/api/carts", Some(&bob.token))
        .await
        .expect(StatusCode::NO_CONTENT);
    let adas = shop.get("/api/carts", Some(&ada.token)).await;
    assert_eq!(lines(adas.expect(StatusCode::OK)), [(tea.clone(), 2)]);
    let admins = shop.get("/api/carts", Some(&admin.token)).await;
    let admins = admins.expect(StatusCode::OK);
    assert_eq!(admins["user_id"], admin.id);
    // On a shared shop other tests use the same admin: only this test's product is ours to count.
    let ours: Vec<_> = lines(admins)
        .into_iter()
        .filter(|(id, _)| *id == tea)
        .collect();
    assert_eq!(ours, [(tea, 1)]);
}

#[tokio::test]
async fn a_deleted_product_leaves_the_priced_cart() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 100, 10).await;
    let cup = product(&shop, &admin, "Cup", 500, 10).await;
    add(&shop, &ada, &tea, 2).await.expect(StatusCode::OK);
    add(&shop, &ada, &cup, 1).await.expect(StatusCode::OK);
    shop.delete(&format!("/api/products/{tea}"), Some(&admin.token))
        .await;
    let reply = shop.get("/api/carts", Some(&ada.token)).await;
    let cart = reply.expect(StatusCode::OK);
    assert_eq!(lines(cart), [(cup, 1)]);
    assert_eq!(cart["total_cents"], 500);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn while_the_product_service_is_down_the_cart_is_a_503_and_unchanged() {
    let mut shop = TestShop::start().await;
    let admin = shop.admin().await;
    let ada = shop.customer().await;
    let tea = product(&shop, &admin, "Sencha", 100, 10).await;
    let cup = product(&shop, &admin, "Cup", 500, 10).await;
    add(&shop, &ada, &tea, 2).await.expect(StatusCode::OK);
    let token = Some(ada.token.as_str());
    let before = shop
        .get("/api/carts", token)
        .await
        .expect(StatusCode::OK)
        .clone();

    let local = shop.local();
    local.shop.stop_service("product");
    let down = shop
        .wait_for("/api/carts", token, Duration::from_secs(10), |r| {
            r.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    down.expect(StatusCode::SERVICE_UNAVAILABLE);
    for reply in [
        add(&shop, &ada, &tea, 1).await,
        add(&shop, &ada, &cup, 1).await,
        shop.put(
            &format!("/api/carts/products/{tea}"),
            token,
            &json!({"quantity": 5}),
        )
        .await,
        shop.delete(&format!("/api/carts/products/{tea}"), token)
            .await,
        shop.get("/api/products", None).await,
    ] {
        reply.expect(StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !reply.text.contains("127.0.0.1"),
            "no upstream address leaks: {}",
            reply.text
        );
    }
    let ready = shop.get("/readyz", None).await;
    assert_eq!(
        ready.expect(StatusCode::SERVICE_UNAVAILABLE)["services"]["product"],
        "unavailable"
    );

    shop.local()
        .shop
        .restart_service("product")
        .await
        .expect("restart");
    let after = shop
        .wait_for("/api/carts", token, Duration::from_secs(10), |r| {
            r.status == StatusCode::OK
        })
        .await;
    assert_eq!(
        after.expect(StatusCode::OK),
        &before,
        "the cart is as it was"
    );
    let reply = add(&shop, &ada, &tea, 1).await;
    assert_eq!(lines(reply.expect(StatusCode::OK)), [(tea, 3)]);
}
