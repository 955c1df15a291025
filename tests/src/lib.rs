//! The end-to-end harness: a shop to drive over real HTTP.
//!
//! By default each test starts a shop of its own in this process (databases named after a fresh
//! shop name on the local PostgreSQL, the gateway on a free port) and drops its databases when
//! done. Built with the `remote` feature, the same tests drive the shop at `SOUK_E2E_URL` instead
//! (the kind end-to-end script does this), logging in as
//! `SOUK_E2E_ADMIN_EMAIL`/`SOUK_E2E_ADMIN_PASSWORD`:
//!
//! ```text
//! SOUK_E2E_URL=http://127.0.0.1:8080 ... cargo nextest run -p souk-e2e --features remote
//! ```
//!
//! A test that needs the in-process shop (to stop a service, mint special tokens, read the
//! payment service or the operations port) says so on itself, and the remote run counts it as
//! skipped rather than passing it silently:
//!
//! ```text
//! #[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]
//! ```

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use souk::{RunningShop, ShopConfig};
use souk_shared::{
    Shutdown,
    config::{Secret, ShopName},
    jwt::KeyPair,
    testing::{self, TcpProxy},
};

pub use serde_json::json;

/// How long a saga (or an event's effect) may take before a test gives up: it takes well under
/// a second.
pub const SETTLE: Duration = Duration::from_secs(20);

/// The message of a test that reached for the in-process shop while driving a remote one: it
/// lacks its `#[cfg_attr(feature = "remote", ignore = ...)]`.
const NEEDS_IN_PROCESS: &str = "this test needs the in-process shop: mark it \
    #[cfg_attr(feature = \"remote\", ignore = \"needs the in-process shop\")]";

/// What a test can ask of an in-process shop.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Services whose database connection goes through a `TcpProxy` the test can cut.
    pub proxied_databases: Vec<&'static str>,
    /// The shop reaches NATS through a `TcpProxy` the test can cut (`Local::nats_proxy`).
    pub proxied_nats: bool,
    /// The checkout saga's deadline, when not the default.
    pub saga_timeout: Option<Duration>,
    /// Services that consume no events, as if they never answered.
    pub silent_participants: Vec<&'static str>,
    /// The gateway's limits, when not the default.
    pub gateway_limits: Option<souk_gateway::Limits>,
    /// The user service's bound on password hashing, when not this machine's.
    pub hash_limits: Option<souk_user::HashLimits>,
}

/// A shop under test.
#[derive(Debug)]
pub struct TestShop {
    base: String,
    /// The operations port's base URL (`/metrics`), when known.
    metrics_base: Option<String>,
    http: reqwest::Client,
    admin_email: String,
    admin_password: String,
    local: Option<Local>,
}

/// The parts of an in-process shop a test can reach.
#[derive(Debug)]
pub struct Local {
    pub shop: RunningShop,
    pub keys: KeyPair,
    pub database_proxies: BTreeMap<&'static str, TcpProxy>,
    pub nats_proxy: Option<TcpProxy>,
    shop_name: ShopName,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and, for errors, that the body is a well-formed RFC 7807 problem.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                self.headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
                "errors are problem+json"
            );
            assert_eq!(self.body["status"], status.as_u16(), "{}", self.text);
            assert!(
                self.body["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("https://souk.dev/problems/")),
                "{}",
                self.text
            );
            assert!(
                self.body["title"].is_string() && self.body["detail"].is_string(),
                "{}",
                self.text
            );
        }
        &self.body
    }
}

impl TestShop {
    /// The shop under test: a fresh one in this process, or with the `remote` feature the one at
    /// `SOUK_E2E_URL`.
    pub async fn start() -> Self {
        if cfg!(feature = "remote") {
            let base = std::env::var("SOUK_E2E_URL")
                .expect("SOUK_E2E_URL: the shop the `remote` feature tests");
            return Self::at(
                &base,
                std::env::var("SOUK_E2E_ADMIN_EMAIL")
                    .expect("SOUK_E2E_ADMIN_EMAIL: the remote shop's admin"),
                std::env::var("SOUK_E2E_ADMIN_PASSWORD")
                    .expect("SOUK_E2E_ADMIN_PASSWORD: the remote shop's admin"),
            );
        }
        Self::start_with(Options::default()).await
    }

