//! Refresh tokens: how a short-lived access token is renewed, and how a session ends.
//!
//! A refresh token is 32 random bytes (base64url) handed to the client once; only its SHA-256
//! is stored. A login starts a family. A refresh marks its token rotated and issues the next
//! one in the family, with an access token carrying the account's role as it is now, so a role
//! change or a deleted account takes effect within one access-token lifetime. A rotated token
//! presented again means two parties hold the family (a thief and the owner): the whole family
//! is revoked. Logout revokes the family too.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use souk_shared::{Error, jwt::Role};
use sqlx::PgPool;
use uuid::Uuid;

/// The longest string taken for a refresh token (ours are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// A refresh token as the client gets it.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub expires_in: Duration,
}

/// The account a refresh renewed, with its current role.
#[derive(Debug)]
pub struct Renewed {
    pub user_id: Uuid,
    pub role: Role,
    pub next: Issued,
}

#[derive(Debug, Clone)]
pub struct Sessions {
    pool: PgPool,
    ttl: Duration,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn refused() -> Error {
    Error::Unauthenticated("invalid refresh token".into())
}

impl Sessions {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl }
    }

    fn expires_at(&self) -> Result<DateTime<Utc>, Error> {
        let ttl = chrono::Duration::from_std(self.ttl)
            .map_err(|err| Error::Internal(anyhow::anyhow!("refresh token lifetime: {err}")))?;
        Ok(Utc::now() + ttl)
    }

    /// Starts a family for `user` (at login), and forgets the user's long-expired tokens.
    pub async fn start(&self, user: Uuid) -> Result<Issued, Error> {
        sqlx::query!(
            "delete from refresh_tokens where user_id = $1 and expires_at < now()",
            user
        )
        .execute(&self.pool)
        .await?;
        let token = new_token();
        sqlx::query!(
            r#"insert into refresh_tokens (id, family_id, user_id, token_hash, expires_at)
               values ($1, $2, $3, $4, $5)"#,
            Uuid::now_v7(),
            Uuid::now_v7(),
            user,
            hash(&token),
            self.expires_at()?,
        )
        .execute(&self.pool)
        .await?;
        Ok(Issued {
            token,
            expires_in: self.ttl,
        })
    }

    /// Exchanges `token` for the next one in its family, or refuses it (revoking the family
    /// when it had been rotated already).
    pub async fn renew(&self, token: &str) -> Result<Renewed, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(refused());
        }
        let token_hash = hash(token);
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query!(
            r#"update refresh_tokens set rotated_at = now()
               where token_hash = $1 and rotated_at is null and revoked_at is null
                 and expires_at > now()
               returning family_id, user_id"#,
            token_hash
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            drop(tx);
            let reused = sqlx::query_scalar!(
                r#"update refresh_tokens set revoked_at = now()
                   where family_id = (select family_id from refresh_tokens
                                      where token_hash = $1 and rotated_at is not null)
                     and revoked_at is null
                   returning id"#,
                token_hash
            )
            .fetch_all(&self.pool)
            .await?;
            if !reused.is_empty() {
                tracing::warn!("a rotated refresh token was reused: its family is revoked");
            }
            return Err(refused());
        };
        let role = sqlx::query_scalar!("select role from users where id = $1", current.user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(refused)?;
        let role: Role = role
            .parse()
            .map_err(|err: String| Error::Internal(anyhow::anyhow!("users.role: {err}")))?;
        let next = new_token();
        sqlx::query!(
            r#"insert into refresh_tokens (id, family_id, user_id, token_hash, expires_at)
               values ($1, $2, $3, $4, $5)"#,
            Uuid::now_v7(),
            current.family_id,
            current.user_id,
            hash(&next),
            self.expires_at()?,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Renewed {
            user_id: current.user_id,
            role,
            next: Issued {
                token: next,
                expires_in: self.ttl,
            },
        })
    }

    /// Revokes the family of `token`; an unknown token is no error.
    pub async fn end(&self, token: &str) -> Result<(), Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(());
        }
        sqlx::query!(
            r#"update refresh_tokens set revoked_at = now()
               where family_id = (select family_id from refresh_tokens where token_hash = $1)
                 and revoked_at is null"#,
            hash(token)
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_only_as_hashes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash(&a).len(), 32);
        assert_ne!(hash(&a), a.as_bytes());
    }
}
