//! The gRPC face of the cart service. Every call acts on the cart of the caller proven by its
//! own token; there is no way to name another user's cart.

use std::sync::Arc;

use souk_protos::v1::{
    AddItemRequest, Cart, CartItem, ClearCartRequest, DeleteCartRequest, GetCartRequest,
    RemoveItemRequest, SetItemQuantityRequest,
    cart_service_server::{CartService, CartServiceServer},
};
use souk_shared::{Error, auth, jwt::Verifier};
use tonic::{Request, Response, Status};

use crate::{
    carts::{Carts, Change},
    domain::{PricedCart, parse_product_id, parse_quantity},
};

pub const SERVICE_NAME: &str = "souk.v1.CartService";

#[derive(Debug)]
pub struct State {
    pub carts: Carts,
    pub verifier: Verifier,
}

pub fn server(state: Arc<State>) -> CartServiceServer<Handler> {
    CartServiceServer::new(Handler(state))
}

#[derive(Debug, Clone)]
pub struct Handler(Arc<State>);

impl Handler {
    fn caller<T>(&self, request: &Request<T>) -> Result<auth::Caller, Error> {
        auth::caller(request.metadata(), &self.0.verifier)
    }
}

fn to_proto(cart: PricedCart) -> Cart {
    Cart {
        user_id: cart.user_id.to_string(),
        items: cart
            .items
            .into_iter()
            .map(|line| CartItem {
                product_id: line.product_id.to_string(),
                name: line.name,
                unit_price_cents: line.unit_price_cents,
                quantity: line.quantity,
                line_total_cents: line.line_total_cents,
            })
            .collect(),
        total_cents: cart.total_cents,
    }
}

#[tonic::async_trait]
impl CartService for Handler {
    #[tracing::instrument(skip_all)]
    async fn get_cart(&self, request: Request<GetCartRequest>) -> Result<Response<Cart>, Status> {
        let caller = self.caller(&request)?;
        let cart = self.0.carts.get(&caller).await?;
        Ok(Response::new(to_proto(cart)))
    }

    #[tracing::instrument(skip_all)]
    async fn add_item(&self, request: Request<AddItemRequest>) -> Result<Response<Cart>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let change = Change::Add {
            product_id: parse_product_id(&request.product_id)?,
            quantity: parse_quantity(request.quantity)?,
        };
        let cart = self.0.carts.change(&caller, change).await?;
        Ok(Response::new(to_proto(cart)))
    }

    #[tracing::instrument(skip_all)]
    async fn set_item_quantity(
        &self,
        request: Request<SetItemQuantityRequest>,
    ) -> Result<Response<Cart>, Status> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let change = Change::Set {
            product_id: parse_product_id(&request.product_id)?,
            quantity: parse_quantity(request.quantity)?,
        };
        let cart = self.0.carts.change(&caller, change).await?;
        Ok(Response::new(to_proto(cart)))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_item(
        &self,
        request: Request<RemoveItemRequest>,
    ) -> Result<Response<Cart>, Status> {
        let caller = self.caller(&request)?;
        let change = Change::Remove {
            product_id: parse_product_id(&request.get_ref().product_id)?,
        };
        let cart = self.0.carts.change(&caller, change).await?;
        Ok(Response::new(to_proto(cart)))
    }

    #[tracing::instrument(skip_all)]
    async fn clear_cart(
        &self,
        request: Request<ClearCartRequest>,
    ) -> Result<Response<Cart>, Status> {
        let caller = self.caller(&request)?;
        let cart = self.0.carts.clear(&caller).await?;
        Ok(Response::new(to_proto(cart)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_cart(
        &self,
        request: Request<DeleteCartRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = self.caller(&request)?;
        self.0.carts.delete(&caller).await?;
        Ok(Response::new(()))
    }
}
