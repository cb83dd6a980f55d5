//! `shared_files` and `uploads`.

use sqlx::FromRow;

use super::{Db, Error, dispatch, in_tx, webhooks};
use crate::domain::{
    time::Micros,
    webhook::{EventType, rfc3339},
};

#[derive(Debug, Clone, FromRow)]
pub struct FileRecord {
    pub id: String,
    pub meeting_id: String,
    pub uploader_id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub blob_key: String,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, meeting_id, uploader_id, filename, content_type, size_bytes, sha256, blob_key, created_at";

/// The one INSERT of a file row, for `insert` and `complete_upload`.
fn insert_sql() -> String {
    format!(
        "INSERT INTO shared_files ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    )
}

/// The `data` of file.shared.
fn event_data(file: &FileRecord) -> serde_json::Value {
    serde_json::json!({
        "file": {
            "id": file.id,
            "meeting_id": file.meeting_id,
            "uploader_id": file.uploader_id,
            "filename": file.filename,
            "content_type": file.content_type,
            "size_bytes": file.size_bytes,
            "sha256": file.sha256,
            "time": rfc3339(file.created_at),
        }
    })
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn insert(db: &Db, file: &FileRecord) -> Result<FileRecord, Error> {
    let sql = insert_sql();
    let mut tx = db.begin().await?;
    let stored = in_tx!(&mut tx, conn => {
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(&file.id)
            .bind(&file.meeting_id)
            .bind(&file.uploader_id)
            .bind(&file.filename)
            .bind(&file.content_type)
            .bind(file.size_bytes)
            .bind(&file.sha256)
            .bind(&file.blob_key)
            .bind(file.created_at)
            .fetch_one(conn)
            .await?
    });
    webhooks::enqueue(
        &mut tx,
        EventType::FileShared,
        event_data(&stored),
        stored.created_at,
    )
    .await?;
    tx.commit().await?;
    Ok(stored)
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn find(db: &Db, id: &str) -> Result<Option<FileRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, FileRecord>(&format!("SELECT {COLUMNS} FROM shared_files WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// A meeting's files, newest first, before `before_id`.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn list(
    db: &Db,
    meeting_id: &str,
    before_id: Option<&str>,
    limit: u32,
) -> Result<Vec<FileRecord>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM shared_files WHERE meeting_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(meeting_id)
            .bind(before_id.unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await.map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn delete(db: &Db, id: &str) -> Result<Option<FileRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, FileRecord>(&format!("DELETE FROM shared_files WHERE id = $1 RETURNING {COLUMNS}"))
            .bind(id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Blob keys of a meeting's files and unfinished uploads (to remove from
/// disk when the meeting goes).
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn blob_keys_of_meeting(db: &Db, meeting_id: &str) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = dispatch!(db, pool => {
        sqlx::query_as(
            "SELECT blob_key FROM shared_files WHERE meeting_id = $1 \
             UNION ALL SELECT temp_key FROM uploads WHERE meeting_id = $1",
        )
        .bind(meeting_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(|(k,)| k).collect())
}

#[derive(Debug, Clone, FromRow)]
pub struct UploadRecord {
    pub id: String,
    pub meeting_id: String,
    pub uploader_id: String,
    pub filename: String,
    pub declared_size: Option<i64>,
    pub declared_sha256: String,
    pub received_bytes: i64,
    pub temp_key: String,
    pub expires_at: i64,
}

const UPLOAD_COLUMNS: &str = "id, meeting_id, uploader_id, filename, declared_size, declared_sha256, received_bytes, temp_key, expires_at";

#[tracing::instrument(level = "debug", skip_all)]
pub async fn create_upload(db: &Db, upload: &UploadRecord, now: Micros) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query(&format!(
            "INSERT INTO uploads ({UPLOAD_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&upload.id)
        .bind(&upload.meeting_id)
        .bind(&upload.uploader_id)
        .bind(&upload.filename)
        .bind(upload.declared_size)
        .bind(&upload.declared_sha256)
        .bind(upload.received_bytes)
        .bind(&upload.temp_key)
        .bind(upload.expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()).map_err(Error::from)
    })
}

/// What `user_id` stores: bytes of their files plus bytes received by
/// their unfinished uploads, and how many uploads are unfinished.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn usage(db: &Db, user_id: &str) -> Result<(i64, i64), Error> {
    dispatch!(db, pool => {
        let (files,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM shared_files WHERE uploader_id = $1",
        )
        .bind(user_id)
        .fetch_one(pool)
        .await?;
        let (received, open): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(received_bytes), 0) AS BIGINT), COUNT(*) FROM uploads WHERE uploader_id = $1",
        )
        .bind(user_id)
        .fetch_one(pool)
        .await?;
        Ok((files + received, open))
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn find_upload(db: &Db, id: &str) -> Result<Option<UploadRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, UploadRecord>(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Takes the right to write `id` until `until`, unless another writer
/// holds it (on any node); false then.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn lease_upload(db: &Db, id: &str, now: Micros, until: Micros) -> Result<bool, Error> {
    dispatch!(db, pool => {
        sqlx::query("UPDATE uploads SET writer_until = $3 WHERE id = $1 AND writer_until <= $2")
            .bind(id)
            .bind(now)
            .bind(until)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1).map_err(Error::from)
    })
}

/// Gives back the lease taken until `until` (a newer lease is left alone).
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn release_upload(db: &Db, id: &str, until: Micros) -> Result<(), Error> {
    dispatch!(db, pool => {
        sqlx::query("UPDATE uploads SET writer_until = 0 WHERE id = $1 AND writer_until = $2")
            .bind(id)
            .bind(until)
            .execute(pool)
            .await
            .map(|_| ()).map_err(Error::from)
    })
}

/// Moves `received_bytes` from `from` to `to` and gives back the lease
/// taken until `lease`, in one statement; false when another chunk got
/// there first.
#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn advance_upload(
    db: &Db,
    id: &str,
    from: i64,
    to: i64,
    lease: Micros,
) -> Result<bool, Error> {
    dispatch!(db, pool => {
        sqlx::query(
            "UPDATE uploads SET received_bytes = $3, writer_until = 0 \
             WHERE id = $1 AND received_bytes = $2 AND writer_until = $4",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(lease)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1).map_err(Error::from)
    })
}

/// Removes an upload row; returns it if it existed (only one caller wins).
/// Turns an upload into its file in one transaction: the upload row goes
/// and the file row comes, or neither. `None` when the upload was already
/// completed (or discarded) meanwhile.
#[tracing::instrument(level = "debug", skip_all, fields(upload_id = %upload_id))]
pub async fn complete_upload(
    db: &Db,
    upload_id: &str,
    file: &FileRecord,
) -> Result<Option<FileRecord>, Error> {
    let sql = insert_sql();
    let mut tx = db.begin().await?;
    let out = in_tx!(&mut tx, conn => {
        let taken: Option<(String,)> = sqlx::query_as("DELETE FROM uploads WHERE id = $1 RETURNING id")
            .bind(upload_id)
            .fetch_optional(&mut *conn)
            .await?;
        if taken.is_none() {
            return Ok(None);
        }
        let stored = sqlx::query_as::<_, FileRecord>(&sql)
            .bind(&file.id)
            .bind(&file.meeting_id)
            .bind(&file.uploader_id)
            .bind(&file.filename)
            .bind(&file.content_type)
            .bind(file.size_bytes)
            .bind(&file.sha256)
            .bind(&file.blob_key)
            .bind(file.created_at)
            .fetch_one(&mut *conn)
            .await?;
        Some(stored)
    });
    if let Some(stored) = &out {
        webhooks::enqueue(
            &mut tx,
            EventType::FileShared,
            event_data(stored),
            stored.created_at,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

#[tracing::instrument(level = "debug", skip_all, fields(id = %id))]
pub async fn take_upload(db: &Db, id: &str) -> Result<Option<UploadRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, UploadRecord>(&format!("DELETE FROM uploads WHERE id = $1 RETURNING {UPLOAD_COLUMNS}"))
            .bind(id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Removes uploads past their expiry and returns their temp keys.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn take_expired_uploads(db: &Db, now: Micros) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = dispatch!(db, pool => {
        sqlx::query_as("DELETE FROM uploads WHERE expires_at < $1 RETURNING temp_key")
            .bind(now)
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(|(k,)| k).collect())
}

/// Blob keys that go when a user goes: files they uploaded, files in
/// meetings they host, and their unfinished uploads.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn blob_keys_of_user(db: &Db, user_id: &str) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = dispatch!(db, pool => {
        sqlx::query_as(
            "SELECT blob_key FROM shared_files WHERE uploader_id = $1 \
               OR meeting_id IN (SELECT id FROM meetings WHERE host_id = $1) \
             UNION ALL SELECT temp_key FROM uploads WHERE uploader_id = $1 \
               OR meeting_id IN (SELECT id FROM meetings WHERE host_id = $1)",
        )
        .bind(user_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(|(k,)| k).collect())
}

/// Whether an unfinished upload still owns the temporary blob `temp_key`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn temp_in_use(db: &Db, temp_key: &str) -> Result<bool, Error> {
    let row: Option<(i64,)> = dispatch!(db, pool => {
        sqlx::query_as("SELECT 1 FROM uploads WHERE temp_key = $1")
            .bind(temp_key)
            .fetch_optional(pool)
            .await?
    });
    Ok(row.is_some())
}
