//! The `webhooks`, `webhook_events` and `webhook_deliveries` tables: the
//! endpoints, the outbox written with each cause ([`enqueue`]), and the
//! delivery log the sender claims from and writes to.

use sqlx::FromRow;

use super::{Db, Error, Tx, dispatch, in_tx};
use crate::domain::{
    new_id,
    time::Micros,
    webhook::{self, EventType},
};

/// Retries stop this long after an event was queued (or redelivered).
pub const RETRY_WINDOW: Micros = 24 * 3_600 * 1_000_000;

#[derive(Debug, Clone, FromRow)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// Space-separated; empty means every type.
    pub event_types: String,
    pub secret: String,
    pub created_at: i64,
}

impl WebhookRecord {
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.event_types.split_ascii_whitespace()
    }
}

const WEBHOOK_COLUMNS: &str = "id, url, event_types, secret, created_at";

/// A delivery with its event, as the log shows it.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub body: String,
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event_id, e.type AS event_type, d.status, d.attempts, \
     d.last_status_code, d.last_error, d.created_at, d.last_attempt_at, d.next_attempt_at, d.delivered_at, e.body";

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Debug, Clone, FromRow)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub url: String,
    pub secret: String,
    pub body: String,
    pub attempts: i32,
    pub deadline_at: i64,
    /// The lease this attempt holds; only it may record the outcome.
    pub lease_until: i64,
}

/// Inside `tx`: queues an event of `kind` for every endpoint subscribed to
/// it (nothing at all when none is). `data` is the body's `data`.
pub(crate) async fn enqueue(
    tx: &mut Tx,
    kind: EventType,
    data: serde_json::Value,
    now: Micros,
) -> Result<(), Error> {
    enqueue_all(tx, kind, vec![data], now).await
}

/// Inside `tx`: one event of `kind` per item of `data` (a batch of chat
/// messages, the attendances an end closes), the subscribers asked once
/// (and not at all for an empty batch).
pub(crate) async fn enqueue_all(
    tx: &mut Tx,
    kind: EventType,
    data: Vec<serde_json::Value>,
    now: Micros,
) -> Result<(), Error> {
    if data.is_empty() {
        return Ok(());
    }
    enqueue_built(tx, kind, || data, now).await
}

/// [`enqueue_all`] for a batch whose bodies cost something to build (every
/// chat message): `build` runs only when an endpoint is subscribed, which
/// most of the time none is.
pub(crate) async fn enqueue_built(
    tx: &mut Tx,
    kind: EventType,
    build: impl FnOnce() -> Vec<serde_json::Value>,
    now: Micros,
) -> Result<(), Error> {
    let to = subscribers(tx, kind).await?;
    if to.is_empty() {
        return Ok(());
    }
    for item in build() {
        enqueue_to(tx, &to, kind, item, now).await?;
    }
    Ok(())
}

/// Inside `tx`: the endpoints subscribed to `kind` (for a batch of events
/// of one kind, asked once). On PostgreSQL the rows are key-share locked,
/// so an endpoint deleted meanwhile waits for this transaction instead of
/// failing its delivery inserts (SQLite's writers are serial already).
async fn subscribers(tx: &mut Tx, kind: EventType) -> Result<Vec<String>, Error> {
    const SELECT: &str = "SELECT id FROM webhooks WHERE event_types = '' \
         OR ' ' || event_types || ' ' LIKE '% ' || $1 || ' %'";
    let found: Vec<(String,)> = match tx {
        Tx::Sqlite(tx) => {
            sqlx::query_as(SELECT)
                .bind(kind.as_str())
                .fetch_all(&mut **tx)
                .await?
        }
        Tx::Postgres(tx) => {
            sqlx::query_as(&format!("{SELECT} FOR KEY SHARE"))
                .bind(kind.as_str())
                .fetch_all(&mut **tx)
                .await?
        }
    };
    Ok(found.into_iter().map(|(id,)| id).collect())
}

