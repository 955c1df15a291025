//! The user service: accounts, login, and the access tokens every other service trusts.
//!
//! `service` builds it from its `Settings`; made ready, it has its database migrated and the
//! configured admin account in place.

mod domain;
mod grpc;
mod password;
mod sessions;
mod store;

use std::sync::Arc;

use souk_shared::{
    config::Secret,
    db::{self, Database, DatabaseLocation},
    grpc::{GrpcService, Preparation},
    jwt::{Signer, Verifier},
};

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

/// The user service, its settings checked and its hasher made, its database not reached yet:
/// made ready (the database migrated, the admin account in place) by [`GrpcService::ready`],
/// or by serving, which answers health meanwhile.
pub async fn service(settings: Settings) -> anyhow::Result<GrpcService> {
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
    let store = store::Store::new(pool.clone());
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
    let state = Arc::new(grpc::State {
        store,
        sessions,
        hasher,
        signer: settings.signer,
        verifier: settings.verifier,
    });
    Ok(GrpcService {
        database: Some(pool),
        prepare: Some(prepare),
        ..GrpcService::new(
            grpc::SERVICE_NAME,
            tonic::service::Routes::new(grpc::server(state)),
        )
    })
}
