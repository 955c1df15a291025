//! The Catalog section of docs/api.md, over HTTP: public reads, admin-only writes, pagination,
//! categories, and the 400/401/403/404/409 answers around them.
//!
//! Exact counts are taken inside a category made by the test, so the tests also hold against a
//! shared shop (`SOUK_E2E_URL`) where other products exist.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use souk_e2e::{Options, Session, TestShop, json};

fn product(name: &str, price_cents: i64, stock: i64) -> Value {
    json!({"name": name, "description": format!("About {name}"), "price_cents": price_cents, "stock": stock})
}

fn in_category(mut body: Value, category_id: &str) -> Value {
    body["category_id"] = json!(category_id);
    body
}

fn id(body: &Value) -> String {
    body["id"].as_str().expect("id").to_owned()
}

fn sorted_keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().expect("object").keys().cloned().collect();
    keys.sort_unstable();
    keys
}

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect()
}

async fn create_product(shop: &TestShop, admin: &Session, body: &Value) -> Value {
    shop.post("/api/products", Some(&admin.token), body)
        .await
        .expect(StatusCode::CREATED)
        .clone()
}

/// A category whose name no other test (or earlier run) used.
async fn create_category(shop: &TestShop, admin: &Session) -> Value {
    let name = format!("Category {}", uuid::Uuid::new_v4().simple());
    let body = json!({"name": name, "description": "made by a test"});
    shop.post("/api/products/categories", Some(&admin.token), &body)
        .await
        .expect(StatusCode::CREATED)
        .clone()
}

#[tokio::test]
async fn an_admin_creates_reads_replaces_and_deletes_a_product() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let created = create_product(&shop, &admin, &product("Sencha", 1_250, 7)).await;
    assert_eq!(
        sorted_keys(&created),
        [
            "category_id",
            "created_at",
            "currency",
            "description",
            "id",
            "name",
            "price_cents",
            "stock",
            "updated_at"
        ]
    );
    assert_eq!(created["name"], "Sencha");
    assert_eq!(created["description"], "About Sencha");
    assert_eq!(created["price_cents"], 1_250);
    assert_eq!(created["currency"], "USD");
    assert_eq!(created["stock"], 7);
    assert_eq!(created["category_id"], Value::Null);
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().expect("created_at"))
            .expect("RFC 3339");
    assert_eq!(created_at.offset().local_minus_utc(), 0);
    let path = format!("/api/products/{}", id(&created));

    // Reads are public.
    assert_eq!(shop.get(&path, None).await.expect(StatusCode::OK), &created);

    let category = create_category(&shop, &admin).await;
    let replacement = json!({"name": "Sencha Superior", "description": "Steamed", "price_cents": 1_900, "stock": 0, "category_id": id(&category)});
    let reply = shop.put(&path, Some(&admin.token), &replacement).await;
    let updated = reply.expect(StatusCode::OK);
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["name"], "Sencha Superior");
    assert_eq!(updated["price_cents"], 1_900);
    assert_eq!(updated["stock"], 0);
    assert_eq!(updated["category_id"], category["id"]);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    assert_eq!(shop.get(&path, None).await.expect(StatusCode::OK), updated);

    let deleted = shop.delete(&path, Some(&admin.token)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    shop.get(&path, None).await.expect(StatusCode::NOT_FOUND);
    shop.delete(&path, Some(&admin.token))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn catalog_writes_need_an_admin() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let customer = shop.customer().await;
    let category = create_category(&shop, &admin).await;
    let existing = create_product(
        &shop,
        &admin,
        &in_category(product("Sencha", 100, 1), &id(&category)),
    )
    .await;
    let product_path = format!("/api/products/{}", id(&existing));
    let category_path = format!("/api/products/categories/{}", id(&category));
    let new_category = json!({"name": "Coffee", "description": ""});
    let renamed = json!({"id": id(&category), "name": "Renamed", "description": ""});

    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("garbage"), StatusCode::UNAUTHORIZED),
        (Some(customer.token.as_str()), StatusCode::FORBIDDEN),
    ] {
        let replies = [
            shop.post("/api/products", token, &product("Matcha", 1, 1))
                .await,
            shop.put(&product_path, token, &product("Renamed", 1, 1))
                .await,
            shop.delete(&product_path, token).await,
            shop.post("/api/products/categories", token, &new_category)
                .await,
            shop.put("/api/products/categories", token, &renamed).await,
            shop.put(&category_path, token, &new_category).await,
            shop.delete(&category_path, token).await,
        ];
        for reply in replies {
            reply.expect(status);
        }
    }
    // The role is checked before the body: a customer's malformed body is still a 403.
    let raw = shop
        .request(Method::POST, "/api/products")
        .bearer_auth(&customer.token)
        .header("content-type", "application/json")
        .body("{not json");
    shop.send(raw).await.expect(StatusCode::FORBIDDEN);

    // Nothing changed.
    assert_eq!(
        shop.get(&product_path, None).await.expect(StatusCode::OK),
        &existing
    );
    let listed = shop.get(&category_path, None).await;
    assert_eq!(names(listed.expect(StatusCode::OK)), ["Sencha"]);
    let categories = shop.get("/api/products/categories", None).await;
    let categories = categories.expect(StatusCode::OK)["items"]
        .as_array()
        .expect("items")
        .clone();
    assert!(categories.iter().any(|c| c == &category));
    assert!(
        !categories
            .iter()
            .any(|c| c["name"] == "Coffee" || c["name"] == "Renamed")
    );
}

