//! The OpenAPI document of the API, generated: each operation from its handler's
//! `#[utoipa::path]`, each body from the type the handler reads or writes (`ToSchema`). Then
//! two passes state what the code keeps in one place for every route, so the document states
//! it once too:
//! - `shared_answers`: the answers of the layers and extractors every route goes through
//!   (`error.rs`: every error a problem, `WWW-Authenticate` on 401, `Retry-After` on 429 and
//!   503; `extract.rs`: 400, 408 and 413 on bodies, 400 on ids, 401 without a token;
//!   `headers.rs`: 431; `cache.rs`: `ETag`, `If-None-Match` and 304 on catalog reads);
//! - `input_bounds`: the bounds the services enforce, from the constants they enforce them with
//!   (`souk_contract::api`).
//!
//! The gateway serves this document at `GET /api/openapi.json`. `openapi.json` beside this file
//! is a checked-in copy for readers and tools: a test fails when it differs from what the code
//! generates (`SOUK_UPDATE_GENERATED=1 cargo test -p souk-gateway openapi` rewrites it), and
//! `tests::every_route_is_documented_and_nothing_else` compares the document's operations with
//! the router's.

use anyhow::{Context as _, anyhow};
use serde_json::{Map, Value, json};
use souk_contract::api;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use crate::{
    error::Problem,
    routes::{cart, catalog, ops, orders, users},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Souk",
        description = "The REST API of a Souk shop. Money is integer cents; ids are UUIDs; \
                       errors are RFC 7807 problems. docs/api.md explains each route."
    ),
    paths(
        users::register,
        users::login,
        users::refresh,
        users::logout,
        users::me,
        users::user,
        catalog::list_products,
        catalog::create_product,
        catalog::get_product,
        catalog::update_product,
        catalog::delete_product,
        catalog::list_categories,
        catalog::create_category,
        catalog::update_category_in_body,
        catalog::category_products,
        catalog::update_category,
        catalog::delete_category,
        cart::get_cart,
        cart::delete_cart,
        cart::add_item,
        cart::clear_cart,
        cart::set_quantity,
        cart::remove_item,
        orders::place,
        orders::list,
        orders::read,
        orders::cancel,
        ops::openapi,
    ),
    components(schemas(Problem)),
    modifiers(&Bearer),
    tags(
        (name = "auth", description = "Registration, login, tokens, users"),
        (name = "catalog", description = "Products and categories: reads are public, writes need an admin"),
        (name = "cart", description = "The caller's own cart"),
        (name = "orders", description = "Checkout and the caller's orders"),
        (name = "operations", description = "This document"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme the operations name: an ES256 JWT from `/api/auth/login`.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as served.
pub(crate) fn json() -> anyhow::Result<String> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    shared_answers(&mut doc)?;
    input_bounds(&mut doc)?;
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    Ok(text)
}

/// Why each answer that every route may give is given.
fn shared_description(status: &str) -> String {
    match status {
        "400" => {
            "Invalid input: a malformed body, id, query or header, or a value out of bounds".into()
        }
        "401" => "No valid bearer token".into(),
        "408" => "The body did not arrive within the body timeout".into(),
        "413" => format!("The body is over {} bytes", crate::BODY_LIMIT),
        "431" => "The request line and headers are over the limit".into(),
        "503" => "A service behind the gateway is unavailable: retry after `Retry-After`".into(),
        _ => String::new(),
    }
}

/// The answers and headers of the layers and extractors every route goes through.
fn shared_answers(doc: &mut Value) -> anyhow::Result<()> {
    let paths = doc["paths"]
        .as_object_mut()
        .context("the document has no paths")?;
    for (path, item) in paths.iter_mut() {
        let item = item.as_object_mut().context("a path item")?;
        for operation in item.values_mut() {
            let operation = operation.as_object_mut().context("an operation")?;
            let has_body = operation.contains_key("requestBody");
            let has_input = has_body
                || operation
                    .get("parameters")
                    .and_then(Value::as_array)
                    .is_some_and(|p| !p.is_empty());
            let secured = operation.contains_key("security");
            // Only the document itself is answered without asking a service.
            let upstream = path != "/api/openapi.json";
            let cached = operation["responses"].get("304").is_some();
            if cached {
                let parameters = operation
                    .entry("parameters")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .context("parameters")?;
                parameters.push(json!({
                    "name": "If-None-Match",
                    "in": "header",
                    "required": false,
                    "description": "The `ETag` of a copy the client holds: 304 while it is current",
                    "schema": { "type": "string" }
                }));
            }
            let responses = operation["responses"]
                .as_object_mut()
                .context("responses")?;
            for (status, wanted) in [
                ("400", has_input),
                ("401", secured),
                ("408", has_body),
                ("413", has_body),
                ("431", true),
                ("503", upstream),
            ] {
                if wanted && !responses.contains_key(status) {
                    responses.insert(
                        status.into(),
                        json!({ "description": shared_description(status) }),
                    );
                }
            }
            for (status, response) in responses.iter_mut() {
                let response = response.as_object_mut().context("a response")?;
                let mut headers = Map::new();
                if status.starts_with('4') || status.starts_with('5') {
                    response.insert(
                        "content".into(),
                        json!({ "application/problem+json": {
                            "schema": { "$ref": "#/components/schemas/Problem" }
                        }}),
                    );
                }
                match status.as_str() {
                    "401" => {
                        headers.insert(
                            "WWW-Authenticate".into(),
                            header("Always `Bearer`", json!({ "type": "string" })),
                        );
                    }
                    "429" => {
                        headers.insert(
                            "Retry-After".into(),
                            header("Seconds until the next attempt is allowed", seconds()),
                        );
                    }
                    "503" => {
                        headers.insert(
                            "Retry-After".into(),
                            header("Seconds to wait before retrying", seconds()),
                        );
                    }
                    "200" | "304" if cached => {
                        headers.insert(
                            "ETag".into(),
                            header("A strong tag of the body", json!({ "type": "string" })),
                        );
                        headers.insert(
                            "Cache-Control".into(),
                            header(
                                "`no-cache`: keep it, but revalidate",
                                json!({ "type": "string" }),
                            ),
                        );
                    }
                    _ => {}
                }
                if !headers.is_empty() {
                    response.insert("headers".into(), Value::Object(headers));
                }
            }
        }
    }
    Ok(())
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "required": true, "schema": schema })
}

