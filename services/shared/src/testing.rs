//! Test support: a fresh database per test, listeners on free ports, and waiting for a
//! condition with a deadline instead of sleeping.

use std::time::Duration;

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::net::TcpListener;

use crate::db::quote_ident;

pub mod pg;

/// The server tests create their databases on (`SOUK_TEST_DATABASE_URL`, or the local one).
pub fn server_url() -> String {
    std::env::var("SOUK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped (with its connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let server: PgConnectOptions = server_url().parse().expect("SOUK_TEST_DATABASE_URL");
        crate::db::ensure_database(&server, &name)
            .await
            .expect("create test database (is PostgreSQL running on 127.0.0.1:5432?)");
        let url = format!(
            "{}/{name}",
            server_url().rsplit_once('/').map_or("", |(base, _)| base)
        );
        Self { name, url }
    }

    pub fn url(&self) -> crate::config::Secret<String> {
        crate::config::Secret::new(self.url.clone())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_databases(vec![self.name.clone()]);
    }
}

/// Drops databases from a thread of its own (a `Drop` cannot await, and may run inside a
/// runtime). Best effort: a leftover test database harms nobody.
pub fn drop_databases(names: Vec<String>) {
    let joined = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(server) = server_url().parse::<PgConnectOptions>() else {
                return;
            };
            let Ok(mut conn) = PgConnection::connect_with(&server).await else {
                return;
            };
            for name in names {
                let sql = format!(
                    "drop database if exists {} with (force)",
                    quote_ident(&name)
                );
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
    drop(joined);
}

/// A listener on a free loopback port.
pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Polls `check` until it yields `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a dependency (PostgreSQL, NATS) that a test can cut and restore, to
/// see a service lose its dependency and recover, without stopping the shared server. Cut, it
/// closes every proxied connection and stops listening, so new connections are refused.
#[derive(Debug)]
pub struct TcpProxy {
    addr: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    acceptor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = listener().await;
        let (open, _) = tokio::sync::watch::channel(true);
        let proxy = Self {
            addr: listener.local_addr().expect("proxy address"),
            upstream,
            open: std::sync::Arc::new(open),
            acceptor: std::sync::Mutex::new(None),
        };
        proxy.accept(listener);
        proxy
    }

    fn accept(&self, listener: TcpListener) {
        let (open, upstream) = (self.open.clone(), self.upstream);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut closed = open.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        let previous = self.acceptor.lock().expect("proxy lock").replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every proxied connection and refuses new ones, as if the dependency went down.
    pub fn cut(&self) {
        self.open.send_replace(false);
        if let Some(acceptor) = self.acceptor.lock().expect("proxy lock").take() {
            acceptor.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restore(&self) {
        self.open.send_replace(true);
        let listener = eventually(
            "the proxy port to be free again",
            Duration::from_secs(10),
            || async { TcpListener::bind(self.addr).await.ok() },
        )
        .await;
        self.accept(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The local PostgreSQL server's address, for a `TcpProxy` in front of it.
pub fn postgres_addr() -> std::net::SocketAddr {
    let url = server_url();
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432");
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 5432)))
}

/// The NATS server tests use (`SOUK_TEST_NATS_URL`, or the local one).
pub fn nats_url() -> String {
    std::env::var("SOUK_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The local NATS server's address, for a `TcpProxy` in front of it.
pub fn nats_addr() -> std::net::SocketAddr {
    let url = nats_url();
    let host_port = url
        .trim_start_matches("nats://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:4222");
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 4222)))
}

/// The nats-server program for tests that start servers of their own: `SOUK_NATS_SERVER_BIN`, or
/// the one `scripts/setup` builds into its cache (`$SOUK_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/souk`, else `~/.cache/souk`; `bin/nats-server-<version>`). Panics, naming
/// the fix, when there is none: a test that needs it fails rather than passing untested.
pub fn nats_server_binary() -> std::path::PathBuf {
    use std::path::PathBuf;
    let path = std::env::var_os("SOUK_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("SOUK_CACHE_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("souk"))
                })
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/souk"))
                })
                .expect("HOME is set");
            cache
                .join("bin")
                .join(format!("nats-server-{}", souk_contract::NATS_VERSION))
        });
    assert!(
        path.exists(),
        "no nats-server at {}: run scripts/setup (or set SOUK_NATS_SERVER_BIN)",
        path.display()
    );
    path
}

/// A shop name no other test uses: its stream and subjects are the test's own.
pub fn unique_shop() -> crate::config::ShopName {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
        .parse()
        .expect("valid shop name")
}

/// Deletes a shop's stream, best effort, from a thread of its own (callable from `Drop`).
pub fn delete_stream(shop: &crate::config::ShopName) {
    let stream = crate::events::stream_name(shop);
    let joined = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let connect = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(nats_url());
            if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await {
                let jetstream = async_nats::jetstream::new(client);
                let _ =
                    tokio::time::timeout(Duration::from_secs(3), jetstream.delete_stream(stream))
                        .await;
            }
        });
    })
    .join();
    drop(joined);
}