#[tokio::test]
async fn invalid_products_are_bad_requests_naming_the_field() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let category = create_category(&shop, &admin).await;
    let unknown_category = uuid::Uuid::new_v4().to_string();
    let in_it = |body: Value| in_category(body, &id(&category));
    let cases = [
        (in_it(product("", 1, 1)), "name"),
        (in_it(product(&"n".repeat(201), 1, 1)), "name"),
        (in_it(product("Tea", -1, 1)), "price_cents"),
        (in_it(product("Tea", 1, -1)), "stock"),
        (
            in_it(json!({"name": "Tea", "description": "", "price_cents": 1.5, "stock": 1})),
            "price_cents",
        ),
        (
            in_it(json!({"name": "Tea", "description": "", "price_cents": 1, "stock": 2.5})),
            "stock",
        ),
        (
            in_it(json!({"name": "Tea", "description": "", "price_cents": 1, "stock": 1e19})),
            "stock",
        ),
        (
            in_it(json!({"name": "Tea", "description": "", "price_cents": "1", "stock": 1})),
            "price_cents",
        ),
        (
            in_it(json!({"name": "Tea", "description": "", "price_cents": 1, "stock": null})),
            "stock",
        ),
        (
            in_it(json!({"name": 7, "description": "", "price_cents": 1, "stock": 1})),
            "name",
        ),
        (in_category(product("Tea", 1, 1), "tea"), "category_id"),
        (
            in_category(product("Tea", 1, 1), &unknown_category),
            "category_id",
        ),
    ];
    for (body, field) in cases {
        let reply = shop.post("/api/products", Some(&admin.token), &body).await;
        let problem = reply.expect(StatusCode::BAD_REQUEST);
        assert!(
            problem["errors"][field].is_string(),
            "{field}: {}",
            reply.text
        );
    }
    // JSON Schema counts 2.0 as an integer, and so do we.
    // (Outside the category, whose products are counted below.)
    let whole = json!({"name": "Tea", "description": "", "price_cents": 150.0, "stock": 2.0});
    let created = shop.post("/api/products", Some(&admin.token), &whole).await;
    let created = created.expect(StatusCode::CREATED);
    assert_eq!(
        (&created["price_cents"], &created["stock"]),
        (&json!(150), &json!(2))
    );

    let missing = in_it(json!({"name": "Tea", "price_cents": 1, "stock": 1}));
    let reply = shop
        .post("/api/products", Some(&admin.token), &missing)
        .await;
    assert!(
        reply.expect(StatusCode::BAD_REQUEST)["detail"]
            .as_str()
            .expect("detail")
            .contains("description")
    );
    let raw = shop
        .request(Method::POST, "/api/products")
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{\"name\": ");
    shop.send(raw).await.expect(StatusCode::BAD_REQUEST);

    // A replacement is checked the same way, and leaves the product as it was.
    let existing = create_product(&shop, &admin, &in_it(product("Sencha", 100, 5))).await;
    let path = format!("/api/products/{}", id(&existing));
    shop.put(&path, Some(&admin.token), &product("Sencha", 100, -5))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert_eq!(
        shop.get(&path, None).await.expect(StatusCode::OK),
        &existing
    );

    let listed = shop
        .get(&format!("/api/products/categories/{}", id(&category)), None)
        .await;
    assert_eq!(
        listed.expect(StatusCode::OK)["total"],
        1,
        "only the valid product was made"
    );
}

