//! argon2id password hashing, run on tokio's blocking pool so a burst of
//! logins cannot stall the async workers.
//!
//! At most two hashes per core run at once, and at most `max_waiting`
//! calls wait for one: beyond that a call is shed at once with
//! RESOURCE_EXHAUSTED (reason SERVER_BUSY) and a RetryInfo, instead of
//! queueing without bound while each waiter holds a connection and memory.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use argon2::{
    Argon2, PasswordHash, PasswordVerifier,
    password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng},
};

use crate::{domain::Password, error::AppError};

#[derive(Clone)]
pub struct PasswordHasher {
    /// A hash of a random password, verified against when the account does
    /// not exist so that unknown emails cost the same time as wrong passwords.
    dummy_hash: Arc<str>,
    /// Each hash takes ~19 MiB and a core for tens of milliseconds: a flood
    /// of logins waits here instead of filling memory with blocking threads.
    permits: Arc<Semaphore>,
    /// Calls waiting for a permit now.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// Takes one waiter off the count when dropped (also when cancelled).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PasswordHasher {
    pub fn new() -> Self {
        Self::with_queue(64)
    }

    /// A hasher that lets at most `max_waiting` calls wait for a permit.
    pub fn with_queue(max_waiting: usize) -> Self {
        let salt = SaltString::generate(&mut OsRng);
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = Argon2::default()
            .hash_password(random.as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            dummy_hash: dummy.into(),
            permits: Arc::new(Semaphore::new(cores * 2)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    /// Calls waiting for a hash to start (for the metrics).
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, AppError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self.waiting.clone());
        if queued >= self.max_waiting {
            return Err(AppError::ResourceExhausted {
                reason: "SERVER_BUSY",
                message: "the server is checking too many passwords right now; retry shortly"
                    .into(),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::internal(e.to_string()))
    }

    /// An argon2id PHC string (`$argon2id$v=19$…`).
    pub async fn hash(&self, password: &Password) -> Result<String, AppError> {
        let password = password.expose().to_owned();
        let permit = self.permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AppError::internal(format!("hashing password: {e}")))
        })
        .await
        .map_err(|e| AppError::internal_from("hashing task", e))?
    }

    /// Whether `candidate` matches `stored`. A missing hash (unknown account,
    /// or one without a password) is checked against a dummy and fails.
    pub async fn verify(&self, stored: Option<&str>, candidate: &str) -> Result<bool, AppError> {
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let candidate = candidate.to_owned();
        let permit = self.permit().await?;
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&stored)
                .map(|hash| {
                    Argon2::default()
                        .verify_password(candidate.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|e| AppError::internal_from("verifying task", e))?;
        Ok(known && matches)
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_sheds_calls_at_once() {
        let hasher = PasswordHasher::with_queue(0);
        // Hold every permit: the next call has nowhere to wait.
        let held: Vec<_> = (0..hasher.permits.available_permits())
            .map(|_| hasher.permits.clone().try_acquire_owned().unwrap())
            .collect();
        let err = hasher.verify(None, "x").await.unwrap_err();
        assert!(matches!(
            err,
            AppError::ResourceExhausted {
                reason: "SERVER_BUSY",
                ..
            }
        ));
        assert_eq!(hasher.queue_depth(), 0, "the shed call left the queue");
        drop(held);
        assert!(!hasher.verify(None, "x").await.unwrap());
    }

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let hasher = PasswordHasher::new();
        let password = Password::parse("correct horse 42", None).unwrap();
        let a = hasher.hash(&password).await.unwrap();
        let b = hasher.hash(&password).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salts must differ");
        assert!(hasher.verify(Some(&a), "correct horse 42").await.unwrap());
        assert!(!hasher.verify(Some(&a), "correct horse 43").await.unwrap());
        assert!(!hasher.verify(None, "correct horse 42").await.unwrap());
    }
}
