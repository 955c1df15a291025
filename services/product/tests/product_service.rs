//! The product service's RPCs against a real PostgreSQL database of their own.

use std::time::Duration;

use souk_product::Settings;
use souk_protos::v1::{
    BatchGetProductsRequest, CreateCategoryRequest, CreateProductRequest, DeleteCategoryRequest,
    DeleteProductRequest, GetCategoryRequest, GetProductRequest, ListCategoriesRequest,
    ListProductsRequest, Product, ProductInput, ProductPage, UpdateCategoryRequest,
    UpdateProductRequest, product_service_client::ProductServiceClient,
};
use souk_shared::{
    Shutdown,
    auth::with_token,
    db::DatabaseLocation,
    jwt::{KeyPair, Role, Signer, Verifier},
    testing::{TestDatabase, listener},
};
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

struct App {
    client: ProductServiceClient<Channel>,
    admin: String,
    customer: String,
    /// Another Souk service acting on its own: not an admin either.
    service: String,
    db: TestDatabase,
    shutdown: Shutdown,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn app() -> App {
    let db = TestDatabase::create().await;
    let keys = KeyPair::generate().expect("keys");
    let signer =
        Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(900)).expect("signer");
    let service = souk_product::service(Settings {
        database: DatabaseLocation::Own(db.url()),
        shop: souk_shared::testing::unique_shop(),
        verifier: Verifier::from_pem(&keys.public_pem).expect("verifier"),
        events: None,
    })
    .expect("settings")
    .ready()
    .await
    .expect("start");
    let listener = listener().await;
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(service.serve(listener, shutdown.clone()));
    let client = ProductServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    App {
        client,
        admin: signer
            .sign(Uuid::new_v4(), Role::Admin)
            .expect("admin token"),
        customer: signer
            .sign(Uuid::new_v4(), Role::Customer)
            .expect("customer token"),
        service: signer
            .sign(Uuid::new_v4(), Role::Service)
            .expect("service token"),
        db,
        shutdown,
    }
}

fn input(name: &str, price_cents: i64, stock: i64) -> ProductInput {
    ProductInput {
        name: name.into(),
        description: format!("About {name}"),
        price_cents,
        stock,
        category_id: None,
    }
}

fn in_category(mut input: ProductInput, category_id: &str) -> ProductInput {
    input.category_id = Some(category_id.into());
    input
}

fn page(page: i64, page_size: i64) -> ListProductsRequest {
    ListProductsRequest {
        page,
        page_size,
        category_id: None,
    }
}

fn at(timestamp: &Option<prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    souk_shared::time::from_proto(timestamp.as_ref())
}

fn names(page: &ProductPage) -> Vec<&str> {
    page.items.iter().map(|p| p.name.as_str()).collect()
}

impl App {
    fn as_admin<T>(&self, message: T) -> Request<T> {
        with_token(message, &self.admin)
    }

    async fn create(&mut self, input: ProductInput) -> Result<Product, Status> {
        let request = self.as_admin(CreateProductRequest {
            product: Some(input),
        });
        Ok(self.client.create_product(request).await?.into_inner())
    }

    async fn product(&mut self, name: &str) -> Product {
        self.create(input(name, 250, 10)).await.expect("create")
    }

    async fn category(&mut self, name: &str) -> String {
        let request = self.as_admin(CreateCategoryRequest {
            name: name.into(),
            description: String::new(),
        });
        self.client
            .create_category(request)
            .await
            .expect("create category")
            .into_inner()
            .id
    }

    async fn get(&mut self, id: &str) -> Result<Product, Status> {
        let request = GetProductRequest { id: id.into() };
        Ok(self.client.get_product(request).await?.into_inner())
    }

    async fn list(&mut self, request: ListProductsRequest) -> Result<ProductPage, Status> {
        Ok(self.client.list_products(request).await?.into_inner())
    }

    async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.db.url)
            .await
            .expect("connect to the test database")
    }
}

