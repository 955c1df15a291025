//! The Catalog section of docs/api.md: products and categories. Reads are public; writes take an
//! `Admin` (401 without a token, 403 for another role) and forward the token, so the product
//! service checks the role again.
//!
//! Reads are answered by the catalog cache (`cache.rs`) when it holds them, with a strong
//! `ETag`; a write forwarded here drops the copies it makes stale at once, so the writer reads
//! it back, and every replica drops them when the product service's event arrives.
//!
//! `/api/products/categories` is a fixed segment beside `/api/products/{id}` (the router
//! prefers it), so no product id is ever read as "categories".

use axum::{
    Router,
    extract::State as AxumState,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
    routing::get,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use souk_protos::v1::{
    Category, CreateCategoryRequest, CreateProductRequest, DeleteCategoryRequest,
    DeleteProductRequest, ListCategoriesRequest, ListProductsRequest, Product, ProductInput,
    ProductPage, UpdateCategoryRequest, UpdateProductRequest,
};
use souk_shared::time;
use tonic::Code;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    State,
    cache::{self, Key},
    error::{ApiError, ApiResult},
    extract::{self, Admin, IdPath, Json, Query},
};

use souk_contract::api::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

pub fn router() -> Router<State> {
    Router::new()
        .route("/api/products", get(list_products).post(create_product))
        .route(
            "/api/products/{id}",
            get(get_product).put(update_product).delete(delete_product),
        )
        .route(
            "/api/products/categories",
            get(list_categories)
                .post(create_category)
                .put(update_category_in_body),
        )
        .route(
            "/api/products/categories/{categoryId}",
            get(category_products)
                .put(update_category)
                .delete(delete_category),
        )
}

/// `?page=&page_size=`, checked here before any service is asked. An empty value (`page=`, as
/// an HTML form sends an empty field) is the same as none: the default.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// The page, from 1.
    #[param(value_type = Option<i64>)]
    page: Option<String>,
    /// Products per page.
    #[param(value_type = Option<i64>)]
    page_size: Option<String>,
}

/// A whole number from the query, `None` when absent or empty.
fn whole_number(field: &str, raw: Option<&str>) -> ApiResult<Option<i64>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid_field(field, "must be a whole number")),
    }
}

impl PageQuery {
    fn checked(&self) -> ApiResult<(i64, i64)> {
        let page = whole_number("page", self.page.as_deref())?.unwrap_or(1);
        if page < 1 {
            return Err(ApiError::invalid_field("page", "must be at least 1"));
        }
        let page_size =
            whole_number("page_size", self.page_size.as_deref())?.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ApiError::invalid_field(
                "page_size",
                &format!("must be 1 to {MAX_PAGE_SIZE}"),
            ));
        }
        Ok((page, page_size))
    }
}

/// A product as an admin sends it (create, and the whole of it again on update).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ProductInput)]
pub(crate) struct ProductFields {
    /// Trimmed.
    name: String,
    description: String,
    #[serde(deserialize_with = "extract::integer")]
    price_cents: i64,
    #[serde(deserialize_with = "extract::integer")]
    stock: i64,
    #[serde(default)]
    #[schema(format = Uuid)]
    category_id: Option<String>,
}

