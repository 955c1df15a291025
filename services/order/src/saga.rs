//! The checkout saga, orchestrated here from the order's rows and the events of the other
//! services. Each step locks the order row, so a step and a timeout, or two replicas, never act
//! on one order at once; each is idempotent, so a redelivered event changes nothing.
//!
//! 1. `CreateOrder` stores the order `PENDING` with `order.created` (grpc.rs).
//! 2. The product service answers `stock.reserved` or `stock.rejected`.
//! 3. `stock.reserved`: charge the payment service (idempotent by order id); captured →
//!    `CONFIRMED` + `order.confirmed`; declined → `CANCELLED`/`payment_declined` +
//!    `order.cancelled` (the product service releases the stock).
//! 4. `stock.rejected`: `CANCELLED`/`out_of_stock` + `order.cancelled` (nothing is held).
//! 5. A `PENDING` order past its deadline, or one the user cancels, is refunded (which voids an
//!    order not charged yet, so a charge still in flight cannot take money), `CANCELLED` and
//!    announced with `order.cancelled`.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use souk_protos::v1::{
    ChargeRequest, OrderCancelled, OrderConfirmed, OrderLine, PaymentStatus, RefundRequest,
    StockRejected, StockReserved, payment_service_client::PaymentServiceClient,
};
use souk_shared::{
    Error, Shutdown,
    config::ShopName,
    consumer::{HandleError, HandleResult, Handler},
    events::{Envelope, Event, uuid_field},
    jwt::{Role, Signer},
    outbox,
    trace::TracedChannel,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::{FailureReason, Locked, Status, Store};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
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

    fn record(&self, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// What the saga steps share.
#[derive(Debug)]
pub struct Saga {
    pub shop: ShopName,
    pub payment: PaymentServiceClient<TracedChannel>,
    pub signer: Signer,
    pub metrics: SagaMetrics,
}

impl Saga {
    /// A short-lived token for calls the order service makes on its own behalf.
    fn service_request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        let token = self
            .signer
            .sign(Uuid::nil(), Role::Service)
            .map_err(Error::Internal)?;
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
        let lines = Store::confirm(tx, order.id).await?;
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
        Store::cancel(tx, order.id, reason).await?;
        let event = OrderCancelled {
            order_id: order.id.to_string(),
            user_id: order.user_id.to_string(),
            reason: reason.as_str().to_owned(),
        };
        outbox::enqueue(tx, &self.shop, &event).await?;
        tracing::info!(order_id = %order.id, reason = reason.as_str(), "order cancelled");
        Ok(())
    }

    /// Refunds and cancels a locked order (timeout or the user's wish), in the caller's
    /// transaction. The refund comes first: if it cannot be made, nothing changes.
    pub async fn compensate(
        &self,
        tx: &mut PgConnection,
        order: &Locked,
        reason: FailureReason,
    ) -> Result<(), Error> {
        self.refund(order.id).await?;
        self.cancel(tx, order, reason).await?;
        Ok(())
    }

    pub fn record(&self, reason: Option<FailureReason>) {
        self.metrics
            .record(reason.map_or("confirmed", FailureReason::as_str));
    }

    async fn on_stock_reserved(
        &self,
        tx: &mut PgConnection,
        event: StockReserved,
    ) -> Result<(), HandleError> {
        let id = uuid_field("order_id", &event.order_id)?;
        let Some(order) = Store::lock(tx, id).await? else {
            return Err(HandleError::Rejected(format!("unknown order {id}")));
        };
        if order.status != Status::Pending {
            // Already ended (timed out, cancelled): its order.cancelled releases the stock.
            return Ok(());
        }
        match self.charge(&order).await? {
            PaymentStatus::Captured => {
                self.confirm(tx, &order).await?;
                self.record(None);
            }
            _ => {
                self.cancel(tx, &order, FailureReason::PaymentDeclined)
                    .await?;
                self.record(Some(FailureReason::PaymentDeclined));
            }
        }
        Ok(())
    }

    async fn on_stock_rejected(
        &self,
        tx: &mut PgConnection,
        event: StockRejected,
    ) -> Result<(), HandleError> {
        let id = uuid_field("order_id", &event.order_id)?;
        let Some(order) = Store::lock(tx, id).await? else {
            return Err(HandleError::Rejected(format!("unknown order {id}")));
        };
        if order.status == Status::Pending {
            self.cancel(tx, &order, FailureReason::OutOfStock).await?;
            self.record(Some(FailureReason::OutOfStock));
        }
        Ok(())
    }
}

/// The events the order service consumes.
pub const EVENTS: &[&str] = &[StockReserved::TYPE, StockRejected::TYPE];

impl Handler for Saga {
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

/// Cancels sagas that made no progress before their deadline, until `shutdown`.
pub async fn time_out_sagas(saga: Arc<Saga>, pool: PgPool, shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if let Err(err) = time_out_expired(&saga, &pool).await {
            tracing::warn!(error = %err, "saga timeout sweep failed, retrying");
        }
    }
}

async fn time_out_expired(saga: &Saga, pool: &PgPool) -> Result<(), Error> {
    loop {
        let mut tx = pool.begin().await?;
        let Some(id) = Store::lock_expired(&mut tx, 1).await?.pop() else {
            return Ok(());
        };
        let Some(order) = Store::lock(&mut tx, id).await? else {
            return Ok(());
        };
        saga.compensate(&mut tx, &order, FailureReason::Timeout)
            .await?;
        tx.commit().await?;
        saga.record(Some(FailureReason::Timeout));
    }
}
