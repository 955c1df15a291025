//! The reconciler: from a `Shop` to its children, applied server-side with one field manager.
//!
//! One reconcile, in order:
//! 1. compute the desired state (pure; a bad spec stops here: `Degraded`, nothing applied);
//! 2. check that the Secrets the user provides exist with their keys (same outcome if not);
//! 3. create the generated Secrets that are absent (never overwrite one);
//! 4. apply every child (NetworkPolicies, databases and NATS first, then the services, then the
//!    Ingress), then
//!    delete the children the spec no longer needs (a database become external, say);
//! 5. compute the status from what the API server answered and patch it when it changed;
//! 6. record Events for what changed (secrets generated, shop ready) or failed.
//!
//! Failures go through [`error_policy`], which requeues with a per-shop exponential backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use crate::desired::{self, Child, Desired, MANAGER, ObsoleteKind, secrets};
use crate::metrics::Metrics;
use crate::shop::{Shop, ShopStatus};
use crate::status;
use crate::validate::{RequiredSecret, SpecError, describe_keys, required_secrets};

/// How often a ready shop is looked at again when nothing changes.
const RESYNC_READY: Duration = Duration::from_secs(300);
/// How often a shop on its way to ready is looked at (child watches usually come sooner).
const RESYNC_PROGRESSING: Duration = Duration::from_secs(15);
/// How often a shop waiting for a user's Secret is looked at (the Secret's watch usually comes
/// sooner).
const RESYNC_MISSING_SECRET: Duration = Duration::from_secs(30);

/// A reconcile that failed for a reason outside the spec: it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Shop has no namespace")]
    NoNamespace,

    #[error("could not {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error(transparent)]
    KeyEncoding(#[from] secrets::KeyEncodingError),
}

impl Error {
    /// The reason recorded in metrics, Events and the `Degraded` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoNamespace => "NoNamespace",
            Self::Kube { .. } => "ApplyFailed",
            Self::KeyEncoding(_) => "KeyGenerationFailed",
        }
    }

    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Consecutive failures per shop (`namespace/name`), for the backoff. A std mutex: it is
    /// never held across an await.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose Events are reported as `souk-operator` (instance `instance`, the pod name).
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A poisoned map of counters is still a map of counters.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn publish(&self, shop: &Shop, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &shop.object_ref(&())).await {
            // An Event is a courtesy to people; failing to record one must not fail the shop.
            warn!(%error, reason, "could not record an Event");
        }
    }
}

