//! The gRPC face of the payment service.

use std::sync::Arc;

use souk_protos::v1::{
    ChargeRequest, GetPaymentRequest, Payment, PaymentStatus, RefundRequest,
    payment_service_server::{PaymentService, PaymentServiceServer},
};
use souk_shared::{Error, auth, jwt::Verifier, time};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store::{self, Store};

pub const SERVICE_NAME: &str = "souk.v1.PaymentService";

#[derive(Debug)]
pub struct State {
    pub store: Store,
    pub verifier: Verifier,
    pub decline_above_cents: i64,
}

pub fn server(state: Arc<State>) -> PaymentServiceServer<Handler> {
    PaymentServiceServer::new(Handler(state))
}

#[derive(Debug, Clone)]
pub struct Handler(Arc<State>);

fn order_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid("order_id", "must be a UUID"))
}

fn to_proto(payment: store::Payment) -> Payment {
    let status = match payment.status.as_str() {
        "captured" => PaymentStatus::Captured,
        "declined" => PaymentStatus::Declined,
        "refunded" => PaymentStatus::Refunded,
        "voided" => PaymentStatus::Voided,
        _ => PaymentStatus::Unspecified,
    };
    Payment {
        id: payment.id.to_string(),
        order_id: payment.order_id.to_string(),
        user_id: payment.user_id.map(|id| id.to_string()).unwrap_or_default(),
        amount_cents: payment.amount_cents,
        status: status.into(),
        decline_reason: payment.decline_reason,
        created_at: Some(time::to_proto(payment.created_at)),
        updated_at: Some(time::to_proto(payment.updated_at)),
    }
}

impl Handler {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Error> {
        auth::caller(request.metadata(), &self.0.verifier)?.require_service()
    }
}

#[tonic::async_trait]
impl PaymentService for Handler {
    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Payment>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let order = order_id(&request.order_id)?;
        let user = Uuid::parse_str(&request.user_id)
            .map_err(|_| Error::invalid("user_id", "must be a UUID"))?;
        if request.amount_cents < 0 {
            return Err(Error::invalid("amount_cents", "must not be negative").into());
        }
        let decline =
            (request.amount_cents > self.0.decline_above_cents).then_some("amount_over_limit");
        let payment = self
            .0
            .store
            .charge(order, user, request.amount_cents, decline)
            .await?;
        tracing::info!(status = %payment.status, amount_cents = payment.amount_cents, "charge");
        Ok(Response::new(to_proto(payment)))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Payment>, Status> {
        self.authorize(&request)?;
        let payment = self
            .0
            .store
            .refund(order_id(&request.get_ref().order_id)?)
            .await?;
        tracing::info!(status = %payment.status, "refund");
        Ok(Response::new(to_proto(payment)))
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let caller = auth::caller(request.metadata(), &self.0.verifier)?;
        if !caller.is_admin() {
            caller.require_service()?;
        }
        let payment = self
            .0
            .store
            .find(order_id(&request.get_ref().order_id)?)
            .await?
            .ok_or_else(|| Error::NotFound("no payment for this order".into()))?;
        Ok(Response::new(to_proto(payment)))
    }
}
