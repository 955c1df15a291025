//! Password hashing with argon2id (m=19456 KiB, t=2, p=1), always on a blocking thread: a hash
//! takes tens of milliseconds of CPU, which would stall every task on an async worker.
//!
//! Each hash holds 19 MiB while it runs, so the number running at once is bounded (about the
//! number of cores: more would only queue for the CPU while holding memory), and so is the
//! number waiting for a turn. A request beyond both is refused at once with `Busy` (the API's
//! 503 with `Retry-After`) instead of piling up memory and latency: without the bound, 48
//! concurrent logins took the process from 0.5 to 1.4 GiB.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use souk_shared::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::Password;

/// How many hashes may run at once, and how many more may wait for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    pub concurrent: usize,
    pub queued: usize,
}

impl HashLimits {
    /// One hash per core, and four per core waiting (about a quarter of a second of work).
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            concurrent: cores,
            queued: cores * 4,
        }
    }
}

/// Why a hash was not computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot runs and the queue is full: try again shortly.
    #[error("too many password checks at once, try again shortly")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<HashError> for Error {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Busy => Error::Unavailable(err.to_string()),
            HashError::Failed(err) => Error::Internal(err),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Hasher {
    argon2: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the email is unknown, so that an
    /// unknown email costs the same time as a wrong password.
    decoy: Arc<str>,
    gate: Arc<Gate>,
}

/// The bound: `running` permits, and a count of those waiting for one.
#[derive(Debug)]
struct Gate {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Gate {
    async fn enter(&self) -> Result<OwnedSemaphorePermit, HashError> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Count ourselves in the queue first, so that two callers cannot both take its last place.
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = self.running.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit.map_err(|_| HashError::Failed(anyhow::anyhow!("password hasher closed")))
    }
}

impl Hasher {
    pub async fn new(limits: HashLimits) -> anyhow::Result<Self> {
        let params = Params::new(19_456, 2, 1, None)
            .map_err(|err| anyhow::anyhow!("argon2 params: {err}"))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let gate = Arc::new(Gate {
            running: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.queued,
        });
        let decoy_password = Password::parse(&uuid::Uuid::new_v4().to_string())?;
        let permit = gate.enter().await?;
        let decoy = hash_blocking(argon2.clone(), decoy_password, permit).await?;
        Ok(Self {
            argon2,
            decoy: decoy.into(),
            gate,
        })
    }

    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        let permit = self.gate.enter().await?;
        Ok(hash_blocking(self.argon2.clone(), password, permit).await?)
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it checks the decoy
    /// and answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let permit = self.gate.enter().await?;
        let argon2 = self.argon2.clone();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        // The permit moves into the blocking task: a cancelled request does not stop the hash,
        // so its slot is free only when the hash is done.
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            argon2
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(anyhow::Error::from)?;
        Ok(known && matches)
    }
}

async fn hash_blocking(
    argon2: Arc<Argon2<'static>>,
    password: Password,
    permit: OwnedSemaphorePermit,
) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
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

    fn limits(concurrent: usize, queued: usize) -> HashLimits {
        HashLimits { concurrent, queued }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_required_cost_and_verify() {
        let hasher = Hasher::new(limits(1, 1)).await.expect("hasher");
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

    #[tokio::test]
    async fn checks_beyond_the_running_and_queued_bound_are_refused_at_once() {
        let hasher = Hasher::new(limits(1, 2)).await.expect("hasher");
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify("some password".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        for check in checks {
            match check.await.expect("task") {
                Ok(false) => {}
                Err(HashError::Busy) => busy += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        // One runs, two wait, five are refused (or more refused if some started late).
        assert!(busy >= 5, "{busy} of 8 refused");
        // Once the queue drained, a check runs again.
        assert!(
            !hasher
                .verify("some password".into(), None)
                .await
                .expect("verify")
        );
    }
}
