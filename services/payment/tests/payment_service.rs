//! The payment service's RPCs against a real PostgreSQL database of their own.

use std::time::Duration;

use souk_payment::Settings;
use souk_protos::v1::{
    ChargeRequest, GetPaymentRequest, PaymentStatus, RefundRequest,
    payment_service_client::PaymentServiceClient,
};
use souk_shared::{
    Shutdown,
    auth::with_token,
    db::DatabaseLocation,
    jwt::{KeyPair, Role, Signer, Verifier},
    testing::{TestDatabase, listener},
};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

const LIMIT: i64 = 10_000;

struct App {
    client: PaymentServiceClient<Channel>,
    signer: Signer,
    shutdown: Shutdown,
    _db: TestDatabase,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn app() -> App {
    let db = TestDatabase::create().await;
    let keys = KeyPair::generate().expect("keys");
    let service = souk_payment::service(Settings {
        database: DatabaseLocation::Own(db.url()),
        verifier: Verifier::from_pem(&keys.public_pem).expect("verifier"),
        decline_above_cents: LIMIT,
    })
    .expect("settings")
    .ready()
    .await
    .expect("start");
    let listener = listener().await;
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    tokio::spawn(service.serve(listener, shutdown.clone()));
    App {
        client: PaymentServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect"),
        signer: Signer::from_pem(keys.private_pem.expose(), Duration::from_secs(60))
            .expect("signer"),
        shutdown,
        _db: db,
    }
}

impl App {
    fn token(&self, role: Role) -> String {
        self.signer.sign(Uuid::new_v4(), role).expect("token")
    }

    async fn charge(
        &mut self,
        order: Uuid,
        amount_cents: i64,
    ) -> Result<souk_protos::v1::Payment, tonic::Status> {
        let request = ChargeRequest {
            order_id: order.to_string(),
            user_id: Uuid::new_v4().to_string(),
            amount_cents,
        };
        let token = self.token(Role::Service);
        Ok(self
            .client
            .charge(with_token(request, &token))
            .await?
            .into_inner())
    }

    async fn refund(&mut self, order: Uuid) -> souk_protos::v1::Payment {
        let token = self.token(Role::Service);
        let request = with_token(
            RefundRequest {
                order_id: order.to_string(),
            },
            &token,
        );
        self.client
            .refund(request)
            .await
            .expect("refund")
            .into_inner()
    }
}

#[tokio::test]
async fn a_charge_within_the_limit_is_captured_once_however_often_it_is_retried() {
    let mut app = app().await;
    let order = Uuid::new_v4();
    let first = app.charge(order, 2_500).await.expect("charge");
    assert_eq!(first.status(), PaymentStatus::Captured);
    assert_eq!(first.amount_cents, 2_500);
    let again = app.charge(order, 2_500).await.expect("retried charge");
    assert_eq!(again.id, first.id, "the same payment, not a second one");
    assert_eq!(again.status(), PaymentStatus::Captured);
}

#[tokio::test]
async fn concurrent_charges_of_one_order_make_one_payment() {
    let app = app().await;
    let order = Uuid::new_v4();
    let charges = (0..8).map(|_| {
        let mut client = app.client.clone();
        let token = app.token(Role::Service);
        async move {
            let request = ChargeRequest {
                order_id: order.to_string(),
                user_id: Uuid::new_v4().to_string(),
                amount_cents: 100,
            };
            client
                .charge(with_token(request, &token))
                .await
                .expect("charge")
                .into_inner()
                .id
        }
    });
    let ids = futures_ids(charges).await;
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
}

async fn futures_ids<F: std::future::Future<Output = String> + Send + 'static>(
    charges: impl Iterator<Item = F>,
) -> Vec<String> {
    let handles: Vec<_> = charges.map(tokio::spawn).collect::<Vec<_>>();
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(handle.await.expect("task"));
    }
    ids
}

#[tokio::test]
async fn charges_above_the_limit_are_declined_and_stay_declined() {
    let mut app = app().await;
    let order = Uuid::new_v4();
    let declined = app.charge(order, LIMIT + 1).await.expect("charge");
    assert_eq!(declined.status(), PaymentStatus::Declined);
    assert_eq!(
        declined.decline_reason.as_deref(),
        Some("amount_over_limit")
    );
    assert_eq!(
        app.charge(order, LIMIT + 1).await.expect("retry").status(),
        PaymentStatus::Declined
    );
    assert_eq!(
        app.charge(Uuid::new_v4(), LIMIT)
            .await
            .expect("at the limit")
            .status(),
        PaymentStatus::Captured
    );
}

#[tokio::test]
async fn a_refund_refunds_a_captured_payment_once() {
    let mut app = app().await;
    let order = Uuid::new_v4();
    let charged = app.charge(order, 700).await.expect("charge");
    let refunded = app.refund(order).await;
    assert_eq!(refunded.id, charged.id);
    assert_eq!(refunded.status(), PaymentStatus::Refunded);
    assert_eq!(app.refund(order).await.status(), PaymentStatus::Refunded);
    // A charge retried after the refund does not capture the money again.
    assert_eq!(
        app.charge(order, 700).await.expect("late retry").status(),
        PaymentStatus::Refunded
    );
}

#[tokio::test]
async fn a_refund_before_the_charge_voids_the_order() {
    let mut app = app().await;
    let order = Uuid::new_v4();
    assert_eq!(app.refund(order).await.status(), PaymentStatus::Voided);
    let late = app.charge(order, 700).await.expect("late charge");
    assert_eq!(
        late.status(),
        PaymentStatus::Voided,
        "no money is taken for a cancelled order"
    );
}

#[tokio::test]
async fn a_declined_payment_is_not_refunded() {
    let mut app = app().await;
    let order = Uuid::new_v4();
    app.charge(order, LIMIT * 2).await.expect("charge");
    assert_eq!(app.refund(order).await.status(), PaymentStatus::Declined);
}

#[tokio::test]
async fn only_services_may_charge_or_refund() {
    let mut app = app().await;
    let request = || ChargeRequest {
        order_id: Uuid::new_v4().to_string(),
        user_id: Uuid::new_v4().to_string(),
        amount_cents: 1,
    };
    let err = app.client.charge(request()).await.expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    for role in [Role::Customer, Role::Admin] {
        let token = app.token(role);
        let err = app
            .client
            .charge(with_token(request(), &token))
            .await
            .expect_err("not a service");
        assert_eq!(err.code(), Code::PermissionDenied, "{role:?}");
        let refund = with_token(
            RefundRequest {
                order_id: Uuid::new_v4().to_string(),
            },
            &token,
        );
        assert_eq!(
            app.client.refund(refund).await.expect_err("refund").code(),
            Code::PermissionDenied
        );
    }
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_and_record_nothing() {
    let mut app = app().await;
    let token = app.token(Role::Service);
    let order = Uuid::new_v4();
    for (order_id, user_id, amount_cents) in [
        ("nope".to_owned(), Uuid::new_v4().to_string(), 1),
        (order.to_string(), "nope".to_owned(), 1),
        (order.to_string(), Uuid::new_v4().to_string(), -1),
    ] {
        let request = ChargeRequest {
            order_id,
            user_id,
            amount_cents,
        };
        let err = app
            .client
            .charge(with_token(request, &token))
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let admin = app.token(Role::Admin);
    let lookup = with_token(
        GetPaymentRequest {
            order_id: order.to_string(),
        },
        &admin,
    );
    assert_eq!(
        app.client
            .get_payment(lookup)
            .await
            .expect_err("nothing recorded")
            .code(),
        Code::NotFound
    );
}
