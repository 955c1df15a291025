//! The gRPC face of the user service.

use std::sync::Arc;

use souk_protos::v1::{
    GetUserRequest, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RefreshRequest,
    RegisterRequest, User,
    user_service_server::{UserService, UserServiceServer},
};
use souk_shared::{
    Error, auth,
    jwt::{Signer, Verifier},
    time,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{Email, Name, Password},
    password::Hasher,
    sessions::{Issued, Sessions},
    store::{self, Store},
};

pub const SERVICE_NAME: &str = "souk.v1.UserService";

#[derive(Debug)]
pub struct State {
    pub store: Store,
    pub sessions: Sessions,
    pub hasher: Hasher,
    pub signer: Signer,
    pub verifier: Verifier,
}

pub fn server(state: Arc<State>) -> UserServiceServer<Handler> {
    UserServiceServer::new(Handler(state))
}

#[derive(Debug, Clone)]
pub struct Handler(Arc<State>);

fn to_proto(user: store::User) -> User {
    User {
        id: user.id.to_string(),
        email: user.email,
        name: user.name,
        role: user.role.as_str().into(),
        created_at: Some(time::to_proto(user.created_at)),
    }
}

fn seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

impl State {
    /// An access token for `user` as `role`, with the refresh token that renews it.
    fn tokens(
        &self,
        user: Uuid,
        role: souk_shared::jwt::Role,
        refresh: Issued,
    ) -> Result<LoginResponse, Error> {
        let token = self.signer.sign(user, role).map_err(Error::Internal)?;
        Ok(LoginResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: seconds(self.signer.ttl()),
            refresh_token: refresh.token,
            refresh_expires_in: seconds(refresh.expires_in),
        })
    }
}

#[tonic::async_trait]
impl UserService for Handler {
    #[tracing::instrument(skip_all)]
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        let email = Email::parse(&request.email)?;
        let password = Password::parse(&request.password)?;
        let name = Name::parse(&request.name)?;
        let hash = self.0.hasher.hash(password).await.map_err(Error::from)?;
        let user = self.0.store.insert(&email, &name, &hash).await?;
        tracing::info!(user_id = %user.id, "registered");
        Ok(Response::new(to_proto(user)))
    }

    #[tracing::instrument(skip_all)]
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let request = request.into_inner();
        let rejected = || Status::from(Error::Unauthenticated("invalid email or password".into()));
        // A malformed email cannot belong to an account: same answer as an unknown one.
        let Ok(email) = Email::parse(&request.email) else {
            self.0
                .hasher
                .verify(request.password, None)
                .await
                .map_err(Error::from)?;
            return Err(rejected());
        };
        let account = self.0.store.credentials(&email).await?;
        let (id, role, hash) = match account {
            Some(c) => (Some(c.id), Some(c.role), Some(c.password_hash)),
            None => (None, None, None),
        };
        if !self
            .0
            .hasher
            .verify(request.password, hash)
            .await
            .map_err(Error::from)?
        {
            return Err(rejected());
        }
        let (Some(id), Some(role)) = (id, role) else {
            return Err(rejected());
        };
        let refresh = self.0.sessions.start(id).await?;
        Ok(Response::new(self.0.tokens(id, role, refresh)?))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let renewed = self
            .0
            .sessions
            .renew(&request.get_ref().refresh_token)
            .await?;
        Ok(Response::new(self.0.tokens(
            renewed.user_id,
            renewed.role,
            renewed.next,
        )?))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        self.0
            .sessions
            .end(&request.get_ref().refresh_token)
            .await?;
        Ok(Response::new(LogoutResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let caller = auth::caller(request.metadata(), &self.0.verifier)?;
        let id = Uuid::parse_str(&request.get_ref().id)
            .map_err(|_| Error::invalid("id", "must be a UUID"))?;
        if id != caller.user_id && !caller.is_admin() {
            return Err(
                Error::PermissionDenied("a customer may read only its own account".into()).into(),
            );
        }
        let user = self
            .0
            .store
            .find(id)
            .await?
            .ok_or_else(|| Error::NotFound("user not found".into()))?;
        Ok(Response::new(to_proto(user)))
    }
}
