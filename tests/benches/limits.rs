//! Every speed figure of Souk beside its limit, both measured in this run, A and B alternating:
//!
//! - relay: commit-to-delivery p50/p99 at idle and under load, for a relayer that only polls,
//!   one woken in process (`souk up`) and a sidecar woken by NOTIFY; relay throughput vs raw
//!   acknowledged JetStream publishing from this process; the business commit rate with each
//!   wake-up vs none (and with a NOTIFY inside every transaction, the design refused);
//! - catalog: `GET /api/products/{id}` and the first listing page through the gateway vs pgbench
//!   running the product service's own SQL (simple protocol, same connections and duration);
//! - cache staleness: after an admin's write, until every gateway replica serves it, and whether
//!   the writer's replica serves it at once;
//! - checkout: confirmed orders/s with 16 customers, sequential POST-to-CONFIRMED latency, and a
//!   per-hop breakdown of a checkout taken from the saga's own events;
//! - memory: the shop process's resident memory idle and after the load; then each service and
//!   relayer as a process of its own (`souk serve`, `souk relay`, built by this bench with its
//!   own profile), idle and at its peak under load, beside the operator's container request and
//!   limit.
//!
//! `SQLX_OFFLINE=true cargo bench -p souk-e2e --bench limits`; `SOUK_BENCH_SECONDS` sets the
//! length of each timed run (default 3), `SOUK_BENCH_ONLY` the sections to run (comma-separated:
//! relay, or relay-latency, relay-throughput, relay-commits; catalog, staleness, checkout,
//! memory; default all). Needs the local PostgreSQL, NATS,
//! and `pgbench` (Debian: postgresql-contrib). Figures only: nothing here passes or fails on
//! speed.

#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark prints figures computed from counts"
)]

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use reqwest::StatusCode;
use souk_contract::{Service, command, defaults, env as settings, file};
use souk_e2e::{TestShop, json};
use souk_protos::v1::{CatalogChanged, OrderConfirmed, OrderCreated, StockReserved};
use souk_relayer::{Metrics, Relayer, Settings, Wake};
use souk_shared::{
    Shutdown,
    bus::Bus,
    config::ShopName,
    events::{Envelope, Event},
    outbox,
    testing::{TestDatabase, delete_stream, drop_databases, nats_url, server_url, unique_shop},
};
use sqlx::{PgPool, postgres::PgPoolOptions};

static OUTBOX_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../services/shared/migrations");

/// A/B rounds of each comparison.
const ROUNDS: usize = 2;

