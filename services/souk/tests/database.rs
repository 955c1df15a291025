//! Services and a database that comes late or restarts (issue 12), each service run as `souk
//! serve <service>` on a PostgreSQL cluster of the test's own (`souk_shared::testing::pg`), which
//! the test starts, stops and promotes. NATS is a port where nothing listens: no service waits
//! for it.

use std::{path::PathBuf, process::Stdio, time::Duration};

use souk_protos::v1::{
    ChargeRequest, ClearCartRequest, GetPaymentRequest, ListOrdersRequest, ListProductsRequest,
    LoginRequest, PaymentStatus, cart_service_client::CartServiceClient, cart_service_server,
    order_service_client::OrderServiceClient, order_service_server,
    payment_service_client::PaymentServiceClient, payment_service_server,
    product_service_client::ProductServiceClient, product_service_server,
    user_service_client::UserServiceClient, user_service_server,
};
use souk_shared::{
    auth::with_token,
    jwt::{Role, Signer},
    testing::{
        eventually,
        pg::{PgServer, free_port},
    },
};
use tokio::process::{Child, Command};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const SHOP: &str = "late";
const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-password";

/// Every gRPC service of a shop, with the name its health is asked by.
const SERVICES: &[(&str, &str)] = &[
    ("user", user_service_server::SERVICE_NAME),
    ("product", product_service_server::SERVICE_NAME),
    ("cart", cart_service_server::SERVICE_NAME),
    ("payment", payment_service_server::SERVICE_NAME),
    ("order", order_service_server::SERVICE_NAME),
];

