//! The cart service's RPCs against a real PostgreSQL database of their own, in front of a real
//! product service (with a database of its own too).

use std::{net::SocketAddr, time::Duration};

use souk_cart::{MAX_LINES, MAX_QUANTITY, Settings};
use souk_protos::v1::{
    AddItemRequest, Cart, ClearCartRequest, CreateProductRequest, DeleteCartRequest,
    DeleteProductRequest, GetCartRequest, ProductInput, RemoveItemRequest, SetItemQuantityRequest,
    UpdateProductRequest, cart_service_client::CartServiceClient,
    product_service_client::ProductServiceClient,
};
use souk_shared::{
    Shutdown,
    auth::with_token,
    db::DatabaseLocation,
    jwt::{KeyPair, Role, Signer, Verifier},
    testing::{TestDatabase, eventually, listener},
};
use tokio::net::TcpListener;
use tonic::{Code, Request, Status, transport::Channel};
use uuid::Uuid;

struct App {
    cart: CartServiceClient<Channel>,
    products: ProductServiceClient<Channel>,
    signer: Signer,
    admin: String,
    product_settings: souk_product::Settings,
    product_addr: SocketAddr,
    product_shutdown: Shutdown,
    shutdown: Shutdown,
    cart_db: TestDatabase,
    _product_db: TestDatabase,
}

impl Drop for App {
    fn drop(&mut self) {
        self.product_shutdown.trigger();
        self.shutdown.trigger();
    }
}

/// A signed-in customer.
struct Customer {
    id: String,
    token: String,
}

async fn start_product(
    settings: souk_product::Settings,
    listener: TcpListener,
    shutdown: &Shutdown,
) {
    let service = souk_product::service(settings)
        .expect("product settings")
        .ready()
        .await
        .expect("product service starts");
    tokio::spawn(service.serve(listener, shutdown.clone()));
}

async fn app() -> App {
    let (cart_db, product_db) = (TestDatabase::create().await, TestDatabase::create().await);
    let keys = KeyPair::generate().expect("keys");
    let signer =
        Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(900)).expect("signer");
    let verifier = Verifier::from_pem(&keys.public_pem).expect("verifier");

    let product_settings = souk_product::Settings {
        database: DatabaseLocation::Own(product_db.url()),
        shop: souk_shared::testing::unique_shop(),
        verifier: verifier.clone(),
        events: None,
    };
    let product_listener = listener().await;
    let product_addr = product_listener.local_addr().expect("addr");
    let product_shutdown = Shutdown::new();
    start_product(
        product_settings.clone(),
        product_listener,
        &product_shutdown,
    )
    .await;

    let cart = souk_cart::service(Settings {
        database: DatabaseLocation::Own(cart_db.url()),
        verifier,
        product_url: format!("http://{product_addr}"),
        events: None,
    })
    .expect("cart settings")
    .ready()
    .await
    .expect("cart service starts");
    let cart_listener = listener().await;
    let cart_addr = cart_listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(cart.serve(cart_listener, shutdown.clone()));

    App {
        cart: CartServiceClient::connect(format!("http://{cart_addr}"))
            .await
            .expect("connect cart"),
        products: ProductServiceClient::connect(format!("http://{product_addr}"))
            .await
            .expect("connect product"),
        admin: signer.sign(Uuid::new_v4(), Role::Admin).expect("admin"),
        signer,
        product_settings,
        product_addr,
        product_shutdown,
        shutdown,
        cart_db,
        _product_db: product_db,
    }
}

fn add(product_id: &str, quantity: i64) -> AddItemRequest {
    AddItemRequest {
        product_id: product_id.into(),
        quantity,
    }
}

fn set(product_id: &str, quantity: i64) -> SetItemQuantityRequest {
    SetItemQuantityRequest {
        product_id: product_id.into(),
        quantity,
    }
}

fn remove(product_id: &str) -> RemoveItemRequest {
    RemoveItemRequest {
        product_id: product_id.into(),
    }
}

fn lines(cart: &Cart) -> Vec<(&str, i64)> {
    cart.items
        .iter()
        .map(|item| (item.product_id.as_str(), item.quantity))
        .collect()
}