/// Inside `tx`: queues an event of `kind` for the endpoints `to`.
async fn enqueue_to(
    tx: &mut Tx,
    to: &[String],
    kind: EventType,
    data: serde_json::Value,
    now: Micros,
) -> Result<(), Error> {
    if to.is_empty() {
        return Ok(());
    }
    let event_id = new_id();
    let body = webhook::body(kind, now, data);
    in_tx!(tx, conn => {
        sqlx::query("INSERT INTO webhook_events (id, type, body, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&event_id)
            .bind(kind.as_str())
            .bind(&body)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        for webhook_id in to {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, next_attempt_at, deadline_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $4)",
            )
            .bind(new_id())
            .bind(webhook_id)
            .bind(&event_id)
            .bind(now)
            .bind(now + RETRY_WINDOW)
            .execute(&mut *conn)
            .await?;
        }
    });
    Ok(())
}

/// Registers an endpoint, unless there are [`webhook::MAX_WEBHOOKS`]
/// already (`None`).
pub async fn create(
    db: &Db,
    record: &WebhookRecord,
    created_by: &str,
) -> Result<Option<WebhookRecord>, Error> {
    let mut tx = db.begin().await?;
    // Concurrent creations count one after another (SQLite's writers are
    // serial already; PostgreSQL's READ COMMITTED would let two both see 19).
    if let Tx::Postgres(tx) = &mut tx {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('unio.webhooks.create'))")
            .execute(&mut **tx)
            .await?;
    }
    let created = in_tx!(&mut tx, conn => {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM webhooks")
            .fetch_one(&mut *conn)
            .await?;
        if count >= webhook::MAX_WEBHOOKS {
            None
        } else {
            Some(
                sqlx::query_as::<_, WebhookRecord>(&format!(
                    "INSERT INTO webhooks (id, url, event_types, secret, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {WEBHOOK_COLUMNS}"
                ))
                .bind(&record.id)
                .bind(&record.url)
                .bind(&record.event_types)
                .bind(&record.secret)
                .bind(created_by)
                .bind(record.created_at)
                .fetch_one(conn)
                .await?,
            )
        }
    });
    tx.commit().await?;
    Ok(created)
}

/// Endpoints in id order after `after_id`.
pub async fn list(
    db: &Db,
    after_id: Option<&str>,
    limit: u32,
) -> Result<Vec<WebhookRecord>, Error> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2");
    dispatch!(db, pool => {
        sqlx::query_as::<_, WebhookRecord>(&sql)
            .bind(after_id.unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(Error::from)
    })
}

pub async fn find(db: &Db, id: &str) -> Result<Option<WebhookRecord>, Error> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
    dispatch!(db, pool => {
        sqlx::query_as::<_, WebhookRecord>(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(Error::from)
    })
}

/// Deletes an endpoint with its deliveries; false if there was none.
pub async fn delete(db: &Db, id: &str) -> Result<bool, Error> {
    dispatch!(db, pool => {
        sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(Error::from)
    })
}

/// Keyset position of the log: (created_at, id), newest first.
pub type LogCursor = (i64, String);

/// One endpoint's deliveries, newest first, before `cursor`.
pub async fn deliveries(
    db: &Db,
    webhook_id: &str,
    cursor: Option<&LogCursor>,
    limit: u32,
) -> Result<Vec<DeliveryRecord>, Error> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
         WHERE d.webhook_id = $1 AND (d.created_at < $2 OR (d.created_at = $2 AND d.id < $3)) \
         ORDER BY d.created_at DESC, d.id DESC LIMIT $4"
    );
    let (before_at, before_id) = cursor.cloned().unwrap_or((i64::MAX, String::new()));
    dispatch!(db, pool => {
        sqlx::query_as::<_, DeliveryRecord>(&sql)
            .bind(webhook_id)
            .bind(before_at)
            .bind(before_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(Error::from)
    })
}

pub async fn find_delivery(db: &Db, id: &str) -> Result<Option<DeliveryRecord>, Error> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id \
         WHERE d.id = $1"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, DeliveryRecord>(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(Error::from)
    })
}

/// What a redelivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    Queued,
    /// A node is attempting it right now.
    InFlight,
    Missing,
}

/// Queues a delivery again now, as if new: no attempts yet, a fresh retry
/// window. Not while a node holds it.
pub async fn redeliver(db: &Db, id: &str, now: Micros) -> Result<Redelivery, Error> {
    dispatch!(db, pool => {
        let queued = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, deadline_at = $3, \
               attempts = 0, delivered_at = NULL \
             WHERE id = $1 AND (lease_until IS NULL OR lease_until <= $2)",
        )
        .bind(id)
        .bind(now)
        .bind(now + RETRY_WINDOW)
        .execute(pool)
        .await?
        .rows_affected();
        if queued > 0 {
            return Ok(Redelivery::Queued);
        }
        let exists: Option<(String,)> =
            sqlx::query_as("SELECT id FROM webhook_deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        Ok(if exists.is_some() {
            Redelivery::InFlight
        } else {
            Redelivery::Missing
        })
    })
}