#[tokio::test]
async fn an_admin_creates_a_product_priced_in_usd_cents() {
    let mut app = app().await;
    let category = app.category("Tea").await;
    let created = app
        .create(in_category(input("  Sencha ", 1_250, 7), &category))
        .await
        .expect("create");
    assert!(Uuid::parse_str(&created.id).is_ok());
    assert_eq!(created.name, "Sencha");
    assert_eq!(
        created.description, "About   Sencha ",
        "descriptions are kept as given"
    );
    assert_eq!(created.price_cents, 1_250);
    assert_eq!(created.currency, "USD");
    assert_eq!(created.stock, 7);
    assert_eq!(created.category_id.as_deref(), Some(category.as_str()));
    assert!(created.created_at.is_some());
    assert_eq!(created.created_at, created.updated_at);

    assert_eq!(app.get(&created.id).await.expect("get"), created);
}

#[tokio::test]
async fn writes_need_an_admin_token_and_change_nothing_otherwise() {
    let mut app = app().await;
    let product = app.product("Sencha").await;
    let category = app.category("Tea").await;
    let (customer, service) = (app.customer.clone(), app.service.clone());
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("not-a-jwt"), Code::Unauthenticated),
        (Some(customer.as_str()), Code::PermissionDenied),
        (Some(service.as_str()), Code::PermissionDenied),
    ] {
        fn request<T>(message: T, token: Option<&str>) -> Request<T> {
            match token {
                Some(token) => with_token(message, token),
                None => Request::new(message),
            }
        }
        let mut client = app.client.clone();
        let results = [
            client
                .create_product(request(
                    CreateProductRequest {
                        product: Some(input("Matcha", 1, 1)),
                    },
                    token,
                ))
                .await
                .map(drop),
            client
                .update_product(request(
                    UpdateProductRequest {
                        id: product.id.clone(),
                        product: Some(input("Renamed", 1, 0)),
                        if_version: None,
                    },
                    token,
                ))
                .await
                .map(drop),
            client
                .delete_product(request(
                    DeleteProductRequest {
                        id: product.id.clone(),
                    },
                    token,
                ))
                .await
                .map(drop),
            client
                .create_category(request(
                    CreateCategoryRequest {
                        name: "Coffee".into(),
                        description: String::new(),
                    },
                    token,
                ))
                .await
                .map(drop),
            client
                .update_category(request(
                    UpdateCategoryRequest {
                        id: category.clone(),
                        name: "Renamed".into(),
                        description: String::new(),
                    },
                    token,
                ))
                .await
                .map(drop),
            client
                .delete_category(request(
                    DeleteCategoryRequest {
                        id: category.clone(),
                    },
                    token,
                ))
                .await
                .map(drop),
        ];
        for (i, result) in results.into_iter().enumerate() {
            let err = result.expect_err("refused");
            assert_eq!(err.code(), code, "write #{i} with {token:?}");
        }
    }
    // Even a malformed body is refused for the role first: a customer learns nothing more.
    let err = app
        .client
        .create_product(with_token(
            CreateProductRequest { product: None },
            &app.customer,
        ))
        .await
        .expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied);

    assert_eq!(app.get(&product.id).await.expect("still there"), product);
    let all = app.list(page(1, 100)).await.expect("list");
    assert_eq!(names(&all), ["Sencha"]);
    let categories = app
        .client
        .list_categories(ListCategoriesRequest {})
        .await
        .expect("categories")
        .into_inner();
    assert_eq!(categories.items.len(), 1);
    assert_eq!(categories.items[0].name, "Tea");
}

