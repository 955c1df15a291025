//! Durable JetStream consumers whose handlers run exactly once in effect.
//!
//! Each message is handled in one database transaction that also inserts the event id into the
//! service's inbox (`processed_events`); a redelivered or re-published event finds its id there
//! and is acknowledged without being handled again. A handler that fails is retried with
//! backoff; one that keeps failing (`max_deliver` attempts) or that can never succeed (a
//! malformed event) goes to the dead-letter subject `<shop>.deadletter.<consumer>`, counted.
//! An unavailable dependency (database, another service) is retried for as long as it takes and
//! never dead-letters a message: the outage ends, the message is handled.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt as _;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use sqlx::{PgConnection, PgPool};

use crate::{
    Shutdown,
    bus::{Bus, backoff},
    events::{self, Envelope, MalformedEvent},
};

/// How a handler failed.
/// Attempts at a failing event before it is dead-lettered, unless configured otherwise.
pub const DEFAULT_MAX_DELIVER: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A dependency is down: retry for as long as it takes.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
    /// Something went wrong that may not happen again: retry, up to `max_deliver` times.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
    /// The event can never be handled: dead-letter it at once.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl From<MalformedEvent> for HandleError {
    fn from(err: MalformedEvent) -> Self {
        Self::Rejected(err.to_string())
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(err: sqlx::Error) -> Self {
        if crate::error::is_connection_error(&err) {
            Self::Unavailable(format!("database: {err}"))
        } else {
            Self::Failed(err.into())
        }
    }
}

impl From<crate::Error> for HandleError {
    fn from(err: crate::Error) -> Self {
        match err {
            crate::Error::Unavailable(message) => Self::Unavailable(message),
            crate::Error::Internal(err) => Self::Failed(err),
            other => Self::Failed(anyhow::anyhow!("{other}")),
        }
    }
}

pub type HandleResult<'a> = Pin<Box<dyn Future<Output = Result<(), HandleError>> + Send + 'a>>;

/// What a service does with the events it consumes. `handle` runs inside the transaction that
/// records the event in the inbox; it commits only if `handle` returns `Ok`.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, tx: &'a mut PgConnection, event: &'a Envelope) -> HandleResult<'a>;

    /// Called once `handle`'s transaction has committed: where a handler that committed an
    /// intent (a saga step) wakes whatever carries it out. Does nothing by default.
    fn committed(&self, _event: &Envelope) {}
}

/// One durable consumer of the shop's stream.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The durable name, e.g. `product`.
    pub name: &'static str,
    /// The event types it handles, e.g. `["order.created", "order.cancelled"]`: the consumer
    /// reads exactly their subjects, so nothing else reaches it.
    pub events: &'static [&'static str],
    /// Attempts before a failing event is dead-lettered.
    pub max_deliver: i64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    consumer: String,
}

/// Counters of every consumer of a process.
#[derive(Debug, Clone, Default)]
pub struct ConsumerMetrics {
    handled: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
}

impl ConsumerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("consumer_handled", "Events handled", self.handled.clone());
        registry.register(
            "consumer_duplicates",
            "Redelivered or re-published events skipped by the inbox",
            self.duplicates.clone(),
        );
        registry.register(
            "consumer_retries",
            "Events handed back for a later attempt",
            self.retries.clone(),
        );
        registry.register(
            "consumer_dead_letters",
            "Events sent to the dead-letter subject",
            self.dead_letters.clone(),
        );
    }

    fn count(family: &Family<Labels, Counter>, consumer: &str) {
        family
            .get_or_create(&Labels {
                consumer: consumer.to_owned(),
            })
            .inc();
    }
}

/// A service's part in the shop's events: the bus it consumes from and how failures are
/// treated. Services take one in their settings when they run beside the saga.
#[derive(Debug, Clone)]
pub struct Participation {
    pub bus: Bus,
    pub max_deliver: i64,
    pub metrics: ConsumerMetrics,
}

