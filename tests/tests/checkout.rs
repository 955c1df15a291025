//! The Orders section of docs/api.md: the checkout saga end to end, over HTTP, against a shop with
//! real PostgreSQL databases and a real JetStream stream of its own.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use souk_e2e::{Options, SETTLE, Session, TestShop, json};

async fn stock(shop: &TestShop, product: &str) -> i64 {
    let reply = shop.get(&format!("/api/products/{product}"), None).await;
    reply.expect(StatusCode::OK)["stock"]
        .as_i64()
        .expect("stock")
}

async fn place(shop: &TestShop, customer: &Session, key: Option<&str>) -> Value {
    let mut request = shop
        .request(Method::POST, "/api/orders")
        .bearer_auth(&customer.token);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let reply = shop.send(request).await;
    let order = reply.expect(StatusCode::ACCEPTED).clone();
    assert_eq!(order["status"], "PENDING");
    order
}

/// Waits until the order has left `PENDING`, and returns it.
async fn settled(shop: &TestShop, customer: &Session, order: &Value) -> Value {
    let path = format!("/api/orders/{}", order["id"].as_str().expect("id"));
    let reply = shop
        .wait_for(&path, Some(&customer.token), SETTLE, |r| {
            r.status == StatusCode::OK && r.body["status"] != "PENDING"
        })
        .await;
    reply.body
}

/// An admin's replacement of a product sets its stock too: made from a copy read before an
/// order took stock, with that copy's `ETag` in `If-Match`, it is refused instead of giving the
/// stock back.
#[tokio::test]
async fn a_replacement_from_before_an_order_took_stock_is_refused_not_undoing_it() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let customer = shop.customer().await;
    let product = shop.create_product(&admin, 500, 5).await;
    let path = format!("/api/products/{product}");
    let replace = |etag: &str, body: &Value| {
        shop.request(Method::PUT, &path)
            .bearer_auth(&admin.token)
            .header("If-Match", etag)
            .json(body)
    };
    let read = shop.get(&path, None).await;
    let etag = read.headers["etag"].to_str().expect("ETag").to_owned();
    let mut renamed = read.expect(StatusCode::OK).clone();
    renamed["name"] = "Brass lamp".into();

    shop.add_to_cart(&customer, &product, 2).await;
    let order = place(&shop, &customer, None).await;
    assert_eq!(
        settled(&shop, &customer, &order).await["status"],
        "CONFIRMED"
    );
    shop.wait_for_stock(&product, 3).await;

    let stale = shop.send(replace(&etag, &renamed)).await;
    assert_eq!(
        stale.expect(StatusCode::PRECONDITION_FAILED)["type"],
        "https://souk.dev/problems/precondition-failed"
    );
    let now = shop.get(&path, None).await;
    assert_eq!(
        now.expect(StatusCode::OK)["stock"],
        3,
        "the order's stock came back"
    );
    assert_eq!(now.body["name"], "Lamp");

    // Made again from what it is now, the replacement applies.
    let etag = now.headers["etag"].to_str().expect("ETag").to_owned();
    let mut renamed = now.body.clone();
    renamed["name"] = "Brass lamp".into();
    let replaced = shop.send(replace(&etag, &renamed)).await;
    assert_eq!(replaced.expect(StatusCode::OK)["name"], "Brass lamp");
    assert_eq!(replaced.body["stock"], 3);
    // A weak tag never matches (If-Match compares strongly); `*` matches any.
    let current = shop.get(&path, None).await;
    let weak = format!("W/{}", current.headers["etag"].to_str().expect("ETag"));
    shop.send(replace(&weak, &renamed))
        .await
        .expect(StatusCode::PRECONDITION_FAILED);
    shop.send(replace("*", &renamed))
        .await
        .expect(StatusCode::OK);
    let unknown = format!("/api/products/{}", uuid::Uuid::now_v7());
    shop.send(
        shop.request(Method::PUT, &unknown)
            .bearer_auth(&admin.token)
            .header("If-Match", "*")
            .json(&renamed),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_paid_order_is_confirmed_takes_the_stock_once_and_empties_the_cart() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 1_250, 5).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 2).await;

    let order = place(&shop, &customer, None).await;
    assert_eq!(order["total_cents"], 2_500);
    assert_eq!(order["failure_reason"], Value::Null);
    assert_eq!(order["items"][0]["product_id"], lamp.as_str());
    assert_eq!(order["items"][0]["unit_price_cents"], 1_250);
    assert_eq!(order["items"][0]["quantity"], 2);

    let order = settled(&shop, &customer, &order).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(stock(&shop, &lamp).await, 3);
    shop.wait_for("/api/carts", Some(&customer.token), SETTLE, |r| {
        r.body["items"] == json!([])
    })
    .await;
    let payment = shop
        .payment_of(order["id"].as_str().expect("id"))
        .await
        .expect("a payment");
    assert_eq!(payment.status, "captured");
    assert_eq!(payment.amount_cents, 2_500);
}

