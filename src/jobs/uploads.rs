//! Discards browser uploads not completed within their 24 hours: the row
//! and the partial bytes. Each row is deleted by exactly one sweeper, which
//! then removes its bytes.

use std::time::Duration;

use crate::{
    blob::BlobStore,
    domain::time::now_micros,
    store::{Db, files},
};

const SWEEP: Duration = Duration::from_secs(600);

/// Temporary bytes no upload owns (a crash mid-upload) go after this long.
const ORPHAN_AGE: Duration = Duration::from_secs(25 * 3600);

/// One sweep; returns how many uploads (and orphaned temporary blobs) were
/// discarded.
pub async fn sweep_once(db: &Db, blobs: &BlobStore) -> Result<usize, crate::store::Error> {
    let expired = files::take_expired_uploads(db, now_micros()).await?;
    for key in &expired {
        if let Err(err) = blobs.delete_temp(key).await {
            tracing::warn!(error = %err, "could not remove an expired upload's bytes");
        }
    }
    let mut orphans = 0;
    for key in blobs.temp_keys_older_than(ORPHAN_AGE).await {
        if !files::temp_in_use(db, &key).await? && blobs.delete_temp(&key).await.is_ok() {
            orphans += 1;
        }
    }
    Ok(expired.len() + orphans)
}

/// Runs until the task is aborted.
pub async fn run(db: Db, blobs: BlobStore) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tick.tick().await;
        match sweep_once(&db, &blobs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(discarded = n, "expired uploads discarded"),
            Err(err) => tracing::warn!(error = %err, "upload sweep failed"),
        }
    }
}
