//! The checkout saga, orchestrated here from the order's rows and the events of the other
//! services, as a durable state machine (`orders.saga_step`, `store::Step`). The gRPC layer only
//! reads requests and answers: each step is here.
//!
//! 1. `Saga::place` (`checkout.rs`) prices the cart, then stores the order
//!    `PENDING`/`reserving_stock` with `order.created`.
//! 2. The product service answers `stock.reserved` or `stock.rejected`.
//! 3. `stock.reserved`: the step becomes `charging` (committed with the event's inbox entry,
//!    leased to this replica, which charges once that commits).
//!    Then, outside any transaction, the payment service is charged (idempotent by order id),
//!    and a second transaction records the outcome: captured → `CONFIRMED` + `order.confirmed`;
//!    declined → `CANCELLED`/`payment_declined` + `order.cancelled` (the product service
//!    releases the stock).
//! 4. `stock.rejected`: `CANCELLED`/`out_of_stock` + `order.cancelled` (nothing is held).
//! 5. A `PENDING` order past its deadline, or one the user cancels, goes to `refunding` (with
//!    the reason it will end with), committed; then the payment service refunds it (which voids
//!    an order not charged yet, so a charge still in flight cannot take money); then a second
//!    transaction makes it `CANCELLED` with `order.cancelled`.
//!
//! The invariant: no call to another service is made inside an open transaction or under a row
//! lock, and every call is preceded by its committed intent. A crash at any instant leaves the
//! order in `charging` or `refunding`, and `run_steps` (in every replica) takes such orders on
//! again: the calls are idempotent, and an outcome is recorded only if the order is still in the
//! step that made the call, so a late or repeated call changes nothing. Fault points
//! (`souk_shared::fault`) sit where a crash would hurt most: `charge.after_call`,
//! `cancel.after_intent`, `cancel.after_refund` (reached by timeouts' refunds too).

mod checkout;

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use souk_protos::v1::{
    ChargeRequest, OrderCancelled, OrderConfirmed, OrderLine, PaymentStatus, RefundRequest,
    StockRejected, StockReserved, cart_service_client::CartServiceClient,
    payment_service_client::PaymentServiceClient,
};
use souk_shared::{
    Error, Shutdown,
    config::ShopName,
    consumer::{HandleError, HandleResult, Handler},
    events::{Envelope, Event, uuid_field},
    fault,
    jwt::ServiceToken,
    outbox,
    trace::TracedChannel,
};
use sqlx::{PgConnection, PgPool};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use uuid::Uuid;

pub use checkout::IdempotencyKey;

use crate::store::{self, FailureReason, Locked, Status, Step};

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    Cancelled(FailureReason),
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Cancelled(reason) => reason.as_str(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How sagas end.
#[derive(Debug, Clone, Default)]
pub struct SagaMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
}

impl SagaMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "saga_outcomes",
            "Checkout sagas by outcome",
            self.outcomes.clone(),
        );
    }

    fn record(&self, outcome: Outcome) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }
}

/// How long a claimed step is left to its claimant before the worker takes it on again.
pub const LEASE: Duration = Duration::from_secs(3);

/// How often the worker looks for due steps and expired orders (a charge committed here is
/// handed to it at once instead).
const POLL: Duration = Duration::from_millis(250);

/// Steps carried out at once by one worker.
const BATCH: i64 = 16;

/// What the saga steps share.
#[derive(Debug)]
pub struct Saga {
    pub shop: ShopName,
    pub pool: PgPool,
    pub cart: CartServiceClient<TracedChannel>,
    pub payment: PaymentServiceClient<TracedChannel>,
    /// How long an order may stay `PENDING` before it is cancelled (`timeout`).
    pub timeout: chrono::TimeDelta,
    /// Presented on the calls the saga makes on its own behalf (the payment service).
    pub service_token: ServiceToken,
    pub metrics: SagaMetrics,
    /// Charges this replica committed to in the transaction of their `stock.reserved`, until
    /// that transaction commits (`Handler::committed`).
    pub claimed: Claims,
    /// Hands a committed charge to `run_steps`, which carries it out at once.
    pub due: mpsc::UnboundedSender<Locked>,
}