fn seconds() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// The bounds the services enforce on what a client sends, from the constants they use.
fn input_bounds(doc: &mut Value) -> anyhow::Result<()> {
    // Names: no control character (Rust's `char::is_control`, Unicode's Cc: exactly these
    // two ranges); descriptions may hold tabs and line breaks.
    let name = |range: std::ops::RangeInclusive<usize>| {
        json!({
            "minLength": range.start(),
            "maxLength": range.end(),
            "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        })
    };
    let description = json!({
        "maxLength": api::MAX_DESCRIPTION_CHARS,
        "pattern": "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$",
    });
    let password = json!({
        "minLength": api::PASSWORD_CHARS.start(),
        "maxLength": api::PASSWORD_CHARS.end(),
    });
    let quantity = json!({ "minimum": 1, "maximum": api::MAX_QUANTITY });
    for (schema, field, bounds) in [
        ("Registration", "password", password),
        ("Registration", "name", name(api::USER_NAME_CHARS)),
        ("ProductInput", "name", name(api::PRODUCT_NAME_CHARS)),
        ("ProductInput", "description", description.clone()),
        (
            "ProductInput",
            "price_cents",
            json!({ "minimum": 0, "maximum": api::MAX_PRICE_CENTS }),
        ),
        (
            "ProductInput",
            "stock",
            json!({ "minimum": 0, "maximum": api::MAX_STOCK }),
        ),
        ("CategoryInput", "name", name(api::CATEGORY_NAME_CHARS)),
        ("CategoryInput", "description", description.clone()),
        ("CategoryUpdate", "name", name(api::CATEGORY_NAME_CHARS)),
        ("CategoryUpdate", "description", description),
        ("CartLine", "quantity", quantity.clone()),
        ("Quantity", "quantity", quantity),
    ] {
        let property = doc["components"]["schemas"][schema]["properties"]
            .get_mut(field)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| anyhow!("no property {schema}.{field} to bound"))?;
        extend(property, bounds);
    }
    for operation in doc["paths"]
        .as_object_mut()
        .context("paths")?
        .values_mut()
        .flat_map(|item| {
            item.as_object_mut()
                .into_iter()
                .flat_map(|i| i.values_mut())
        })
    {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for parameter in parameters {
            let name = parameter["name"].as_str().unwrap_or_default().to_owned();
            match name.as_str() {
                "page" => {
                    parameter["schema"] = page(json!({ "minimum": 1, "maximum": i64::MAX }), 1);
                }
                "page_size" => {
                    parameter["schema"] = page(
                        json!({ "minimum": 1, "maximum": api::MAX_PAGE_SIZE }),
                        api::DEFAULT_PAGE_SIZE,
                    );
                }
                "Idempotency-Key" => {
                    let schema = parameter["schema"]
                        .as_object_mut()
                        .context("a parameter's schema")?;
                    extend(
                        schema,
                        json!({
                            "type": "string",
                            "minLength": 1,
                            "maxLength": api::MAX_IDEMPOTENCY_KEY_CHARS,
                            // What a header value may hold (`HeaderValue::to_str`).
                            "pattern": "^[\\x20-\\x7E]+$",
                        }),
                    );
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A paging parameter: a whole number within `bounds`, or empty (`?page=`, as an HTML form
/// sends an empty field) for `default`.
fn page(bounds: Value, default: i64) -> Value {
    let mut number = json!({ "type": "integer", "format": "int64" });
    if let (Some(number), Value::Object(bounds)) = (number.as_object_mut(), bounds) {
        number.extend(bounds);
    }
    json!({
        "anyOf": [number, { "type": "string", "pattern": "^\\s*$" }],
        "default": default,
    })
}

fn extend(object: &mut Map<String, Value>, with: Value) {
    if let Value::Object(with) = with {
        object.extend(with);
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use http::{Method, Request, StatusCode};
    use tower::ServiceExt as _;

    use crate::{Limits, Metrics, Settings, Upstreams};

    /// Every route of the router (its path as written, `{param}` and all), found in axum's
    /// `Debug` of the router, the only place it lists them. The test below fails loudly if
    /// that format changes (it then finds none of the routes it knows).
    fn router_paths(router: &axum::Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let mut paths = BTreeSet::new();
        for (at, _) in debug.match_indices("RouteId(") {
            let rest = &debug[at..];
            let Some(quote) = rest.find(": \"") else {
                continue;
            };
            if !rest[..quote].ends_with(')') {
                continue;
            }
            let path = &rest[quote + 3..];
            if let Some(end) = path.find('"') {
                paths.insert(path[..end].to_owned());
            }
        }
        paths
    }

    /// The router as `souk up` builds it, with services that are not there (a probe of a
    /// route that reaches a service gets a quick 503).
    async fn app() -> axum::Router {
        let keys = souk_shared::jwt::KeyPair::generate().expect("keys");
        let settings = Settings {
            upstreams: Upstreams {
                user: "http://127.0.0.1:1".into(),
                product: "http://127.0.0.1:1".into(),
                cart: "http://127.0.0.1:1".into(),
                order: "http://127.0.0.1:1".into(),
            },
            verifier: souk_shared::jwt::Verifier::from_pem(&keys.public_pem).expect("verifier"),
            metrics: Metrics::register(&mut prometheus_client::registry::Registry::default()),
            limits: Limits::default(),
            bus: None,
        };
        crate::router(settings, souk_shared::Shutdown::new())
            .await
            .expect("router")
    }

    /// Whether `method` is routed at `path`: anything but the method-not-allowed answer.
    async fn routed(app: &axum::Router, method: &Method, path: &str) -> bool {
        // A parameter that is not a UUID: handlers refuse it before they call a service.
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let request = Request::builder()
            .method(method)
            .uri(concrete)
            .body(axum::body::Body::empty())
            .expect("request");
        let answer = app.clone().oneshot(request).await.expect("an answer");
        answer.status() != StatusCode::METHOD_NOT_ALLOWED
    }

    /// The API is everything under `/api/`, and the document is exactly it. Outside `/api/`
    /// the router serves what is not the API, so not in the document: the storefront's HTML
    /// pages and assets (docs/api.md, "The storefront") and the orchestrator's probes
    /// `/healthz` and `/readyz` (docs/operations.md). `/metrics` is on the operations port,
    /// not on this router at all.
    #[tokio::test]
    async fn every_route_is_documented_and_nothing_else() {
        let app = app().await;
        let paths = router_paths(&app);
        for known in [
            "/healthz",
            "/readyz",
            "/api/openapi.json",
            "/api/orders/{id}",
        ] {
            assert!(
                paths.contains(known),
                "{known} not found in the router: has axum's Debug changed? {paths:?}"
            );
        }
        assert!(
            !paths.contains("/metrics"),
            "/metrics is not the API port's"
        );
        let mut served = BTreeSet::new();
        for path in paths.iter().filter(|path| path.starts_with("/api/")) {
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ] {
                if routed(&app, &method, path).await {
                    served.insert((method.to_string(), path.clone()));
                }
            }
        }
        let doc: serde_json::Value =
            serde_json::from_str(&super::json().expect("the document")).expect("JSON");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("a path item")
                    .keys()
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let not_served: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && not_served.is_empty(),
            "routes not in the document: {undocumented:?}; documented but not routed: {not_served:?}"
        );
        assert!(served.len() >= 28, "{served:?}");
    }

    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let generated = super::json().expect("the document generates");
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/openapi.json");
        if std::env::var_os("SOUK_UPDATE_GENERATED").is_some() {
            std::fs::write(&committed, &generated).expect("write openapi.json");
            return;
        }
        let current = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            current == generated,
            "services/gateway/src/openapi.json is stale: run \
             `SOUK_UPDATE_GENERATED=1 cargo test -p souk-gateway openapi`"
        );
    }
}
