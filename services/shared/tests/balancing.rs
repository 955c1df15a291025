//! A client channel spreads its calls over every replica its service's name resolves to, and
//! follows the replicas that come and go: real gRPC servers (the services' own `grpc::serve`)
//! on 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on Linux) on one port, as the pods of
//! a headless Service are, and a resolver the test controls, as the cluster DNS would answer.
//!
//! Every call must succeed while one replica serves: the channel sends a call that could not
//! connect to the next replica.
//!
//! Each replica serves the health service under its own name, so a health check for replica
//! A's name tells who answered: A says `SERVING`, B says `NOT_FOUND`.

#![allow(clippy::print_stdout, reason = "the test prints how the calls spread")]

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use souk_shared::{
    Error, Shutdown,
    discovery::{Discovery, Resolution, Resolve},
    grpc::{self, GrpcService},
    trace::TracedChannel,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{Code, service::Routes};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const REPLICA_A: &str = "souk.test.ReplicaA";
const REPLICA_B: &str = "souk.test.ReplicaB";

/// The answers of a name the test changes (`None`: it does not resolve), and how many times it
/// was asked.
#[derive(Clone, Default)]
struct TestDns {
    answer: Arc<Mutex<Option<Vec<SocketAddr>>>>,
    asked: Arc<AtomicUsize>,
}

impl TestDns {
    fn answer(&self, answer: Option<Vec<SocketAddr>>) {
        *self.answer.lock().expect("lock") = answer;
    }

    /// Waits until the name was asked twice more: the answer set before the call has been
    /// resolved and handed to the channel (the channel sends its changes before asking again).
    async fn wait_until_taken(&self) {
        let seen = self.asked.load(Ordering::SeqCst);
        wait_for("the channel to resolve the name again", || {
            self.asked.load(Ordering::SeqCst) >= seen + 2
        })
        .await;
    }
}

impl Resolve for TestDns {
    fn resolve(&self, _host: &str, _port: u16) -> Resolution {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let answer = self
            .answer
            .lock()
            .expect("lock")
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"));
        Box::pin(async move { answer })
    }
}

struct Replica {
    address: SocketAddr,
    shutdown: Shutdown,
    served: JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    fn start(listener: TcpListener, name: &'static str) -> Self {
        let address = listener.local_addr().expect("address");
        let shutdown = Shutdown::new();
        let service = GrpcService::new(name, Routes::default());
        let served = tokio::spawn(grpc::serve(service, listener, shutdown.clone()));
        Self {
            address,
            shutdown,
            served,
        }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.served.await.expect("join").expect("served");
    }
}

/// Two listeners on one port, on 127.0.0.2 and 127.0.0.3.
async fn two_listeners() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = first.local_addr().expect("address").port();
        if let Ok(second) = TcpListener::bind(("127.0.0.3", port)).await {
            return (first, second);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Answered {
    A,
    B,
}

/// Who answered one call, or the failed call's status.
async fn call(channel: &TracedChannel) -> Result<Answered, tonic::Status> {
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: REPLICA_A.to_owned(),
        })
        .await;
    match answer {
        Ok(_) => Ok(Answered::A),
        Err(status) if status.code() == Code::NotFound => Ok(Answered::B),
        Err(status) => Err(status),
    }
}

fn balanced(url: &str, dns: &TestDns) -> TracedChannel {
    let discovery = Discovery::new(dns.clone(), Duration::from_millis(20));
    grpc::channel_with("SOUK_TEST_URL", url, Duration::from_secs(5), discovery).expect("channel")
}

