//! A whole shop in one process: every service on its own loopback gRPC listener, the relayers
//! of the product and order outboxes, and the gateway in front, sharing one shutdown and one
//! metrics registry (`RunningShop::registry`, which `souk up` serves on its operations port). `souk up` runs this; so do the
//! end-to-end tests, each with a shop of its own.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
pub use souk_contract::Service;
use souk_shared::{
    Shutdown,
    bus::Bus,
    config::{Secret, ShopName},
    consumer::{ConsumerMetrics, Participation},
    db::DatabaseLocation,
    grpc::GrpcService,
    jwt::{KeyPair, Signer, Verifier},
};
use tokio::{net::TcpListener, task::JoinSet};

/// Everything a shop needs to start.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    pub shop_name: ShopName,
    /// The PostgreSQL server on which `<shop>_<service>` databases are created.
    pub database_url: Secret<String>,
    /// Per service, a database URL of its own that takes precedence over `database_url`.
    pub service_databases: BTreeMap<&'static str, Secret<String>>,
    /// NATS with JetStream; the shop's stream and consumers are made when missing.
    pub nats_url: String,
    /// The user the whole shop connects to NATS as, when NATS wants one.
    pub nats_credentials: Option<souk_shared::bus::NatsCredentials>,
    pub keys: KeyPair,
    pub token_ttl: Duration,
    /// How long a refresh token may be exchanged.
    pub refresh_ttl: Duration,
    pub admin: Option<souk_user::AdminAccount>,
    /// Per service, the gRPC address to bind; free loopback ports for the rest.
    pub grpc_addrs: BTreeMap<&'static str, SocketAddr>,
    /// How long a checkout saga may go without finishing before it is cancelled.
    pub saga_timeout: Duration,
    /// Charges above this many cents are declined.
    pub payment_decline_above_cents: i64,
    /// Attempts at a failing event before it is dead-lettered.
    pub max_deliver: i64,
    /// Services that run without consuming events, as if they never answered (for tests of
    /// the saga's timeout).
    pub silent_participants: Vec<&'static str>,
    /// How many password hashes run at once, and how many may wait (the rest get a 503).
    pub hash_limits: souk_user::HashLimits,
    /// The gateway's timeouts, connection cap, throttles and CORS.
    pub gateway_limits: souk_gateway::Limits,
}

impl ShopConfig {
    /// A shop with the defaults of `souk up` for everything but what is given.
    pub fn new(
        shop_name: ShopName,
        database_url: Secret<String>,
        nats_url: String,
        keys: KeyPair,
    ) -> Self {
        Self {
            shop_name,
            database_url,
            service_databases: BTreeMap::new(),
            nats_url,
            nats_credentials: None,
            keys,
            token_ttl: Duration::from_secs(souk_contract::defaults::TOKEN_TTL_SECONDS),
            refresh_ttl: souk_user::DEFAULT_REFRESH_TTL,
            admin: None,
            grpc_addrs: BTreeMap::new(),
            saga_timeout: souk_order::DEFAULT_SAGA_TIMEOUT,
            payment_decline_above_cents: souk_contract::defaults::PAYMENT_DECLINE_ABOVE_CENTS,
            max_deliver: souk_shared::consumer::DEFAULT_MAX_DELIVER,
            silent_participants: Vec::new(),
            hash_limits: souk_user::HashLimits::for_this_machine(),
            gateway_limits: souk_gateway::Limits::default(),
        }
    }

    fn database(&self, service: Service) -> DatabaseLocation {
        DatabaseLocation::resolve(
            self.service_databases.get(service.name()).cloned(),
            &self.database_url,
            &self.shop_name,
            service.name(),
        )
    }

    fn consumes_events(&self, service: &str) -> bool {
        !self.silent_participants.contains(&service)
    }
}

/// The gRPC services of a shop, in start order: each one's peers start before it.
pub const SERVICES: [Service; 5] = Service::IN_START_ORDER;

