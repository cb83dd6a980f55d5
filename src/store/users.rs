//! The `users` table.

use sqlx::FromRow;

use super::{Db, Error, Tx, dispatch, in_tx, sessions};
use crate::domain::{AuthProvider, Role, time::Micros};

/// A row of `users`.
#[derive(Debug, Clone, FromRow)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    /// The address as compared: unique ignoring case (`Email::key`).
    pub email_key: String,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub role: String,
    pub auth_provider: String,
    pub is_active: bool,
    pub avatar_key: Option<String>,
    pub avatar_content_type: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub email_verified: bool,
    /// Grows whenever the ways into the account change.
    pub credential_epoch: i64,
}

impl UserRecord {
    pub fn role(&self) -> Role {
        // The CHECK constraint admits only the two spellings.
        Role::from_db(&self.role).unwrap_or(Role::User)
    }

    pub fn auth_provider(&self) -> AuthProvider {
        AuthProvider::from_db(&self.auth_provider).unwrap_or(AuthProvider::Password)
    }
}

/// What to insert for a new account.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
    pub display_name: &'a str,
    pub password_hash: Option<&'a str>,
    pub role: Role,
    pub provider: AuthProvider,
    pub now: Micros,
}

/// The email of a new account already belongs to someone.
#[derive(Debug, PartialEq, Eq)]
pub struct EmailTaken;

/// Changes to a user; `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct UserChanges<'a> {
    pub display_name: Option<&'a str>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

pub(super) const COLUMNS: &str = "id, email, email_key, display_name, password_hash, role, auth_provider, is_active, \
     avatar_key, avatar_content_type, created_at, updated_at, email_verified, credential_epoch";

pub(super) const INSERT: &str = "INSERT INTO users (id, email, email_key, display_name, password_hash, role, \
     auth_provider, is_active, created_at, updated_at, email_verified) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $8, $9)";

/// Inside `tx`: queues user.created for user `id` (just inserted).
pub(crate) async fn created_event(tx: &mut Tx, id: &str, now: i64) -> Result<(), Error> {
    let Some(user) = find_in(tx, id).await? else {
        return Ok(());
    };
    let data = serde_json::json!({
        "user": {
            "id": user.id,
            "email": user.email,
            "display_name": user.display_name,
            "role": user.role,
            "auth_provider": user.auth_provider,
            "email_verified": user.email_verified,
            "create_time": crate::domain::webhook::rfc3339(user.created_at),
        }
    });
    super::webhooks::enqueue(
        tx,
        crate::domain::webhook::EventType::UserCreated,
        data,
        now,
    )
    .await
}

/// Inside `tx`: the current row of user `id`.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub(crate) async fn find_in(tx: &mut Tx, id: &str) -> Result<Option<UserRecord>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    in_tx!(tx, conn => {
        sqlx::query_as::<_, UserRecord>(&sql)
            .bind(id)
            .fetch_optional(conn)
            .await.map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn find_by_id(db: &Db, id: &str) -> Result<Option<UserRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, UserRecord>(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn find_by_email_key(db: &Db, email_key: &str) -> Result<Option<UserRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, UserRecord>(&format!("SELECT {COLUMNS} FROM users WHERE email_key = $1"))
            .bind(email_key)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Users in id (creation) order after `after_id`, optionally only those
/// whose email or display name contains `query` ignoring ASCII case.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    db: &Db,
    query: &str,
    after_id: Option<&str>,
    limit: u32,
) -> Result<Vec<UserRecord>, Error> {
    let pattern = format!("%{}%", escape_like(&query.to_lowercase()));
    let sql = format!(
        "SELECT {COLUMNS} FROM users \
         WHERE ($1 = '' OR lower(email) LIKE $2 ESCAPE '\\' OR lower(display_name) LIKE $2 ESCAPE '\\') \
           AND ($3 = '' OR id > $3) \
         ORDER BY id LIMIT $4"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, UserRecord>(&sql)
            .bind(query)
            .bind(&pattern)
            .bind(after_id.unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await.map_err(Error::from)
    })
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Applies `changes`; `None` when the user does not exist.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn update(
    db: &Db,
    id: &str,
    changes: &UserChanges<'_>,
    now: Micros,
) -> Result<Option<UserRecord>, Error> {
    let sql = format!(
        "UPDATE users SET display_name = COALESCE($2, display_name), role = COALESCE($3, role), \
         is_active = COALESCE($4, is_active), updated_at = $5 WHERE id = $1 RETURNING {COLUMNS}"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, UserRecord>(&sql)
            .bind(id)
            .bind(changes.display_name)
            .bind(changes.role.map(Role::as_str))
            .bind(changes.is_active)
            .bind(now)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Replaces the password hash and revokes every session but `keep_session`,
/// in one transaction, if nothing changed the account's ways in since the
/// caller checked the current password (`seen_epoch`) and `keep_session`
/// is still live. False otherwise: nothing changed.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn set_password(
    db: &Db,
    id: &str,
    password_hash: &str,
    keep_session: &str,
    seen_epoch: i64,
    now: Micros,
) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        let changed = sqlx::query(
            "UPDATE users SET password_hash = $2, updated_at = $3, credential_epoch = credential_epoch + 1 \
             WHERE id = $1 AND credential_epoch = $5 \
               AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = $4 AND s.user_id = $1 AND s.revoked_at IS NULL)",
        )
        .bind(id)
        .bind(password_hash)
        .bind(now)
        .bind(keep_session)
        .bind(seen_epoch)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        sqlx::query(sessions::REVOKE_OTHER_SESSIONS)
            .bind(id)
            .bind(keep_session)
            .bind(now)
            .bind("password_changed")
            .execute(conn)
            .await?;
    });
    tx.commit().await?;
    Ok(true)
}