#[tokio::test]
async fn calls_spread_over_every_replica_and_follow_the_ones_that_come_and_go() {
    let (first, second) = two_listeners().await;
    let port = first.local_addr().expect("address").port();
    let a = Replica::start(first, REPLICA_A);
    let b = Replica::start(second, REPLICA_B);
    let dns = TestDns::default();
    dns.answer(Some(vec![a.address, b.address]));
    let channel = balanced(&format!("http://replicas.souk.test:{port}"), &dns);

    let mut answered = (0, 0);
    for _ in 0..200 {
        match call(&channel).await.expect("a call with both replicas up") {
            Answered::A => answered.0 += 1,
            Answered::B => answered.1 += 1,
        }
    }
    println!(
        "200 calls over one channel: {} to replica A, {} to replica B",
        answered.0, answered.1
    );
    assert!(
        answered.0 >= 40 && answered.1 >= 40,
        "calls should spread over both replicas, got {answered:?}"
    );

    // B goes: the name stops resolving to it (as the cluster DNS does for a pod that is
    // terminating or not ready), then it stops. Every call still succeeds, on A.
    dns.answer(Some(vec![a.address]));
    dns.wait_until_taken().await;
    let b_address = b.address;
    b.stop().await;
    for _ in 0..100 {
        let answered = call(&channel).await.expect("a call after B went away");
        assert_eq!(answered, Answered::A, "B is gone");
    }

    // A new replica comes on B's address: it gets calls again.
    let listener = TcpListener::bind(b_address).await.expect("bind B again");
    let b = Replica::start(listener, REPLICA_B);
    dns.answer(Some(vec![a.address, b.address]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if call(&channel).await.expect("a call") == Answered::B {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new replica never got a call"
        );
    }

    // The name fails to resolve for a while: the channel keeps the replicas it knows.
    dns.answer(None);
    dns.wait_until_taken().await;
    let mut seen_b = false;
    for _ in 0..100 {
        seen_b |= call(&channel).await.expect("a call while DNS fails") == Answered::B;
    }
    assert!(
        seen_b,
        "both replicas stay in use while the name fails to resolve"
    );

    // B dies while the name still lists it (a crash, or a pod stopping before the cluster DNS
    // has caught up): a call that cannot connect to it goes to A, so every call succeeds.
    dns.answer(Some(vec![a.address, b.address]));
    b.stop().await;
    for _ in 0..100 {
        let answered = call(&channel)
            .await
            .expect("a call while B is down but listed");
        assert_eq!(answered, Answered::A);
    }

    a.stop().await;
}

#[tokio::test]
async fn a_caller_started_before_its_callee_fails_as_unavailable_then_reaches_it() {
    let listener = TcpListener::bind("127.0.0.4:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let dns = TestDns::default();
    dns.answer(Some(vec![address]));
    let channel = balanced(&format!("http://late.souk.test:{}", address.port()), &dns);

    let status = call(&channel).await.expect_err("nobody listens yet");
    assert!(
        matches!(Error::from_upstream("test", status), Error::Unavailable(_)),
        "a callee that is down is unavailable"
    );

    let replica = Replica::start(
        TcpListener::bind(address).await.expect("bind again"),
        REPLICA_A,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&channel).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the channel never reached the callee"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.stop().await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_yet_is_dialled_as_it_is() {
    // The test's resolver never answers; the channel dials the name itself (`localhost`, from
    // /etc/hosts), as a channel without discovery does, instead of waiting for addresses.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let replica = Replica::start(listener, REPLICA_A);
    let dns = TestDns::default();
    dns.answer(None);
    let channel = balanced(&format!("http://localhost:{port}"), &dns);

    let answered = tokio::time::timeout(Duration::from_secs(10), call(&channel))
        .await
        .expect("a call does not wait for a resolution")
        .expect("a call to the name itself");
    assert_eq!(answered, Answered::A);
    replica.stop().await;
}

#[test]
fn a_url_that_is_not_http_host_port_is_a_clear_error() {
    for url in [
        "localhost:50051",
        "https://user:50051",
        "http://",
        "not a url",
    ] {
        let err = grpc::channel("SOUK_USER_URL", url).expect_err(url);
        assert!(
            err.to_string().starts_with("SOUK_USER_URL: "),
            "{url}: the error names the setting: {err}"
        );
    }
}
