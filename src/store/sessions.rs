//! Sessions (refresh-token families), refresh tokens and revoked access
//! tokens.

use super::{Db, Error, Tx, dispatch, in_tx};
use crate::domain::{Role, time::Micros};

const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens \
     (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
pub(super) const REVOKE_OTHER_SESSIONS: &str = "UPDATE sessions SET revoked_at = $3, revoked_reason = $4 \
     WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL";
const REVOKE_SESSION: &str = "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 \
     WHERE id = $1 AND revoked_at IS NULL";

/// A session to open with its first refresh token.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub refresh_hash: &'a str,
    pub refresh_expires_at: Micros,
    pub now: Micros,
}

/// Inside `tx`: opens `session` for `user_id` (a new account, created in
/// the same transaction) with its first refresh token.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub(super) async fn open(
    tx: &mut Tx,
    user_id: &str,
    session: &NewSession<'_>,
) -> Result<(), Error> {
    in_tx!(tx, conn => {
        sqlx::query("INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(session.id)
            .bind(user_id)
            .bind(session.now)
            .execute(conn)
            .await?;
    });
    add_refresh_token(
        tx,
        session.id,
        session.refresh_hash,
        session.refresh_expires_at,
        session.now,
    )
    .await
}

/// Inside `tx`: a refresh token (by its hash) for `session_id`.
async fn add_refresh_token(
    tx: &mut Tx,
    session_id: &str,
    hash: &str,
    expires_at: Micros,
    now: Micros,
) -> Result<(), Error> {
    in_tx!(tx, conn => {
        sqlx::query(INSERT_REFRESH_TOKEN)
            .bind(hash)
            .bind(session_id)
            .bind(now)
            .bind(expires_at)
            .execute(conn)
            .await?;
    });
    Ok(())
}

/// Opens a session for `user_id` if the account is active and its ways in
/// are as they were when the caller checked the credentials
/// (`seen_epoch`); false otherwise, with nothing stored. A password
/// checked just before a verified identity claimed the account opens
/// nothing.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn create(
    db: &Db,
    user_id: &str,
    seen_epoch: i64,
    session: &NewSession<'_>,
) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        let opened = sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at) SELECT $1, $2, $3 \
             WHERE EXISTS (SELECT 1 FROM users WHERE id = $2 AND is_active AND credential_epoch = $4)",
        )
        .bind(session.id)
        .bind(user_id)
        .bind(session.now)
        .bind(seen_epoch)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if opened == 0 {
            return Ok(false);
        }
    });
    add_refresh_token(
        &mut tx,
        session.id,
        session.refresh_hash,
        session.refresh_expires_at,
        session.now,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// What presenting a refresh token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now used and `new_hash` replaces it.
    Rotated {
        user_id: String,
        session_id: String,
        role: Role,
    },
    /// No such token.
    Unknown,
    /// The token was already rotated: the session (this one) is now
    /// revoked.
    Reused(String),
    /// The session was revoked earlier (logout, reuse, password change).
    Revoked,
    Expired,
    /// The account is deactivated.
    UserInactive,
}

/// Consumes the refresh token `old_hash` and stores `new_hash` in its place.
///
/// The first statement is the write that marks the token used, so two
/// concurrent refreshes with one token cannot both succeed, and SQLite takes
/// its write lock up front instead of upgrading a read lock.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn rotate_refresh_token(
    db: &Db,
    old_hash: &str,
    new_hash: &str,
    new_expires_at: Micros,
    now: Micros,
) -> Result<Rotation, Error> {
    let mut tx = db.begin().await?;
    let claimed: Option<(String,)> = in_tx!(&mut tx, conn => {
        sqlx::query_as(
            "UPDATE refresh_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING session_id",
        )
        .bind(old_hash)
        .bind(now)
        .fetch_optional(conn)
        .await?
    });
    let Some((session_id,)) = claimed else {
        // Not claimable: find out why, outside the failed attempt.
        tx.rollback().await?;
        return refused_rotation(db, old_hash, now).await;
    };
    let owner: (String, String, bool, Option<i64>) = in_tx!(&mut tx, conn => {
        sqlx::query_as(
            "SELECT u.id, u.role, u.is_active, s.revoked_at FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.id = $1",
        )
        .bind(&session_id)
        .fetch_one(conn)
        .await?
    });
    let (user_id, role, is_active, revoked_at) = owner;
    if revoked_at.is_some() {
        tx.rollback().await?;
        return Ok(Rotation::Revoked);
    }
    if !is_active {
        tx.rollback().await?;
        return Ok(Rotation::UserInactive);
    }
    add_refresh_token(&mut tx, &session_id, new_hash, new_expires_at, now).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated {
        user_id,
        session_id,
        role: Role::from_db(&role).unwrap_or(Role::User),
    })
}

