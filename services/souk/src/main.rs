//! `souk`: `souk up` runs a whole shop on this machine, `souk serve <service>` runs one service
//! alone and `souk relay <service>` the relayer of its outbox (what containers run), `souk keygen`
//! writes a development JWT key pair. This file only parses configuration; the libraries do the
//! work.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use prometheus_client::registry::Registry;
use souk_contract::env as settings;
use souk_shared::{
    Shutdown,
    bus::Bus,
    config::{
        CommonArgs, DatabaseArgs, JwtArgs, NatsArgs, Secret, ShopName, check_database_url,
        parse_duration,
    },
    consumer::ConsumerMetrics,
    db::DatabaseLocation,
    jwt::{KeyPair, Signer, Verifier, read_pem},
    outbox, telemetry,
};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "souk",
    version,
    about = "Souk: an e-commerce platform of Rust microservices"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole shop in this process: every service and the gateway.
    Up(UpArgs),
    /// Run one service alone.
    #[command(name = souk_contract::command::SERVE)]
    Serve(ServeArgs),
    /// Run the relayer of one service's outbox (product or order) alone.
    #[command(name = souk_contract::command::RELAY)]
    Relay(RelayArgs),
    /// Write a development ES256 key pair (private.pem, public.pem) into a directory.
    Keygen {
        /// Directory to write the keys into (created when missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct UpArgs {
    /// Where the gateway listens.
    #[arg(long, env = settings::HTTP_ADDR, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// The user service's gRPC address (a free loopback port when not set).
    #[arg(long, env = "SOUK_USER_GRPC_ADDR")]
    user_grpc_addr: Option<SocketAddr>,
    /// The product service's gRPC address (a free loopback port when not set).
    #[arg(long, env = "SOUK_PRODUCT_GRPC_ADDR")]
    product_grpc_addr: Option<SocketAddr>,
    /// The cart service's gRPC address (a free loopback port when not set).
    #[arg(long, env = "SOUK_CART_GRPC_ADDR")]
    cart_grpc_addr: Option<SocketAddr>,
    /// The payment service's gRPC address (a free loopback port when not set).
    #[arg(long, env = "SOUK_PAYMENT_GRPC_ADDR")]
    payment_grpc_addr: Option<SocketAddr>,
    /// The order service's gRPC address (a free loopback port when not set).
    #[arg(long, env = "SOUK_ORDER_GRPC_ADDR")]
    order_grpc_addr: Option<SocketAddr>,
    #[command(flatten)]
    checkout: CheckoutArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    service_databases: ServiceDatabaseArgs,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    admin: AdminArgs,
    /// Where `/metrics` (every figure of the shop) and `/healthz` are served: the operations
    /// port, never the API's.
    #[arg(long, env = "SOUK_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    gateway: GatewayArgs,
}

/// The gateway's abuse limits (README, "Limits"); defaults are `souk_gateway::Limits::default`.
#[derive(Debug, Clone, clap::Args)]
struct GatewayArgs {
    /// A request's head must arrive within this; idle keep-alive connections close after it.
    #[arg(long, env = "SOUK_HTTP_HEADER_TIMEOUT", value_parser = parse_duration)]
    http_header_timeout: Option<std::time::Duration>,
    /// A request's body must arrive whole within this, or 408.
    #[arg(long, env = "SOUK_HTTP_BODY_TIMEOUT", value_parser = parse_duration)]
    http_body_timeout: Option<std::time::Duration>,
    /// Connections served at once.
    #[arg(long, env = "SOUK_HTTP_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    http_max_connections: Option<u32>,
    /// Bytes of request line and headers; over it, 431.
    #[arg(long, env = "SOUK_HTTP_MAX_HEADER_BYTES", value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    http_max_header_bytes: Option<u32>,
    /// Failed logins per account per minute (`N`, or `N/BURST`).
    #[arg(long, env = "SOUK_LOGIN_RATE_PER_ACCOUNT", value_parser = souk_gateway::parse_rate)]
    login_rate_per_account: Option<souk_gateway::Rate>,
    /// Logins and registrations per client address per minute (`N`, or `N/BURST`).
    #[arg(long, env = "SOUK_AUTH_RATE_PER_ADDRESS", value_parser = souk_gateway::parse_rate)]
    auth_rate_per_address: Option<souk_gateway::Rate>,
    /// Origins allowed to call the API from a browser, comma-separated; none: CORS off.
    #[arg(long, env = "SOUK_CORS_ALLOWED_ORIGINS", default_value = "", value_parser = souk_gateway::parse_origins)]
    cors_allowed_origins: CorsOrigins,
}

