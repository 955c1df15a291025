//! The authenticated bus (issue 13, item 4): against a `nats-server` of its own started with
//! the users and permissions of `souk_contract::bus`, a service cannot publish another
//! service's events (a forged `order.created` is refused and never reaches the stream), while
//! each service still publishes and consumes what it owns; an anonymous client is refused.
//! JetStream's API is allowed per stream and consumer: a service cannot delete, alter or pull
//! from another's consumer, nor delete, change or purge the stream.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream::consumer::pull;
use futures::StreamExt as _;
use souk_contract::bus::{self as bus_auth, Password};
use souk_shared::{
    bus::{Bus, NatsCredentials},
    config::{Secret, ShopName},
    events,
    testing::{self, eventually, unique_shop},
};

/// A nats-server process of this test's own, killed when dropped.
struct Server {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn password(service: &str) -> Secret<String> {
    Secret::new(format!("{service}-{}", uuid::Uuid::new_v4().simple()))
}

fn start_server(binary: &PathBuf, authorization: &str) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("souk-nats-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n{authorization}",
        dir.join("js").display().to_string()
    );
    let config_file = dir.join("nats.conf");
    std::fs::write(&config_file, config).expect("config");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts");
    Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        dir,
    }
}

async fn bus(server: &Server, shop: &ShopName, user: &str, password: &Secret<String>) -> Bus {
    let credentials = NatsCredentials {
        user: user.into(),
        password: password.clone(),
    };
    Bus::connect_as(&server.url, Some(&credentials), shop.clone(), user)
        .await
        .expect("connect")
}

/// A server with every user of `souk_contract::bus`, each with a password of its own.
struct AuthenticatedServer {
    server: Server,
    passwords: Vec<(&'static str, Secret<String>)>,
}

impl AuthenticatedServer {
    fn start(binary: &PathBuf, shop: &ShopName) -> Self {
        let passwords: Vec<(&str, Secret<String>)> = bus_auth::BUS_USERS
            .iter()
            .map(|user| user.name)
            .chain([bus_auth::ADMIN_USER])
            .map(|user| (user, password(user)))
            .collect();
        let authorization = bus_auth::server_authorization(shop.as_str(), |user| {
            let password = passwords
                .iter()
                .find(|(u, _)| *u == user)
                .map(|(_, p)| p.expose().as_str())
                .unwrap_or_default();
            Password::Literal(password)
        });
        let server = start_server(binary, &authorization);
        Self { server, passwords }
    }

    fn secret(&self, user: &str) -> Secret<String> {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.clone())
            .expect("password")
    }

    async fn bus(&self, shop: &ShopName, user: &str) -> Bus {
        bus(&self.server, shop, user, &self.secret(user)).await
    }
}

#[tokio::test]
async fn a_forged_event_is_refused_by_an_authenticated_bus() {
    let binary = testing::nats_server_binary();
    let shop = unique_shop();
    let authenticated = AuthenticatedServer::start(&binary, &shop);
    let server = &authenticated.server;
    let secret = |service: &str| authenticated.secret(service);

    // The order service publishes its own event (once the server is up).
    let order = bus(server, &shop, "order", &secret("order")).await;
    eventually("the stream", Duration::from_secs(20), || async {
        order.ensure_stream().await.ok()
    })
    .await;
    let subject = events::subject(&shop, "order.created");
    order
        .jetstream()
        .publish(subject.clone(), "genuine".into())
        .await
        .expect("publish")
        .await
        .expect("order may publish order.created");

    // The cart and product services cannot forge it.
    for forger in ["cart", "product"] {
        let forged = bus(server, &shop, forger, &secret(forger)).await;
        let ack = async {
            forged
                .jetstream()
                .publish(subject.clone(), "forged".into())
                .await?
                .await
                .map_err(anyhow::Error::from)
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), ack).await;
        assert!(
            !matches!(outcome, Ok(Ok(_))),
            "{forger} published a forged order.created"
        );
    }
    // Nor can an anonymous client connect at all.
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(&server.url)
        .await;
    assert!(anonymous.is_err(), "an anonymous client connected");

    // The product service consumes order events with its own user; it sees only the genuine one.
    let product = bus(server, &shop, "product", &secret("product")).await;
    let stream = product.ensure_stream().await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("product".into()),
            filter_subject: events::subject(&shop, "order.*"),
            ..Default::default()
        })
        .await
        .expect("product may create its consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut payloads = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
        message.ack().await.expect("product may ack");
    }
    assert_eq!(payloads, ["genuine"]);
    // The product service owns stock events.
    product
        .jetstream()
        .publish(events::subject(&shop, "stock.reserved"), "ok".into())
        .await
        .expect("publish")
        .await
        .expect("product may publish stock.reserved");
}

