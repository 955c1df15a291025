//! A whole shop in one process: every service on its own loopback gRPC listener and the
//! gateway in front of them, sharing one shutdown. `souk up` runs this; so do the end-to-end
//! tests, each with a shop of its own.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use souk_shared::{
    Shutdown,
    config::{Secret, ShopName},
    db::DatabaseLocation,
    jwt::{KeyPair, Signer, Verifier},
};
use tokio::{net::TcpListener, task::JoinSet};

/// One service's server, running until its shutdown.
type ServiceTask = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// Everything a shop needs to start.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    pub shop_name: ShopName,
    /// The PostgreSQL server on which `<shop>_<service>` databases are created.
    pub database_url: Secret<String>,
    /// Per service, a database URL of its own that takes precedence over `database_url`.
    pub service_databases: BTreeMap<&'static str, Secret<String>>,
    pub keys: KeyPair,
    pub token_ttl: Duration,
    pub admin: Option<souk_user::AdminAccount>,
    /// Per service, the gRPC address to bind; free loopback ports for the rest.
    pub grpc_addrs: BTreeMap<&'static str, SocketAddr>,
}

/// The services of a shop, in start order (the cart service calls the product service).
pub const SERVICES: &[&str] = &["user", "product", "cart"];

/// A running shop.
#[derive(Debug)]
pub struct RunningShop {
    pub http_addr: SocketAddr,
    pub grpc_addrs: BTreeMap<&'static str, SocketAddr>,
    config: ShopConfig,
    keys: Keys,
    shutdown: Shutdown,
    /// One shutdown per service, triggered by the shop's, so that tests can stop one alone.
    service_shutdowns: BTreeMap<&'static str, Shutdown>,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

#[derive(Debug, Clone)]
struct Keys {
    signer: Signer,
    verifier: Verifier,
}

impl ShopConfig {
    fn database(&self, service: &'static str) -> DatabaseLocation {
        DatabaseLocation::resolve(
            self.service_databases.get(service).cloned(),
            &self.database_url,
            &self.shop_name,
            service,
        )
    }
}

async fn bind(service: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("{service} service: cannot listen on {addr}: {err}"))
}

/// Starts every service (databases created and migrated first), then the gateway on `http`.
/// Returns once all of them listen; they run until `shutdown`.
pub async fn up(
    config: ShopConfig,
    http: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<RunningShop> {
    let keys = Keys {
        verifier: Verifier::from_pem(&config.keys.public_pem)?,
        signer: Signer::from_pem(config.keys.private_pem.expose(), config.token_ttl)?,
    };
    let http_addr = http.local_addr()?;
    let mut shop = RunningShop {
        http_addr,
        grpc_addrs: BTreeMap::new(),
        keys,
        shutdown,
        service_shutdowns: BTreeMap::new(),
        tasks: JoinSet::new(),
        config,
    };
    for service in SERVICES {
        let addr = shop
            .config
            .grpc_addrs
            .get(service)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = shop.start_service(service, addr).await?;
        tracing::info!(shop = %shop.config.shop_name, %addr, "{service} service listening (gRPC)");
    }

    let gateway = souk_gateway::Settings {
        upstreams: souk_gateway::Upstreams {
            user: format!("http://{}", shop.grpc_addrs["user"]),
            product: format!("http://{}", shop.grpc_addrs["product"]),
            cart: format!("http://{}", shop.grpc_addrs["cart"]),
        },
        verifier: shop.keys.verifier.clone(),
    };
    shop.tasks.spawn(named(
        "gateway".into(),
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
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Starts one service on `addr` (connecting to its database first) and returns where it
    /// listens.
    async fn start_service(
        &mut self,
        service: &'static str,
        addr: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let stop = Shutdown::new();
        tokio::spawn({
            let (shop, stop) = (self.shutdown.clone(), stop.clone());
            async move {
                shop.wait().await;
                stop.trigger();
            }
        });
        let task: ServiceTask = match service {
            "user" => {
                let user = souk_user::UserService::start(souk_user::Settings {
                    database: self.config.database("user"),
                    signer: self.keys.signer.clone(),
                    verifier: self.keys.verifier.clone(),
                    admin: self.config.admin.clone(),
                })
                .await?;
                let listener = bind(service, addr).await?;
                let addr = listener.local_addr()?;
                self.grpc_addrs.insert(service, addr);
                Box::pin(user.serve(listener, stop.clone()))
            }
            "product" => {
                let product = souk_product::ProductService::start(souk_product::Settings {
                    database: self.config.database("product"),
                    verifier: self.keys.verifier.clone(),
                })
                .await?;
                let listener = bind(service, addr).await?;
                self.grpc_addrs.insert(service, listener.local_addr()?);
                Box::pin(product.serve(listener, stop.clone()))
            }
            "cart" => {
                let product = self.grpc_addrs.get("product").ok_or_else(|| {
                    anyhow::anyhow!("the cart service needs the product service started first")
                })?;
                let cart = souk_cart::CartService::start(souk_cart::Settings {
                    database: self.config.database("cart"),
                    verifier: self.keys.verifier.clone(),
                    product_url: format!("http://{product}"),
                })
                .await?;
                let listener = bind(service, addr).await?;
                self.grpc_addrs.insert(service, listener.local_addr()?);
                Box::pin(cart.serve(listener, stop.clone()))
            }
            other => anyhow::bail!("unknown service {other:?}"),
        };
        self.tasks.spawn(named(format!("{service} service"), task));
        self.service_shutdowns.insert(service, stop);
        Ok(self.grpc_addrs[service])
    }

    /// Stops one service (the rest of the shop keeps running), as when its pod goes away.
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
