//! Browsing: the home page (categories and the newest products), listings by page (all products,
//! or one category's), and a product's page with its price, stock and "Add to cart".

use axum::{
    Router,
    extract::{Path, Query, State as AxumState},
    response::Response,
    routing::get,
};
use maud::{Markup, html};
use serde::Deserialize;
use souk_protos::v1::{
    Category, GetCategoryRequest, ListCategoriesRequest, ListProductsRequest, Product,
};
use uuid::Uuid;

use super::{
    page::{PageError, PageResult, csrf, money, render},
    session::Visitor,
};
use crate::State;

/// Products on a listing page.
const PAGE_SIZE: i64 = 12;
/// Newest products on the home page.
const NEWEST: i64 = 8;

pub fn router() -> Router<State> {
    Router::new()
        .route("/", get(home))
        .route("/products", get(all_products))
        .route("/products/{id}", get(product))
        .route("/categories/{id}", get(category))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    page: Option<String>,
}

impl PageQuery {
    /// The page asked for; anything that is not a page number is the first page.
    pub(crate) fn number(&self) -> i64 {
        self.page
            .as_deref()
            .and_then(|p| p.trim().parse().ok())
            .filter(|p: &i64| *p >= 1)
            .unwrap_or(1)
    }
}

/// An id from a path; a malformed one is a page that does not exist.
pub(crate) fn parse_id(raw: &str) -> PageResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| PageError::NotFound("There is no such page.".into()))
}

async fn categories(state: &State) -> PageResult<Vec<Category>> {
    Ok(state
        .services
        .product
        .clone()
        .list_categories(ListCategoriesRequest {})
        .await?
        .into_inner()
        .items)
}

async fn home(AxumState(state): AxumState<State>, visitor: Visitor) -> PageResult<Response> {
    let (categories, newest) = tokio::try_join!(categories(&state), async {
        Ok::<_, PageError>(
            state
                .services
                .product
                .clone()
                .list_products(ListProductsRequest {
                    page: 1,
                    page_size: NEWEST,
                    category_id: None,
                })
                .await?
                .into_inner()
                .items,
        )
    })?;
    let body = html! {
        h1 { "Welcome to Souk" }
        section aria-labelledby="categories-heading" {
            h2 id="categories-heading" { "Categories" }
            @if categories.is_empty() {
                p { "No categories yet." }
            } @else {
                ul class="categories" {
                    @for category in &categories {
                        li { a href={ "/categories/" (category.id) } { (category.name) } }
                    }
                }
            }
        }
        section aria-labelledby="newest-heading" {
            h2 id="newest-heading" { "Newest products" }
            (product_grid(&newest))
            p { a href="/products" { "See all products" } }
        }
    };
    Ok(render(&visitor, "Home", html! {}, body))
}

async fn all_products(
    AxumState(state): AxumState<State>,
    visitor: Visitor,
    Query(query): Query<PageQuery>,
) -> PageResult<Response> {
    listing(&state, &visitor, None, query.number()).await
}

async fn category(
    AxumState(state): AxumState<State>,
    visitor: Visitor,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let category = state
        .services
        .product
        .clone()
        .get_category(GetCategoryRequest { id: id.to_string() })
        .await?
        .into_inner();
    listing(&state, &visitor, Some(category), query.number()).await
}

async fn listing(
    state: &State,
    visitor: &Visitor,
    category: Option<Category>,
    page: i64,
) -> PageResult<Response> {
    let listed = state
        .services
        .product
        .clone()
        .list_products(ListProductsRequest {
            page,
            page_size: PAGE_SIZE,
            category_id: category.as_ref().map(|c| c.id.clone()),
        })
        .await?
        .into_inner();
    let (title, base) = match &category {
        Some(category) => (
            category.name.clone(),
            format!("/categories/{}", category.id),
        ),
        None => ("All products".to_owned(), "/products".to_owned()),
    };
    let pages = ((listed.total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let body = html! {
        h1 { (title) }
        @if let Some(category) = &category {
            @if !category.description.is_empty() { p { (category.description) } }
        }
        (product_grid(&listed.items))
        nav class="pages" aria-label="Pages" {
            @if page > 1 {
                a href={ (base) "?page=" (page - 1) } rel="prev" { "Previous page" }
            }
            span { "Page " (page) " of " (pages) }
            @if page < pages {
                a href={ (base) "?page=" (page + 1) } rel="next" { "Next page" }
            }
        }
    };
    Ok(render(visitor, &title, html! {}, body))
}

fn product_grid(products: &[Product]) -> Markup {
    html! {
        @if products.is_empty() {
            p { "No products here yet." }
        } @else {
            ul class="products" {
                @for product in products {
                    li class="product-card" {
                        a href={ "/products/" (product.id) } { (product.name) }
                        p class="price" { (money(product.price_cents, &product.currency)) }
                        p class="stock" { (stock_text(product.stock)) }
                    }
                }
            }
        }
    }
}

fn stock_text(stock: i64) -> String {
    match stock {
        ..=0 => "Out of stock".to_owned(),
        1..=5 => format!("Only {stock} left"),
        _ => "In stock".to_owned(),
    }
}

async fn product(
    AxumState(state): AxumState<State>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> PageResult<Response> {
    let id = parse_id(&id)?;
    let product = state.services.product_now(id).await?;
    let body = html! {
        article class="product" {
            h1 { (product.name) }
            p class="price" { "Price: " (money(product.price_cents, &product.currency)) }
            p class="stock" { (stock_text(product.stock)) }
            @if !product.description.is_empty() { p class="description" { (product.description) } }
            @if product.stock > 0 {
                form method="post" action="/cart/items" class="add-to-cart" {
                    (csrf(&visitor))
                    input type="hidden" name="product_id" value=(product.id);
                    label for="quantity" { "Quantity" }
                    input id="quantity" name="quantity" type="number" min="1" max=(product.stock) value="1" required;
                    button type="submit" { "Add to cart" }
                }
            }
        }
    };
    Ok(render(&visitor, &product.name, html! {}, body))
}