#[tokio::test]
async fn a_category_lists_its_products_page_by_page_newest_first() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let category = create_category(&shop, &admin).await;
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        create_product(
            &shop,
            &admin,
            &in_category(product(name, 100, 1), &id(&category)),
        )
        .await;
    }
    let base = format!("/api/products/categories/{}", id(&category));
    let page = |n: u32| format!("{base}?page={n}&page_size=2");

    let first = shop.get(&page(1), None).await;
    let first = first.expect(StatusCode::OK);
    assert_eq!(sorted_keys(first), ["items", "page", "page_size", "total"]);
    assert_eq!(names(first), ["p5", "p4"]);
    assert_eq!(
        (&first["page"], &first["page_size"], &first["total"]),
        (&json!(1), &json!(2), &json!(5))
    );
    let second = shop.get(&page(2), None).await;
    assert_eq!(names(second.expect(StatusCode::OK)), ["p3", "p2"]);
    let last = shop.get(&page(3), None).await;
    let last = last.expect(StatusCode::OK);
    assert_eq!(names(last), ["p1"]);
    assert_eq!(last["total"], 5);
    let past = shop.get(&page(4), None).await;
    let past = past.expect(StatusCode::OK);
    assert!(names(past).is_empty());
    assert_eq!((&past["page"], &past["total"]), (&json!(4), &json!(5)));

    // Without parameters: the first page of 20.
    let all = shop.get(&base, None).await;
    let all = all.expect(StatusCode::OK);
    assert_eq!((&all["page"], &all["page_size"]), (&json!(1), &json!(20)));
    assert_eq!(names(all), ["p5", "p4", "p3", "p2", "p1"]);
}

