//! The product service, as the cart sees it: which products exist, their names, current prices
//! and stock, for many ids in one `BatchGetProducts` round trip.
//!
//! The channel (the shared one: balanced over every product replica, trace context carried)
//! connects lazily and reconnects by itself, so the cart service starts and stays up while the
//! product service is down; calls then fail fast (1 s to connect) as `Unavailable`.

use std::time::Duration;

use souk_protos::v1::{BatchGetProductsRequest, product_service_client::ProductServiceClient};
use souk_shared::{
    Error, auth::Caller, discovery::Discovery, grpc::channel_with, trace::TracedChannel as Channel,
};
use uuid::Uuid;

use crate::domain::{ProductInfo, Products};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Catalog {
    client: ProductServiceClient<Channel>,
}

impl Catalog {
    /// A client of the product service at `url` (`http://host:port`); nothing is dialled yet.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let channel = channel_with("SOUK_PRODUCT_URL", url, REQUEST_TIMEOUT, Discovery::dns())?;
        Ok(Self {
            client: ProductServiceClient::new(channel),
        })
    }

    /// The products among `ids` that exist, asked for on the caller's behalf. No ids, no call.
    pub async fn products(&self, caller: &Caller, ids: &[Uuid]) -> Result<Products, Error> {
        if ids.is_empty() {
            return Ok(Products::new());
        }
        let request = caller.request(BatchGetProductsRequest {
            ids: ids.iter().map(Uuid::to_string).collect(),
        });
        let found = self
            .client
            .clone()
            .batch_get_products(request)
            .await
            .map_err(|status| Error::from_upstream("product", status))?
            .into_inner();
        found
            .items
            .into_iter()
            .map(|product| {
                let id = Uuid::parse_str(&product.id).map_err(|_| {
                    Error::Internal(anyhow::anyhow!(
                        "product service answered a malformed id {:?}",
                        product.id
                    ))
                })?;
                Ok((
                    id,
                    ProductInfo {
                        name: product.name,
                        price_cents: product.price_cents,
                        stock: product.stock,
                    },
                ))
            })
            .collect()
    }
}
