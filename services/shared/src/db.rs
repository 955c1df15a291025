//! The service's PostgreSQL pool: connect with retry, create the database when it is missing,
//! run the service's embedded migrations.

use std::time::Duration;

use sqlx::{
    ConnectOptions, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::{Secret, ShopName};

/// Where one service's database is: its own URL, or a database named `<shop>_<service>` on a
/// shared server that is created when missing.
#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    Own(Secret<String>),
    OnServer {
        server: Secret<String>,
        database: String,
    },
}

impl DatabaseLocation {
    /// `SOUK_<SERVICE>_DATABASE_URL` when given, otherwise `<shop>_<service>` on the server.
    pub fn resolve(
        own: Option<Secret<String>>,
        server: &Secret<String>,
        shop: &ShopName,
        service: &str,
    ) -> Self {
        match own {
            Some(url) => Self::Own(url),
            None => Self::OnServer {
                server: server.clone(),
                database: shop.database_name(service),
            },
        }
    }
}

/// The longest wait between two attempts to reach the database at start.
const MAX_CONNECT_DELAY: Duration = Duration::from_secs(5);

/// A service's database: a pool that connects lazily, so that the service can answer (health,
/// and `Unavailable` to its calls) before the server is reached, and how to make it ready.
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
    location: DatabaseLocation,
    migrator: &'static Migrator,
}

impl Database {
    /// The pool on `location`, not connected yet: nothing is reached until `prepare` or a query.
    pub fn new(location: &DatabaseLocation, migrator: &'static Migrator) -> anyhow::Result<Self> {
        let options = match location {
            DatabaseLocation::Own(url) => parse(url)?,
            DatabaseLocation::OnServer { server, database } => parse(server)?.database(database),
        };
        let pool = pool_options(16)
            .connect_lazy_with(options.log_statements(tracing::log::LevelFilter::Trace));
        Ok(Self {
            pool,
            location: location.clone(),
            migrator,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the database if asked to and runs the migrations, retrying with backoff for as
    /// long as the server is unreachable or starting up: a database that comes late is waited
    /// for, not a reason to exit. Queries on the pool fail fast (a few seconds) when the server
    /// goes away, and the pool reconnects by itself when it comes back.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        if let DatabaseLocation::OnServer { server, database } = &self.location {
            let server = parse(server)?;
            retry("create database", || ensure_database(&server, database)).await?;
        }
        retry("run migrations", || async {
            self.migrator
                .run(&self.pool)
                .await
                .map_err(anyhow::Error::from)
        })
        .await
    }
}

/// A database made ready (`Database::prepare`), waiting for as long as it takes.
pub async fn connect(
    location: &DatabaseLocation,
    migrator: &'static Migrator,
) -> anyhow::Result<PgPool> {
    let database = Database::new(location, migrator)?;
    database.prepare().await?;
    Ok(database.pool)
}

/// A pool on a database another component migrates (the relayer on its service's outbox):
/// connected lazily, no migrations. Queries fail until the database is there.
pub fn pool_without_migrations(location: &DatabaseLocation) -> anyhow::Result<PgPool> {
    let options = match location {
        DatabaseLocation::Own(url) => parse(url)?,
        DatabaseLocation::OnServer { server, database } => parse(server)?.database(database),
    };
    Ok(pool_options(4).connect_lazy_with(options))
}

/// A pool of at most `max_connections`, none kept open when idle, whose queries fail within
/// seconds when the server is away.
///
/// A connection that sat idle in the pool for `PING_WHEN_IDLE` is pinged before it is handed
/// out: after the server restarts, each pooled connection is dead, and the ping finds it so
/// that a new one is opened in its place; without it each dead connection fails one request
/// after recovery (16 of the next 50, measured by `souk`'s test
/// `after_a_database_restart_no_call_fails_on_a_stale_pooled_connection`). A connection back in
/// use sooner needs none, as no server restarts that fast: under load, pinging every acquire
/// was a round trip more on every transaction.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// How long a pooled connection may sit idle before it is pinged when taken (`pool_options`).
const PING_WHEN_IDLE: Duration = Duration::from_millis(100);

fn parse(url: &Secret<String>) -> anyhow::Result<PgConnectOptions> {
    url.expose()
        .parse::<PgConnectOptions>()
        .map_err(|err| anyhow::anyhow!("invalid database URL: {err}"))
}

/// Creates `database` on the server unless it exists. Two processes racing to create it is
/// fine: the loser sees `duplicate_database` and carries on.
pub async fn ensure_database(server: &PgConnectOptions, database: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(server).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create database {}",
            quote_ident(database)
        )))
        .execute(&mut conn)
        .await;
        match created {
            Ok(_) => tracing::info!(database, "created database"),
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => {}
            Err(err) => return Err(err.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Quotes an SQL identifier (names with `-` need it).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs `attempt` until it succeeds, waiting with backoff while it fails because the database
/// is unreachable or not ready (a connection error, or `Error::Unavailable`); any other error
/// is returned, with `what` as its context.
pub async fn retry<F, Fut, T>(what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if is_transient(&err) => {
                tracing::warn!(error = %err, "{what}: database not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_CONNECT_DELAY);
            }
            Err(err) => return Err(err.context(format!("{what} failed"))),
        }
    }
}

fn is_transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(crate::error::is_connection_error)
            || matches!(
                cause.downcast_ref::<crate::Error>(),
                Some(crate::Error::Unavailable(_))
            )
            || matches!(
                cause.downcast_ref::<sqlx::migrate::MigrateError>(),
                Some(
                    sqlx::migrate::MigrateError::Execute(err)
                        | sqlx::migrate::MigrateError::ExecuteMigration(err, _)
                ) if crate::error::is_connection_error(err)
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("demo-shop_user"), "\"demo-shop_user\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