impl App {
    fn customer(&self) -> Customer {
        let id = Uuid::new_v4();
        Customer {
            id: id.to_string(),
            token: self.signer.sign(id, Role::Customer).expect("token"),
        }
    }

    async fn product(&self, name: &str, price_cents: i64, stock: i64) -> String {
        let request = with_token(
            CreateProductRequest {
                product: Some(ProductInput {
                    name: name.into(),
                    description: String::new(),
                    price_cents,
                    stock,
                    category_id: None,
                }),
            },
            &self.admin,
        );
        self.products
            .clone()
            .create_product(request)
            .await
            .expect("create product")
            .into_inner()
            .id
    }

    async fn update_product(&self, id: &str, name: &str, price_cents: i64, stock: i64) {
        let request = with_token(
            UpdateProductRequest {
                id: id.into(),
                product: Some(ProductInput {
                    name: name.into(),
                    description: String::new(),
                    price_cents,
                    stock,
                    category_id: None,
                }),
                if_version: None,
            },
            &self.admin,
        );
        self.products
            .clone()
            .update_product(request)
            .await
            .expect("update product");
    }

    async fn get(&self, who: &Customer) -> Result<Cart, Status> {
        let request = with_token(GetCartRequest {}, &who.token);
        Ok(self.cart.clone().get_cart(request).await?.into_inner())
    }

    async fn add(&self, who: &Customer, product_id: &str, quantity: i64) -> Result<Cart, Status> {
        let request = with_token(add(product_id, quantity), &who.token);
        Ok(self.cart.clone().add_item(request).await?.into_inner())
    }

    async fn set(&self, who: &Customer, product_id: &str, quantity: i64) -> Result<Cart, Status> {
        let request = with_token(set(product_id, quantity), &who.token);
        Ok(self
            .cart
            .clone()
            .set_item_quantity(request)
            .await?
            .into_inner())
    }

    async fn remove(&self, who: &Customer, product_id: &str) -> Result<Cart, Status> {
        let request = with_token(remove(product_id), &who.token);
        Ok(self.cart.clone().remove_item(request).await?.into_inner())
    }

    /// The stored lines of a user's cart, read from the cart's database itself.
    async fn stored_lines(&self, who: &Customer) -> Vec<(String, i64)> {
        let pool = sqlx::PgPool::connect(&self.cart_db.url)
            .await
            .expect("connect to the cart database");
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "select product_id, quantity from cart_items where user_id = $1
             order by created_at, product_id",
        )
        .bind(Uuid::parse_str(&who.id).expect("uuid"))
        .fetch_all(&pool)
        .await
        .expect("read lines");
        rows.into_iter()
            .map(|(id, quantity)| (id.to_string(), quantity))
            .collect()
    }

    /// Stops the product service and waits until the cart service sees it gone.
    async fn stop_product_service(&self, who: &Customer) {
        self.product_shutdown.trigger();
        eventually(
            "the cart service to see the product service gone",
            Duration::from_secs(10),
            || async {
                match self.get(who).await {
                    Err(status) if status.code() == Code::Unavailable => Some(()),
                    _ => None,
                }
            },
        )
        .await;
    }

    /// Starts the product service again on its address and database.
    async fn restart_product_service(&mut self) {
        let listener = eventually(
            "the product port to be free",
            Duration::from_secs(10),
            || async { TcpListener::bind(self.product_addr).await.ok() },
        )
        .await;
        self.product_shutdown = Shutdown::new();
        start_product(
            self.product_settings.clone(),
            listener,
            &self.product_shutdown,
        )
        .await;
    }
}

#[tokio::test]
async fn a_new_cart_is_empty_and_belongs_to_the_caller() {
    let app = app().await;
    let ada = app.customer();
    let cart = app.get(&ada).await.expect("cart");
    assert_eq!(cart.user_id, ada.id);
    assert!(cart.items.is_empty());
    assert_eq!(cart.total_cents, 0);
}

