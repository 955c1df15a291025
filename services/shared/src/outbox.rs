//! Writing events to the transactional outbox, in the caller's transaction: the event leaves
//! (through the relayer) if and only if the change it describes commits.
//!
//! Every enqueue also raises a *hint* that the outbox is about to hold something, so that an
//! idle relayer need not wait for its next poll. The hint is raised inside the transaction, before
//! it commits (a service does not tell this module when it commits), so a relayer woken by it
//! looks again a few times in quick succession until it finds the rows (the "chase"), and its
//! poll stays the fallback that guarantees delivery. A hint is never a promise: spurious or lost
//! hints cost a query or a poll interval, never an event.
//!
//! Hints travel in the process (`subscribe`, for `souk up`, where a relayer runs beside its
//! service) or, for a relayer in another process, as a PostgreSQL `NOTIFY` on [`NOTIFY_CHANNEL`]
//! sent by [`forward_hints`] on a connection of its own. It is never sent in the business
//! transaction: a `NOTIFY` inside a transaction takes a database-wide lock at commit, which
//! would serialise every commit of the service.

use std::{sync::LazyLock, time::Duration};

use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    Shutdown,
    bus::backoff,
    config::ShopName,
    events::{self, Envelope, Event},
};

/// The channel on which a service's hints reach a relayer in another process (one database is
/// one outbox, and `NOTIFY` is per database, so the name needs no shop or service).
pub const NOTIFY_CHANNEL: &str = "souk_outbox";

/// The process's hints: a counter bumped by every enqueue. A watch channel coalesces them, so a
/// burst of enqueues wakes each relayer once.
static HINTS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// Adds `event` to the outbox within the transaction `conn` belongs to. Returns the event id.
pub async fn enqueue<E: Event>(
    conn: &mut PgConnection,
    shop: &ShopName,
    event: &E,
) -> Result<Uuid, sqlx::Error> {
    let envelope = Envelope::new(event);
    let subject = events::subject(shop, E::TYPE);
    sqlx::query!(
        "insert into outbox_events (id, subject, payload) values ($1, $2, $3)",
        envelope.id,
        subject,
        envelope.encode(),
    )
    .execute(conn)
    .await?;
    hint();
    Ok(envelope.id)
}

/// Tells this process's relayers (and [`forward_hints`]) that an outbox is about to hold events.
pub fn hint() {
    HINTS.send_modify(|count| *count = count.wrapping_add(1));
}

/// The hints raised in this process from now on.
pub fn subscribe() -> Hints {
    Hints {
        raised: HINTS.subscribe(),
        next_allowed: tokio::time::Instant::now(),
    }
}

/// The hints raised in this process, acted on at most one per [`HINT_GAP`], the first at once;
/// those raised in between count as one.
#[derive(Debug)]
pub struct Hints {
    raised: watch::Receiver<u64>,
    next_allowed: tokio::time::Instant,
}

impl Hints {
    /// Returns when the next hint may be acted on.
    pub async fn next(&mut self) {
        // The sender is a static, never dropped: `changed` does not fail.
        if self.raised.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.next_allowed).await;
        self.next_allowed = tokio::time::Instant::now() + HINT_GAP;
        self.raised.mark_unchanged();
    }
}

/// The least time between two hints acted on, forwarded ([`forward_hints`]) or heard in the
/// process (the relayer): under load the relayer is busy anyway, and a look at the outbox, or a
/// `NOTIFY`, per business transaction would cost the database nearly as much as the
/// transaction. Idle, the first hint is acted on at once.
pub const HINT_GAP: Duration = Duration::from_millis(1);

/// Forwards this process's hints to the relayer of `pool`'s outbox in another process, as a
/// `NOTIFY` on [`NOTIFY_CHANNEL`] sent outside any business transaction, until `shutdown`.
/// Hints that arrive while one is being sent, or within [`HINT_GAP`] of it, are coalesced
/// into the next.
pub async fn forward_hints(pool: PgPool, shutdown: Shutdown) {
    let mut hints = subscribe();
    let mut attempt = 0;
    // A connection of its own, outside the pool: through the pool a hint waited for a
    // connection and its check before it could be sent.
    let mut conn: Option<PgConnection> = None;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = hints.next() => {}
        }
        // The connection is taken for the attempt and kept only if it worked.
        let sent = async {
            let mut open = match conn.take() {
                Some(open) => open,
                None => PgConnection::connect_with(&pool.connect_options()).await?,
            };
            sqlx::query!("select pg_notify($1, '')", NOTIFY_CHANNEL)
                .execute(&mut open)
                .await?;
            Ok::<_, sqlx::Error>(open)
        }
        .await;
        match sent {
            Ok(open) => {
                conn = Some(open);
                attempt = 0;
            }
            Err(err) => {
                // The relayer's poll still delivers; wait before trying again.
                tracing::debug!(error = %err, "outbox hint not sent");
                attempt += 1;
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(backoff(attempt)) => {}
                }
            }
        }
    }
}

/// How a woken relayer looks again while the hinted transaction has not committed yet: first
/// at once, then after 1 ms, doubling, for at most [`CHASE_BUDGET`].
pub const CHASE_FIRST_DELAY: Duration = Duration::from_millis(1);
/// How long a relayer chases a hint before it falls back to its poll.
pub const CHASE_BUDGET: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hints_are_acted_on_at_once_then_at_most_once_per_gap() {
        let mut hints = subscribe();
        let start = tokio::time::Instant::now();
        hint();
        hints.next().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first at once");

        hint();
        hint();
        hints.next().await;
        assert!(
            start.elapsed() >= HINT_GAP,
            "acted on again after {:?}",
            start.elapsed()
        );
        let none = tokio::time::timeout(Duration::from_secs(1), hints.next()).await;
        assert!(none.is_err(), "the two hints were acted on once");
    }
}