fn seconds() -> Duration {
    Duration::from_secs(
        std::env::var("SOUK_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line: a figure, its limit, their ratio, and the goal.
fn compare(name: &str, ours: f64, limit: f64, unit: &str, goal: f64) {
    let ratio = if limit > 0.0 { ours / limit } else { 0.0 };
    let verdict = if ratio >= goal {
        "reached"
    } else {
        "NOT reached"
    };
    println!(
        "  {name:<44} {ours:>10.1} {unit} vs limit {limit:>10.1} {unit} = {ratio:>5.2}x  (goal >= {goal}x: {verdict})"
    );
}

fn latencies(name: &str, mut samples: Vec<Duration>, goal_p99_ms: Option<f64>) {
    samples.sort_unstable();
    let p99 = percentile(&samples, 0.99);
    let goal = goal_p99_ms.map_or(String::new(), |goal| {
        let verdict = if ms(p99) <= goal {
            "reached"
        } else {
            "NOT reached"
        };
        format!("  (goal p99 <= {goal} ms: {verdict})")
    });
    println!(
        "  {name:<44} n={:<6} p50={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms{goal}",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(p99),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn status_kb(field: &str) -> u64 {
    status_field("/proc/self/status", field)
}

/// A `kB` figure of a `/proc/.../status` file (0 when unreadable).
fn status_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    // How busy the machine was when the run began: tails and ratios are noisy on a shared one.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    format!("{cores} cores, {cpu}, load average {load}")
}

// ---------------------------------------------------------------------------------------------
// Relay

/// An outbox of its own, its relayer, and a subscriber that stamps each delivery.
struct RelayRig {
    pool: PgPool,
    shop: ShopName,
    bus: Bus,
    shutdown: Shutdown,
    delivered: tokio::sync::mpsc::UnboundedReceiver<(uuid::Uuid, Instant)>,
    _db: TestDatabase,
}

impl Drop for RelayRig {
    fn drop(&mut self) {
        self.shutdown.trigger();
        delete_stream(&self.shop);
    }
}

impl RelayRig {
    /// With `watch`, a subscriber stamps every delivery (`deliveries`).
    async fn new(wake: Wake, start_relayer: bool, watch: bool) -> Self {
        let db = TestDatabase::create().await;
        let pool = PgPoolOptions::new()
            .max_connections(24)
            .connect(&db.url)
            .await
            .expect("connect");
        OUTBOX_MIGRATOR.run(&pool).await.expect("migrate");
        let shop = unique_shop();
        let bus = Bus::connect(&nats_url(), shop.clone(), "bench")
            .await
            .expect("bus");
        bus.ensure_stream().await.expect("stream");
        let (tx, delivered) = tokio::sync::mpsc::unbounded_channel();
        if watch {
            let mut subscriber = bus
                .client()
                .subscribe(format!("{shop}.>"))
                .await
                .expect("subscribe");
            bus.client().flush().await.expect("flush");
            tokio::spawn(async move {
                while let Some(message) = subscriber.next().await {
                    let at = Instant::now();
                    let id = Envelope::decode(&message.payload).map_or(uuid::Uuid::nil(), |e| e.id);
                    if tx.send((id, at)).is_err() {
                        return;
                    }
                }
            });
        }
        let rig = Self {
            pool,
            shop,
            bus,
            shutdown: Shutdown::new(),
            delivered,
            _db: db,
        };
        if start_relayer {
            rig.start_relayer(wake);
        }
        rig
    }

    fn start_relayer(&self, wake: Wake) {
        if wake == Wake::Notify {
            tokio::spawn(outbox::forward_hints(
                self.pool.clone(),
                self.shutdown.clone(),
            ));
        }
        let settings = Settings {
            wake,
            ..Settings::default()
        };
        let relayer = Relayer::new(
            "bench",
            self.pool.clone(),
            self.bus.clone(),
            settings,
            Metrics::default(),
        );
        tokio::spawn(relayer.run(self.shutdown.clone()));
    }

    /// Commits one event in a transaction of its own (with a NOTIFY inside when asked).
    async fn commit_one(&self, notify_inside: bool) -> (uuid::Uuid, Instant) {
        let mut tx = self.pool.begin().await.expect("begin");
        let event = StockReserved {
            order_id: uuid::Uuid::new_v4().to_string(),
        };
        let id = outbox::enqueue(&mut tx, &self.shop, &event)
            .await
            .expect("enqueue");
        if notify_inside {
            sqlx::query("select pg_notify($1, '')")
                .bind(outbox::NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await
                .expect("notify");
        }
        tx.commit().await.expect("commit");
        (id, Instant::now())
    }

    /// Waits for `count` more deliveries; returns when each event id first arrived.
    async fn deliveries(&mut self, count: usize) -> HashMap<uuid::Uuid, Instant> {
        let mut seen = HashMap::with_capacity(count);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for received in 0..count {
            match tokio::time::timeout_at(deadline, self.delivered.recv()).await {
                Ok(Some((id, at))) => {
                    seen.entry(id).or_insert(at);
                }
                _ => panic!("only {received} of {count} events delivered"),
            }
        }
        seen
    }
}

/// Commit-to-delivery, one event at a time with pauses (idle), then 8 writers at once (load).
async fn relay_latency(wake: Wake) -> (Vec<Duration>, Vec<Duration>) {
    let mut rig = RelayRig::new(wake, true, true).await;
    // Let the relayer take its lock and settle into its idle wait.
    let (first, _) = rig.commit_one(false).await;
    rig.deliveries(1).await.remove(&first);
    let mut idle = Vec::new();
    for n in 0..150u64 {
        // Pauses of 3 to 17 ms, so the commits fall anywhere within a poll interval.
        tokio::time::sleep(Duration::from_millis(3 + (n * 7) % 15)).await;
        let (id, committed) = rig.commit_one(false).await;
        let delivered = rig.deliveries(1).await;
        idle.push(delivered[&id].saturating_duration_since(committed));
    }
    let commits = Arc::new(Mutex::new(HashMap::new()));
    let until = Instant::now() + seconds();
    let rig = Arc::new(tokio::sync::Mutex::new(rig));
    let pool_rig = rig.lock().await;
    let (pool, shop) = (pool_rig.pool.clone(), pool_rig.shop.clone());
    drop(pool_rig);
    let writers = (0..8).map(|_| {
        let (pool, shop, commits) = (pool.clone(), shop.clone(), commits.clone());
        async move {
            while Instant::now() < until {
                let mut tx = pool.begin().await.expect("begin");
                let event = StockReserved {
                    order_id: String::new(),
                };
                let id = outbox::enqueue(&mut tx, &shop, &event)
                    .await
                    .expect("enqueue");
                tx.commit().await.expect("commit");
                commits.lock().expect("commits").insert(id, Instant::now());
                // A busy shop, not a flood: about 8 x 500 events/s.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    futures::future::join_all(writers).await;
    let commits = std::mem::take(&mut *commits.lock().expect("commits"));
    let delivered = rig.lock().await.deliveries(commits.len()).await;
    let loaded = commits
        .iter()
        .filter_map(|(id, at)| delivered.get(id).map(|d| d.saturating_duration_since(*at)))
        .collect();
    (idle, loaded)
}

/// Events/s a running relayer moves from a full outbox into the stream: from the commit that
/// fills it (and its hint) until the stream has acknowledged every event.
async fn relay_throughput(events: i64) -> f64 {
    let rig = RelayRig::new(Wake::InProcess, true, false).await;
    let mut stream = rig
        .bus
        .jetstream()
        .get_stream(souk_shared::events::stream_name(&rig.shop))
        .await
        .expect("stream");
    let mut in_stream = async || stream.info().await.expect("stream info").state.messages;
    // The relayer leads and is idle once it has relayed a first event.
    rig.commit_one(false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while in_stream().await < 1 {
        assert!(Instant::now() < deadline, "the relayer never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let subject = souk_shared::events::subject(&rig.shop, StockReserved::TYPE);
    let payload = Envelope::new(&StockReserved {
        order_id: String::new(),
    })
    .encode();
    sqlx::query(
        "insert into outbox_events (id, subject, payload)
         select gen_random_uuid(), $1, $2 from generate_series(1, $3)",
    )
    .bind(&subject)
    .bind(&payload)
    .bind(events)
    .execute(&rig.pool)
    .await
    .expect("fill the outbox");
    let started = Instant::now();
    outbox::hint();
    let all = u64::try_from(events).expect("events") + 1;
    while in_stream().await < all {
        assert!(
            Instant::now() < deadline,
            "the outbox was not drained in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// Messages/s this process publishes to JetStream, acknowledged, pipelined as the relayer does
/// (a batch of the relayer's size sent, then its acknowledgements awaited).
async fn raw_publish(events: usize) -> f64 {
    let shop = unique_shop();
    let bus = Bus::connect(&nats_url(), shop.clone(), "bench")
        .await
        .expect("bus");
    bus.ensure_stream().await.expect("stream");
    let subject = souk_shared::events::subject(&shop, StockReserved::TYPE);
    let payload = Envelope::new(&StockReserved {
        order_id: String::new(),
    })
    .encode();
    let batch = usize::try_from(Settings::default().batch_size).expect("batch size");
    let started = Instant::now();
    let mut sent = 0;
    while sent < events {
        let mut acks = Vec::with_capacity(batch);
        for _ in 0..batch.min(events - sent) {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .message_id(uuid::Uuid::new_v4().to_string())
                .payload(payload.clone().into());
            acks.push(
                bus.jetstream()
                    .send_publish(subject.clone(), message)
                    .await
                    .expect("publish"),
            );
            sent += 1;
        }
        for ack in
            futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
                .await
        {
            ack.expect("ack");
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    delete_stream(&shop);
    rate
}

/// Business transactions/s (each writes one outbox row) from 16 connections, with the relayer
/// woken by `wake`, or with a NOTIFY inside every transaction.
async fn commit_rate(wake: Wake, notify_inside: bool) -> f64 {
    let rig = Arc::new(RelayRig::new(wake, true, true).await);
    let until = Instant::now() + seconds();
    let started = Instant::now();
    let writers = (0..16).map(|_| {
        let rig = rig.clone();
        async move {
            let mut count = 0u64;
            while Instant::now() < until {
                rig.commit_one(notify_inside).await;
                count += 1;
            }
            count
        }
    });
    let total: u64 = futures::future::join_all(writers).await.into_iter().sum();
    total as f64 / started.elapsed().as_secs_f64()
}

async fn relay() {
    println!("relay (commit to delivery on a core NATS subscriber; relayer poll interval 20 ms)");
    for (name, wake, goal) in [
        ("poll only (before)", Wake::Never, None),
        ("woken in process (souk up)", Wake::InProcess, Some(5.0)),
        ("woken by NOTIFY (sidecar)", Wake::Notify, Some(5.0)),
    ] {
        if !section("relay-latency") {
            break;
        }
        let (idle, loaded) = relay_latency(wake).await;
        latencies(&format!("{name}, idle"), idle, goal);
        latencies(&format!("{name}, 8 writers"), loaded, goal);
    }
    if section("relay-throughput") {
        let events = 50_000;
        let (mut relayed, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            relayed.push(relay_throughput(events).await);
            raw.push(raw_publish(events as usize).await);
        }
        compare(
            "relay throughput vs raw JetStream publish",
            mean(&relayed),
            mean(&raw),
            "ev/s",
            0.9,
        );
    }
    if !section("relay-commits") {
        return;
    }
    let (mut off, mut in_process, mut notify, mut inside) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        off.push(commit_rate(Wake::Never, false).await);
        in_process.push(commit_rate(Wake::InProcess, false).await);
        off.push(commit_rate(Wake::Never, false).await);
        notify.push(commit_rate(Wake::Notify, false).await);
        inside.push(commit_rate(Wake::Notify, true).await);
    }
    let off = mean(&off);
    compare(
        "commits/s, woken in process vs no wake-up",
        mean(&in_process),
        off,
        "tx/s",
        0.95,
    );
    compare(
        "commits/s, NOTIFY after commit vs none",
        mean(&notify),
        off,
        "tx/s",
        0.95,
    );
    compare(
        "commits/s, NOTIFY in every tx vs none (refused)",
        mean(&inside),
        off,
        "tx/s",
        0.95,
    );
}

// ---------------------------------------------------------------------------------------------
// Catalog

/// Requests/s (and latencies) of `GET url` from `connections` clients for the run's duration.
async fn http_load(url: &str, connections: usize) -> (f64, Vec<Duration>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let until = Instant::now() + seconds();
    let started = Instant::now();
    let tasks = (0..connections).map(|_| {
        let (client, url) = (client.clone(), url.to_owned());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < until {
                let at = Instant::now();
                let response = client.get(&url).send().await.expect("GET");
                assert_eq!(response.status(), StatusCode::OK);
                response.bytes().await.expect("body");
                samples.push(at.elapsed());
            }
            samples
        })
    });
    let samples: Vec<Duration> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|s| s.expect("reader"))
        .collect();
    (
        samples.len() as f64 / started.elapsed().as_secs_f64(),
        samples,
    )
}

/// Transactions/s of pgbench running `script` (simple protocol) with `connections` clients.
async fn pgbench(database_url: &str, script: &str, connections: usize, defines: &[String]) -> f64 {
    let dir = std::env::temp_dir().join(format!("souk-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("script.sql");
    std::fs::write(&file, script).expect("script");
    let mut command = std::process::Command::new("pgbench");
    command
        .args(["-n", "-M", "simple", "-j", "2"])
        .args(["-c", &connections.to_string()])
        .args(["-T", &seconds().as_secs().to_string()])
        .args(defines.iter().flat_map(|d| ["-D", d.as_str()]))
        .arg("-f")
        .arg(&file)
        .arg(database_url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("pgbench task")
        .expect("pgbench (postgresql-contrib) runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("pgbench prints tps")
}

/// The product service's SQL (services/product/src/store.rs), as pgbench runs it.
const PRODUCT_COLUMNS: &str =
    "id, name, description, price_cents, currency, stock, category_id, created_at, updated_at";

async fn catalog(shop: &TestShop, product: &str) {
    let database = shop.database_url("product");
    println!(
        "catalog (32 connections, {} s per run)",
        seconds().as_secs()
    );
    let by_id = format!("select {PRODUCT_COLUMNS} from products where id = '{product}';\n");
    let first_page = format!(
        "begin;\nset transaction isolation level repeatable read, read only;\n\
         select count(*) as total from products;\n\
         select {PRODUCT_COLUMNS} from products order by created_at desc, id desc limit 20 offset 0;\n\
         commit;\n"
    );
    for (name, path, script) in [
        (
            "GET /api/products/{id}",
            format!("/api/products/{product}"),
            by_id,
        ),
        (
            "GET /api/products (first page)",
            "/api/products".to_owned(),
            first_page,
        ),
    ] {
        let (mut ours, mut limit, mut samples) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (rate, round) = http_load(&shop.url(&path), 32).await;
            ours.push(rate);
            samples.extend(round);
            limit.push(pgbench(&database, &script, 32, &[]).await);
        }
        compare(name, mean(&ours), mean(&limit), "/s", 1.0);
        latencies(&format!("{name}, latency"), samples, None);
    }
}

// ---------------------------------------------------------------------------------------------
// Staleness

async fn staleness(shop: &mut TestShop, admin: &str, product: &str) {
    let local = shop.local();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        replicas.push(format!("http://{}", listener.local_addr().expect("addr")));
        local.shop.start_gateway_replica(listener);
    }
    let client = reqwest::Client::new();
    let path = format!("/api/products/{product}");
    let name_at = |base: String| {
        let (client, path) = (client.clone(), path.clone());
        async move {
            let body: serde_json::Value = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .expect("json");
            body["name"].as_str().unwrap_or_default().to_owned()
        }
    };
    let mut samples = Vec::new();
    let mut own_write_misses = 0;
    let writes = 60;
    for n in 0..writes {
        // Every replica holds the current name in memory first.
        for base in &replicas {
            name_at(base.clone()).await;
            name_at(base.clone()).await;
        }
        let name = format!("Bench {n}");
        let body = json!({"name": name, "description": "", "price_cents": 100, "stock": 1_000_000});
        shop.put(&path, Some(admin), &body)
            .await
            .expect(StatusCode::OK);
        let written = Instant::now();
        if name_at(shop.url("")).await != name {
            own_write_misses += 1;
        }
        let waits = replicas.iter().map(|base| {
            let name = name.clone();
            let name_at = &name_at;
            async move {
                let deadline = written + Duration::from_secs(10);
                while name_at(base.clone()).await != name {
                    assert!(Instant::now() < deadline, "a replica never saw the write");
                }
                written.elapsed()
            }
        });
        let seen = futures::future::join_all(waits).await;
        samples.push(seen.into_iter().max().unwrap_or_default());
    }
    println!("cache staleness (2 more gateway replicas; {writes} admin writes)");
    latencies("until every replica serves the write", samples, Some(50.0));
    println!(
        "  {:<44} {own_write_misses} of {writes} reads right after the write were stale (goal 0)",
        "the writer's replica"
    );
}

// ---------------------------------------------------------------------------------------------
// Checkout

/// The checkout's limit: pgbench running `saga.sql` (the saga's own SQL, one transaction a saga)
/// on a scratch database holding every service's tables, each service in a schema of its own.
struct SagaLimit {
    db: TestDatabase,
    product: uuid::Uuid,
}

impl SagaLimit {
    async fn new() -> Self {
        let db = TestDatabase::create().await;
        let pool = PgPool::connect(&db.url).await.expect("connect");
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../services");
        for service in ["order", "product", "payment", "cart"] {
            let mut files: Vec<_> = std::fs::read_dir(format!("{root}/{service}/migrations"))
                .expect("migrations")
                .map(|entry| entry.expect("entry").path())
                .collect();
            files.sort();
            let mut sql = format!("create schema {service}_db; set search_path to {service}_db;\n");
            for file in files {
                sql.push_str(&std::fs::read_to_string(file).expect("migration"));
                sql.push('\n');
            }
            // Our own migration files, in a schema named by us.
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("schema");
        }
        let product = uuid::Uuid::new_v4();
        sqlx::query(
            "insert into product_db.products (id, name, description, price_cents, stock)
             values ($1, 'Bench', '', 100, 1000000000)",
        )
        .bind(product)
        .execute(&pool)
        .await
        .expect("product");
        pool.close().await;
        Self { db, product }
    }

    async fn run(&self, connections: usize) -> f64 {
        pgbench(
            &self.db.url,
            include_str!("saga.sql"),
            connections,
            &[format!("product={}", self.product)],
        )
        .await
    }
}

/// Per order: when it was posted and when its events occurred and arrived.
#[derive(Debug, Default, Clone)]
struct Trace {
    posted: Option<chrono::DateTime<chrono::Utc>>,
    accepted: Option<chrono::DateTime<chrono::Utc>>,
    seen_confirmed: Option<chrono::DateTime<chrono::Utc>>,
    /// event type -> (occurred, delivered)
    events: HashMap<&'static str, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
}

type Traces = Arc<Mutex<HashMap<String, Trace>>>;

async fn trace_events(shop: &mut TestShop) -> Option<Traces> {
    let local = shop.local();
    let traces: Traces = Arc::default();
    let mut subscriber = local
        .shop
        .bus()
        .client()
        .subscribe(format!("{}.>", local.shop_name()))
        .await
        .expect("subscribe");
    let sink = traces.clone();
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let delivered = chrono::Utc::now();
            let Ok(envelope) = Envelope::decode(&message.payload) else {
                continue;
            };
            let (kind, order) = match envelope.event_type.as_str() {
                OrderCreated::TYPE => (
                    OrderCreated::TYPE,
                    envelope.event::<OrderCreated>().map(|e| e.order_id),
                ),
                StockReserved::TYPE => (
                    StockReserved::TYPE,
                    envelope.event::<StockReserved>().map(|e| e.order_id),
                ),
                OrderConfirmed::TYPE => (
                    OrderConfirmed::TYPE,
                    envelope.event::<OrderConfirmed>().map(|e| e.order_id),
                ),
                CatalogChanged::TYPE => continue,
                _ => continue,
            };
            if let Ok(order) = order {
                sink.lock()
                    .expect("traces")
                    .entry(order)
                    .or_default()
                    .events
                    .insert(kind, (envelope.occurred_at, delivered));
            }
        }
    });
    Some(traces)
}

/// How a customer waits for its order.
#[derive(Debug, Clone, Copy)]
enum Polling {
    /// Every 0.5 ms: for latency, measured to the half millisecond.
    Tight,
    /// After 1 ms, then 1.5 times longer each time, as the storefront's page does (from 1 s):
    /// the load of many customers is theirs, not that of their impatience.
    Backoff,
}

/// One checkout: the cart filled, `POST /api/orders`, then polled until `CONFIRMED`.
async fn checkout(
    shop: &TestShop,
    customer: &souk_e2e::Session,
    product: &str,
    polling: Polling,
    traces: Option<&Traces>,
) -> Duration {
    shop.wait_for(
        "/api/carts",
        Some(&customer.token),
        Duration::from_secs(10),
        |r| r.body["items"] == json!([]),
    )
    .await;
    let add = json!({"product_id": product, "quantity": 1});
    shop.post("/api/carts/products", Some(&customer.token), &add)
        .await
        .expect(StatusCode::OK);
    let started = Instant::now();
    let posted = chrono::Utc::now();
    let placed = shop
        .send(
            shop.request(reqwest::Method::POST, "/api/orders")
                .bearer_auth(&customer.token),
        )
        .await;
    let accepted = chrono::Utc::now();
    let id = placed.expect(StatusCode::ACCEPTED)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = started + Duration::from_secs(10);
    let mut pause = match polling {
        Polling::Tight => Duration::from_micros(500),
        Polling::Backoff => Duration::from_millis(1),
    };
    loop {
        let order = shop
            .get(&format!("/api/orders/{id}"), Some(&customer.token))
            .await;
        if order.body["status"] == "CONFIRMED" {
            let elapsed = started.elapsed();
            if let Some(traces) = traces {
                let mut traces = traces.lock().expect("traces");
                let trace = traces.entry(id).or_default();
                trace.posted = Some(posted);
                trace.accepted = Some(accepted);
                trace.seen_confirmed = Some(chrono::Utc::now());
            }
            return elapsed;
        }
        assert!(
            order.body["status"] == "PENDING",
            "order ended {}",
            order.text
        );
        assert!(
            Instant::now() < deadline,
            "order {id} not confirmed in 10 s"
        );
        tokio::time::sleep(pause).await;
        if let Polling::Backoff = polling {
            pause = pause.mul_f64(1.5);
        }
    }
}

/// Prints where the checkouts traced so far spent their time, and forgets them.
fn hops(traces: &Traces, title: &str) {
    let traces = std::mem::take(&mut *traces.lock().expect("traces"));
    let mut hops: Vec<(&str, Vec<Duration>)> = vec![
        ("POST until 202 (gateway, cart, order tx)", Vec::new()),
        ("order.created: commit to delivery", Vec::new()),
        ("product reserves stock (delivery to event)", Vec::new()),
        ("stock.reserved: commit to delivery", Vec::new()),
        ("order pays and confirms (delivery to event)", Vec::new()),
        ("confirmed: seen by the polling client", Vec::new()),
    ];
    let span = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        (to - from).to_std().unwrap_or_default()
    };
    for trace in traces.values() {
        let (Some(posted), Some(accepted), Some(seen)) =
            (trace.posted, trace.accepted, trace.seen_confirmed)
        else {
            continue;
        };
        let (Some(created), Some(reserved), Some(confirmed)) = (
            trace.events.get(OrderCreated::TYPE),
            trace.events.get(StockReserved::TYPE),
            trace.events.get(OrderConfirmed::TYPE),
        ) else {
            continue;
        };
        let spans = [
            span(posted, accepted),
            span(created.0, created.1),
            span(created.1, reserved.0),
            span(reserved.0, reserved.1),
            span(reserved.1, confirmed.0),
            span(confirmed.0, seen),
        ];
        for (hop, d) in hops.iter_mut().zip(spans) {
            hop.1.push(d);
        }
    }
    println!("{title}");
    for (name, samples) in hops {
        latencies(name, samples, None);
    }
}

async fn checkouts(shop: &mut TestShop, product: &str) {
    let traces = trace_events(shop).await;
    let shop = &*shop;
    let orders = 100;
    let customer = shop.customer().await;
    let mut sequential = Vec::new();
    for _ in 0..orders {
        sequential.push(checkout(shop, &customer, product, Polling::Tight, traces.as_ref()).await);
    }
    println!("checkout");
    latencies("sequential, POST to CONFIRMED", sequential, Some(15.0));
    let traced = traces.as_ref();
    if let Some(traces) = traced {
        hops(
            traces,
            "checkout, per hop (sequential orders; event times from their envelopes)",
        );
    }
    let mut customers = Vec::new();
    for _ in 0..16 {
        customers.push(shop.customer().await);
    }
    let saga = SagaLimit::new().await;
    let (mut ours, mut limit) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let until = Instant::now() + seconds();
        let started = Instant::now();
        let runs = customers.iter().map(|customer| async move {
            let mut done = 0u64;
            while Instant::now() < until {
                checkout(shop, customer, product, Polling::Backoff, traced).await;
                done += 1;
            }
            done
        });
        let confirmed: u64 = futures::future::join_all(runs).await.into_iter().sum();
        ours.push(confirmed as f64 / started.elapsed().as_secs_f64());
        limit.push(saga.run(16).await);
    }
    compare(
        "16 customers, backoff polls: orders vs SQL",
        mean(&ours),
        mean(&limit),
        "/s",
        0.5,
    );
    if let Some(traces) = traced {
        hops(traces, "checkout, per hop (16 customers at once)");
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

/// The `souk` binary of the bench's own profile, built (or found up to date) by cargo first.
/// Cargo releases its build lock before it runs a bench, so this build does not wait on ours.
fn souk_binary() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--profile", "bench", "-p", "souk", "--bin", "souk"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|err| format!("{cargo} did not run: {err}"))?;
    if !status.success() {
        return Err(format!(
            "`{cargo} build --profile bench -p souk` failed ({status})"
        ));
    }
    // This bench is target/<profile>/deps/limits-<hash>; the binary is target/<profile>/souk.
    let exe = std::env::current_exe().map_err(|err| err.to_string())?;
    let binary = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join("souk"))
        .ok_or("no target directory")?;
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!("{} not built", binary.display()))
    }
}

/// Resident memory of a process, from `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn process_kb(pid: u32, field: &str) -> u64 {
    status_field(&format!("/proc/{pid}/status"), field)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// A shop of separate processes, as containers run it: `souk serve <service>` for each service
/// and `souk relay <outbox>` for each outbox, on the shared PostgreSQL and NATS.
struct ProcessShop {
    processes: Vec<(String, std::process::Child)>,
    shop: ShopName,
    dir: PathBuf,
    gateway: String,
    admin_email: String,
    admin_password: String,
}

impl Drop for ProcessShop {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop_databases(
            Service::WITH_DATABASE
                .iter()
                .map(|service| self.shop.database_name(service.name()))
                .collect(),
        );
        delete_stream(&self.shop);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ProcessShop {
    async fn start(souk: &std::path::Path) -> Self {
        let shop = unique_shop();
        let dir = std::env::temp_dir().join(format!("souk-bench-{shop}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let keygen = std::process::Command::new(souk)
            .args(["keygen", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("souk keygen");
        assert!(keygen.success(), "souk keygen failed");
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("free port")
                .port()
        };
        let http = format!("127.0.0.1:{}", free_port());
        let admin_email = format!("admin-{shop}@example.com");
        let admin_password = "admin-password".to_owned();
        let mut env: Vec<(&str, String)> = vec![
            (settings::SHOP_NAME, shop.to_string()),
            (settings::LOG, "warn".into()),
            ("SOUK_DATABASE_URL", server_url()),
            (settings::NATS_URL, nats_url()),
            (
                settings::JWT_PRIVATE_KEY_FILE,
                dir.join(file::JWT_PRIVATE_KEY).to_string_lossy().into(),
            ),
            (
                settings::JWT_PUBLIC_KEY_FILE,
                dir.join(file::JWT_PUBLIC_KEY).to_string_lossy().into(),
            ),
            (settings::ADMIN_EMAIL, admin_email.clone()),
            (settings::ADMIN_PASSWORD, admin_password.clone()),
            (settings::HTTP_ADDR, http.clone()),
        ];
        let grpc: Vec<(Service, u16)> = Service::WITH_DATABASE
            .iter()
            .map(|service| (*service, free_port()))
            .collect();
        for (service, port) in &grpc {
            let setting = settings::service_url(service.name()).expect("a gRPC service");
            env.push((setting, format!("http://127.0.0.1:{port}")));
        }
        let mut commands: Vec<(String, Vec<String>)> = Vec::new();
        for service in Service::ALL {
            let mut args = vec![
                command::SERVE.to_owned(),
                service.name().to_owned(),
                "--metrics-addr".into(),
                format!("127.0.0.1:{}", free_port()),
            ];
            if let Some((_, port)) = grpc.iter().find(|(s, _)| *s == service) {
                args.extend(["--grpc-addr".into(), format!("127.0.0.1:{port}")]);
            }
            commands.push((service.name().to_owned(), args));
        }
        for service in Service::ALL.into_iter().filter(|s| s.has_relayer()) {
            commands.push((
                format!("{} relayer", service.name()),
                vec![
                    command::RELAY.to_owned(),
                    service.name().to_owned(),
                    "--metrics-addr".into(),
                    format!("127.0.0.1:{}", free_port()),
                ],
            ));
        }
        let processes = commands
            .into_iter()
            .map(|(name, args)| {
                let log =
                    std::fs::File::create(dir.join(format!("{}.log", name.replace(' ', "-"))))
                        .expect("log file");
                let child = std::process::Command::new(souk)
                    .args(&args)
                    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("log file"))
                    .stderr(log)
                    .spawn()
                    .expect("souk starts");
                (name, child)
            })
            .collect();
        let shop = Self {
            processes,
            shop,
            dir,
            gateway: format!("http://{http}"),
            admin_email,
            admin_password,
        };
        // Ready when the gateway says so (it asks every service it calls).
        let client = reqwest::Client::new();
        let ready = format!("{}/readyz", shop.gateway);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the shop of processes was not ready in 120 s (logs in {})",
                shop.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shop
    }

    fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|(name, child)| (name.clone(), child.id()))
            .collect()
    }
}

/// Each process's resident memory idle (all ready, no traffic) and at its highest under load:
/// 16 catalog readers and 8 customers checking out at once for the run's duration, sampled every
/// 20 ms. Set beside the operator's container request (idle) and limit (loaded).
async fn memory() {
    let souk = match souk_binary() {
        Ok(souk) => souk,
        Err(err) => {
            println!("memory per process: skipped ({err})");
            return;
        }
    };
    let processes = ProcessShop::start(&souk).await;
    let shop = TestShop::at(
        &processes.gateway,
        processes.admin_email.clone(),
        processes.admin_password.clone(),
    );
    let pids = processes.pids();
    // Idle: every process ready and a second without traffic.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<u64> = pids
        .iter()
        .map(|(_, pid)| process_kb(*pid, "VmRSS:"))
        .collect();
    let admin = shop.admin().await;
    let product = shop.create_product(&admin, 100, 1_000_000_000).await;
    let mut customers = Vec::new();
    for _ in 0..8 {
        customers.push(shop.customer().await);
    }
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, pids, mut peaks) = (sampling.clone(), pids.clone(), idle.clone());
        tokio::spawn(async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                for (peak, (_, pid)) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(process_kb(*pid, "VmRSS:"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peaks
        })
    };
    let until = Instant::now() + seconds();
    let shop_ref = &shop;
    let product_ref = product.as_str();
    let checkouts = customers.iter().map(|customer| async move {
        let mut done = 0u64;
        while Instant::now() < until {
            checkout(shop_ref, customer, product_ref, Polling::Backoff, None).await;
            done += 1;
        }
        done
    });
    let by_id = shop.url(&format!("/api/products/{product}"));
    let ((reads, _), confirmed) =
        tokio::join!(http_load(&by_id, 16), futures::future::join_all(checkouts));
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peaks = sampler.await.expect("sampler");
    let confirmed: u64 = confirmed.into_iter().sum();
    println!(
        "memory per process (VmRSS of `souk serve <service>` and `souk relay <outbox>`; load: \
         16 catalog readers at {reads:.0}/s and 8 customers, {confirmed} orders confirmed in {} s)",
        seconds().as_secs()
    );
    for (((name, pid), idle), peak) in pids.iter().zip(&idle).zip(&peaks) {
        let (request, limit) = if name.ends_with("relayer") {
            (
                defaults::RELAYER_MEMORY_REQUEST_MIB,
                defaults::RELAYER_MEMORY_LIMIT_MIB,
            )
        } else {
            (
                defaults::SERVICE_MEMORY_REQUEST_MIB,
                defaults::SERVICE_MEMORY_LIMIT_MIB,
            )
        };
        let within = |ours: f64, limit: u32| {
            let ratio = ours / f64::from(limit);
            let verdict = if ratio <= 1.0 {
                "reached"
            } else {
                "NOT reached"
            };
            format!("{ours:>6.1} MiB vs {limit:>3} MiB = {ratio:>4.2}x ({verdict})")
        };
        println!(
            "  {name:<16} idle {} request   loaded {} limit   (VmHWM {:.1} MiB)",
            within(mib(*idle), request),
            within(mib(*peak), limit),
            mib(process_kb(*pid, "VmHWM:")),
        );
    }
    let total = |kb: &[u64]| mib(kb.iter().sum());
    println!(
        "  {:<16} idle {:>6.1} MiB, loaded {:>6.1} MiB (goal for each: <= 1x its request idle, <= 1x its limit loaded)",
        "all processes",
        total(&idle),
        total(&peaks),
    );
}

/// Whether to run a section: all of them, or those named in `SOUK_BENCH_ONLY` (comma-separated:
/// relay, or one of its parts relay-latency, relay-throughput, relay-commits; catalog,
/// staleness, checkout, memory).
fn section(name: &str) -> bool {
    std::env::var("SOUK_BENCH_ONLY").map_or(true, |only| {
        only.split(',').map(str::trim).any(|s| {
            s == name || name.starts_with(&format!("{s}-")) || s.starts_with(&format!("{name}-"))
        })
    })
}

#[tokio::main]
async fn main() {
    println!(
        "souk limits bench, {} UTC, {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        machine()
    );
    if section("relay") {
        relay().await;
    }
    if section("catalog") || section("staleness") || section("checkout") {
        shop_figures().await;
    }
    if section("memory") {
        memory().await;
    }
}

/// The figures of a whole shop in this process (`souk up`).
async fn shop_figures() {
    let mut shop = TestShop::start().await;
    let admin = shop.admin().await;
    let mut product = String::new();
    for n in 0..25 {
        let body = json!({"name": format!("Bench {n}"), "description": "", "price_cents": 100, "stock": 1_000_000});
        let reply = shop.post("/api/products", Some(&admin.token), &body).await;
        product = reply.expect(StatusCode::CREATED)["id"]
            .as_str()
            .expect("id")
            .to_owned();
    }
    let idle_kb = status_kb("VmRSS:");
    if section("catalog") {
        catalog(&shop, &product).await;
    }
    if section("staleness") {
        staleness(&mut shop, &admin.token, &product).await;
    }
    if section("checkout") {
        checkouts(&mut shop, &product).await;
    }
    println!("memory (the whole shop in this process, with the bench's clients)");
    println!(
        "  {:<44} {} MiB idle, {} MiB after the load (peak {} MiB)",
        "resident",
        idle_kb / 1024,
        status_kb("VmRSS:") / 1024,
        status_kb("VmHWM:") / 1024
    );
}
