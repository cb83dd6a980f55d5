//! The `login_throttle` table: one row per throttled key (see
//! `domain::throttle`).
//!
//! A login claims all its keys in one write transaction before the password
//! is checked: each row is locked by a write first (PostgreSQL row locks,
//! SQLite's write lock), judged, and updated, so parallel guesses count
//! each other and none slips past a delay. Keys are locked in sorted order
//! so two logins never wait on each other in a cycle.

use super::{Db, Error, dispatch, in_tx};
use crate::domain::{
    throttle::{KeyState, Policy},
    time::{Micros, micros},
};

/// Claims one attempt for every `(key, policy)`; `Err` with the time the
/// first blocked key may try again, in which case nothing is counted.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim(
    db: &Db,
    keys: &[(String, Policy)],
    now: Micros,
) -> Result<Result<(), Micros>, Error> {
    let mut keys: Vec<&(String, Policy)> = keys.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tx = db.begin().await?;
    let out = in_tx!(&mut tx, conn => {
        let mut claimed = Vec::with_capacity(keys.len());
        let mut blocked_until: Option<Micros> = None;
        for (key, policy) in keys {
            // One statement creates or locks the row and reads it, so a
            // concurrent delete (a success, the sweep) cannot slip between.
            let (failures, last_failed_at, until): (i64, i64, i64) = sqlx::query_as(
                "INSERT INTO login_throttle (throttle_key) VALUES ($1) \
                 ON CONFLICT (throttle_key) DO UPDATE SET throttle_key = EXCLUDED.throttle_key \
                 RETURNING failures, last_failed_at, blocked_until",
            )
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
            let state = KeyState { failures, last_failed_at, blocked_until: until };
            match policy.claim(state, now) {
                Ok(next) => claimed.push((key, next)),
                Err(at) => blocked_until = Some(blocked_until.map_or(at, |b| b.max(at))),
            }
        }
        if let Some(at) = blocked_until {
            // Dropping the transaction rolls it back: a refused attempt
            // costs nothing and counts nowhere.
            return Ok(Err(at));
        }
        for (key, next) in claimed {
            sqlx::query(
                "UPDATE login_throttle SET failures = $2, last_failed_at = $3, blocked_until = $4 \
                 WHERE throttle_key = $1",
            )
            .bind(key)
            .bind(next.failures)
            .bind(next.last_failed_at)
            .bind(next.blocked_until)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    });
    tx.commit().await?;
    Ok(out)
}

/// The password was right: the keys in `forget` start over; the keys in
/// `uncount` take back the attempt just claimed (an address that also
/// fails elsewhere keeps those failures); the pair (`email_key`,
/// `address`) becomes a known place of the owner. Rows are locked in the
/// same sorted order as [`claim`] locks them, so the two never deadlock.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn succeeded(
    db: &Db,
    forget: &[String],
    uncount: &[(String, Policy)],
    known: Option<(&str, &str)>,
    now: Micros,
) -> Result<(), Error> {
    let mut steps: Vec<(&str, Option<&Policy>)> = forget
        .iter()
        .map(|key| (key.as_str(), None))
        .chain(
            uncount
                .iter()
                .map(|(key, policy)| (key.as_str(), Some(policy))),
        )
        .collect();
    steps.sort_by(|a, b| a.0.cmp(b.0));
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        for (key, policy) in steps {
            match policy {
                None => {
                    sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                }
                Some(policy) => {
                    sqlx::query(
                        "UPDATE login_throttle SET failures = failures - 1, \
                         blocked_until = CASE WHEN failures - 1 < $2 THEN 0 ELSE blocked_until END \
                         WHERE throttle_key = $1 AND failures > 0",
                    )
                    .bind(key)
                    .bind(policy.free)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        if let Some((email_key, address)) = known {
            sqlx::query(
                "INSERT INTO login_known (email_key, client_address, last_success_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (email_key, client_address) DO UPDATE SET last_success_at = EXCLUDED.last_success_at",
            )
            .bind(email_key)
            .bind(address)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    });
    tx.commit().await
}

/// Whether the owner of `email_key` signed in from `address` before.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn is_known(db: &Db, email_key: &str, address: &str) -> Result<bool, Error> {
    dispatch!(db, pool => {
        let found: Option<(i64,)> = sqlx::query_as(
            "SELECT last_success_at FROM login_known WHERE email_key = $1 AND client_address = $2",
        )
        .bind(email_key)
        .bind(address)
        .fetch_optional(pool)
        .await?;
        Ok(found.is_some())
    })
}

/// Forgets places last used before `before`; returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn sweep_known(db: &Db, before: Micros) -> Result<u64, Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM login_known WHERE last_success_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}

/// Drops keys whose failures are all older than `window` and that are not
/// blocked any more; returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn sweep(db: &Db, now: Micros, window: std::time::Duration) -> Result<u64, Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM login_throttle WHERE last_failed_at < $1 AND blocked_until < $2")
            .bind(now - micros(window))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}