impl Saga {
    /// A short-lived token for calls the order service makes on its own behalf.
    fn service_request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        let token = self.service_token.get().map_err(Error::Internal)?;
        Ok(souk_shared::auth::with_token(message, &token))
    }

    async fn charge(&self, order: &Locked) -> Result<PaymentStatus, Error> {
        let request = self.service_request(ChargeRequest {
            order_id: order.id.to_string(),
            user_id: order.user_id.to_string(),
            amount_cents: order.total_cents,
        })?;
        let payment = self
            .payment
            .clone()
            .charge(request)
            .await
            .map_err(|status| Error::from_upstream("payment", status))?;
        Ok(payment.into_inner().status())
    }

    /// Gives back any money the order holds, and makes sure none is taken later.
    async fn refund(&self, order: Uuid) -> Result<(), Error> {
        let request = self.service_request(RefundRequest {
            order_id: order.to_string(),
        })?;
        self.payment
            .clone()
            .refund(request)
            .await
            .map_err(|status| Error::from_upstream("payment", status))?;
        Ok(())
    }

    async fn confirm(&self, tx: &mut PgConnection, order: &Locked) -> Result<(), Error> {
        let lines = store::confirm(tx, order.id).await?;
        let event = OrderConfirmed {
            order_id: order.id.to_string(),
            user_id: order.user_id.to_string(),
            lines: lines
                .into_iter()
                .map(|(product_id, quantity)| OrderLine {
                    product_id: product_id.to_string(),
                    quantity,
                })
                .collect(),
        };
        outbox::enqueue(tx, &self.shop, &event).await?;
        tracing::info!(order_id = %order.id, "order confirmed");
        Ok(())
    }

    async fn cancel(
        &self,
        tx: &mut PgConnection,
        order: &Locked,
        reason: FailureReason,
    ) -> Result<(), Error> {
        store::cancel(tx, order.id, reason).await?;
        let event = OrderCancelled {
            order_id: order.id.to_string(),
            user_id: order.user_id.to_string(),
            reason: reason.as_str().to_owned(),
        };
        outbox::enqueue(tx, &self.shop, &event).await?;
        tracing::info!(order_id = %order.id, reason = reason.as_str(), "order cancelled");
        Ok(())
    }

    /// Carries out the step `order` was in when read: the call (no transaction open), then its
    /// outcome in a transaction of its own, recorded only if the order is still in that step.
    pub async fn carry_out(&self, order: &Locked) -> Result<(), Error> {
        match order.step {
            Step::Charging => {
                let status = self.charge(order).await?;
                fault::hit("charge.after_call")?;
                let mut tx = self.pool.begin().await?;
                let Some(now) = store::lock(&mut tx, order.id).await? else {
                    return Ok(());
                };
                if now.step != Step::Charging {
                    // Cancelled meanwhile: its refund settles the money.
                    return Ok(tx.commit().await?);
                }
                // Anything but a capture (declined; voided or refunded cannot happen here, as
                // only `refunding` refunds) holds no money.
                let outcome = if status == PaymentStatus::Captured {
                    self.confirm(&mut tx, &now).await?;
                    Outcome::Confirmed
                } else {
                    let reason = FailureReason::PaymentDeclined;
                    self.cancel(&mut tx, &now, reason).await?;
                    Outcome::Cancelled(reason)
                };
                tx.commit().await?;
                self.metrics.record(outcome);
            }
            Step::Refunding => {
                self.refund(order.id).await?;
                fault::hit("cancel.after_refund")?;
                let mut tx = self.pool.begin().await?;
                let Some(now) = store::lock(&mut tx, order.id).await? else {
                    return Ok(());
                };
                if now.step != Step::Refunding {
                    return Ok(tx.commit().await?);
                }
                let reason = now.cancel_reason.ok_or_else(|| {
                    Error::Internal(anyhow::anyhow!(
                        "order {} refunding without a reason",
                        now.id
                    ))
                })?;
                self.cancel(&mut tx, &now, reason).await?;
                tx.commit().await?;
                self.metrics.record(Outcome::Cancelled(reason));
            }
            Step::ReservingStock | Step::Completed | Step::Compensated => {}
        }
        Ok(())
    }

    /// The user's cancel of their order `id`: commits the intent to refund, then carries it out.
    /// A cancel of an order the user already cancelled changes nothing (a retry); an order
    /// being cancelled already (a retry, or a timeout) is carried on.
    pub async fn cancel_by_user(&self, id: Uuid, user: Uuid) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let order = store::lock(&mut tx, id)
            .await?
            .filter(|order| order.user_id == user)
            .ok_or_else(|| Error::NotFound("order not found".into()))?;
        let order = match (order.status, order.step) {
            (Status::Cancelled, _)
                if order.failure_reason == Some(FailureReason::CancelledByUser) =>
            {
                return Ok(tx.commit().await?);
            }
            (Status::Cancelled, _) => {
                return Err(Error::FailedPrecondition(
                    "the order is already cancelled".into(),
                ));
            }
            (_, Step::Refunding) => {
                tx.commit().await?;
                order
            }
            _ => {
                let reason = FailureReason::CancelledByUser;
                store::begin_refund(&mut tx, id, reason, LEASE).await?;
                tx.commit().await?;
                Locked {
                    step: Step::Refunding,
                    cancel_reason: Some(reason),
                    ..order
                }
            }
        };
        fault::hit("cancel.after_intent")?;
        self.carry_out(&order).await
    }

    async fn on_stock_reserved(
        &self,
        tx: &mut PgConnection,
        event: StockReserved,
    ) -> Result<(), HandleError> {
        let id = uuid_field("order_id", &event.order_id)?;
        let Some(order) = store::lock(tx, id).await? else {
            return Err(HandleError::Rejected(format!("unknown order {id}")));
        };
        if order.status == Status::Pending && order.step == Step::ReservingStock {
            // Committed with the event; `committed` then hands it to the worker, which charges
            // at once (and any worker does after the lease, should this replica die first).
            store::begin_charge(tx, id, LEASE).await?;
            self.claimed.claim(Locked {
                step: Step::Charging,
                ..order
            });
        }
        // Otherwise already ended or being cancelled: its order.cancelled releases the stock.
        Ok(())
    }

    async fn on_stock_rejected(
        &self,
        tx: &mut PgConnection,
        event: StockRejected,
    ) -> Result<(), HandleError> {
        let id = uuid_field("order_id", &event.order_id)?;
        let Some(order) = store::lock(tx, id).await? else {
            return Err(HandleError::Rejected(format!("unknown order {id}")));
        };
        if order.status == Status::Pending && order.step == Step::ReservingStock {
            let reason = FailureReason::OutOfStock;
            self.cancel(tx, &order, reason).await?;
            self.metrics.record(Outcome::Cancelled(reason));
        }
        Ok(())
    }

    /// Times out expired orders, then carries out every due step, until none is left.
    async fn sweep(&self) -> Result<(), Error> {
        let expired = store::time_out_expired(&mut *self.pool.acquire().await?).await?;
        if !expired.is_empty() {
            tracing::info!(
                orders = expired.len(),
                "sagas past their deadline, refunding"
            );
        }
        loop {
            let due = store::claim_due(&mut *self.pool.acquire().await?, BATCH, LEASE).await?;
            if due.is_empty() {
                return Ok(());
            }
            futures::future::join_all(due.iter().map(|order| self.carry_out_or_postpone(order)))
                .await;
        }
    }

    async fn carry_out_or_postpone(&self, order: &Locked) {
        if let Err(err) = self.carry_out(order).await {
            tracing::warn!(order_id = %order.id, step = order.step.as_str(), error = %err, "saga step failed, will retry");
            let postponed = async {
                store::postpone(&mut *self.pool.acquire().await?, order.id, order.step).await
            };
            if let Err(err) = postponed.await {
                // The lease runs out instead.
                tracing::warn!(order_id = %order.id, error = %err, "saga step not postponed");
            }
        }
    }
}

