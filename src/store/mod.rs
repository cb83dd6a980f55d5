//! Persistence: the only module that speaks SQL.
//!
//! Two dialects, one source of SQL: [`Db`] is an enum of a SQLite pool and a
//! PostgreSQL pool, and the `dispatch!` macro expands one block of sqlx code
//! once per variant. Statements are written once in the subset both engines
//! agree on (`$1` placeholders, `ON CONFLICT`, `RETURNING`, TEXT ids, BIGINT
//! microsecond timestamps, BOOLEAN), so each query string exists once and
//! still runs through its native driver, without the type erasure of
//! `sqlx::Any`. Where the dialects would differ, a module holds both strings
//! side by side.
//!
//! Writes that span statements run in a [`Tx`], begun by [`Db::begin`],
//! the only way to open a transaction: statements and the composite steps
//! built from them (invite these addresses, notify this user) are ordinary
//! `async fn`s over `&mut Tx`, shared by every transaction that needs them.
//!
//! Store functions return [`Error`] (the database's error, whole); outcomes a caller must branch on
//! (an email already taken, a reused refresh token) are enums, not errors.

pub mod accounts;
pub mod calls;
pub mod chat;
pub mod devices;
pub mod files;
pub mod identities;
pub mod invites;
pub mod ledger;
pub mod mail;
pub mod meetings;
pub mod notifications;
pub mod participants;
pub mod reports;
pub mod sessions;
pub mod throttle;
mod tx;

#[cfg(test)]
mod steps_tests;
pub mod users;
pub mod verifications;
pub mod webhooks;

pub use tx::Tx;
pub(crate) use tx::in_tx;

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    migrate::MigrateError,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// A connection pool to whichever database the configuration names.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`.
macro_rules! dispatch {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use dispatch;

impl Db {
    /// Connects to `url` (`sqlite:…` or `postgres://…`). SQLite files are
    /// created when missing and opened in WAL mode with foreign keys on.
    pub async fn connect(url: &str, busy_timeout: Duration) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A statement waiting this long for a lock gives up (55P03), like
            // SQLite's busy timeout: the call answers UNAVAILABLE, not never.
            let options = PgConnectOptions::from_str(url)?
                .options([("lock_timeout", format!("{}ms", busy_timeout.as_millis()))]);
            let pool = PgPoolOptions::new()
                .max_connections(32)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            return Ok(Self::Postgres(pool));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL keeps every committed transaction across a
            // process crash; only an OS crash or power cut can lose the last ones.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self::Sqlite(pool))
    }

    /// Applies the migrations of this dialect that have not run yet.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match self {
            Self::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Self::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        dispatch!(self, pool => pool.close().await)
    }
}

/// A failed statement: the database's own error, kept whole for the log.
/// Its own type so that callers (handlers too) can `?` it into their errors.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] sqlx::Error);

impl Error {
    /// Whether this is an outage rather than a bug (see [`is_transient`]).
    pub fn is_transient(&self) -> bool {
        is_transient(&self.0)
    }
}

/// Whether `err` is an outage rather than a bug: the database is busy,
/// restarting, unreachable or out of resources, or a transaction lost a
/// race (serialization failure, deadlock). A retry may well succeed, and
/// the pool reconnects on its own, so such errors are UNAVAILABLE with a
/// RetryInfo, never INTERNAL.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let postgres = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some();
            db.code()
                .is_some_and(|code| transient_code(&code, postgres))
        }
        _ => false,
    }
}

/// SQLite's (extended) result codes and PostgreSQL's SQLSTATEs that mean
/// "not now".
fn transient_code(code: &str, postgres: bool) -> bool {
    if !postgres {
        // BUSY, LOCKED, IOERR, FULL, CANTOPEN (primary code in the low byte).
        return code
            .parse::<i32>()
            .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14));
    }
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
        || code.starts_with("53")
}

/// Whether `err` is a violation of a UNIQUE constraint or primary key.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::transient_code;

    #[test]
    fn outages_and_lost_races_are_transient() {
        for code in ["5", "517", "6", "262", "10"] {
            assert!(transient_code(code, false), "sqlite {code}");
        }
        for code in ["40001", "40P01", "57P01", "08006", "53300", "55P03"] {
            assert!(transient_code(code, true), "postgres {code}");
        }
        for code in ["19", "2067", "1555"] {
            assert!(!transient_code(code, false), "sqlite {code}");
        }
        for code in ["23505", "42P01", "22001", "22021"] {
            assert!(!transient_code(code, true), "postgres {code}");
        }
    }
}