/// The cart's lines as `(product id, quantity)`, sorted.
async fn cart_lines(shop: &TestShop, customer: &Session) -> Vec<(String, i64)> {
    let reply = shop.get("/api/carts", Some(&customer.token)).await;
    lines_of(reply.expect(StatusCode::OK))
}

fn lines_of(cart: &Value) -> Vec<(String, i64)> {
    let mut lines: Vec<(String, i64)> = cart["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            let product = item["product_id"].as_str().expect("product_id").to_owned();
            (product, item["quantity"].as_i64().expect("quantity"))
        })
        .collect();
    lines.sort();
    lines
}

/// Waits until the cart holds exactly `expected` (any order).
async fn wait_for_cart(shop: &TestShop, customer: &Session, expected: &[(&str, i64)]) {
    let mut expected: Vec<(String, i64)> = expected
        .iter()
        .map(|(product, quantity)| ((*product).to_owned(), *quantity))
        .collect();
    expected.sort();
    shop.wait_for("/api/carts", Some(&customer.token), SETTLE, |r| {
        r.status == StatusCode::OK && lines_of(&r.body) == expected
    })
    .await;
}

#[tokio::test]
async fn what_a_shopper_adds_after_ordering_stays_in_the_cart() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 500, 10).await;
    let mug = shop.create_product(&admin, 300, 10).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 2).await;
    let first = place(&shop, &customer, None).await;

    // Before or after the confirmation, whichever comes first: the outcome is the same.
    shop.add_to_cart(&customer, &mug, 1).await;
    shop.add_to_cart(&customer, &lamp, 1).await;
    assert_eq!(
        settled(&shop, &customer, &first).await["status"],
        "CONFIRMED"
    );
    // The confirmed order took its two lamps; the mug and the third lamp stay.
    wait_for_cart(&shop, &customer, &[(&lamp, 1), (&mug, 1)]).await;

    // The next basket is ordered as it is, and then the cart is empty.
    let second = place(&shop, &customer, None).await;
    assert_eq!(second["total_cents"], 800);
    assert_eq!(
        settled(&shop, &customer, &second).await["status"],
        "CONFIRMED"
    );
    wait_for_cart(&shop, &customer, &[]).await;
    assert_eq!(stock(&shop, &lamp).await, 7);
    assert_eq!(stock(&shop, &mug).await, 9);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn the_cart_keeps_the_ordered_lines_until_the_order_is_confirmed_and_loses_them_once() {
    let mut shop = TestShop::start_with(Options {
        proxied_nats: true,
        ..Options::default()
    })
    .await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 500, 10).await;
    let mug = shop.create_product(&admin, 300, 10).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 2).await;
    let local = shop.local();
    // With the bus cut, the order stays PENDING for as long as this test needs.
    local.nats_proxy.as_ref().expect("proxied NATS").cut();
    let order = place(&shop, &customer, None).await;
    shop.add_to_cart(&customer, &mug, 1).await;
    let pending = shop
        .get(
            &format!("/api/orders/{}", order["id"].as_str().expect("id")),
            Some(&customer.token),
        )
        .await;
    assert_eq!(pending.expect(StatusCode::OK)["status"], "PENDING");
    let mut expected = vec![(lamp.clone(), 2), (mug.clone(), 1)];
    expected.sort();
    assert_eq!(
        cart_lines(&shop, &customer).await,
        expected,
        "a pending order leaves the cart as it was"
    );

    let local = shop.local();
    local
        .nats_proxy
        .as_ref()
        .expect("proxied NATS")
        .restore()
        .await;
    assert_eq!(
        settled(&shop, &customer, &order).await["status"],
        "CONFIRMED"
    );
    wait_for_cart(&shop, &customer, &[(&mug, 1)]).await;

    // A redelivered order.confirmed (same event, new message id) takes nothing more.
    shop.add_to_cart(&customer, &lamp, 2).await;
    let local = shop.local();
    assert!(local.republish_all_events().await >= 3);
    local.wait_for_consumers_idle(SETTLE).await;
    let mut expected = vec![(lamp.clone(), 2), (mug.clone(), 1)];
    expected.sort();
    assert_eq!(cart_lines(&shop, &customer).await, expected);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn an_order_beyond_the_stock_is_cancelled_and_charges_nothing() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 500, 1).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 1).await;
    // The last one is sold elsewhere between the cart and the checkout.
    let body = json!({"name": "Lamp", "description": "A lamp", "price_cents": 500, "stock": 0});
    shop.put(&format!("/api/products/{lamp}"), Some(&admin.token), &body)
        .await
        .expect(StatusCode::OK);

    let order = settled(&shop, &customer, &place(&shop, &customer, None).await).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["failure_reason"], "out_of_stock");
    assert_eq!(stock(&shop, &lamp).await, 0);
    assert!(
        shop.payment_of(order["id"].as_str().expect("id"))
            .await
            .is_none_or(|p| p.status != "captured")
    );
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_declined_payment_cancels_the_order_and_gives_the_stock_back() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    // Two at 600,000 cents is over the default limit of 1,000,000.
    let tv = shop.create_product(&admin, 600_000, 4).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &tv, 2).await;

    let order = settled(&shop, &customer, &place(&shop, &customer, None).await).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["failure_reason"], "payment_declined");
    shop.wait_for_stock(&tv, 4).await;
    let payment = shop
        .payment_of(order["id"].as_str().expect("id"))
        .await
        .expect("a payment");
    assert_eq!(payment.status, "declined");
}