impl From<ProductFields> for ProductInput {
    fn from(body: ProductFields) -> Self {
        Self {
            name: body.name,
            description: body.description,
            price_cents: body.price_cents,
            stock: body.stock,
            category_id: body.category_id,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CategoryInput)]
pub(crate) struct CategoryFields {
    /// Trimmed; unique regardless of case.
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CategoryUpdate)]
pub(crate) struct CategoryWithId {
    #[schema(format = Uuid)]
    id: String,
    /// Trimmed; unique regardless of case.
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
pub(crate) struct ProductBody {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    description: String,
    price_cents: i64,
    /// Always `USD`.
    currency: String,
    stock: i64,
    #[schema(format = Uuid)]
    category_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Product> for ProductBody {
    fn from(product: Product) -> Self {
        Self {
            created_at: time::from_proto(product.created_at.as_ref()),
            updated_at: time::from_proto(product.updated_at.as_ref()),
            id: product.id,
            name: product.name,
            description: product.description,
            price_cents: product.price_cents,
            currency: product.currency,
            stock: product.stock,
            category_id: product.category_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProductPage)]
pub(crate) struct PageBody {
    items: Vec<ProductBody>,
    page: i64,
    page_size: i64,
    total: i64,
}

impl From<ProductPage> for PageBody {
    fn from(page: ProductPage) -> Self {
        Self {
            items: page.items.into_iter().map(ProductBody::from).collect(),
            page: page.page,
            page_size: page.page_size,
            total: page.total,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Category)]
pub(crate) struct CategoryBody {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    description: String,
}

impl From<Category> for CategoryBody {
    fn from(category: Category) -> Self {
        Self {
            id: category.id,
            name: category.name,
            description: category.description,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CategoryList {
    items: Vec<CategoryBody>,
}

/// A body as the JSON bytes the cache keeps.
fn json(body: &impl Serialize) -> ApiResult<Bytes> {
    serde_json::to_vec(body).map(Bytes::from).map_err(|err| {
        tracing::error!(error = %err, "cannot encode a catalog answer");
        ApiError::Internal
    })
}

/// The answer for `key`, from the cache or from `fill`.
async fn cached(
    state: &State,
    headers: &HeaderMap,
    key: Key,
    fill: impl Future<Output = ApiResult<Bytes>>,
) -> ApiResult<Response> {
    let (answer, hit) = state.catalog.get_or_fill(key, fill).await?;
    Ok(answer.respond(headers, hit))
}

/// A page of all products, newest first.
#[utoipa::path(get, path = "/api/products", tag = "catalog", params(PageQuery), responses(
    (status = 200, description = "The page", body = PageBody),
    (status = 304, description = "Not modified"),
))]
pub(crate) async fn list_products(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> ApiResult<Response> {
    let (page, page_size) = query.checked()?;
    list(&state, &headers, page, page_size, None).await
}

/// A page of one category's products, newest first.
#[utoipa::path(get, path = "/api/products/categories/{categoryId}", tag = "catalog",
    params(("categoryId" = Uuid, Path, description = "The category's id"), PageQuery),
    responses(
        (status = 200, description = "The page", body = PageBody),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such category"),
    ),
)]
pub(crate) async fn category_products(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    IdPath(category_id): IdPath,
    Query(query): Query<PageQuery>,
) -> ApiResult<Response> {
    let (page, page_size) = query.checked()?;
    list(&state, &headers, page, page_size, Some(category_id)).await
}

async fn list(
    state: &State,
    headers: &HeaderMap,
    page: i64,
    page_size: i64,
    category_id: Option<Uuid>,
) -> ApiResult<Response> {
    let key = Key::Page {
        category: category_id,
        page,
        page_size,
    };
    cached(state, headers, key, async {
        let listed = state
            .services
            .product
            .clone()
            .list_products(ListProductsRequest {
                page,
                page_size,
                category_id: category_id.map(|id| id.to_string()),
            })
            .await?
            .into_inner();
        json(&PageBody::from(listed))
    })
    .await
}

/// A product.
#[utoipa::path(get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such product"),
    ),
)]
pub(crate) async fn get_product(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    cached(&state, &headers, Key::Product(id), async {
        json(&ProductBody::from(state.services.product_now(id).await?))
    })
    .await
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/products", tag = "catalog", security(("bearer" = [])),
    request_body = ProductFields,
    responses(
        (status = 201, description = "The new product", body = ProductBody),
        (status = 403, description = "Not an admin"),
    ),
)]
pub(crate) async fn create_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Json(body): Json<ProductFields>,
) -> ApiResult<(StatusCode, axum::Json<ProductBody>)> {
    let product = state
        .services
        .product
        .clone()
        .create_product(admin.request(CreateProductRequest {
            product: Some(body.into()),
        }))
        .await?
        .into_inner();
    state.catalog.invalidate(&[id_of(&product.id)?], &[]);
    Ok((StatusCode::CREATED, axum::Json(product.into())))
}

