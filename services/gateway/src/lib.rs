//! The gateway: the REST API of `API.md`, in front of the gRPC services.
//!
//! Every error leaves as an RFC 7807 problem (`error.rs`); JSON bodies, ids and the caller's
//! token are checked by extractors before a handler runs (`extract.rs`); each route module owns
//! its `router()`, merged here with the request id, tracing, metrics and body limit layers.

mod cache;
mod error;
mod extract;
mod metrics;
mod routes;
mod upstream;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit};
use souk_shared::{Shutdown, bus::Bus, jwt::Verifier};
use tokio::net::TcpListener;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use metrics::Metrics;
pub use upstream::Upstreams;

/// The largest request body accepted (API.md: 64 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Settings {
    pub upstreams: Upstreams,
    pub verifier: Verifier,
    /// The gateway's figures, registered (`Metrics::register`) in `registry`.
    pub metrics: Metrics,
    /// What `/metrics` serves: the gateway's figures, and with `souk up` the whole shop's.
    pub registry: Arc<prometheus_client::registry::Registry>,
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
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub catalog: Arc<cache::CatalogCache>,
}

pub(crate) type State = Arc<AppState>;

/// The gateway's whole HTTP application; its catalog cache listens until `shutdown`.
pub async fn router(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Router> {
    let catalog = match &settings.bus {
        Some(bus) => cache::CatalogCache::subscribed(bus, shutdown).await?,
        None => cache::CatalogCache::disabled(),
    };
    let state = Arc::new(AppState {
        verifier: settings.verifier,
        services: upstream::Clients::new(&settings.upstreams)?,
        metrics: settings.metrics,
        registry: settings.registry,
        catalog,
    });
    let request_id = http::HeaderName::from_static("x-request-id");
    let app = Router::new()
        .merge(routes::users::router())
        .merge(routes::catalog::router())
        .merge(routes::cart::router())
        .merge(routes::orders::router())
        .merge(routes::ops::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
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
        // Outermost: every request runs in the trace its `traceparent` continues (or a new
        // one), and the gRPC calls it makes carry it on.
        .layer(souk_shared::trace::ServerLayer);
    Ok(app)
}

/// Serves the gateway on `listener` until `shutdown`, then drains in-flight requests.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let app = router(settings, shutdown.clone()).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .map_err(|err| anyhow::anyhow!("gateway HTTP server failed: {err}"))
}
