//! The gRPC face of the order service.

use std::{collections::HashMap, sync::Arc, time::Duration};

use souk_protos::v1::{
    BatchGetProductsRequest, CancelOrderRequest, CreateOrderRequest, GetCartRequest,
    GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order, OrderCreated, OrderItem,
    OrderLine, OrderStatus,
    cart_service_client::CartServiceClient,
    order_service_server::{OrderService, OrderServiceServer},
    product_service_client::ProductServiceClient,
};
use souk_shared::{Error, auth, auth::Caller, jwt::Verifier, outbox, time, trace::TracedChannel};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    saga::Saga,
    store::{self, Item, NewOrder, Store},
};

pub const SERVICE_NAME: &str = "souk.v1.OrderService";

/// Orders listed at most (newest first).
const LIST_LIMIT: i64 = 100;

#[derive(Debug)]
pub struct State {
    pub store: Store,
    pub saga: Arc<Saga>,
    pub verifier: Verifier,
    pub cart: CartServiceClient<TracedChannel>,
    pub product: ProductServiceClient<TracedChannel>,
    pub saga_timeout: Duration,
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
        failure_reason: order.failure_reason,
        created_at: Some(time::to_proto(order.created_at)),
        updated_at: Some(time::to_proto(order.updated_at)),
    }
}

/// An idempotency key: 1 to 255 visible characters.
fn idempotency_key(raw: Option<String>) -> Result<Option<String>, Error> {
    let Some(key) = raw else { return Ok(None) };
    let chars = key.chars().count();
    if !(1..=255).contains(&chars) || key.chars().any(char::is_control) {
        return Err(Error::invalid(
            "idempotency_key",
            "must be 1 to 255 characters, none of them control characters",
        ));
    }
    Ok(Some(key))
}

fn order_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid("id", "must be a UUID"))
}

impl Handler {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        auth::caller(request.metadata(), &self.0.verifier)
    }

    /// The caller's cart, priced now by the product service.
    async fn price_cart(&self, caller: &Caller) -> Result<Vec<Item>, Error> {
        let cart = self
            .0
            .cart
            .clone()
            .get_cart(caller.request(GetCartRequest {}))
            .await
            .map_err(|status| Error::from_upstream("cart", status))?
            .into_inner();
        if cart.items.is_empty() {
            return Err(Error::InvalidArgument("the cart is empty".into()));
        }
        let ids = cart
            .items
            .iter()
            .map(|line| line.product_id.clone())
            .collect();
        let products: HashMap<String, _> = self
            .0
            .product
            .clone()
            .batch_get_products(caller.request(BatchGetProductsRequest { ids }))
            .await
            .map_err(|status| Error::from_upstream("product", status))?
            .into_inner()
            .items
            .into_iter()
            .map(|product| (product.id.clone(), product))
            .collect();
        cart.items
            .into_iter()
            .map(|line| {
                let product = products.get(&line.product_id).ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "product {} is no longer sold",
                        line.product_id
                    ))
                })?;
                let product_id = Uuid::parse_str(&product.id).map_err(|_| {
                    Error::Internal(anyhow::anyhow!("product service gave id {:?}", product.id))
                })?;
                Ok(Item {
                    product_id,
                    name: product.name.clone(),
                    unit_price_cents: product.price_cents,
                    quantity: line.quantity,
                })
            })
            .collect()
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
        let key = idempotency_key(request.into_inner().idempotency_key)?;
        if let Some(key) = &key
            && let Some(order) = self.0.store.find_by_key(caller.user_id, key).await?
        {
            return Ok(Response::new(to_proto(order)));
        }
        let items = match self.price_cart(&caller).await {
            Ok(items) => items,
            // The first request with this key may have been placed (and have emptied the cart)
            // since we looked: it is the answer then, not the empty cart.
            Err(err) => match &key {
                Some(key) => match self.0.store.find_by_key(caller.user_id, key).await? {
                    Some(order) => return Ok(Response::new(to_proto(order))),
                    None => return Err(err.into()),
                },
                None => return Err(err.into()),
            },
        };
        let total_cents = items
            .iter()
            .try_fold(0i64, |total, item| {
                item.unit_price_cents
                    .checked_mul(item.quantity)
                    .and_then(|line| total.checked_add(line))
            })
            .ok_or_else(|| Error::InvalidArgument("the order total is too large".into()))?;
        let id = Uuid::now_v7();
        let deadline = chrono::Utc::now()
            + chrono::Duration::from_std(self.0.saga_timeout)
                .map_err(|err| Error::Internal(err.into()))?;
        let new = NewOrder {
            id,
            user_id: caller.user_id,
            idempotency_key: key.as_deref(),
            total_cents,
            deadline,
            items: &items,
        };
        let event = OrderCreated {
            order_id: id.to_string(),
            user_id: caller.user_id.to_string(),
            lines: items
                .iter()
                .map(|item| OrderLine {
                    product_id: item.product_id.to_string(),
                    quantity: item.quantity,
                })
                .collect(),
            total_cents,
        };
        let mut tx = self.0.store.pool().begin().await.map_err(Error::from)?;
        let Some(order) = Store::insert(&mut tx, &new).await? else {
            // The same key won a race with this request: answer with its order.
            drop(tx);
            let key = key.unwrap_or_default();
            let order = self.0.store.find_by_key(caller.user_id, &key).await?;
            return order
                .map(|order| Response::new(to_proto(order)))
                .ok_or_else(|| {
                    Error::Internal(anyhow::anyhow!("idempotent order vanished")).into()
                });
        };
        outbox::enqueue(&mut tx, &self.0.saga.shop, &event)
            .await
            .map_err(Error::from)?;
        tx.commit().await.map_err(Error::from)?;
        tracing::info!(order_id = %id, total_cents, "order placed");
        // The order as placed: the saga may already be further along by the time we answer.
        Ok(Response::new(to_proto(order)))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = self.caller(&request)?;
        let orders = self.0.store.list(caller.user_id, LIST_LIMIT).await?;
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
        let order = self
            .0
            .store
            .find(id)
            .await?
            .filter(|order| order.user_id == caller.user_id)
            .ok_or_else(|| Error::NotFound("order not found".into()))?;
        Ok(Response::new(to_proto(order)))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().id))]
    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let caller = self.caller(&request)?;
        let id = order_id(&request.get_ref().id)?;
        self.0.saga.cancel_by_user(id, caller.user_id).await?;
        let order = self
            .0
            .store
            .find(id)
            .await?
            .filter(|order| order.user_id == caller.user_id)
            .ok_or_else(|| Error::NotFound("order not found".into()))?;
        Ok(Response::new(to_proto(order)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_bounded() {
        assert_eq!(idempotency_key(None).expect("none"), None);
        assert!(idempotency_key(Some("k".repeat(255))).is_ok());
        assert!(idempotency_key(Some("k".repeat(256))).is_err());
        assert!(idempotency_key(Some(String::new())).is_err());
        assert!(idempotency_key(Some("a\nb".into())).is_err());
    }
}
