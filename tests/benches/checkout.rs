//! Figures of a whole shop in this process, against the local PostgreSQL and NATS:
//!
//! - checkout latency: `POST /api/orders` until the order reads `CONFIRMED`, one at a time;
//! - checkout throughput: customers checking out concurrently;
//! - catalog reads: `GET /api/products/{id}` from concurrent clients;
//! - the process's resident memory afterwards.
//!
//! `cargo bench -p souk-e2e --bench checkout` (with `SQLX_OFFLINE=true`); set `SOUK_BENCH_ORDERS`
//! to change the number of orders (default 200). Every loop is bounded in count and time.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use souk_e2e::{Session, TestShop, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>, elapsed: Duration) {
    samples.sort_unstable();
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<28} n={:<6} rate={rate:>9.1}/s  p50={:>8.2?}  p95={:>8.2?}  p99={:>8.2?}  max={:>8.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
    );
}

async fn checkout(shop: &TestShop, customer: &Session, product: &str) -> Duration {
    // The previous order takes its line out of the cart when it is confirmed, which may come
    // after its status changed: wait for that, or the next order would buy that line again.
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
    let placed = shop
        .send(
            shop.request(Method::POST, "/api/orders")
                .bearer_auth(&customer.token),
        )
        .await;
    let id = placed.expect(StatusCode::ACCEPTED)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = started + Duration::from_secs(10);
    loop {
        let order = shop
            .get(&format!("/api/orders/{id}"), Some(&customer.token))
            .await;
        if order.body["status"] == "CONFIRMED" {
            return started.elapsed();
        }
        assert!(
            order.body["status"] == "PENDING",
            "order ended {}",
            order.text
        );
        assert!(
            Instant::now() < deadline,
            "order {id} not confirmed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn resident_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l[6..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::var("SOUK_BENCH_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    let body = json!({"name": "Bench", "description": "", "price_cents": 100, "stock": 1_000_000});
    let product = shop.post("/api/products", Some(&admin.token), &body).await;
    let product = product.expect(StatusCode::CREATED)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    println!(
        "souk bench: {orders} orders, one in-process shop, PostgreSQL and NATS on this machine"
    );

    // Latency: one checkout at a time.
    let customer = shop.customer().await;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(orders);
    for _ in 0..orders / 2 {
        latencies.push(checkout(&shop, &customer, &product).await);
    }
    summary("checkout, sequential", latencies, started.elapsed());

    // Throughput: customers checking out at once.
    let concurrency = 16;
    let mut customers = Vec::new();
    for _ in 0..concurrency {
        customers.push(shop.customer().await);
    }
    let per_customer = (orders / 2).div_ceil(concurrency);
    let started = Instant::now();
    let runs = customers.iter().map(|customer| {
        let (shop, product) = (&shop, &product);
        async move {
            let mut samples = Vec::with_capacity(per_customer);
            for _ in 0..per_customer {
                samples.push(checkout(shop, customer, product).await);
            }
            samples
        }
    });
    let samples: Vec<Duration> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    summary(
        &format!("checkout, {concurrency} concurrent"),
        samples,
        started.elapsed(),
    );

    // Catalog reads.
    let path = format!("/api/products/{product}");
    let started = Instant::now();
    let readers = (0..concurrency).map(|_| {
        let (shop, path) = (&shop, &path);
        async move {
            let mut samples = Vec::new();
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until && samples.len() < 100_000 {
                let at = Instant::now();
                assert_eq!(shop.get(path, None).await.status, StatusCode::OK);
                samples.push(at.elapsed());
            }
            samples
        }
    });
    let samples: Vec<Duration> = futures::future::join_all(readers)
        .await
        .into_iter()
        .flatten()
        .collect();
    summary(
        &format!("GET product, {concurrency} concurrent"),
        samples,
        started.elapsed(),
    );

    println!("{:<28} {}", "resident memory", resident_memory());
}
