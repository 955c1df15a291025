//! `souk`: `souk up` runs a whole shop on this machine, `souk serve <service>` runs one service
//! alone and `souk relay <service>` the relayer of its outbox (what containers run), `souk keygen`
//! writes a development JWT key pair. This file only parses configuration; the libraries do the
//! work.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use souk::Service;
use souk_contract::env as settings;
use souk_shared::{
    Shutdown,
    bus::Bus,
    config::{
        CommonArgs, DatabaseArgs, JwtArgs, NatsArgs, PublicKeyArgs, RefreshArgs, Secret, ShopName,
        SigningArgs, check_database_url, parse_duration,
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
#[allow(clippy::large_enum_variant, reason = "parsed once, at start")]
enum Command {
    /// Run the whole shop in this process: every service and the gateway.
    Up(UpArgs),
    /// Run one service alone.
    #[command(name = souk_contract::command::SERVE, subcommand)]
    Serve(Serve),
    /// Run the relayer of one service's outbox (product or order) alone.
    #[command(name = souk_contract::command::RELAY, subcommand)]
    Relay(Relay),
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
    saga: SagaArgs,
    #[command(flatten)]
    decline: DeclineArgs,
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
    #[arg(long, env = settings::METRICS_ADDR, default_value = "127.0.0.1:9090")]
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

/// One service's database of its own, instead of `<shop>_<service>` on SOUK_DATABASE_URL; and
/// the address another service reaches a service at. One struct per service, so that each command
/// offers only the settings it reads.
macro_rules! service_settings {
    ($($name:ident / $service:ident: $database:ident($database_url:ident = $database_env:path), $peer:ident($url:ident = $url_env:path);)*) => {$(
        #[derive(Debug, Clone, clap::Args)]
        struct $database {
            #[arg(
                long,
                env = $database_env,
                hide_env_values = true,
                help = concat!("The ", stringify!($name), " service's own database (instead of `<shop>_", stringify!($name), "` on SOUK_DATABASE_URL)")
            )]
            $database_url: Option<Secret<String>>,
        }

        impl OwnDatabase for $database {
            const SERVICE: Service = Service::$service;
            const SETTING: &'static str = $database_env;

            fn url(&self) -> Option<&Secret<String>> {
                self.$database_url.as_ref()
            }
        }

        #[derive(Debug, Clone, clap::Args)]
        struct $peer {
            #[arg(
                long,
                env = $url_env,
                default_value = "http://127.0.0.1:50051",
                help = concat!("The ", stringify!($name), " service's gRPC URL")
            )]
            $url: String,
        }
    )*};
}

service_settings! {
    user / User: UserDatabase(user_database_url = settings::USER_DATABASE_URL), UserUrl(user_url = settings::USER_URL);
    product / Product: ProductDatabase(product_database_url = settings::PRODUCT_DATABASE_URL), ProductUrl(product_url = settings::PRODUCT_URL);
    cart / Cart: CartDatabase(cart_database_url = settings::CART_DATABASE_URL), CartUrl(cart_url = settings::CART_URL);
    payment / Payment: PaymentDatabase(payment_database_url = settings::PAYMENT_DATABASE_URL), PaymentUrl(payment_url = settings::PAYMENT_URL);
    order / Order: OrderDatabase(order_database_url = settings::ORDER_DATABASE_URL), OrderUrl(order_url = settings::ORDER_URL);
}

/// A service's own-database setting.
trait OwnDatabase {
    const SERVICE: Service;
    const SETTING: &'static str;

    fn url(&self) -> Option<&Secret<String>>;

    /// Where the service's database is, the URLs checked first (naming the setting of a malformed
    /// one: clap would echo a rejected value, password included).
    fn location(&self, server: &DatabaseArgs, shop: &ShopName) -> anyhow::Result<DatabaseLocation> {
        server.check()?;
        if let Some(url) = self.url() {
            check_database_url(Self::SETTING, url)?;
        }
        Ok(DatabaseLocation::resolve(
            self.url().cloned(),
            &server.database_url,
            shop,
            Self::SERVICE.name(),
        ))
    }
}

/// Every service's own-database setting, for `souk up`.
#[derive(Debug, Clone, clap::Args)]
struct ServiceDatabaseArgs {
    #[command(flatten)]
    user: UserDatabase,
    #[command(flatten)]
    product: ProductDatabase,
    #[command(flatten)]
    cart: CartDatabase,
    #[command(flatten)]
    payment: PaymentDatabase,
    #[command(flatten)]
    order: OrderDatabase,
}

