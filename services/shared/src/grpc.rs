//! Serving a gRPC service: the standard health service beside it, a listener handed in by the
//! caller (port 0 in tests), and a graceful stop that drains in-flight calls on shutdown.

use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{Shutdown, discovery::Discovery};

/// One service to serve.
#[derive(Debug)]
pub struct GrpcService {
    /// The fully qualified name, e.g. `souk.v1.UserService` (as health checks name it).
    pub name: &'static str,
    pub routes: Routes,
    /// When given, health reports `NOT_SERVING` while this database cannot be reached.
    pub database: Option<PgPool>,
}

/// Serves until `shutdown`, then stops accepting and lets in-flight calls finish.
pub async fn serve(
    service: GrpcService,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_with(service, listener, shutdown, Vec::new()).await
}

/// Like `serve`, with tasks of the service that run beside its server (event consumers,
/// sweeps) and stop on the same `shutdown`: they are awaited after the server, so a message in
/// hand is finished before the service returns.
pub async fn serve_with(
    service: GrpcService,
    listener: TcpListener,
    shutdown: Shutdown,
    beside: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let served = serve_only(service, listener, shutdown).await;
    for task in beside {
        let _ = task.await;
    }
    served
}

async fn serve_only(
    service: GrpcService,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_status(&reporter, service.name, ServingStatus::Serving).await;
    // Liveness: serving while the process answers, whatever its database does (the operator's
    // liveness probe asks for it; readiness asks for "" and follows the database).
    reporter
        .set_service_status(
            souk_contract::LIVENESS_HEALTH_SERVICE,
            ServingStatus::Serving,
        )
        .await;
    let watcher = service.database.map(|pool| {
        tokio::spawn(watch_database(
            pool,
            reporter.clone(),
            service.name,
            shutdown.clone(),
        ))
    });

    let stopping = {
        let reporter = reporter.clone();
        async move {
            shutdown.wait().await;
            set_status(&reporter, service.name, ServingStatus::NotServing).await;
        }
    };
    let result = Server::builder()
        .layer(crate::trace::ServerLayer)
        .add_routes(service.routes)
        .add_service(health)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
        .await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    result.map_err(|err| anyhow::anyhow!("{} gRPC server failed: {err}", service.name))
}

async fn set_status(reporter: &HealthReporter, name: &str, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(name, status).await;
}

/// Keeps the health status in step with the database's reachability.
async fn watch_database(
    pool: PgPool,
    reporter: HealthReporter,
    name: &'static str,
    shutdown: Shutdown,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let reachable = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("select 1").execute(&pool),
        )
        .await
        .is_ok_and(|result| result.is_ok());
        if reachable != serving {
            serving = reachable;
            let status = if reachable {
                tracing::info!(service = name, "database reachable again");
                ServingStatus::Serving
            } else {
                tracing::warn!(service = name, "database unreachable");
                ServingStatus::NotServing
            };
            set_status(&reporter, name, status).await;
        }
    }
}

/// How long a call to another service may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to another service at `url` (`http://host:port`), balanced over every replica
/// `host` resolves to (see [`crate::discovery`]), connected lazily and reconnected by itself, so
/// that the caller starts and stays up while the other service is down. Calls carry the trace
/// context. `setting` names the configuration for error messages.
pub fn channel(setting: &str, url: &str) -> anyhow::Result<crate::trace::TracedChannel> {
    channel_with(setting, url, CALL_TIMEOUT, Discovery::dns())
}

/// [`channel`] with its calls' timeout and its way of finding the replicas.
pub fn channel_with(
    setting: &str,
    url: &str,
    timeout: Duration,
    discovery: Discovery,
) -> anyhow::Result<crate::trace::TracedChannel> {
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|err| anyhow::anyhow!("{setting}: invalid URL {url:?}: {err}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        anyhow::bail!("{setting}: {url:?} is not an http://host:port URL");
    }
    let configure = move |endpoint: tonic::transport::Endpoint| {
        endpoint
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .tcp_nodelay(true)
    };
    Ok(crate::trace::traced(crate::discovery::balanced(
        uri, configure, discovery,
    )))
}