/// A running shop.
#[derive(Debug)]
pub struct RunningShop {
    pub http_addr: SocketAddr,
    pub grpc_addrs: BTreeMap<&'static str, SocketAddr>,
    config: ShopConfig,
    keys: Keys,
    bus: Bus,
    metrics: Metrics,
    registry: Arc<Registry>,
    shutdown: Shutdown,
    /// One shutdown per service (with its relayer), triggered by the shop's, so that tests can
    /// stop one alone.
    service_shutdowns: BTreeMap<&'static str, Shutdown>,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

#[derive(Debug, Clone)]
struct Keys {
    signer: Signer,
    verifier: Verifier,
}

/// Every figure of the shop, registered once at start.
#[derive(Debug, Clone, Default)]
struct Metrics {
    gateway: Option<souk_gateway::Metrics>,
    consumers: ConsumerMetrics,
    saga: souk_order::SagaMetrics,
    relayers: BTreeMap<&'static str, souk_relayer::Metrics>,
}

impl Metrics {
    fn registry(&mut self) -> Registry {
        let mut registry = Registry::with_prefix("souk");
        self.gateway = Some(souk_gateway::Metrics::register(&mut registry));
        self.consumers.register(&mut registry);
        self.saga.register(&mut registry);
        for outbox in SERVICES.into_iter().filter(|s| s.has_relayer()) {
            let metrics = self.relayers.entry(outbox.name()).or_default();
            let labelled =
                registry.sub_registry_with_label(("outbox".into(), outbox.name().into()));
            metrics.register(labelled);
        }
        registry
    }
}

/// What one service is made of, wherever it runs: with every other in `souk up`, or alone in
/// `souk serve <service>`. Each service reads the parts it needs.
#[derive(Debug, Clone)]
pub struct Parts {
    pub shop: ShopName,
    pub database: DatabaseLocation,
    pub verifier: Verifier,
    /// Signs tokens: the user service's for customers, the order service's its own.
    pub signer: Option<Signer>,
    /// NATS, for the services that use it; without it the product and cart services take no
    /// part in the saga (a silent participant, in tests of its timeout).
    pub bus: Option<Bus>,
    /// The URL of each service it calls.
    pub peers: BTreeMap<Service, String>,
    pub admin: Option<souk_user::AdminAccount>,
    pub hash_limits: souk_user::HashLimits,
    pub refresh_ttl: Duration,
    pub payment_decline_above_cents: i64,
    pub saga_timeout: Duration,
    pub max_deliver: i64,
    pub consumers: ConsumerMetrics,
    pub saga: souk_order::SagaMetrics,
}

/// A built service.
#[derive(Debug)]
pub struct Built {
    pub service: GrpcService,
    /// The database of its outbox, for its relayer.
    pub outbox: Option<sqlx::PgPool>,
}

/// When a built service's database is made ready (created, migrated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Before `build` returns.
    First,
    /// By the server, which answers health (not ready) meanwhile: what a pod wants.
    WhileServing,
}

/// Builds one gRPC service from its parts: the one place each service's settings are made.
pub async fn build(service: Service, parts: Parts, ready: Ready) -> anyhow::Result<Built> {
    let peer =
        |peer: Service| {
            parts.peers.get(&peer).cloned().ok_or_else(|| {
                anyhow::anyhow!("the {service} service needs the {peer} service's URL")
            })
        };
    let signer = || {
        parts
            .signer
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the {service} service needs the private key"))
    };
    let events = parts.bus.clone().map(|bus| Participation {
        bus,
        max_deliver: parts.max_deliver,
        metrics: parts.consumers.clone(),
    });
    let built = match service {
        Service::User => {
            souk_user::service(souk_user::Settings {
                database: parts.database.clone(),
                signer: signer()?,
                verifier: parts.verifier.clone(),
                admin: parts.admin.clone(),
                hash_limits: parts.hash_limits,
                refresh_ttl: parts.refresh_ttl,
            })
            .await?
        }
        Service::Product => souk_product::service(souk_product::Settings {
            database: parts.database.clone(),
            shop: parts.shop.clone(),
            verifier: parts.verifier.clone(),
            events,
        })?,
        Service::Cart => souk_cart::service(souk_cart::Settings {
            database: parts.database.clone(),
            verifier: parts.verifier.clone(),
            product_url: peer(Service::Product)?,
            events,
        })?,
        Service::Payment => souk_payment::service(souk_payment::Settings {
            database: parts.database.clone(),
            verifier: parts.verifier.clone(),
            decline_above_cents: parts.payment_decline_above_cents,
        })?,
        Service::Order => souk_order::service(souk_order::Settings {
            database: parts.database.clone(),
            events: events.ok_or_else(|| anyhow::anyhow!("the order service needs NATS"))?,
            verifier: parts.verifier.clone(),
            signer: signer()?,
            peers: souk_order::Peers {
                cart: peer(Service::Cart)?,
                payment: peer(Service::Payment)?,
            },
            saga_timeout: parts.saga_timeout,
            saga_metrics: parts.saga.clone(),
        })?,
        Service::Gateway => anyhow::bail!("the gateway is not a gRPC service"),
    };
    let built = match ready {
        Ready::First => built.ready().await?,
        Ready::WhileServing => built,
    };
    let outbox = if service.has_relayer() {
        built.database.clone()
    } else {
        None
    };
    Ok(Built {
        service: built,
        outbox,
    })
}