/// Points the user at a new avatar blob and returns the key it replaced.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn set_avatar(
    db: &Db,
    id: &str,
    avatar_key: &str,
    content_type: &str,
    now: Micros,
) -> Result<Option<(UserRecord, Option<String>)>, Error> {
    let mut tx = db.begin().await?;
    let result = in_tx!(&mut tx, conn => {
        // A no-op write first: it returns the old key and locks the row.
        let previous: Option<(Option<String>,)> = sqlx::query_as(
            "UPDATE users SET avatar_key = avatar_key WHERE id = $1 RETURNING avatar_key",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((previous,)) = previous else {
            return Ok(None);
        };
        let record = sqlx::query_as::<_, UserRecord>(&format!(
            "UPDATE users SET avatar_key = $2, avatar_content_type = $3, updated_at = $4 \
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(avatar_key)
        .bind(content_type)
        .bind(now)
        .fetch_one(conn)
        .await?;
        (record, previous)
    });
    tx.commit().await?;
    Ok(Some(result))
}

/// Deletes the user with what cascades from it, and returns it with the
/// ids of the meetings it hosted (deleted with it, in the same
/// transaction, so none created meanwhile goes unreported).
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %id))]
pub async fn delete(db: &Db, id: &str) -> Result<Option<(UserRecord, Vec<String>)>, Error> {
    let mut tx = db.begin().await?;
    let deleted = in_tx!(&mut tx, conn => {
        // Their chat messages stay in others' histories (sequences keep no
        // gaps), no longer naming them; the delete then clears sender_id.
        sqlx::query("UPDATE chat_messages SET sender_display_name = 'Deleted user' WHERE sender_id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        let hosted: Vec<super::meetings::MeetingRecord> =
            sqlx::query_as(&super::meetings::delete_hosted_sql())
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
        // A co-host no more, wherever they were one.
        sqlx::query(
            "UPDATE meetings SET co_host_ids = TRIM(REPLACE(' ' || co_host_ids || ' ', ' ' || $1 || ' ', ' ')) \
             WHERE ' ' || co_host_ids || ' ' LIKE '% ' || $1 || ' %'",
        )
        .bind(id)
        .execute(&mut *conn)
        .await?;
        sqlx::query_as::<_, UserRecord>(&format!("DELETE FROM users WHERE id = $1 RETURNING {COLUMNS}"))
            .bind(id)
            .fetch_optional(conn)
            .await?
            .map(|user| (user, hosted))
    });
    let Some((user, hosted)) = deleted else {
        return Ok(None);
    };
    let now = crate::domain::time::now_micros();
    super::webhooks::enqueue_all(
        &mut tx,
        crate::domain::webhook::EventType::MeetingDeleted,
        hosted.iter().map(super::meetings::event_data).collect(),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Some((user, hosted.into_iter().map(|m| m.id).collect())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