/// Replace a product (admin).
///
/// A replacement sets the stock too: send `If-Match` with the `ETag` of the copy the change was
/// made from, so that a change made from a stale copy (an order took stock since) is refused
/// with 412 instead of giving the stock back.
#[utoipa::path(put, path = "/api/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The product's id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the product as read: the replacement applies only while the product is still that (`*`: any)"),
    ),
    request_body = ProductFields,
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such product"),
        (status = 412, description = "The product changed since the `If-Match` tag was read: nothing was changed"),
    ),
)]
pub(crate) async fn update_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    IdPath(id): IdPath,
    headers: HeaderMap,
    Json(body): Json<ProductFields>,
) -> ApiResult<axum::Json<ProductBody>> {
    let if_version = match headers.get(header::IF_MATCH) {
        Some(if_match) => Some(version_if_matching(&state, id, if_match).await?),
        None => None,
    };
    let updated = state
        .services
        .product
        .clone()
        .update_product(admin.request(UpdateProductRequest {
            id: id.to_string(),
            product: Some(body.into()),
            if_version,
        }))
        .await;
    let product = match updated {
        // Written between our read and the update.
        Err(status) if if_version.is_some() && status.code() == Code::FailedPrecondition => {
            return Err(ApiError::PreconditionFailed(status.message().to_owned()));
        }
        updated => updated?.into_inner(),
    };
    state.catalog.invalidate(&[id], &[]);
    Ok(axum::Json(product.into()))
}

/// The version product `id` is at now, when `if_match` names its entity tag as `GET` would
/// give it now; 412 when it does not. Read from the product service, not the cache, which may
/// be a moment behind.
async fn version_if_matching(state: &State, id: Uuid, if_match: &HeaderValue) -> ApiResult<i64> {
    let product = state.services.product_now(id).await?;
    let version = product.version;
    let etag = cache::entity_tag(&json(&ProductBody::from(product))?);
    if !cache::if_match_holds(if_match, &etag) {
        return Err(ApiError::PreconditionFailed(format!(
            "the product changed since it was read (its ETag is now {}): read it again and \
             apply the change to what it is now",
            etag.to_str().unwrap_or_default()
        )));
    }
    Ok(version)
}

/// Delete a product (admin).
#[utoipa::path(delete, path = "/api/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The product's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such product"),
    ),
)]
pub(crate) async fn delete_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    state
        .services
        .product
        .clone()
        .delete_product(admin.request(DeleteProductRequest { id: id.to_string() }))
        .await?;
    state.catalog.invalidate(&[id], &[]);
    Ok(StatusCode::NO_CONTENT)
}

/// Every category.
#[utoipa::path(get, path = "/api/products/categories", tag = "catalog", responses(
    (status = 200, description = "The categories", body = CategoryList),
    (status = 304, description = "Not modified"),
))]
pub(crate) async fn list_categories(
    AxumState(state): AxumState<State>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    cached(&state, &headers, Key::Categories, async {
        let listed = state
            .services
            .product
            .clone()
            .list_categories(ListCategoriesRequest {})
            .await?
            .into_inner();
        json(&CategoryList {
            items: listed.items.into_iter().map(CategoryBody::from).collect(),
        })
    })
    .await
}

/// Create a category (admin).
#[utoipa::path(post, path = "/api/products/categories", tag = "catalog", security(("bearer" = [])),
    request_body = CategoryFields,
    responses(
        (status = 201, description = "The new category", body = CategoryBody),
        (status = 403, description = "Not an admin"),
        (status = 409, description = "The name is taken"),
    ),
)]
pub(crate) async fn create_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Json(body): Json<CategoryFields>,
) -> ApiResult<(StatusCode, axum::Json<CategoryBody>)> {
    let category = state
        .services
        .product
        .clone()
        .create_category(admin.request(CreateCategoryRequest {
            name: body.name,
            description: body.description,
        }))
        .await?
        .into_inner();
    state.catalog.invalidate(&[], &[id_of(&category.id)?]);
    Ok((StatusCode::CREATED, axum::Json(category.into())))
}

