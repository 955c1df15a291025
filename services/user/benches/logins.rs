//! The user service's memory under a flood of logins (issue 13, item 1): 200 concurrent
//! wrong-password logins against a user service in this process, first with the hashing bound
//! of this machine, then with no effective bound (200 at once), printing the process's peak
//! resident memory after each next to the 150 MiB limit.
//!
//! `SQLX_OFFLINE=true cargo bench -p souk-user --bench logins` (PostgreSQL on 127.0.0.1:5432).
//! `SOUK_BENCH_LOGINS` changes the number of logins (default 200).

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::time::{Duration, Instant};

use souk_protos::v1::{LoginRequest, user_service_client::UserServiceClient};
use souk_shared::{
    Shutdown,
    config::Secret,
    db::DatabaseLocation,
    jwt::{KeyPair, Signer, Verifier},
    testing::{TestDatabase, listener},
};
use souk_user::{AdminAccount, HashLimits, Settings};
use tonic::Code;

const LIMIT_MIB: f64 = 150.0;

/// `VmHWM` (peak) and `VmRSS` (now) of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn flood(db: &TestDatabase, limits: HashLimits, logins: usize) {
    let keys = KeyPair::generate().expect("keys");
    let settings = Settings {
        database: DatabaseLocation::Own(db.url()),
        signer: Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(900))
            .expect("signer"),
        verifier: Verifier::from_pem(&keys.public_pem).expect("verifier"),
        admin: Some(AdminAccount {
            email: "root@example.com".into(),
            password: Secret::new("admin-password".into()),
        }),
        hash_limits: limits,
        refresh_ttl: Duration::from_secs(3600),
    };
    let shutdown = Shutdown::new();
    let service = souk_user::service(settings)
        .await
        .expect("settings")
        .ready()
        .await
        .expect("start");
    let listener = listener().await;
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(service.serve(listener, shutdown.clone()));
    let client = UserServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let started = Instant::now();
    let tasks: Vec<_> = (0..logins)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let code = client
                    .login(LoginRequest {
                        email: "root@example.com".into(),
                        password: "wrong-password".into(),
                    })
                    .await
                    .map_or_else(|status| status.code(), |_| Code::Ok);
                (code, began.elapsed())
            })
        })
        .collect();
    let (mut refused, mut checked, mut slowest_refusal) = (0, 0, Duration::ZERO);
    for task in tasks {
        let (code, took) = task.await.expect("task");
        match code {
            Code::Unavailable => {
                refused += 1;
                slowest_refusal = slowest_refusal.max(took);
            }
            Code::Unauthenticated => checked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let (peak, now) = memory();
    println!(
        "{:<22} logins={logins} checked={checked} refused(503)={refused} slowest refusal={slowest_refusal:.2?} in {elapsed:.2?}  peak RSS={peak:.0} MiB  RSS after={now:.0} MiB  limit={LIMIT_MIB:.0} MiB  {}",
        format!("{}×running {}×queued", limits.concurrent, limits.queued),
        if peak <= LIMIT_MIB { "OK" } else { "OVER" },
    );
    shutdown.trigger();
}

#[tokio::main]
async fn main() {
    let logins = std::env::var("SOUK_BENCH_LOGINS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let db = TestDatabase::create().await;
    let (peak, now) = memory();
    println!("before                 peak RSS={peak:.0} MiB  RSS={now:.0} MiB");
    flood(&db, HashLimits::for_this_machine(), logins).await;
    // The same flood with no effective bound, for comparison (peak memory only ever rises, so
    // this one runs second).
    flood(
        &db,
        HashLimits {
            concurrent: logins,
            queued: logins,
        },
        logins,
    )
    .await;
}