/// Charges claimed in a handler's transaction, waiting for it to commit. An entry whose
/// transaction rolled back, or whose event was dead-lettered, is never taken: it is dropped
/// once its lease is over, when the worker's poll owns the step anyway.
#[derive(Debug, Default)]
pub struct Claims(std::sync::Mutex<std::collections::HashMap<Uuid, (Instant, Locked)>>);

impl Claims {
    fn claim(&self, order: Locked) {
        let mut claims = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        claims.retain(|_, (claimed, _)| claimed.elapsed() < LEASE);
        claims.insert(order.id, (Instant::now(), order));
    }

    /// The order claimed as `id`, while its lease lasts.
    fn take(&self, id: Uuid) -> Option<Locked> {
        let mut claims = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        claims
            .remove(&id)
            .and_then(|(claimed, order)| (claimed.elapsed() < LEASE).then_some(order))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The events the order service consumes.
pub const EVENTS: &[&str] = &[StockReserved::TYPE, StockRejected::TYPE];

impl Handler for Saga {
    fn committed(&self, event: &Envelope) {
        if event.event_type != StockReserved::TYPE {
            return;
        }
        let Ok(reserved) = event.event::<StockReserved>() else {
            return;
        };
        let Ok(id) = Uuid::parse_str(&reserved.order_id) else {
            return;
        };
        if let Some(order) = self.claimed.take(id) {
            // The worker is gone only at shutdown; the lease hands the charge on then.
            let _ = self.due.send(order);
        }
    }

    fn handle<'a>(&'a self, tx: &'a mut PgConnection, event: &'a Envelope) -> HandleResult<'a> {
        Box::pin(async move {
            match event.event_type.as_str() {
                StockReserved::TYPE => self.on_stock_reserved(tx, event.event()?).await,
                StockRejected::TYPE => self.on_stock_rejected(tx, event.event()?).await,
                other => Err(HandleError::Rejected(format!(
                    "unexpected event type {other}"
                ))),
            }
        })
    }
}

