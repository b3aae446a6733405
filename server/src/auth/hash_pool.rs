//! Password and token-secret verification with a bounded cost. Argon2 is slow and memory-hard on
//! purpose, so every check runs on one of a fixed number of worker threads (never on the async
//! workers), waits in a queue of fixed length (a full queue is refused at once), and hashes in a
//! memory area each worker allocates once and reuses. The memory the checks can ever hold is
//! therefore `workers × largest accepted m_cost`, whatever the number of attempts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::password::constant_time_eq;

/// Largest argon2 memory cost (KiB) a stored hash may ask for: 64 MiB. Our own hashes use the
/// argon2 default (19 MiB); a hash demanding more never verifies (it is logged).
pub const MAX_M_COST_KIB: u32 = 64 * 1024;
/// Largest salt accepted in a PHC string (argon2 allows up to 64 bytes).
const MAX_SALT: usize = 64;

/// Sizes of the pool (from the config file, or derived from the CPU count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashPoolSize {
    /// Hashes computed at the same time (one thread each).
    pub workers: usize,
    /// Checks waiting for a worker; one more is refused.
    pub queue: usize,
}

impl Default for HashPoolSize {
    /// One worker per CPU, at most 4 (a login needs one hash; more workers only add memory),
    /// and 32 waiting checks per worker.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let workers = cpus.clamp(1, 4);
        Self {
            workers,
            queue: workers * 32,
        }
    }
}

impl HashPoolSize {
    /// The most memory the workers' argon2 areas can hold, in bytes.
    pub fn memory_bound(&self) -> u64 {
        self.workers as u64 * u64::from(MAX_M_COST_KIB) * 1024
    }
}

/// Why a check could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashPoolError {
    #[error("too many authentication attempts in progress, try again later")]
    Busy,
    #[error("authentication worker stopped")]
    Stopped,
}

struct Job {
    secret: String,
    /// The stored hash, or `None` for an unknown user or token: then the secret is checked
    /// against a dummy hash of the same cost, so that both answers take the same time.
    phc: Option<Arc<str>>,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// The bounded verification pool. Threads start on the first check, so command-line tools
/// that open the auth store never start them.
pub struct HashPool {
    size: HashPoolSize,
    sender: OnceLock<SyncSender<Job>>,
    /// Hash of a random secret nobody knows, made with the default parameters.
    dummy: Arc<OnceLock<Arc<str>>>,
    /// Hashes computed so far (real and dummy).
    done: Arc<AtomicU64>,
}

impl HashPool {
    pub fn new(size: HashPoolSize) -> Self {
        Self {
            size: HashPoolSize {
                workers: size.workers.max(1),
                queue: size.queue,
            },
            sender: OnceLock::new(),
            dummy: Arc::new(OnceLock::new()),
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hashes computed so far, real and dummy (what a credential check cost).
    pub fn hashes_done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }

    pub fn size(&self) -> HashPoolSize {
        self.size
    }

    fn sender(&self) -> &SyncSender<Job> {
        self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel::<Job>(self.size.queue);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..self.size.workers {
                let rx = rx.clone();
                let dummy = self.dummy.clone();
                let done = self.done.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("auth-hash-{i}"))
                    .spawn(move || worker(rx, dummy, done));
                if let Err(err) = spawned {
                    tracing::error!("unable to start authentication worker {i}: {err}");
                }
            }
            tx
        })
    }

    /// True when `secret` matches the PHC string `phc`; always false, after the same work,
    /// when `phc` is `None`. Waits for a worker; refuses with [`HashPoolError::Busy`] when the
    /// queue is full.
    pub async fn verify(&self, secret: &str, phc: Option<Arc<str>>) -> Result<bool, HashPoolError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            secret: secret.to_string(),
            phc,
            reply,
        };
        match self.sender().try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashPoolError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HashPoolError::Stopped),
        }
        answer.await.map_err(|_| HashPoolError::Stopped)
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, dummy: Arc<OnceLock<Arc<str>>>, done: Arc<AtomicU64>) {
    // Made before the first check, so that no unknown-user answer pays for making it.
    let dummy = dummy.get_or_init(make_dummy).clone();
    // Grown once to the largest cost seen (at most MAX_M_COST_KIB) and reused for every check.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // The caller went away (connection closed) while the check waited: skip the work.
        if job.reply.is_closed() {
            continue;
        }
        let ok = match &job.phc {
            Some(phc) => verify_with_memory(&job.secret, phc, &mut memory),
            None => {
                verify_with_memory(&job.secret, &dummy, &mut memory);
                false
            }
        };
        done.fetch_add(1, Ordering::Release);
        let _ = job.reply.send(ok);
    }
}