#[tokio::test]
async fn invalid_products_are_rejected_naming_the_field_and_create_nothing() {
    let mut app = app().await;
    let unknown_category = Uuid::now_v7().to_string();
    let cases = [
        (input("", 1, 1), "name"),
        (input("   ", 1, 1), "name"),
        (input(&"n".repeat(201), 1, 1), "name"),
        (input("Tea", -1, 1), "price_cents"),
        (input("Tea", 1, -1), "stock"),
        (in_category(input("Tea", 1, 1), "tea"), "category_id"),
        (
            in_category(input("Tea", 1, 1), &unknown_category),
            "category_id",
        ),
        (
            ProductInput {
                description: "d".repeat(5_001),
                ..input("Tea", 1, 1)
            },
            "description",
        ),
    ];
    for (input, field) in cases {
        let err = app.create(input).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            err.message()
        );
    }
    let err = app
        .client
        .create_product(app.as_admin(CreateProductRequest { product: None }))
        .await
        .expect_err("no product");
    assert_eq!(err.code(), Code::InvalidArgument);

    let all = app.list(page(1, 100)).await.expect("list");
    assert_eq!(all.total, 0);
    assert!(all.items.is_empty());
}

#[tokio::test]
async fn an_update_replaces_every_field_and_moves_updated_at() {
    let mut app = app().await;
    let product = app.product("Sencha").await;
    let category = app.category("Green tea").await;
    let updated = app
        .client
        .update_product(app.as_admin(UpdateProductRequest {
            id: product.id.clone(),
            product: Some(ProductInput {
                description: "Steamed".into(),
                ..in_category(input("Sencha Superior", 1_900, 0), &category)
            }),
            if_version: None,
        }))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.id, product.id);
    assert_eq!(updated.name, "Sencha Superior");
    assert_eq!(updated.description, "Steamed");
    assert_eq!(updated.price_cents, 1_900);
    assert_eq!(updated.stock, 0);
    assert_eq!(updated.category_id, Some(category));
    assert_eq!(updated.created_at, product.created_at);
    assert!(at(&updated.updated_at) > at(&product.updated_at));
    assert_eq!(app.get(&product.id).await.expect("get"), updated);

    // And back out of the category.
    let uncategorised = app
        .client
        .update_product(app.as_admin(UpdateProductRequest {
            id: product.id.clone(),
            product: Some(input("Sencha", 1_900, 3)),
            if_version: None,
        }))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(uncategorised.category_id, None);
}

#[tokio::test]
async fn an_update_from_a_stale_version_is_refused_and_changes_nothing() {
    let mut app = app().await;
    let product = app.create(input("Sencha", 100, 5)).await.expect("create");
    assert_eq!(product.version, 1);
    let update = |if_version, stock| UpdateProductRequest {
        id: product.id.clone(),
        product: Some(input("Sencha", 100, stock)),
        if_version,
    };

    let updated = app
        .client
        .update_product(app.as_admin(update(Some(1), 7)))
        .await
        .expect("an update from the current version")
        .into_inner();
    assert_eq!((updated.stock, updated.version), (7, 2));

    // Another update from version 1 would undo the one above: refused, nothing changed.
    let stale = app
        .client
        .update_product(app.as_admin(update(Some(1), 9)))
        .await
        .expect_err("an update from a stale version");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(stale.message().contains("version 2"), "{}", stale.message());
    assert_eq!(app.get(&product.id).await.expect("get"), updated);

    let zero = app
        .client
        .update_product(app.as_admin(update(Some(0), 9)))
        .await
        .expect_err("version 0");
    assert_eq!(zero.code(), Code::InvalidArgument);
    assert!(
        zero.message().starts_with("if_version: "),
        "{}",
        zero.message()
    );
    assert_eq!(app.get(&product.id).await.expect("get"), updated);

    let unknown = app
        .client
        .update_product(app.as_admin(UpdateProductRequest {
            id: Uuid::now_v7().to_string(),
            ..update(Some(2), 9)
        }))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    // Without a version, an update replaces whatever is there.
    let unconditional = app
        .client
        .update_product(app.as_admin(update(None, 9)))
        .await
        .expect("an unconditional update")
        .into_inner();
    assert_eq!((unconditional.stock, unconditional.version), (9, 3));
}

