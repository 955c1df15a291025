//! The user service: accounts, login, and the access tokens every other service trusts.
//!
//! `UserService::start` connects to its database (running the embedded migrations) and makes
//! sure the configured admin account exists; `UserService::serve` then answers gRPC on the given
//! listener until shutdown. `UserService::new` leaves both to `serve`, which answers health
//! meanwhile (what `souk serve user` does).

mod domain;
mod grpc;
mod password;
mod sessions;
mod store;

use std::sync::Arc;

use souk_shared::{
    Shutdown,
    config::Secret,
    db::{self, Database, DatabaseLocation},
    grpc::{GrpcService, Preparation},
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

/// A user service; its database and admin account are made ready by `start`, or by `serve`
/// while it already answers health.
#[derive(Debug)]
pub struct UserService {
    state: Arc<grpc::State>,
    /// Readies the database and the admin account; `None` once done.
    prepare: Option<Preparation>,
}

impl UserService {
    /// The service, its database not reached yet (the settings checked, the hasher made):
    /// `serve` answers health at once and its calls once the database and the admin account are
    /// ready.
    pub async fn new(settings: Settings) -> anyhow::Result<Self> {
        let admin = settings
            .admin
            .as_ref()
            .map(|admin| {
                let email = Email::parse(&admin.email)
                    .map_err(|err| anyhow::anyhow!("SOUK_ADMIN_EMAIL: {err}"))?;
                let password = Password::parse(admin.password.expose())
                    .map_err(|err| anyhow::anyhow!("SOUK_ADMIN_PASSWORD: {err}"))?;
                anyhow::Ok((email, password))
            })
            .transpose()?;
        let database = Database::new(&settings.database, &MIGRATOR)?;
        let pool = database.pool().clone();
        let hasher = password::Hasher::new(settings.hash_limits).await?;
        let sessions = sessions::Sessions::new(pool.clone(), settings.refresh_ttl);
        let store = store::Store::new(pool);
        let prepare = Preparation::new({
            let (store, hasher) = (store.clone(), hasher.clone());
            async move {
                database.prepare().await?;
                if let Some((email, password)) = admin {
                    let hash = hasher.hash(password).await?;
                    db::retry("make sure of the admin account", || async {
                        store
                            .ensure_admin(&email, &hash)
                            .await
                            .map_err(anyhow::Error::from)
                    })
                    .await?;
                    tracing::info!(email = email.as_str(), "admin account ready");
                }
                Ok(())
            }
        });
        Ok(Self {
            state: Arc::new(grpc::State {
                store,
                sessions,
                hasher,
                signer: settings.signer,
                verifier: settings.verifier,
            }),
            prepare: Some(prepare),
        })
    }

    /// The service with its database and admin account ready (waiting for the database as long
    /// as it takes).
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let mut service = Self::new(settings).await?;
        Preparation::run_held(&mut service.prepare).await?;
        Ok(service)
    }

    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let service = GrpcService {
            database: Some(self.state.store.pool().clone()),
            prepare: self.prepare,
            ..GrpcService::new(
                grpc::SERVICE_NAME,
                tonic::service::Routes::new(grpc::server(self.state)),
            )
        };
        souk_shared::grpc::serve(service, listener, shutdown).await
    }
}
