//! The saga survives a crash at its worst instants: each test arms a fault point
//! (`souk_shared::fault`) that fails the step there once, exactly as a crash of the process at
//! that instant would leave it (the call made, its outcome not recorded), and checks that the
//! shop still ends consistent. A file of its own: fault points are armed per process.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use souk_e2e::{SETTLE, Session, TestShop, json};
use souk_shared::fault::{self, Action};

async fn checkout(shop: &TestShop, customer: &Session, lamp: &str, quantity: i64) -> String {
    shop.add_to_cart(customer, lamp, quantity).await;
    let reply = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token),
        )
        .await;
    reply.expect(StatusCode::ACCEPTED)["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn wait_for_order(shop: &TestShop, customer: &Session, id: &str, status: &str) -> Value {
    shop.wait_for(
        &format!("/api/orders/{id}"),
        Some(&customer.token),
        SETTLE,
        |r| r.body["status"] == status,
    )
    .await
    .body
}

/// The order of issue 12: the refund was made, the process died before the order's own commit,
/// and the order stayed CONFIRMED with its money given back. Now the refund's intent is
/// committed first and the step is carried on after the crash.
#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_cancel_that_dies_between_refund_and_commit_still_ends_cancelled_and_refunded() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 1_250, 5).await;
    let customer = shop.customer().await;
    let id = checkout(&shop, &customer, &lamp, 2).await;
    wait_for_order(&shop, &customer, &id, "CONFIRMED").await;
    assert_eq!(
        shop.payment_of(&id).await.expect("payment").status,
        "captured"
    );

    fault::arm("cancel.after_refund", Action::Fail);
    let path = format!("/api/orders/{id}/cancel");
    let reply = shop.post(&path, Some(&customer.token), &json!({})).await;
    reply.expect(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        shop.payment_of(&id).await.expect("payment").status,
        "refunded",
        "the refund was made before the fault"
    );

    // Nobody retries: the worker carries the cancel on by itself.
    let order = wait_for_order(&shop, &customer, &id, "CANCELLED").await;
    assert_eq!(order["failure_reason"], "cancelled_by_user");
    shop.wait_for_stock(&lamp, 5).await;

    // The client's retry, after the fact, answers the cancelled order.
    let again = shop.post(&path, Some(&customer.token), &json!({})).await;
    assert_eq!(again.expect(StatusCode::OK)["status"], "CANCELLED");
    assert_eq!(
        shop.payment_of(&id).await.expect("payment").status,
        "refunded"
    );
}

/// A cancel whose intent was committed, but that died before it called the payment service,
/// is carried out all the same.
#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_cancel_that_dies_before_its_refund_is_carried_out_all_the_same() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 800, 3).await;
    let customer = shop.customer().await;
    let id = checkout(&shop, &customer, &lamp, 1).await;
    wait_for_order(&shop, &customer, &id, "CONFIRMED").await;

    fault::arm("cancel.after_intent", Action::Fail);
    let path = format!("/api/orders/{id}/cancel");
    shop.post(&path, Some(&customer.token), &json!({}))
        .await
        .expect(StatusCode::SERVICE_UNAVAILABLE);
    wait_for_order(&shop, &customer, &id, "CANCELLED").await;
    shop.wait_for_stock(&lamp, 3).await;
    assert_eq!(
        shop.payment_of(&id).await.expect("payment").status,
        "refunded"
    );
}

/// A charge made whose outcome was not recorded (the process died) is made again, which the
/// payment service answers with the first capture: one charge, one confirmed order.
#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_charge_that_dies_before_its_outcome_is_recorded_confirms_the_order_once() {
    let shop = TestShop::start().await;
    fault::arm("charge.after_call", Action::Fail);
    let admin = shop.admin().await;
    let lamp = shop.create_product(&admin, 990, 4).await;
    let customer = shop.customer().await;
    let id = checkout(&shop, &customer, &lamp, 3).await;
    let order = wait_for_order(&shop, &customer, &id, "CONFIRMED").await;
    assert_eq!(order["total_cents"], 2_970);
    let payment = shop.payment_of(&id).await.expect("payment");
    assert_eq!(
        (payment.status.as_str(), payment.amount_cents),
        ("captured", 2_970)
    );
    shop.wait_for_stock(&lamp, 1).await;
}
