//! The authenticated bus (issue 13, item 4): against a `nats-server` of its own started with
//! the users and permissions of `souk_shared::bus_auth`, a service cannot publish another
//! service's events (a forged `order.created` is refused and never reaches the stream), while
//! each service still publishes and consumes what it owns; an anonymous client is refused.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream::consumer::pull;
use futures::StreamExt as _;
use souk_shared::{
    bus::Bus,
    bus_auth::{self, NatsCredentials},
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

#[tokio::test]
async fn a_forged_event_is_refused_by_an_authenticated_bus() {
    let binary = testing::nats_server_binary();
    let shop = unique_shop();
    let passwords: Vec<(&str, Secret<String>)> = bus_auth::BUS_USERS
        .iter()
        .map(|user| (user.name, password(user.name)))
        .collect();
    let admin = password("admin");
    let authorization = bus_auth::server_authorization(
        &shop,
        &passwords
            .iter()
            .map(|(service, password)| (*service, password))
            .collect::<Vec<_>>(),
        &admin,
    );
    let server = start_server(&binary, &authorization);
    let secret = |service: &str| {
        passwords
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, p)| p.clone())
            .expect("password")
    };

    // The order service publishes its own event (once the server is up).
    let order = bus(&server, &shop, "order", &secret("order")).await;
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
        let forged = bus(&server, &shop, forger, &secret(forger)).await;
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
    let product = bus(&server, &shop, "product", &secret("product")).await;
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
