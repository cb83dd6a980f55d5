//! The `meeting_participants` table: one row per join, written by the live
//! room; `left_at` stays empty while the participant is online.

use sqlx::FromRow;

use super::{Db, Error, dispatch};
use crate::domain::time::Micros;

#[derive(Debug, Clone, FromRow)]
pub struct ParticipantRecord {
    pub id: String,
    pub meeting_id: String,
    pub user_id: String,
    pub display_name: String,
    pub joined_at: i64,
    pub left_at: Option<i64>,
}

/// Closes every open attendance of a meeting (it ended).
pub(super) const CLOSE_OPEN: &str =
    "UPDATE meeting_participants SET left_at = $2 WHERE meeting_id = $1 AND left_at IS NULL";

/// Records a join; `id` names the attendance for its later leave.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id, meeting_id = %meeting_id, user_id = %user_id))]
pub async fn record_join(
    db: &Db,
    id: &str,
    meeting_id: &str,
    user_id: &str,
    at: Micros,
) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query("INSERT INTO meeting_participants (id, meeting_id, user_id, joined_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(meeting_id)
            .bind(user_id)
            .bind(at)
            .execute(pool)
            .await
            .map(|_| ()).map_err(Error::from)
    })
}

/// The user of a participant online in `meeting_id` (its attendance is
/// open), whichever node serves it.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn online_user(db: &Db, meeting_id: &str, id: &str) -> Result<Option<String>, Error> {
    dispatch!(db, pool => {
        sqlx::query_scalar(
            "SELECT user_id FROM meeting_participants \
             WHERE id = $1 AND meeting_id = $2 AND left_at IS NULL",
        )
        .bind(id)
        .bind(meeting_id)
        .fetch_optional(pool)
        .await
        .map_err(Error::from)
    })
}

/// Records a leave; false when the attendance was already closed.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn record_leave(db: &Db, id: &str, at: Micros) -> Result<bool, Error> {
    dispatch!(db, pool => {
        sqlx::query("UPDATE meeting_participants SET left_at = $2 WHERE id = $1 AND left_at IS NULL")
            .bind(id)
            .bind(at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1).map_err(Error::from)
    })
}

/// Closes every open attendance of a meeting; returns how many.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn close_open(db: &Db, meeting_id: &str, at: Micros) -> Result<u64, Error> {
    dispatch!(db, pool => {
        sqlx::query(CLOSE_OPEN)
            .bind(meeting_id)
            .bind(at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()).map_err(Error::from)
    })
}

/// Attendances of a meeting in join order (ids are time-ordered), after
/// `after_id`.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn list(
    db: &Db,
    meeting_id: &str,
    after_id: Option<&str>,
    limit: u32,
) -> Result<Vec<ParticipantRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, ParticipantRecord>(
            "SELECT p.id, p.meeting_id, p.user_id, u.display_name, p.joined_at, p.left_at \
             FROM meeting_participants p JOIN users u ON u.id = p.user_id \
             WHERE p.meeting_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3",
        )
        .bind(meeting_id)
        .bind(after_id.unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await.map_err(Error::from)
    })
}

/// Marks a resumed attendance online again.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn reopen(db: &Db, id: &str) -> Result<(), Error> {
    dispatch!(db, pool => {
        // A resume that races EndMeeting does not reopen what the end closed.
        sqlx::query(
            "UPDATE meeting_participants SET left_at = NULL WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM meetings m WHERE m.id = meeting_participants.meeting_id \
              AND m.status IN ('scheduled', 'ongoing'))",
        )
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ()).map_err(Error::from)
    })
}
