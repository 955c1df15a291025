//! The gRPC clients of the services behind the gateway. Channels connect lazily and reconnect by
//! themselves, so the gateway starts and stays up while a service is down (answering 503).

use std::time::Duration;

use souk_protos::v1::{
    GetProductRequest, Product, cart_service_client::CartServiceClient,
    order_service_client::OrderServiceClient, product_service_client::ProductServiceClient,
    user_service_client::UserServiceClient,
};
use souk_shared::{grpc::channel, trace::TracedChannel as Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Where each service listens, as `http://host:port`.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub user: String,
    pub product: String,
    pub cart: String,
    pub order: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub user: UserServiceClient<Channel>,
    pub product: ProductServiceClient<Channel>,
    pub cart: CartServiceClient<Channel>,
    pub order: OrderServiceClient<Channel>,
    /// Service name and channel, for readiness.
    checks: Vec<(&'static str, Channel)>,
}

impl Clients {
    pub fn new(upstreams: &Upstreams) -> anyhow::Result<Self> {
        let user = channel("SOUK_USER_URL", &upstreams.user)?;
        let product = channel("SOUK_PRODUCT_URL", &upstreams.product)?;
        let cart = channel("SOUK_CART_URL", &upstreams.cart)?;
        let order = channel("SOUK_ORDER_URL", &upstreams.order)?;
        Ok(Self {
            user: UserServiceClient::new(user.clone()),
            product: ProductServiceClient::new(product.clone()),
            cart: CartServiceClient::new(cart.clone()),
            order: OrderServiceClient::new(order.clone()),
            checks: vec![
                ("user", user),
                ("product", product),
                ("cart", cart),
                ("order", order),
            ],
        })
    }

    /// Product `id` as the product service holds it now (never from the catalog cache).
    pub async fn product_now(&self, id: uuid::Uuid) -> Result<Product, tonic::Status> {
        Ok(self
            .product
            .clone()
            .get_product(GetProductRequest { id: id.to_string() })
            .await?
            .into_inner())
    }

    /// Each service and whether it answers its health check as serving.
    pub async fn readiness(&self) -> Vec<(&'static str, bool)> {
        let checks = self.checks.iter().map(|(name, channel)| async move {
            let mut client = HealthClient::new(channel.clone());
            let answer = tokio::time::timeout(
                Duration::from_secs(1),
                client.check(HealthCheckRequest { service: String::new() }),
            )
            .await;
            let serving = matches!(answer, Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32);
            (*name, serving)
        });
        futures::future::join_all(checks).await
    }
}