async fn bind(service: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("{service} service: cannot listen on {addr}: {err}"))
}

/// Starts every service (databases created and migrated first), then the gateway on `http`.
/// Returns once all of them listen; they run until `shutdown`. NATS need not be up: events
/// wait in the outboxes until it is.
pub async fn up(
    config: ShopConfig,
    http: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<RunningShop> {
    let keys = Keys {
        verifier: Verifier::from_pem(&config.keys.public_pem)?,
        signer: Signer::from_pem(config.keys.private_pem.expose(), config.token_ttl)?,
    };
    let bus = Bus::connect_as(
        &config.nats_url,
        config.nats_credentials.as_ref(),
        config.shop_name.clone(),
        "shop",
    )
    .await?;
    let mut metrics = Metrics::default();
    let registry = Arc::new(metrics.registry());
    let http_addr = http.local_addr()?;
    let mut shop = RunningShop {
        http_addr,
        grpc_addrs: BTreeMap::new(),
        keys,
        bus,
        metrics,
        registry,
        shutdown,
        service_shutdowns: BTreeMap::new(),
        tasks: JoinSet::new(),
        config,
    };
    for service in SERVICES {
        let addr = shop
            .config
            .grpc_addrs
            .get(service.name())
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = shop.start_service(service, addr).await?;
        tracing::info!(shop = %shop.config.shop_name, %addr, "{service} service listening (gRPC)");
    }

    let gateway = shop.gateway_settings(
        shop.metrics
            .gateway
            .clone()
            .ok_or_else(|| anyhow::anyhow!("gateway metrics not registered"))?,
    );
    shop.tasks.spawn(named(
        Service::Gateway.name().into(),
        souk_gateway::serve(gateway, http, shop.shutdown.clone()),
    ));
    tracing::info!(shop = %shop.config.shop_name, "gateway listening on http://{http_addr}");
    Ok(shop)
}

async fn named(
    name: String,
    task: impl std::future::Future<Output = anyhow::Result<()>>,
) -> (String, anyhow::Result<()>) {
    (name, task.await)
}

impl RunningShop {
    fn gateway_settings(&self, metrics: souk_gateway::Metrics) -> souk_gateway::Settings {
        let url = |service: Service| format!("http://{}", self.grpc_addrs[service.name()]);
        souk_gateway::Settings {
            upstreams: souk_gateway::Upstreams {
                user: url(Service::User),
                product: url(Service::Product),
                cart: url(Service::Cart),
                order: url(Service::Order),
            },
            verifier: self.keys.verifier.clone(),
            metrics,
            limits: self.config.gateway_limits.clone(),
            bus: Some(self.bus.clone()),
        }
    }

    /// Starts another replica of the gateway on `http`, with a cache and figures of its own,
    /// as a second pod would be; it stops with the shop.
    pub fn start_gateway_replica(&mut self, http: TcpListener) {
        let mut registry = Registry::with_prefix("souk");
        let metrics = souk_gateway::Metrics::register(&mut registry);
        let settings = self.gateway_settings(metrics);
        self.tasks.spawn(named(
            "gateway replica".into(),
            souk_gateway::serve(settings, http, self.shutdown.clone()),
        ));
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Every figure of the shop, for the operations port (never the API port).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The shop's connection to NATS (its stream is `events::stream_name(shop)`).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    fn url(&self, peer: Service) -> anyhow::Result<String> {
        let addr = self
            .grpc_addrs
            .get(peer.name())
            .ok_or_else(|| anyhow::anyhow!("the {peer} service must start first"))?;
        Ok(format!("http://{addr}"))
    }

    /// Binds `addr`, starts one service there (its database connected and migrated) and the
    /// relayer of its outbox if it has one; returns where it listens.
    async fn start_service(
        &mut self,
        service: Service,
        addr: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        // Bound first: a restart waits here, before starting anything, for the old server to
        // let go of its port.
        let listener = bind(service.name(), addr).await?;
        let addr = listener.local_addr()?;
        let stop = Shutdown::new();
        tokio::spawn({
            let (shop, stop) = (self.shutdown.clone(), stop.clone());
            async move {
                shop.wait().await;
                stop.trigger();
            }
        });
        let config = &self.config;
        let parts = Parts {
            shop: config.shop_name.clone(),
            database: config.database(service),
            verifier: self.keys.verifier.clone(),
            signer: Some(self.keys.signer.clone()),
            bus: (service == Service::Order || config.consumes_events(service.name()))
                .then(|| self.bus.clone()),
            peers: service
                .calls()
                .iter()
                .map(|&peer| Ok((peer, self.url(peer)?)))
                .collect::<anyhow::Result<_>>()?,
            admin: config.admin.clone(),
            hash_limits: config.hash_limits,
            refresh_ttl: config.refresh_ttl,
            payment_decline_above_cents: config.payment_decline_above_cents,
            saga_timeout: config.saga_timeout,
            max_deliver: config.max_deliver,
            consumers: self.metrics.consumers.clone(),
            saga: self.metrics.saga.clone(),
        };
        let Built {
            service: built,
            outbox,
        } = build(service, parts, Ready::First).await?;
        let task = built.serve(listener, stop.clone());
        let service = service.name();
        self.grpc_addrs.insert(service, addr);
        self.tasks.spawn(named(format!("{service} service"), task));
        if let Some(pool) = outbox {
            let metrics = self
                .metrics
                .relayers
                .get(service)
                .cloned()
                .unwrap_or_default();
            let relayer = souk_relayer::Relayer::new(
                service,
                pool,
                self.bus.clone(),
                souk_relayer::Settings::default(),
                metrics,
            );
            let stop = stop.clone();
            self.tasks
                .spawn(named(format!("{service} relayer"), async move {
                    relayer.run(stop).await;
                    Ok(())
                }));
        }
        self.service_shutdowns.insert(service, stop);
        Ok(addr)
    }

    /// Stops one service and its relayer (the rest of the shop keeps running), as when its pod
    /// goes away.
    pub fn stop_service(&mut self, service: &str) {
        if let Some(stop) = self.service_shutdowns.remove(service) {
            stop.trigger();
        }
    }

    /// Starts a stopped service again on the address it had, as when its pod comes back.
    pub async fn restart_service(&mut self, service: &'static str) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.service_shutdowns.contains_key(service),
            "{service} is running"
        );
        let addr = *self
            .grpc_addrs
            .get(service)
            .ok_or_else(|| anyhow::anyhow!("unknown service {service:?}"))?;
        let service = Service::named(service)
            .ok_or_else(|| anyhow::anyhow!("unknown service {service:?}"))?;
        // The old listener is gone once its server drained; until then the port is busy.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.start_service(service, addr).await {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %err, "{service} not restarted yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs until shutdown, or until one part fails (which stops the others).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (name, result) =
                joined.map_err(|err| anyhow::anyhow!("a shop task panicked: {err}"))?;
            if let Err(err) = result {
                tracing::error!(error = ?err, "{name} stopped");
                self.shutdown.trigger();
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every part and waits for them to drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }
}
