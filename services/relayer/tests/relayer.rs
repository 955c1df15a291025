//! The relayer against a real PostgreSQL outbox and a real JetStream stream.

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use prost::Message as _;
use souk_protos::v1::StockReserved;
use souk_relayer::{Metrics, Relayer, Settings, Wake};
use souk_shared::{
    Shutdown,
    bus::Bus,
    config::ShopName,
    events::{self, Envelope},
    outbox,
    testing::{
        TcpProxy, TestDatabase, delete_stream, eventually, nats_addr, nats_url, unique_shop,
    },
};
use sqlx::PgPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../shared/migrations");

struct Fixture {
    pool: PgPool,
    shop: ShopName,
    shutdown: Shutdown,
    _db: TestDatabase,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.trigger();
        delete_stream(&self.shop);
    }
}

async fn fixture() -> Fixture {
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    MIGRATOR.run(&pool).await.expect("migrate");
    Fixture {
        pool,
        shop: unique_shop(),
        shutdown: Shutdown::new(),
        _db: db,
    }
}

impl Fixture {
    async fn bus(&self, url: &str) -> Bus {
        Bus::connect(url, self.shop.clone(), "test")
            .await
            .expect("bus")
    }

    async fn enqueue(&self, count: usize) -> Vec<uuid::Uuid> {
        let mut ids = Vec::new();
        let mut tx = self.pool.begin().await.expect("begin");
        for n in 0..count {
            let event = StockReserved {
                order_id: format!("order-{n}"),
            };
            ids.push(
                outbox::enqueue(&mut tx, &self.shop, &event)
                    .await
                    .expect("enqueue"),
            );
        }
        tx.commit().await.expect("commit");
        ids
    }

    fn start(&self, bus: Bus, metrics: Metrics) {
        let relayer = Relayer::new("test", self.pool.clone(), bus, Settings::default(), metrics);
        tokio::spawn(relayer.run(self.shutdown.clone()));
    }

    async fn backlog(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("select count(*) from outbox_events")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn wait_until_drained(&self) {
        eventually("the outbox to drain", Duration::from_secs(20), || async {
            (self.backlog().await == 0).then_some(())
        })
        .await;
    }

    /// The event ids in the stream, in stream order.
    async fn stream_ids(&self, bus: &Bus) -> Vec<uuid::Uuid> {
        let stream = bus
            .jetstream()
            .get_stream(events::stream_name(&self.shop))
            .await
            .expect("stream");
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut info = stream.clone();
        let total = info.info().await.expect("info").state.messages;
        let mut messages = consumer
            .messages()
            .await
            .expect("messages")
            .take(usize::try_from(total).expect("count"));
        let mut ids = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.expect("message");
            ids.push(Envelope::decode(&message.payload).expect("envelope").id);
        }
        ids
    }
}

#[tokio::test]
async fn relays_every_row_in_commit_order_and_deletes_it() {
    let fixture = fixture().await;
    let ids = fixture.enqueue(600).await;
    let bus = fixture.bus(&nats_url()).await;
    let metrics = Metrics::default();
    fixture.start(bus.clone(), metrics);
    fixture.wait_until_drained().await;
    assert_eq!(fixture.stream_ids(&bus).await, ids);
}

