//! Leader election through a `coordination.k8s.io/v1` Lease, so two replicas can run and only one
//! reconciles. Modelled on client-go's leader election:
//!
//! - A standby never compares the holder's `renewTime` with its own clock (the two clocks may
//!   disagree by more than a Lease). It notes when it last saw the Lease record change (its
//!   `resourceVersion`), on its own monotonic clock, and takes the Lease over only once the
//!   record has stood unchanged for the whole `leaseDurationSeconds`.
//! - The leader renews every [`RETRY_PERIOD`] and gives up when it has not renewed for
//!   [`RENEW_DEADLINE`], which is shorter than the Lease: it stops reconciling before any standby
//!   can have seen the Lease unchanged for [`LEASE_DURATION`], so two leaders never overlap.
//! - Writes carry the Lease's `resourceVersion`, so two candidates cannot both win a race: the
//!   loser gets a conflict.
//! - The controller's client is fenced ([`Fence`]): it refuses to send a write once the renew
//!   deadline has passed, measured from when the last successful renewal was *sent*. Stopping
//!   the controller when the deadline passes is not enough: a leader paused (a frozen VM,
//!   SIGSTOP) with a write already decided or queued would send it when it resumes, before it
//!   has looked at the deadline. The API server has no fencing tokens, so what is left is the
//!   moment between the fence's check and the connection task writing the request.
//!
//! The decision is a pure function ([`decide`]) of the Lease, who we are and how long we have
//! seen it unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a Lease lasts without renewal before a standby may take it over.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps leading without a successful renewal: less than the Lease, so it
/// has stopped before anyone may take over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a standby looks.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What a candidate should do with the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody ever held it: create it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder stopped renewing (or released it): take it over.
    TakeOver,
    /// Someone else holds it.
    Wait { holder: String },
}

/// The decision for `identity` given the Lease (if any), which this candidate has seen
/// unchanged for `unchanged_for` on its own clock.
pub fn decide(lease: Option<&Lease>, identity: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Decision::TakeOver
        } else {
            Decision::Create
        };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEASE_DURATION, Duration::from_secs);
    if unchanged_for >= duration {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
        }
    }
}

/// Until when this replica may write as the leader. The election opens it on every successful
/// acquisition or renewal, until [`RENEW_DEADLINE`] after that request was sent, and closes it
/// when it loses the Lease. As a [`tower::Layer`] on the controller's client it refuses every
/// request that may write (any method but the safe GET, HEAD, OPTIONS and TRACE) while closed,
/// without sending it.
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

/// A write refused by the [`Fence`]: this replica is not (or no longer) the leader.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica has not renewed the leader Lease within the renew deadline")]
pub struct NotLeader;

impl Fence {
    fn until(&self) -> Option<Instant> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, until: Option<Instant>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    /// Whether a write may be sent now.
    pub fn is_open(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }
}

impl<S> tower::Layer<S> for Fence {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.clone(),
        }
    }
}

/// A client service behind a [`Fence`].
#[derive(Debug, Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S, B> tower::Service<http::Request<B>> for Fenced<S>
where
    S: tower::Service<http::Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let writes = !request.method().is_safe();
        let fence = self.fence.clone();
        let refused = move || writes && !fence.is_open();
        if refused() {
            return Box::pin(std::future::ready(Err(NotLeader.into())));
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            // Looked at again when first polled: the caller may poll much later (after a
            // pause), and kube's client sends nothing before that.
            if refused() {
                return Err(NotLeader.into());
            }
            response.await.map_err(Into::into)
        })
    }
}

/// The Lease record as last seen, and since when (on this process's monotonic clock).
#[derive(Debug, Clone)]
struct Seen {
    version: Option<String>,
    since: Instant,
}

/// A candidate for one Lease.
#[derive(Debug)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    seen: Mutex<Option<Seen>>,
    fence: Fence,
}

impl LeaderElection {
    /// A candidate `identity` for the Lease `name` of `api`'s namespace.
    pub fn new(api: Api<Lease>, name: String, identity: String) -> Self {
        Self {
            api,
            name,
            identity,
            seen: Mutex::new(None),
            fence: Fence::default(),
        }
    }

