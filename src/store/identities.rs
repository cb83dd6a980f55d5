//! `user_identities` and `oauth_states`: who signs in through which
//! provider, and web sign-ins in progress.

use sqlx::FromRow;

use super::{
    Db, Error, Tx, dispatch, in_tx, invites, is_unique_violation,
    notifications::NotificationRecord,
    users::{self, UserRecord},
    verifications,
};
use crate::domain::{AuthProvider, time::Micros};

/// A web sign-in in progress.
#[derive(Debug, Clone, FromRow)]
pub struct PendingSignIn {
    pub provider: String,
    pub redirect_uri: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

/// Remembers a started sign-in, unless `client_key` already has
/// `max_per_client` waiting or `max_pending` wait in all (false then:
/// nothing stored).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(level = "debug", skip_all)]
pub async fn save_state(
    db: &Db,
    state_hash: &str,
    provider: AuthProvider,
    pending: &PendingSignIn,
    expires_at: Micros,
    now: Micros,
    client_key: &str,
    (max_per_client, max_pending): (i64, i64),
) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        let (pending_now, from_client): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN client_key = $1 THEN 1 ELSE 0 END), 0) FROM oauth_states",
        )
        .bind(client_key)
        .fetch_one(&mut *conn)
        .await?;
        if pending_now >= max_pending || from_client >= max_per_client {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, provider, redirect_uri, pkce_verifier, nonce, expires_at, client_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(state_hash)
        .bind(provider.as_str())
        .bind(&pending.redirect_uri)
        .bind(&pending.pkce_verifier)
        .bind(&pending.nonce)
        .bind(expires_at)
        .bind(client_key)
        .execute(conn)
        .await?;
    });
    tx.commit().await?;
    Ok(true)
}

/// Drops expired sign-ins; returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn sweep_states(db: &Db, now: Micros) -> Result<u64, Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}

/// Consumes a state: it works once, and only before it expires.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn take_state(
    db: &Db,
    state_hash: &str,
    now: Micros,
) -> Result<Option<PendingSignIn>, Error> {
    let row: Option<(String, String, String, String, i64)> = dispatch!(db, pool => {
        sqlx::query_as(
            "DELETE FROM oauth_states WHERE state_hash = $1 \
             RETURNING provider, redirect_uri, pkce_verifier, nonce, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(pool)
        .await?
    });
    Ok(row
        .filter(|(_, _, _, _, expires_at)| *expires_at > now)
        .map(
            |(provider, redirect_uri, pkce_verifier, nonce, _)| PendingSignIn {
                provider,
                redirect_uri,
                pkce_verifier,
                nonce,
            },
        ))
}

/// A verified identity from a provider.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity<'a> {
    pub provider: AuthProvider,
    pub subject: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
    pub email_verified: bool,
    pub display_name: &'a str,
}

/// How a provider sign-in resolved to an account.
#[derive(Debug)]
pub enum Resolution {
    /// The account is deactivated; nothing was written.
    Disabled,
    /// Known identity, or an account it was just linked to, or a new account.
    SignedIn {
        user: Box<UserRecord>,
        created: bool,
        /// A verified identity claimed the account: every earlier session
        /// is revoked.
        claimed: bool,
        notices: Vec<NotificationRecord>,
    },
    /// An account has this email, but the provider does not vouch for it.
    EmailNotVerified,
    /// Someone signed up with this email meanwhile: nothing was written; a
    /// retry will link or refuse.
    Raced,
}

const USER_COLUMNS: &str = "u.id, u.email, u.email_key, u.display_name, u.password_hash, u.role, u.auth_provider, \
     u.is_active, u.avatar_key, u.avatar_content_type, u.created_at, u.updated_at, u.email_verified, u.credential_epoch";

/// Removes the identities of `$1` whose provider did not vouch for the
/// address.
pub(super) const DELETE_UNVERIFIED_IDENTITIES: &str =
    "DELETE FROM user_identities WHERE user_id = $1 AND NOT email_verified";

