//! The gateway: the REST API of `docs/api.md`, in front of the gRPC services.
//!
//! Every error leaves as an RFC 7807 problem (`error.rs`); JSON bodies, ids and the caller's
//! token are checked by extractors before a handler runs (`extract.rs`); each route module owns
//! its `router()`, merged here with the request id, tracing, metrics and body limit layers.
//! The abuse limits (`limits.rs`) are kept by the server (`server.rs`: connections, header
//! timeout), by layers here (body timeout, head size, CORS) and by the auth routes (throttling).

mod cache;
mod error;
mod extract;
mod headers;
mod limits;
mod metrics;
mod openapi;
mod routes;
mod server;
mod storefront;
mod throttle;
mod upstream;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit};
use souk_shared::{Shutdown, bus::Bus, jwt::Verifier};
use tokio::net::TcpListener;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::RequestBodyDeadlineLayer,
    trace::TraceLayer,
};

pub use limits::{Limits, Rate, parse_origins, parse_rate};
pub use metrics::Metrics;
pub use upstream::Upstreams;

/// The largest request body accepted (docs/api.md: 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Settings {
    pub upstreams: Upstreams,
    pub verifier: Verifier,
    /// The gateway's figures, registered (`Metrics::register`) in the registry the
    /// operations port serves.
    pub metrics: Metrics,
    /// Timeouts, connection cap, throttles, CORS.
    pub limits: Limits,
    /// The shop's event bus: with it, catalog reads are cached, kept correct by the product
    /// service's `catalog.changed` events (`cache.rs`); without it, nothing is cached.
    pub bus: Option<Bus>,
}

/// What every handler can reach.
#[derive(Debug)]
pub(crate) struct AppState {
    pub verifier: Verifier,
    pub services: upstream::Clients,
    pub metrics: metrics::Metrics,
    pub throttle: throttle::Throttle,
    pub catalog: Arc<cache::CatalogCache>,
    /// The OpenAPI document (`openapi.rs`), as served.
    pub openapi: bytes::Bytes,
    /// The storefront's session renewals in flight.
    pub renewals: storefront::session::Renewals,
}

pub(crate) type State = Arc<AppState>;

/// The gateway's whole HTTP application; its catalog cache listens until `shutdown`.
pub async fn router(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Router> {
    let limits = settings.limits;
    let catalog = match &settings.bus {
        Some(bus) => cache::CatalogCache::subscribed(bus, shutdown).await?,
        None => cache::CatalogCache::disabled(),
    };
    let state = Arc::new(AppState {
        verifier: settings.verifier,
        services: upstream::Clients::new(&settings.upstreams)?,
        throttle: throttle::Throttle::new(&limits, settings.metrics.clone()),
        metrics: settings.metrics,
        catalog,
        openapi: openapi::json()?.into(),
        renewals: storefront::session::Renewals::default(),
    });
    let request_id = http::HeaderName::from_static(headers::REQUEST_ID);
    let app = Router::new()
        .merge(routes::users::router())
        .merge(routes::catalog::router())
        .merge(routes::cart::router())
        .merge(routes::orders::router())
        .merge(routes::ops::router())
        .merge(storefront::router(state.clone()))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyDeadlineLayer::new(limits.body_timeout))
        .layer(axum::middleware::from_fn_with_state(
            limits.max_header_bytes,
            headers::limit_head,
        ))
        .layer(axum::middleware::from_fn(headers::nosniff))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &http::Request<_>| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("http", method = %request.method(), uri = %request.uri().path(), request_id = id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(headers::drop_invalid_request_id))
        // Outermost: every request runs in the trace its `traceparent` continues (or a new
        // one), and the gRPC calls it makes carry it on.
        .layer(souk_shared::trace::ServerLayer);
    Ok(cors(app, limits.cors_allowed_origins))
}

/// CORS for the allowed origins only; with none (the default) no CORS header is ever sent, so
/// browsers keep other sites' pages from reading the API.
fn cors(app: Router, origins: Vec<http::HeaderValue>) -> Router {
    if origins.is_empty() {
        return app;
    }
    use http::{Method, header};
    app.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                http::HeaderName::from_static("idempotency-key"),
                http::HeaderName::from_static(headers::REQUEST_ID),
            ])
            .expose_headers([
                http::HeaderName::from_static(headers::REQUEST_ID),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Serves the gateway on `listener` until `shutdown`, then drains in-flight requests.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let limits = settings.limits.clone();
    let app = router(settings, shutdown.clone()).await?;
    server::serve(app, listener, &limits, shutdown)
        .await
        .map_err(|err| anyhow::anyhow!("gateway HTTP server failed: {err}"))
}
