//! A cart is priced from one batch call to the product service, however many lines it has:
//! the cart service here talks to a fake product service that counts the calls it gets.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use souk_cart::Settings;
use souk_protos::v1::{
    AddItemRequest, BatchGetProductsRequest, BatchGetProductsResponse, Category,
    CreateCategoryRequest, CreateProductRequest, DeleteCategoryRequest, DeleteProductRequest,
    GetCartRequest, GetCategoryRequest, GetProductRequest, ListCategoriesRequest,
    ListCategoriesResponse, ListProductsRequest, Product, ProductPage, UpdateCategoryRequest,
    UpdateProductRequest,
    cart_service_client::CartServiceClient,
    product_service_server::{ProductService, ProductServiceServer},
};
use souk_shared::{
    Shutdown,
    auth::with_token,
    db::DatabaseLocation,
    grpc::GrpcService,
    jwt::{KeyPair, Role, Signer, Verifier},
    testing::{TestDatabase, listener},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// A product service that knows a fixed set of products and counts the calls it answers.
#[derive(Debug, Default, Clone)]
struct CountingCatalog {
    products: Arc<HashMap<String, Product>>,
    batch_calls: Arc<AtomicUsize>,
    other_calls: Arc<AtomicUsize>,
}

impl CountingCatalog {
    fn other<T>(&self) -> Result<Response<T>, Status> {
        self.other_calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::unimplemented("not in this fake"))
    }
}

#[tonic::async_trait]
impl ProductService for CountingCatalog {
    async fn batch_get_products(
        &self,
        request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        self.batch_calls.fetch_add(1, Ordering::SeqCst);
        let items = request
            .into_inner()
            .ids
            .iter()
            .filter_map(|id| self.products.get(id).cloned())
            .collect();
        Ok(Response::new(BatchGetProductsResponse { items }))
    }
    async fn get_product(
        &self,
        _: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        self.other()
    }
    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        self.other()
    }
    async fn update_product(
        &self,
        _: Request<UpdateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        self.other()
    }
    async fn delete_product(
        &self,
        _: Request<DeleteProductRequest>,
    ) -> Result<Response<()>, Status> {
        self.other()
    }
    async fn list_products(
        &self,
        _: Request<ListProductsRequest>,
    ) -> Result<Response<ProductPage>, Status> {
        self.other()
    }
    async fn create_category(
        &self,
        _: Request<CreateCategoryRequest>,
    ) -> Result<Response<Category>, Status> {
        self.other()
    }
    async fn update_category(
        &self,
        _: Request<UpdateCategoryRequest>,
    ) -> Result<Response<Category>, Status> {
        self.other()
    }
    async fn delete_category(
        &self,
        _: Request<DeleteCategoryRequest>,
    ) -> Result<Response<()>, Status> {
        self.other()
    }
    async fn get_category(
        &self,
        _: Request<GetCategoryRequest>,
    ) -> Result<Response<Category>, Status> {
        self.other()
    }
    async fn list_categories(
        &self,
        _: Request<ListCategoriesRequest>,
    ) -> Result<Response<ListCategoriesResponse>, Status> {
        self.other()
    }
}

fn product(price_cents: i64) -> Product {
    Product {
        id: Uuid::now_v7().to_string(),
        name: format!("product at {price_cents}"),
        currency: "USD".into(),
        price_cents,
        stock: 100,
        ..Product::default()
    }
}

#[tokio::test]
async fn reading_a_cart_of_many_lines_is_one_batch_call() {
    let products: Vec<Product> = (1..=20).map(product).collect();
    let catalog = CountingCatalog {
        products: Arc::new(products.iter().map(|p| (p.id.clone(), p.clone())).collect()),
        ..CountingCatalog::default()
    };
    let shutdown = Shutdown::new();
    let catalog_listener = listener().await;
    let catalog_addr = catalog_listener.local_addr().expect("addr");
    tokio::spawn(souk_shared::grpc::serve(
        GrpcService::new(
            "souk.v1.ProductService",
            tonic::service::Routes::new(ProductServiceServer::new(catalog.clone())),
        ),
        catalog_listener,
        shutdown.clone(),
    ));

    let db = TestDatabase::create().await;
    let keys = KeyPair::generate().expect("keys");
    let service = souk_cart::service(Settings {
        database: DatabaseLocation::Own(db.url()),
        verifier: Verifier::from_pem(&keys.public_pem).expect("verifier"),
        product_url: format!("http://{catalog_addr}"),
        events: None,
    })
    .expect("settings")
    .ready()
    .await
    .expect("start");
    let cart_listener = listener().await;
    let cart_addr = cart_listener.local_addr().expect("addr");
    tokio::spawn(service.serve(cart_listener, shutdown.clone()));
    let mut cart = CartServiceClient::connect(format!("http://{cart_addr}"))
        .await
        .expect("connect");
    let token = Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(60))
        .expect("signer")
        .sign(Uuid::new_v4(), Role::Customer)
        .expect("token");

    for p in &products {
        let request = AddItemRequest {
            product_id: p.id.clone(),
            quantity: 2,
        };
        cart.add_item(with_token(request, &token))
            .await
            .expect("add");
    }
    // Each change was one batch call too.
    assert_eq!(catalog.batch_calls.load(Ordering::SeqCst), products.len());

    let before = catalog.batch_calls.load(Ordering::SeqCst);
    let read = cart
        .get_cart(with_token(GetCartRequest {}, &token))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.items.len(), 20);
    assert_eq!(read.total_cents, 2 * (1..=20).sum::<i64>());
    assert_eq!(catalog.batch_calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(catalog.other_calls.load(Ordering::SeqCst), 0);
    shutdown.trigger();
}
