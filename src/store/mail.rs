//! The `mail_outbox` table: email waiting to be sent. Rows are written in
//! the same transaction as the change they report, and sent by
//! `jobs::mailer`, which leases them so that several nodes never send one
//! twice at the same time.

use sqlx::FromRow;

use super::{Db, Error, Tx, dispatch, in_tx};
use crate::domain::{notification::Draft, time::Micros};

#[derive(Debug, Clone, FromRow)]
pub struct OutgoingMail {
    pub id: String,
    pub to_address: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
}

/// Gives up on an address after this many failed attempts.
pub const MAX_ATTEMPTS: i32 = 10;

const ENQUEUE: &str = "INSERT INTO mail_outbox (id, to_address, subject, body, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $5)";

/// Inside `tx`: queues an email with `subject` and `body` to `to`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn enqueue(
    tx: &mut Tx,
    to: &str,
    subject: &str,
    body: &str,
    now: Micros,
) -> Result<(), Error> {
    in_tx!(tx, conn => {
        sqlx::query(ENQUEUE)
            .bind(crate::domain::new_id())
            .bind(to)
            .bind(subject)
            .bind(body)
            .bind(now)
            .execute(conn)
            .await
            .map(|_| ()).map_err(Error::from)
    })
}

/// Inside `tx`: queues the draft's title and body as an email to `to`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn enqueue_draft(
    tx: &mut Tx,
    to: &str,
    draft: &Draft,
    now: Micros,
) -> Result<(), Error> {
    enqueue(tx, to, &draft.title, &draft.body, now).await
}

/// Emails still to be sent (not given up on).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn pending(db: &Db) -> Result<i64, Error> {
    let (count,): (i64,) = dispatch!(db, pool => {
        sqlx::query_as("SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NULL AND attempts < $1")
            .bind(MAX_ATTEMPTS)
            .fetch_one(pool)
            .await?
    });
    Ok(count)
}

/// Leases up to `limit` due emails until `lease_until` and returns them.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim_due(
    db: &Db,
    now: Micros,
    lease_until: Micros,
    limit: u32,
) -> Result<Vec<OutgoingMail>, Error> {
    const SQL: &str = "UPDATE mail_outbox SET next_attempt_at = $2 \
         WHERE next_attempt_at <= $1 AND id IN (SELECT id FROM mail_outbox \
           WHERE sent_at IS NULL AND attempts < $4 AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $3) \
         RETURNING id, to_address, subject, body, attempts";
    dispatch!(db, pool => {
        sqlx::query_as::<_, OutgoingMail>(SQL)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(limit))
            .bind(MAX_ATTEMPTS)
            .fetch_all(pool)
            .await.map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn mark_sent(db: &Db, id: &str, now: Micros) -> Result<(), Error> {
    dispatch!(db, pool => {
        // The body may carry a secret link: a sent mail keeps none.
        sqlx::query("UPDATE mail_outbox SET sent_at = $2, attempts = attempts + 1, last_error = NULL, body = '' WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()).map_err(Error::from)
    })
}

/// Records a failed attempt; `retry_at` None gives up on the email.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn mark_failed(
    db: &Db,
    id: &str,
    error: &str,
    retry_at: Option<Micros>,
) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query(
            "UPDATE mail_outbox SET attempts = CASE WHEN $3 IS NULL THEN $4 ELSE attempts + 1 END, \
             next_attempt_at = COALESCE($3, next_attempt_at), last_error = $2, \
             body = CASE WHEN $3 IS NULL THEN '' ELSE body END WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(retry_at)
        .bind(MAX_ATTEMPTS)
        .execute(pool)
        .await
        .map(|_| ()).map_err(Error::from)
    })
}

/// Queues `draft` for `to` once per `dedupe_key`, while the meeting is still
/// scheduled at `start_at`; false when it was already queued (or is moot).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn enqueue_once(
    db: &Db,
    to: &str,
    draft: &Draft,
    dedupe_key: &str,
    start_at: Micros,
    now: Micros,
) -> Result<bool, Error> {
    let meeting_id = draft.meeting_id.clone().unwrap_or_default();
    let mut tx = db.begin().await?;
    let inserted = in_tx!(&mut tx, conn => {
        let still: Option<(i64,)> = sqlx::query_as(
            "SELECT start_at FROM meetings WHERE id = $1 AND status = 'scheduled' AND start_at = $2",
        )
        .bind(&meeting_id)
        .bind(start_at)
        .fetch_optional(&mut *conn)
        .await?;
        if still.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO mail_outbox (id, to_address, subject, body, next_attempt_at, created_at, dedupe_key) \
             VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(crate::domain::new_id())
        .bind(to)
        .bind(&draft.title)
        .bind(&draft.body)
        .bind(now)
        .bind(dedupe_key)
        .execute(conn)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    Ok(inserted == 1)
}
