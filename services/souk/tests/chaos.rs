//! The fault-injection suite (issue 12): a shop of separate processes (`souk serve` per service,
//! two `souk relay` per outbox) on a PostgreSQL cluster and a NATS server of its own, on loopback
//! ports of its own, so that it may kill any of them. Customers check out (retrying under one
//! Idempotency-Key) and cancel while processes are SIGKILLed at random moments and at chosen
//! points inside charges and cancels (`SOUK_FAULT_POINT`); then, once everything is quiet, the
//! money and stock invariants are checked and printed with figures, ending `N passed, M failed`.
//!
//! Bounded by default (CI: `SOUK_CHAOS_CHECKOUTS`, 40); a long run:
//! `SOUK_CHAOS_CHECKOUTS=1000 SQLX_OFFLINE=true cargo nextest run -p souk --test chaos --no-capture`.
//! Skips itself (saying so) when `initdb`/`postgres` or the NATS server are not installed.

#![allow(clippy::print_stdout, reason = "the suite prints its figures")]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use souk_shared::{
    config::ShopName,
    testing::pg::{self, free_port},
};
use sqlx::{Connection as _, PgConnection};
use tokio::process::{Child, Command};

const SHOP: &str = "chaos";
const SERVICES: &[&str] = &["user", "product", "cart", "payment", "order"];
const FAULT_POINTS: &[&str] = &[
    "charge.after_call",
    "cancel.after_intent",
    "cancel.after_refund",
];
const CUSTOMERS: usize = 8;
const PRODUCTS: usize = 4;
const INITIAL_STOCK: i64 = 10_000;

/// A small deterministic generator (xorshift), seeded per run and printed, so a run can be
/// repeated with `SOUK_CHAOS_SEED`.
#[derive(Debug)]
struct Rng(Mutex<u64>);

impl Rng {
    fn below(&self, n: u64) -> u64 {
        let mut x = self.0.lock().expect("rng");
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % n.max(1)
    }
    fn chance(&self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One process of the shop: how to start it, and what runs now.
#[derive(Debug)]
struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Killed as a process group (PostgreSQL: the postmaster and its backends).
    group: bool,
    child: Option<Child>,
    /// The fault point armed in the running instance.
    armed: Option<&'static str>,
    log: PathBuf,
}

impl Proc {
    fn start(&mut self, fault: Option<&'static str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        if let Some(point) = fault {
            command.env(souk_shared::fault::ENV, point);
        }
        if self.group {
            command.process_group(0);
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|err| panic!("{}: {err}", self.name)),
        );
        self.armed = fault;
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let (true, Some(pid)) = (self.group, child.id()) {
                // `--` is needed: procps-ng 4.0.2's kill (Debian 12) reads `kill -KILL -PID`
                // as `kill(-1, SIGKILL)`, which as root is every process on the machine.
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{pid}")])
                    .status();
            }
            let _ = child.start_kill();
        }
    }

    /// Whether it has exited (then it is to be started again).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

#[derive(Debug, Default)]
struct Figures {
    /// Client-visible answers during the run: status (or `transport`) → count.
    answers: BTreeMap<String, u64>,
    failures_at: Vec<Instant>,
    faults: Vec<(Instant, String)>,
    fault_points_fired: BTreeMap<String, u64>,
    /// Idempotency key → order ids answered for it.
    keys: HashMap<String, HashSet<String>>,
    checkouts: u64,
    cancels: u64,
    /// Tokens of the customers whose last order the driver saw CONFIRMED.
    confirmed_last: HashMap<String, String>,
}

#[derive(Debug)]
struct Shop {
    base: String,
    http: reqwest::Client,
    figures: Mutex<Figures>,
    rng: Rng,
    admin_token: Mutex<String>,
}

