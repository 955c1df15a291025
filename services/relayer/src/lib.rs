//! The outbox relayer: drains one service's `outbox_events` table into JetStream.
//!
//! Rows are claimed in commit-sequence order by the one active relayer of the outbox (a
//! PostgreSQL advisory lock, held by a dedicated connection: when the relayer dies, its
//! connection closes and a standby takes over). A batch is published pipelined, every message
//! with `Nats-Msg-Id` = event id, then the acknowledged rows are deleted (on another connection,
//! while the next batch, which skips them, is read and published). A relayer that dies
//! between publishing and deleting publishes the same rows again; the stream's duplicate window
//! drops them, and the consumers' inboxes would absorb any that got through.
//!
//! An idle relayer polls, and is woken earlier by the hints of `souk_shared::outbox`: in its own
//! process when it runs beside its service ([`Wake::InProcess`]), or by `LISTEN` when it is a
//! sidecar ([`Wake::Notify`]). A hint comes before its transaction commits, so a woken relayer
//! chases: it looks at once, then again after 1 ms, 2 ms, ... until it finds rows or the chase
//! budget runs out. The poll remains what guarantees delivery.

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use futures::future::join_all;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use souk_shared::outbox;
use souk_shared::{Shutdown, bus::Bus, bus::backoff};
use sqlx::{PgConnection, PgPool, pool::PoolConnection, postgres::PgListener};
use tokio::{sync::watch, time::Instant};

/// The advisory lock key of "the relayer of this database's outbox".
const LOCK_KEY: i64 = 0x736f_756b_6f75_7462; // "soukoutb"

#[derive(Debug, Clone)]
pub struct Settings {
    /// Rows per batch; a full batch is followed at once by the next.
    pub batch_size: i64,
    /// How long an idle relayer waits before looking again.
    pub poll_interval: Duration,
    /// Where the hints that wake an idle relayer come from.
    pub wake: Wake,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            poll_interval: Duration::from_millis(20),
            wake: Wake::InProcess,
        }
    }
}

/// Where a relayer hears that its outbox is about to hold events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// From the service in the same process (`souk up`).
    InProcess,
    /// By `LISTEN` on `outbox::NOTIFY_CHANNEL`, from a service in another process that runs
    /// `outbox::forward_hints` (a sidecar relayer).
    Notify,
    /// Not at all: the relayer only polls.
    Never,
}

/// A relayer's source of hints.
enum Hints {
    InProcess(watch::Receiver<u64>),
    Notify(Box<PgListener>),
    Never,
}

impl Hints {
    async fn open(wake: Wake, pool: &PgPool) -> anyhow::Result<Self> {
        Ok(match wake {
            Wake::InProcess => Self::InProcess(outbox::subscribe()),
            Wake::Notify => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(outbox::NOTIFY_CHANNEL).await?;
                Self::Notify(Box::new(listener))
            }
            Wake::Never => Self::Never,
        })
    }

    /// The next hint (several pending ones count as one).
    async fn next(&mut self) -> anyhow::Result<()> {
        match self {
            Self::InProcess(hints) => {
                if hints.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                hints.mark_unchanged();
            }
            Self::Notify(listener) => {
                listener.recv().await?;
                while listener.next_buffered().is_some() {}
            }
            Self::Never => std::future::pending::<()>().await,
        }
        Ok(())
    }
}

/// The relayer's figures, registered in the process's metrics registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    backlog: Gauge,
    oldest_age_ms: Gauge,
    published: Counter,
    failures: Counter,
    leader: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "outbox_backlog",
            "Events waiting in the outbox",
            self.backlog.clone(),
        );
        registry.register(
            "outbox_oldest_age_milliseconds",
            "Age of the oldest event waiting in the outbox",
            self.oldest_age_ms.clone(),
        );
        registry.register(
            "outbox_published",
            "Events published and acknowledged by the stream",
            self.published.clone(),
        );
        registry.register(
            "outbox_publish_failures",
            "Failed publish or delete attempts",
            self.failures.clone(),
        );
        registry.register(
            "outbox_leader",
            "1 while this relayer holds the outbox lock",
            self.leader.clone(),
        );
    }
}

