//! Password hashing with argon2id (m=19456 KiB, t=2, p=1), always on a blocking thread: a hash
//! takes tens of milliseconds of CPU, which would stall every task on an async worker.
//!
//! Each hash holds 19 MiB while it runs, so the number running at once is bounded (about the
//! number of cores: more would only queue for the CPU while holding memory), and so is the
//! number waiting for a turn. A request beyond both is refused at once with `Busy` (the API's
//! 503 with `Retry-After`) instead of piling up memory and latency: without the bound, 48
//! concurrent logins took the process from 0.5 to 1.4 GiB.
//!
//! The 19 MiB themselves are allocated once per slot and reused ([`Memory`]): allocated afresh
//! for every hash, freed blocks stayed in the allocator's per-thread arenas of the blocking
//! threads, and resident memory grew with every hash, not with the hashes running (the logins
//! bench: 226 MiB for 200 logins with 2 running, against 150 MiB allowed).

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordVerifier as _, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
use rand_core::RngCore as _;
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

/// argon2id with m=19456 KiB, t=2, p=1 (OWASP's first recommendation).
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
/// Bytes of a hash's output.
const OUTPUT_LEN: usize = 32;
/// Bytes of a fresh salt.
const SALT_LEN: usize = 16;

#[derive(Debug, Clone)]
pub struct Hasher {
    argon2: Arc<Argon2<'static>>,
    params: Params,
    /// A hash of a random password, verified against when the email is unknown, so that an
    /// unknown email costs the same time as a wrong password.
    decoy: Arc<str>,
    gate: Arc<Gate>,
    memory: Arc<Memory>,
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

/// argon2's working memory, kept for reuse: a hash takes a buffer while it holds a permit and
/// gives it back before the permit goes, so there are never more buffers than permits. A std
/// mutex: held only to push or pop, never across an await.
#[derive(Debug)]
struct Memory {
    blocks: usize,
    free: Mutex<Vec<Box<[Block]>>>,
}

impl Memory {
    fn take(&self) -> Box<[Block]> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        reused.unwrap_or_else(|| vec![Block::default(); self.blocks].into_boxed_slice())
    }

    fn give_back(&self, blocks: Box<[Block]>) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(blocks);
    }

    /// Buffers allocated so far (all of them free when no hash runs).
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Hasher {
    pub async fn new(limits: HashLimits) -> anyhow::Result<Self> {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
            .map_err(|err| anyhow::anyhow!("argon2 params: {err}"))?;
        let argon2 = Arc::new(Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            params.clone(),
        ));
        let gate = Arc::new(Gate {
            running: Arc::new(Semaphore::new(limits.concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.queued,
        });
        let memory = Arc::new(Memory {
            blocks: params.block_count(),
            free: Mutex::new(Vec::new()),
        });
        let mut hasher = Self {
            argon2,
            params,
            decoy: Arc::from(""),
            gate,
            memory,
        };
        let decoy_password = Password::parse(&uuid::Uuid::new_v4().to_string())?;
        hasher.decoy = hasher.hash(decoy_password).await?.into();
        Ok(hasher)
    }

    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        let permit = self.gate.enter().await?;
        let this = self.clone();
        Ok(blocking(permit, move || this.hash_now(password.expose().as_bytes())).await??)
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it checks the decoy
    /// and answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let permit = self.gate.enter().await?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        let this = self.clone();
        let matches = blocking(permit, move || this.verify_now(password.as_bytes(), &hash)).await?;
        Ok(known && matches)
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of `password` with a
    /// fresh salt, computed in a reused buffer.
    fn hash_now(&self, password: &[u8]) -> anyhow::Result<String> {
        let mut salt = [0u8; SALT_LEN];
        rand_core::OsRng.fill_bytes(&mut salt);
        let salt = Salt::new(&salt).map_err(|err| anyhow::anyhow!("salt: {err}"))?;
        let mut out = [0u8; OUTPUT_LEN];
        self.compute(password, &salt, &mut out)
            .map_err(|err| anyhow::anyhow!("argon2: {err}"))?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)
                .map_err(|err| anyhow::anyhow!("argon2 params: {err}"))?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(|err| anyhow::anyhow!("argon2: {err}"))?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` gives `hash`. A hash of this hasher's cost is computed in a reused
    /// buffer; one of another cost (made before a change of parameters) the library's own way.
    fn verify_now(&self, password: &[u8], hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let same_cost = parsed.algorithm == Algorithm::Argon2id.ident()
            && parsed.version == Some(Version::V0x13.into())
            && Params::try_from(&parsed).is_ok_and(|p| {
                (p.m_cost(), p.t_cost(), p.p_cost()) == (M_COST_KIB, T_COST, P_COST)
            });
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        if !same_cost || expected.len() != OUTPUT_LEN {
            return self.argon2.verify_password(password, &parsed).is_ok();
        }
        let mut out = [0u8; OUTPUT_LEN];
        if self.compute(password, salt, &mut out).is_err() {
            return false;
        }
        // `Output`'s equality is constant-time.
        Output::new(&out).is_ok_and(|computed| &computed == expected)
    }

    fn compute(&self, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
        let mut blocks = self.memory.take();
        let result = self
            .argon2
            .hash_password_into_with_memory(password, salt, out, &mut *blocks);
        self.memory.give_back(blocks);
        result
    }
}

/// Runs `work` on a blocking thread. The permit moves in with it: a cancelled request does not
/// stop the hash, so its slot (and its buffer) is free only when the hash is done.
async fn blocking<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await?)
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

    #[tokio::test]
    async fn hashes_made_by_the_library_and_of_another_cost_still_verify() {
        use argon2::PasswordHasher as _;
        let hasher = Hasher::new(limits(1, 1)).await.expect("hasher");
        // As the code before the reused buffers stored them.
        let library = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(M_COST_KIB, T_COST, P_COST, None).expect("params"),
        )
        .hash_password(b"correct horse")
        .expect("hash")
        .to_string();
        assert!(
            hasher
                .verify("correct horse".into(), Some(library.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse!".into(), Some(library))
                .await
                .expect("verify")
        );
        let cheaper = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"correct horse")
        .expect("hash")
        .to_string();
        assert!(
            hasher
                .verify("correct horse".into(), Some(cheaper))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("correct horse".into(), Some("not a hash".into()))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn the_working_memory_is_one_buffer_per_running_hash_reused() {
        let hasher = Hasher::new(limits(2, 16)).await.expect("hasher");
        let checks: Vec<_> = (0..12)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify("some password".into(), None).await })
            })
            .collect();
        for check in checks {
            assert!(!check.await.expect("task").expect("verify"));
        }
        let allocated = hasher.memory.allocated();
        assert!(
            (1..=2).contains(&allocated),
            "{allocated} buffers for 2 running"
        );
    }
}
