//! The `send_ledger` table: counts of mail anyone could make us send, per
//! key (a recipient address, a sender), over a sliding window. Rows outlive
//! the accounts and meetings that caused them, so deleting either resets
//! nothing.

use super::{Db, Error, Tx, in_tx};
use crate::domain::time::Micros;

/// Inside `tx`: how much of `key` was spent after `since`, and when the
/// oldest of it was.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn spent(
    tx: &mut Tx,
    key: &str,
    since: Micros,
) -> Result<(i64, Option<Micros>), Error> {
    in_tx!(tx, conn => {
        sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT), MIN(created_at) \
             FROM send_ledger WHERE ledger_key = $1 AND created_at > $2",
        )
        .bind(key)
        .bind(since)
        .fetch_one(conn)
        .await.map_err(Error::from)
    })
}

/// Inside `tx`: records spending `amount` of `key`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn record(tx: &mut Tx, key: &str, amount: i64, now: Micros) -> Result<(), Error> {
    in_tx!(tx, conn => {
        sqlx::query("INSERT INTO send_ledger (ledger_key, created_at, amount) VALUES ($1, $2, $3)")
            .bind(key)
            .bind(now)
            .bind(amount)
            .execute(conn)
            .await
            .map(|_| ()).map_err(Error::from)
    })
}

/// Spends `amount` of `key`'s allowance of `limit` per `window`, or says
/// when enough of it frees up (`Err`). `lock_user` is locked first, so
/// that user's concurrent spends count each other on both engines.
#[tracing::instrument(level = "debug", skip_all, fields(lock_user = %lock_user))]
pub async fn spend(
    db: &Db,
    key: &str,
    amount: i64,
    limit: i64,
    window: Micros,
    lock_user: &str,
    now: Micros,
) -> Result<Result<(), Micros>, Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
            .bind(lock_user)
            .execute(conn)
            .await?;
    });
    let (spent, oldest) = spent(&mut tx, key, now - window).await?;
    if spent + amount > limit {
        return Ok(Err(oldest.unwrap_or(now) + window));
    }
    record(&mut tx, key, amount, now).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Drops entries older than `window`; returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn sweep(db: &Db, now: Micros, window: Micros) -> Result<u64, Error> {
    super::dispatch!(db, pool => {
        sqlx::query("DELETE FROM send_ledger WHERE created_at < $1")
            .bind(now - window)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}
