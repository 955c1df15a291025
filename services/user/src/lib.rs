//! The user service: accounts, login, and the access tokens every other service trusts.
//!
//! `UserService::start` connects to its database (running the embedded migrations) and makes
//! sure the configured admin account exists; `UserService::serve` then answers gRPC on the given
//! listener until shutdown.

mod domain;
mod grpc;
mod password;
mod sessions;
mod store;

use std::sync::Arc;

use souk_shared::{
    Shutdown,
    config::Secret,
    db::{self, DatabaseLocation},
    grpc::GrpcService,
    jwt::{Signer, Verifier},
};
use tokio::net::TcpListener;

pub use domain::{Email, Name, Password};
pub use password::HashLimits;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The admin account that must exist (`SOUK_ADMIN_EMAIL` / `SOUK_ADMIN_PASSWORD`).
#[derive(Debug, Clone)]
pub struct AdminAccount {
    pub email: String,
    pub password: Secret<String>,
}

/// What the user service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseLocation,
    pub signer: Signer,
    pub verifier: Verifier,
    pub admin: Option<AdminAccount>,
    /// How many password hashes run at once, and how many may wait.
    pub hash_limits: HashLimits,
    /// How long a refresh token may be exchanged (the access token's lifetime is the signer's).
    pub refresh_ttl: std::time::Duration,
}

/// The default lifetime of a refresh token: 30 days.
pub const DEFAULT_REFRESH_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A started user service: database ready, admin account in place.
#[derive(Debug)]
pub struct UserService {
    state: Arc<grpc::State>,
}

impl UserService {
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database, &MIGRATOR).await?;
        let hasher = password::Hasher::new(settings.hash_limits).await?;
        let sessions = sessions::Sessions::new(pool.clone(), settings.refresh_ttl);
        let store = store::Store::new(pool);
        if let Some(admin) = &settings.admin {
            let email = Email::parse(&admin.email)
                .map_err(|err| anyhow::anyhow!("SOUK_ADMIN_EMAIL: {err}"))?;
            let password = Password::parse(admin.password.expose())
                .map_err(|err| anyhow::anyhow!("SOUK_ADMIN_PASSWORD: {err}"))?;
            let hash = hasher.hash(password).await?;
            store.ensure_admin(&email, &hash).await?;
            tracing::info!(email = email.as_str(), "admin account ready");
        }
        Ok(Self {
            state: Arc::new(grpc::State {
                store,
                sessions,
                hasher,
                signer: settings.signer,
                verifier: settings.verifier,
            }),
        })
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let database = self.state.store.pool().clone();
        let service = GrpcService {
            name: grpc::SERVICE_NAME,
            routes: tonic::service::Routes::new(grpc::server(self.state)),
            database: Some(database),
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
