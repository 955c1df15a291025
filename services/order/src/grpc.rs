//! The gRPC face of the order service: it reads requests and answers them. Placing and
//! cancelling are the saga's (`saga/`); reading orders is the store's.

use std::sync::Arc;

use souk_protos::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse,
    Order, OrderItem, OrderStatus,
    order_service_server::{OrderService, OrderServiceServer},
};
use souk_shared::{Error, auth, auth::Caller, jwt::Verifier, time};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    saga::{IdempotencyKey, Saga},
    store,
};

pub const SERVICE_NAME: &str = "souk.v1.OrderService";

/// Orders listed at most (newest first).
const LIST_LIMIT: i64 = 100;

#[derive(Debug)]
pub struct State {
    pub pool: PgPool,
    pub saga: Arc<Saga>,
    pub verifier: Verifier,
}

pub fn server(state: Arc<State>) -> OrderServiceServer<Handler> {
    OrderServiceServer::new(Handler(state))
}

#[derive(Debug, Clone)]
pub struct Handler(Arc<State>);

fn to_proto(order: store::Order) -> Order {
    let status = match order.status {
        store::Status::Pending => OrderStatus::Pending,
        store::Status::Confirmed => OrderStatus::Confirmed,
        store::Status::Cancelled => OrderStatus::Cancelled,
    };
    Order {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: status.into(),
        items: order
            .items
            .into_iter()
            .map(|item| OrderItem {
                product_id: item.product_id.to_string(),
                name: item.name,
                unit_price_cents: item.unit_price_cents,
                quantity: item.quantity,
            })
            .collect(),
        total_cents: order.total_cents,
        failure_reason: order
            .failure_reason
            .map(|reason| reason.as_str().to_owned()),
        created_at: Some(time::to_proto(order.created_at)),
        updated_at: Some(time::to_proto(order.updated_at)),
    }
}

fn order_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid("id", "must be a UUID"))
}

impl Handler {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        auth::caller(request.metadata(), &self.0.verifier)
    }

    /// The caller's order `id`; not found when it is someone else's.
    async fn own_order(&self, caller: &Caller, id: Uuid) -> Result<store::Order, Error> {
        store::find(&mut *self.0.pool.acquire().await?, id)
            .await?
            .filter(|order| order.user_id == caller.user_id)
            .ok_or_else(|| Error::NotFound("order not found".into()))
    }
}

#[tonic::async_trait]
impl OrderService for Handler {
    #[tracing::instrument(skip_all)]
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request)?;
        let key = IdempotencyKey::parse(request.into_inner().idempotency_key)?;
        let order = self.0.saga.place(&caller, key.as_ref()).await?;
        Ok(Response::new(to_proto(order)))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut db = self.0.pool.acquire().await.map_err(Error::from)?;
        let orders = store::list(&mut db, caller.user_id, LIST_LIMIT).await?;
        Ok(Response::new(ListOrdersResponse {
            items: orders.into_iter().map(to_proto).collect(),
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request)?;
        let id = order_id(&request.get_ref().id)?;
        Ok(Response::new(to_proto(self.own_order(&caller, id).await?)))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().id))]
    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request)?;
        let id = order_id(&request.get_ref().id)?;
        self.0.saga.cancel_by_user(id, caller.user_id).await?;
        Ok(Response::new(to_proto(self.own_order(&caller, id).await?)))
    }
}