#[derive(Debug)]
pub struct Relayer {
    pool: PgPool,
    bus: Bus,
    settings: Settings,
    metrics: Metrics,
    name: String,
}

/// The delete of the rows last published, running while the next batch goes out.
struct Deleting {
    seqs: Vec<i64>,
    task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
}

/// Waits for the delete in flight, if any.
async fn finish(deleting: &mut Option<Deleting>) -> anyhow::Result<()> {
    if let Some(deleting) = deleting.take() {
        deleting.task.await??;
    }
    Ok(())
}

/// Looking again soon after a hint, while its transaction may not have committed yet.
#[derive(Debug, Default)]
struct Chase {
    /// Until when, and the wait before the next look; none: not chasing.
    state: Option<(Instant, Duration)>,
}

impl Chase {
    fn start() -> Self {
        Self {
            state: Some((Instant::now() + outbox::CHASE_BUDGET, Duration::ZERO)),
        }
    }

    /// How long to wait before looking again: the chase's next step, else the poll interval.
    fn next_wait(&mut self, poll: Duration) -> Duration {
        match self.state {
            Some((until, wait)) if Instant::now() < until => {
                let next = if wait.is_zero() {
                    outbox::CHASE_FIRST_DELAY
                } else {
                    wait * 2
                };
                self.state = Some((until, next.min(poll)));
                wait.min(poll)
            }
            _ => {
                self.state = None;
                poll
            }
        }
    }
}

struct Row {
    seq: i64,
    id: uuid::Uuid,
    subject: String,
    payload: Vec<u8>,
}

impl Relayer {
    /// A relayer of the outbox in `pool`'s database; `name` (the service) is for the logs.
    pub fn new(name: &str, pool: PgPool, bus: Bus, settings: Settings, metrics: Metrics) -> Self {
        Self {
            pool,
            bus,
            settings,
            metrics,
            name: name.to_owned(),
        }
    }

    /// Relays until `shutdown`: waits to become the active relayer, then drains; after any
    /// failure (database or NATS down) it backs off and starts over.
    pub async fn run(self, shutdown: Shutdown) {
        let mut attempt = 0;
        while !shutdown.is_triggered() {
            match self.lead(&shutdown).await {
                Ok(()) => attempt = 0,
                Err(err) => {
                    self.metrics.failures.inc();
                    attempt += 1;
                    tracing::warn!(outbox = %self.name, error = %err, "relayer interrupted, retrying");
                }
            }
            self.metrics.leader.set(0);
            tokio::select! {
                () = shutdown.wait() => return,
                () = tokio::time::sleep(backoff(attempt).max(self.settings.poll_interval)) => {}
            }
        }
    }