#[tokio::test]
async fn the_same_idempotency_key_makes_one_order_and_one_charge() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 700, 10).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 1).await;

    let first = place(&shop, &customer, Some("checkout-1")).await;
    let second = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token)
                .header("Idempotency-Key", "checkout-1"),
        )
        .await;
    assert_eq!(second.expect(StatusCode::ACCEPTED)["id"], first["id"]);
    settled(&shop, &customer, &first).await;
    // Even after the cart was emptied, the key still names the same order.
    let third = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token)
                .header("Idempotency-Key", "checkout-1"),
        )
        .await;
    assert_eq!(third.expect(StatusCode::ACCEPTED)["id"], first["id"]);
    let orders = shop.get("/api/orders", Some(&customer.token)).await;
    assert_eq!(
        orders.expect(StatusCode::OK)["items"]
            .as_array()
            .expect("items")
            .len(),
        1
    );
    assert_eq!(stock(&shop, &lamp).await, 9);

    // Another user's identical key is another order.
    let other = shop.customer().await;
    shop.add_to_cart(&other, &lamp, 1).await;
    let theirs = place(&shop, &other, Some("checkout-1")).await;
    assert_ne!(theirs["id"], first["id"]);
}

#[tokio::test]
async fn customers_racing_for_the_last_items_get_exactly_the_stock() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let stock_left = 3;
    let racers = 8;
    let lamp = shop.create_product(&admin, 100, stock_left).await;
    let mut customers = Vec::new();
    for _ in 0..racers {
        let customer = shop.customer().await;
        shop.add_to_cart(&customer, &lamp, 1).await;
        customers.push(customer);
    }
    let orders = futures::future::join_all(customers.iter().map(|c| place(&shop, c, None))).await;
    let mut confirmed = 0;
    for (customer, order) in customers.iter().zip(&orders) {
        let order = settled(&shop, customer, order).await;
        match order["status"].as_str() {
            Some("CONFIRMED") => confirmed += 1,
            _ => assert_eq!(order["failure_reason"], "out_of_stock", "{order}"),
        }
    }
    assert_eq!(confirmed, stock_left);
    assert_eq!(stock(&shop, &lamp).await, 0);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn an_event_delivered_again_under_a_new_message_id_changes_nothing() {
    let mut shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 300, 5).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 2).await;
    let order = settled(&shop, &customer, &place(&shop, &customer, None).await).await;
    assert_eq!(order["status"], "CONFIRMED");

    let local = shop.local();
    let republished = local.republish_all_events().await;
    assert!(
        republished >= 3,
        "order.created, stock.reserved and order.confirmed went by"
    );
    local.wait_for_consumers_idle(SETTLE).await;

    assert_eq!(stock(&shop, &lamp).await, 3, "the stock was taken once");
    let again = shop
        .get(
            &format!("/api/orders/{}", order["id"].as_str().expect("id")),
            Some(&customer.token),
        )
        .await;
    assert_eq!(again.expect(StatusCode::OK)["status"], "CONFIRMED");
    let payment = shop
        .payment_of(order["id"].as_str().expect("id"))
        .await
        .expect("a payment");
    assert_eq!(
        (payment.status.as_str(), payment.amount_cents),
        ("captured", 600)
    );
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn orders_placed_while_nats_is_down_complete_when_it_is_back() {
    let mut shop = TestShop::start_with(Options {
        proxied_nats: true,
        ..Options::default()
    })
    .await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 100, 10).await;
    let mut customers = Vec::new();
    for _ in 0..3 {
        let customer = shop.customer().await;
        shop.add_to_cart(&customer, &lamp, 1).await;
        customers.push(customer);
    }
    let local = shop.local();
    local.nats_proxy.as_ref().expect("proxied NATS").cut();
    let mut orders = Vec::new();
    for customer in &customers {
        orders.push(place(&shop, customer, None).await);
    }
    shop.local()
        .nats_proxy
        .as_ref()
        .expect("proxied NATS")
        .restore()
        .await;
    for (customer, order) in customers.iter().zip(&orders) {
        let order = settled(&shop, customer, order).await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    assert_eq!(stock(&shop, &lamp).await, 7);
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_saga_whose_participant_never_answers_times_out_with_compensation() {
    let shop = TestShop::start_with(Options {
        saga_timeout: Some(Duration::from_secs(1)),
        silent_participants: vec!["product"],
        ..Options::default()
    })
    .await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 100, 10).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 1).await;

    let order = settled(&shop, &customer, &place(&shop, &customer, None).await).await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["failure_reason"], "timeout");
    assert_eq!(stock(&shop, &lamp).await, 10, "nothing was held");
    // The product service never reserved, so nothing was charged; a late charge is voided.
    assert!(
        shop.payment_of(order["id"].as_str().expect("id"))
            .await
            .is_none_or(|p| p.status == "voided"),
        "a late charge cannot take money"
    );
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn cancelling_a_confirmed_order_refunds_it_and_releases_the_stock() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 900, 4).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 3).await;
    let order = settled(&shop, &customer, &place(&shop, &customer, None).await).await;
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(stock(&shop, &lamp).await, 1);
    let id = order["id"].as_str().expect("id");

    let stranger = shop.customer().await;
    shop.post(
        &format!("/api/orders/{id}/cancel"),
        Some(&stranger.token),
        &json!({}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);

    let reply = shop
        .post(
            &format!("/api/orders/{id}/cancel"),
            Some(&customer.token),
            &json!({}),
        )
        .await;
    let cancelled = reply.expect(StatusCode::OK);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["failure_reason"], "cancelled_by_user");
    shop.wait_for_stock(&lamp, 4).await;
    let payment = shop.payment_of(id).await.expect("a payment");
    assert_eq!(payment.status, "refunded");
    // A retried cancel (its first answer lost) answers the cancelled order again.
    let again = shop
        .post(
            &format!("/api/orders/{id}/cancel"),
            Some(&customer.token),
            &json!({}),
        )
        .await;
    assert_eq!(again.expect(StatusCode::OK)["status"], "CANCELLED");
    assert_eq!(stock(&shop, &lamp).await, 4, "released once");
}