#[tokio::test]
async fn adding_a_product_prices_the_line_with_its_name() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 1_250, 10).await;
    let cup = app.product("Cup", 800, 10).await;
    app.add(&ada, &tea, 2).await.expect("add tea");
    let cart = app.add(&ada, &cup, 1).await.expect("add cup");
    assert_eq!(cart.user_id, ada.id);
    assert_eq!(cart.items.len(), 2);
    let first = &cart.items[0];
    assert_eq!(first.product_id, tea);
    assert_eq!(first.name, "Sencha");
    assert_eq!(first.unit_price_cents, 1_250);
    assert_eq!(first.quantity, 2);
    assert_eq!(first.line_total_cents, 2_500);
    assert_eq!(cart.items[1].line_total_cents, 800);
    assert_eq!(cart.total_cents, 3_300);
    assert_eq!(app.get(&ada).await.expect("read"), cart);
}

#[tokio::test]
async fn adding_again_adds_to_the_quantity_already_there() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    app.add(&ada, &tea, 2).await.expect("first");
    let cart = app.add(&ada, &tea, 3).await.expect("second");
    assert_eq!(lines(&cart), [(tea.as_str(), 5)]);
    assert_eq!(cart.total_cents, 500);
}

#[tokio::test]
async fn a_cart_is_priced_at_the_current_prices() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    app.add(&ada, &tea, 3).await.expect("add");
    app.update_product(&tea, "Sencha Superior", 150, 10).await;
    let cart = app.get(&ada).await.expect("cart");
    assert_eq!(cart.items[0].name, "Sencha Superior");
    assert_eq!(cart.items[0].unit_price_cents, 150);
    assert_eq!(cart.total_cents, 450);
}

#[tokio::test]
async fn an_unknown_product_is_not_found_and_changes_nothing() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    app.add(&ada, &tea, 1).await.expect("add");
    let unknown = Uuid::now_v7().to_string();
    let err = app.add(&ada, &unknown, 1).await.expect_err("add unknown");
    assert_eq!(err.code(), Code::NotFound);
    let err = app.set(&ada, &unknown, 1).await.expect_err("set unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.stored_lines(&ada).await, [(tea, 1)]);
}

#[tokio::test]
async fn more_than_the_stock_is_refused_and_changes_nothing() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 5).await;
    app.add(&ada, &tea, 3).await.expect("within stock");
    let err = app.add(&ada, &tea, 3).await.expect_err("over stock");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("stock"), "{}", err.message());
    assert_eq!(app.stored_lines(&ada).await, [(tea.clone(), 3)]);
    let cart = app.add(&ada, &tea, 2).await.expect("exactly the stock");
    assert_eq!(lines(&cart), [(tea.as_str(), 5)]);

    let err = app.set(&ada, &tea, 6).await.expect_err("set over stock");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let sold_out = app.product("Matcha", 100, 0).await;
    let err = app.add(&ada, &sold_out, 1).await.expect_err("sold out");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(app.stored_lines(&ada).await, [(tea, 5)]);
}

#[tokio::test]
async fn invalid_quantities_and_ids_are_rejected_naming_the_field() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 2 * MAX_QUANTITY).await;
    for quantity in [0, -1, MAX_QUANTITY + 1, i64::MAX, i64::MIN] {
        for result in [
            app.add(&ada, &tea, quantity).await,
            app.set(&ada, &tea, quantity).await,
        ] {
            let err = result.expect_err("invalid quantity");
            assert_eq!(err.code(), Code::InvalidArgument, "{quantity}");
            assert!(err.message().starts_with("quantity: "), "{}", err.message());
        }
    }
    for result in [
        app.add(&ada, "tea", 1).await,
        app.set(&ada, "", 1).await,
        app.remove(&ada, "42").await,
    ] {
        let err = result.expect_err("malformed id");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().starts_with("product_id: "),
            "{}",
            err.message()
        );
    }
    // A line never grows past the bound by adding either.
    app.add(&ada, &tea, MAX_QUANTITY).await.expect("the most");
    let err = app.add(&ada, &tea, 1).await.expect_err("one more");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(app.stored_lines(&ada).await, [(tea, MAX_QUANTITY)]);
}