type CorsOrigins = Vec<http::HeaderValue>;

impl GatewayArgs {
    fn limits(&self) -> souk_gateway::Limits {
        let default = souk_gateway::Limits::default();
        souk_gateway::Limits {
            header_timeout: self.http_header_timeout.unwrap_or(default.header_timeout),
            body_timeout: self.http_body_timeout.unwrap_or(default.body_timeout),
            max_connections: self
                .http_max_connections
                .map_or(default.max_connections, |n| n as usize),
            max_header_bytes: self
                .http_max_header_bytes
                .map_or(default.max_header_bytes, |n| n as usize),
            login_per_account: self
                .login_rate_per_account
                .unwrap_or(default.login_per_account),
            auth_per_address: self
                .auth_rate_per_address
                .unwrap_or(default.auth_per_address),
            cors_allowed_origins: self.cors_allowed_origins.clone(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
struct ServiceDatabaseArgs {
    /// The user service's own database (instead of `<shop>_user` on SOUK_DATABASE_URL).
    #[arg(long, env = settings::USER_DATABASE_URL, hide_env_values = true)]
    user_database_url: Option<Secret<String>>,
    /// The product service's own database (instead of `<shop>_product` on SOUK_DATABASE_URL).
    #[arg(long, env = settings::PRODUCT_DATABASE_URL, hide_env_values = true)]
    product_database_url: Option<Secret<String>>,
    /// The cart service's own database (instead of `<shop>_cart` on SOUK_DATABASE_URL).
    #[arg(long, env = settings::CART_DATABASE_URL, hide_env_values = true)]
    cart_database_url: Option<Secret<String>>,
    /// The payment service's own database (instead of `<shop>_payment` on SOUK_DATABASE_URL).
    #[arg(long, env = settings::PAYMENT_DATABASE_URL, hide_env_values = true)]
    payment_database_url: Option<Secret<String>>,
    /// The order service's own database (instead of `<shop>_order` on SOUK_DATABASE_URL).
    #[arg(long, env = settings::ORDER_DATABASE_URL, hide_env_values = true)]
    order_database_url: Option<Secret<String>>,
}

/// How the checkout saga behaves.
#[derive(Debug, Clone, clap::Args)]
struct CheckoutArgs {
    /// How long a checkout saga may go without finishing before it is cancelled (e.g. 30s).
    #[arg(long, env = "SOUK_SAGA_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    saga_timeout: Duration,
    /// The payment simulator declines charges above this many cents.
    #[arg(long, env = settings::PAYMENT_DECLINE_ABOVE_CENTS, default_value = "1000000", value_parser = clap::value_parser!(i64).range(0..))]
    payment_decline_above_cents: i64,
}

impl ServiceDatabaseArgs {
    /// Checks every URL given, naming the setting of a malformed one.
    fn check(&self) -> anyhow::Result<()> {
        for (service, url) in self.own() {
            check_database_url(
                &format!("SOUK_{}_DATABASE_URL", service.to_uppercase()),
                &url,
            )?;
        }
        Ok(())
    }

    /// The services given a database URL of their own.
    fn own(&self) -> BTreeMap<&'static str, Secret<String>> {
        [
            ("user", &self.user_database_url),
            ("product", &self.product_database_url),
            ("cart", &self.cart_database_url),
            ("payment", &self.payment_database_url),
            ("order", &self.order_database_url),
        ]
        .into_iter()
        .filter_map(|(service, url)| Some((service, url.clone()?)))
        .collect()
    }

    /// Where one service's database is, for `souk serve`.
    fn location(
        &self,
        service: &'static str,
        database: &DatabaseArgs,
        shop: &ShopName,
    ) -> DatabaseLocation {
        DatabaseLocation::resolve(
            self.own().remove(service),
            &database.database_url,
            shop,
            service,
        )
    }
}

#[derive(Debug, Clone, clap::Args)]
struct AdminArgs {
    /// The admin account made sure of at start (with SOUK_ADMIN_PASSWORD).
    #[arg(long, env = settings::ADMIN_EMAIL, requires = "admin_password")]
    admin_email: Option<String>,
    #[arg(
        long,
        env = settings::ADMIN_PASSWORD,
        hide_env_values = true,
        requires = "admin_email"
    )]
    admin_password: Option<Secret<String>>,
}

impl AdminArgs {
    fn account(&self) -> Option<souk_user::AdminAccount> {
        Some(souk_user::AdminAccount {
            email: self.admin_email.clone()?,
            password: self.admin_password.clone()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Service {
    User,
    Product,
    Cart,
    Payment,
    Order,
    Gateway,
}

/// The services whose outbox a relayer drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Outbox {
    Product,
    Order,
}

impl Outbox {
    fn name(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Order => "order",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
struct RelayArgs {
    /// The service whose outbox to relay.
    service: Outbox,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = settings::METRICS_ADDR, default_value = "127.0.0.1:9091")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    service_databases: ServiceDatabaseArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// The service to run.
    service: Service,
    /// Where a gRPC service listens.
    #[arg(long, env = settings::GRPC_ADDR, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Where the gateway listens.
    #[arg(long, env = settings::HTTP_ADDR, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// The user service, for the gateway.
    #[arg(long, env = settings::USER_URL, default_value = "http://127.0.0.1:50051")]
    user_url: String,
    /// The product service, for the gateway and the cart service.
    #[arg(
        long,
        env = settings::PRODUCT_URL,
        default_value = "http://127.0.0.1:50051"
    )]
    product_url: String,
    /// The cart service, for the gateway and the order service.
    #[arg(long, env = settings::CART_URL, default_value = "http://127.0.0.1:50051")]
    cart_url: String,
    /// The payment service, for the order service.
    #[arg(
        long,
        env = settings::PAYMENT_URL,
        default_value = "http://127.0.0.1:50051"
    )]
    payment_url: String,
    /// The order service, for the gateway.
    #[arg(long, env = settings::ORDER_URL, default_value = "http://127.0.0.1:50051")]
    order_url: String,
    /// Where a gRPC service serves `/metrics` and `/healthz`.
    #[arg(long, env = settings::METRICS_ADDR, default_value = "127.0.0.1:9090")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    checkout: CheckoutArgs,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    service_databases: ServiceDatabaseArgs,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(err) = telemetry::init(&cli.common.log, cli.common.log_format) {
        eprintln!("souk: {err:#}");
        return std::process::ExitCode::from(2);
    }
    // Fault injection (tests/chaos): inert unless the variable is set.
    if let Ok(value) = std::env::var(souk_shared::fault::ENV) {
        match souk_shared::fault::parse(&value) {
            Ok((point, action)) => {
                tracing::warn!(point, ?action, "fault point armed");
                souk_shared::fault::arm(&point, action);
            }
            Err(err) => {
                eprintln!("souk: {err}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("souk: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "souk stopped");
            eprintln!("souk: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up(cli.common, args).await,
        Command::Serve(args) => serve(cli.common, args).await,
        Command::Relay(args) => relay(cli.common, args).await,
        Command::Keygen { dir } => keygen(&dir),
    }
}

/// The key pair from files, or a fresh one for development when neither file is given.
fn keys(jwt: &JwtArgs, allow_generated: bool) -> anyhow::Result<KeyPair> {
    match (&jwt.jwt_private_key_file, &jwt.jwt_public_key_file) {
        (Some(private), Some(public)) => Ok(KeyPair {
            private_pem: Secret::new(read_pem("SOUK_JWT_PRIVATE_KEY_FILE", private)?),
            public_pem: read_pem("SOUK_JWT_PUBLIC_KEY_FILE", public)?,
        }),
        (None, None) if allow_generated => {
            tracing::warn!(
                "no JWT key files given: using a development key pair made for this run"
            );
            KeyPair::generate()
        }
        (None, _) => {
            anyhow::bail!("SOUK_JWT_PRIVATE_KEY_FILE: required (with SOUK_JWT_PUBLIC_KEY_FILE)")
        }
        (_, None) => {
            anyhow::bail!("SOUK_JWT_PUBLIC_KEY_FILE: required (with SOUK_JWT_PRIVATE_KEY_FILE)")
        }
    }
}

/// The verifier of access tokens, from the public key file that `who` cannot run without.
fn verifier(jwt: &JwtArgs, who: &str) -> anyhow::Result<Verifier> {
    let public = jwt
        .jwt_public_key_file
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("SOUK_JWT_PUBLIC_KEY_FILE: required by {who}"))?;
    Verifier::from_pem(&read_pem("SOUK_JWT_PUBLIC_KEY_FILE", public)?)
}

async fn bind(setting: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("{setting}: cannot listen on {addr}: {err}"))
}

async fn up(common: CommonArgs, args: UpArgs) -> anyhow::Result<()> {
    args.database.check()?;
    args.service_databases.check()?;
    let nats_credentials = args.nats.credentials()?;
    let mut config = souk::ShopConfig::new(
        common.shop_name,
        args.database.database_url,
        args.nats.nats_url,
        keys(&args.jwt, true)?,
    );
    config.service_databases = args.service_databases.own();
    config.token_ttl = args.jwt.token_ttl_seconds;
    config.refresh_ttl = args.jwt.refresh_token_ttl_seconds;
    config.admin = args.admin.account();
    config.grpc_addrs = [
        ("user", args.user_grpc_addr),
        ("product", args.product_grpc_addr),
        ("cart", args.cart_grpc_addr),
        ("payment", args.payment_grpc_addr),
        ("order", args.order_grpc_addr),
    ]
    .into_iter()
    .filter_map(|(service, addr)| Some((service, addr?)))
    .collect::<BTreeMap<_, _>>();
    config.saga_timeout = args.checkout.saga_timeout;
    config.payment_decline_above_cents = args.checkout.payment_decline_above_cents;
    config.max_deliver = args.nats.max_deliver;
    config.nats_credentials = nats_credentials;
    config.gateway_limits = args.gateway.limits();
    let http = bind("SOUK_HTTP_ADDR", args.http_addr).await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let shop = souk::up(config, http, shutdown.clone()).await?;
    serve_metrics(shop.registry(), args.metrics_addr, &shutdown).await?;
    shop.wait().await
}

/// A started service, to be served on its listener until shutdown.
type ServeFn = Box<
    dyn FnOnce(
            TcpListener,
            Shutdown,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
        + Send,
>;

/// Serves a registry's metrics on `addr` until `shutdown`, in the background.
async fn serve_metrics(
    registry: Arc<Registry>,
    addr: SocketAddr,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let listener = bind("SOUK_METRICS_ADDR", addr).await?;
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(souk_shared::metrics::serve(
        registry,
        listener,
        shutdown.clone(),
    ));
    Ok(())
}

/// Runs one service. Nothing here waits for its database (nor for NATS): the port answers at
/// once, liveness `SERVING` and readiness `NOT_SERVING` until the database is ready, so that a
/// pod whose database comes late is kept out of rotation, not restarted.
async fn serve(common: CommonArgs, args: ServeArgs) -> anyhow::Result<()> {
    args.database.check()?;
    args.service_databases.check()?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let shop = &common.shop_name;
    let location = |service| {
        args.service_databases
            .location(service, &args.database, shop)
    };
    let mut registry = Registry::with_prefix("souk");
    let consumers = ConsumerMetrics::default();
    consumers.register(&mut registry);
    let credentials = args.nats.credentials()?;
    let bus = || {
        Bus::connect_as(
            &args.nats.nats_url,
            credentials.as_ref(),
            shop.clone(),
            "service",
        )
    };
    let (name, serve): (&str, ServeFn) = match args.service {
        Service::User => {
            let keys = keys(&args.jwt, false)?;
            let service = souk_user::UserService::new(souk_user::Settings {
                database: location("user"),
                signer: Signer::from_pem(keys.private_pem.expose(), args.jwt.token_ttl_seconds)?,
                verifier: Verifier::from_pem(&keys.public_pem)?,
                admin: args.admin.account(),
                hash_limits: souk_user::HashLimits::for_this_machine(),
                refresh_ttl: args.jwt.refresh_token_ttl_seconds,
            })
            .await?;
            (
                "user",
                Box::new(move |listener, shutdown| Box::pin(service.serve(listener, shutdown))),
            )
        }
        Service::Product => {
            let service = souk_product::ProductService::new(souk_product::Settings {
                database: location("product"),
                shop: shop.clone(),
                verifier: verifier(&args.jwt, "the product service")?,
            })?
            .with_events(bus().await?, args.nats.max_deliver, consumers);
            // Its relayer is a sidecar: it hears of new events by NOTIFY.
            tokio::spawn(outbox::forward_hints(
                service.pool().clone(),
                shutdown.clone(),
            ));
            (
                "product",
                Box::new(move |listener, shutdown| Box::pin(service.serve(listener, shutdown))),
            )
        }
        Service::Cart => {
            let service = souk_cart::CartService::new(souk_cart::Settings {
                database: location("cart"),
                verifier: verifier(&args.jwt, "the cart service")?,
                product_url: args.product_url,
            })?
            .with_events(bus().await?, args.nats.max_deliver, consumers);
            (
                "cart",
                Box::new(move |listener, shutdown| Box::pin(service.serve(listener, shutdown))),
            )
        }
        Service::Payment => {
            let service = souk_payment::PaymentService::new(souk_payment::Settings {
                database: location("payment"),
                verifier: verifier(&args.jwt, "the payment service")?,
                decline_above_cents: args.checkout.payment_decline_above_cents,
            })?;
            (
                "payment",
                Box::new(move |listener, shutdown| Box::pin(service.serve(listener, shutdown))),
            )
        }
        Service::Order => {
            let keys = keys(&args.jwt, false)?;
            let saga_metrics = souk_order::SagaMetrics::default();
            saga_metrics.register(&mut registry);
            let service = souk_order::OrderService::new(souk_order::Settings {
                database: location("order"),
                bus: bus().await?,
                verifier: Verifier::from_pem(&keys.public_pem)?,
                signer: Signer::from_pem(keys.private_pem.expose(), args.jwt.token_ttl_seconds)?,
                peers: souk_order::Peers {
                    cart: args.cart_url,
                    product: args.product_url,
                    payment: args.payment_url,
                },
                saga_timeout: args.checkout.saga_timeout,
                max_deliver: args.nats.max_deliver,
                saga_metrics,
                consumer_metrics: consumers,
            })?;
            tokio::spawn(outbox::forward_hints(
                service.pool().clone(),
                shutdown.clone(),
            ));
            (
                "order",
                Box::new(move |listener, shutdown| Box::pin(service.serve(listener, shutdown))),
            )
        }
        Service::Gateway => {
            let metrics = souk_gateway::Metrics::register(&mut registry);
            let registry = Arc::new(registry);
            let settings = souk_gateway::Settings {
                upstreams: souk_gateway::Upstreams {
                    user: args.user_url,
                    product: args.product_url,
                    cart: args.cart_url,
                    order: args.order_url,
                },
                verifier: verifier(&args.jwt, "the gateway")?,
                metrics,
                limits: args.gateway.limits(),
                // Catalog reads are cached, each replica hearing the catalog's events.
                bus: Some(bus().await?),
            };
            let listener = bind("SOUK_HTTP_ADDR", args.http_addr).await?;
            // The figures are on the metrics port only, as for every other container.
            serve_metrics(registry, args.metrics_addr, &shutdown).await?;
            tracing::info!("gateway listening on http://{}", args.http_addr);
            return souk_gateway::serve(settings, listener, shutdown).await;
        }
    };
    let listener = bind("SOUK_GRPC_ADDR", args.grpc_addr).await?;
    serve_metrics(Arc::new(registry), args.metrics_addr, &shutdown).await?;
    tracing::info!(addr = %args.grpc_addr, "{name} service listening (gRPC)");
    serve(listener, shutdown).await
}

async fn relay(common: CommonArgs, args: RelayArgs) -> anyhow::Result<()> {
    args.database.check()?;
    args.service_databases.check()?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let service = args.service.name();
    let location = args
        .service_databases
        .location(service, &args.database, &common.shop_name);
    let pool = souk_shared::db::pool_without_migrations(&location)?;
    let bus = Bus::connect_as(
        &args.nats.nats_url,
        args.nats.credentials()?.as_ref(),
        common.shop_name.clone(),
        "relayer",
    )
    .await?;
    let metrics = souk_relayer::Metrics::default();
    let mut registry = Registry::with_prefix("souk");
    metrics.register(registry.sub_registry_with_label(("outbox".into(), service.into())));
    serve_metrics(Arc::new(registry), args.metrics_addr, &shutdown).await?;
    tracing::info!(outbox = service, "relayer started");
    souk_relayer::Relayer::new(
        service,
        pool,
        bus,
        souk_relayer::Settings {
            wake: souk_relayer::Wake::Notify,
            ..souk_relayer::Settings::default()
        },
        metrics,
    )
    .run(shutdown)
    .await;
    Ok(())
}

fn keygen(dir: &std::path::Path) -> anyhow::Result<()> {
    let keys = KeyPair::generate()?;
    std::fs::create_dir_all(dir)?;
    let private = dir.join("private.pem");
    std::fs::write(&private, keys.private_pem.expose())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::write(dir.join("public.pem"), &keys.public_pem)?;
    eprintln!(
        "wrote {} and {}",
        private.display(),
        dir.join("public.pem").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_settings_are_named() {
        let err =
            Cli::try_parse_from(["souk", "--shop-name", "Bad Name", "up"]).expect_err("invalid");
        assert!(err.to_string().contains("shop-name"), "{err}");
        let err =
            Cli::try_parse_from(["souk", "up", "--token-ttl-seconds", "0"]).expect_err("invalid");
        assert!(err.to_string().contains("token-ttl-seconds"), "{err}");
        let err = Cli::try_parse_from(["souk", "up", "--admin-email", "a@b.c"])
            .expect_err("half an admin");
        assert!(err.to_string().contains("admin-password"), "{err}");
    }

    #[test]
    fn malformed_urls_are_named_at_start_without_their_secrets() {
        let cli = Cli::try_parse_from([
            "souk",
            "serve",
            "order",
            "--order-database-url",
            "mysql://root:hunter2@db/x",
        ])
        .expect("parsed; checked at start");
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let err = args.service_databases.check().expect_err("invalid");
        assert!(
            err.to_string().starts_with("SOUK_ORDER_DATABASE_URL:")
                && !err.to_string().contains("hunter2"),
            "{err}"
        );
        let err =
            Cli::try_parse_from(["souk", "up", "--nats-url", "http://[::1"]).expect_err("invalid");
        assert!(err.to_string().contains("nats-url"), "{err}");
    }

    #[test]
    fn the_outboxes_can_be_relayed_alone() {
        for service in ["product", "order"] {
            let cli = Cli::try_parse_from(["souk", "relay", service]).expect(service);
            assert!(matches!(cli.command, Command::Relay(_)), "{service}");
        }
        assert!(
            Cli::try_parse_from(["souk", "relay", "cart"]).is_err(),
            "the cart has no outbox"
        );
    }

    #[test]
    fn every_service_can_be_served_alone() {
        for service in ["user", "product", "cart", "payment", "order", "gateway"] {
            let cli = Cli::try_parse_from(["souk", "serve", service]).expect(service);
            assert!(matches!(cli.command, Command::Serve(_)), "{service}");
        }
    }

    #[test]
    fn a_service_database_of_its_own_takes_precedence() {
        let cli = Cli::try_parse_from([
            "souk",
            "--shop-name",
            "t1",
            "serve",
            "cart",
            "--cart-database-url",
            "postgres://db.example/carts",
            "--product-url",
            "http://product:50051",
        ])
        .expect("valid");
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(args.product_url, "http://product:50051");
        let cart = args
            .service_databases
            .location("cart", &args.database, &cli.common.shop_name);
        assert!(
            matches!(cart, DatabaseLocation::Own(url) if url.expose() == "postgres://db.example/carts")
        );
        let product =
            args.service_databases
                .location("product", &args.database, &cli.common.shop_name);
        assert!(
            matches!(product, DatabaseLocation::OnServer { database, .. } if database == "t1_product")
        );
    }

    #[test]
    fn up_takes_each_service_address() {
        let cli = Cli::try_parse_from([
            "souk",
            "up",
            "--product-grpc-addr",
            "127.0.0.1:7002",
            "--cart-grpc-addr",
            "127.0.0.1:7003",
        ])
        .expect("valid");
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        assert_eq!(
            args.product_grpc_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 7002)))
        );
        assert_eq!(
            args.cart_grpc_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 7003)))
        );
        assert_eq!(args.user_grpc_addr, None);
    }

    #[test]
    fn services_alone_need_the_public_key() {
        let jwt = JwtArgs {
            jwt_private_key_file: None,
            jwt_public_key_file: None,
            token_ttl_seconds: Duration::from_secs(60),
            refresh_token_ttl_seconds: Duration::from_secs(600),
        };
        let err = verifier(&jwt, "the cart service").expect_err("no key");
        assert!(
            err.to_string()
                .starts_with("SOUK_JWT_PUBLIC_KEY_FILE: required by the cart service"),
            "{err}"
        );
    }

    #[test]
    fn a_half_given_key_pair_is_refused() {
        let jwt = JwtArgs {
            jwt_private_key_file: Some("/nonexistent/private.pem".into()),
            jwt_public_key_file: None,
            token_ttl_seconds: Duration::from_secs(60),
            refresh_token_ttl_seconds: Duration::from_secs(600),
        };
        let err = keys(&jwt, true).expect_err("half a pair");
        assert!(
            err.to_string().starts_with("SOUK_JWT_PUBLIC_KEY_FILE"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod contract_tests;