#[tokio::test]
async fn the_product_list_is_newest_first_in_a_stable_order() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let mut made = Vec::new();
    for name in ["first", "second", "third"] {
        made.push(id(
            &create_product(&shop, &admin, &product(name, 100, 1)).await
        ));
    }
    let reply = shop.get("/api/products?page=1&page_size=100", None).await;
    let page = reply.expect(StatusCode::OK);
    assert_eq!(
        (&page["page"], &page["page_size"]),
        (&json!(1), &json!(100))
    );
    assert!(page["total"].as_i64().expect("total") >= 3);
    let items = page["items"].as_array().expect("items");
    // Sorted by (created_at, id), descending.
    let keys: Vec<(chrono::DateTime<chrono::FixedOffset>, &str)> = items
        .iter()
        .map(|p| {
            let at =
                chrono::DateTime::parse_from_rfc3339(p["created_at"].as_str().expect("created_at"))
                    .expect("RFC 3339");
            (at, p["id"].as_str().expect("id"))
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {keys:?}"
    );
    let positions: Vec<usize> = made
        .iter()
        .rev()
        .map(|id| items.iter().position(|p| p["id"] == *id).expect("listed"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    // The same request gives the same order (of the products listed both times: on a shared
    // shop others may come and go in between).
    let again = shop.get("/api/products?page=1&page_size=100", None).await;
    let again = again.expect(StatusCode::OK);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (first, second) = (ids(page), ids(again));
    let in_both = |of: &[String], other: &[String]| -> Vec<String> {
        of.iter().filter(|id| other.contains(id)).cloned().collect()
    };
    assert_eq!(in_both(&first, &second), in_both(&second, &first));
    assert!(made.iter().all(|id| second.contains(id)), "{second:?}");
}

#[tokio::test]
async fn bad_page_parameters_are_bad_requests_naming_them() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let category = create_category(&shop, &admin).await;
    for base in [
        "/api/products".to_owned(),
        format!("/api/products/categories/{}", id(&category)),
    ] {
        for (query, field) in [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=abc", "page"),
            ("page=1.5", "page"),
            ("page_size=0", "page_size"),
            ("page_size=101", "page_size"),
            ("page_size=-20", "page_size"),
            ("page_size=ten", "page_size"),
            ("page=1&page_size=99999999999999999999", "page_size"),
        ] {
            let reply = shop.get(&format!("{base}?{query}"), None).await;
            let problem = reply.expect(StatusCode::BAD_REQUEST);
            assert!(
                problem["errors"][field].is_string(),
                "{base}?{query}: {}",
                reply.text
            );
        }
        shop.get(&format!("{base}?page=1&page_size=100"), None)
            .await
            .expect(StatusCode::OK);
        // Empty values, as in `?page=&page_size=`, are the defaults.
        let reply = shop.get(&format!("{base}?page=&page_size="), None).await;
        let page = reply.expect(StatusCode::OK);
        assert_eq!((&page["page"], &page["page_size"]), (&json!(1), &json!(20)));
        shop.get(
            &format!("{base}?page=9223372036854775807&page_size=100"),
            None,
        )
        .await
        .expect(StatusCode::OK);
    }
}

#[tokio::test]
async fn malformed_ids_are_bad_requests_and_unknown_ids_not_found() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let token = Some(admin.token.as_str());
    let body = product("Tea", 1, 1);
    let category = json!({"name": "Tea", "description": ""});
    for bad in ["not-a-uuid", "123", "0000"] {
        shop.get(&format!("/api/products/{bad}"), None)
            .await
            .expect(StatusCode::BAD_REQUEST);
        shop.put(&format!("/api/products/{bad}"), token, &body)
            .await
            .expect(StatusCode::BAD_REQUEST);
        shop.delete(&format!("/api/products/{bad}"), token)
            .await
            .expect(StatusCode::BAD_REQUEST);
        shop.get(&format!("/api/products/categories/{bad}"), None)
            .await
            .expect(StatusCode::BAD_REQUEST);
        shop.put(&format!("/api/products/categories/{bad}"), token, &category)
            .await
            .expect(StatusCode::BAD_REQUEST);
        shop.delete(&format!("/api/products/categories/{bad}"), token)
            .await
            .expect(StatusCode::BAD_REQUEST);
    }
    let reply = shop
        .put(
            "/api/products/categories",
            token,
            &json!({"id": "tea", "name": "Tea", "description": ""}),
        )
        .await;
    assert!(
        reply.expect(StatusCode::BAD_REQUEST)["errors"]["id"].is_string(),
        "{}",
        reply.text
    );

    let unknown = uuid::Uuid::new_v4();
    shop.get(&format!("/api/products/{unknown}"), None)
        .await
        .expect(StatusCode::NOT_FOUND);
    shop.put(&format!("/api/products/{unknown}"), token, &body)
        .await
        .expect(StatusCode::NOT_FOUND);
    shop.delete(&format!("/api/products/{unknown}"), token)
        .await
        .expect(StatusCode::NOT_FOUND);
    shop.get(&format!("/api/products/categories/{unknown}"), None)
        .await
        .expect(StatusCode::NOT_FOUND);
    shop.put(
        &format!("/api/products/categories/{unknown}"),
        token,
        &category,
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    shop.put(
        "/api/products/categories",
        token,
        &json!({"id": unknown, "name": "Tea"}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    shop.delete(&format!("/api/products/categories/{unknown}"), token)
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn categories_are_created_renamed_listed_and_deleted_by_an_admin() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let token = Some(admin.token.as_str());
    let name = format!("Tea {}", uuid::Uuid::new_v4().simple());
    let reply = shop
        .post(
            "/api/products/categories",
            token,
            &json!({"name": name, "description": "Leaves"}),
        )
        .await;
    let tea = reply.expect(StatusCode::CREATED).clone();
    assert_eq!(sorted_keys(&tea), ["description", "id", "name"]);
    assert_eq!(
        (&tea["name"], &tea["description"]),
        (&json!(name), &json!("Leaves"))
    );

    // The description may be left out.
    let other = shop
        .post(
            "/api/products/categories",
            token,
            &json!({"name": format!("{name} 2")}),
        )
        .await;
    let other = other.expect(StatusCode::CREATED).clone();
    assert_eq!(other["description"], "");

    let listed = shop.get("/api/products/categories", None).await;
    let listed = listed.expect(StatusCode::OK);
    assert_eq!(sorted_keys(listed), ["items"]);
    assert!(listed["items"].as_array().expect("items").contains(&tea));

    // Renamed through either form of PUT.
    let body = json!({"id": id(&tea), "name": format!("{name} (green)"), "description": "Steamed"});
    let renamed = shop.put("/api/products/categories", token, &body).await;
    assert_eq!(renamed.expect(StatusCode::OK), &body);
    let path = format!("/api/products/categories/{}", id(&tea));
    let body = json!({"name": name.to_uppercase(), "description": "Any"});
    let renamed = shop.put(&path, token, &body).await;
    let renamed = renamed.expect(StatusCode::OK);
    assert_eq!(
        (&renamed["id"], &renamed["name"]),
        (&tea["id"], &json!(name.to_uppercase()))
    );

    let gone = shop.delete(&path, token).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let listed = shop.get("/api/products/categories", None).await;
    let listed = listed.expect(StatusCode::OK)["items"]
        .as_array()
        .expect("items")
        .clone();
    assert!(!listed.iter().any(|c| c["id"] == tea["id"]));
    assert!(listed.contains(&other));
    shop.get(&path, None).await.expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn category_names_conflict_whatever_their_case() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let token = Some(admin.token.as_str());
    let tea = create_category(&shop, &admin).await;
    let coffee = create_category(&shop, &admin).await;
    let tea_name = tea["name"].as_str().expect("name");
    let reply = shop
        .post(
            "/api/products/categories",
            token,
            &json!({"name": tea_name.to_uppercase()}),
        )
        .await;
    reply.expect(StatusCode::CONFLICT);
    let reply = shop
        .put(
            "/api/products/categories",
            token,
            &json!({"id": id(&coffee), "name": tea_name.to_lowercase()}),
        )
        .await;
    reply.expect(StatusCode::CONFLICT);
    let reply = shop
        .get(&format!("/api/products/categories/{}", id(&coffee)), None)
        .await;
    reply.expect(StatusCode::OK);
    let listed = shop.get("/api/products/categories", None).await;
    assert!(
        listed.expect(StatusCode::OK)["items"]
            .as_array()
            .expect("items")
            .contains(&coffee)
    );
    let bad = shop
        .post("/api/products/categories", token, &json!({"name": ""}))
        .await;
    assert!(bad.expect(StatusCode::BAD_REQUEST)["errors"]["name"].is_string());
}

#[tokio::test]
async fn a_category_with_products_cannot_be_deleted() {
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let token = Some(admin.token.as_str());
    let category = create_category(&shop, &admin).await;
    let path = format!("/api/products/categories/{}", id(&category));
    let sencha = create_product(
        &shop,
        &admin,
        &in_category(product("Sencha", 100, 1), &id(&category)),
    )
    .await;
    shop.delete(&path, token).await.expect(StatusCode::CONFLICT);
    let listed = shop.get(&path, None).await;
    assert_eq!(listed.expect(StatusCode::OK)["total"], 1);

    // Moved out of the category, the product no longer holds it.
    let moved = shop
        .put(
            &format!("/api/products/{}", id(&sencha)),
            token,
            &product("Sencha", 100, 1),
        )
        .await;
    assert_eq!(moved.expect(StatusCode::OK)["category_id"], Value::Null);
    assert_eq!(
        shop.delete(&path, token).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn readiness_covers_the_catalog_and_cart_services() {
    let shop = TestShop::start().await;
    let reply = shop.get("/readyz", None).await;
    let ready = reply.expect(StatusCode::OK);
    assert_eq!(ready["services"]["product"], "serving");
    assert_eq!(ready["services"]["cart"], "serving");
}

#[tokio::test]
#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
async fn a_lost_product_database_is_a_503_and_the_catalog_recovers() {
    let mut shop = TestShop::start_with(Options {
        proxied_databases: vec!["product"],
        ..Options::default()
    })
    .await;
    let admin = shop.admin().await;
    let made = create_product(&shop, &admin, &product("Sencha", 100, 1)).await;
    let path = format!("/api/products/{}", id(&made));
    let local = shop.local();
    local.database_proxies["product"].cut();
    for reply in [
        shop.get(&path, None).await,
        shop.get("/api/products", None).await,
        shop.post(
            "/api/products",
            Some(&admin.token),
            &product("Matcha", 1, 1),
        )
        .await,
    ] {
        reply.expect(StatusCode::SERVICE_UNAVAILABLE);
        assert!(!reply.text.to_lowercase().contains("sql"), "{}", reply.text);
    }
    shop.local().database_proxies["product"].restore().await;
    shop.wait_for(&path, None, std::time::Duration::from_secs(10), |r| {
        r.status == StatusCode::OK
    })
    .await;
    create_product(&shop, &admin, &product("Matcha", 1, 1)).await;
}