impl Participation {
    /// Consumes the `events` that `handler` handles, as the durable consumer `name`: a task to
    /// run beside the service's server once its database is ready.
    pub fn consume(
        self,
        pool: PgPool,
        name: &'static str,
        events: &'static [&'static str],
        handler: Arc<dyn Handler>,
    ) -> crate::grpc::Beside {
        let config = ConsumerConfig {
            name,
            events,
            max_deliver: self.max_deliver,
        };
        Box::new(move |shutdown| {
            Box::pin(run(self.bus, pool, config, handler, self.metrics, shutdown))
        })
    }
}

/// Consumes until `shutdown`, setting the stream and consumer up (again) whenever NATS is
/// (again) reachable. The message in hand is finished before it stops.
pub async fn run(
    bus: Bus,
    pool: PgPool,
    config: ConsumerConfig,
    handler: Arc<dyn Handler>,
    metrics: ConsumerMetrics,
    shutdown: Shutdown,
) {
    let mut attempt = 0;
    while !shutdown.is_triggered() {
        match consume(&bus, &pool, &config, handler.as_ref(), &metrics, &shutdown).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(consumer = config.name, error = %err, "consumer interrupted, retrying");
                attempt += 1;
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(backoff(attempt)) => {}
                }
            }
        }
    }
}

async fn consume(
    bus: &Bus,
    pool: &PgPool,
    config: &ConsumerConfig,
    handler: &dyn Handler,
    metrics: &ConsumerMetrics,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let stream = bus.ensure_stream().await?;
    let consumer = durable_consumer(bus, &stream, config).await?;
    let mut messages = consumer
        .stream()
        // No more than it handles at once: a message waiting in this buffer has its `ACK_WAIT`
        // running too.
        .max_messages_per_batch(IN_FLIGHT)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|err| anyhow::anyhow!("cannot pull from consumer {}: {err}", config.name))?;
    tracing::info!(consumer = config.name, "consuming");
    // Messages are handled concurrently, up to a bound: each handler locks what it changes
    // (an order row, product rows in a fixed order, a cart row) and the inbox makes a
    // concurrent redelivery wait for the first attempt, so no ordering is needed for
    // correctness, and round trips to the database and other services overlap.
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let outcome = loop {
        tokio::select! {
            () = shutdown.wait() => break Ok(()),
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = messages.next(), if in_flight.len() < IN_FLIGHT => match next {
                Some(Ok(message)) => in_flight.push(handle_message(bus, pool, config, handler, metrics, message)),
                Some(Err(err)) => break Err(anyhow::anyhow!("pull failed: {err}")),
                None => break Err(anyhow::anyhow!("message stream ended")),
            },
        }
    };
    // Finish the messages in hand, whatever stopped the loop.
    while in_flight.next().await.is_some() {}
    outcome
}

/// How long the server waits for a message's acknowledgement before it delivers it again: how
/// soon the messages a killed consumer held come back. Handlers in progress say so every third
/// of it.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Messages a consumer handles at once.
const IN_FLIGHT: usize = 16;

