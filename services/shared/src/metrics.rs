//! A process's Prometheus endpoint, for processes without the gateway (`souk serve <service>`,
//! `souk relay <service>`): `/metrics` and `/healthz` on their own listener.

use std::sync::Arc;

use axum::{Router, http::header, routing::get};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Shutdown;

/// The text exposition of a registry.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %err, "cannot encode metrics");
    }
    out
}

/// Serves `registry` until `shutdown`.
pub async fn serve(
    registry: Arc<Registry>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(&registry),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .map_err(|err| anyhow::anyhow!("metrics server failed: {err}"))
}