fn make_dummy() -> Arc<str> {
    let mut secret = [0u8; 32];
    let _ = super::password::random_bytes(&mut secret);
    let secret = hex::encode(secret);
    super::password::hash_password(&secret)
        .unwrap_or_else(|_| {
            // Hashing only fails when the random source does; a fixed salt still costs the same.
            let salt = argon2::password_hash::SaltString::encode_b64(b"pbs-cloud-dummy!")
                .expect("16 bytes encode as a salt");
            argon2::PasswordHasher::hash_password(&Argon2::default(), secret.as_bytes(), &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .into()
}

/// Checks `secret` against an argon2 PHC string, hashing in `memory` (grown as needed up to
/// [`MAX_M_COST_KIB`]). Malformed strings and unsupported parameters never verify.
pub fn verify_with_memory(secret: &str, phc: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST_KIB {
        tracing::warn!(
            "a stored password hash asks for {} KiB of argon2 memory, more than the {} KiB \
             allowed; it never verifies",
            params.m_cost(),
            MAX_M_COST_KIB
        );
        return false;
    }
    let mut salt_buf = [0u8; MAX_SALT];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    match argon.hash_password_into_with_memory(
        secret.as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    ) {
        Ok(()) => constant_time_eq(&out, expected.as_bytes()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::hash_password;

    #[test]
    fn verifies_like_the_argon2_crate() {
        let phc = hash_password("s3cret").unwrap();
        let mut memory = Vec::new();
        assert!(verify_with_memory("s3cret", &phc, &mut memory));
        assert!(!verify_with_memory("s3cret!", &phc, &mut memory));
        assert!(!verify_with_memory("s3cret", "not a hash", &mut memory));
        // the memory area is the default cost (19 MiB = 19456 blocks of 1 KiB) and is reused
        assert_eq!(memory.len(), 19456);
        assert!(verify_with_memory("s3cret", &phc, &mut memory));
        assert_eq!(memory.len(), 19456);
    }

    #[test]
    fn hashes_asking_for_too_much_memory_never_verify() {
        let params = Params::new(MAX_M_COST_KIB + 8, 1, 1, None).unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = argon2::password_hash::SaltString::encode_b64(&[7u8; 16]).unwrap();
        let phc = argon2::PasswordHasher::hash_password(&argon, b"pw", &salt)
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(!verify_with_memory("pw", &phc, &mut memory));
        assert!(memory.is_empty(), "nothing was allocated for it");
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_and_the_pool_recovers() {
        let pool = Arc::new(HashPool::new(HashPoolSize {
            workers: 1,
            queue: 2,
        }));
        let phc: Option<Arc<str>> = Some(hash_password("pw").unwrap().into());
        // 1 running + 2 queued fit; more are refused at once
        let mut running = Vec::new();
        let mut busy = 0;
        for _ in 0..12 {
            let pool = pool.clone();
            let phc = phc.clone();
            running.push(tokio::spawn(async move { pool.verify("pw", phc).await }));
        }
        for task in running {
            match task.await.unwrap() {
                Ok(ok) => assert!(ok),
                Err(HashPoolError::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(busy >= 12 - 3, "only {busy} of 12 refused");
        assert!(pool.verify("pw", phc.clone()).await.unwrap());
        assert!(!pool.verify("wrong", phc).await.unwrap());
        // an unknown user never verifies, whatever the secret
        assert!(!pool.verify("pw", None).await.unwrap());
    }
}