/// Inside `tx`: a verified identity claims `user`, whose address was never
/// proved. Every way in that did not prove the address ends: the password
/// set before verification, the provider identities that did not vouch,
/// and every session they opened. Then the account is verified and
/// collects its invitations. Returns the invitation notices.
async fn claim(
    tx: &mut Tx,
    user: &UserRecord,
    now: Micros,
) -> Result<Vec<NotificationRecord>, Error> {
    in_tx!(tx, conn => {
        sqlx::query(
            "UPDATE users SET password_hash = NULL, updated_at = $2, \
             credential_epoch = credential_epoch + 1 WHERE id = $1",
        )
        .bind(&user.id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(DELETE_UNVERIFIED_IDENTITIES)
            .bind(&user.id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'address_claimed' \
             WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(&user.id)
        .bind(now)
        .execute(conn)
        .await?;
    });
    verifications::mark_verified(tx, &user.id, &user.email_key, now).await
}

/// Inside `tx`: the current row of user `id`, which exists.
async fn reload(tx: &mut Tx, id: &str) -> Result<UserRecord, Error> {
    users::find_in(tx, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound.into())
}

/// Finds, links or creates the account of `identity`, in one transaction.
///
/// An address is only as good as its proof (DESIGN §7):
/// - a known identity signs in; one that now vouches for an address its
///   account never proved claims the account (below);
/// - an identity whose provider does not vouch for the email never links to
///   an existing account, and a new account it creates stays unverified
///   (it collects no invitations);
/// - a vouching identity links to the account with its address. If that
///   account never proved the address, whoever registered it first (a
///   password, an unverified provider identity) loses every way in, with
///   their sessions, before the owner signs in.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn resolve(
    db: &Db,
    identity: &VerifiedIdentity<'_>,
    new_user_id: &str,
    now: Micros,
) -> Result<Resolution, Error> {
    let mut tx = db.begin().await?;
    let known = in_tx!(&mut tx, conn => {
        sqlx::query_as::<_, UserRecord>(&format!(
            "SELECT {USER_COLUMNS} FROM user_identities i JOIN users u ON u.id = i.user_id \
             WHERE i.provider = $1 AND i.subject = $2"
        ))
        .bind(identity.provider.as_str())
        .bind(identity.subject)
        .fetch_optional(conn)
        .await?
    });
    if let Some(user) = known {
        if !user.is_active {
            return Ok(Resolution::Disabled);
        }
        let claims_now =
            identity.email_verified && !user.email_verified && user.email_key == identity.email_key;
        if !claims_now {
            tx.commit().await?;
            return Ok(Resolution::SignedIn {
                user: Box::new(user),
                created: false,
                claimed: false,
                notices: Vec::new(),
            });
        }
        in_tx!(&mut tx, conn => {
            sqlx::query(
                "UPDATE user_identities SET email_verified = TRUE WHERE provider = $1 AND subject = $2",
            )
            .bind(identity.provider.as_str())
            .bind(identity.subject)
            .execute(conn)
            .await?;
        });
        let notices = claim(&mut tx, &user, now).await?;
        let user = reload(&mut tx, &user.id).await?;
        tx.commit().await?;
        return Ok(Resolution::SignedIn {
            user: Box::new(user),
            created: false,
            claimed: true,
            notices,
        });
    }
    let by_email = in_tx!(&mut tx, conn => {
        sqlx::query_as::<_, UserRecord>(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.email_key = $1"
        ))
        .bind(identity.email_key)
        .fetch_optional(conn)
        .await?
    });
    let (user_id, created, claimed, notices) = match by_email {
        Some(user) if !user.is_active => return Ok(Resolution::Disabled),
        Some(_) if !identity.email_verified => return Ok(Resolution::EmailNotVerified),
        // Both proved the address: the same person.
        Some(user) if user.email_verified => (user.id, false, false, Vec::new()),
        Some(user) => {
            let notices = claim(&mut tx, &user, now).await?;
            (user.id, false, true, notices)
        }
        None => {
            let inserted = in_tx!(&mut tx, conn => {
                sqlx::query(
                    "INSERT INTO users (id, email, email_key, display_name, password_hash, role, auth_provider, \
                     is_active, created_at, updated_at, email_verified) \
                     VALUES ($1, $2, $3, $4, NULL, 'user', $5, TRUE, $6, $6, $7)",
                )
                .bind(new_user_id)
                .bind(identity.email)
                .bind(identity.email_key)
                .bind(identity.display_name)
                .bind(identity.provider.as_str())
                .bind(now)
                .bind(identity.email_verified)
                .execute(conn)
                .await
                .map(|_| ())
            });
            match inserted {
                Err(err) if is_unique_violation(&err) => return Ok(Resolution::Raced),
                other => other?,
            }
            let notices =
                invites::bind_waiting(&mut tx, new_user_id, identity.email_key, now).await?;
            users::created_event(&mut tx, new_user_id, now).await?;
            (new_user_id.to_owned(), true, false, notices)
        }
    };
    in_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO user_identities (provider, subject, user_id, email, created_at, email_verified) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(identity.provider.as_str())
        .bind(identity.subject)
        .bind(&user_id)
        .bind(identity.email)
        .bind(now)
        .bind(identity.email_verified)
        .execute(conn)
        .await?;
    });
    let user = reload(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Resolution::SignedIn {
        user: Box::new(user),
        created,
        claimed,
        notices,
    })
}