#[tokio::test]
async fn updating_an_unknown_or_malformed_product_fails_cleanly() {
    let mut app = app().await;
    let product = app.product("Sencha").await;
    let unknown = app
        .client
        .update_product(app.as_admin(UpdateProductRequest {
            id: Uuid::now_v7().to_string(),
            product: Some(input("Ghost", 1, 1)),
            if_version: None,
        }))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = app
        .client
        .update_product(app.as_admin(UpdateProductRequest {
            id: "42".into(),
            product: Some(input("Ghost", 1, 1)),
            if_version: None,
        }))
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().starts_with("id: "));
    let invalid = app
        .client
        .update_product(app.as_admin(UpdateProductRequest {
            id: product.id.clone(),
            product: Some(input("Sencha", 1, -5)),
            if_version: None,
        }))
        .await
        .expect_err("negative stock");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(app.get(&product.id).await.expect("unchanged"), product);
}

#[tokio::test]
async fn a_deleted_product_is_gone() {
    let mut app = app().await;
    let product = app.product("Sencha").await;
    let keep = app.product("Matcha").await;
    app.client
        .delete_product(app.as_admin(DeleteProductRequest {
            id: product.id.clone(),
        }))
        .await
        .expect("delete");
    assert_eq!(
        app.get(&product.id).await.expect_err("gone").code(),
        Code::NotFound
    );
    let again = app
        .client
        .delete_product(app.as_admin(DeleteProductRequest {
            id: product.id.clone(),
        }))
        .await
        .expect_err("twice");
    assert_eq!(again.code(), Code::NotFound);
    let malformed = app
        .client
        .delete_product(app.as_admin(DeleteProductRequest { id: "x".into() }))
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let all = app.list(page(1, 20)).await.expect("list");
    assert_eq!(all.total, 1);
    assert_eq!(all.items, [keep]);
}

#[tokio::test]
async fn getting_an_unknown_or_malformed_product_fails_cleanly() {
    let mut app = app().await;
    let err = app
        .get(&Uuid::now_v7().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let err = app.get("not-a-uuid").await.expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn pages_run_newest_first_to_a_last_partial_page_and_then_nothing() {
    let mut app = app().await;
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        app.product(name).await;
    }
    let first = app.list(page(1, 2)).await.expect("first page");
    assert_eq!(names(&first), ["p5", "p4"]);
    assert_eq!((first.page, first.page_size, first.total), (1, 2, 5));
    let second = app.list(page(2, 2)).await.expect("second page");
    assert_eq!(names(&second), ["p3", "p2"]);
    let last = app.list(page(3, 2)).await.expect("last page");
    assert_eq!(names(&last), ["p1"]);
    assert_eq!(last.total, 5);
    let past = app.list(page(4, 2)).await.expect("past the end");
    assert!(past.items.is_empty());
    assert_eq!((past.page, past.page_size, past.total), (4, 2, 5));
    let far = app
        .list(page(i64::MAX, 100))
        .await
        .expect("far past the end");
    assert!(far.items.is_empty());
    assert_eq!(far.total, 5);

    let whole = app.list(page(1, 5)).await.expect("one page");
    assert_eq!(names(&whole), ["p5", "p4", "p3", "p2", "p1"]);
}

#[tokio::test]
async fn an_unset_page_takes_the_defaults() {
    let mut app = app().await;
    for i in 0..21 {
        app.product(&format!("p{i}")).await;
    }
    let listed = app.list(page(0, 0)).await.expect("defaults");
    assert_eq!((listed.page, listed.page_size, listed.total), (1, 20, 21));
    assert_eq!(listed.items.len(), 20);
}

#[tokio::test]
async fn out_of_range_pages_are_invalid() {
    let mut app = app().await;
    for (request, field) in [
        (page(-1, 10), "page"),
        (page(1, 101), "page_size"),
        (page(1, -1), "page_size"),
    ] {
        let err = app.list(request).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(&format!("{field}: ")), "{err:?}");
    }
    let max = app.list(page(1, 100)).await.expect("100 is allowed");
    assert_eq!(max.page_size, 100);
}

