//! Serving a gRPC service: the standard health service beside it, a listener handed in by the
//! caller (port 0 in tests), and a graceful stop that drains in-flight calls on shutdown.
//!
//! The port answers at once, before the service is ready (its database reached and migrated):
//! liveness is `SERVING` from the start, so a Kubernetes liveness probe never restarts a pod
//! that waits for its database; readiness (`""` and the service's name) is `NOT_SERVING` and
//! the service's own calls get `Unavailable` (retryable) until it is ready.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{Shutdown, discovery::Discovery};

/// Work a service does before or beside its server.
pub type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Work that runs beside a service's server once it is ready (an event consumer, a sweep),
/// until the shutdown it is given.
pub type Beside = Box<dyn FnOnce(Shutdown) -> Task<()> + Send>;

/// What makes a service ready to answer (its database created and migrated, its admin account
/// in place), not started yet. It retries by itself while a dependency is away; an error is
/// one a restart would not cure.
pub struct Preparation(Task<anyhow::Result<()>>);

impl Preparation {
    pub fn new(prepare: impl Future<Output = anyhow::Result<()>> + Send + 'static) -> Self {
        Self(Box::pin(prepare))
    }

    /// Readies `database` (`Database::prepare`).
    pub fn database(database: crate::db::Database) -> Self {
        Self::new(async move { database.prepare().await })
    }

    pub async fn run(self) -> anyhow::Result<()> {
        self.0.await
    }
}

impl std::fmt::Debug for Preparation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Preparation")
    }
}

/// One service to serve: what each service crate builds from its settings, and how every one of
/// them is made ready and served.
pub struct GrpcService {
    /// The fully qualified name, e.g. `souk.v1.UserService` (as health checks name it).
    pub name: &'static str,
    pub routes: Routes,
    /// When given, health reports `NOT_SERVING` while this database cannot be reached.
    pub database: Option<PgPool>,
    /// What makes the service ready (its database migrated...), retrying by itself while its
    /// dependencies are away; `None` when it is ready already. An error stops the service.
    pub prepare: Option<Preparation>,
    /// Tasks that run beside the server once the service is ready (event consumers, sweeps) and
    /// stop on the same shutdown: they are awaited after the server, so a message in hand is
    /// finished before the service returns.
    pub beside: Vec<Beside>,
}

impl std::fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .field("prepared", &self.prepare.is_none())
            .field("beside", &self.beside.len())
            .finish_non_exhaustive()
    }
}

impl GrpcService {
    /// A service that is ready, with nothing beside it.
    pub fn new(name: &'static str, routes: Routes) -> Self {
        Self {
            name,
            routes,
            database: None,
            prepare: None,
            beside: Vec::new(),
        }
    }

    /// A service on its own database: unready until the database is reached and migrated, then
    /// reported `NOT_SERVING` whenever it cannot be reached.
    pub fn on_database(name: &'static str, routes: Routes, database: crate::db::Database) -> Self {
        Self {
            database: Some(database.pool().clone()),
            prepare: Some(Preparation::database(database)),
            ..Self::new(name, routes)
        }
    }

    /// Makes the service ready now, waiting as long as its dependencies take (`souk up`,
    /// tests); `serve` then answers its calls from the first. A service served without this
    /// answers health at once and its calls once ready (`souk serve`, a pod).
    pub async fn ready(mut self) -> anyhow::Result<Self> {
        if let Some(prepare) = self.prepare.take() {
            prepare.run().await?;
        }
        Ok(self)
    }

    /// Serves until `shutdown` (see [`serve`]).
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        serve(self, listener, shutdown).await
    }
}

/// Serves until `shutdown`, then stops accepting, lets in-flight calls finish and waits for the
/// tasks beside the server.
pub async fn serve(
    service: GrpcService,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let GrpcService {
        name,
        routes,
        database,
        prepare,
        beside,
    } = service;
    let (reporter, health) = tonic_health::server::health_reporter();
    // Liveness: serving while the process answers, whatever its database does (the operator's
    // liveness probe asks for it; readiness asks for "" and follows the database).
    reporter
        .set_service_status(
            souk_contract::LIVENESS_HEALTH_SERVICE,
            ServingStatus::Serving,
        )
        .await;
    // A service ready already (`ready`) answers from its first call on.
    let ready = prepare.is_none();
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    set_status(&reporter, name, status).await;
    let gate = Gate::new(name, ready);
    // Stops the server on shutdown, or when the service cannot be made ready.
    let stop = Shutdown::new();
    let readying = tokio::spawn(become_ready(
        Readying {
            name,
            prepare,
            beside,
            database,
            gate: gate.clone(),
            reporter: reporter.clone(),
        },
        shutdown.clone(),
        stop.clone(),
    ));

    let stopping = {
        let reporter = reporter.clone();
        async move {
            tokio::select! {
                () = shutdown.wait() => {}
                () = stop.wait() => {}
            }
            set_status(&reporter, name, ServingStatus::NotServing).await;
        }
    };
    let served = Server::builder()
        .layer(crate::trace::ServerLayer)
        .layer(gate)
        .add_routes(routes)
        .add_service(health)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
        .await
        .map_err(|err| anyhow::anyhow!("{name} gRPC server failed: {err}"));
    if served.is_err() {
        readying.abort();
        return served;
    }
    match readying.await {
        Ok(ready) => ready,
        Err(err) => Err(anyhow::anyhow!("{name}: getting ready panicked: {err}")),
    }
}

/// What `become_ready` does and what it reports to.
struct Readying {
    name: &'static str,
    prepare: Option<Preparation>,
    beside: Vec<Beside>,
    database: Option<PgPool>,
    gate: Gate,
    reporter: HealthReporter,
}

