//! Leader election through a `coordination.k8s.io/v1` Lease, so two replicas can run and only one
//! reconciles. The holder renews the Lease every [`LeaderElection::renew_every`]; a standby takes
//! it over once it has gone unrenewed for its duration. Writes carry the Lease's
//! `resourceVersion`, so two candidates cannot both win a race: the loser gets a conflict.
//!
//! The decision is a pure function ([`decide`]) of the Lease, who we are and the time.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

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

/// The decision for `identity` given the Lease (if any) at `now`.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
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
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match last {
        Some(renewed) if renewed + duration > now => Decision::Wait {
            holder: holder.to_owned(),
        },
        _ => Decision::TakeOver,
    }
}

/// A candidate for one Lease.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_every: Duration,
}

impl LeaderElection {
    /// A candidate `identity` for the Lease `name` of `api`'s namespace.
    pub fn new(api: Api<Lease>, name: String, identity: String) -> Self {
        Self {
            api,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let mut last_holder = None;
        loop {
            match self.try_acquire().await {
                Ok(Decision::Wait { holder }) => {
                    if last_holder.as_ref() != Some(&holder) {
                        info!(lease = %self.name, %holder, "standing by: another replica leads");
                        last_holder = Some(holder);
                    }
                }
                Ok(_) => {
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Err(error) => {
                    warn!(%error, lease = %self.name, "could not read or write the Lease")
                }
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews the Lease until a renewal fails for longer than the Lease lasts (another replica
    /// may then lead) and returns then; the caller must stop reconciling.
    pub async fn keep(&self) {
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire().await {
                Ok(Decision::Wait { holder }) => {
                    warn!(lease = %self.name, %holder, "lost the Lease");
                    return;
                }
                Ok(_) => last_success = tokio::time::Instant::now(),
                Err(error) => {
                    warn!(%error, lease = %self.name, "could not renew the Lease");
                    if last_success.elapsed() >= self.lease_duration {
                        return;
                    }
                }
            }
        }
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
        let decision = decide(lease.as_ref(), &self.identity, now);
        let spec = |previous: Option<&LeaseSpec>, take_over: bool| {
            let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
            LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.lease_duration.as_secs()).unwrap_or(15),
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

        #[tokio::test(flavor = "current_thread")]
        async fn an_expired_lease_is_taken_over_with_its_resource_version() {
            let (client, mut server) = ApiServer::new();
            let expired = Timestamp::now() - SignedDuration::from_secs(60);
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-b", expired, 3));
                let (seen, send) = server.expect(Method::PUT, PATH).await;
                assert_eq!(seen.body["metadata"]["resourceVersion"], "41");
                assert_eq!(seen.body["spec"]["holderIdentity"], "pod-a");
                assert_eq!(seen.body["spec"]["leaseTransitions"], 4);
                respond(send, StatusCode::OK, seen.body);
                server
            };
            let (decision, _server) = within(futures::future::join(
                election(client).try_acquire(),
                scenario,
            ))
            .await;
            assert_eq!(decision.expect("no API error"), Decision::TakeOver);
        }

        #[tokio::test(flavor = "current_thread")]
        async fn losing_the_race_for_a_lease_means_waiting() {
            let (client, mut server) = ApiServer::new();
            let expired = Timestamp::now() - SignedDuration::from_secs(60);
            let scenario = async move {
                let (_, send) = server.expect(Method::GET, PATH).await;
                respond(send, StatusCode::OK, stored("pod-b", expired, 0));
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
        assert_eq!(decide(None, "a", Timestamp::now()), Decision::Create);
    }

    #[test]
    fn the_holder_renews() {
        let now = Timestamp::now();
        assert_eq!(decide(Some(&lease("a", now)), "a", now), Decision::Renew);
    }

    #[test]
    fn a_fresh_lease_of_another_is_respected() {
        let now = Timestamp::now();
        let renewed = now - SignedDuration::from_secs(14);
        assert_eq!(
            decide(Some(&lease("b", renewed)), "a", now),
            Decision::Wait { holder: "b".into() }
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let now = Timestamp::now();
        let renewed = now - SignedDuration::from_secs(16);
        assert_eq!(
            decide(Some(&lease("b", renewed)), "a", now),
            Decision::TakeOver
        );
        assert_eq!(decide(Some(&lease("", now)), "a", now), Decision::TakeOver);
    }
}
