//! The gRPC clients of the services behind the gateway. Channels connect lazily and reconnect by
//! themselves, so the gateway starts and stays up while a service is down (answering 503).

use std::time::Duration;

use souk_protos::v1::{
    cart_service_client::CartServiceClient, product_service_client::ProductServiceClient,
    user_service_client::UserServiceClient,
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Where each service listens, as `http://host:port`.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub user: String,
    pub product: String,
    pub cart: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub user: UserServiceClient<Channel>,
    pub product: ProductServiceClient<Channel>,
    pub cart: CartServiceClient<Channel>,
    /// Service name and channel, for readiness.
    checks: Vec<(&'static str, Channel)>,
}

fn channel(setting: &str, url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| anyhow::anyhow!("{setting}: invalid URL {url:?}: {err}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(crate::UPSTREAM_TIMEOUT)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

impl Clients {
    pub fn new(upstreams: &Upstreams) -> anyhow::Result<Self> {
        let user = channel("SOUK_USER_URL", &upstreams.user)?;
        let product = channel("SOUK_PRODUCT_URL", &upstreams.product)?;
        let cart = channel("SOUK_CART_URL", &upstreams.cart)?;
        Ok(Self {
            user: UserServiceClient::new(user.clone()),
            product: ProductServiceClient::new(product.clone()),
            cart: CartServiceClient::new(cart.clone()),
            checks: vec![("user", user), ("product", product), ("cart", cart)],
        })
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