impl ServiceDatabaseArgs {
    /// The services given a database of their own, each URL checked.
    fn own(&self) -> anyhow::Result<BTreeMap<&'static str, Secret<String>>> {
        fn checked<D: OwnDatabase>(
            database: &D,
        ) -> anyhow::Result<Option<(&'static str, Secret<String>)>> {
            let Some(url) = database.url() else {
                return Ok(None);
            };
            check_database_url(D::SETTING, url)?;
            Ok(Some((D::SERVICE.name(), url.clone())))
        }
        [
            checked(&self.user)?,
            checked(&self.product)?,
            checked(&self.cart)?,
            checked(&self.payment)?,
            checked(&self.order)?,
        ]
        .into_iter()
        .flatten()
        .map(Ok)
        .collect()
    }
}

/// How long a checkout may take (the order service).
#[derive(Debug, Clone, clap::Args)]
struct SagaArgs {
    /// How long a checkout saga may go without finishing before it is cancelled (e.g. 30s).
    #[arg(long, env = "SOUK_SAGA_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    saga_timeout: Duration,
}

/// The payment simulator's one rule.
#[derive(Debug, Clone, clap::Args)]
struct DeclineArgs {
    /// The payment simulator declines charges above this many cents.
    #[arg(long, env = settings::PAYMENT_DECLINE_ABOVE_CENTS, default_value_t = souk_contract::defaults::PAYMENT_DECLINE_ABOVE_CENTS, value_parser = clap::value_parser!(i64).range(0..))]
    payment_decline_above_cents: i64,
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

/// Where a gRPC service listens, and where its figures are.
#[derive(Debug, Clone, clap::Args)]
struct GrpcListenArgs {
    /// Where the service listens (gRPC).
    #[arg(long, env = settings::GRPC_ADDR, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = settings::METRICS_ADDR, default_value = "127.0.0.1:9090")]
    metrics_addr: SocketAddr,
}

/// `souk serve <service>`: each service offers the settings it reads, and no other's.
#[derive(Debug, Clone, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once, at start")]
enum Serve {
    /// The user service: accounts, logins and tokens.
    User {
        #[command(flatten)]
        listen: GrpcListenArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        own_database: UserDatabase,
        #[command(flatten)]
        public_key: PublicKeyArgs,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        refresh: RefreshArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The product service: the catalog and its stock.
    Product {
        #[command(flatten)]
        listen: GrpcListenArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        own_database: ProductDatabase,
        #[command(flatten)]
        public_key: PublicKeyArgs,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// The cart service.
    Cart {
        #[command(flatten)]
        listen: GrpcListenArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        own_database: CartDatabase,
        #[command(flatten)]
        public_key: PublicKeyArgs,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        product: ProductUrl,
    },
    /// The payment service (a simulator).
    Payment {
        #[command(flatten)]
        listen: GrpcListenArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        own_database: PaymentDatabase,
        #[command(flatten)]
        public_key: PublicKeyArgs,
        #[command(flatten)]
        decline: DeclineArgs,
    },
    /// The order service and its checkout saga.
    Order {
        #[command(flatten)]
        listen: GrpcListenArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        own_database: OrderDatabase,
        #[command(flatten)]
        public_key: PublicKeyArgs,
        #[command(flatten)]
        signing: SigningArgs,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        saga: SagaArgs,
        #[command(flatten)]
        cart: CartUrl,
        #[command(flatten)]
        payment: PaymentUrl,
    },
    /// The gateway: the REST API and the storefront.
    Gateway {
        /// Where the gateway listens.
        #[arg(long, env = settings::HTTP_ADDR, default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// Where `/metrics` and `/healthz` are served: the operations port, never the API's.
        #[arg(long, env = settings::METRICS_ADDR, default_value = "127.0.0.1:9090")]
        metrics_addr: SocketAddr,
        #[command(flatten)]
        public_key: PublicKeyArgs,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        user: UserUrl,
        #[command(flatten)]
        product: ProductUrl,
        #[command(flatten)]
        cart: CartUrl,
        #[command(flatten)]
        order: OrderUrl,
        #[command(flatten)]
        limits: GatewayArgs,
    },
}

/// `souk relay <service>`: the relayer of one service's outbox.
#[derive(Debug, Clone, Subcommand)]
enum Relay {
    /// The product service's outbox.
    Product {
        #[command(flatten)]
        common: RelayArgs,
        #[command(flatten)]
        own_database: ProductDatabase,
    },
    /// The order service's outbox.
    Order {
        #[command(flatten)]
        common: RelayArgs,
        #[command(flatten)]
        own_database: OrderDatabase,
    },
}

/// What every relayer reads.
#[derive(Debug, Clone, clap::Args)]
struct RelayArgs {
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = settings::METRICS_ADDR, default_value = "127.0.0.1:9091")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
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
fn keys(
    public: &PublicKeyArgs,
    signing: &SigningArgs,
    allow_generated: bool,
) -> anyhow::Result<KeyPair> {
    match (&signing.jwt_private_key_file, &public.jwt_public_key_file) {
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
fn verifier(public: &PublicKeyArgs, who: &str) -> anyhow::Result<Verifier> {
    let public = public
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
    let service_databases = args.service_databases.own()?;
    let nats_credentials = args.nats.credentials()?;
    let mut config = souk::ShopConfig::new(
        common.shop_name,
        args.database.database_url,
        args.nats.nats_url,
        keys(&args.jwt.public, &args.jwt.signing, true)?,
    );
    config.service_databases = service_databases;
    config.token_ttl = args.jwt.signing.token_ttl_seconds;
    config.refresh_ttl = args.jwt.refresh.refresh_token_ttl_seconds;
    config.admin = args.admin.account();
    config.grpc_addrs = [
        (Service::User.name(), args.user_grpc_addr),
        (Service::Product.name(), args.product_grpc_addr),
        (Service::Cart.name(), args.cart_grpc_addr),
        (Service::Payment.name(), args.payment_grpc_addr),
        (Service::Order.name(), args.order_grpc_addr),
    ]
    .into_iter()
    .filter_map(|(service, addr)| Some((service, addr?)))
    .collect::<BTreeMap<_, _>>();
    config.saga_timeout = args.saga.saga_timeout;
    config.payment_decline_above_cents = args.decline.payment_decline_above_cents;
    config.max_deliver = args.nats.max_deliver;
    config.nats_credentials = nats_credentials;
    config.gateway_limits = args.gateway.limits();
    let http = bind(settings::HTTP_ADDR, args.http_addr).await?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let shop = souk::up(config, http, shutdown.clone()).await?;
    serve_metrics(shop.registry(), args.metrics_addr, &shutdown).await?;
    shop.wait().await
}

/// Serves a registry's metrics on `addr` until `shutdown`, in the background.
async fn serve_metrics(
    registry: Arc<Registry>,
    addr: SocketAddr,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let listener = bind(settings::METRICS_ADDR, addr).await?;
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
async fn serve(common: CommonArgs, service: Serve) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let shop = &common.shop_name;
    let mut registry = Registry::with_prefix("souk");
    let consumers = ConsumerMetrics::default();
    consumers.register(&mut registry);
    let saga = souk_order::SagaMetrics::default();
    let bus = |nats: &NatsArgs| {
        let credentials = nats.credentials();
        let url = nats.nats_url.clone();
        async move { Bus::connect_as(&url, credentials?.as_ref(), shop.clone(), "service").await }
    };
    // What every gRPC service is made of; each arm below fills in what its service reads.
    let parts = |database: DatabaseLocation, verifier: Verifier| souk::Parts {
        shop: shop.clone(),
        database,
        verifier,
        signer: None,
        bus: None,
        peers: BTreeMap::new(),
        admin: None,
        hash_limits: souk_user::HashLimits::for_this_machine(),
        refresh_ttl: souk_user::DEFAULT_REFRESH_TTL,
        payment_decline_above_cents: souk_contract::defaults::PAYMENT_DECLINE_ABOVE_CENTS,
        saga_timeout: souk_order::DEFAULT_SAGA_TIMEOUT,
        max_deliver: 0,
        consumers: consumers.clone(),
        saga: saga.clone(),
    };
    let (kind, listen, parts) = match service {
        Serve::User {
            listen,
            database,
            own_database,
            public_key,
            signing,
            refresh,
            admin,
        } => {
            let keys = keys(&public_key, &signing, false)?;
            let parts = souk::Parts {
                signer: Some(Signer::from_pem(
                    keys.private_pem.expose(),
                    signing.token_ttl_seconds,
                )?),
                admin: admin.account(),
                refresh_ttl: refresh.refresh_token_ttl_seconds,
                ..parts(
                    own_database.location(&database, shop)?,
                    Verifier::from_pem(&keys.public_pem)?,
                )
            };
            (Service::User, listen, parts)
        }
        Serve::Product {
            listen,
            database,
            own_database,
            public_key,
            nats,
        } => {
            let parts = souk::Parts {
                bus: Some(bus(&nats).await?),
                max_deliver: nats.max_deliver,
                ..parts(
                    own_database.location(&database, shop)?,
                    verifier(&public_key, "the product service")?,
                )
            };
            (Service::Product, listen, parts)
        }
        Serve::Cart {
            listen,
            database,
            own_database,
            public_key,
            nats,
            product,
        } => {
            let parts = souk::Parts {
                bus: Some(bus(&nats).await?),
                max_deliver: nats.max_deliver,
                peers: BTreeMap::from([(Service::Product, product.product_url)]),
                ..parts(
                    own_database.location(&database, shop)?,
                    verifier(&public_key, "the cart service")?,
                )
            };
            (Service::Cart, listen, parts)
        }
        Serve::Payment {
            listen,
            database,
            own_database,
            public_key,
            decline,
        } => {
            let parts = souk::Parts {
                payment_decline_above_cents: decline.payment_decline_above_cents,
                ..parts(
                    own_database.location(&database, shop)?,
                    verifier(&public_key, "the payment service")?,
                )
            };
            (Service::Payment, listen, parts)
        }
        Serve::Order {
            listen,
            database,
            own_database,
            public_key,
            signing,
            nats,
            saga: saga_args,
            cart,
            payment,
        } => {
            let keys = keys(&public_key, &signing, false)?;
            saga.register(&mut registry);
            let parts = souk::Parts {
                signer: Some(Signer::from_pem(
                    keys.private_pem.expose(),
                    signing.token_ttl_seconds,
                )?),
                bus: Some(bus(&nats).await?),
                max_deliver: nats.max_deliver,
                saga_timeout: saga_args.saga_timeout,
                peers: BTreeMap::from([
                    (Service::Cart, cart.cart_url),
                    (Service::Payment, payment.payment_url),
                ]),
                ..parts(
                    own_database.location(&database, shop)?,
                    Verifier::from_pem(&keys.public_pem)?,
                )
            };
            (Service::Order, listen, parts)
        }
        Serve::Gateway {
            http_addr,
            metrics_addr,
            public_key,
            nats,
            user,
            product,
            cart,
            order,
            limits,
        } => {
            let metrics = souk_gateway::Metrics::register(&mut registry);
            let registry = Arc::new(registry);
            let settings = souk_gateway::Settings {
                upstreams: souk_gateway::Upstreams {
                    user: user.user_url,
                    product: product.product_url,
                    cart: cart.cart_url,
                    order: order.order_url,
                },
                verifier: verifier(&public_key, "the gateway")?,
                metrics,
                limits: limits.limits(),
                // Catalog reads are cached, each replica hearing the catalog's events.
                bus: Some(bus(&nats).await?),
            };
            let listener = bind(settings::HTTP_ADDR, http_addr).await?;
            // The figures are on the metrics port only, as for every other container.
            serve_metrics(registry, metrics_addr, &shutdown).await?;
            tracing::info!("gateway listening on http://{http_addr}");
            return souk_gateway::serve(settings, listener, shutdown).await;
        }
    };
    // Bound before the database is ready: the server answers health (not ready) meanwhile.
    let built = souk::build(kind, parts, souk::Ready::WhileServing).await?;
    if let Some(pool) = built.outbox {
        // Its relayer is a sidecar: it hears of new events by NOTIFY.
        tokio::spawn(outbox::forward_hints(pool, shutdown.clone()));
    }
    let listener = bind(settings::GRPC_ADDR, listen.grpc_addr).await?;
    serve_metrics(Arc::new(registry), listen.metrics_addr, &shutdown).await?;
    tracing::info!(addr = %listen.grpc_addr, "{kind} service listening (gRPC)");
    built.service.serve(listener, shutdown).await
}

async fn relay(common: CommonArgs, relay: Relay) -> anyhow::Result<()> {
    let (service, args, location) = match relay {
        Relay::Product {
            common: args,
            own_database,
        } => (
            ProductDatabase::SERVICE.name(),
            args.clone(),
            own_database.location(&args.database, &common.shop_name)?,
        ),
        Relay::Order {
            common: args,
            own_database,
        } => (
            OrderDatabase::SERVICE.name(),
            args.clone(),
            own_database.location(&args.database, &common.shop_name)?,
        ),
    };
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
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
        let Command::Serve(Serve::Order {
            database,
            own_database,
            ..
        }) = cli.command
        else {
            panic!("not serve order");
        };
        let err = own_database
            .location(&database, &cli.common.shop_name)
            .expect_err("invalid");
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
        let Command::Serve(Serve::Cart {
            database,
            own_database,
            product,
            ..
        }) = cli.command
        else {
            panic!("not serve cart");
        };
        assert_eq!(product.product_url, "http://product:50051");
        let cart = own_database
            .location(&database, &cli.common.shop_name)
            .expect("valid");
        assert!(
            matches!(cart, DatabaseLocation::Own(url) if url.expose() == "postgres://db.example/carts")
        );
        let product = ProductDatabase {
            product_database_url: None,
        }
        .location(&database, &cli.common.shop_name)
        .expect("valid");
        assert!(
            matches!(product, DatabaseLocation::OnServer { database, .. } if database == "t1_product")
        );
    }

    #[test]
    fn the_command_lines_defaults_are_the_shops() {
        let cli = Cli::try_parse_from(["souk", "up"]).expect("valid");
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        let shop = souk::ShopConfig::new(
            cli.common.shop_name,
            args.database.database_url.clone(),
            args.nats.nats_url.clone(),
            KeyPair::generate().expect("keys"),
        );
        assert_eq!(args.jwt.signing.token_ttl_seconds, shop.token_ttl);
        assert_eq!(args.jwt.refresh.refresh_token_ttl_seconds, shop.refresh_ttl);
        assert_eq!(args.saga.saga_timeout, shop.saga_timeout);
        assert_eq!(
            args.decline.payment_decline_above_cents,
            shop.payment_decline_above_cents
        );
        assert_eq!(args.nats.max_deliver, shop.max_deliver);
    }

    #[test]
    fn each_service_offers_only_the_settings_it_reads() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli
            .find_subcommand(souk_contract::command::SERVE)
            .expect("serve");
        let flags = |service: &str| -> Vec<String> {
            serve
                .find_subcommand(service)
                .unwrap_or_else(|| panic!("serve {service}"))
                .get_arguments()
                .filter_map(|arg| arg.get_long().map(str::to_owned))
                .collect()
        };
        let product = flags("product");
        assert!(product.contains(&"product-database-url".to_owned()));
        for foreign in [
            "user-database-url",
            "order-database-url",
            "cart-url",
            "admin-email",
        ] {
            assert!(
                !product.contains(&foreign.to_owned()),
                "product offers {foreign}"
            );
        }
        let gateway = flags("gateway");
        assert!(gateway.contains(&"order-url".to_owned()));
        assert!(
            !gateway.iter().any(|flag| flag.ends_with("database-url")),
            "the gateway has no database: {gateway:?}"
        );
        assert!(!flags("payment").contains(&"nats-url".to_owned()));
        assert!(!flags("order").contains(&"refresh-token-ttl-seconds".to_owned()));
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
        let public = PublicKeyArgs {
            jwt_public_key_file: None,
        };
        let err = verifier(&public, "the cart service").expect_err("no key");
        assert!(
            err.to_string()
                .starts_with("SOUK_JWT_PUBLIC_KEY_FILE: required by the cart service"),
            "{err}"
        );
    }

    #[test]
    fn a_half_given_key_pair_is_refused() {
        let public = PublicKeyArgs {
            jwt_public_key_file: None,
        };
        let signing = SigningArgs {
            jwt_private_key_file: Some("/nonexistent/private.pem".into()),
            token_ttl_seconds: Duration::from_secs(60),
        };
        let err = keys(&public, &signing, true).expect_err("half a pair");
        assert!(
            err.to_string().starts_with("SOUK_JWT_PUBLIC_KEY_FILE"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod contract_tests;