/// Rename a category named in the body (admin).
#[utoipa::path(put, path = "/api/products/categories", tag = "catalog", security(("bearer" = [])),
    request_body = CategoryWithId,
    responses(
        (status = 200, description = "The category", body = CategoryBody),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such category"),
        (status = 409, description = "The name is taken"),
    ),
)]
pub(crate) async fn update_category_in_body(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Json(body): Json<CategoryWithId>,
) -> ApiResult<axum::Json<CategoryBody>> {
    let id = Uuid::parse_str(body.id.trim())
        .map_err(|_| ApiError::invalid_field("id", "must be a UUID"))?;
    let fields = CategoryFields {
        name: body.name,
        description: body.description,
    };
    save_category(&state, &admin, id, fields).await
}

/// Rename a category (admin).
#[utoipa::path(put, path = "/api/products/categories/{categoryId}", tag = "catalog",
    security(("bearer" = [])),
    params(("categoryId" = Uuid, Path, description = "The category's id")),
    request_body = CategoryFields,
    responses(
        (status = 200, description = "The category", body = CategoryBody),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such category"),
        (status = 409, description = "The name is taken"),
    ),
)]
pub(crate) async fn update_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    IdPath(id): IdPath,
    Json(body): Json<CategoryFields>,
) -> ApiResult<axum::Json<CategoryBody>> {
    save_category(&state, &admin, id, body).await
}

async fn save_category(
    state: &State,
    admin: &crate::extract::AuthUser,
    id: Uuid,
    fields: CategoryFields,
) -> ApiResult<axum::Json<CategoryBody>> {
    let category = state
        .services
        .product
        .clone()
        .update_category(admin.request(UpdateCategoryRequest {
            id: id.to_string(),
            name: fields.name,
            description: fields.description,
        }))
        .await?
        .into_inner();
    state.catalog.invalidate(&[], &[id]);
    Ok(axum::Json(category.into()))
}

/// Delete a category (admin): only one without products.
#[utoipa::path(delete, path = "/api/products/categories/{categoryId}", tag = "catalog",
    security(("bearer" = [])),
    params(("categoryId" = Uuid, Path, description = "The category's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such category"),
        (status = 409, description = "Products still belong to it"),
    ),
)]
pub(crate) async fn delete_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    IdPath(id): IdPath,
) -> ApiResult<StatusCode> {
    state
        .services
        .product
        .clone()
        .delete_category(admin.request(DeleteCategoryRequest { id: id.to_string() }))
        .await?;
    state.catalog.invalidate(&[], &[id]);
    Ok(StatusCode::NO_CONTENT)
}

/// The id the product service gave something it created.
fn id_of(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| {
        tracing::error!(id = raw, "the product service answered a malformed id");
        ApiError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(page: Option<&str>, page_size: Option<&str>) -> PageQuery {
        PageQuery {
            page: page.map(str::to_owned),
            page_size: page_size.map(str::to_owned),
        }
    }

    #[test]
    fn pages_default_to_the_first_twenty() {
        assert_eq!(query(None, None).checked(), Ok((1, 20)));
        assert_eq!(query(Some(""), Some(" ")).checked(), Ok((1, 20)));
        assert_eq!(query(Some("3"), Some("100")).checked(), Ok((3, 100)));
    }

    #[test]
    fn out_of_range_or_malformed_pages_name_the_parameter() {
        for (q, field) in [
            (query(Some("0"), None), "page"),
            (query(Some("-2"), None), "page"),
            (query(Some("1.5"), None), "page"),
            (query(Some("one"), None), "page"),
            (query(None, Some("0")), "page_size"),
            (query(None, Some("101")), "page_size"),
            (query(None, Some("99999999999999999999")), "page_size"),
        ] {
            let Err(ApiError::BadRequest { errors, .. }) = q.checked() else {
                panic!("{field} accepted");
            };
            assert!(errors.contains_key(field), "{errors:?}");
        }
    }
}
