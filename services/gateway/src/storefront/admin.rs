//! The admin's pages: products and categories created, edited and deleted, stock set. Every
//! page and action takes an `Admin`; the services check the forwarded token's role again.
//!
//! An update replaces the whole product, stock included, so every form that updates one
//! carries the version it was rendered from, and the update applies only while the product is
//! still at it: one made from a page an order has made stale since is refused (a 409 page)
//! instead of giving back the stock the order took. Setting stock writes the product back with
//! every other field as it is at that version.

use axum::{
    Router,
    extract::{Path, Query, State as AxumState},
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;
use souk_protos::v1::{
    Category, CreateCategoryRequest, CreateProductRequest, DeleteCategoryRequest,
    DeleteProductRequest, GetCategoryRequest, ListCategoriesRequest, ListProductsRequest, Product,
    ProductInput, UpdateCategoryRequest, UpdateProductRequest,
};

use super::{
    catalog::{PageQuery, parse_id},
    page::{PageError, PageResult, csrf, money, render},
    session::{Admin, Form, Visitor},
};
use crate::State;

/// Products per page of the admin's list (the API's largest page).
const PAGE_SIZE: i64 = 100;

pub fn router() -> Router<State> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/products", post(create_product))
        .route("/admin/products/new", get(new_product))
        .route(
            "/admin/products/{id}",
            get(edit_product).post(update_product),
        )
        .route("/admin/products/{id}/stock", post(set_stock))
        .route("/admin/products/{id}/delete", post(delete_product))
        .route("/admin/categories", post(create_category))
        .route(
            "/admin/categories/{id}",
            get(edit_category).post(update_category),
        )
        .route("/admin/categories/{id}/delete", post(delete_category))
}

#[derive(Debug, Deserialize)]
struct ProductForm {
    name: String,
    #[serde(default)]
    description: String,
    price: String,
    stock: String,
    #[serde(default)]
    category_id: String,
    /// The version the form was rendered from; none on the form that creates.
    #[serde(default)]
    version: String,
}

