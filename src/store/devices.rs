//! The `devices` and `push_outbox` tables: phones that receive pushes, and
//! the pushes queued for them in the same transaction as their
//! notification ([`enqueue_for_user`]).

use sqlx::FromRow;

use super::{Db, Error, Tx, dispatch, in_tx};
use crate::domain::{
    new_id,
    notification::Draft,
    push::{Platform, Push},
    time::Micros,
};

/// Devices one user keeps; registering one more drops the oldest.
pub const MAX_PER_USER: i64 = 20;
/// A push not sent by then is dropped: a reminder later than this is no
/// reminder.
pub const PUSH_WINDOW: Micros = 10 * 60 * 1_000_000;
/// An incoming call rings for less than this (`UNIO_CALL_RING_TIMEOUT`,
/// 45 s by default); its push is also deleted when the call stops ringing.
pub const CALL_PUSH_WINDOW: Micros = 60 * 1_000_000;

#[derive(Debug, Clone, FromRow)]
pub struct DeviceRecord {
    pub id: String,
    pub user_id: String,
    pub platform: String,
    pub token: String,
    pub created_at: i64,
}

const COLUMNS: &str = "id, user_id, platform, token, created_at";

/// Registers (or refreshes, or takes over) `token` for `user_id`, keeping
/// the user's newest [`MAX_PER_USER`] devices.
pub async fn register(
    db: &Db,
    user_id: &str,
    platform: Platform,
    token: &str,
    now: Micros,
) -> Result<DeviceRecord, Error> {
    let mut tx = db.begin().await?;
    let device = in_tx!(&mut tx, conn => {
        // A token that changes hands starts over: nothing queued for its
        // previous owner reaches the new one.
        sqlx::query("DELETE FROM devices WHERE platform = $1 AND token = $2 AND user_id <> $3")
            .bind(platform.as_str())
            .bind(token)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        let device = sqlx::query_as::<_, DeviceRecord>(&format!(
            "INSERT INTO devices (id, user_id, platform, token, created_at, refreshed_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (platform, token) DO UPDATE SET user_id = excluded.user_id, refreshed_at = excluded.refreshed_at, \
               created_at = CASE WHEN devices.user_id = excluded.user_id THEN devices.created_at ELSE excluded.created_at END \
             RETURNING {COLUMNS}"
        ))
        .bind(new_id())
        .bind(user_id)
        .bind(platform.as_str())
        .bind(token)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "DELETE FROM devices WHERE user_id = $1 AND id NOT IN \
             (SELECT id FROM devices WHERE user_id = $1 ORDER BY refreshed_at DESC, id DESC LIMIT $2)",
        )
        .bind(user_id)
        .bind(MAX_PER_USER)
        .execute(conn)
        .await?;
        device
    });
    tx.commit().await?;
    Ok(device)
}

/// Removes the caller's device with `token`; false if they have none.
pub async fn unregister(db: &Db, user_id: &str, token: &str) -> Result<bool, Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM devices WHERE user_id = $1 AND token = $2")
            .bind(user_id)
            .bind(token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(Error::from)
    })
}

/// Forgets a device its platform called dead (with what was queued for it).
pub async fn remove(db: &Db, device_id: &str) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(device_id)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(Error::from)
    })
}

/// Inside `tx`: queues `draft` for each device of `user_id` (when it is a
/// draft that is pushed and the account is active).
pub(crate) async fn enqueue_for_user(
    tx: &mut Tx,
    user_id: &str,
    draft: &Draft,
    now: Micros,
) -> Result<(), Error> {
    if !draft.push {
        return Ok(());
    }
    let urgent = draft.kind == crate::domain::notification::NotificationKind::IncomingCall;
    let window = if urgent {
        CALL_PUSH_WINDOW
    } else {
        PUSH_WINDOW
    };
    in_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO push_outbox (id, device_id, kind, title, body, meeting_id, call_id, urgent, \
               next_attempt_at, deadline_at, created_at) \
             SELECT $1 || ':' || d.id, d.id, $3, $4, $5, $6, $7, $8, $9, $10, $9 FROM devices d \
             JOIN users u ON u.id = d.user_id WHERE d.user_id = $2 AND u.is_active",
        )
        .bind(new_id())
        .bind(user_id)
        .bind(draft.kind.as_str())
        .bind(&draft.title)
        .bind(&draft.body)
        .bind(draft.meeting_id.as_deref())
        .bind(draft.call_id.as_deref())
        .bind(urgent)
        .bind(now)
        .bind(now + window)
        .execute(conn)
        .await?;
    });
    Ok(())
}

