//! The gRPC face of the product service. Reads are public; every write first proves that the
//! caller's own token carries role `admin`, so a direct gRPC call cannot skip the check.

use std::{collections::HashMap, sync::Arc};

use souk_protos::v1::{
    BatchGetProductsRequest, BatchGetProductsResponse, Category, CreateCategoryRequest,
    CreateProductRequest, DeleteCategoryRequest, DeleteProductRequest, GetCategoryRequest,
    GetProductRequest, ListCategoriesRequest, ListCategoriesResponse, ListProductsRequest, Product,
    ProductInput, ProductPage, UpdateCategoryRequest, UpdateProductRequest,
    product_service_server::{ProductService, ProductServiceServer},
};
use souk_shared::{Error, auth, jwt::Verifier, time};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{CategoryDraft, MAX_BATCH, PageRequest, ProductDraft, parse_id},
    store::{self, Store},
};

pub const SERVICE_NAME: &str = "souk.v1.ProductService";

#[derive(Debug)]
pub struct State {
    pub store: Store,
    pub verifier: Verifier,
}

pub fn server(state: Arc<State>) -> ProductServiceServer<Handler> {
    ProductServiceServer::new(Handler(state))
}

#[derive(Debug, Clone)]
pub struct Handler(Arc<State>);

impl Handler {
    /// The caller, who must be an admin: 401 without a valid token, 403 with another role.
    fn admin<T>(&self, request: &Request<T>) -> Result<auth::Caller, Error> {
        let caller = auth::caller(request.metadata(), &self.0.verifier)?;
        caller.require_admin()?;
        Ok(caller)
    }
}

fn product_to_proto(product: store::Product) -> Product {
    Product {
        id: product.id.to_string(),
        name: product.name,
        description: product.description,
        price_cents: product.price_cents,
        currency: product.currency,
        stock: product.stock,
        category_id: product.category_id.map(|id| id.to_string()),
        created_at: Some(time::to_proto(product.created_at)),
        updated_at: Some(time::to_proto(product.updated_at)),
        version: product.version,
    }
}

fn category_to_proto(category: store::Category) -> Category {
    Category {
        id: category.id.to_string(),
        name: category.name,
        description: category.description,
    }
}

fn page_to_proto(page: store::ProductPage, request: PageRequest) -> ProductPage {
    ProductPage {
        items: page.items.into_iter().map(product_to_proto).collect(),
        page: request.page,
        page_size: request.page_size,
        total: page.total,
    }
}

fn product_draft(input: Option<ProductInput>) -> Result<ProductDraft, Error> {
    let input = input.ok_or_else(|| Error::invalid("product", "is required"))?;
    ProductDraft::parse(
        &input.name,
        &input.description,
        input.price_cents,
        input.stock,
        input.category_id.as_deref(),
    )
}

fn product_not_found() -> Error {
    Error::NotFound("product not found".into())
}

fn category_not_found() -> Error {
    Error::NotFound("category not found".into())
}