impl Shop {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let outcome = match request.send().await {
            Ok(reply) => {
                let status = reply.status().as_u16();
                let body = reply.json::<Value>().await.unwrap_or(Value::Null);
                Some((status, body))
            }
            Err(_) => None,
        };
        let mut figures = self.figures.lock().expect("figures");
        let label = outcome
            .as_ref()
            .map_or("transport".to_owned(), |(s, _)| s.to_string());
        *figures.answers.entry(label).or_default() += 1;
        if outcome.as_ref().is_none_or(|(s, _)| *s >= 500) {
            figures.failures_at.push(Instant::now());
        }
        outcome
    }

    /// Retries until the answer is one of `ok` (with backoff), up to `patience`.
    #[allow(clippy::too_many_arguments, reason = "a request and its retry policy")]
    async fn until(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
        ok: &[u16],
        patience: Duration,
    ) -> Option<(u16, Value)> {
        let deadline = Instant::now() + patience;
        let mut delay = Duration::from_millis(50);
        while Instant::now() < deadline {
            if let Some((status, body)) = self.call(method.clone(), path, token, key, body).await
                && ok.contains(&status)
            {
                return Some((status, body));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(800));
        }
        None
    }
}

const PATIENCE: Duration = Duration::from_secs(120);

async fn customer(shop: Arc<Shop>, products: Arc<Vec<String>>, remaining: Arc<AtomicUsize>) {
    use reqwest::Method;
    let email = format!("c{}@example.com", uuid::Uuid::new_v4().simple());
    let account =
        json!({"email": email, "password": "correct horse battery", "name": "Chaos Customer"});
    shop.until(
        Method::POST,
        "/api/users",
        None,
        None,
        Some(&account),
        &[201, 409],
        PATIENCE,
    )
    .await
    .expect("register");
    let credentials = json!({"email": email, "password": "correct horse battery"});
    let (_, login) = shop
        .until(
            Method::POST,
            "/api/auth/login",
            None,
            None,
            Some(&credentials),
            &[200],
            PATIENCE,
        )
        .await
        .expect("login");
    let owned_token = login["access_token"].as_str().expect("token").to_owned();
    let token = Some(owned_token.as_str());
    while remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let product = &products[shop.rng.below(products.len() as u64) as usize];
        let quantity = 1 + shop.rng.below(3);
        let line = json!({"product_id": product, "quantity": quantity});
        if shop
            .until(
                Method::POST,
                "/api/carts/products",
                token,
                None,
                Some(&line),
                &[200],
                PATIENCE,
            )
            .await
            .is_none()
        {
            continue;
        }
        let key = uuid::Uuid::new_v4().to_string();
        // The same key, retried, under faults: every answer must name one order.
        let mut placed = None;
        let deadline = Instant::now() + PATIENCE;
        while placed.is_none() && Instant::now() < deadline {
            if let Some((status, body)) = shop
                .call(Method::POST, "/api/orders", token, Some(&key), None)
                .await
            {
                if status == 202 {
                    let id = body["id"].as_str().unwrap_or_default().to_owned();
                    shop.figures
                        .lock()
                        .expect("figures")
                        .keys
                        .entry(key.clone())
                        .or_default()
                        .insert(id.clone());
                    // Once in three, the answer was "lost": ask again under the same key.
                    if shop.rng.chance(33) {
                        continue;
                    }
                    placed = Some(id);
                } else if status < 500 {
                    // A client error (the cart emptied by a racing order...) ends this checkout.
                    shop.figures
                        .lock()
                        .expect("figures")
                        .keys
                        .entry(key.clone())
                        .or_default();
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(id) = placed else {
            // Not placed (a client error, such as a cart emptied by a late order.confirmed of
            // the previous order): it does not count, another takes its place.
            remaining.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        shop.figures.lock().expect("figures").checkouts += 1;
        let path = format!("/api/orders/{id}");
        let settled = shop
            .until(Method::GET, &path, token, None, None, &[200], PATIENCE)
            .await;
        let mut status =
            settled.map(|(_, body)| body["status"].as_str().unwrap_or_default().to_owned());
        let wait_until = Instant::now() + PATIENCE;
        while status.as_deref() == Some("PENDING") && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = shop
                .call(Method::GET, &path, token, None, None)
                .await
                .map(|(_, b)| b["status"].as_str().unwrap_or_default().to_owned())
                .or(status);
        }
        let cancel = shop.rng.chance(30);
        if cancel {
            shop.figures.lock().expect("figures").cancels += 1;
            // Retried until answered: 200, or 409 for an order the saga cancelled itself.
            shop.until(
                Method::POST,
                &format!("{path}/cancel"),
                token,
                None,
                Some(&json!({})),
                &[200, 409],
                PATIENCE,
            )
            .await;
        }
        let mut figures = shop.figures.lock().expect("figures");
        if !cancel && status.as_deref() == Some("CONFIRMED") {
            figures
                .confirmed_last
                .insert(email.clone(), owned_token.clone());
        } else {
            figures.confirmed_last.remove(&email);
        }
    }
}

#[derive(Debug)]
struct Cluster {
    dir: PathBuf,
    procs: Vec<Proc>,
    pg_port: u16,
    nats_port: u16,
}

impl Cluster {
    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .expect("process")
    }
}

fn server_url(pg_port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{pg_port}/{database}")
}

async fn connect(pg_port: u16, service: &str) -> PgConnection {
    let database = ShopName::parse_checked(SHOP).database_name(service);
    PgConnection::connect(&server_url(pg_port, &database))
        .await
        .expect("database")
}

trait ParseChecked {
    fn parse_checked(name: &str) -> ShopName;
}

impl ParseChecked for ShopName {
    fn parse_checked(name: &str) -> ShopName {
        name.parse().expect("shop name")
    }
}

/// Starts PostgreSQL, NATS and the shop's processes. Panics, naming the fix, when a server
/// program is missing.
async fn build_cluster() -> Cluster {
    let nats_server = souk_shared::testing::nats_server_binary();
    if let Err(reason) = pg::installed() {
        panic!("{reason}");
    }
    let dir = std::env::temp_dir().join(format!("souk-chaos-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("logs")).expect("temp dir");
    // The suite runs the server itself (a process it kills at random); the data stay in `dir`.
    let postgres = pg::PgServer::init(&dir).expect("PostgreSQL cluster");
    let pg_port = postgres.port();
    let nats_port = free_port();
    let log = |name: &str| dir.join("logs").join(format!("{name}.log"));
    let (postgres_program, postgres_args) = postgres.server_command(&[]);
    let mut procs = vec![
        Proc {
            name: "postgres".into(),
            program: postgres_program,
            args: postgres_args,
            env: vec![],
            group: true,
            child: None,
            armed: None,
            log: log("postgres"),
        },
        Proc {
            name: "nats".into(),
            program: nats_server,
            args: [
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &nats_port.to_string(),
                "-sd",
                &dir.join("nats").to_string_lossy(),
            ]
            .map(String::from)
            .to_vec(),
            env: vec![],
            group: false,
            child: None,
            armed: None,
            log: log("nats"),
        },
    ];
    let souk = PathBuf::from(env!("CARGO_BIN_EXE_souk"));
    let keys = dir.join("keys");
    let keygen = std::process::Command::new(&souk)
        .args(["keygen", "--dir", &keys.to_string_lossy()])
        .stdout(Stdio::null())
        .status()
        .expect("keygen");
    assert!(keygen.success());
    let grpc: BTreeMap<&str, u16> = SERVICES.iter().map(|s| (*s, free_port())).collect();
    let http_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("SOUK_SHOP_NAME".into(), SHOP.into()),
        ("SOUK_LOG".into(), "warn".into()),
        ("SOUK_DATABASE_URL".into(), server_url(pg_port, "postgres")),
        (
            "SOUK_NATS_URL".into(),
            format!("nats://127.0.0.1:{nats_port}"),
        ),
        (
            "SOUK_JWT_PRIVATE_KEY_FILE".into(),
            keys.join("private.pem").to_string_lossy().into(),
        ),
        (
            "SOUK_JWT_PUBLIC_KEY_FILE".into(),
            keys.join("public.pem").to_string_lossy().into(),
        ),
        ("SOUK_SAGA_TIMEOUT".into(), "20s".into()),
        ("SOUK_ADMIN_EMAIL".into(), "admin@example.com".into()),
        ("SOUK_ADMIN_PASSWORD".into(), "admin-password".into()),
        ("SOUK_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")),
    ];
    for (service, port) in &grpc {
        env.push((
            format!("SOUK_{}_URL", service.to_uppercase()),
            format!("http://127.0.0.1:{port}"),
        ));
    }
    for service in SERVICES.iter().copied().chain(["gateway"]) {
        let mut args = vec![
            "serve".to_owned(),
            service.to_owned(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        if let Some(port) = grpc.get(service) {
            args.extend(["--grpc-addr".into(), format!("127.0.0.1:{port}")]);
        }
        procs.push(Proc {
            name: service.into(),
            program: souk.clone(),
            args,
            env: env.clone(),
            group: false,
            child: None,
            armed: None,
            log: log(service),
        });
    }
    for outbox in ["product", "order"] {
        for replica in 1..=2 {
            let name = format!("relay-{outbox}-{replica}");
            let args = vec![
                "relay".into(),
                outbox.into(),
                "--metrics-addr".into(),
                format!("127.0.0.1:{}", free_port()),
            ];
            procs.push(Proc {
                name: name.clone(),
                program: souk.clone(),
                args,
                env: env.clone(),
                group: false,
                child: None,
                armed: None,
                log: log(&name),
            });
        }
    }
    for proc in &mut procs {
        proc.start(None);
    }
    Cluster {
        dir,
        procs,
        pg_port,
        nats_port,
    }
}

/// Restarts what exited, noting fault points that fired; until `stop`.
async fn supervise(
    cluster: Arc<tokio::sync::Mutex<Cluster>>,
    shop: Arc<Shop>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        {
            let mut cluster = cluster.lock().await;
            for proc in &mut cluster.procs {
                if let Some(status) = proc.exited() {
                    if let Some(point) = proc.armed.take() {
                        use std::os::unix::process::ExitStatusExt as _;
                        if status.signal() == Some(6) {
                            *shop
                                .figures
                                .lock()
                                .expect("figures")
                                .fault_points_fired
                                .entry(point.to_owned())
                                .or_default() += 1;
                        }
                    }
                    proc.start(None);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills something every 1 to 3 seconds until `stop`.
async fn inject(cluster: Arc<tokio::sync::Mutex<Cluster>>, shop: Arc<Shop>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1_000 + shop.rng.below(2_000))).await;
        let mut cluster = cluster.lock().await;
        let roll = shop.rng.below(100);
        let what = if roll < 30 {
            // A chosen point inside a charge or a cancel: the order service restarts armed.
            let point = FAULT_POINTS[shop.rng.below(FAULT_POINTS.len() as u64) as usize];
            let order = cluster.proc("order");
            order.kill();
            let _ = order.child.as_mut().expect("order").wait().await;
            order.start(Some(point));
            format!("order armed at {point}")
        } else {
            let name = if roll < 42 {
                "postgres".to_owned()
            } else if roll < 54 {
                "nats".to_owned()
            } else {
                let souk: Vec<String> = cluster
                    .procs
                    .iter()
                    .filter(|p| p.program.ends_with("souk"))
                    .map(|p| p.name.clone())
                    .collect();
                souk[shop.rng.below(souk.len() as u64) as usize].clone()
            };
            cluster.proc(&name).kill();
            format!("SIGKILL {name}")
        };
        println!("fault: {what}");
        shop.figures
            .lock()
            .expect("figures")
            .faults
            .push((Instant::now(), what));
    }
}

#[derive(Debug, Default)]
struct Verdict {
    passed: u32,
    failed: u32,
}

impl Verdict {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("  ok    {name}: {detail}");
        } else {
            self.failed += 1;
            println!("  FAIL  {name}: {detail}");
        }
    }
}

async fn scalar(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .expect(sql)
        .unwrap_or(0)
}

/// Waits until nothing moves: no saga step left, outboxes drained, consumers caught up.
async fn quiesce(pg_port: u16, nats_port: u16, patience: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < patience {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = async {
            let mut order = PgConnection::connect(&server_url(pg_port, &ShopName::parse_checked(SHOP).database_name("order"))).await.ok()?;
            let mut product = PgConnection::connect(&server_url(pg_port, &ShopName::parse_checked(SHOP).database_name("product"))).await.ok()?;
            let open = scalar(&mut order, "select count(*) from orders where status = 'PENDING' or saga_step in ('charging', 'refunding')").await;
            let outbox = scalar(&mut order, "select count(*) from outbox_events").await + scalar(&mut product, "select count(*) from outbox_events").await;
            let client = async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await.ok()?;
            let stream = async_nats::jetstream::new(client).get_stream(souk_shared::events::stream_name(&ShopName::parse_checked(SHOP))).await.ok()?;
            let mut pending = 0;
            for name in ["product", "cart", "order"] {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer(name).await.ok()?;
                let info = consumer.info().await.ok()?;
                pending += info.num_pending + info.num_ack_pending as u64;
            }
            Some((open, outbox, pending))
        }
        .await;
        match state {
            Some((0, 0, 0)) => return Ok(started.elapsed()),
            other => last = format!("{other:?} (open sagas, outbox rows, consumer backlog)"),
        }
    }
    Err(last)
}

async fn check_invariants(
    cluster: &Cluster,
    shop: &Shop,
    products: &[String],
    verdict: &mut Verdict,
) {
    let pg = cluster.pg_port;
    let mut product_db = connect(pg, "product").await;
    let mut order_db = connect(pg, "order").await;
    let mut payment_db = connect(pg, "payment").await;

    let orders: Vec<(uuid::Uuid, String, i64, String)> =
        sqlx::query_as("select id, status, total_cents, saga_step from orders")
            .fetch_all(&mut order_db)
            .await
            .expect("orders");
    let by_status = orders
        .iter()
        .fold(BTreeMap::<&str, u64>::new(), |mut m, o| {
            *m.entry(o.1.as_str()).or_default() += 1;
            m
        });
    println!("orders: {} {by_status:?}", orders.len());

    // Stock: initial = current + units in CONFIRMED orders; never below zero.
    for product in products {
        let id: uuid::Uuid = product.parse().expect("product id");
        let stock: i64 = sqlx::query_scalar("select stock from products where id = $1")
            .bind(id)
            .fetch_one(&mut product_db)
            .await
            .expect("stock");
        let sold: i64 = sqlx::query_scalar::<_, Option<i64>>("select sum(i.quantity)::bigint from order_items i join orders o on o.id = i.order_id where o.status = 'CONFIRMED' and i.product_id = $1")
            .bind(id).fetch_one(&mut order_db).await.expect("sold").unwrap_or(0);
        verdict.check(
            &format!("stock of {}", &product[product.len() - 8..]),
            stock + sold == INITIAL_STOCK && stock >= 0,
            format!("initial {INITIAL_STOCK} = current {stock} + confirmed {sold}"),
        );
    }

    // Money.
    let payments: HashMap<uuid::Uuid, (String, i64)> =
        sqlx::query_as::<_, (uuid::Uuid, String, i64)>(
            "select order_id, status, amount_cents from payments",
        )
        .fetch_all(&mut payment_db)
        .await
        .expect("payments")
        .into_iter()
        .map(|(id, s, a)| (id, (s, a)))
        .collect();
    let captured: i64 = payments
        .values()
        .filter(|(s, _)| s == "captured")
        .map(|(_, a)| a)
        .sum();
    let refunded: i64 = payments
        .values()
        .filter(|(s, _)| s == "refunded")
        .map(|(_, a)| a)
        .sum();
    let confirmed_total: i64 = orders
        .iter()
        .filter(|o| o.1 == "CONFIRMED")
        .map(|o| o.2)
        .sum();
    verdict.check(
        "captured = sum of CONFIRMED totals",
        captured == confirmed_total,
        format!("captured {captured} (refunded {refunded}), confirmed {confirmed_total} cents"),
    );
    let unpaid_confirmed = orders
        .iter()
        .filter(|o| {
            o.1 == "CONFIRMED"
                && payments
                    .get(&o.0)
                    .is_none_or(|(s, a)| s != "captured" || *a != o.2)
        })
        .count();
    verdict.check(
        "every CONFIRMED order has its one captured payment",
        unpaid_confirmed == 0,
        format!("{unpaid_confirmed} without"),
    );
    let paid_cancelled = orders
        .iter()
        .filter(|o| o.1 == "CANCELLED" && payments.get(&o.0).is_some_and(|(s, _)| s == "captured"))
        .count();
    verdict.check(
        "no CANCELLED order keeps money",
        paid_cancelled == 0,
        format!("{paid_cancelled} do"),
    );
    let reservations: HashMap<uuid::Uuid, String> =
        sqlx::query_as::<_, (uuid::Uuid, String)>("select order_id, status from reservations")
            .fetch_all(&mut product_db)
            .await
            .expect("reservations")
            .into_iter()
            .collect();
    let held_cancelled = orders
        .iter()
        .filter(|o| o.1 == "CANCELLED" && reservations.get(&o.0).is_some_and(|s| s == "reserved"))
        .count();
    verdict.check(
        "no CANCELLED order keeps stock",
        held_cancelled == 0,
        format!("{held_cancelled} do"),
    );
    let unreserved_confirmed = orders
        .iter()
        .filter(|o| o.1 == "CONFIRMED" && reservations.get(&o.0).is_none_or(|s| s != "reserved"))
        .count();
    verdict.check(
        "every CONFIRMED order holds its stock",
        unreserved_confirmed == 0,
        format!("{unreserved_confirmed} do not"),
    );
    let open = orders
        .iter()
        .filter(|o| o.1 == "PENDING" || o.3 == "charging" || o.3 == "refunding")
        .count();
    verdict.check(
        "no order left PENDING or in a step",
        open == 0,
        format!("{open} left"),
    );

    let (keys, doubled, tokens) = {
        let figures = shop.figures.lock().expect("figures");
        let doubled = figures.keys.values().filter(|ids| ids.len() > 1).count();
        let tokens: Vec<String> = figures.confirmed_last.values().cloned().collect();
        (figures.keys.len(), doubled, tokens)
    };
    verdict.check(
        "no Idempotency-Key answered two orders",
        doubled == 0,
        format!("{keys} keys, {doubled} with two orders"),
    );
    let per_key: i64 = scalar(&mut order_db, "select count(*) from (select 1 from orders where idempotency_key is not null group by user_id, idempotency_key having count(*) > 1) d").await;
    verdict.check(
        "no Idempotency-Key made two orders",
        per_key == 0,
        format!("{per_key}"),
    );

    let client = async_nats::connect(format!("nats://127.0.0.1:{}", cluster.nats_port))
        .await
        .expect("nats");
    let stream = async_nats::jetstream::new(client)
        .get_stream(souk_shared::events::stream_name(&ShopName::parse_checked(
            SHOP,
        )))
        .await
        .expect("stream");
    let mut subjects = stream
        .info_with_subjects(format!("{SHOP}.deadletter.>"))
        .await
        .expect("subjects");
    let mut dead = 0;
    while let Some(Ok((_, count))) = futures::StreamExt::next(&mut subjects).await {
        dead += count;
    }
    verdict.check("no dead letters", dead == 0, format!("{dead}"));

    // Carts of customers whose last order confirmed were emptied (by the cart's consumer).
    let mut full = 0;
    for token in &tokens {
        let cart = shop
            .until(
                reqwest::Method::GET,
                "/api/carts",
                Some(token),
                None,
                None,
                &[200],
                PATIENCE,
            )
            .await;
        if cart.is_none_or(|(_, body)| {
            body["items"]
                .as_array()
                .is_none_or(|items| !items.is_empty())
        }) {
            full += 1;
        }
    }
    verdict.check(
        "carts of confirmed orders emptied",
        full == 0,
        format!(
            "{} customers ended on a confirmed order, {full} carts not empty",
            tokens.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let checkouts: usize = std::env::var("SOUK_CHAOS_CHECKOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("SOUK_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let cluster = build_cluster().await;
    println!(
        "chaos: {checkouts} checkouts, seed {seed}, logs in {}",
        cluster.dir.display()
    );
    let (pg_port, nats_port, dir) = (cluster.pg_port, cluster.nats_port, cluster.dir.clone());
    let http_port = cluster
        .procs
        .iter()
        .find(|p| p.name == "gateway")
        .and_then(|p| p.env.iter().find(|(k, _)| k == "SOUK_HTTP_ADDR"))
        .map(|(_, v)| v.clone())
        .expect("http addr");
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let shop = Arc::new(Shop {
        base: format!("http://{http_port}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        figures: Mutex::default(),
        rng: Rng(Mutex::new(seed)),
        admin_token: Mutex::default(),
    });

    // Set up, before any fault: the products.
    use reqwest::Method;
    let admin = json!({"email": "admin@example.com", "password": "admin-password"});
    let (_, login) = shop
        .until(
            Method::POST,
            "/api/auth/login",
            None,
            None,
            Some(&admin),
            &[200],
            Duration::from_secs(180),
        )
        .await
        .expect("the shop comes up");
    *shop.admin_token.lock().expect("token") =
        login["access_token"].as_str().expect("token").to_owned();
    let token = shop.admin_token.lock().expect("token").clone();
    let mut products = Vec::new();
    for n in 0..PRODUCTS {
        let body = json!({"name": format!("Item {n}"), "description": "", "price_cents": 100 + 250 * n as i64, "stock": INITIAL_STOCK});
        let (_, product) = shop
            .until(
                Method::POST,
                "/api/products",
                Some(&token),
                None,
                Some(&body),
                &[201],
                PATIENCE,
            )
            .await
            .expect("product");
        products.push(product["id"].as_str().expect("id").to_owned());
    }
    let products = Arc::new(products);
    shop.figures.lock().expect("figures").answers.clear();

    let stop = Arc::new(AtomicBool::new(false));
    let supervisor = tokio::spawn(supervise(cluster.clone(), shop.clone(), stop.clone()));
    let stop_faults = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(inject(cluster.clone(), shop.clone(), stop_faults.clone()));
    let started = Instant::now();
    let remaining = Arc::new(AtomicUsize::new(checkouts));
    let customers: Vec<_> = (0..CUSTOMERS)
        .map(|_| tokio::spawn(customer(shop.clone(), products.clone(), remaining.clone())))
        .collect();
    for customer in customers {
        customer.await.expect("customer");
    }
    let driven = started.elapsed();
    stop_faults.store(true, Ordering::SeqCst);
    injector.await.expect("injector");
    // Whatever is armed is disarmed: the order service restarts plain.
    {
        let mut cluster = cluster.lock().await;
        let order = cluster.proc("order");
        if order.armed.is_some() {
            order.kill();
        }
    }
    let quiet = quiesce(pg_port, nats_port, Duration::from_secs(180)).await;
    stop.store(true, Ordering::SeqCst);
    supervisor.await.expect("supervisor");

    let mut verdict = Verdict::default();
    {
        let figures = shop.figures.lock().expect("figures");
        println!(
            "driven in {:.1} s: {} checkouts placed, {} cancels asked",
            driven.as_secs_f64(),
            figures.checkouts,
            figures.cancels
        );
        let mut kinds = BTreeMap::<String, u64>::new();
        for (_, what) in &figures.faults {
            let kind = what
                .split(' ')
                .take(if what.starts_with("order armed") {
                    4
                } else {
                    2
                })
                .collect::<Vec<_>>()
                .join(" ");
            *kinds.entry(kind).or_default() += 1;
        }
        println!("faults: {} {kinds:?}", figures.faults.len());
        println!(
            "fault points reached (process aborted there): {:?}",
            figures.fault_points_fired
        );
        println!("client answers during faults: {:?}", figures.answers);
        // Recovery: how long clients kept seeing failures after each fault.
        let mut recoveries: Vec<f64> = figures
            .faults
            .iter()
            .enumerate()
            .map(|(i, (at, _))| {
                let until = figures
                    .faults
                    .get(i + 1)
                    .map_or(Instant::now(), |(next, _)| *next);
                figures
                    .failures_at
                    .iter()
                    .filter(|t| **t >= *at && **t < until)
                    .max()
                    .map_or(0.0, |t| t.duration_since(*at).as_secs_f64())
            })
            .collect();
        recoveries.sort_by(f64::total_cmp);
        if !recoveries.is_empty() {
            println!(
                "time to recover after a fault: median {:.2} s, p90 {:.2} s, max {:.2} s",
                recoveries[recoveries.len() / 2],
                recoveries[recoveries.len() * 9 / 10],
                recoveries[recoveries.len() - 1]
            );
        }
    }
    verdict.check(
        "quiescence",
        quiet.is_ok(),
        match &quiet {
            Ok(t) => format!("reached {:.1} s after the last fault", t.as_secs_f64()),
            Err(last) => format!("not reached: {last}"),
        },
    );
    let figures_checkouts = shop.figures.lock().expect("figures").checkouts;
    verdict.check(
        "checkouts placed",
        figures_checkouts as usize == checkouts,
        format!("{figures_checkouts} of {checkouts}"),
    );
    {
        let cluster = cluster.lock().await;
        check_invariants(&cluster, &shop, &products, &mut verdict).await;
    }
    println!("{} passed, {} failed", verdict.passed, verdict.failed);
    let mut cluster = Arc::try_unwrap(cluster).expect("cluster").into_inner();
    for proc in &mut cluster.procs {
        proc.kill();
    }
    if verdict.failed == 0 {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("logs kept in {}", dir.display());
    }
    assert_eq!(verdict.failed, 0, "invariants violated");
}