/// A push claimed for one attempt, with its device.
#[derive(Debug, Clone, FromRow)]
pub struct DuePush {
    pub id: String,
    pub device_id: String,
    pub platform: String,
    pub token: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub meeting_id: Option<String>,
    pub call_id: Option<String>,
    pub urgent: bool,
    pub attempts: i32,
    pub deadline_at: i64,
    pub lease_until: i64,
}

impl DuePush {
    pub fn push(&self, now: Micros) -> Push {
        Push {
            kind: self.kind.clone(),
            title: self.title.clone(),
            body: self.body.clone(),
            meeting_id: self.meeting_id.clone(),
            call_id: self.call_id.clone(),
            urgent: self.urgent,
            ttl_seconds: ((self.deadline_at - now).max(0) / 1_000_000) as u64,
        }
    }
}

/// Claims up to `limit` due pushes to devices of `platforms` (those this
/// node has credentials for) with the lease `lease_until` (one conditional
/// UPDATE: of two nodes, one gets each). Pushes past their deadline are
/// deleted first: a ring that comes late is worse than none.
pub async fn claim_due(
    db: &Db,
    now: Micros,
    lease_until: Micros,
    limit: u32,
    platforms: &[Platform],
) -> Result<Vec<DuePush>, Error> {
    const DUE: &str =
        "next_attempt_at <= $1 AND deadline_at > $1 AND (lease_until IS NULL OR lease_until <= $1)";
    let names: Vec<String> = (0..platforms.len())
        .map(|i| format!("${}", i + 4))
        .collect();
    let claim = format!(
        "UPDATE push_outbox SET lease_until = $2 WHERE {DUE} AND id IN \
           (SELECT p.id FROM push_outbox p JOIN devices d ON d.id = p.device_id \
            WHERE p.{DUE_P} AND d.platform IN ({names}) ORDER BY p.urgent DESC, p.next_attempt_at LIMIT $3) \
         RETURNING id",
        DUE_P = "next_attempt_at <= $1 AND p.deadline_at > $1 AND (p.lease_until IS NULL OR p.lease_until <= $1)",
        names = names.join(", "),
    );
    const LOAD: &str = "SELECT p.id, p.device_id, d.platform, d.token, p.kind, p.title, p.body, p.meeting_id, \
         p.call_id, p.urgent, p.attempts, p.deadline_at, p.lease_until \
         FROM push_outbox p JOIN devices d ON d.id = p.device_id WHERE p.id = $1 AND p.lease_until = $2";
    if platforms.is_empty() {
        return Ok(Vec::new());
    }
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM push_outbox WHERE deadline_at <= $1")
            .bind(now)
            .execute(pool)
            .await?;
        let mut query = sqlx::query_as::<_, (String,)>(&claim)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(limit));
        for platform in platforms {
            query = query.bind(platform.as_str());
        }
        let claimed = query.fetch_all(pool).await?;
        let mut due = Vec::with_capacity(claimed.len());
        for (id,) in claimed {
            if let Some(p) = sqlx::query_as::<_, DuePush>(LOAD)
                .bind(&id)
                .bind(lease_until)
                .fetch_optional(pool)
                .await?
            {
                due.push(p);
            }
        }
        Ok(due)
    })
}

/// The push is done with (sent, or given up).
pub async fn finish(db: &Db, id: &str) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM push_outbox WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(Error::from)
    })
}

/// Tries the push again at `at`, if its lease is still `lease_until`.
pub async fn retry(db: &Db, id: &str, lease_until: Micros, at: Micros) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query(
            "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = $3, lease_until = NULL \
             WHERE id = $1 AND lease_until = $2",
        )
        .bind(id)
        .bind(lease_until)
        .bind(at)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(Error::from)
    })
}

/// Inside `tx`: a call stopped ringing; its pushes are no longer news.
pub(crate) async fn forget_call(tx: &mut Tx, call_id: &str) -> Result<(), Error> {
    in_tx!(tx, conn => {
        sqlx::query("DELETE FROM push_outbox WHERE call_id = $1")
            .bind(call_id)
            .execute(conn)
            .await?;
    });
    Ok(())
}

/// Pushes still queued (for tests and metrics).
pub async fn pending(db: &Db) -> Result<i64, Error> {
    dispatch!(db, pool => {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM push_outbox")
            .fetch_one(pool)
            .await?;
        Ok(n)
    })
}