/// Reconciles one shop.
pub async fn reconcile(shop: Arc<Shop>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", shop = %shop.name_any(), namespace = shop.namespace().unwrap_or_default());
    async move {
        let _timer = ctx.metrics.reconcile_started();
        let result = reconcile_shop(&shop, &ctx).await;
        let key = key(&shop);
        match &result {
            Ok(_) => {
                ctx.failures().remove(&key);
            }
            Err(error) => {
                // Tell the shop's readers before the retry; if even that fails, the error
                // policy still backs off.
                degrade(&shop, &ctx, error.reason(), &error.to_string()).await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

async fn reconcile_shop(shop: &Shop, ctx: &Context) -> Result<Action, Error> {
    let namespace = shop.namespace().ok_or(Error::NoNamespace)?;
    let client = ctx.client.clone();
    if shop.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children; re-applying them would fight it.
        return Ok(Action::await_change());
    }

    let mut desired = match desired::desired(shop) {
        Ok(desired) => desired,
        Err(error) => return refuse(shop, ctx, &error).await,
    };
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    // The contents of every Secret read on the way, for the pods' secrets hash.
    let mut seen = SeenSecrets::new();
    for required in required_secrets(shop) {
        match check_secret(&secrets_api, &namespace, &required).await? {
            Ok(secret) => {
                seen.insert(required.name.clone(), Some(contents(secret)));
            }
            Err(error) => return refuse(shop, ctx, &error).await,
        }
    }

    let generated = create_missing_secrets(shop, &secrets_api, &desired, &mut seen).await?;
    stamp_secret_hashes(shop, &secrets_api, &mut desired, &mut seen).await?;
    let applied = apply_children(&client, &namespace, &desired).await?;
    let pruned = prune(shop, &client, &namespace).await?;

    let observation = status::observe(shop, &namespace, &applied);
    let new_status = status::applied(shop, observation, shop.status.as_ref(), Timestamp::now());
    let ready = is_ready(Some(&new_status));
    let became_ready = ready && !is_ready(shop.status.as_ref());
    patch_status_if_changed(shop, ctx, &namespace, new_status).await?;

    if !generated.is_empty() {
        ctx.publish(
            shop,
            EventType::Normal,
            "SecretsGenerated",
            format!("generated {}", generated.join(", ")),
        )
        .await;
    }
    if !pruned.is_empty() {
        ctx.publish(
            shop,
            EventType::Normal,
            "Pruned",
            format!(
                "pruned {}, no longer in the spec (a database's or NATS's StatefulSet is scaled to zero, its volume kept)",
                pruned.join(", ")
            ),
        )
        .await;
    }
    if became_ready {
        info!("shop is ready");
        ctx.publish(
            shop,
            EventType::Normal,
            "ShopReady",
            "every component is ready".to_owned(),
        )
        .await;
    }
    Ok(Action::requeue(if ready {
        RESYNC_READY
    } else {
        RESYNC_PROGRESSING
    }))
}

fn is_ready(status: Option<&ShopStatus>) -> bool {
    status
        .and_then(|s| s.condition(status::READY))
        .is_some_and(|c| c.status == "True")
}

/// A spec the operator cannot act on: `Degraded`, a Warning Event when that is news, no write
/// to any child. Not an error: retrying will not help until the spec (or the Secret) changes.
async fn refuse(shop: &Shop, ctx: &Context, error: &SpecError) -> Result<Action, Error> {
    warn!(%error, "spec refused");
    ctx.metrics.reconcile_failed(error.reason());
    degrade(shop, ctx, error.reason(), &error.to_string()).await;
    Ok(Action::requeue(match error {
        SpecError::MissingSecret { .. } | SpecError::MissingSecretKey { .. } => {
            RESYNC_MISSING_SECRET
        }
        _ => RESYNC_READY,
    }))
}

/// Sets `Degraded` (and not `Ready`) with `reason` and `message`, and records a Warning Event the
/// first time this message is seen. Failures here are logged only: the caller already has an
/// outcome to report.
async fn degrade(shop: &Shop, ctx: &Context, reason: &str, message: &str) {
    let Some(namespace) = shop.namespace() else {
        return;
    };
    let new_status = status::failed(
        shop,
        reason,
        message,
        shop.status.as_ref(),
        Timestamp::now(),
    );
    let news = shop
        .status
        .as_ref()
        .and_then(|s| s.condition(status::DEGRADED))
        .is_none_or(|c| c.status != "True" || c.message != message);
    if let Err(error) = patch_status_if_changed(shop, ctx, &namespace, new_status).await {
        warn!(%error, "could not record the failure in the status");
    }
    if news {
        ctx.publish(shop, EventType::Warning, reason, message.to_owned())
            .await;
    }
}

async fn patch_status_if_changed(
    shop: &Shop,
    ctx: &Context,
    namespace: &str,
    status: ShopStatus,
) -> Result<(), Error> {
    if shop.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<Shop> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = Patch::Apply(serde_json::json!({
        "apiVersion": Shop::api_version(&()),
        "kind": Shop::kind(&()),
        "status": status,
    }));
    api.patch_status(
        &shop.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &patch,
    )
    .await
    .map_err(Error::kube("patch the Shop's status"))?;
    Ok(())
}

/// Secrets by name: their contents (every key, `data` and `stringData`), `None` if absent.
type SeenSecrets = BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>;

fn contents(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut contents: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (key, value) in secret.string_data.unwrap_or_default() {
        contents.insert(key, value.into_bytes());
    }
    contents
}

/// Looks up a Secret the user provides. `Ok(Err(_))` is a spec problem, `Err(_)` an API failure.
async fn check_secret(
    api: &Api<Secret>,
    namespace: &str,
    required: &RequiredSecret,
) -> Result<Result<Secret, SpecError>, Error> {
    let secret = api
        .get_opt(&required.name)
        .await
        .map_err(Error::kube(format!("read Secret {}", required.name)))?;
    let Some(secret) = secret else {
        return Ok(Err(SpecError::MissingSecret {
            name: required.name.clone(),
            namespace: namespace.to_owned(),
            field: required.field.clone(),
            keys: describe_keys(&required.keys),
            hint: required.hint,
        }));
    };
    for key in &required.keys {
        let in_data = secret.data.as_ref().is_some_and(|d| d.contains_key(key));
        let in_string_data = secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key));
        if !in_data && !in_string_data {
            return Ok(Err(SpecError::MissingSecretKey {
                name: required.name.clone(),
                field: required.field.clone(),
                key: key.clone(),
                hint: required.hint,
            }));
        }
    }
    Ok(Ok(secret))
}

/// Creates the generated Secrets that do not exist yet; returns the names of those created.
async fn create_missing_secrets(
    shop: &Shop,
    api: &Api<Secret>,
    desired: &Desired,
    seen: &mut SeenSecrets,
) -> Result<Vec<String>, Error> {
    let mut created = Vec::new();
    for which in &desired.generated_secrets {
        let name = which.name();
        let existing = api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("read Secret {name}")))?;
        if let Some(existing) = existing {
            seen.insert(name.to_owned(), Some(contents(existing)));
            continue;
        }
        let secret = secrets::generate(shop, which, &mut rand_core::OsRng)?;
        let params = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &secret).await {
            Ok(made) => {
                seen.insert(name.to_owned(), Some(contents(made)));
                info!(secret = name, "generated Secret");
                created.push(name.to_owned());
            }
            // Another replica (or a person) made it first: theirs stands.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("create Secret {name}"),
                    source,
                });
            }
        }
    }
    Ok(created)
}

