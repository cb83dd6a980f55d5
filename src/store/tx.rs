//! [`Tx`]: a write transaction on either dialect.
//!
//! An enum rather than `sqlx::Transaction<'_, Any>` for the same reason
//! [`Db`] is one: each statement still runs through its native driver.
//! [`in_tx!`] expands one block of sqlx code once per variant, with the
//! transaction's connection bound to a name, as `dispatch!` does for pools.
//! Steps that several transactions share (insert a notification, queue a
//! mail, invite an address) are `async fn`s taking `&mut Tx`, next to the
//! table they write, so composite logic reads as ordinary code.

use sqlx::{Postgres, Sqlite, Transaction};

use super::{Db, Error};

/// An open write transaction. Dropping it without [`Tx::commit`] rolls it
/// back.
#[derive(Debug)]
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the connection of the transaction
/// `$tx` (a `&mut Tx`); `$body` reborrows it as `&mut *$conn`.
macro_rules! in_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match &mut *$tx {
            $crate::store::Tx::Sqlite(tx) => {
                let $conn: &mut sqlx::SqliteConnection = &mut **tx;
                $body
            }
            $crate::store::Tx::Postgres(tx) => {
                let $conn: &mut sqlx::PgConnection = &mut **tx;
                $body
            }
        }
    };
}
pub(crate) use in_tx;

impl Db {
    /// Begins a transaction that may write: the only way to begin one.
    ///
    /// On SQLite it is `BEGIN IMMEDIATE`, holding the write lock from the
    /// first statement: a deferred transaction that reads and then must
    /// upgrade after another connection committed fails with SQLITE_BUSY
    /// instead of waiting its turn. PostgreSQL locks rows as it goes.
    pub async fn begin(&self) -> Result<Tx, Error> {
        Ok(match self {
            Self::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await.map_err(Error::from),
            Self::Postgres(tx) => tx.commit().await.map_err(Error::from),
        }
    }

    /// Rolls back now, rather than when the connection is next used.
    pub async fn rollback(self) -> Result<(), Error> {
        match self {
            Self::Sqlite(tx) => tx.rollback().await.map_err(Error::from),
            Self::Postgres(tx) => tx.rollback().await.map_err(Error::from),
        }
    }
}
