//! The storefront's listing page under load, in a shop in this process against the local
//! PostgreSQL and NATS: throughput and latency of `GET /products` (a page of 12 products, as
//! HTML) from 32 concurrent connections. Next to it, in the same run, the same products read
//! as JSON from `GET /api/products?page_size=12`: the page's limit on this machine, since it
//! makes the same gRPC call and only renders HTML on top.
//!
//! `cargo bench -p souk-e2e --bench storefront` (with `SQLX_OFFLINE=true`); set
//! `SOUK_BENCH_SECONDS` to change how long each figure is measured (default 5).

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use souk_e2e::{TestShop, json};

const CONNECTIONS: usize = 32;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Reads `path` from `CONNECTIONS` clients at once for `seconds`, then prints the figures.
async fn load(shop: &TestShop, name: &str, path: &str, expect: &str, seconds: u64) {
    let started = Instant::now();
    let clients = (0..CONNECTIONS).map(|_| async move {
        let mut samples = Vec::new();
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until && samples.len() < 1_000_000 {
            let at = Instant::now();
            let reply = shop.get(path, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
            assert!(reply.text.contains(expect), "{path} without {expect:?}");
            samples.push(at.elapsed());
        }
        samples
    });
    let mut samples: Vec<Duration> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    let elapsed = started.elapsed();
    samples.sort_unstable();
    println!(
        "{name:<34} n={:<7} rate={:>8.1}/s  p50={:>8.2?}  p99={:>8.2?}  max={:>8.2?}",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
    );
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("SOUK_BENCH_SECONDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let shop = TestShop::start().await;
    let admin = shop.admin().await;
    for n in 0..24 {
        let body = json!({"name": format!("Bench product {n}"), "description": "for the bench", "price_cents": 100 + n, "stock": 10});
        shop.post("/api/products", Some(&admin.token), &body)
            .await
            .expect(StatusCode::CREATED);
    }
    println!(
        "souk storefront bench: {CONNECTIONS} connections, {seconds} s each, one in-process shop"
    );
    load(
        &shop,
        &format!("GET /products (HTML), {CONNECTIONS} conns"),
        "/products",
        "Bench product 23",
        seconds,
    )
    .await;
    load(
        &shop,
        &format!("limit: GET /api/products, {CONNECTIONS} conns"),
        "/api/products?page_size=12",
        "Bench product 23",
        seconds,
    )
    .await;
}
