//! Finding every replica of a service, and spreading a caller's calls over them.
//!
//! Why: a gRPC channel carries all its calls on one HTTP/2 connection, and a ClusterIP Service
//! balances per connection, so every call of a caller would land on one replica and the others
//! would sit idle. The operator gives each gRPC service a headless Service, whose name resolves
//! to the address of every ready pod. A [`Balanced`] channel keeps a lazy, reconnecting channel
//! per address, takes them in turn, and resolves the name again every few seconds, so replicas
//! that come or go (a scale-up, a rollout, a pod whose database is down and so not ready) are
//! picked up.
//!
//! The invariants:
//! - A call that could not connect never reached a service, so it is safe to send again: it is
//!   sent to the next replica (up to [`ATTEMPTS`] in all), and the replica that refused is set
//!   aside for [`SET_ASIDE`] and the name resolved again at once. So a replica that dies (before
//!   the cluster DNS stops listing it) or stops during a rollout costs no call while another one
//!   serves. A call that reached a replica is never sent twice.
//! - The set of replicas is never empty: until a resolution gives addresses (the first calls
//!   wait for the first resolution, at most its 2 s timeout), the channel dials the name itself, as a plain channel does, so a caller that starts while its callee is down
//!   gets `Unavailable` and recovers by itself. A failed or empty resolution keeps the addresses
//!   the channel has: a DNS hiccup does not drop every replica.
//! - An IP address needs no resolving: it is the one replica.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::Uri;
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{Service, ServiceExt};

/// How many replicas one call may try when it cannot connect.
pub const ATTEMPTS: usize = 3;
/// How long a replica that could not be connected to is tried only after the others.
pub const SET_ASIDE: Duration = Duration::from_secs(5);
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

/// One replica: the URL's name itself (until it resolves), or one address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Name,
    Address(SocketAddr),
}

#[derive(Debug)]
struct Replica {
    key: Key,
    channel: Channel,
    /// Until when it is tried only after the others, since a call could not connect to it.
    set_aside: Mutex<Option<Instant>>,
}

impl Replica {
    fn new(key: Key, channel: Channel) -> Arc<Self> {
        Arc::new(Self {
            key,
            channel,
            set_aside: Mutex::new(None),
        })
    }