#[tonic::async_trait]
impl ProductService for Handler {
    #[tracing::instrument(skip_all)]
    async fn create_product(
        &self,
        request: Request<CreateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let caller = self.admin(&request)?;
        let draft = product_draft(request.into_inner().product)?;
        let product = self.0.store.insert_product(&draft).await?;
        tracing::info!(product_id = %product.id, admin = %caller.user_id, "product created");
        Ok(Response::new(product_to_proto(product)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let caller = self.admin(&request)?;
        let request = request.into_inner();
        let id = parse_id("id", &request.id)?;
        let draft = product_draft(request.product)?;
        if request.if_version.is_some_and(|version| version < 1) {
            return Err(
                Error::invalid("if_version", "must be at least 1 (versions start at 1)").into(),
            );
        }
        let product = self
            .0
            .store
            .update_product(id, &draft, request.if_version)
            .await?
            .ok_or_else(product_not_found)?;
        tracing::info!(product_id = %id, admin = %caller.user_id, "product updated");
        Ok(Response::new(product_to_proto(product)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_product(
        &self,
        request: Request<DeleteProductRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.admin(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        if !self.0.store.delete_product(id).await? {
            return Err(product_not_found().into());
        }
        tracing::info!(product_id = %id, admin = %caller.user_id, "product deleted");
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        let product = self
            .0
            .store
            .find_product(id)
            .await?
            .ok_or_else(product_not_found)?;
        Ok(Response::new(product_to_proto(product)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ProductPage>, Status> {
        let request = request.into_inner();
        let page = PageRequest::parse(request.page, request.page_size)?;
        let listed = match request.category_id {
            None => self.0.store.list_products(page).await?,
            Some(raw) => {
                let category_id = parse_id("category_id", &raw)?;
                self.0
                    .store
                    .list_category_products(category_id, page)
                    .await?
                    .ok_or_else(category_not_found)?
            }
        };
        Ok(Response::new(page_to_proto(listed, page)))
    }

    /// The products among the ids that exist, in the order first asked for; unknown ids are
    /// left out and repeated ones answered once.
    #[tracing::instrument(skip_all, fields(ids = request.get_ref().ids.len()))]
    async fn batch_get_products(
        &self,
        request: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        let raw = request.into_inner().ids;
        if raw.len() > MAX_BATCH {
            return Err(Error::invalid("ids", format!("at most {MAX_BATCH} at a time")).into());
        }
        let mut ids: Vec<Uuid> = Vec::with_capacity(raw.len());
        for raw in &raw {
            let id = parse_id("ids", raw)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut found: HashMap<Uuid, store::Product> = self
            .0
            .store
            .find_products(&ids)
            .await?
            .into_iter()
            .map(|product| (product.id, product))
            .collect();
        let items = ids
            .iter()
            .filter_map(|id| found.remove(id))
            .map(product_to_proto)
            .collect();
        Ok(Response::new(BatchGetProductsResponse { items }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_category(
        &self,
        request: Request<CreateCategoryRequest>,
    ) -> Result<Response<Category>, Status> {
        let caller = self.admin(&request)?;
        let request = request.into_inner();
        let draft = CategoryDraft::parse(&request.name, &request.description)?;
        let category = self.0.store.insert_category(&draft).await?;
        tracing::info!(category_id = %category.id, admin = %caller.user_id, "category created");
        Ok(Response::new(category_to_proto(category)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_category(
        &self,
        request: Request<UpdateCategoryRequest>,
    ) -> Result<Response<Category>, Status> {
        let caller = self.admin(&request)?;
        let request = request.into_inner();
        let id = parse_id("id", &request.id)?;
        let draft = CategoryDraft::parse(&request.name, &request.description)?;
        let category = self
            .0
            .store
            .update_category(id, &draft)
            .await?
            .ok_or_else(category_not_found)?;
        tracing::info!(category_id = %id, admin = %caller.user_id, "category updated");
        Ok(Response::new(category_to_proto(category)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_category(
        &self,
        request: Request<DeleteCategoryRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.admin(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        if !self.0.store.delete_category(id).await? {
            return Err(category_not_found().into());
        }
        tracing::info!(category_id = %id, admin = %caller.user_id, "category deleted");
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn get_category(
        &self,
        request: Request<GetCategoryRequest>,
    ) -> Result<Response<Category>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        let category = self
            .0
            .store
            .find_category(id)
            .await?
            .ok_or_else(category_not_found)?;
        Ok(Response::new(category_to_proto(category)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_categories(
        &self,
        _request: Request<ListCategoriesRequest>,
    ) -> Result<Response<ListCategoriesResponse>, Status> {
        let items = self
            .0
            .store
            .list_categories()
            .await?
            .into_iter()
            .map(category_to_proto)
            .collect();
        Ok(Response::new(ListCategoriesResponse { items }))
    }
}
