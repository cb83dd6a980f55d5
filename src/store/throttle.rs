//! The `login_throttle` table: one row per throttled key (see
//! `domain::throttle`).
//!
//! A login claims all its keys in one write transaction before the password
//! is checked: each row is locked by a write first (PostgreSQL row locks,
//! SQLite's write lock), judged, and updated, so parallel guesses count
//! each other and none slips past a delay. Keys are locked in sorted order
//! so two logins never wait on each other in a cycle.

use super::{Db, dispatch, dispatch_write};
use crate::domain::{
    throttle::{KeyState, Policy},
    time::{Micros, micros},
};

/// Claims one attempt for every `(key, policy)`; `Err` with the time the
/// first blocked key may try again, in which case nothing is counted.
pub async fn claim(
    db: &Db,
    keys: &[(String, Policy)],
    now: Micros,
) -> Result<Result<(), Micros>, sqlx::Error> {
    let mut keys: Vec<&(String, Policy)> = keys.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    dispatch_write!(db, tx => {
        let mut claimed = Vec::with_capacity(keys.len());
        let mut blocked_until: Option<Micros> = None;
        for (key, policy) in keys {
            sqlx::query(
                "INSERT INTO login_throttle (throttle_key) VALUES ($1) ON CONFLICT (throttle_key) DO NOTHING",
            )
            .bind(key)
            .execute(&mut *tx)
            .await?;
            let (failures, last_failed_at, until): (i64, i64, i64) = sqlx::query_as(
                "UPDATE login_throttle SET throttle_key = throttle_key WHERE throttle_key = $1 \
                 RETURNING failures, last_failed_at, blocked_until",
            )
            .bind(key)
            .fetch_one(&mut *tx)
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
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    })
}

/// The password was right: the keys in `forget` start over; the keys in
/// `uncount` take back the attempt just claimed (an address that also
/// fails elsewhere keeps those failures).
pub async fn succeeded(
    db: &Db,
    forget: &[String],
    uncount: &[(String, Policy)],
) -> Result<(), sqlx::Error> {
    dispatch!(db, pool => {
        let mut tx = pool.begin().await?;
        for key in forget {
            sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        for (key, policy) in uncount {
            sqlx::query(
                "UPDATE login_throttle SET failures = failures - 1, \
                 blocked_until = CASE WHEN failures - 1 < $2 THEN 0 ELSE blocked_until END \
                 WHERE throttle_key = $1 AND failures > 0",
            )
            .bind(key)
            .bind(policy.free)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    })
}

/// Drops keys whose failures are all older than `window` and that are not
/// blocked any more; returns how many.
pub async fn sweep(db: &Db, now: Micros, window: std::time::Duration) -> Result<u64, sqlx::Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM login_throttle WHERE last_failed_at < $1 AND blocked_until < $2")
            .bind(now - micros(window))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })
}