/// Whether a JetStream API call was refused (an error, or no answer: the server drops a
/// request its user may not publish).
async fn refused<T, E>(call: impl std::future::IntoFuture<Output = Result<T, E>>) -> bool {
    !matches!(
        tokio::time::timeout(Duration::from_secs(10), call.into_future()).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn a_service_cannot_delete_or_alter_another_services_consumer_or_the_stream() {
    let binary = testing::nats_server_binary();
    let shop = unique_shop();
    let server = AuthenticatedServer::start(&binary, &shop);
    let stream_name = events::stream_name(&shop);

    // The product service sets up its consumer as `souk_shared::consumer` does.
    let product = server.bus(&shop, "product").await;
    let stream = eventually("the stream", Duration::from_secs(20), || async {
        product.ensure_stream().await.ok()
    })
    .await;
    let filters = vec![
        events::subject(&shop, "order.created"),
        events::subject(&shop, "order.cancelled"),
    ];
    stream
        .create_consumer(pull::Config {
            durable_name: Some("product".into()),
            filter_subjects: filters.clone(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("product may create its consumer");

    // The cart service may use the stream and its own consumer ...
    let cart = server.bus(&shop, "cart").await;
    let cart_stream = cart
        .ensure_stream()
        .await
        .expect("cart may look at the stream");
    cart_stream
        .create_consumer(pull::Config {
            durable_name: Some("cart".into()),
            filter_subjects: vec![events::subject(&shop, "order.confirmed")],
            ..Default::default()
        })
        .await
        .expect("cart may create its consumer");

    // ... but not the product service's consumer, nor change the stream.
    let js = cart.jetstream();
    let (deleted, altered, altered_one_filter, looked_at, stream_deleted, stream_changed, purged) = tokio::join!(
        refused(js.delete_consumer_from_stream("product", &stream_name)),
        refused(cart_stream.create_consumer(pull::Config {
            durable_name: Some("product".into()),
            filter_subjects: vec![events::subject(&shop, ">")],
            ..Default::default()
        })),
        refused(cart_stream.create_consumer(pull::Config {
            durable_name: Some("product".into()),
            filter_subject: events::subject(&shop, "order.created"),
            ..Default::default()
        })),
        refused(cart_stream.consumer_info("product")),
        refused(js.delete_stream(&stream_name)),
        refused(js.update_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{shop}.>")],
            max_messages: 1,
            ..Default::default()
        })),
        refused(cart_stream.purge()),
    );
    assert!(deleted, "cart deleted the product service's consumer");
    assert!(altered, "cart altered the product service's consumer");
    assert!(
        altered_one_filter,
        "cart altered the product service's consumer (one filter)"
    );
    assert!(looked_at, "cart read the product service's consumer");
    assert!(stream_deleted, "cart deleted the stream");
    assert!(stream_changed, "cart changed the stream");
    assert!(purged, "cart purged the stream");

    // The product service's consumer and the stream are as they were.
    let mut stream = product.ensure_stream().await.expect("stream");
    let info = stream
        .consumer_info("product")
        .await
        .expect("the consumer is still there");
    assert_eq!(info.config.filter_subjects, filters);
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.max_messages, -1, "the stream was not changed");
}

/// A handler that passes on the ids of the events it handles.
struct Recorder(tokio::sync::mpsc::UnboundedSender<uuid::Uuid>);

impl souk_shared::consumer::Handler for Recorder {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut sqlx::PgConnection,
        event: &'a souk_shared::events::Envelope,
    ) -> souk_shared::consumer::HandleResult<'a> {
        let _ = self.0.send(event.id);
        Box::pin(async { Ok(()) })
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../services/shared/migrations");

/// The code the services run, with their own users: the order service's relayer publishes an
/// outbox row, the product service's consumer (`souk_shared::consumer`) creates its durable
/// consumer, pulls, acks, and dead-letters a malformed message. Nothing needs more than the
/// permissions of `souk_contract::bus`.
#[tokio::test]
async fn the_relayer_and_a_consumer_work_with_their_services_users() {
    use souk_shared::{
        Shutdown,
        consumer::{self, ConsumerConfig, ConsumerMetrics},
        events::Envelope,
        outbox,
        testing::TestDatabase,
    };

    let binary = testing::nats_server_binary();
    let shop = unique_shop();
    let server = AuthenticatedServer::start(&binary, &shop);
    let db = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect(db.url().expose())
        .await
        .expect("connect");
    MIGRATOR.run(&pool).await.expect("migrate");
    let shutdown = Shutdown::new();

    let event = souk_protos::v1::OrderCreated {
        order_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let mut tx = pool.begin().await.expect("begin");
    let id = outbox::enqueue(&mut tx, &shop, &event)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");

    let relayer = souk_relayer::Relayer::new(
        "order",
        pool.clone(),
        server.bus(&shop, "order").await,
        souk_relayer::Settings::default(),
        souk_relayer::Metrics::default(),
    );
    tokio::spawn(relayer.run(shutdown.clone()));

    let (handled, mut ids) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(consumer::run(
        server.bus(&shop, "product").await,
        pool.clone(),
        ConsumerConfig {
            name: "product",
            events: &["order.created", "order.cancelled"],
            max_deliver: 1,
        },
        std::sync::Arc::new(Recorder(handled)),
        ConsumerMetrics::default(),
        shutdown.clone(),
    ));
    let received = tokio::time::timeout(Duration::from_secs(30), ids.recv())
        .await
        .expect("the product service's consumer receives the relayed event in time");
    assert_eq!(received, Some(id));

    // A malformed order.created (from the order user, who may publish it) is dead-lettered by
    // the product service's consumer, with its own user.
    let order = server.bus(&shop, "order").await;
    order
        .jetstream()
        .publish(events::subject(&shop, "order.created"), "garbage".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let admin = server.bus(&shop, bus_auth::ADMIN_USER).await;
    let dead_letters = events::dead_letter_subject(&shop, "product");
    let stream = admin.ensure_stream().await.expect("stream");
    let dead_letter = eventually("the dead letter", Duration::from_secs(30), || {
        let mut stream = stream.clone();
        let dead_letters = dead_letters.clone();
        async move {
            let info = stream.info().await.ok()?;
            let state = &info.state;
            // Three messages: the relayed event, the garbage, its dead letter.
            (state.messages >= 3).then_some(())?;
            let message = stream
                .get_last_raw_message_by_subject(&dead_letters)
                .await
                .ok()?;
            Some(message.payload)
        }
    })
    .await;
    assert_eq!(&dead_letter[..], b"garbage");
    assert!(
        Envelope::decode(&dead_letter).is_err(),
        "the dead letter is the message as it came"
    );
    shutdown.trigger();
}
