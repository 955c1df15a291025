//! Password hashing with argon2id (m=19456 KiB, t=2, p=1), always on a blocking thread: a hash
//! takes tens of milliseconds of CPU, which would stall every task on an async worker.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use crate::domain::Password;

#[derive(Debug, Clone)]
pub struct Hasher {
    argon2: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the email is unknown, so that an
    /// unknown email costs the same time as a wrong password.
    decoy: Arc<str>,
}

impl Hasher {
    pub async fn new() -> anyhow::Result<Self> {
        let params = Params::new(19_456, 2, 1, None)
            .map_err(|err| anyhow::anyhow!("argon2 params: {err}"))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let decoy_password = Password::parse(&uuid::Uuid::new_v4().to_string())?;
        let decoy = hash_blocking(argon2.clone(), decoy_password).await?;
        Ok(Self {
            argon2,
            decoy: decoy.into(),
        })
    }

    pub async fn hash(&self, password: Password) -> anyhow::Result<String> {
        hash_blocking(self.argon2.clone(), password).await
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it checks the decoy
    /// and answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let argon2 = self.argon2.clone();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        let matches = tokio::task::spawn_blocking(move || {
            argon2
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await?;
        Ok(known && matches)
    }
}

async fn hash_blocking(argon2: Arc<Argon2<'static>>, password: Password) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        argon2
            .hash_password(password.expose().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|err| anyhow::anyhow!("argon2: {err}"))
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_required_cost_and_verify() {
        let hasher = Hasher::new().await.expect("hasher");
        let hash = hasher
            .hash(Password::parse("correct horse").expect("valid"))
            .await
            .expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse!".into(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("correct horse".into(), None)
                .await
                .expect("verify")
        );
    }
}