/// Why the refresh token `old_hash` could not be claimed; a reused token
/// revokes its session.
async fn refused_rotation(db: &Db, old_hash: &str, now: Micros) -> Result<Rotation, Error> {
    let state: Option<(Option<i64>, i64, String)> = dispatch!(db, pool => {
        sqlx::query_as(
            "SELECT used_at, expires_at, session_id FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(pool)
        .await?
    });
    match state {
        None => Ok(Rotation::Unknown),
        Some((Some(_), _, session_id)) => {
            dispatch!(db, pool => {
                sqlx::query(REVOKE_SESSION)
                    .bind(&session_id)
                    .bind(now)
                    .bind("refresh_token_reused")
                    .execute(pool)
                    .await?;
            });
            Ok(Rotation::Reused(session_id))
        }
        Some((None, _, _)) => Ok(Rotation::Expired),
    }
}

/// What the auth layer needs to accept a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessState {
    pub role: Role,
    pub is_active: bool,
    pub session_revoked: bool,
    pub token_revoked: bool,
}

/// The current state behind an access token; `None` when the user or the
/// session no longer exists.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id, session_id = %session_id))]
pub async fn access_state(
    db: &Db,
    user_id: &str,
    session_id: &str,
    jti: &str,
) -> Result<Option<AccessState>, Error> {
    const SQL: &str = "SELECT u.role, u.is_active, s.revoked_at IS NOT NULL, \
         EXISTS (SELECT 1 FROM revoked_access_tokens r WHERE r.jti = $3) \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $2 AND u.id = $1";
    let row: Option<(String, bool, bool, bool)> = dispatch!(db, pool => {
        sqlx::query_as(SQL)
            .bind(user_id)
            .bind(session_id)
            .bind(jti)
            .fetch_optional(pool)
            .await?
    });
    Ok(row.map(
        |(role, is_active, session_revoked, token_revoked)| AccessState {
            role: Role::from_db(&role).unwrap_or(Role::User),
            is_active,
            session_revoked,
            token_revoked,
        },
    ))
}

/// The session a refresh token belongs to, if it belongs to `user_id`.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn session_of_refresh_token(
    db: &Db,
    user_id: &str,
    token_hash: &str,
) -> Result<Option<String>, Error> {
    let row: Option<(String,)> = dispatch!(db, pool => {
        sqlx::query_as(
            "SELECT s.id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1 AND s.user_id = $2",
        )
        .bind(token_hash)
        .bind(user_id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|(id,)| id))
}

/// Revokes `session_id` and records `jti` (valid until `jti_expires_at`) as
/// revoked, in one transaction. Expired revocation records are swept.
#[tracing::instrument(level = "debug", skip_all, fields(session_id = %session_id))]
pub async fn revoke(
    db: &Db,
    session_id: &str,
    jti: &str,
    jti_expires_at: Micros,
    reason: &str,
    now: Micros,
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        sqlx::query(REVOKE_SESSION)
            .bind(session_id)
            .bind(now)
            .bind(reason)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(jti_expires_at)
        .execute(&mut *conn)
        .await?;
        // Kept a minute past expiry: verification tolerates a little clock skew.
        sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at < $1")
            .bind(now - 60_000_000)
            .execute(conn)
            .await?;
    });
    tx.commit().await
}