#[tokio::test]
async fn rows_published_again_after_a_crash_are_dropped_by_the_stream() {
    let fixture = fixture().await;
    let ids = fixture.enqueue(5).await;
    let bus = fixture.bus(&nats_url()).await;
    bus.ensure_stream().await.expect("stream");
    // A relayer that died after publishing and before deleting: the rows went out, and stay.
    let rows: Vec<(uuid::Uuid, String, Vec<u8>)> =
        sqlx::query_as("select id, subject, payload from outbox_events order by seq")
            .fetch_all(&fixture.pool)
            .await
            .expect("rows");
    for (id, subject, payload) in rows {
        let message = jetstream::message::PublishMessage::build()
            .message_id(id.to_string())
            .payload(payload.into());
        bus.jetstream()
            .send_publish(subject, message)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    fixture.start(bus.clone(), Metrics::default());
    fixture.wait_until_drained().await;
    assert_eq!(fixture.stream_ids(&bus).await, ids, "each event once");
}

#[tokio::test]
async fn one_relayer_leads_and_a_standby_takes_over_when_it_stops() {
    let fixture = fixture().await;
    let bus = fixture.bus(&nats_url()).await;
    let (first, second) = (Metrics::default(), Metrics::default());
    let first_shutdown = Shutdown::new();
    let relayer = Relayer::new(
        "first",
        fixture.pool.clone(),
        bus.clone(),
        Settings::default(),
        first.clone(),
    );
    tokio::spawn(relayer.run(first_shutdown.clone()));
    let leader_of = |metrics: &Metrics| {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text.lines().any(|line| line == "outbox_leader 1")
    };
    eventually(
        "the first relayer to lead",
        Duration::from_secs(10),
        || async { leader_of(&first).then_some(()) },
    )
    .await;
    fixture.start(bus.clone(), second.clone());
    fixture.enqueue(3).await;
    fixture.wait_until_drained().await;
    assert!(
        !leader_of(&second),
        "the standby does not relay while the leader runs"
    );

    first_shutdown.trigger();
    eventually(
        "the standby to take over",
        Duration::from_secs(10),
        || async { leader_of(&second).then_some(()) },
    )
    .await;
    let later = fixture.enqueue(2).await;
    fixture.wait_until_drained().await;
    let ids = fixture.stream_ids(&bus).await;
    assert_eq!(ids.len(), 5);
    assert_eq!(&ids[3..], &later[..]);
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_nats_is_down_and_leave_when_it_is_back() {
    let fixture = fixture().await;
    let proxy = TcpProxy::start(nats_addr()).await;
    let bus = fixture.bus(&format!("nats://{}", proxy.addr())).await;
    bus.ensure_stream().await.expect("stream");
    let metrics = Metrics::default();
    fixture.start(bus.clone(), metrics.clone());
    proxy.cut();
    let ids = fixture.enqueue(10).await;
    // The relayer tries, fails, and keeps the rows.
    eventually("a failed publish", Duration::from_secs(20), || async {
        (failures(&metrics) > 0).then_some(())
    })
    .await;
    assert_eq!(
        fixture.backlog().await,
        10,
        "nothing is lost while NATS is down"
    );

    proxy.restore().await;
    fixture.wait_until_drained().await;
    let direct = fixture.bus(&nats_url()).await;
    assert_eq!(fixture.stream_ids(&direct).await, ids);
}

/// The relayer's failed publish or delete attempts so far.
fn failures(metrics: &Metrics) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    text.lines()
        .find_map(|line| line.strip_prefix("outbox_publish_failures_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Small batches, each read while the one before is published, and NATS lost in the middle of
/// the backlog: whatever was sent but not acknowledged goes out again, the batch read ahead only
/// after it, and the stream holds every event once, in commit order.
#[tokio::test]
async fn a_backlog_cut_off_midway_is_published_again_in_order_once() {
    let fixture = fixture().await;
    let proxy = TcpProxy::start(nats_addr()).await;
    let bus = fixture.bus(&format!("nats://{}", proxy.addr())).await;
    bus.ensure_stream().await.expect("stream");
    let mut ids = fixture.enqueue(3000).await;
    let metrics = Metrics::default();
    let settings = Settings {
        batch_size: 16,
        ..Settings::default()
    };
    let relayer = Relayer::new(
        "test",
        fixture.pool.clone(),
        bus.clone(),
        settings,
        metrics.clone(),
    );
    tokio::spawn(relayer.run(fixture.shutdown.clone()));
    eventually(
        "the backlog to start leaving",
        Duration::from_secs(20),
        || async { (fixture.backlog().await < 3000).then_some(()) },
    )
    .await;
    proxy.cut();
    // However far the relayer got, these cannot leave while NATS is away.
    ids.extend(fixture.enqueue(10).await);
    eventually("a failed publish", Duration::from_secs(20), || async {
        (failures(&metrics) > 0).then_some(())
    })
    .await;
    assert!(
        fixture.backlog().await >= 10,
        "nothing is lost while NATS is down"
    );
    proxy.restore().await;
    fixture.wait_until_drained().await;
    let direct = fixture.bus(&nats_url()).await;
    assert_eq!(fixture.stream_ids(&direct).await, ids);
}

/// Starts a relayer that would not look again for an hour unless woken by `wake`, lets it relay
/// a first event (so it is idle in its loop), then commits a second: only a wake-up delivers it.
async fn a_commit_wakes_an_idle_relayer(wake: Wake) {
    let fixture = fixture().await;
    let bus = fixture.bus(&nats_url()).await;
    let settings = Settings {
        poll_interval: Duration::from_secs(3600),
        wake,
        ..Settings::default()
    };
    if wake == Wake::Notify {
        // The service's side of a sidecar relayer, as `souk serve` runs it.
        tokio::spawn(outbox::forward_hints(
            fixture.pool.clone(),
            fixture.shutdown.clone(),
        ));
    }
    let relayer = Relayer::new(
        "test",
        fixture.pool.clone(),
        bus.clone(),
        settings,
        Metrics::default(),
    );
    tokio::spawn(relayer.run(fixture.shutdown.clone()));
    let mut ids = fixture.enqueue(1).await;
    fixture.wait_until_drained().await;
    ids.extend(fixture.enqueue(1).await);
    fixture.wait_until_drained().await;
    assert_eq!(fixture.stream_ids(&bus).await, ids);
}

#[tokio::test]
async fn a_relayer_beside_its_service_is_woken_by_the_commit_not_its_poll() {
    a_commit_wakes_an_idle_relayer(Wake::InProcess).await;
}

#[tokio::test]
async fn a_sidecar_relayer_is_woken_by_notify_from_the_service_process() {
    a_commit_wakes_an_idle_relayer(Wake::Notify).await;
}

#[test]
fn envelope_payloads_are_the_events() {
    let event = StockReserved {
        order_id: "o".into(),
    };
    let envelope = Envelope::new(&event);
    assert_eq!(
        StockReserved::decode(envelope.payload).expect("decode"),
        event
    );
}