/// The settings every `souk serve` of one test shares, and the keys its tokens are signed with.
struct Shop {
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// Each service's gRPC port, chosen before any starts, so that each knows its peers.
    ports: Vec<(&'static str, u16)>,
    signer: Signer,
}

impl Shop {
    fn new(pg: &PgServer) -> Self {
        let dir = std::env::temp_dir().join(format!("souk-db-{}", uuid::Uuid::new_v4().simple()));
        let keys = dir.join("keys");
        let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_souk"))
            .args(["keygen", "--dir", &keys.to_string_lossy()])
            .stderr(Stdio::null())
            .status()
            .expect("souk keygen");
        assert!(keygen.success(), "souk keygen failed");
        let private = std::fs::read_to_string(keys.join("private.pem")).expect("private key");
        let ports: Vec<_> = SERVICES
            .iter()
            .map(|(service, _)| (*service, free_port()))
            .collect();
        let mut env: Vec<(String, String)> = vec![
            ("SOUK_SHOP_NAME".into(), SHOP.into()),
            ("SOUK_LOG".into(), "warn".into()),
            ("SOUK_DATABASE_URL".into(), pg.url("postgres")),
            // Nothing listens there: NATS is not what this is about.
            (
                "SOUK_NATS_URL".into(),
                format!("nats://127.0.0.1:{}", free_port()),
            ),
            (
                "SOUK_JWT_PRIVATE_KEY_FILE".into(),
                keys.join("private.pem").to_string_lossy().into(),
            ),
            (
                "SOUK_JWT_PUBLIC_KEY_FILE".into(),
                keys.join("public.pem").to_string_lossy().into(),
            ),
            ("SOUK_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("SOUK_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ];
        for (service, port) in &ports {
            env.push((
                format!("SOUK_{}_URL", service.to_uppercase()),
                format!("http://127.0.0.1:{port}"),
            ));
        }
        Self {
            dir,
            env,
            ports,
            signer: Signer::from_pem(&private, Duration::from_secs(600)).expect("signer"),
        }
    }

    fn port(&self, service: &str) -> u16 {
        self.ports
            .iter()
            .find(|(name, _)| *name == service)
            .expect("a service")
            .1
    }

    /// Starts `souk serve <service>` (killed when dropped); its log goes to `<service>.log`.
    fn serve(&self, service: &'static str) -> Service {
        let log = self.dir.join(format!("{service}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_souk"))
            .args([
                "serve",
                service,
                "--grpc-addr",
                &format!("127.0.0.1:{}", self.port(service)),
                "--metrics-addr",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("souk serve");
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            self.port(service)
        ))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
        Service {
            name: service,
            health_name: SERVICES
                .iter()
                .find(|(name, _)| *name == service)
                .expect("a service")
                .1,
            child,
            log,
            channel,
        }
    }

    fn token(&self, role: Role) -> String {
        self.signer
            .sign(uuid::Uuid::now_v7(), role)
            .expect("a token")
    }

    /// One call of `service`'s own that needs its database (and, for the user service, the
    /// admin account it makes sure of).
    async fn call(&self, service: &Service) -> Result<(), Status> {
        let channel = service.channel.clone();
        let customer = self.token(Role::Customer);
        match service.name {
            "user" => UserServiceClient::new(channel)
                .login(LoginRequest {
                    email: ADMIN_EMAIL.into(),
                    password: ADMIN_PASSWORD.into(),
                })
                .await
                .map(drop),
            "product" => ProductServiceClient::new(channel)
                .list_products(ListProductsRequest::default())
                .await
                .map(drop),
            "cart" => CartServiceClient::new(channel)
                .clear_cart(with_token(ClearCartRequest {}, &customer))
                .await
                .map(drop),
            "payment" => self.charge(&service.channel).await,
            "order" => OrderServiceClient::new(channel)
                .list_orders(with_token(ListOrdersRequest {}, &customer))
                .await
                .map(drop),
            other => panic!("no call for {other}"),
        }
    }

    /// Charges a new order and reads its payment back: a write and a read.
    async fn charge(&self, channel: &Channel) -> Result<(), Status> {
        let mut payments = PaymentServiceClient::new(channel.clone());
        let order_id = uuid::Uuid::now_v7().to_string();
        let charged = payments
            .charge(with_token(
                ChargeRequest {
                    order_id: order_id.clone(),
                    user_id: uuid::Uuid::now_v7().to_string(),
                    amount_cents: 1_250,
                },
                &self.token(Role::Service),
            ))
            .await?
            .into_inner();
        assert_eq!(charged.status(), PaymentStatus::Captured);
        let read = payments
            .get_payment(with_token(
                GetPaymentRequest { order_id },
                &self.token(Role::Service),
            ))
            .await?
            .into_inner();
        assert_eq!(read.amount_cents, 1_250);
        Ok(())
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `souk serve <service>`.
struct Service {
    name: &'static str,
    health_name: &'static str,
    child: Child,
    log: PathBuf,
    channel: Channel,
}

impl Service {
    async fn health(&self, name: &str) -> Option<ServingStatus> {
        let reply = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: name.to_owned(),
            })
            .await
            .ok()?;
        Some(reply.into_inner().status())
    }

    /// Liveness, and readiness as `""` and as the service's name.
    async fn probes(&self) -> Option<[ServingStatus; 3]> {
        Some([
            self.health(souk_contract::LIVENESS_HEALTH_SERVICE).await?,
            self.health("").await?,
            self.health(self.health_name).await?,
        ])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("child") {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

const ALIVE_NOT_READY: [ServingStatus; 3] = [
    ServingStatus::Serving,
    ServingStatus::NotServing,
    ServingStatus::NotServing,
];

/// Asserts what a service waiting for its database answers: liveness `SERVING`, readiness
/// `NOT_SERVING`, its own calls `Unavailable`.
async fn assert_waiting(shop: &Shop, service: &mut Service) {
    service.assert_running();
    let probes = service.probes().await;
    assert_eq!(
        probes,
        Some(ALIVE_NOT_READY),
        "{}: liveness, readiness (\"\", name)",
        service.name
    );
    let call = shop.call(service).await.expect_err("not ready yet");
    assert_eq!(
        call.code(),
        Code::Unavailable,
        "{}: {call:?} while its database is away",
        service.name
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_database_comes_late_answers_health_at_once_and_its_calls_once_ready() {
    // Without PostgreSQL's programs the test fails, naming the fix: it never passes untested.
    let mut pg = PgServer::temporary().unwrap_or_else(|reason| panic!("{reason}"));
    let shop = Shop::new(&pg);
    let mut services: Vec<Service> = SERVICES
        .iter()
        .map(|(service, _)| shop.serve(service))
        .collect();

    // Nothing listens on the database's port: every port answers, alive but not ready.
    for service in &mut services {
        eventually(
            &format!("{} to answer health", service.name),
            Duration::from_secs(30),
            || service.probes(),
        )
        .await;
        assert_waiting(&shop, service).await;
    }

    // The server is up but admits nobody yet (57P03, as while it starts up): each service
    // meets it, keeps waiting and keeps answering.
    pg.start_as_standby();
    for service in &mut services {
        eventually(
            &format!("{} to meet a database that is starting up", service.name),
            Duration::from_secs(30),
            || async {
                service
                    .log()
                    .contains("not accepting connections")
                    .then_some(())
            },
        )
        .await;
        assert_waiting(&shop, service).await;
    }
    assert!(
        pg.log().contains("not accepting connections"),
        "the server refused with 57P03:\n{}",
        pg.log()
    );

    // The database is there: every service becomes ready and answers its calls.
    pg.promote().await;
    for service in &mut services {
        eventually(
            &format!("{} to be ready", service.name),
            Duration::from_secs(60),
            || async {
                (service.probes().await == Some([ServingStatus::Serving; 3])).then_some(())
            },
        )
        .await;
        service.assert_running();
        if let Err(status) = shop.call(service).await {
            panic!(
                "{}: {status:?} once ready; its log:\n{}",
                service.name,
                service.log()
            );
        }
    }
}

/// The issue saw calls fail for seconds after PostgreSQL came back. While it starts up, a call
/// answers `Unavailable` at once; once it is back, not one fails.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_database_restart_no_call_fails_on_a_stale_pooled_connection() {
    // Without PostgreSQL's programs the test fails, naming the fix: it never passes untested.
    let mut pg = PgServer::temporary().unwrap_or_else(|reason| panic!("{reason}"));
    pg.start();
    pg.wait_until_accepting(Duration::from_secs(30)).await;
    let shop = Shop::new(&pg);
    let payment = shop.serve("payment");
    eventually(
        "the payment service to be ready",
        Duration::from_secs(60),
        || async { (payment.probes().await == Some([ServingStatus::Serving; 3])).then_some(()) },
    )
    .await;

    // A warm pool: bursts of calls at once until it holds several connections (how many one
    // burst opens depends on how busy the machine is).
    let database = format!("{SHOP}_payment");
    eventually(
        "the pool to hold at least 4 connections",
        Duration::from_secs(60),
        || async {
            let warm = futures::future::join_all((0..32).map(|_| shop.call(&payment))).await;
            assert!(warm.iter().all(Result::is_ok), "warming: {warm:?}");
            let pooled = connections_to(&pg, &database).await;
            (pooled >= 4).then_some(pooled)
        },
    )
    .await;

    // Crashed, then starting up (every connection refused with 57P03): a call answers
    // Unavailable, retryable, within the pool's acquire timeout.
    pg.stop_immediately().await;
    pg.start_as_standby();
    let started = std::time::Instant::now();
    let call = shop
        .call(&payment)
        .await
        .expect_err("the database is starting up");
    assert_eq!(call.code(), Code::Unavailable, "{call:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Back: every connection pooled before the crash is dead.
    pg.promote().await;
    pg.wait_until_accepting(Duration::from_secs(60)).await;

    let mut failures = Vec::new();
    for i in 0..50 {
        if let Err(status) = shop.call(&payment).await {
            failures.push(format!("call {i}: {status:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 calls failed after the restart:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// How many connections the server has to `database` now.
async fn connections_to(pg: &PgServer, database: &str) -> i64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("a connection");
    sqlx::query_scalar("select count(*) from pg_stat_activity where datname = $1")
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity")
}