/// Stamps each Deployment's pod template (and the managed NATS's) with a hash of the Secrets
/// its pods read, so that a changed admin, JWT, database or NATS users' Secret rolls the pods
/// that read it. Secrets not in `seen` are read (and added to it).
async fn stamp_secret_hashes(
    shop: &Shop,
    api: &Api<Secret>,
    desired: &mut Desired,
    seen: &mut SeenSecrets,
) -> Result<(), Error> {
    for child in &mut desired.children {
        let names = match child {
            Child::Deployment(deployment) => desired::secrets_read(deployment),
            Child::StatefulSet(set) => match desired::nats_secrets_read(shop, set) {
                Some(names) => names,
                None => continue,
            },
            _ => continue,
        };
        let mut read = BTreeMap::new();
        for name in names {
            if !seen.contains_key(&name) {
                let secret = api
                    .get_opt(&name)
                    .await
                    .map_err(Error::kube(format!("read Secret {name}")))?;
                seen.insert(name.clone(), secret.map(contents));
            }
            read.insert(name.clone(), seen[&name].clone());
        }
        let hash = desired::secrets_hash(&read);
        match child {
            Child::Deployment(deployment) => desired::stamp_secrets_hash(deployment, hash),
            Child::StatefulSet(set) => desired::stamp_nats_secrets_hash(set, hash),
            _ => {}
        }
    }
    Ok(())
}

/// Applies every child in order and returns them as the API server answered.
async fn apply_children(
    client: &Client,
    namespace: &str,
    desired: &Desired,
) -> Result<Vec<Child>, Error> {
    let mut applied = Vec::with_capacity(desired.children.len());
    for child in &desired.children {
        let answer = match child {
            Child::NetworkPolicy(o) => Child::NetworkPolicy(apply(client, namespace, o).await?),
            Child::ConfigMap(o) => Child::ConfigMap(apply(client, namespace, o).await?),
            Child::Service(o) => Child::Service(apply(client, namespace, o).await?),
            Child::StatefulSet(o) => Child::StatefulSet(apply(client, namespace, o).await?),
            Child::Deployment(o) => Child::Deployment(apply(client, namespace, o).await?),
            Child::Ingress(o) => Child::Ingress(apply(client, namespace, o).await?),
        };
        applied.push(answer);
    }
    Ok(applied)
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    // k8s-openapi serialises apiVersion and kind, which an apply patch needs.
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))
}

/// Deletes the objects the spec no longer needs ([`desired::obsolete`]), only those this shop
/// controls (an object of the same name made by someone else is left alone). Returns what was
/// deleted, as `Kind/name`.
async fn prune(shop: &Shop, client: &Client, namespace: &str) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    for obsolete in desired::obsolete(shop) {
        let done = match obsolete.kind {
            ObsoleteKind::Service => {
                delete_owned::<Service>(shop, client, namespace, &obsolete.name).await?
            }
            ObsoleteKind::StatefulSet => {
                park_owned(shop, client, namespace, &obsolete.name).await?
            }
            ObsoleteKind::Ingress => {
                delete_owned::<Ingress>(shop, client, namespace, &obsolete.name).await?
            }
            ObsoleteKind::NetworkPolicy => {
                delete_owned::<NetworkPolicy>(shop, client, namespace, &obsolete.name).await?
            }
            ObsoleteKind::ConfigMap => {
                delete_owned::<ConfigMap>(shop, client, namespace, &obsolete.name).await?
            }
        };
        if done {
            info!(kind = obsolete.kind.as_str(), name = %obsolete.name, "pruned, no longer in the spec");
            deleted.push(format!("{}/{}", obsolete.kind.as_str(), obsolete.name));
        }
    }
    Ok(deleted)
}

