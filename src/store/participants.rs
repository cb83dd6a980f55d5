//! The `meeting_participants` table: one row per join, written by the live
//! room; `left_at` stays empty while the participant is online.

use sqlx::FromRow;

use super::{Db, Error, dispatch, in_tx, webhooks};
use crate::domain::{time::Micros, webhook::EventType};

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
pub(super) const CLOSE_OPEN: &str = "UPDATE meeting_participants SET left_at = $2 \
     WHERE meeting_id = $1 AND left_at IS NULL RETURNING id, user_id";

/// The `data` of participant.joined and participant.left.
pub(super) fn event_data(
    meeting_id: &str,
    participant_id: &str,
    user_id: &str,
    at: Micros,
) -> serde_json::Value {
    serde_json::json!({
        "meeting_id": meeting_id,
        "participant_id": participant_id,
        "user_id": user_id,
        "time": crate::domain::webhook::rfc3339(at),
    })
}

/// Records a join; `id` names the attendance for its later leave.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id, meeting_id = %meeting_id, user_id = %user_id))]
pub async fn record_join(
    db: &Db,
    id: &str,
    meeting_id: &str,
    user_id: &str,
    at: Micros,
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        sqlx::query("INSERT INTO meeting_participants (id, meeting_id, user_id, joined_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(meeting_id)
            .bind(user_id)
            .bind(at)
            .execute(conn)
            .await?;
    });
    let data = event_data(meeting_id, id, user_id, at);
    webhooks::enqueue(&mut tx, EventType::ParticipantJoined, data, at).await?;
    tx.commit().await?;
    Ok(())
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
    let mut tx = db.begin().await?;
    let left: Option<(String, String)> = in_tx!(&mut tx, conn => {
        sqlx::query_as(
            "UPDATE meeting_participants SET left_at = $2 WHERE id = $1 AND left_at IS NULL \
             RETURNING meeting_id, user_id",
        )
        .bind(id)
        .bind(at)
        .fetch_optional(conn)
        .await?
    });
    let Some((meeting_id, user_id)) = left else {
        return Ok(false);
    };
    let data = event_data(&meeting_id, id, &user_id, at);
    webhooks::enqueue(&mut tx, EventType::ParticipantLeft, data, at).await?;
    tx.commit().await?;
    Ok(true)
}

/// Closes every open attendance of a meeting; returns how many.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn close_open(db: &Db, meeting_id: &str, at: Micros) -> Result<u64, Error> {
    let mut tx = db.begin().await?;
    let closed = close_open_in(&mut tx, meeting_id, at).await?;
    tx.commit().await?;
    Ok(closed)
}

/// Inside `tx`: closes every open attendance of the meeting, each with its
/// participant.left event; returns how many.
pub(super) async fn close_open_in(
    tx: &mut super::Tx,
    meeting_id: &str,
    at: Micros,
) -> Result<u64, Error> {
    let closed: Vec<(String, String)> = in_tx!(tx, conn => {
        sqlx::query_as(CLOSE_OPEN)
            .bind(meeting_id)
            .bind(at)
            .fetch_all(conn)
            .await?
    });
    let left = closed
        .iter()
        .map(|(id, user_id)| event_data(meeting_id, id, user_id, at))
        .collect();
    webhooks::enqueue_all(tx, EventType::ParticipantLeft, left, at).await?;
    Ok(closed.len() as u64)
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
    let mut tx = db.begin().await?;
    // A resume that races EndMeeting does not reopen what the end closed.
    let reopened: Option<(String, String)> = in_tx!(&mut tx, conn => {
        sqlx::query_as(
            "UPDATE meeting_participants SET left_at = NULL WHERE id = $1 AND left_at IS NOT NULL AND EXISTS \
             (SELECT 1 FROM meetings m WHERE m.id = meeting_participants.meeting_id \
              AND m.status IN ('scheduled', 'ongoing')) RETURNING meeting_id, user_id",
        )
        .bind(id)
        .fetch_optional(conn)
        .await?
    });
    // Back after a recorded leave: joined again, for webhook consumers.
    if let Some((meeting_id, user_id)) = reopened {
        let now = crate::domain::time::now_micros();
        let data = event_data(&meeting_id, id, &user_id, now);
        webhooks::enqueue(&mut tx, EventType::ParticipantJoined, data, now).await?;
    }
    tx.commit().await?;
    Ok(())
}