#[tokio::test]
async fn products_created_at_the_same_moment_are_ordered_by_id() {
    let app = app().await;
    let pool = app.pool().await;
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    for id in ids {
        sqlx::query(
            "insert into products (id, name, price_cents, stock, created_at)
             values ($1, 'same moment', 1, 1, '2026-01-01T00:00:00Z')",
        )
        .bind(id)
        .execute(&pool)
        .await
        .expect("insert");
    }
    let mut expected: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let mut client = app.client.clone();
    let mut seen = Vec::new();
    for number in 1..=3 {
        let listed = client
            .list_products(page(number, 1))
            .await
            .expect("page")
            .into_inner();
        seen.extend(listed.items.into_iter().map(|p| p.id));
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_category_lists_only_its_own_products() {
    let mut app = app().await;
    let tea = app.category("Tea").await;
    let coffee = app.category("Coffee").await;
    app.create(in_category(input("Sencha", 1, 1), &tea))
        .await
        .expect("sencha");
    app.create(in_category(input("Arabica", 1, 1), &coffee))
        .await
        .expect("arabica");
    app.create(in_category(input("Matcha", 1, 1), &tea))
        .await
        .expect("matcha");
    app.product("Uncategorised").await;

    let listed = app
        .list(ListProductsRequest {
            category_id: Some(tea.clone()),
            ..page(1, 1)
        })
        .await
        .expect("tea, first page");
    assert_eq!(names(&listed), ["Matcha"]);
    assert_eq!(listed.total, 2);
    let listed = app
        .list(ListProductsRequest {
            category_id: Some(tea.clone()),
            ..page(2, 1)
        })
        .await
        .expect("tea, second page");
    assert_eq!(names(&listed), ["Sencha"]);

    let empty = app.category("Cocoa").await;
    let listed = app
        .list(ListProductsRequest {
            category_id: Some(empty),
            ..page(1, 20)
        })
        .await
        .expect("empty category");
    assert_eq!(listed.total, 0);

    let err = app
        .list(ListProductsRequest {
            category_id: Some(Uuid::now_v7().to_string()),
            ..page(1, 20)
        })
        .await
        .expect_err("unknown category");
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .list(ListProductsRequest {
            category_id: Some("tea".into()),
            ..page(1, 20)
        })
        .await
        .expect_err("malformed category");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_batch_get_answers_the_known_products_once_in_the_order_asked() {
    let mut app = app().await;
    let a = app.product("a").await;
    let b = app.product("b").await;
    let unknown = Uuid::now_v7().to_string();
    let found = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            ids: vec![b.id.clone(), unknown, a.id.clone(), b.id.clone()],
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(found.items, [b, a]);

    let none = app
        .client
        .batch_get_products(BatchGetProductsRequest { ids: vec![] })
        .await
        .expect("empty batch")
        .into_inner();
    assert!(none.items.is_empty());
}

#[tokio::test]
async fn a_batch_get_refuses_malformed_ids_and_oversized_batches() {
    let mut app = app().await;
    let err = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            ids: vec![Uuid::now_v7().to_string(), "nope".into()],
        })
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            ids: (0..1_001).map(|_| Uuid::new_v4().to_string()).collect(),
        })
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::InvalidArgument);
    let ok = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            ids: (0..1_000).map(|_| Uuid::new_v4().to_string()).collect(),
        })
        .await
        .expect("a thousand is allowed");
    assert!(ok.into_inner().items.is_empty());
}