    /// The fence for the controller's client: open while this candidate leads.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// How long the Lease read now has stood unchanged, as far as this candidate has seen.
    fn unchanged_for(&self, lease: Option<&Lease>) -> Duration {
        let version = lease.and_then(|l| l.metadata.resource_version.clone());
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.as_ref() {
            Some(last) if last.version == version => last.since.elapsed(),
            _ => {
                *seen = Some(Seen {
                    version,
                    since: Instant::now(),
                });
                Duration::ZERO
            }
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            let sent = Instant::now();
            match self.try_acquire().await {
                Ok(Decision::Wait { holder }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.name, %holder, "standing by: another replica leads");
                        last_holder = Some(holder);
                    }
                }
                Ok(_) => {
                    self.fence.set(Some(sent + RENEW_DEADLINE));
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Err(error) => {
                    warn!(%error, lease = %self.name, "could not read or write the Lease")
                }
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease every [`RETRY_PERIOD`] once [`acquire`](Self::acquire) has returned,
    /// and returns when it has not been renewed for [`RENEW_DEADLINE`] or another holds it,
    /// closing the [`Fence`]; the caller must then stop reconciling at once.
    pub async fn keep(&self) {
        while let Some(until) = self.fence.until() {
            tokio::time::sleep_until((Instant::now() + RETRY_PERIOD).min(until)).await;
            let sent = Instant::now();
            if sent >= until {
                warn!(lease = %self.name, "could not renew the Lease within the renew deadline");
                break;
            }
            // A renewal that itself hangs past the deadline counts as failed.
            let Ok(attempt) = tokio::time::timeout(until - sent, self.try_acquire()).await else {
                warn!(lease = %self.name, "renewing the Lease took past the renew deadline");
                break;
            };
            match attempt {
                Ok(Decision::Wait { holder }) => {
                    warn!(lease = %self.name, %holder, "lost the Lease");
                    break;
                }
                Ok(_) => self.fence.set(Some(sent + RENEW_DEADLINE)),
                Err(error) => warn!(%error, lease = %self.name, "could not renew the Lease"),
            }
        }
        self.fence.set(None);
    }

    /// Gives the Lease up (on shutdown), so a standby takes over at once instead of waiting for
    /// it to expire. Errors are logged: the Lease expires anyway.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(());
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) => info!(lease = %self.name, "released the Lease"),
            Err(error) => warn!(%error, lease = %self.name, "could not release the Lease"),
        }
    }

    /// One round: read the Lease, and create, renew or take it over when [`decide`] says so.
    /// Returns the decision that was carried out (`Wait` when we do not hold it).
    async fn try_acquire(&self) -> Result<Decision, kube::Error> {
        let lease = self.api.get_opt(&self.name).await?;
        let now = Timestamp::now();
        let decision = decide(
            lease.as_ref(),
            &self.identity,
            self.unchanged_for(lease.as_ref()),
        );
        let spec = |previous: Option<&LeaseSpec>, take_over: bool| {
            let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
            LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: if take_over {
                    Some(MicroTime(now))
                } else {
                    previous.and_then(|s| s.acquire_time.clone())
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if take_over && previous.is_some() {
                    transitions + 1
                } else {
                    transitions
                }),
                ..LeaseSpec::default()
            }
        };
        let result = match (&decision, lease) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew | Decision::TakeOver, Some(mut lease)) => {
                let take_over = decision == Decision::TakeOver;
                lease.spec = Some(spec(lease.spec.as_ref(), take_over));
                // replace() sends the resourceVersion read above: a concurrent writer wins,
                // and we see a conflict.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Wait { .. }, _) | (_, None) => return Ok(decision),
        };
        match result {
            Ok(_) => Ok(decision),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(Decision::Wait {
                    holder: "another candidate".to_owned(),
                })
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    mod against_the_api {
        use super::*;
        use crate::fixtures::{ApiServer, respond, within};
        use http::{Method, StatusCode};

        const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/souk-operator";

        fn election(client: kube::Client) -> LeaderElection {
            LeaderElection::new(
                Api::namespaced(client, "default"),
                "souk-operator".into(),
                "pod-a".into(),
            )
        }

        fn stored(holder: &str, renewed: Timestamp, transitions: i32) -> serde_json::Value {
            let mut lease = lease(holder, renewed);
            lease.metadata.name = Some("souk-operator".into());
            lease.metadata.resource_version = Some("41".into());
            if let Some(spec) = lease.spec.as_mut() {
                spec.lease_transitions = Some(transitions);
            }
            serde_json::to_value(lease).expect("lease")
        }

        #[tokio::test(flavor = "current_thread")]
        async fn an_absent_lease_is_created_with_us_as_holder() {
            let (client, mut server) = ApiServer::new();
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(
                    send,
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                );
                let (seen, send) = server
                    .expect(
                        Method::POST,
                        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                    )
                    .await;
                assert_eq!(seen.body["spec"]["holderIdentity"], "pod-a");
                assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
                respond(send, StatusCode::CREATED, seen.body);
                server
            };
            let (decision, _server) = within(futures::future::join(
                election(client).try_acquire(),
                scenario,
            ))
            .await;
            assert_eq!(decision.expect("no API error"), Decision::Create);
        }

        #[tokio::test(flavor = "current_thread", start_paused = true)]
        async fn a_lease_seen_unchanged_for_its_duration_is_taken_over_with_its_resource_version() {
            let (client, mut server) = ApiServer::new();
            let election = election(client);
            // Renewed "just now" by the holder's clock: only our own observation counts.
            let renewed = Timestamp::now();
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-b", renewed, 3));
                server
            };
            let (first, server) =
                within(futures::future::join(election.try_acquire(), scenario)).await;
            assert_eq!(
                first.expect("no API error"),
                Decision::Wait {
                    holder: "pod-b".into()
                }
            );
            tokio::time::advance(LEASE_DURATION).await;
            let mut server = server;
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-b", renewed, 3));
                let (seen, send) = server.expect(Method::PUT, PATH).await;
                assert_eq!(seen.body["metadata"]["resourceVersion"], "41");
                assert_eq!(seen.body["spec"]["holderIdentity"], "pod-a");
                assert_eq!(seen.body["spec"]["leaseTransitions"], 4);
                respond(send, StatusCode::OK, seen.body);
                server
            };
            let (decision, _server) =
                within(futures::future::join(election.try_acquire(), scenario)).await;
            assert_eq!(decision.expect("no API error"), Decision::TakeOver);
        }

        #[tokio::test(flavor = "current_thread")]
        async fn losing_the_race_for_a_lease_means_waiting() {
            let (client, mut server) = ApiServer::new();
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("", Timestamp::now(), 0));
                let (_, send) = server.expect(Method::PUT, PATH).await;
                respond(
                    send,
                    StatusCode::CONFLICT,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
                );
                server
            };
            let (decision, _server) = within(futures::future::join(
                election(client).try_acquire(),
                scenario,
            ))
            .await;
            assert!(
                matches!(decision, Ok(Decision::Wait { .. })),
                "{decision:?}"
            );
        }

        #[tokio::test(flavor = "current_thread")]
        async fn releasing_clears_the_holder() {
            let (client, mut server) = ApiServer::new();
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-a", Timestamp::now(), 0));
                let (seen, send) = server.expect(Method::PUT, PATH).await;
                assert!(
                    seen.body["spec"].get("holderIdentity").is_none(),
                    "{}",
                    seen.body
                );
                assert_eq!(seen.body["metadata"]["resourceVersion"], "41");
                respond(send, StatusCode::OK, seen.body);
                server
            };
            within(futures::future::join(election(client).release(), scenario)).await;
        }

        fn refused_by_the_fence<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
            let Err(error) = result else {
                panic!("sent: {result:?}");
            };
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            while let Some(error) = source {
                if error.is::<NotLeader>() {
                    return true;
                }
                source = error.source();
            }
            panic!("refused, but not by the fence: {error:?}")
        }

        #[tokio::test(flavor = "current_thread", start_paused = true)]
        async fn the_fence_sends_writes_only_within_the_renew_deadline_and_reads_always() {
            use k8s_openapi::api::core::v1::ConfigMap;
            let fence = Fence::default();
            let (client, mut server) = ApiServer::behind(&fence);
            let config_maps = Api::<ConfigMap>::namespaced(client, "default");
            let config_map: ConfigMap =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}}))
                    .expect("config map");
            let post = PostParams::default();
            let create = || config_maps.create(&post, &config_map);

            // Never led: the write is not sent (the next request the server sees is the read).
            assert!(refused_by_the_fence(within(create()).await));
            let scenario = async {
                let (_, send) = server
                    .expect(Method::GET, "/api/v1/namespaces/default/configmaps/x")
                    .await;
                respond(
                    send,
                    StatusCode::OK,
                    serde_json::json!({"metadata": {"name": "x"}}),
                );
            };
            let (read, ()) = within(futures::future::join(config_maps.get("x"), scenario)).await;
            read.expect("a read passes a closed fence");

            // Renewed now: writes go out until the renew deadline, and not at it.
            fence.set(Some(Instant::now() + RENEW_DEADLINE));
            tokio::time::advance(RENEW_DEADLINE - Duration::from_millis(1)).await;
            let scenario = async {
                let (seen, send) = server
                    .expect(Method::POST, "/api/v1/namespaces/default/configmaps")
                    .await;
                respond(send, StatusCode::CREATED, seen.body);
            };
            let (created, ()) = within(futures::future::join(create(), scenario)).await;
            created.expect("a write within the deadline is sent");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(refused_by_the_fence(within(create()).await));
        }

        #[tokio::test(flavor = "current_thread", start_paused = true)]
        async fn a_leader_that_cannot_renew_closes_its_fence_by_the_renew_deadline() {
            let (client, mut server) = ApiServer::new();
            let election = election(client);
            let fence = election.fence();
            assert!(!fence.is_open(), "open before leading");
            let sent = Instant::now();
            let scenario = async {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-a", Timestamp::now(), 0));
                let (seen, send) = server.expect(Method::PUT, PATH).await;
                respond(send, StatusCode::OK, seen.body);
            };
            within(futures::future::join(election.acquire(), scenario)).await;
            assert!(fence.is_open(), "closed once leading");

            // Every renewal fails from now on.
            let failing = async {
                loop {
                    let (_, send) = server.expect(Method::GET, PATH).await;
                    respond(
                        send,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500}),
                    );
                }
            };
            tokio::select! {
                () = election.keep() => {}
                () = failing => {}
            }
            assert!(!fence.is_open(), "open after keep gave up");
            assert!(
                sent.elapsed() <= RENEW_DEADLINE,
                "gave up {:?} after the renewal that made it leader",
                sent.elapsed()
            );
        }

        #[tokio::test(flavor = "current_thread")]
        async fn a_lease_held_by_another_is_not_written() {
            let (client, mut server) = ApiServer::new();
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-b", Timestamp::now(), 0));
                server
            };
            let (decision, _server) = within(futures::future::join(
                election(client).try_acquire(),
                scenario,
            ))
            .await;
            assert_eq!(
                decision.expect("no API error"),
                Decision::Wait {
                    holder: "pod-b".into()
                }
            );
        }
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(decide(None, "a", Duration::ZERO), Decision::Create);
    }

    #[test]
    fn the_holder_renews() {
        let lease = lease("a", Timestamp::now());
        assert_eq!(decide(Some(&lease), "a", Duration::ZERO), Decision::Renew);
    }

    #[test]
    fn a_lease_is_judged_by_how_long_we_saw_it_unchanged_not_by_its_renew_time() {
        // A holder whose clock runs a minute behind ours: its renewTime looks expired to us,
        // yet it renews; we must wait.
        let behind = Timestamp::now() - SignedDuration::from_secs(60);
        assert_eq!(
            decide(Some(&lease("b", behind)), "a", Duration::from_secs(14)),
            Decision::Wait { holder: "b".into() }
        );
        // A holder whose clock runs ahead: its renewTime looks fresh forever; once we have
        // seen it unchanged for the whole Lease, it is taken over.
        let ahead = Timestamp::now() + SignedDuration::from_secs(3600);
        assert_eq!(
            decide(Some(&lease("b", ahead)), "a", Duration::from_secs(15)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease("", ahead)), "a", Duration::ZERO),
            Decision::TakeOver
        );
    }

    #[test]
    fn the_leader_gives_up_before_a_standby_may_take_over() {
        // The leader stops at RENEW_DEADLINE after its last renewal; a standby saw that renewal
        // at the earliest when it was written, and waits LEASE_DURATION from then.
        assert!(RENEW_DEADLINE + RETRY_PERIOD < LEASE_DURATION);
    }
}
