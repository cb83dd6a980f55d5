//! Transactions that make or re-key an account across tables: sign-up
//! (the user, its verification link and its first session) and the
//! operator's `create-admin`. Above `users`, `sessions`, `identities` and
//! `verifications`, so those table modules never import each other in a
//! circle.

use super::{
    Db, Error, identities, in_tx, is_unique_violation,
    notifications::NotificationRecord,
    sessions,
    users::{self, COLUMNS, EmailTaken, INSERT, NewUser, UserRecord, find_in},
    verifications,
};
use crate::domain::Role;

/// Inserts the user, queues its verification link and opens its first
/// session in one transaction, so a sign-up either fully happens or leaves
/// nothing behind.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create_with_session(
    db: &Db,
    user: &NewUser<'_>,
    verification: Option<&verifications::NewLink<'_>>,
    session: &sessions::NewSession<'_>,
) -> Result<Result<UserRecord, EmailTaken>, Error> {
    let mut tx = db.begin().await?;
    let inserted = in_tx!(&mut tx, conn => {
        sqlx::query(INSERT)
            .bind(user.id)
            .bind(user.email)
            .bind(user.email_key)
            .bind(user.display_name)
            .bind(user.password_hash)
            .bind(user.role.as_str())
            .bind(user.provider.as_str())
            .bind(user.now)
            .bind(false)
            .execute(conn)
            .await
            .map(|_| ())
    });
    match inserted {
        Err(err) if is_unique_violation(&err) => return Ok(Err(EmailTaken)),
        other => other?,
    };
    // The address is unproven: invitations to it wait for the link in this
    // mail (DESIGN §7).
    if let Some(link) = verification {
        // A full address gets no link now; SendVerificationEmail can ask
        // again tomorrow.
        let _sent =
            verifications::insert_link(&mut tx, user.id, user.email_key, link, user.now).await?;
    }
    sessions::open(&mut tx, user.id, session).await?;
    users::created_event(&mut tx, user.id, user.now).await?;
    let record = find_in(&mut tx, user.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok(Ok(record))
}

/// Creates an admin, or promotes and re-passwords an existing account with
/// that email. The operator vouches for the address, so the account is
/// verified and collects its invitations; an existing account loses every
/// way in that did not prove the address. Returns the user, whether it was
/// newly created, and the invitation notices.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn upsert_admin(
    db: &Db,
    user: &NewUser<'_>,
) -> Result<(UserRecord, bool, Vec<NotificationRecord>), Error> {
    let mut tx = db.begin().await?;
    let (id, created) = in_tx!(&mut tx, conn => {
        let updated = sqlx::query_as::<_, UserRecord>(&format!(
            "UPDATE users SET role = 'admin', is_active = TRUE, password_hash = $2, updated_at = $3, \
             credential_epoch = credential_epoch + 1 WHERE email_key = $1 RETURNING {COLUMNS}"
        ))
        .bind(user.email_key)
        .bind(user.password_hash)
        .bind(user.now)
        .fetch_optional(&mut *conn)
        .await?;
        match updated {
            Some(record) => {
                // Whoever held this account before must sign in again with
                // the new password before acting as an admin.
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = 'promoted_to_admin' \
                     WHERE user_id = $1 AND revoked_at IS NULL",
                )
                .bind(&record.id)
                .bind(user.now)
                .execute(&mut *conn)
                .await?;
                if !record.email_verified {
                    sqlx::query(identities::DELETE_UNVERIFIED_IDENTITIES)
                        .bind(&record.id)
                        .execute(conn)
                        .await?;
                }
                (record.id, false)
            }
            None => {
                sqlx::query(INSERT)
                    .bind(user.id)
                    .bind(user.email)
                    .bind(user.email_key)
                    .bind(user.display_name)
                    .bind(user.password_hash)
                    .bind(Role::Admin.as_str())
                    .bind(user.provider.as_str())
                    .bind(user.now)
                    .bind(true)
                    .execute(conn)
                    .await?;
                (user.id.to_owned(), true)
            }
        }
    });
    let notices = verifications::mark_verified(&mut tx, &id, user.email_key, user.now).await?;
    if created {
        users::created_event(&mut tx, &id, user.now).await?;
    }
    let record = find_in(&mut tx, &id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok((record, created, notices))
}