#[tokio::test]
async fn category_names_are_unique_whatever_their_case() {
    let mut app = app().await;
    let tea = app.category("Tea").await;
    let coffee = app.category("Coffee").await;
    let err = app
        .client
        .create_category(app.as_admin(CreateCategoryRequest {
            name: " TEA ".into(),
            description: String::new(),
        }))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = app
        .client
        .update_category(app.as_admin(UpdateCategoryRequest {
            id: coffee.clone(),
            name: "tea".into(),
            description: String::new(),
        }))
        .await
        .expect_err("renamed onto another");
    assert_eq!(err.code(), Code::AlreadyExists);

    // A category may change the case of its own name.
    let renamed = app
        .client
        .update_category(app.as_admin(UpdateCategoryRequest {
            id: tea.clone(),
            name: "TEA".into(),
            description: "Leaves".into(),
        }))
        .await
        .expect("own name")
        .into_inner();
    assert_eq!(
        (
            renamed.id.as_str(),
            renamed.name.as_str(),
            renamed.description.as_str()
        ),
        (tea.as_str(), "TEA", "Leaves")
    );
    let read = app
        .client
        .get_category(GetCategoryRequest { id: tea })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(read, renamed);
}

#[tokio::test]
async fn categories_are_listed_by_name() {
    let mut app = app().await;
    for name in ["tea", "Coffee", "cocoa"] {
        app.category(name).await;
    }
    let listed = app
        .client
        .list_categories(ListCategoriesRequest {})
        .await
        .expect("list")
        .into_inner();
    let names: Vec<&str> = listed.items.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["cocoa", "Coffee", "tea"]);
}

#[tokio::test]
async fn invalid_or_unknown_categories_fail_cleanly() {
    let mut app = app().await;
    for (name, description, field) in [
        ("", "", "name"),
        (&*"c".repeat(101), "", "name"),
        ("Tea", &*"d".repeat(5_001), "description"),
    ] {
        let err = app
            .client
            .create_category(app.as_admin(CreateCategoryRequest {
                name: name.into(),
                description: description.into(),
            }))
            .await
            .expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(&format!("{field}: ")), "{err:?}");
    }
    let malformed_update = app
        .client
        .update_category(app.as_admin(UpdateCategoryRequest {
            id: "tea".into(),
            name: "Tea".into(),
            description: String::new(),
        }))
        .await
        .expect_err("malformed update");
    let malformed_delete = app
        .client
        .delete_category(app.as_admin(DeleteCategoryRequest { id: "tea".into() }))
        .await
        .expect_err("malformed delete");
    for err in [malformed_update, malformed_delete] {
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with("id: "), "{err:?}");
    }
    let unknown = Uuid::now_v7().to_string();
    let err = app
        .client
        .update_category(app.as_admin(UpdateCategoryRequest {
            id: unknown.clone(),
            name: "Tea".into(),
            description: String::new(),
        }))
        .await
        .expect_err("unknown update");
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .client
        .delete_category(app.as_admin(DeleteCategoryRequest {
            id: unknown.clone(),
        }))
        .await
        .expect_err("unknown delete");
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .client
        .get_category(GetCategoryRequest { id: unknown })
        .await
        .expect_err("unknown get");
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .client
        .get_category(GetCategoryRequest { id: "tea".into() })
        .await
        .expect_err("malformed get");
    assert_eq!(err.code(), Code::InvalidArgument);
    let listed = app
        .client
        .list_categories(ListCategoriesRequest {})
        .await
        .expect("list")
        .into_inner();
    assert!(listed.items.is_empty());
}