/// Until `shutdown`: carries out at once each charge handed over by `committed` (`due`), and
/// every `POLL` times out expired sagas and carries out the steps left to do (a crash, a failed
/// call, a lease run out). Charges under way are finished before it returns.
pub async fn run_steps(
    saga: Arc<Saga>,
    mut due: mpsc::UnboundedReceiver<Locked>,
    shutdown: Shutdown,
) {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut charging = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            Some(order) = due.recv() => {
                let saga = saga.clone();
                charging.spawn(async move { saga.carry_out_or_postpone(&order).await });
            }
            Some(_) = charging.join_next(), if !charging.is_empty() => {}
            _ = poll.tick() => {
                if let Err(err) = saga.sweep().await {
                    tracing::warn!(error = %err, "saga sweep failed, retrying");
                }
            }
        }
    }
    while charging.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charging() -> Locked {
        Locked {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            status: Status::Pending,
            step: Step::Charging,
            cancel_reason: None,
            failure_reason: None,
            total_cents: 100,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_never_taken_is_dropped_once_its_lease_is_over() {
        let claims = Claims::default();
        let (rolled_back, committed) = (charging(), charging());
        claims.claim(rolled_back.clone());
        tokio::time::advance(LEASE).await;
        claims.claim(committed.clone());
        assert_eq!(claims.len(), 1, "the rolled-back claim is still held");
        assert!(claims.take(rolled_back.id).is_none());
        assert_eq!(claims.take(committed.id).map(|o| o.id), Some(committed.id));
        assert!(claims.take(committed.id).is_none(), "taken twice");

        // Taken after its lease, a claim is the poll's: not handed over.
        claims.claim(committed.clone());
        tokio::time::advance(LEASE).await;
        assert!(claims.take(committed.id).is_none());
    }
}
