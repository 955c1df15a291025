//! The user service's tables, through compile-time checked queries.

use chrono::{DateTime, Utc};
use souk_shared::{Error, error::unique_violation, jwt::Role};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Email, Name};

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Credentials {
    pub id: Uuid,
    pub role: Role,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

fn role(stored: &str) -> Result<Role, Error> {
    stored
        .parse()
        .map_err(|err: String| Error::Internal(anyhow::anyhow!("users.role: {err}")))
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn insert(
        &self,
        email: &Email,
        name: &Name,
        password_hash: &str,
    ) -> Result<User, Error> {
        let row = sqlx::query!(
            r#"insert into users (id, email, password_hash, name, role)
               values ($1, $2, $3, $4, 'customer')
               returning id, email, name, role, created_at"#,
            Uuid::now_v7(),
            email.as_str(),
            password_hash,
            name.as_str(),
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|err| match unique_violation(&err) {
            Some("users_email_key") => {
                Error::AlreadyExists("an account with this email already exists".into())
            }
            _ => err.into(),
        })?;
        Ok(User {
            id: row.id,
            email: row.email,
            name: row.name,
            role: role(&row.role)?,
            created_at: row.created_at,
        })
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<User>, Error> {
        let row = sqlx::query!(
            "select id, email, name, role, created_at from users where id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(User {
                id: row.id,
                email: row.email,
                name: row.name,
                role: role(&row.role)?,
                created_at: row.created_at,
            })
        })
        .transpose()
    }

    pub async fn credentials(&self, email: &Email) -> Result<Option<Credentials>, Error> {
        let row = sqlx::query!(
            "select id, role, password_hash from users where lower(email) = lower($1)",
            email.as_str()
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Credentials {
                id: row.id,
                role: role(&row.role)?,
                password_hash: row.password_hash,
            })
        })
        .transpose()
    }

    /// Makes the account exist with role admin and this password, whatever it was before.
    pub async fn ensure_admin(&self, email: &Email, password_hash: &str) -> Result<(), Error> {
        sqlx::query!(
            r#"insert into users (id, email, password_hash, name, role)
               values ($1, $2, $3, 'Administrator', 'admin')
               on conflict ((lower(email))) do update
               set role = 'admin', password_hash = excluded.password_hash, updated_at = now()"#,
            Uuid::now_v7(),
            email.as_str(),
            password_hash,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
