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
//! Store functions return `sqlx::Error`; outcomes a caller must branch on
//! (an email already taken, a reused refresh token) are enums, not errors.

pub mod calls;
pub mod chat;
pub mod files;
pub mod identities;
pub mod invites;
pub mod mail;
pub mod meetings;
pub mod notifications;
pub mod participants;
pub mod sessions;
pub mod users;
pub mod verifications;

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    migrate::MigrateError,
    postgres::PgPoolOptions,
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

/// Like `dispatch!`, with `$tx` a transaction that holds the write lock
/// from its first statement. SQLite needs `BEGIN IMMEDIATE` for a
/// transaction that reads before it writes: a deferred one that must
/// upgrade after another connection committed fails with SQLITE_BUSY
/// instead of waiting. PostgreSQL locks rows as it goes.
macro_rules! dispatch_write {
    ($db:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                $body
            }
        }
    };
}
pub(crate) use dispatch_write;

impl Db {
    /// Connects to `url` (`sqlite:…` or `postgres://…`). SQLite files are
    /// created when missing and opened in WAL mode with foreign keys on.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(32)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
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
            .busy_timeout(Duration::from_secs(10));
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

/// Whether `err` is a violation of a UNIQUE constraint or primary key.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