#[tokio::test]
async fn orders_are_the_callers_own_and_checked() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 100, 10).await;
    let customer = shop.customer().await;

    // An empty cart cannot be ordered: the request is fine, the cart's state is not.
    let empty = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token),
        )
        .await;
    assert_eq!(
        empty.expect(StatusCode::CONFLICT)["detail"],
        "the cart is empty"
    );
    shop.send(shop.request(Method::POST, "/api/orders"))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let long_key = "k".repeat(256);
    let too_long = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token)
                .header("Idempotency-Key", long_key),
        )
        .await;
    too_long.expect(StatusCode::BAD_REQUEST);

    shop.add_to_cart(&customer, &lamp, 1).await;
    let first = place(&shop, &customer, None).await;
    settled(&shop, &customer, &first).await;
    shop.add_to_cart(&customer, &lamp, 1).await;
    let second = place(&shop, &customer, None).await;
    let list = shop.get("/api/orders", Some(&customer.token)).await;
    let ids: Vec<&Value> = list.expect(StatusCode::OK)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]], "newest first");

    let stranger = shop.customer().await;
    let theirs = format!("/api/orders/{}", first["id"].as_str().expect("id"));
    shop.get(&theirs, Some(&stranger.token))
        .await
        .expect(StatusCode::NOT_FOUND);
    shop.get("/api/orders/not-a-uuid", Some(&customer.token))
        .await
        .expect(StatusCode::BAD_REQUEST);
    shop.get(
        &format!("/api/orders/{}", uuid::Uuid::new_v4()),
        Some(&customer.token),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    assert!(
        shop.get("/api/orders", Some(&stranger.token)).await.body["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_malformed_event_is_dead_lettered_and_changes_nothing() {
    let mut shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 100, 5).await;
    let local = shop.local();
    let dead_letters = local
        .publish_raw("order.created", b"definitely not an envelope")
        .await;
    let dead = local.wait_for_subject(&dead_letters, SETTLE).await;
    assert_eq!(dead.payload.as_ref(), b"definitely not an envelope");
    assert!(dead.headers.get("Souk-Reason").is_some());
    local.wait_for_consumers_idle(SETTLE).await;
    assert_eq!(stock(&shop, &lamp).await, 5);
    let metrics = shop.metrics().await;
    assert!(
        metrics
            .text
            .contains(r#"souk_consumer_dead_letters_total{consumer="product"} 1"#),
        "{}",
        metrics.text
    );
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn with_the_order_database_down_orders_are_503_and_the_rest_of_the_shop_works() {
    let mut shop = TestShop::start_with(Options {
        proxied_databases: vec!["order"],
        ..Options::default()
    })
    .await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 100, 5).await;
    let customer = shop.customer().await;
    shop.add_to_cart(&customer, &lamp, 1).await;
    let local = shop.local();
    local.database_proxies["order"].cut();

    let reply = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token),
        )
        .await;
    reply.expect(StatusCode::SERVICE_UNAVAILABLE);
    shop.get("/api/orders", Some(&customer.token))
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
    // Everything that does not need the order database goes on.
    assert_eq!(stock(&shop, &lamp).await, 5);
    shop.get("/api/carts", Some(&customer.token))
        .await
        .expect(StatusCode::OK);
    shop.get("/api/users/me", Some(&customer.token))
        .await
        .expect(StatusCode::OK);

    shop.local().database_proxies["order"].restore().await;
    let order = shop
        .wait_for("/api/orders", Some(&customer.token), SETTLE, |r| {
            r.status == StatusCode::OK
        })
        .await;
    assert_eq!(
        order.body["items"],
        json!([]),
        "nothing was ordered while it was down"
    );
    let order = settled(&shop, &customer, &place(&shop, &customer, None).await).await;
    assert_eq!(order["status"], "CONFIRMED");
}

/// Issue 13 item 7: requests with one key, a dozen at a time, while the first order confirms
/// and empties the cart; every answer is the one order, never "the cart is empty".
#[tokio::test]
async fn concurrent_requests_with_one_key_all_answer_the_one_order() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 300, 100).await;
    let customer = shop.customer().await;
    for round in 0..6 {
        shop.add_to_cart(&customer, &lamp, 1).await;
        let key = format!("race-{round}");
        let mut ids = Vec::new();
        for _wave in 0..2 {
            let requests = (0..12).map(|_| {
                shop.send(
                    shop.request(Method::POST, "/api/orders")
                        .bearer_auth(&customer.token)
                        .header("Idempotency-Key", &key),
                )
            });
            for reply in futures::future::join_all(requests).await {
                ids.push(reply.expect(StatusCode::ACCEPTED)["id"].clone());
            }
        }
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        settled(&shop, &customer, &json!({"id": ids[0]})).await;
        // The cart is emptied by the cart service's own consumer of order.confirmed: wait for
        // it, or it may empty the next round's line too.
        shop.wait_for("/api/carts", Some(&customer.token), SETTLE, |r| {
            r.body["items"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    }
    shop.wait_for_stock(&lamp, 94).await;
}