#[derive(Debug, Deserialize)]
struct StockForm {
    stock: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct CategoryForm {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct Nothing {}

/// A price as typed ("12.50", "12.5", "12") in cents.
fn parse_price(raw: &str) -> PageResult<i64> {
    let invalid = || PageError::BadRequest("Price must be an amount like 12.50.".into());
    let raw = raw.trim().trim_start_matches('$');
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty()
        || fraction.len() > 2
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let cents: i64 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(cents))
        .ok_or_else(invalid)
}

fn parse_version(raw: &str) -> PageResult<i64> {
    raw.trim()
        .parse()
        .ok()
        .filter(|version| *version >= 1)
        .ok_or_else(|| PageError::BadRequest("The form's product version is not a version.".into()))
}

/// What an update refused because the product changed since the form was rendered says.
fn stale(status: tonic::Status) -> PageError {
    if status.code() == tonic::Code::FailedPrecondition {
        PageError::Conflict(
            "This product changed since the page was loaded: an order took stock, or another \
             admin saved it. Nothing was changed; open it again to see it as it is now."
                .into(),
        )
    } else {
        status.into()
    }
}

fn parse_stock(raw: &str) -> PageResult<i64> {
    raw.trim()
        .parse()
        .map_err(|_| PageError::BadRequest("Stock must be a whole number.".into()))
}

impl ProductForm {
    fn input(self) -> PageResult<ProductInput> {
        let category_id = match self.category_id.trim() {
            "" => None,
            id => Some(parse_id(id)?.to_string()),
        };
        Ok(ProductInput {
            price_cents: parse_price(&self.price)?,
            stock: parse_stock(&self.stock)?,
            name: self.name,
            description: self.description,
            category_id,
        })
    }
}

fn input_of(product: &Product) -> ProductInput {
    ProductInput {
        name: product.name.clone(),
        description: product.description.clone(),
        price_cents: product.price_cents,
        stock: product.stock,
        category_id: product.category_id.clone(),
    }
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

async fn overview(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Query(query): Query<PageQuery>,
) -> PageResult {
    let visitor = &admin.visitor;
    let page = query.number();
    let (products, categories) = tokio::try_join!(
        async {
            Ok::<_, PageError>(
                state
                    .services
                    .product
                    .clone()
                    .list_products(ListProductsRequest {
                        page,
                        page_size: PAGE_SIZE,
                        category_id: None,
                    })
                    .await?
                    .into_inner(),
            )
        },
        categories(&state)
    )?;
    let body = html! {
        h1 { "Admin" }
        section aria-labelledby="products-heading" {
            h2 id="products-heading" { "Products" }
            p { a class="button" href="/admin/products/new" { "New product" } }
            @if products.items.is_empty() {
                p { "No products yet." }
            } @else {
                table class="admin" {
                    caption class="visually-hidden" { "Products" }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Price" }
                        th scope="col" { "Stock" }
                        th scope="col" { span class="visually-hidden" { "Actions" } }
                    } }
                    tbody {
                        @for product in &products.items {
                            tr {
                                td { a href={ "/admin/products/" (product.id) } aria-label={ "Edit " (product.name) } { (product.name) } }
                                td { (money(product.price_cents, &product.currency)) }
                                td {
                                    form method="post" action={ "/admin/products/" (product.id) "/stock" } class="inline" {
                                        (csrf(visitor))
                                        label for={ "stock-" (product.id) } class="visually-hidden" { "Stock of " (product.name) }
                                        input id={ "stock-" (product.id) } name="stock" type="number" min="0" value=(product.stock) required;
                                        input type="hidden" name="version" value=(product.version);
                                        button type="submit" aria-label={ "Set stock of " (product.name) } { "Set stock" }
                                    }
                                }
                                td {
                                    form method="post" action={ "/admin/products/" (product.id) "/delete" } class="inline" {
                                        (csrf(visitor))
                                        button type="submit" class="secondary" aria-label={ "Delete " (product.name) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
                @if products.total > page * PAGE_SIZE {
                    p { a href={ "/admin?page=" (page + 1) } { "Next page" } }
                }
            }
        }
        section aria-labelledby="categories-heading" {
            h2 id="categories-heading" { "Categories" }
            @if !categories.is_empty() {
                ul class="admin-categories" {
                    @for category in &categories {
                        li {
                            a href={ "/admin/categories/" (category.id) } aria-label={ "Edit " (category.name) } { (category.name) }
                            form method="post" action={ "/admin/categories/" (category.id) "/delete" } class="inline" {
                                (csrf(visitor))
                                button type="submit" class="secondary" aria-label={ "Delete " (category.name) } { "Delete" }
                            }
                        }
                    }
                }
            }
            h3 { "New category" }
            (category_form(visitor, "/admin/categories", None, "Create category"))
        }
    };
    Ok(render(visitor, "Admin", html! {}, body))
}

fn category_form(
    visitor: &Visitor,
    action: &str,
    category: Option<&Category>,
    submit: &str,
) -> Markup {
    html! {
        form method="post" action=(action) class="stacked" {
            (csrf(visitor))
            label for="category-name" { "Name" }
            input id="category-name" name="name" type="text" value=(category.map_or("", |c| &c.name)) required;
            label for="category-description" { "Description" }
            textarea id="category-description" name="description" { (category.map_or("", |c| &c.description)) }
            button type="submit" { (submit) }
        }
    }
}

fn product_form(
    visitor: &Visitor,
    action: &str,
    product: Option<&Product>,
    categories: &[Category],
    submit: &str,
) -> Markup {
    let price = product.map(|p| format!("{}.{:02}", p.price_cents / 100, p.price_cents % 100));
    let selected = product.and_then(|p| p.category_id.as_deref());
    html! {
        form method="post" action=(action) class="stacked" {
            (csrf(visitor))
            @if let Some(product) = product {
                input type="hidden" name="version" value=(product.version);
            }
            label for="name" { "Name" }
            input id="name" name="name" type="text" value=(product.map_or("", |p| &p.name)) required;
            label for="description" { "Description" }
            textarea id="description" name="description" { (product.map_or("", |p| &p.description)) }
            label for="price" { "Price" }
            input id="price" name="price" type="text" inputmode="decimal" pattern="[0-9]+([.][0-9]{1,2})?" value=(price.unwrap_or_default()) required;
            label for="stock" { "Stock" }
            input id="stock" name="stock" type="number" min="0" value=(product.map_or(0, |p| p.stock)) required;
            label for="category" { "Category" }
            select id="category" name="category_id" {
                option value="" { "None" }
                @for category in categories {
                    option value=(category.id) selected[selected == Some(category.id.as_str())] { (category.name) }
                }
            }
            button type="submit" { (submit) }
        }
    }
}

async fn new_product(AxumState(state): AxumState<State>, Admin(admin): Admin) -> PageResult {
    let categories = categories(&state).await?;
    let body = html! {
        h1 { "New product" }
        (product_form(&admin.visitor, "/admin/products", None, &categories, "Create product"))
    };
    Ok(render(&admin.visitor, "New product", html! {}, body))
}

async fn create_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Form(form): Form<ProductForm>,
) -> PageResult {
    let product = state
        .services
        .product
        .clone()
        .create_product(admin.user.request(CreateProductRequest {
            product: Some(form.input()?),
        }))
        .await?
        .into_inner();
    Ok(Redirect::to(&format!("/admin/products/{}", product.id)).into_response())
}

async fn read_product(state: &State, id: &str) -> PageResult<Product> {
    Ok(state.services.product_now(parse_id(id)?).await?)
}

async fn edit_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> PageResult {
    let (product, categories) = tokio::try_join!(read_product(&state, &id), categories(&state))?;
    let title = format!("Edit {}", product.name);
    let body = html! {
        h1 { (title) }
        p { a href={ "/products/" (product.id) } { "See it in the shop" } }
        (product_form(&admin.visitor, &format!("/admin/products/{}", product.id), Some(&product), &categories, "Save product"))
        p { a href="/admin" { "Back to admin" } }
    };
    Ok(render(&admin.visitor, &title, html! {}, body))
}

async fn update_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Form(form): Form<ProductForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    let if_version = match form.version.trim() {
        "" => None,
        version => Some(parse_version(version)?),
    };
    state
        .services
        .product
        .clone()
        .update_product(admin.user.request(UpdateProductRequest {
            id: id.to_string(),
            product: Some(form.input()?),
            if_version,
        }))
        .await
        .map_err(stale)?;
    Ok(Redirect::to(&format!("/admin/products/{id}")).into_response())
}

async fn set_stock(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Form(form): Form<StockForm>,
) -> PageResult {
    let stock = parse_stock(&form.stock)?;
    let version = parse_version(&form.version)?;
    let product = read_product(&state, &id).await?;
    let input = ProductInput {
        stock,
        ..input_of(&product)
    };
    state
        .services
        .product
        .clone()
        .update_product(admin.user.request(UpdateProductRequest {
            id: product.id,
            product: Some(input),
            if_version: Some(version),
        }))
        .await
        .map_err(stale)?;
    Ok(Redirect::to("/admin").into_response())
}

async fn delete_product(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Form(Nothing {}): Form<Nothing>,
) -> PageResult {
    let id = parse_id(&id)?;
    state
        .services
        .product
        .clone()
        .delete_product(
            admin
                .user
                .request(DeleteProductRequest { id: id.to_string() }),
        )
        .await?;
    Ok(Redirect::to("/admin").into_response())
}

async fn create_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Form(form): Form<CategoryForm>,
) -> PageResult {
    state
        .services
        .product
        .clone()
        .create_category(admin.user.request(CreateCategoryRequest {
            name: form.name,
            description: form.description,
        }))
        .await?;
    Ok(Redirect::to("/admin").into_response())
}

async fn edit_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> PageResult {
    let id = parse_id(&id)?;
    let category = state
        .services
        .product
        .clone()
        .get_category(GetCategoryRequest { id: id.to_string() })
        .await?
        .into_inner();
    let title = format!("Edit {}", category.name);
    let body = html! {
        h1 { (title) }
        (category_form(&admin.visitor, &format!("/admin/categories/{id}"), Some(&category), "Save category"))
        p { a href="/admin" { "Back to admin" } }
    };
    Ok(render(&admin.visitor, &title, html! {}, body))
}

async fn update_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Form(form): Form<CategoryForm>,
) -> PageResult {
    let id = parse_id(&id)?;
    state
        .services
        .product
        .clone()
        .update_category(admin.user.request(UpdateCategoryRequest {
            id: id.to_string(),
            name: form.name,
            description: form.description,
        }))
        .await?;
    Ok(Redirect::to("/admin").into_response())
}

async fn delete_category(
    AxumState(state): AxumState<State>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Form(Nothing {}): Form<Nothing>,
) -> PageResult {
    let id = parse_id(&id)?;
    state
        .services
        .product
        .clone()
        .delete_category(
            admin
                .user
                .request(DeleteCategoryRequest { id: id.to_string() }),
        )
        .await?;
    Ok(Redirect::to("/admin").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_read_in_cents() {
        assert_eq!(parse_price("12.50").ok(), Some(1250));
        assert_eq!(parse_price("12.5").ok(), Some(1250));
        assert_eq!(parse_price("12").ok(), Some(1200));
        assert_eq!(parse_price("0.05").ok(), Some(5));
        for bad in [
            "",
            "1.234",
            "-1",
            "1,50",
            "abc",
            ".5",
            "99999999999999999999",
        ] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
    }
}
