//! The `email_verifications` table: outstanding verification links, stored
//! as SHA-256 hashes of their tokens, and what proving an address does.

use super::{
    Db, Error, Tx, in_tx, invites, ledger, mail,
    notifications::NotificationRecord,
    users::{self, UserRecord},
};
use crate::domain::{
    time::{Micros, micros},
    verification::{self, RecentLinks},
};

/// A link to record and the mail that carries it.
#[derive(Debug)]
pub struct NewLink<'a> {
    pub token_hash: &'a str,
    pub expires_at: Micros,
    pub to: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

/// Verification mails one address may receive a day, whichever accounts
/// ask: sign-up must not be a way to mail strangers.
pub const MAX_PER_ADDRESS_PER_DAY: i64 = 5;

/// Inside `tx`: records `link` for `user_id` at `email_key` and queues its
/// mail, so the mail goes out if and only if the link exists, unless the
/// address had its day's share of verification mail. Returns whether it
/// was sent.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub(crate) async fn insert_link(
    tx: &mut Tx,
    user_id: &str,
    email_key: &str,
    link: &NewLink<'_>,
    now: Micros,
) -> Result<bool, Error> {
    let ledger_key = format!("verify:{email_key}");
    let (spent, _) = ledger::spent(tx, &ledger_key, now - micros(verification::TOKEN_TTL)).await?;
    if spent >= MAX_PER_ADDRESS_PER_DAY {
        return Ok(false);
    }
    ledger::record(tx, &ledger_key, 1, now).await?;
    in_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO email_verifications (token_hash, user_id, email_key, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(link.token_hash)
        .bind(user_id)
        .bind(email_key)
        .bind(now)
        .bind(link.expires_at)
        .execute(conn)
        .await?;
    });
    mail::enqueue(tx, link.to, link.subject, link.body, now).await?;
    Ok(true)
}

/// Inside `tx`: `user_id` proved `email_key`. Marks the account verified,
/// drops its outstanding links and binds the invitations waiting for the
/// address. Returns the invitation notices.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub(crate) async fn mark_verified(
    tx: &mut Tx,
    user_id: &str,
    email_key: &str,
    now: Micros,
) -> Result<Vec<NotificationRecord>, Error> {
    in_tx!(tx, conn => {
        sqlx::query("UPDATE users SET email_verified = TRUE, updated_at = $2 WHERE id = $1")
            .bind(user_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM email_verifications WHERE user_id = $1")
            .bind(user_id)
            .execute(conn)
            .await?;
    });
    invites::bind_waiting(tx, user_id, email_key, now).await
}

/// What asking for a new link led to.
#[derive(Debug)]
pub enum Requested {
    /// The link is recorded and its mail queued.
    Sent,
    AlreadyVerified,
    /// Asked too often; another link may go out at this time.
    TooSoon(Micros),
    /// No such user (deleted meanwhile).
    UnknownUser,
    /// The address had its day's share of verification mail.
    AddressFull,
}

/// Records a new link for `user_id` and queues its mail, unless the account
/// is verified or asked too often (DESIGN §7: rate-limited).
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn request(
    db: &Db,
    user_id: &str,
    link: &NewLink<'_>,
    now: Micros,
) -> Result<Requested, Error> {
    let window_start = now - crate::domain::time::micros(verification::TOKEN_TTL);
    let mut tx = db.begin().await?;
    let email_key = in_tx!(&mut tx, conn => {
        // A write first: it locks the row (both engines), so concurrent
        // requests of one user count each other.
        let user: Option<(String, bool)> = sqlx::query_as(
            "UPDATE users SET updated_at = updated_at WHERE id = $1 RETURNING email_key, email_verified",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((email_key, verified)) = user else {
            return Ok(Requested::UnknownUser);
        };
        if verified {
            return Ok(Requested::AlreadyVerified);
        }
        sqlx::query("DELETE FROM email_verifications WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        let (count, newest, oldest): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MAX(created_at), MIN(created_at) FROM email_verifications \
             WHERE user_id = $1 AND created_at > $2",
        )
        .bind(user_id)
        .bind(window_start)
        .fetch_one(conn)
        .await?;
        if let Some(at) = verification::next_allowed(RecentLinks { count, newest, oldest }, now) {
            return Ok(Requested::TooSoon(at));
        }
        email_key
    });
    if !insert_link(&mut tx, user_id, &email_key, link, now).await? {
        return Ok(Requested::AddressFull);
    }
    tx.commit().await?;
    Ok(Requested::Sent)
}

/// What presenting a verification token led to.
#[derive(Debug)]
pub enum Verified {
    /// The account's address is verified now (or already was).
    Done {
        user: Box<UserRecord>,
        notices: Vec<NotificationRecord>,
    },
    /// Unknown, used or expired, or the account's address changed since.
    Invalid,
}

/// Consumes the token: single use, only before it expires, and only for the
/// address it was sent to.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn verify(db: &Db, token_hash: &str, now: Micros) -> Result<Verified, Error> {
    let mut tx = db.begin().await?;
    let link: Option<(String, String, i64)> = in_tx!(&mut tx, conn => {
        sqlx::query_as(
            "DELETE FROM email_verifications WHERE token_hash = $1 \
             RETURNING user_id, email_key, expires_at",
        )
        .bind(token_hash)
        .fetch_optional(conn)
        .await?
    });
    let Some((user_id, email_key, expires_at)) = link else {
        return Ok(Verified::Invalid);
    };
    let user = match users::find_in(&mut tx, &user_id).await? {
        Some(user) if expires_at > now && user.email_key == email_key => user,
        _ => {
            // The used-up or expired link is gone either way.
            tx.commit().await?;
            return Ok(Verified::Invalid);
        }
    };
    let notices = if user.email_verified {
        Vec::new()
    } else {
        mark_verified(&mut tx, &user_id, &email_key, now).await?
    };
    let user = users::find_in(&mut tx, &user_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok(Verified::Done {
        user: Box::new(user),
        notices,
    })
}

/// Drops expired links; returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn sweep(db: &Db, now: Micros) -> Result<u64, Error> {
    super::dispatch!(db, pool => {
        sqlx::query("DELETE FROM email_verifications WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}