    /// The shop whose gateway is at `base`, run by someone else (another process), with its
    /// admin account.
    pub fn at(base: &str, admin_email: String, admin_password: String) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            metrics_base: None,
            http: http_client(),
            admin_email,
            admin_password,
            local: None,
        }
    }

    /// A fresh shop in this process, made as `options` ask: a test that calls this needs the
    /// in-process shop.
    pub async fn start_with(options: Options) -> Self {
        if cfg!(feature = "remote") {
            panic!("{NEEDS_IN_PROCESS}");
        }
        if let Ok(filter) = std::env::var("SOUK_LOG") {
            // Logs of the shop under test, when asked for (`SOUK_LOG=debug cargo nextest run --no-capture`).
            let _ =
                souk_shared::telemetry::init(&filter, souk_shared::telemetry::LogFormat::Pretty);
        }
        let http = http_client();
        let shop_name: ShopName =
            format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
                .parse()
                .expect("shop name");
        let keys = KeyPair::generate().expect("keys");
        let admin_email = format!("admin-{shop_name}@example.com");
        let admin_password = "admin-password".to_owned();

        let mut database_proxies = BTreeMap::new();
        let mut service_databases = BTreeMap::new();
        for service in options.proxied_databases {
            let database = shop_name.database_name(service);
            let server = testing::server_url().parse().expect("server URL");
            souk_shared::db::ensure_database(&server, &database)
                .await
                .expect("create database");
            let proxy = TcpProxy::start(testing::postgres_addr()).await;
            service_databases.insert(
                service,
                Secret::new(format!("postgres://postgres@{}/{database}", proxy.addr())),
            );
            database_proxies.insert(service, proxy);
        }

        let nats_proxy = if options.proxied_nats {
            Some(TcpProxy::start(testing::nats_addr()).await)
        } else {
            None
        };
        let nats_url = nats_proxy.as_ref().map_or_else(testing::nats_url, |proxy| {
            format!("nats://{}", proxy.addr())
        });
        let mut config = ShopConfig::new(
            shop_name.clone(),
            Secret::new(testing::server_url()),
            nats_url,
            keys.clone(),
        );
        config.service_databases = service_databases;
        config.token_ttl = Duration::from_secs(900);
        config.admin = Some(souk_user::AdminAccount {
            email: admin_email.clone(),
            password: Secret::new(admin_password.clone()),
        });
        if let Some(timeout) = options.saga_timeout {
            config.saga_timeout = timeout;
        }
        config.silent_participants = options.silent_participants;
        if let Some(limits) = options.gateway_limits {
            config.gateway_limits = limits;
        }
        if let Some(limits) = options.hash_limits {
            config.hash_limits = limits;
        }
        let listener = testing::listener().await;
        let shop = souk::up(config, listener, Shutdown::new())
            .await
            .expect("shop starts");
        // The operations port, as `souk up` serves it.
        let metrics = testing::listener().await;
        let metrics_base = format!("http://{}", metrics.local_addr().expect("metrics addr"));
        tokio::spawn(souk_shared::metrics::serve(
            shop.registry(),
            metrics,
            shop.shutdown().clone(),
        ));
        Self {
            base: format!("http://{}", shop.http_addr),
            metrics_base: Some(metrics_base),
            http,
            admin_email,
            admin_password,
            local: Some(Local {
                shop,
                keys,
                database_proxies,
                nats_proxy,
                shop_name,
            }),
        }
    }

    /// The in-process shop. A test that calls this is marked
    /// `#[cfg_attr(feature = "remote", ignore = "needs the in-process shop")]`.
    #[track_caller]
    pub fn local(&mut self) -> &mut Local {
        self.local.as_mut().expect(NEEDS_IN_PROCESS)
    }

    /// The shop's `/metrics` from its operations port, which only the in-process shop shows.
    pub async fn metrics(&self) -> Reply {
        let base = self.metrics_base.as_ref().expect(NEEDS_IN_PROCESS);
        self.send(self.http.get(format!("{base}/metrics"))).await
    }

    /// The URL of one service's database, for an in-process shop.
    pub fn database_url(&self, service: &str) -> String {
        self.local
            .as_ref()
            .expect(NEEDS_IN_PROCESS)
            .database_url(service)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("HTTP body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(authorized(self.request(Method::GET, path), token))
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(authorized(self.request(Method::POST, path), token).json(body))
            .await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(authorized(self.request(Method::PUT, path), token).json(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(authorized(self.request(Method::DELETE, path), token))
            .await
    }

    /// An email no other test (or earlier run against the same URL) has used.
    pub fn unique_email(&self) -> String {
        format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let reply = self
            .post(
                "/api/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await;
        reply.expect(StatusCode::OK)["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A new customer, signed in.
    pub async fn customer(&self) -> Session {
        let email = self.unique_email();
        let password = "customer-password".to_owned();
        let reply = self
            .post(
                "/api/users",
                None,
                &json!({"email": email, "password": password, "name": "Test Customer"}),
            )
            .await;
        let id = reply.expect(StatusCode::CREATED)["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let token = self.login(&email, &password).await;
        Session {
            id,
            email,
            password,
            token,
        }
    }

    /// The shop's admin, signed in.
    pub async fn admin(&self) -> Session {
        let token = self.login(&self.admin_email, &self.admin_password).await;
        let me = self.get("/api/users/me", Some(&token)).await;
        Session {
            id: me.expect(StatusCode::OK)["id"]
                .as_str()
                .expect("id")
                .to_owned(),
            email: self.admin_email.clone(),
            password: self.admin_password.clone(),
            token,
        }
    }

    /// A product ("Lamp") made by `admin`; its id.
    pub async fn create_product(&self, admin: &Session, price_cents: i64, stock: i64) -> String {
        let body = json!({"name": "Lamp", "description": "A lamp", "price_cents": price_cents, "stock": stock});
        let reply = self.post("/api/products", Some(&admin.token), &body).await;
        reply.expect(StatusCode::CREATED)["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Puts `quantity` of `product` in the customer's cart.
    pub async fn add_to_cart(&self, customer: &Session, product: &str, quantity: i64) {
        let body = json!({"product_id": product, "quantity": quantity});
        self.post("/api/carts/products", Some(&customer.token), &body)
            .await
            .expect(StatusCode::OK);
    }

    /// Waits until `product`'s stock is `expected`, failing after [`SETTLE`].
    pub async fn wait_for_stock(&self, product: &str, expected: i64) {
        self.wait_for(&format!("/api/products/{product}"), None, SETTLE, |r| {
            r.body["stock"] == expected
        })
        .await;
    }

    /// Waits until `check` holds for the reply to `GET path`, failing after `timeout`.
    pub async fn wait_for(
        &self,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
        check: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let reply = self.get(path, token).await;
            if check(&reply) {
                return reply;
            }
            // The last answer says what went wrong (an order left CONFIRMED, say).
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {path}; its last answer: {} {}",
                reply.status,
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn authorized(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

impl Drop for TestShop {
    fn drop(&mut self) {
        if let Some(local) = self.local.take() {
            local.shop.shutdown().trigger();
            let databases = souk::SERVICES
                .iter()
                .map(|s| local.shop_name.database_name(s.name()))
                .collect();
            testing::drop_databases(databases);
            testing::delete_stream(&local.shop_name);
        }
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A payment as the payment service records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentView {
    /// `captured`, `declined`, `refunded` or `voided`.
    pub status: String,
    pub amount_cents: i64,
}

impl TestShop {
    /// The payment of an order, asked of the in-process payment service directly (it has no
    /// REST route): `None` when there is none.
    pub async fn payment_of(&self, order_id: &str) -> Option<PaymentView> {
        use souk_protos::v1::{
            GetPaymentRequest, PaymentStatus, payment_service_client::PaymentServiceClient,
        };
        let local = self.local.as_ref().expect(NEEDS_IN_PROCESS);
        let signer = souk_shared::jwt::Signer::from_pem(
            local.keys.private_pem.expose(),
            Duration::from_secs(60),
        )
        .expect("signer");
        let token = signer
            .sign(uuid::Uuid::new_v4(), souk_shared::jwt::Role::Admin)
            .expect("token");
        let addr = local.shop.grpc_addrs["payment"];
        let mut client = PaymentServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("payment service");
        let request = GetPaymentRequest {
            order_id: order_id.to_owned(),
        };
        match client
            .get_payment(souk_shared::auth::with_token(request, &token))
            .await
        {
            Ok(payment) => {
                let payment = payment.into_inner();
                let status = match payment.status() {
                    PaymentStatus::Captured => "captured",
                    PaymentStatus::Declined => "declined",
                    PaymentStatus::Refunded => "refunded",
                    PaymentStatus::Voided => "voided",
                    PaymentStatus::Unspecified => "unspecified",
                };
                Some(PaymentView {
                    status: status.to_owned(),
                    amount_cents: payment.amount_cents,
                })
            }
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => panic!("payment service: {status}"),
        }
    }
}

/// The durable consumers of a shop's stream.
pub const CONSUMERS: &[&str] = &["product", "cart", "order"];

impl Local {
    /// The URL of one service's database in this shop (on the test server).
    pub fn database_url(&self, service: &str) -> String {
        let server = testing::server_url();
        let base = server
            .rsplit_once('/')
            .map_or(server.as_str(), |(base, _)| base);
        format!("{base}/{}", self.shop_name.database_name(service))
    }

    /// The shop's name: its subjects are `<shop>.<event type>`.
    pub fn shop_name(&self) -> &ShopName {
        &self.shop_name
    }

    /// Publishes every event of the shop's stream again, each under a new message id (so the
    /// stream's deduplication lets it through and only the consumers' inboxes stand in the way).
    /// Returns how many.
    pub async fn republish_all_events(&self) -> usize {
        let bus = self.shop.bus();
        let mut stream = bus
            .jetstream()
            .get_stream(souk_shared::events::stream_name(&self.shop_name))
            .await
            .expect("stream");
        let total = stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let mut republished = 0;
        for sequence in 1..=total {
            // A sequence may have been removed (the stream keeps no gaps otherwise).
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            if message.subject.contains(".deadletter.") {
                continue;
            }
            let copy = async_nats::jetstream::message::PublishMessage::build()
                .message_id(uuid::Uuid::new_v4().to_string())
                .payload(message.payload.clone());
            bus.jetstream()
                .send_publish(message.subject.to_string(), copy)
                .await
                .expect("publish")
                .await
                .expect("ack");
            republished += 1;
        }
        republished
    }

    /// Publishes raw bytes on `<shop>.<tail>`, as a misbehaving producer would. Returns the
    /// dead-letter subject of the consumer of such events (`product` for `order.*`, `order` for
    /// `stock.*`, `cart` otherwise).
    pub async fn publish_raw(&self, tail: &str, payload: &'static [u8]) -> String {
        let subject = souk_shared::events::subject(&self.shop_name, tail);
        let consumer = if tail.starts_with("stock.") {
            "order"
        } else if tail == "order.confirmed" {
            "cart"
        } else {
            "product"
        };
        let jetstream = self.shop.bus().jetstream();
        jetstream
            .publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        souk_shared::events::dead_letter_subject(&self.shop_name, consumer)
    }

    /// The first message of the shop's stream on `subject`, waiting for it until `timeout`.
    pub async fn wait_for_subject(
        &self,
        subject: &str,
        timeout: Duration,
    ) -> async_nats::jetstream::message::StreamMessage {
        let stream_name = souk_shared::events::stream_name(&self.shop_name);
        testing::eventually(subject, timeout, || async {
            let stream = self
                .shop
                .bus()
                .jetstream()
                .get_stream(&stream_name)
                .await
                .ok()?;
            stream.get_last_raw_message_by_subject(subject).await.ok()
        })
        .await
    }

    /// Waits until every consumer has handled (and acknowledged) all it was given.
    pub async fn wait_for_consumers_idle(&self, timeout: Duration) {
        let stream_name = souk_shared::events::stream_name(&self.shop_name);
        testing::eventually("the consumers to catch up", timeout, || async {
            let stream = self
                .shop
                .bus()
                .jetstream()
                .get_stream(&stream_name)
                .await
                .ok()?;
            for name in CONSUMERS {
                let info = stream.consumer_info(*name).await.ok()?;
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
}

/// Signs `claims` as an ES256 JWT with `private_pem`, to present tokens a real shop would
/// never issue (expired, wrong issuer).
pub fn sign_es256(private_pem: &str, claims: &Value) -> String {
    use base64::Engine as _;
    use p256::ecdsa::{Signature, SigningKey, signature::Signer as _};
    use p256::pkcs8::DecodePrivateKey as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key = SigningKey::from_pkcs8_pem(private_pem).expect("PKCS#8 P-256 key");
    let signing_input = format!(
        "{}.{}",
        b64(br#"{"alg":"ES256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature.to_bytes()))
}