/// A data-holding StatefulSet the spec no longer needs (its database or NATS became external) is
/// scaled to zero, never deleted: its volume keeps the data, and switching back brings it back.
/// Deleting it is a person's decision (or the Shop's deletion). Returns whether it was scaled now.
async fn park_owned(
    shop: &Shop,
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, Error> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read StatefulSet {name}")))?
    else {
        return Ok(false);
    };
    if !controlled_by(shop, &existing) || existing.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    {
        return Ok(false);
    }
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": 0}}));
    match api.patch(name, &params, &patch).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("scale StatefulSet {name} to zero"),
            source,
        }),
    }
}

/// Whether `object` has `shop` as its controlling owner.
fn controlled_by(shop: &Shop, object: &impl Resource) -> bool {
    shop.metadata.uid.is_some()
        && object
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == shop.metadata.uid.as_ref())
}

async fn delete_owned<K>(
    shop: &Shop,
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let what = || format!("{} {name}", K::kind(&()));
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read {}", what())))?
    else {
        return Ok(false);
    };
    if !controlled_by(shop, &existing) {
        return Ok(false);
    }
    // The uid precondition: if the object was replaced meanwhile, the new one is not touched.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(source) => Err(Error::Kube {
            action: format!("delete {}", what()),
            source,
        }),
    }
}

/// Requeues a failed shop after 5 s, doubling per consecutive failure up to 5 minutes.
pub fn error_policy(shop: Arc<Shop>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.reason());
    let failures = {
        let mut failures = ctx.failures();
        let count = failures.entry(key(&shop)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    warn!(shop = %shop.name_any(), error = %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(5 * 2u64.pow(exponent)).min(Duration::from_secs(300))
}

fn key(shop: &Shop) -> String {
    format!(
        "{}/{}",
        shop.namespace().unwrap_or_default(),
        shop.name_any()
    )
}

/// Runs the controller over `namespace` (every namespace when `None`) until `shutdown` resolves.
pub async fn run(
    client: Client,
    namespace: Option<&str>,
    metrics: Arc<Metrics>,
    instance: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        }
    }
    let shops: Api<Shop> = api(&client, namespace);
    shops.list(&ListParams::default().limit(1)).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot list Shops ({error}); is the CRD installed (kubectl apply -f crds/shop.yaml) and may the operator list shops.souk.dev?"
        )
    })?;
    let children = watcher::Config::default().labels("app.kubernetes.io/managed-by=souk-operator");
    let ctx = Arc::new(Context::new(client.clone(), metrics, instance));
    info!("controller started");
    let controller = Controller::new(shops, watcher::Config::default().any_semantic());
    let store = controller.store();
    // A Secret a shop reads (made after the shop, or changed): reconcile that shop now, not at
    // the next resync.
    let referring = move |secret: Secret| {
        let namespace = secret.namespace();
        let name = secret.name_any();
        store
            .state()
            .into_iter()
            .filter(|shop| {
                shop.namespace() == namespace && desired::secrets_of(shop).contains(&name)
            })
            .map(|shop| ObjectRef::from_obj(&*shop))
            .collect::<Vec<_>>()
    };
    controller
        .watches(
            api::<Secret>(&client, namespace),
            watcher::Config::default(),
            referring,
        )
        .owns(api::<Deployment>(&client, namespace), children.clone())
        .owns(api::<StatefulSet>(&client, namespace), children.clone())
        .owns(api::<Service>(&client, namespace), children.clone())
        .owns(api::<Ingress>(&client, namespace), children.clone())
        .owns(api::<NetworkPolicy>(&client, namespace), children.clone())
        .owns(api::<ConfigMap>(&client, namespace), children)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((shop, _)) => tracing::debug!(shop = %shop.name, "reconciled"),
                Err(error) => warn!(%error, "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
