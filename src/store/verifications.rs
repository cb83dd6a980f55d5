//! The `email_verifications` table: outstanding verification links, stored
//! as SHA-256 hashes of their tokens, and what proving an address does.

use super::{Db, dispatch_write, notifications::NotificationRecord, users::UserRecord};
use crate::domain::{
    time::Micros,
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

pub(crate) const INSERT: &str = "INSERT INTO email_verifications \
     (token_hash, user_id, email_key, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";

/// Verification mails one address may receive a day, whichever accounts
/// ask: sign-up must not be a way to mail strangers.
pub const MAX_PER_ADDRESS_PER_DAY: i64 = 5;

/// Inside a transaction `$tx`: records the link `$link` (a `NewLink`) for
/// `$user_id` at `$email_key` and queues its mail, so the mail goes out if
/// and only if the link exists, unless the address had its day's share of
/// verification mail. Evaluates to whether it was sent.
macro_rules! insert_in {
    ($tx:expr, $user_id:expr, $email_key:expr, $link:expr, $now:expr) => {{
        let link: &$crate::store::verifications::NewLink = $link;
        let ledger_key = format!("verify:{}", $email_key);
        let (spent, _): (i64, Option<i64>) = sqlx::query_as($crate::store::ledger::SPENT)
            .bind(&ledger_key)
            .bind($now - $crate::domain::time::micros($crate::domain::verification::TOKEN_TTL))
            .fetch_one(&mut *$tx)
            .await?;
        if spent >= $crate::store::verifications::MAX_PER_ADDRESS_PER_DAY {
            false
        } else {
            sqlx::query($crate::store::ledger::SPEND)
                .bind(&ledger_key)
                .bind($now)
                .bind(1_i64)
                .execute(&mut *$tx)
                .await?;
            sqlx::query($crate::store::verifications::INSERT)
                .bind(link.token_hash)
                .bind($user_id)
                .bind($email_key)
                .bind($now)
                .bind(link.expires_at)
                .execute(&mut *$tx)
                .await?;
            sqlx::query($crate::store::mail::ENQUEUE)
                .bind($crate::domain::new_id())
                .bind(link.to)
                .bind(link.subject)
                .bind(link.body)
                .bind($now)
                .execute(&mut *$tx)
                .await?;
            true
        }
    }};
}
pub(crate) use insert_in;

/// Inside a transaction `$tx`: `$user_id` proved `$email_key`. Marks the
/// account verified, drops its outstanding links and binds the invitations
/// waiting for the address. Evaluates to the invitation notices.
macro_rules! mark_verified_in {
    ($tx:expr, $user_id:expr, $email_key:expr, $now:expr) => {{
        sqlx::query("UPDATE users SET email_verified = TRUE, updated_at = $2 WHERE id = $1")
            .bind($user_id)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        sqlx::query("DELETE FROM email_verifications WHERE user_id = $1")
            .bind($user_id)
            .execute(&mut *$tx)
            .await?;
        $crate::store::invites::bind_in!($tx, $user_id, $email_key, $now)
    }};
}
pub(crate) use mark_verified_in;

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
pub async fn request(
    db: &Db,
    user_id: &str,
    link: &NewLink<'_>,
    now: Micros,
) -> Result<Requested, sqlx::Error> {
    let window_start = now - crate::domain::time::micros(verification::TOKEN_TTL);
    dispatch_write!(db, tx => {
        // A write first: it locks the row (both engines), so concurrent
        // requests of one user count each other.
        let user: Option<(String, bool)> = sqlx::query_as(
            "UPDATE users SET updated_at = updated_at WHERE id = $1 RETURNING email_key, email_verified",
        )
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((email_key, verified)) = user else {
            return Ok(Requested::UnknownUser);
        };
        if verified {
            return Ok(Requested::AlreadyVerified);
        }
        sqlx::query("DELETE FROM email_verifications WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (count, newest, oldest): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MAX(created_at), MIN(created_at) FROM email_verifications \
             WHERE user_id = $1 AND created_at > $2",
        )
        .bind(user_id)
        .bind(window_start)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(at) = verification::next_allowed(RecentLinks { count, newest, oldest }, now) {
            return Ok(Requested::TooSoon(at));
        }
        if !insert_in!(tx, user_id, &email_key, link, now) {
            return Ok(Requested::AddressFull);
        }
        tx.commit().await?;
        Ok(Requested::Sent)
    })
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
pub async fn verify(db: &Db, token_hash: &str, now: Micros) -> Result<Verified, sqlx::Error> {
    dispatch_write!(db, tx => {
        let link: Option<(String, String, i64)> = sqlx::query_as(
            "DELETE FROM email_verifications WHERE token_hash = $1 \
             RETURNING user_id, email_key, expires_at",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, email_key, expires_at)) = link else {
            return Ok(Verified::Invalid);
        };
        let user = sqlx::query_as::<_, UserRecord>(&format!(
            "SELECT {} FROM users WHERE id = $1",
            super::users::COLUMNS
        ))
        .bind(&user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let user = match user {
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
            mark_verified_in!(tx, &user_id, &email_key, now)
        };
        let user = sqlx::query_as::<_, UserRecord>(&format!(
            "SELECT {} FROM users WHERE id = $1",
            super::users::COLUMNS
        ))
        .bind(&user_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Verified::Done { user: Box::new(user), notices })
    })
}

/// Drops expired links; returns how many.
pub async fn sweep(db: &Db, now: Micros) -> Result<u64, sqlx::Error> {
    super::dispatch!(db, pool => {
        sqlx::query("DELETE FROM email_verifications WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })
}
