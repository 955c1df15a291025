//! Writing events to the transactional outbox, in the caller's transaction: the event leaves
//! (through the relayer) if and only if the change it describes commits.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    config::ShopName,
    events::{self, Envelope, Event},
};

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
    Ok(envelope.id)
}
