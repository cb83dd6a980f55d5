//! argon2id password hashing, run on tokio's blocking pool so a burst of
//! logins cannot stall the async workers.

use std::sync::Arc;

use tokio::sync::Semaphore;

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
}

impl PasswordHasher {
    pub fn new() -> Self {
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
        }
    }

    /// An argon2id PHC string (`$argon2id$v=19$…`).
    pub async fn hash(&self, password: &Password) -> Result<String, AppError> {
        let password = password.expose().to_owned();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AppError::internal(format!("hashing password: {e}")))
        })
        .await
        .map_err(|e| AppError::internal(format!("hashing task: {e}")))?
    }

    /// Whether `candidate` matches `stored`. A missing hash (unknown account,
    /// or one without a password) is checked against a dummy and fails.
    pub async fn verify(&self, stored: Option<&str>, candidate: &str) -> Result<bool, AppError> {
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let candidate = candidate.to_owned();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::internal(e.to_string()))?;
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
        .map_err(|e| AppError::internal(format!("verifying task: {e}")))?;
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