/// Creates the durable consumer, or updates it to this configuration.
async fn durable_consumer(
    bus: &Bus,
    stream: &jetstream::stream::Stream,
    config: &ConsumerConfig,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let settings = pull::Config {
        durable_name: Some(config.name.to_owned()),
        filter_subjects: config
            .events
            .iter()
            .map(|event_type| events::subject(bus.shop(), event_type))
            .collect(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        // Redelivery is ours to limit (see `HandleError`), not the server's.
        max_deliver: -1,
        ..Default::default()
    };
    stream
        .create_consumer(settings)
        .await
        .map_err(|err| anyhow::anyhow!("cannot create consumer {}: {err}", config.name))
}

async fn handle_message(
    bus: &Bus,
    pool: &PgPool,
    config: &ConsumerConfig,
    handler: &dyn Handler,
    metrics: &ConsumerMetrics,
    message: jetstream::Message,
) {
    let delivered = message.info().map_or(1, |info| info.delivered);
    let envelope = match Envelope::decode(&message.payload) {
        Ok(envelope) => envelope,
        Err(err) => return dead_letter(bus, config, metrics, &message, &err.to_string()).await,
    };
    if message.subject.as_str() != events::subject(bus.shop(), &envelope.event_type) {
        // The consumer reads only the subjects of its events; the envelope must say the same.
        let reason = format!(
            "event type {} on subject {}",
            envelope.event_type, message.subject
        );
        return dead_letter(bus, config, metrics, &message, &reason).await;
    }
    let trace = crate::trace::continue_from(envelope.traceparent.as_deref());
    let span = tracing::info_span!(
        "event", consumer = config.name, event_type = %envelope.event_type, event_id = %envelope.id,
        trace_id = %trace.trace_id_hex(), delivered
    );
    let outcome = {
        use tracing::Instrument as _;
        let handling = crate::trace::scope(trace, handle_once(pool, handler, &envelope))
            .instrument(span.clone());
        tokio::pin!(handling);
        // A handler that runs long (a database or a service slow to answer) tells the server it
        // is still at it, so that the short `ACK_WAIT` redelivers only what a dead consumer held.
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + ACK_WAIT / 3, ACK_WAIT / 3);
        loop {
            tokio::select! {
                outcome = &mut handling => break outcome,
                _ = progress.tick() => ack(&message, AckKind::Progress).await,
            }
        }
    };
    let _entered = span.enter();
    match outcome {
        Ok(Outcome::Handled) => {
            ConsumerMetrics::count(&metrics.handled, config.name);
            ack(&message, AckKind::Ack).await;
        }
        Ok(Outcome::Duplicate) => {
            tracing::debug!("already handled, skipped");
            ConsumerMetrics::count(&metrics.duplicates, config.name);
            ack(&message, AckKind::Ack).await;
        }
        Err(HandleError::Rejected(reason)) => {
            dead_letter(bus, config, metrics, &message, &reason).await
        }
        Err(HandleError::Failed(err)) if delivered >= config.max_deliver => {
            tracing::error!(error = ?err, "handler failed on its last attempt");
            dead_letter(bus, config, metrics, &message, &format!("{err:#}")).await;
        }
        Err(err) => {
            let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
            tracing::warn!(error = %err, "handler failed, will retry");
            ConsumerMetrics::count(&metrics.retries, config.name);
            ack(&message, AckKind::Nak(Some(backoff(attempt)))).await;
        }
    }
}

enum Outcome {
    Handled,
    Duplicate,
}

async fn handle_once(
    pool: &PgPool,
    handler: &dyn Handler,
    envelope: &Envelope,
) -> Result<Outcome, HandleError> {
    let mut tx = pool.begin().await?;
    let first_time = sqlx::query!(
        "insert into processed_events (event_id, event_type) values ($1, $2) on conflict do nothing",
        envelope.id,
        envelope.event_type,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first_time {
        return Ok(Outcome::Duplicate);
    }
    handler.handle(&mut tx, envelope).await?;
    tx.commit().await?;
    handler.committed(envelope);
    Ok(Outcome::Handled)
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    // A lost ack means a redelivery, which the inbox absorbs.
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(error = %err, "ack not sent");
    }
}

async fn dead_letter(
    bus: &Bus,
    config: &ConsumerConfig,
    metrics: &ConsumerMetrics,
    message: &jetstream::Message,
    reason: &str,
) {
    tracing::error!(reason, subject = %message.subject, "dead-lettering event");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Souk-Original-Subject", message.subject.as_str());
    headers.insert(
        "Souk-Reason",
        reason.chars().take(200).collect::<String>().as_str(),
    );
    let subject = events::dead_letter_subject(bus.shop(), config.name);
    let published = bus
        .jetstream()
        .publish_with_headers(subject, headers, message.payload.clone())
        .await;
    match published {
        Ok(ack_future) => {
            if let Err(err) = ack_future.await {
                tracing::error!(error = %err, "dead letter not stored; the event will be redelivered");
                return ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "dead letter not sent; the event will be redelivered");
            return ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }
    ConsumerMetrics::count(&metrics.dead_letters, config.name);
    ack(message, AckKind::Term).await;
}