    fn set_aside_until(&self) -> Option<Instant> {
        *self
            .set_aside
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_aside(&self, until: Option<Instant>) {
        *self
            .set_aside
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }
}

#[derive(Debug)]
struct Replicas {
    list: RwLock<Vec<Arc<Replica>>>,
    next: AtomicUsize,
    /// Wakes the resolver before its time: a replica refused a connection.
    resolve_now: Notify,
    /// Whether the first resolution is done (or not needed): calls wait for it a moment, so
    /// that the first calls go to the replicas rather than to the name.
    first: tokio::sync::watch::Sender<bool>,
}

impl Replicas {
    /// The replicas in the order a call tries them: in turn from the next one, those set aside
    /// last.
    fn in_turn(&self) -> Vec<Arc<Replica>> {
        let list = self
            .list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if list.is_empty() {
            return list;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        let now = Instant::now();
        let (mut ready, mut aside) = (Vec::new(), Vec::new());
        for replica in list.iter().cycle().skip(start).take(list.len()) {
            match replica.set_aside_until() {
                Some(until) if until > now => aside.push(Arc::clone(replica)),
                _ => ready.push(Arc::clone(replica)),
            }
        }
        ready.extend(aside);
        ready
    }

    fn keys(&self) -> Vec<Key> {
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|r| r.key.clone())
            .collect()
    }
}

/// A channel over every replica of a service (see the module documentation). Cheap to clone:
/// clones share the replicas and their connections.
#[derive(Debug, Clone)]
pub struct Balanced {
    replicas: Arc<Replicas>,
}

/// A lazy channel to every address `url`'s host resolves to. `configure` sets up each
/// replica's endpoint (timeouts); calls carry `url`'s authority whichever address they go to.
pub(crate) fn balanced(
    url: Uri,
    configure: impl Fn(Endpoint) -> Endpoint + Send + 'static,
    discovery: Discovery,
) -> Balanced {
    let host = url.host().unwrap_or_default().to_owned();
    let by_name = configure(Endpoint::from(url.clone())).connect_lazy();
    let replicas = Arc::new(Replicas {
        list: RwLock::new(vec![Replica::new(Key::Name, by_name)]),
        next: AtomicUsize::new(0),
        resolve_now: Notify::new(),
        first: tokio::sync::watch::Sender::new(false),
    });
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok();
    if literal {
        replicas.first.send_replace(true);
    } else {
        let port = url
            .port_u16()
            .unwrap_or(if url.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let connect = move |addr: SocketAddr| {
            let endpoint = Uri::builder()
                .scheme(url.scheme_str().unwrap_or("http"))
                .authority(addr.to_string())
                .path_and_query("/")
                .build()
                .map(Endpoint::from)
                .expect("a socket address is a valid authority");
            configure(endpoint.origin(url.clone())).connect_lazy()
        };
        tokio::spawn(follow(
            host,
            port,
            discovery,
            Arc::downgrade(&replicas),
            connect,
        ));
    }
    Balanced { replicas }
}

/// Resolves `host` every `discovery.every` (or when asked to) and updates the replicas, until
/// the channel is dropped. Replicas that stay keep their connections.
async fn follow(
    host: String,
    port: u16,
    discovery: Discovery,
    replicas: Weak<Replicas>,
    connect: impl Fn(SocketAddr) -> Channel,
) {
    loop {
        let resolved =
            tokio::time::timeout(RESOLVE_TIMEOUT, discovery.resolver.resolve(&host, port)).await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        match resolved {
            Ok(Ok(addresses)) if !addresses.is_empty() => {
                let next: Vec<Key> = {
                    let mut keys: Vec<Key> = addresses.into_iter().map(Key::Address).collect();
                    keys.sort();
                    keys.dedup();
                    keys
                };
                if next != replicas.keys() {
                    tracing::info!(%host, addresses = ?next, "replicas changed");
                    let mut list = replicas
                        .list
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let mut old: BTreeMap<Key, Arc<Replica>> =
                        list.drain(..).map(|r| (r.key.clone(), r)).collect();
                    *list = next
                        .into_iter()
                        .map(|key| match (old.remove(&key), &key) {
                            (Some(kept), _) => kept,
                            (None, Key::Address(addr)) => Replica::new(key.clone(), connect(*addr)),
                            (None, Key::Name) => unreachable!("resolutions yield addresses"),
                        })
                        .collect();
                }
            }
            Ok(Ok(_)) => tracing::debug!(%host, "resolves to no address; keeping the last ones"),
            Ok(Err(err)) => {
                tracing::debug!(%host, error = %err, "cannot resolve; keeping the last addresses");
            }
            Err(_) => tracing::debug!(%host, "resolving timed out; keeping the last addresses"),
        }
        replicas.first.send_replace(true);
        tokio::select! {
            () = replicas.resolve_now.notified() => {}
            () = tokio::time::sleep(discovery.every) => {}
        }
    }
}

/// Whether a call failed before it reached the service: the connection could not be made.
fn could_not_connect(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    /// Always ready: each replica's channel queues its calls, and is asked when the call is
    /// made.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let replicas = Arc::clone(&self.replicas);
        Box::pin(async move {
            let mut first = replicas.first.subscribe();
            // Bounded by the resolution's own timeout; after it, the name is dialled.
            let _ = tokio::time::timeout(RESOLVE_TIMEOUT, first.wait_for(|done| *done)).await;
            let order = replicas.in_turn();
            if let [only] = order.as_slice() {
                // Nothing to try instead: the request goes as it is.
                return send(only, request).await.map_err(Into::into);
            }
            // Sent again only when it could not connect; its body (one message: the services'
            // calls are unary) is kept for that.
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let mut last = None;
            for replica in order.iter().take(ATTEMPTS) {
                let attempt =
                    http::Request::from_parts(parts.clone(), Body::new(Full::new(bytes.clone())));
                match send(replica, attempt).await {
                    Err(err) if could_not_connect(&err) => {
                        tracing::debug!(replica = ?replica.key, error = %err, "cannot connect; trying another replica");
                        replica.set_aside(Some(Instant::now() + SET_ASIDE));
                        replicas.resolve_now.notify_one();
                        last = Some(err);
                    }
                    other => return other.map_err(Into::into),
                }
            }
            Err(last.map_or_else(|| "no replica to call".into(), Into::into))
        })
    }
}

/// One call to one replica; a replica that answers is no longer set aside.
async fn send(
    replica: &Replica,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, tonic::transport::Error> {
    let mut channel = replica.channel.clone();
    let response = ServiceExt::<http::Request<Body>>::ready(&mut channel)
        .await?
        .call(request)
        .await;
    if response.is_ok() && replica.set_aside_until().is_some() {
        replica.set_aside(None);
    }
    response
}