/// Prepares the service, then opens it: its calls answered, readiness `SERVING` (kept in step
/// with the database after), its tasks started. Returns once the tasks have ended (after
/// `shutdown`). A failed preparation triggers `stop`.
async fn become_ready(
    readying: Readying,
    shutdown: Shutdown,
    stop: Shutdown,
) -> anyhow::Result<()> {
    let Readying {
        name,
        prepare,
        beside,
        database,
        gate,
        reporter,
    } = readying;
    if let Some(prepare) = prepare {
        tracing::info!(service = name, "getting ready");
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            prepared = prepare.run() => if let Err(err) = prepared {
                stop.trigger();
                return Err(err.context(format!("{name} cannot start")));
            },
        }
    }
    gate.open();
    set_status(&reporter, name, ServingStatus::Serving).await;
    tracing::info!(service = name, "ready");
    let watcher = database.map(|pool| {
        tokio::spawn(watch_database(
            pool,
            reporter.clone(),
            name,
            shutdown.clone(),
        ))
    });
    let tasks: Vec<JoinHandle<()>> = beside
        .into_iter()
        .map(|task| tokio::spawn(task(shutdown.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    Ok(())
}

/// Answers the service's own calls with `Unavailable` until it is opened; health (and anything
/// else) passes.
#[derive(Debug, Clone)]
struct Gate {
    /// `/<service name>/`, the prefix of the service's calls.
    prefix: Arc<str>,
    name: &'static str,
    open: Arc<AtomicBool>,
}

impl Gate {
    fn new(name: &'static str, open: bool) -> Self {
        Self {
            prefix: format!("/{name}/").into(),
            name,
            open: Arc::new(AtomicBool::new(open)),
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
    }
}

impl<S> tower::Layer<S> for Gate {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            gate: self.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
struct Gated<S> {
    gate: Gate,
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Gated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !self.gate.open.load(Ordering::Acquire)
            && request.uri().path().starts_with(&*self.gate.prefix)
        {
            let status = tonic::Status::unavailable(format!(
                "the {} service is starting: its database is not ready yet",
                self.gate.name
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(request))
    }
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

#[cfg(test)]
mod tests {
    use souk_protos::v1::{
        ChargeRequest, GetPaymentRequest, Payment, RefundRequest,
        payment_service_client::PaymentServiceClient,
        payment_service_server::{PaymentService, PaymentServiceServer, SERVICE_NAME},
    };
    use tonic::{Code, Request, Response, Status, transport::Channel};
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus as Probe,
        health_client::HealthClient,
    };

    use super::*;

    /// A service that answers every call, to see whether calls reach it.
    struct Answers;

    #[tonic::async_trait]
    impl PaymentService for Answers {
        async fn charge(&self, _: Request<ChargeRequest>) -> Result<Response<Payment>, Status> {
            Ok(Response::new(Payment::default()))
        }
        async fn refund(&self, _: Request<RefundRequest>) -> Result<Response<Payment>, Status> {
            Ok(Response::new(Payment::default()))
        }
        async fn get_payment(
            &self,
            _: Request<GetPaymentRequest>,
        ) -> Result<Response<Payment>, Status> {
            Ok(Response::new(Payment::default()))
        }
    }

    async fn start(prepare: Preparation) -> (Channel, Shutdown, JoinHandle<anyhow::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            listener.local_addr().expect("addr")
        ))
        .expect("endpoint")
        .connect_lazy();
        let service = GrpcService {
            prepare: Some(prepare),
            ..GrpcService::new(
                SERVICE_NAME,
                Routes::new(PaymentServiceServer::new(Answers)),
            )
        };
        let shutdown = Shutdown::new();
        let served = tokio::spawn(serve(service, listener, shutdown.clone()));
        (channel, shutdown, served)
    }

    /// Liveness, then readiness as `""` and as the service's name.
    async fn probes(channel: &Channel) -> Vec<Probe> {
        let mut statuses = Vec::new();
        for name in [souk_contract::LIVENESS_HEALTH_SERVICE, "", SERVICE_NAME] {
            let reply = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: name.to_owned(),
                })
                .await
                .expect("health answers");
            statuses.push(reply.into_inner().status());
        }
        statuses
    }

    #[tokio::test]
    async fn a_service_being_prepared_is_alive_not_ready_and_unavailable_until_it_is_ready() {
        let (prepared, preparing) = tokio::sync::oneshot::channel::<()>();
        let (channel, shutdown, served) = start(Preparation::new(async move {
            preparing.await.map_err(anyhow::Error::from)
        }))
        .await;
        use Probe::{NotServing, Serving};
        assert_eq!(probes(&channel).await, [Serving, NotServing, NotServing]);
        let call = PaymentServiceClient::new(channel.clone())
            .get_payment(GetPaymentRequest::default())
            .await
            .expect_err("not ready");
        assert_eq!(call.code(), Code::Unavailable, "{call:?}");

        prepared.send(()).expect("preparing");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while probes(&channel).await != [Serving, Serving, Serving] {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        PaymentServiceClient::new(channel)
            .get_payment(GetPaymentRequest::default())
            .await
            .expect("answered once ready");
        shutdown.trigger();
        served.await.expect("joined").expect("served");
    }

    #[tokio::test]
    async fn a_preparation_that_fails_for_good_stops_the_service_with_its_error() {
        let (_channel, _shutdown, served) = start(Preparation::new(async {
            Err(anyhow::anyhow!("migration 3 was changed after it ran"))
        }))
        .await;
        let err = tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("stopped by itself")
            .expect("joined")
            .expect_err("a failed preparation");
        assert!(
            format!("{err:#}").contains("migration 3 was changed after it ran"),
            "{err:#}"
        );
    }
}