    /// Takes the lock if free and drains until shutdown; returns `Ok` at once as a standby.
    async fn lead(&self, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        let leader: bool =
            sqlx::query_scalar!("select pg_try_advisory_lock($1) as \"locked!\"", LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
        if !leader {
            return Ok(());
        }
        tracing::info!(outbox = %self.name, "relaying the outbox");
        self.metrics.leader.set(1);
        let result = self.drain(&mut conn, shutdown).await;
        // Unlock explicitly; if the connection is broken, closing it releases the lock too.
        let unlocked =
            sqlx::query_scalar!("select pg_advisory_unlock($1) as \"unlocked!\"", LOCK_KEY)
                .fetch_one(&mut *conn)
                .await;
        if unlocked.is_err() {
            conn.close_on_drop();
        }
        result
    }

    async fn drain(
        &self,
        conn: &mut PoolConnection<sqlx::Postgres>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        self.bus.ensure_stream().await?;
        // Listening starts before the first look, so no hint falls between the two.
        let mut hints = Hints::open(self.settings.wake, &self.pool).await?;
        let mut last_stats = Instant::now() - Duration::from_secs(1);
        let mut chase = Chase::default();
        let mut deleting = None;
        loop {
            if last_stats.elapsed() >= Duration::from_millis(500) {
                self.record_backlog(conn).await?;
                last_stats = Instant::now();
            }
            let relayed = self.relay_batch(conn, &mut deleting).await?;
            if relayed >= self.settings.batch_size {
                if shutdown.is_triggered() {
                    return finish(&mut deleting).await;
                }
                continue;
            }
            finish(&mut deleting).await?;
            if relayed > 0 {
                chase = Chase::default();
            }
            let wait = chase.next_wait(self.settings.poll_interval);
            tokio::select! {
                () = shutdown.wait() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
                hint = hints.next() => {
                    hint?;
                    chase = Chase::start();
                }
            }
        }
    }

    /// Publishes one batch, and starts deleting what the stream acknowledged on another
    /// connection while the next batch is read and published (`deleting`: at most one delete in
    /// flight, whose rows the next read skips). Returns the batch size.
    async fn relay_batch(
        &self,
        conn: &mut PgConnection,
        deleting: &mut Option<Deleting>,
    ) -> anyhow::Result<i64> {
        let in_flight = deleting.as_ref().map_or(&[][..], |d| d.seqs.as_slice());
        let rows = sqlx::query_as!(
            Row,
            "select seq, id, subject, payload from outbox_events
             where seq <> all($2) order by seq limit $1",
            self.settings.batch_size,
            in_flight,
        )
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            finish(deleting).await?;
            return Ok(0);
        }
        let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let acked = self.publish(&rows).await;
        let failed = rows.len() - acked.len();
        finish(deleting).await?;
        if !acked.is_empty() {
            self.metrics.published.inc_by(acked.len() as u64);
            let pool = self.pool.clone();
            let seqs = acked.clone();
            *deleting = Some(Deleting {
                seqs: acked,
                task: tokio::spawn(async move {
                    sqlx::query!("delete from outbox_events where seq = any($1)", &seqs)
                        .execute(&pool)
                        .await
                        .map(|_| ())
                }),
            });
        }
        if failed > 0 {
            finish(deleting).await?;
            anyhow::bail!(
                "{failed} of {} events not acknowledged by the stream",
                rows.len()
            );
        }
        Ok(count)
    }

    /// Sends every row, then waits for all the acknowledgements: one round trip per batch.
    /// Returns the sequence numbers of the rows the stream acknowledged (duplicates included).
    async fn publish(&self, rows: &[Row]) -> Vec<i64> {
        let mut pending: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(rows.len());
        for row in rows {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .message_id(row.id.to_string())
                .payload(row.payload.clone().into());
            match self
                .bus
                .jetstream()
                .send_publish(row.subject.clone(), message)
                .await
            {
                Ok(ack) => pending.push((row.seq, ack)),
                Err(err) => {
                    tracing::warn!(outbox = %self.name, error = %err, "publish failed");
                    break;
                }
            }
        }
        let (seqs, acks): (Vec<i64>, Vec<PublishAckFuture>) = pending.into_iter().unzip();
        let results = join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await;
        seqs.into_iter()
            .zip(results)
            .filter_map(|(seq, result)| match result {
                Ok(_) => Some(seq),
                Err(err) => {
                    tracing::warn!(outbox = %self.name, error = %err, "publish not acknowledged");
                    None
                }
            })
            .collect()
    }

    async fn record_backlog(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let stats = sqlx::query!(
            r#"select count(*) as "backlog!", coalesce(extract(epoch from now() - min(created_at)) * 1000, 0)::bigint as "oldest_ms!"
               from outbox_events"#
        )
        .fetch_one(conn)
        .await?;
        self.metrics.backlog.set(stats.backlog);
        self.metrics.oldest_age_ms.set(stats.oldest_ms);
        Ok(())
    }
}