#[tokio::test]
async fn setting_a_quantity_replaces_it_or_starts_the_line() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    let cup = app.product("Cup", 500, 10).await;
    app.add(&ada, &tea, 4).await.expect("add");
    let cart = app.set(&ada, &tea, 1).await.expect("lower");
    assert_eq!(lines(&cart), [(tea.as_str(), 1)]);
    let cart = app.set(&ada, &cup, 2).await.expect("new line");
    assert_eq!(lines(&cart), [(tea.as_str(), 1), (cup.as_str(), 2)]);
    assert_eq!(cart.total_cents, 1_100);
}

#[tokio::test]
async fn removing_a_line_leaves_the_others_and_a_missing_line_is_not_found() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    let cup = app.product("Cup", 500, 10).await;
    app.add(&ada, &tea, 1).await.expect("tea");
    app.add(&ada, &cup, 1).await.expect("cup");
    let cart = app.remove(&ada, &tea).await.expect("remove");
    assert_eq!(lines(&cart), [(cup.as_str(), 1)]);
    assert_eq!(cart.total_cents, 500);
    let err = app.remove(&ada, &tea).await.expect_err("twice");
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .remove(&ada, &Uuid::now_v7().to_string())
        .await
        .expect_err("never there");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(app.stored_lines(&ada).await, [(cup, 1)]);
}

#[tokio::test]
async fn clearing_empties_the_cart_and_deleting_removes_it() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    app.add(&ada, &tea, 2).await.expect("add");
    let cleared = app
        .cart
        .clone()
        .clear_cart(with_token(ClearCartRequest {}, &ada.token))
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(cleared.user_id, ada.id);
    assert!(cleared.items.is_empty());
    assert_eq!(cleared.total_cents, 0);
    assert!(app.stored_lines(&ada).await.is_empty());

    app.add(&ada, &tea, 1).await.expect("add again");
    app.cart
        .clone()
        .delete_cart(with_token(DeleteCartRequest {}, &ada.token))
        .await
        .expect("delete");
    assert!(app.stored_lines(&ada).await.is_empty());
    assert!(app.get(&ada).await.expect("read").items.is_empty());
    // Deleting a cart that is not there is fine too.
    app.cart
        .clone()
        .delete_cart(with_token(DeleteCartRequest {}, &ada.token))
        .await
        .expect("delete again");
}

#[tokio::test]
async fn each_user_sees_only_their_own_cart() {
    let app = app().await;
    let (ada, bob) = (app.customer(), app.customer());
    let tea = app.product("Sencha", 100, 10).await;
    app.add(&ada, &tea, 2).await.expect("ada adds");
    let bobs = app.get(&bob).await.expect("bob reads");
    assert_eq!(bobs.user_id, bob.id);
    assert!(bobs.items.is_empty());
    app.cart
        .clone()
        .clear_cart(with_token(ClearCartRequest {}, &bob.token))
        .await
        .expect("bob clears");
    assert_eq!(app.stored_lines(&ada).await, [(tea, 2)]);
}

#[tokio::test]
async fn every_call_needs_a_valid_token() {
    let app = app().await;
    let tea = app.product("Sencha", 100, 10).await;
    let mut cart = app.cart.clone();
    let results = [
        cart.get_cart(GetCartRequest {}).await.map(drop),
        cart.add_item(add(&tea, 1)).await.map(drop),
        cart.set_item_quantity(set(&tea, 1)).await.map(drop),
        cart.remove_item(remove(&tea)).await.map(drop),
        cart.clear_cart(ClearCartRequest {}).await.map(drop),
        cart.delete_cart(DeleteCartRequest {}).await.map(drop),
        cart.get_cart(with_token(GetCartRequest {}, "forged"))
            .await
            .map(drop),
    ];
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(
            result.expect_err("anonymous").code(),
            Code::Unauthenticated,
            "call #{i}"
        );
    }
}

