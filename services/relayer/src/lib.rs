//! The outbox relayer: drains one service's `outbox_events` table into JetStream.
//!
//! Rows are claimed in commit-sequence order by the one active relayer of the outbox (a
//! PostgreSQL advisory lock, held by a dedicated connection: when the relayer dies, its
//! connection closes and a standby takes over). A batch is published pipelined, every message
//! with `Nats-Msg-Id` = event id (all sent, then all acknowledgements awaited), while the next
//! batch is read; the acknowledged rows are then deleted on a connection of their own, without
//! waiting for the disk (`synchronous_commit` off), while the next batch, which skips them, is
//! published. A batch goes out only once the one before it is wholly acknowledged. A relayer that
//! dies between publishing and deleting (or whose delete a database crash undoes) publishes the
//! same rows again; the stream's duplicate window drops them, and the consumers' inboxes would
//! absorb any that got through.
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
use sqlx::Connection as _;
use sqlx::{PgConnection, PgPool, pool::PoolConnection, postgres::PgListener};
use tokio::{task::JoinHandle, time::Instant};

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
    InProcess(outbox::Hints),
    /// Forwarded hints, already spaced by their sender.
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

    /// The next hint (several pending ones count as one), at most one per `outbox::HINT_GAP`.
    async fn next(&mut self) -> anyhow::Result<()> {
        match self {
            Self::InProcess(hints) => hints.next().await,
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

/// Deletes what the stream acknowledged, on a connection of its own (outside the pool) with
/// `synchronous_commit` off: a delete lost to a database crash only brings its rows back, to be
/// published again and dropped by the stream as duplicates, so it need not wait for the disk
/// (that wait was most of a batch's time). At most one delete is in flight, while the next batch
/// (which skips its rows) is read and published.
struct Deletes {
    /// The connection, while no delete holds it.
    conn: Option<PgConnection>,
    /// The rows being deleted, and the delete (which hands the connection back).
    in_flight: Option<(Vec<i64>, Delete)>,
}

/// A delete running on the connection it hands back.
type Delete = JoinHandle<(PgConnection, Result<(), sqlx::Error>)>;

impl Deletes {
    async fn open(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let options = pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("synchronous_commit", "off")]);
        Ok(Self {
            conn: Some(PgConnection::connect_with(&options).await?),
            in_flight: None,
        })
    }

    /// The rows being deleted, which a read must skip.
    fn in_flight(&self) -> &[i64] {
        self.in_flight.as_ref().map_or(&[], |(seqs, _)| seqs)
    }

    /// Waits for the delete in flight, if any.
    async fn finish(&mut self) -> anyhow::Result<()> {
        if let Some((_, task)) = self.in_flight.take() {
            let (conn, result) = task.await?;
            self.conn = Some(conn);
            result?;
        }
        Ok(())
    }

    /// Starts deleting `seqs`, once the delete in flight is done.
    async fn start(&mut self, seqs: Vec<i64>) -> anyhow::Result<()> {
        self.finish().await?;
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| anyhow::anyhow!("the delete connection was lost"))?;
        let rows = seqs.clone();
        let task = tokio::spawn(async move {
            let result = sqlx::query!("delete from outbox_events where seq = any($1)", &rows)
                .execute(&mut conn)
                .await
                .map(|_| ());
            (conn, result)
        });
        self.in_flight = Some((seqs, task));
        Ok(())
    }
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
        let mut deletes = Deletes::open(&self.pool).await?;
        let mut next = None;
        loop {
            if last_stats.elapsed() >= Duration::from_millis(500) {
                self.record_backlog(conn).await?;
                last_stats = Instant::now();
            }
            let relayed = self.relay_batch(conn, &mut deletes, &mut next).await?;
            if relayed >= self.settings.batch_size {
                if shutdown.is_triggered() {
                    return deletes.finish().await;
                }
                continue;
            }
            // The last delete may still run while the relayer waits: the next read skips its rows.
            if relayed > 0 {
                chase = Chase::default();
            }
            let wait = chase.next_wait(self.settings.poll_interval);
            tokio::select! {
                () = shutdown.wait() => return deletes.finish().await,
                () = tokio::time::sleep(wait) => {}
                hint = hints.next() => {
                    hint?;
                    chase = Chase::start();
                }
            }
        }
    }

    /// The next rows to publish, in sequence order, skipping `skip` (published, being deleted).
    async fn read(&self, conn: &mut PgConnection, skip: &[i64]) -> Result<Vec<Row>, sqlx::Error> {
        sqlx::query_as!(
            Row,
            "select seq, id, subject, payload from outbox_events
             where seq <> all($2) order by seq limit $1",
            self.settings.batch_size,
            skip,
        )
        .fetch_all(conn)
        .await
    }

    /// Publishes one batch (`next` when it was read ahead) and starts deleting what the stream
    /// acknowledged. A full batch may have more behind it: the next one is read while this one is
    /// published (into `next`), skipping this one's rows and those being deleted. Returns the batch
    /// size.
    async fn relay_batch(
        &self,
        conn: &mut PgConnection,
        deletes: &mut Deletes,
        next: &mut Option<Vec<Row>>,
    ) -> anyhow::Result<i64> {
        let rows = match next.take() {
            Some(rows) => rows,
            None => self.read(conn, deletes.in_flight()).await?,
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        let acked = if count >= self.settings.batch_size {
            let skip: Vec<i64> = rows
                .iter()
                .map(|row| row.seq)
                .chain(deletes.in_flight().iter().copied())
                .collect();
            let (acked, ahead) = tokio::join!(self.publish(&rows), self.read(conn, &skip));
            *next = Some(ahead?);
            acked
        } else {
            self.publish(&rows).await
        };
        let failed = rows.len() - acked.len();
        if !acked.is_empty() {
            self.metrics.published.inc_by(acked.len() as u64);
            deletes.start(acked).await?;
        }
        if failed > 0 {
            // What was read ahead is dropped with the error: the relayer starts over, and these
            // rows go out again before it.
            deletes.finish().await?;
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