/// Claims up to `limit` due deliveries for one attempt each, at most
/// `per_endpoint` of one endpoint and none of the endpoints `skip` (those
/// this node is busy with): each gets the lease `lease_until`, so no other
/// sweep (on any node) takes it meanwhile. A single conditional UPDATE: of
/// two nodes racing, the second finds the rows leased.
pub async fn claim_due(
    db: &Db,
    now: Micros,
    lease_until: Micros,
    limit: u32,
    per_endpoint: u32,
    skip: &[String],
) -> Result<Vec<DueDelivery>, Error> {
    const DUE: &str = "status = 'pending' AND next_attempt_at <= $1 \
         AND (lease_until IS NULL OR lease_until <= $1)";
    let skipped = if skip.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = (0..skip.len()).map(|i| format!("${}", i + 5)).collect();
        format!("AND webhook_id NOT IN ({})", list.join(", "))
    };
    let claim = format!(
        "UPDATE webhook_deliveries SET lease_until = $2 WHERE {DUE} AND id IN (\
           SELECT id FROM (SELECT id, next_attempt_at, ROW_NUMBER() OVER \
               (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS n \
             FROM webhook_deliveries WHERE {DUE} {skipped}) ranked \
           WHERE n <= $4 ORDER BY next_attempt_at, id LIMIT $3) \
         RETURNING id"
    );
    const LOAD: &str = "SELECT d.id, d.webhook_id, d.event_id, w.url, w.secret, e.body, d.attempts, d.deadline_at, \
         d.lease_until FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         JOIN webhook_events e ON e.id = d.event_id WHERE d.id = $1 AND d.lease_until = $2";
    dispatch!(db, pool => {
        let mut query = sqlx::query_as::<_, (String,)>(&claim)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(limit))
            .bind(i64::from(per_endpoint));
        for webhook_id in skip {
            query = query.bind(webhook_id);
        }
        let claimed = query.fetch_all(pool).await?;
        let mut due = Vec::with_capacity(claimed.len());
        for (id,) in claimed {
            if let Some(d) = sqlx::query_as::<_, DueDelivery>(LOAD)
                .bind(&id)
                .bind(lease_until)
                .fetch_optional(pool)
                .await?
            {
                due.push(d);
            }
        }
        Ok(due)
    })
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Failed; retried at `retry_at`, or given up when `None`.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<Micros>,
    },
}

/// Records an attempt in the log, if the attempt still holds its lease
/// `lease_until` (a late writer whose lease ran out, or a redelivered row,
/// is left alone); true if recorded.
pub async fn record_attempt(
    db: &Db,
    id: &str,
    lease_until: Micros,
    attempt: &Attempt,
    now: Micros,
) -> Result<bool, Error> {
    let (status, code, error, next) = match attempt {
        Attempt::Delivered { status } => ("delivered", Some(i32::from(*status)), None, now),
        Attempt::Failed {
            status: code,
            error,
            retry_at,
        } => (
            if retry_at.is_some() {
                "pending"
            } else {
                "failed"
            },
            code.map(i32::from),
            Some(error.as_str()),
            retry_at.unwrap_or(now),
        ),
    };
    dispatch!(db, pool => {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, last_status_code = $3, \
               last_error = $4, last_attempt_at = $5, next_attempt_at = $6, \
               delivered_at = CASE WHEN $2 = 'delivered' THEN $5 ELSE delivered_at END, lease_until = NULL \
             WHERE id = $1 AND lease_until = $7",
        )
        .bind(id)
        .bind(status)
        .bind(code)
        .bind(error)
        .bind(now)
        .bind(next)
        .bind(lease_until)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() > 0)
        .map_err(Error::from)
    })
}

/// Forgets finished deliveries created before `before`, and events no
/// delivery needs any more; returns how many deliveries went.
pub async fn purge(db: &Db, before: Micros) -> Result<u64, Error> {
    dispatch!(db, pool => {
        let gone = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1",
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM webhook_events WHERE created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .bind(before)
        .execute(pool)
        .await?;
        Ok(gone)
    })
}
