//! The `calls` table.

use sqlx::FromRow;

use super::{
    Db, Error, dispatch, in_tx,
    notifications::{self, NotificationRecord},
    webhooks,
};
use crate::domain::{
    call::{CallStatus, RingLimit, ring_limit},
    notification::Draft,
    time::Micros,
    webhook::{EventType, rfc3339},
};

/// The `data` of call.started and call.ended.
fn event_data(call: &CallRecord) -> serde_json::Value {
    serde_json::json!({
        "call": {
            "id": call.id,
            "meeting_id": call.meeting_id,
            "caller_id": call.caller_id,
            "callee_id": call.callee_id,
            "status": call.status,
            "start_time": rfc3339(call.started_at),
            "answer_time": call.answered_at.map(rfc3339),
            "end_time": call.ended_at.map(rfc3339),
            "duration_seconds": call.duration_seconds,
        }
    })
}

#[derive(Debug, Clone, FromRow)]
pub struct CallRecord {
    pub id: String,
    pub meeting_id: String,
    pub caller_id: String,
    pub callee_id: Option<String>,
    pub status: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_seconds: i64,
}

impl CallRecord {
    pub fn status(&self) -> CallStatus {
        CallStatus::from_db(&self.status).unwrap_or(CallStatus::Ended)
    }
}

const COLUMNS: &str = "id, meeting_id, caller_id, callee_id, status, started_at, answered_at, ended_at, duration_seconds";

/// What starting a call led to.
#[derive(Debug)]
pub enum Started {
    /// Recorded; a ringing callee was notified in the same transaction.
    New(CallRecord, Option<NotificationRecord>),
    /// The caller's call to this callee in this meeting is still ringing:
    /// nothing new rings.
    AlreadyRinging(CallRecord),
    Limited(RingLimit),
}

/// Records a new call; a ringing callee is notified with `draft` in the
/// same transaction. One caller rings one callee once at a time, and
/// `domain::call::ring_limit` bounds the rest; the callee's row is locked
/// first so concurrent starts count each other.
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(level = "debug", skip_all, fields(id = %id, meeting_id = %meeting_id, caller_id = %caller_id))]
pub async fn create(
    db: &Db,
    id: &str,
    meeting_id: &str,
    caller_id: &str,
    callee_id: Option<&str>,
    status: CallStatus,
    draft: Option<&Draft>,
    now: Micros,
) -> Result<Started, Error> {
    let sql = format!(
        "INSERT INTO calls (id, meeting_id, caller_id, callee_id, status, started_at, answered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let answered = (status == CallStatus::Active).then_some(now);
    let mut tx = db.begin().await?;
    let record = in_tx!(&mut tx, conn => {
        if let Some(callee) = callee_id {
            sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
                .bind(callee)
                .execute(&mut *conn)
                .await?;
            let ringing = sqlx::query_as::<_, CallRecord>(&format!(
                "SELECT {COLUMNS} FROM calls WHERE meeting_id = $1 AND caller_id = $2 \
                 AND callee_id = $3 AND status = 'ringing' LIMIT 1"
            ))
            .bind(meeting_id)
            .bind(caller_id)
            .bind(callee)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(call) = ringing {
                return Ok(Started::AlreadyRinging(call));
            }
            let (recent, oldest): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(started_at) FROM calls WHERE caller_id = $1 AND started_at > $2",
            )
            .bind(caller_id)
            .bind(now - 60_000_000)
            .fetch_one(&mut *conn)
            .await?;
            let (busy,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM calls WHERE callee_id = $1 AND status = 'ringing'",
            )
            .bind(callee)
            .fetch_one(&mut *conn)
            .await?;
            if let Some(limit) = ring_limit(recent, oldest, busy) {
                return Ok(Started::Limited(limit));
            }
        }
        sqlx::query_as::<_, CallRecord>(&sql)
            .bind(id)
            .bind(meeting_id)
            .bind(caller_id)
            .bind(callee_id)
            .bind(status.as_str())
            .bind(now)
            .bind(answered)
            .fetch_one(conn)
            .await?
    });
    let notice = match (callee_id, draft) {
        (Some(callee), Some(draft)) => {
            notifications::insert(&mut tx, callee, draft, now, None).await?
        }
        _ => None,
    };
    webhooks::enqueue(&mut tx, EventType::CallStarted, event_data(&record), now).await?;
    tx.commit().await?;
    Ok(Started::New(record, notice))
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn find(db: &Db, id: &str) -> Result<Option<CallRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, CallRecord>(&format!("SELECT {COLUMNS} FROM calls WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Moves the call from `from` to `to` if it is still in `from` (`None`
/// otherwise: someone else changed it first).
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn transition(
    db: &Db,
    id: &str,
    from: CallStatus,
    to: CallStatus,
    answered_at: Option<Micros>,
    ended_at: Option<Micros>,
    duration_seconds: i64,
) -> Result<Option<CallRecord>, Error> {
    let sql = format!(
        "UPDATE calls SET status = $3, answered_at = COALESCE($4, answered_at), ended_at = COALESCE($5, ended_at), \
           duration_seconds = $6 WHERE id = $1 AND status = $2 RETURNING {COLUMNS}"
    );
    let mut tx = db.begin().await?;
    let moved = in_tx!(&mut tx, conn => {
        sqlx::query_as::<_, CallRecord>(&sql)
            .bind(id)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(answered_at)
            .bind(ended_at)
            .bind(duration_seconds)
            .fetch_optional(conn)
            .await?
    });
    if moved.is_some() && from == CallStatus::Ringing {
        super::devices::forget_call(&mut tx, id).await?;
    }
    // A call that will not ring or talk any more has ended, however.
    if let Some(call) = &moved
        && matches!(
            to,
            CallStatus::Ended | CallStatus::Declined | CallStatus::Missed
        )
    {
        let at = call.ended_at.unwrap_or(call.started_at);
        webhooks::enqueue(&mut tx, EventType::CallEnded, event_data(call), at).await?;
    }
    tx.commit().await?;
    Ok(moved)
}

/// Marks calls ringing since before `rang_before` as missed and returns them.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn mark_missed(
    db: &Db,
    rang_before: Micros,
    now: Micros,
) -> Result<Vec<CallRecord>, Error> {
    let sql = format!(
        "UPDATE calls SET status = 'missed', ended_at = $2 \
         WHERE status = 'ringing' AND started_at < $1 RETURNING {COLUMNS}"
    );
    let mut tx = db.begin().await?;
    let missed = in_tx!(&mut tx, conn => {
        sqlx::query_as::<_, CallRecord>(&sql)
            .bind(rang_before)
            .bind(now)
            .fetch_all(conn)
            .await?
    });
    for call in &missed {
        super::devices::forget_call(&mut tx, &call.id).await?;
        webhooks::enqueue(&mut tx, EventType::CallEnded, event_data(call), now).await?;
    }
    tx.commit().await?;
    Ok(missed)
}

/// A meeting's calls, newest first, before `before_id`.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn list(
    db: &Db,
    meeting_id: &str,
    before_id: Option<&str>,
    limit: u32,
) -> Result<Vec<CallRecord>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM calls WHERE meeting_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, CallRecord>(&sql)
            .bind(meeting_id)
            .bind(before_id.unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await.map_err(Error::from)
    })
}
