//! The `send_ledger` table: counts of mail anyone could make us send, per
//! key (a recipient address, a sender), over a sliding window. Rows outlive
//! the accounts and meetings that caused them, so deleting either resets
//! nothing.

use super::{Db, dispatch_write};
use crate::domain::time::Micros;

pub(crate) const SPENT: &str = "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT), MIN(created_at) \
     FROM send_ledger WHERE ledger_key = $1 AND created_at > $2";
pub(crate) const SPEND: &str =
    "INSERT INTO send_ledger (ledger_key, created_at, amount) VALUES ($1, $2, $3)";

/// Spends `amount` of `key`'s allowance of `limit` per `window`, or says
/// when enough of it frees up (`Err`). `lock_user` is locked first, so
/// that user's concurrent spends count each other on both engines.
pub async fn spend(
    db: &Db,
    key: &str,
    amount: i64,
    limit: i64,
    window: Micros,
    lock_user: &str,
    now: Micros,
) -> Result<Result<(), Micros>, sqlx::Error> {
    dispatch_write!(db, tx => {
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
            .bind(lock_user)
            .execute(&mut *tx)
            .await?;
        let (spent, oldest): (i64, Option<i64>) = sqlx::query_as(SPENT)
            .bind(key)
            .bind(now - window)
            .fetch_one(&mut *tx)
            .await?;
        if spent + amount > limit {
            return Ok(Err(oldest.unwrap_or(now) + window));
        }
        sqlx::query(SPEND)
            .bind(key)
            .bind(now)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    })
}

/// Drops entries older than `window`; returns how many.
pub async fn sweep(db: &Db, now: Micros, window: Micros) -> Result<u64, sqlx::Error> {
    super::dispatch!(db, pool => {
        sqlx::query("DELETE FROM send_ledger WHERE created_at < $1")
            .bind(now - window)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })
}
