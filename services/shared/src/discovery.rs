//! Finding every replica of a service, so that a client channel spreads its calls over them.
//!
//! Why: a gRPC channel carries all its calls on one HTTP/2 connection, and a ClusterIP Service
//! balances per connection, so every call of a caller lands on one replica and the others sit
//! idle. The operator gives each gRPC service a headless Service, whose name resolves to the
//! address of every ready pod; the channel keeps a connection per address and picks one per call
//! (power of two choices), and resolves the name again every few seconds, so replicas that come
//! or go (a scale-up, a rollout, a pod whose database is down and so not ready) are picked up.
//!
//! The invariants: the channel never has an empty set of endpoints (a call would wait for one
//! forever). Until a resolution gives addresses, it dials the name itself, as a plain channel
//! does, so a caller that starts while its callee is down gets `Unavailable` and recovers by
//! itself. A failed or empty resolution keeps the addresses the channel has: a DNS hiccup does
//! not drop every replica, and a service with no ready replica fails its calls as before.
//! An IP address needs no resolving: it is one endpoint.

use std::{
    collections::BTreeSet,
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use http::Uri;
use tokio::sync::mpsc::Sender;
use tonic::transport::{Channel, Endpoint, channel::Change};

/// How long one resolution may take before the channel keeps what it has and tries later.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a resolution yields.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves a host and port to the addresses that serve it.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> Resolution;
}

/// The system's resolver (in a cluster, the cluster DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Resolution {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// How a channel finds the replicas behind its URL: a resolver, asked again every `every`.
#[derive(Clone)]
pub struct Discovery {
    resolver: Arc<dyn Resolve>,
    every: Duration,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// The system resolver every 5 s: the cluster DNS caches a Service's records for 5 s.
    pub fn dns() -> Self {
        Self::new(SystemResolver, Duration::from_secs(5))
    }

    pub fn new(resolver: impl Resolve, every: Duration) -> Self {
        Self {
            resolver: Arc::new(resolver),
            every,
        }
    }
}

/// An endpoint of the channel: the URL's name itself (until it resolves), or one address.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum Key {
    Name,
    Address(SocketAddr),
}

/// A lazy channel to every address `url`'s host resolves to. `configure` sets up each
/// endpoint (timeouts); calls carry `url`'s authority whichever address they go to.
pub(crate) fn balanced(
    url: Uri,
    configure: impl Fn(Endpoint) -> Endpoint + Send + 'static,
    discovery: Discovery,
) -> Channel {
    let host = url.host().unwrap_or_default().to_owned();
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return configure(Endpoint::from(url)).connect_lazy();
    }
    let port = url
        .port_u16()
        .unwrap_or(if url.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let (channel, changes) = Channel::balance_channel(16);
    // The name first, so that calls never wait for the first resolution; a new channel has
    // room in its queue of changes.
    let _ = changes.try_send(Change::Insert(
        Key::Name,
        configure(Endpoint::from(url.clone())),
    ));
    let address = move |addr: SocketAddr| {
        let endpoint = Uri::builder()
            .scheme(url.scheme_str().unwrap_or("http"))
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .map(Endpoint::from)
            .expect("a socket address is a valid authority");
        configure(endpoint.origin(url.clone()))
    };
    tokio::spawn(follow(host, port, discovery, changes, address));
    channel
}

/// Resolves `host` every `discovery.every` and tells the channel which addresses came and went,
/// until the channel is dropped.
async fn follow(
    host: String,
    port: u16,
    discovery: Discovery,
    changes: Sender<Change<Key, Endpoint>>,
    endpoint: impl Fn(SocketAddr) -> Endpoint,
) {
    // Empty while the channel dials the name.
    let mut current = BTreeSet::new();
    loop {
        let resolved =
            tokio::time::timeout(RESOLVE_TIMEOUT, discovery.resolver.resolve(&host, port)).await;
        match resolved {
            Ok(Ok(addresses)) if !addresses.is_empty() => {
                let next: BTreeSet<SocketAddr> = addresses.into_iter().collect();
                if next != current {
                    tracing::info!(%host, addresses = ?next, "replicas changed");
                    // Additions first: the set of endpoints is never empty.
                    let mut updates: Vec<Change<Key, Endpoint>> = next
                        .difference(&current)
                        .map(|&addr| Change::Insert(Key::Address(addr), endpoint(addr)))
                        .collect();
                    if current.is_empty() {
                        updates.push(Change::Remove(Key::Name));
                    }
                    updates.extend(
                        current
                            .difference(&next)
                            .map(|&addr| Change::Remove(Key::Address(addr))),
                    );
                    for update in updates {
                        if changes.send(update).await.is_err() {
                            return;
                        }
                    }
                    current = next;
                }
            }
            Ok(Ok(_)) => tracing::debug!(%host, "resolves to no address; keeping the last ones"),
            Ok(Err(err)) => {
                tracing::debug!(%host, error = %err, "cannot resolve; keeping the last addresses");
            }
            Err(_) => tracing::debug!(%host, "resolving timed out; keeping the last addresses"),
        }
        tokio::select! {
            () = changes.closed() => return,
            () = tokio::time::sleep(discovery.every) => {}
        }
    }
}
