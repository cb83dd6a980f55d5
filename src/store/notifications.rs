//! The `notifications` table. Other store modules write notifications
//! inside their own transactions with [`insert`], so a change
//! and the notices it causes commit together.

use sqlx::FromRow;

use super::{Db, Error, Tx, dispatch, in_tx, mail};
use crate::domain::{
    notification::{Draft, NotificationKind},
    time::Micros,
};

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRecord {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<String>,
    pub read_at: Option<i64>,
    pub created_at: i64,
}

impl NotificationRecord {
    pub fn kind(&self) -> NotificationKind {
        NotificationKind::from_db(&self.kind).unwrap_or(NotificationKind::General)
    }
}

const COLUMNS: &str = "id, user_id, kind, title, body, meeting_id, read_at, created_at";

/// Inserts one notification unless its dedupe key exists; RETURNING gives
/// the row only when it was inserted.
const INSERT: &str = "INSERT INTO notifications \
     (id, user_id, kind, title, body, meeting_id, created_at, dedupe_key) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING \
     RETURNING id, user_id, kind, title, body, meeting_id, read_at, created_at";

/// Inside `tx`: tells `user_id` about `draft` (and mails it to their
/// address when the draft is mailed). `None` when `dedupe_key` was used
/// before: nothing is inserted or mailed then.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub(crate) async fn insert(
    tx: &mut Tx,
    user_id: &str,
    draft: &Draft,
    now: Micros,
    dedupe_key: Option<&str>,
) -> Result<Option<NotificationRecord>, Error> {
    let (inserted, address) = in_tx!(tx, conn => {
        let inserted = sqlx::query_as::<_, NotificationRecord>(INSERT)
            .bind(crate::domain::new_id())
            .bind(user_id)
            .bind(draft.kind.as_str())
            .bind(&draft.title)
            .bind(&draft.body)
            .bind(draft.meeting_id.as_deref())
            .bind(now)
            .bind(dedupe_key)
            .fetch_optional(&mut *conn)
            .await?;
        let address: Option<(String,)> = if inserted.is_some() && draft.mail {
            sqlx::query_as("SELECT email FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(conn)
                .await?
        } else {
            None
        };
        (inserted, address)
    });
    if let Some((address,)) = address {
        mail::enqueue_draft(tx, &address, draft, now).await?;
    }
    if inserted.is_some() {
        super::devices::enqueue_for_user(tx, user_id, draft, now).await?;
    }
    Ok(inserted)
}

/// Sends `draft` to each of `user_ids` in one transaction.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn send(
    db: &Db,
    user_ids: &[String],
    draft: &Draft,
    now: Micros,
) -> Result<Vec<NotificationRecord>, Error> {
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(user_ids.len());
    for user_id in user_ids {
        if let Some(record) = insert(&mut tx, user_id, draft, now, None).await? {
            out.push(record);
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Sends `draft` to each of `user_ids` in one transaction, once per key
/// `key` gives each.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn send_once_each(
    db: &Db,
    user_ids: &[String],
    draft: &Draft,
    key: impl Fn(&str) -> String,
    now: Micros,
) -> Result<Vec<NotificationRecord>, Error> {
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(user_ids.len());
    for user_id in user_ids {
        if let Some(record) = insert(&mut tx, user_id, draft, now, Some(&key(user_id))).await? {
            out.push(record);
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Inserts a reminder once per dedupe key (with its email, when the draft
/// is mailed); `None` if it was already sent.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn send_once(
    db: &Db,
    user_id: &str,
    draft: &Draft,
    dedupe_key: &str,
    start_at: Micros,
    now: Micros,
) -> Result<Option<NotificationRecord>, Error> {
    let meeting_id = draft.meeting_id.as_deref().unwrap_or_default();
    let mut tx = db.begin().await?;
    // Re-checked under the write lock: a meeting cancelled or moved since
    // the sweep looked gets no reminder for the old time.
    let still: Option<(i64,)> = in_tx!(&mut tx, conn => {
        sqlx::query_as(
            "SELECT start_at FROM meetings WHERE id = $1 AND status = 'scheduled' AND start_at = $2",
        )
        .bind(meeting_id)
        .bind(start_at)
        .fetch_optional(conn)
        .await?
    });
    if still.is_none() {
        return Ok(None);
    }
    let inserted = insert(&mut tx, user_id, draft, now, Some(dedupe_key)).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// The user's notifications, newest first, before `before_id`.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn list(
    db: &Db,
    user_id: &str,
    kinds: &[NotificationKind],
    unread_only: bool,
    before_id: Option<&str>,
    limit: u32,
) -> Result<Vec<NotificationRecord>, Error> {
    let kind_filter = if kinds.is_empty() {
        String::new()
    } else {
        let placeholders: Vec<String> = (5..5 + kinds.len()).map(|n| format!("${n}")).collect();
        format!("AND kind IN ({})", placeholders.join(", "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND ($2 = '' OR id < $2) \
         AND ($3 = FALSE OR read_at IS NULL) {kind_filter} ORDER BY id DESC LIMIT $4"
    );
    dispatch!(db, pool => {
        let mut query = sqlx::query_as::<_, NotificationRecord>(&sql)
            .bind(user_id)
            .bind(before_id.unwrap_or_default())
            .bind(unread_only)
            .bind(i64::from(limit));
        for kind in kinds {
            query = query.bind(kind.as_str());
        }
        query.fetch_all(pool).await.map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn unread_count(db: &Db, user_id: &str) -> Result<i64, Error> {
    let (count,): (i64,) = dispatch!(db, pool => {
        sqlx::query_as("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL")
            .bind(user_id)
            .fetch_one(pool)
            .await?
    });
    Ok(count)
}

/// Marks one of `user_id`'s notifications read or unread; `None` when it is
/// not theirs or does not exist.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id, id = %id))]
pub async fn mark(
    db: &Db,
    user_id: &str,
    id: &str,
    read: bool,
    now: Micros,
) -> Result<Option<NotificationRecord>, Error> {
    let sql = format!(
        "UPDATE notifications SET read_at = CASE WHEN $3 THEN COALESCE(read_at, $4) ELSE NULL END \
         WHERE id = $1 AND user_id = $2 RETURNING {COLUMNS}"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, NotificationRecord>(&sql)
            .bind(id)
            .bind(user_id)
            .bind(read)
            .bind(now)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn mark_all(db: &Db, user_id: &str, now: Micros) -> Result<u64, Error> {
    dispatch!(db, pool => {
        sqlx::query("UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL")
            .bind(user_id)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id, id = %id))]
pub async fn delete(db: &Db, user_id: &str, id: &str) -> Result<bool, Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM notifications WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1).map_err(Error::from)
    })
}

/// Who should be reminded of meetings starting in `(now, now + lead]`:
/// (meeting id, title, start, user id) for the host and every invitee with
/// an account who did not decline.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn reminder_candidates(
    db: &Db,
    now: Micros,
    lead: Micros,
) -> Result<Vec<(String, String, i64, String)>, Error> {
    const SQL: &str = "SELECT m.id, m.title, m.start_at, m.host_id FROM meetings m \
         WHERE m.status = 'scheduled' AND m.start_at > $1 AND m.start_at <= $2 \
         UNION ALL \
         SELECT m.id, m.title, m.start_at, i.user_id FROM meetings m \
         JOIN meeting_invites i ON i.meeting_id = m.id \
         WHERE m.status = 'scheduled' AND m.start_at > $1 AND m.start_at <= $2 \
           AND i.user_id IS NOT NULL AND i.status <> 'declined' \
           AND NOT EXISTS (SELECT 1 FROM meeting_removals r WHERE r.meeting_id = m.id AND r.user_id = i.user_id)";
    dispatch!(db, pool => {
        sqlx::query_as(SQL)
            .bind(now)
            .bind(now + lead)
            .fetch_all(pool)
            .await.map_err(Error::from)
    })
}

/// Invitees without an account (who did not decline) of meetings starting
/// in `(now, now + lead]`: (meeting id, title, start, email). They are
/// reminded by email only.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn email_reminder_candidates(
    db: &Db,
    now: Micros,
    lead: Micros,
) -> Result<Vec<(String, String, i64, String)>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as(
            "SELECT m.id, m.title, m.start_at, i.email FROM meetings m \
             JOIN meeting_invites i ON i.meeting_id = m.id \
             WHERE m.status = 'scheduled' AND m.start_at > $1 AND m.start_at <= $2 \
               AND i.user_id IS NULL AND i.status <> 'declined'",
        )
        .bind(now)
        .bind(now + lead)
        .fetch_all(pool)
        .await.map_err(Error::from)
    })
}