#[tokio::test]
async fn a_category_that_still_has_products_cannot_be_deleted() {
    let mut app = app().await;
    let tea = app.category("Tea").await;
    let sencha = app
        .create(in_category(input("Sencha", 1, 1), &tea))
        .await
        .expect("sencha");
    let err = app
        .client
        .delete_category(app.as_admin(DeleteCategoryRequest { id: tea.clone() }))
        .await
        .expect_err("has products");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        app.get(&sencha.id).await.expect("product kept").category_id,
        Some(tea.clone())
    );

    app.client
        .delete_product(app.as_admin(DeleteProductRequest { id: sencha.id }))
        .await
        .expect("delete product");
    app.client
        .delete_category(app.as_admin(DeleteCategoryRequest { id: tea.clone() }))
        .await
        .expect("now empty");
    let err = app
        .client
        .get_category(GetCategoryRequest { id: tea })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn the_database_refuses_stock_below_zero() {
    let mut app = app().await;
    let product = app.create(input("Sencha", 100, 3)).await.expect("create");
    let id = Uuid::parse_str(&product.id).expect("uuid");
    let pool = app.pool().await;

    let err = sqlx::query("update products set stock = stock - 4 where id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .expect_err("below zero");
    let sqlx::Error::Database(db) = err else {
        panic!("not a database error: {err:?}");
    };
    assert_eq!(db.constraint(), Some("products_stock_check"));

    // Many concurrent guarded decrements (as reservations make them) sell exactly the stock.
    let takes = (0..10).map(|_| {
        let pool = pool.clone();
        async move {
            sqlx::query("update products set stock = stock - 1 where id = $1 and stock >= 1")
                .bind(id)
                .execute(&pool)
                .await
                .expect("decrement")
                .rows_affected()
        }
    });
    let taken: u64 = futures_sum(takes).await;
    assert_eq!(taken, 3);
    assert_eq!(app.get(&product.id).await.expect("get").stock, 0);
}

async fn futures_sum(
    tasks: impl Iterator<Item = impl std::future::Future<Output = u64> + Send + 'static>,
) -> u64 {
    let handles: Vec<_> = tasks.map(tokio::spawn).collect();
    let mut sum = 0;
    for handle in handles {
        sum += handle.await.expect("task");
    }
    sum
}

/// What the outbox holds: each `catalog.changed` event's product and category ids, in order.
async fn catalog_changes(app: &App) -> Vec<(Vec<String>, Vec<String>)> {
    let pool = sqlx::PgPool::connect(&app.db.url).await.expect("connect");
    let payloads: Vec<Vec<u8>> =
        sqlx::query_scalar("select payload from outbox_events order by seq")
            .fetch_all(&pool)
            .await
            .expect("outbox");
    payloads
        .iter()
        .map(|payload| {
            let event = souk_shared::events::Envelope::decode(payload)
                .expect("envelope")
                .event::<souk_protos::v1::CatalogChanged>()
                .expect("catalog.changed");
            (event.product_ids, event.category_ids)
        })
        .collect()
}

#[tokio::test]
async fn every_catalog_write_announces_itself_through_the_outbox() {
    let mut app = app().await;
    let category = app.category("Oolong").await;
    let product = app.product("Tieguanyin").await;
    app.client
        .update_product(app.as_admin(UpdateProductRequest {
            id: product.id.clone(),
            product: Some(in_category(input("Tieguanyin", 900, 3), &category)),
            if_version: None,
        }))
        .await
        .expect("update");
    let unknown = Uuid::new_v4().to_string();
    app.client
        .update_product(app.as_admin(UpdateProductRequest {
            id: unknown.clone(),
            product: Some(input("Nothing", 1, 1)),
            if_version: None,
        }))
        .await
        .expect_err("no such product");
    app.client
        .delete_product(app.as_admin(DeleteProductRequest {
            id: product.id.clone(),
        }))
        .await
        .expect("delete");
    app.client
        .delete_category(app.as_admin(DeleteCategoryRequest {
            id: category.clone(),
        }))
        .await
        .expect("delete category");
    let p = vec![product.id.clone()];
    let c = vec![category.clone()];
    assert_eq!(
        catalog_changes(&app).await,
        vec![
            (vec![], c.clone()),
            (p.clone(), vec![]),
            (p.clone(), vec![]),
            (p, vec![]),
            (vec![], c),
        ],
        "one event per change, none for a write that changed nothing"
    );
}