#[tokio::test]
async fn lines_of_deleted_products_are_left_out_and_pruned_at_the_next_change() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    let cup = app.product("Cup", 500, 10).await;
    app.add(&ada, &tea, 2).await.expect("tea");
    app.add(&ada, &cup, 1).await.expect("cup");
    app.products
        .clone()
        .delete_product(with_token(
            DeleteProductRequest { id: tea.clone() },
            &app.admin,
        ))
        .await
        .expect("delete product");

    let cart = app.get(&ada).await.expect("read");
    assert_eq!(lines(&cart), [(cup.as_str(), 1)]);
    assert_eq!(cart.total_cents, 500);
    // Reading changes nothing; the next change prunes the line.
    assert_eq!(app.stored_lines(&ada).await.len(), 2);
    let err = app.remove(&ada, &tea).await.expect_err("invisible line");
    assert_eq!(err.code(), Code::NotFound);
    app.set(&ada, &cup, 2).await.expect("change");
    assert_eq!(app.stored_lines(&ada).await, [(cup, 2)]);
}

#[tokio::test]
async fn a_cart_holds_a_bounded_number_of_products() {
    let app = app().await;
    let ada = app.customer();
    for i in 0..MAX_LINES {
        let id = app.product(&format!("p{i}"), 1, 1).await;
        app.add(&ada, &id, 1).await.expect("within bounds");
    }
    let one_more = app.product("one more", 1, 1).await;
    let err = app.add(&ada, &one_more, 1).await.expect_err("too many");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let cart = app.get(&ada).await.expect("read");
    assert_eq!(cart.items.len(), MAX_LINES);
    assert_eq!(cart.total_cents, i64::try_from(MAX_LINES).expect("small"));
}

#[tokio::test]
async fn concurrent_adds_to_one_cart_all_count() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 100).await;
    let adds = (0..10).map(|_| {
        let mut cart = app.cart.clone();
        let request: Request<AddItemRequest> = with_token(add(&tea, 1), &ada.token);
        tokio::spawn(async move { cart.add_item(request).await.map(drop) })
    });
    for handle in adds.collect::<Vec<_>>() {
        handle.await.expect("task").expect("add");
    }
    assert_eq!(app.stored_lines(&ada).await, [(tea, 10)]);
}

#[tokio::test]
async fn without_the_product_service_the_cart_is_unavailable_and_unchanged() {
    let mut app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    let cup = app.product("Cup", 500, 10).await;
    app.add(&ada, &tea, 2).await.expect("add");
    let before = app.get(&ada).await.expect("read");

    app.stop_product_service(&ada).await;
    for (what, result) in [
        ("get", app.get(&ada).await),
        ("add", app.add(&ada, &tea, 1).await),
        ("add another", app.add(&ada, &cup, 1).await),
        ("set", app.set(&ada, &tea, 1).await),
        ("remove", app.remove(&ada, &tea).await),
    ] {
        let err = result.expect_err(what);
        assert_eq!(err.code(), Code::Unavailable, "{what}: {err:?}");
        assert!(
            !err.message().contains("127.0.0.1"),
            "{what}: no address leaks: {}",
            err.message()
        );
    }
    assert_eq!(app.stored_lines(&ada).await, [(tea.clone(), 2)]);

    app.restart_product_service().await;
    let after = eventually(
        "the cart to be readable again",
        Duration::from_secs(10),
        || async { app.get(&ada).await.ok() },
    )
    .await;
    assert_eq!(after, before);
    app.add(&ada, &tea, 1).await.expect("add works again");
}

#[tokio::test]
async fn an_empty_cart_is_read_and_cleared_without_the_product_service() {
    let app = app().await;
    let ada = app.customer();
    let tea = app.product("Sencha", 100, 10).await;
    app.add(&ada, &tea, 1).await.expect("add");
    app.stop_product_service(&ada).await;
    let cleared = app
        .cart
        .clone()
        .clear_cart(with_token(ClearCartRequest {}, &ada.token))
        .await
        .expect("clear needs no prices")
        .into_inner();
    assert!(cleared.items.is_empty());
    let empty = app.get(&ada).await.expect("an empty cart needs no prices");
    assert_eq!(empty.total_cents, 0);
}
