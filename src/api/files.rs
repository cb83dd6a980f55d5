//! `unio.v1.FileService`: native streaming uploads, resumable browser
//! uploads, downloads, listing and deletion. Every upload, whichever way it
//! arrived, ends in [`store_received`]: check, sniff, commit, announce.

use std::{pin::Pin, time::Duration};

use tokio::io::AsyncReadExt;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::access;
use crate::realtime::live::Guarded;
use crate::{
    auth::{Caller, caller},
    blob::ingest::{self, Ingest, Received},
    domain::{
        PageSize,
        file::{parse_sha256, sanitize_filename, sniff},
        new_id, parse_id,
        time::{micros, now_micros, to_timestamp},
    },
    error::{AppError, Violations},
    proto::pb::{self, file_service_server::FileService, upload_file_request},
    state::AppState,
    store::{
        chat::{Appended, NewMessage},
        files::{self, FileRecord, UploadRecord},
        users,
    },
};

/// Largest chunk of a resumable upload.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
const DOWNLOAD_CHUNK_BYTES: usize = 64 * 1024;
const UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct FileApi {
    state: AppState,
}

/// How long a writer may hold an upload: far longer than writing one chunk
/// takes; a node that dies mid-write holds it no longer than this.
const WRITE_LEASE: Duration = Duration::from_secs(60);

/// The right to write one upload's bytes, leased in its row. Two chunks of
/// one upload must not write at once, wherever they arrive in a cluster:
/// the loser of the offset race could leave its bytes on disk.
struct WriteLease {
    db: crate::store::Db,
    id: String,
    until: i64,
    held: bool,
}

impl WriteLease {
    async fn take(db: &crate::store::Db, upload_id: &str) -> Result<Self, AppError> {
        let now = crate::domain::time::now_micros();
        let until = now + micros(WRITE_LEASE);
        if !files::lease_upload(db, upload_id, now, until).await? {
            return Err(AppError::FailedPrecondition {
                reason: "UPLOAD_BUSY",
                message: "another chunk of this upload is being written; retry it".into(),
            });
        }
        Ok(Self {
            db: db.clone(),
            id: upload_id.to_owned(),
            until,
            held: true,
        })
    }

    /// Gives the lease back before the reply, so the client's next chunk
    /// finds it free.
    async fn release(mut self) {
        self.held = false;
        if let Err(err) = files::release_upload(&self.db, &self.id, self.until).await {
            tracing::warn!(error = %err, "could not release an upload's write lease; it expires");
        }
    }

    /// The statement that stored the chunk gave the lease back.
    fn returned(mut self) {
        self.held = false;
    }
}

impl Drop for WriteLease {
    /// A call cancelled while holding the lease gives it back later.
    fn drop(&mut self) {
        if self.held {
            let (db, id, until) = (self.db.clone(), std::mem::take(&mut self.id), self.until);
            tokio::spawn(async move {
                let _ = files::release_upload(&db, &id, until).await;
            });
        }
    }
}

/// An upload's checked metadata.
struct Declared {
    meeting_id: String,
    filename: String,
    size: Option<i64>,
    sha256: Option<String>,
}

fn too_large(limit: u64) -> AppError {
    AppError::ResourceExhausted {
        reason: "FILE_TOO_LARGE",
        message: format!("files may be at most {limit} bytes"),
        retry_after: None,
    }
}

/// A disk that fails or is full is an outage, not a bug in the request.
fn blob_error(err: crate::blob::BlobError) -> AppError {
    match err {
        crate::blob::BlobError::Io(io) => {
            tracing::warn!(error = %io, "blob storage failed");
            AppError::Unavailable("file storage is unavailable; retry shortly".into())
        }
        other => AppError::internal_from("blob storage", other),
    }
}

fn quota_exceeded(quota: u64) -> AppError {
    AppError::ResourceExhausted {
        reason: "STORAGE_QUOTA_EXCEEDED",
        message: format!(
            "your files would pass your storage quota of {quota} bytes; delete some first"
        ),
        retry_after: None,
    }
}

fn too_many_uploads(max: usize) -> AppError {
    AppError::ResourceExhausted {
        reason: "TOO_MANY_UPLOADS",
        message: format!("at most {max} of your uploads may run at once; wait for one to finish"),
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}

fn offset_mismatch(expected: i64) -> AppError {
    AppError::FailedPrecondition {
        reason: "UPLOAD_OFFSET_MISMATCH",
        message: format!("expected a chunk at offset {expected}"),
    }
}

fn read_only() -> AppError {
    AppError::FailedPrecondition {
        reason: "MEETING_READ_ONLY",
        message: "the meeting is over; no more files".into(),
    }
}

impl FileApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Writes one chunk under the lease taken until `lease`, which the
    /// statement that records it gives back.
    async fn write_chunk(
        &self,
        caller: &Caller,
        upload_id: &str,
        r: &pb::UploadChunkRequest,
        received: i64,
        end: i64,
        lease: i64,
    ) -> Result<pb::Upload, AppError> {
        // Re-read under the lease: a chunk that finished meanwhile moved the offset.
        let upload = self.own_upload(caller, upload_id).await?;
        if upload.received_bytes != received {
            return Err(offset_mismatch(upload.received_bytes));
        }
        self.state
            .blobs
            .write_temp_at(&upload.temp_key, r.offset as u64, &r.data)
            .await
            .map_err(|e| match e {
                crate::blob::BlobError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
                    AppError::not_found("UPLOAD_NOT_FOUND", "the upload was completed or discarded")
                }
                other => blob_error(other),
            })?;
        if !files::advance_upload(&self.state.db, &upload.id, received, end, lease).await? {
            return Err(AppError::FailedPrecondition {
                reason: "UPLOAD_OFFSET_MISMATCH",
                message: "another chunk arrived first; ask again with the returned offset".into(),
            });
        }
        Ok(upload_pb(&upload, end))
    }

    /// Turns an upload into its file, under its write lease.
    async fn complete(&self, caller: &Caller, upload_id: &str) -> Result<pb::SharedFile, AppError> {
        // Re-read under the lease: a chunk may have landed since.
        let upload = self.own_upload(caller, upload_id).await?;
        // Only what was acknowledged counts, whatever a failed write left.
        let mut received = ingest::hash_temp(
            &self.state.blobs,
            &upload.temp_key,
            upload.received_bytes as u64,
        )
        .await
        .map_err(blob_error)?;
        // The bytes belong to the upload until its file is committed.
        received.guard.disarm();
        let declared = Declared {
            meeting_id: upload.meeting_id.clone(),
            filename: upload.filename.clone(),
            size: upload.declared_size,
            sha256: (!upload.declared_sha256.is_empty()).then(|| upload.declared_sha256.clone()),
        };
        // Membership and the meeting's state may have changed since it began.
        let loaded = access::member(&self.state.meeting_view, &declared.meeting_id, caller).await?;
        if loaded.access.status.is_over() {
            return Err(read_only());
        }
        self.store_received(caller, declared, received, Some(&upload))
            .await
    }

    fn limit(&self) -> u64 {
        self.state.config.limits.max_file_bytes
    }

    fn upload_slot(&self, caller: &Caller) -> Result<crate::limits::Slot, AppError> {
        let slots = &self.state.limits.uploads;
        slots
            .take(&caller.user_id)
            .ok_or_else(|| too_many_uploads(slots.max()))
    }

    /// Bytes the caller may still store, not counting `own` bytes already
    /// received by the upload being continued.
    async fn quota_left(&self, caller: &Caller, own: i64) -> Result<u64, AppError> {
        let (used, _) = files::usage(&self.state.db, &caller.user_id).await?;
        let used = (used - own).max(0) as u64;
        Ok(self
            .state
            .config
            .limits
            .storage_quota_bytes
            .saturating_sub(used))
    }

    /// Validates metadata and that the caller may upload into the meeting.
    async fn declared(
        &self,
        caller: &Caller,
        metadata: Option<pb::FileMetadata>,
    ) -> Result<Declared, AppError> {
        let Some(m) = metadata else {
            return Err(AppError::invalid(
                "metadata",
                "is required (and comes first)",
            ));
        };
        let mut v = Violations::new();
        let meeting_id = v.check("metadata.meeting_id", parse_id(&m.meeting_id));
        let sha256 = v.check("metadata.sha256", parse_sha256(&m.sha256));
        if let Some(size) = m.size_bytes {
            if size < 0 {
                v.add("metadata.size_bytes", "must not be negative");
            } else if size as u64 > self.limit() {
                return Err(too_large(self.limit()));
            }
        }
        let (Some(meeting_id), Some(sha256)) = (meeting_id, sha256) else {
            return Err(v.into_error());
        };
        v.finish()?;
        let loaded = access::member(&self.state.meeting_view, &meeting_id, caller).await?;
        if loaded.access.status.is_over() {
            return Err(read_only());
        }
        Ok(Declared {
            meeting_id,
            filename: sanitize_filename(&m.filename),
            size: m.size_bytes,
            sha256,
        })
    }

    /// Checks received bytes against the declaration and the allow-list,
    /// makes them permanent, records the file and announces it in the chat.
    async fn store_received(
        &self,
        caller: &Caller,
        declared: Declared,
        mut received: Received,
        upload: Option<&UploadRecord>,
    ) -> Result<pb::SharedFile, AppError> {
        let mut v = Violations::new();
        if declared
            .size
            .is_some_and(|size| size as u64 != received.size)
        {
            v.add(
                "metadata.size_bytes",
                format!(
                    "says {} bytes but {} arrived",
                    declared.size.unwrap_or(0),
                    received.size
                ),
            );
        }
        if declared
            .sha256
            .as_ref()
            .is_some_and(|sha| *sha != received.sha256)
        {
            v.add("metadata.sha256", "does not match the bytes that arrived");
        }
        let content_type = v.check(
            "content",
            sniff(&received.head, &declared.filename, received.is_text),
        );
        let Some(content_type) = content_type.filter(|_| v.is_empty()) else {
            if let Some(upload) = upload {
                // These bytes can never make a file: the upload goes too.
                files::take_upload(&self.state.db, &upload.id).await?;
                let _ = self.state.blobs.delete_temp(&upload.temp_key).await;
            }
            return Err(v.into_error());
        };
        let mut record = FileRecord {
            id: new_id(),
            meeting_id: declared.meeting_id.clone(),
            uploader_id: caller.user_id.clone(),
            filename: declared.filename.clone(),
            content_type: content_type.to_owned(),
            size_bytes: received.size as i64,
            sha256: received.sha256.clone(),
            blob_key: String::new(),
            created_at: now_micros(),
        };
        let stored = match upload {
            // A stream's bytes exist only for this call: move them in place.
            None => {
                record.blob_key = self
                    .state
                    .blobs
                    .commit_temp(&received.temp_key)
                    .await
                    .map_err(blob_error)?;
                received.guard.disarm();
                match files::insert(&self.state.db, &record).await {
                    Ok(stored) => stored,
                    Err(err) => {
                        let _ = self.state.blobs.delete(&record.blob_key).await;
                        return Err(err.into());
                    }
                }
            }
            // A resumable upload keeps its row and bytes until the file is
            // committed: a failure here leaves it whole, to complete again.
            Some(upload) => {
                record.blob_key = self
                    .state
                    .blobs
                    .link_temp(&upload.temp_key)
                    .await
                    .map_err(blob_error)?;
                match files::complete_upload(&self.state.db, &upload.id, &record).await {
                    Ok(Some(stored)) => {
                        let _ = self.state.blobs.delete_temp(&upload.temp_key).await;
                        stored
                    }
                    Ok(None) => {
                        let _ = self.state.blobs.delete(&record.blob_key).await;
                        return Err(AppError::not_found(
                            "UPLOAD_NOT_FOUND",
                            "the upload was already completed",
                        ));
                    }
                    Err(err) => {
                        let _ = self.state.blobs.delete(&record.blob_key).await;
                        return Err(err.into());
                    }
                }
            }
        };
        self.announce(caller, &stored).await;
        tracing::info!(file_id = %stored.id, size = stored.size_bytes, "file shared");
        Ok(crate::wire::shared_file(&stored))
    }

    /// "shared a file" in the meeting's chat, with the file attached.
    async fn announce(&self, caller: &Caller, file: &FileRecord) {
        let name = users::find_by_id(&self.state.db, &caller.user_id)
            .await
            .ok()
            .flatten()
            .map(|u| u.display_name)
            .unwrap_or_default();
        let message = NewMessage {
            id: new_id(),
            meeting_id: file.meeting_id.clone(),
            sender_id: caller.user_id.clone(),
            sender_display_name: name,
            text: format!("shared a file: {}", file.filename),
            client_message_id: Some(format!("file:{}", file.id)),
            file_id: Some(file.id.clone()),
        };
        match self.state.chat.append(message).await {
            Ok(Appended::Stored(_) | Appended::Existing(_)) => {}
            Ok(Appended::MeetingClosed) => {
                tracing::info!("file shared as the meeting ended; not announced")
            }
            Err(err) => tracing::warn!(error = %err, "could not announce a shared file"),
        }
    }

    /// A file in a meeting the caller is a member of, with that meeting.
    async fn readable_file(
        &self,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<(FileRecord, access::Loaded), AppError> {
        let id = super::id_field("file_id", raw_id)?;
        let file = files::find(&self.state.db, &id).await?.ok_or_else(|| {
            AppError::not_found("FILE_NOT_FOUND", format!("no file with id {id}"))
        })?;
        let loaded = access::member(&self.state.meeting_view, &file.meeting_id, caller).await?;
        Ok((file, loaded))
    }

    async fn own_upload(&self, caller: &Caller, raw_id: &str) -> Result<UploadRecord, AppError> {
        let id = super::id_field("upload_id", raw_id)?;
        let upload = files::find_upload(&self.state.db, &id)
            .await?
            .filter(|u| u.expires_at > now_micros())
            .ok_or_else(|| {
                AppError::not_found(
                    "UPLOAD_NOT_FOUND",
                    "no such upload (or it expired); create a new one",
                )
            })?;
        if upload.uploader_id != caller.user_id {
            return Err(AppError::permission_denied(
                "this upload belongs to someone else",
            ));
        }
        Ok(upload)
    }
}

fn upload_pb(upload: &UploadRecord, received: i64) -> pb::Upload {
    pb::Upload {
        upload_id: upload.id.clone(),
        received_bytes: received,
        expire_time: Some(to_timestamp(upload.expires_at)),
    }
}

type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<pb::DownloadFileResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FileService for FileApi {
    type DownloadFileStream = DownloadStream;

    #[tracing::instrument(skip_all)]
    async fn upload_file(
        &self,
        request: Request<Streaming<pb::UploadFileRequest>>,
    ) -> Result<Response<pb::SharedFile>, Status> {
        let caller = caller(&request)?;
        let _slot = self.upload_slot(&caller)?;
        let idle = self.state.config.limits.upload_idle_timeout;
        let mut stream = request.into_inner();
        let mut next = async || -> Result<Option<pb::UploadFileRequest>, Status> {
            match tokio::time::timeout(idle, stream.message()).await {
                Ok(message) => message,
                Err(_) => Err(AppError::FailedPrecondition {
                    reason: "UPLOAD_IDLE",
                    message: format!(
                        "nothing arrived for {} seconds; upload again",
                        idle.as_secs()
                    ),
                }
                .into()),
            }
        };
        let metadata = match next().await? {
            Some(pb::UploadFileRequest {
                data: Some(upload_file_request::Data::Metadata(m)),
            }) => Some(m),
            _ => None,
        };
        let declared = self.declared(&caller, metadata).await?;
        let quota_left = self.quota_left(&caller, 0).await?;
        if declared.size.is_some_and(|size| size as u64 > quota_left) {
            return Err(quota_exceeded(self.state.config.limits.storage_quota_bytes).into());
        }
        let limit = self.limit().min(quota_left);
        let mut ingest = Ingest::start(&self.state.blobs, limit)
            .await
            .map_err(blob_error)?;
        // Ends the upload as soon as the caller's access to the meeting goes.
        let mut access = access::guard(
            &self.state,
            &caller,
            access::Holds::Member {
                meeting_id: &declared.meeting_id,
                live: Some(read_only),
            },
        );
        // A broken stream returns early: the ingest's guard removes the bytes.
        loop {
            let message = tokio::select! {
                status = access.revoked() => return Err(status),
                message = next() => message?,
            };
            let Some(message) = message else { break };
            match message.data {
                Some(upload_file_request::Data::Chunk(bytes)) => {
                    if ingest.push(&bytes).await.map_err(blob_error)?.is_err() {
                        return Err(if limit < self.limit() {
                            quota_exceeded(self.state.config.limits.storage_quota_bytes)
                        } else {
                            too_large(self.limit())
                        }
                        .into());
                    }
                }
                _ => {
                    return Err(
                        AppError::invalid("data", "after the metadata, send only chunks").into(),
                    );
                }
            }
        }
        let received = ingest.finish().await.map_err(blob_error)?;
        // The end of the stream may have raced a change of access.
        access.recheck().await?;
        Ok(Response::new(
            self.store_received(&caller, declared, received, None)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn create_upload(
        &self,
        request: Request<pb::CreateUploadRequest>,
    ) -> Result<Response<pb::Upload>, Status> {
        let caller = caller(&request)?;
        let declared = self
            .declared(&caller, request.into_inner().metadata)
            .await?;
        let limits = &self.state.config.limits;
        let (used, open) = files::usage(&self.state.db, &caller.user_id).await?;
        if open >= limits.max_open_uploads_per_user {
            return Err(AppError::ResourceExhausted {
                reason: "TOO_MANY_OPEN_UPLOADS",
                message: format!(
                    "you have {open} unfinished uploads; complete them or let them expire first"
                ),
                retry_after: None,
            }
            .into());
        }
        if declared.size.is_some_and(|size| {
            size as u64
                > limits
                    .storage_quota_bytes
                    .saturating_sub(used.max(0) as u64)
        }) {
            return Err(quota_exceeded(limits.storage_quota_bytes).into());
        }
        let (temp_key, _file) = self.state.blobs.create_temp().await.map_err(blob_error)?;
        let now = now_micros();
        let upload = UploadRecord {
            id: new_id(),
            meeting_id: declared.meeting_id,
            uploader_id: caller.user_id.clone(),
            filename: declared.filename,
            declared_size: declared.size,
            declared_sha256: declared.sha256.unwrap_or_default(),
            received_bytes: 0,
            temp_key,
            expires_at: now + micros(UPLOAD_TTL),
        };
        if let Err(err) = files::create_upload(&self.state.db, &upload, now).await {
            let _ = self.state.blobs.delete_temp(&upload.temp_key).await;
            return Err(AppError::from(err).into());
        }
        Ok(Response::new(upload_pb(&upload, 0)))
    }

    #[tracing::instrument(skip_all, fields(upload_id = %request.get_ref().upload_id))]
    async fn upload_chunk(
        &self,
        request: Request<pb::UploadChunkRequest>,
    ) -> Result<Response<pb::Upload>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        if r.data.len() > MAX_CHUNK_BYTES {
            return Err(AppError::invalid(
                "data",
                format!("chunks may be at most {MAX_CHUNK_BYTES} bytes"),
            )
            .into());
        }
        if r.offset < 0 {
            return Err(AppError::invalid("offset", "must not be negative").into());
        }
        let upload = self.own_upload(&caller, &r.upload_id).await?;
        let received = upload.received_bytes;
        let Some(end) = r.offset.checked_add(r.data.len() as i64) else {
            return Err(AppError::invalid("offset", "is too large").into());
        };
        // A retry of a chunk already received: acknowledged, not rewritten.
        if end <= received && !(r.data.is_empty() && r.offset > received) {
            return Ok(Response::new(upload_pb(&upload, received)));
        }
        if r.offset != received {
            return Err(offset_mismatch(received).into());
        }
        if end as u64 > self.limit() {
            return Err(too_large(self.limit()).into());
        }
        let _slot = self.upload_slot(&caller)?;
        if end as u64 > self.quota_left(&caller, received).await? {
            return Err(quota_exceeded(self.state.config.limits.storage_quota_bytes).into());
        }
        let lease = WriteLease::take(&self.state.db, &upload.id).await?;
        let written = self
            .write_chunk(&caller, &upload.id, &r, received, end, lease.until)
            .await;
        match &written {
            Ok(_) => lease.returned(),
            Err(_) => lease.release().await,
        }
        Ok(Response::new(written?))
    }

    #[tracing::instrument(skip_all, fields(upload_id = %request.get_ref().upload_id))]
    async fn complete_upload(
        &self,
        request: Request<pb::CompleteUploadRequest>,
    ) -> Result<Response<pb::SharedFile>, Status> {
        let caller = caller(&request)?;
        let upload = self
            .own_upload(&caller, &request.get_ref().upload_id)
            .await?;
        let lease = WriteLease::take(&self.state.db, &upload.id).await?;
        let done = self.complete(&caller, &upload.id).await;
        // Gone with the row once the file is committed; given back if not.
        lease.release().await;
        Ok(Response::new(done?))
    }

    #[tracing::instrument(skip_all, fields(file_id = %request.get_ref().file_id))]
    async fn download_file(
        &self,
        request: Request<pb::DownloadFileRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let caller = caller(&request)?;
        let (file, _) = self
            .readable_file(&caller, &request.get_ref().file_id)
            .await?;
        let mut blob = self
            .state
            .blobs
            .open(&file.blob_key)
            .await
            .map_err(|e| match e {
                crate::blob::BlobError::Missing(_) => {
                    AppError::not_found("FILE_NOT_FOUND", "the file's bytes are gone")
                }
                other => blob_error(other),
            })?;
        let downloads = &self.state.limits.downloads;
        let slot = downloads
            .take(&caller.user_id)
            .ok_or_else(|| AppError::ResourceExhausted {
                reason: "TOO_MANY_DOWNLOADS",
                message: format!(
                    "at most {} of your downloads may run at once; wait for one to finish",
                    downloads.max()
                ),
                retry_after: Some(std::time::Duration::from_secs(1)),
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let metadata = crate::wire::shared_file(&file);
        tokio::spawn(async move {
            // Held while the bytes stream, freed when the task ends.
            let _slot = slot;
            let first = pb::DownloadFileResponse {
                data: Some(pb::download_file_response::Data::Metadata(metadata)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let mut chunk = vec![0u8; DOWNLOAD_CHUNK_BYTES];
                let mut filled = 0;
                // Fill whole chunks: a short read is not the end of the file.
                while filled < chunk.len() {
                    match blob.read(&mut chunk[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(err) => {
                            let _ = tx
                                .send(Err(AppError::internal_from("reading a file", err).into()))
                                .await;
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                chunk.truncate(filled);
                let message = pb::DownloadFileResponse {
                    data: Some(pb::download_file_response::Data::Chunk(chunk)),
                };
                // A failed send means the client left: stop reading.
                if tx.send(Ok(message)).await.is_err() || filled < DOWNLOAD_CHUNK_BYTES {
                    return;
                }
            }
        });
        let guard = access::guard(
            &self.state,
            &caller,
            access::Holds::Member {
                meeting_id: &file.meeting_id,
                live: None,
            },
        );
        Ok(Response::new(Box::pin(Guarded::new(
            ReceiverStream::new(rx),
            guard,
        ))))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let meeting_id = super::id_field("meeting_id", &r.meeting_id)?;
        let size = PageSize::parse(r.page_size)
            .map_err(|e| AppError::invalid("page_size", e.to_string()))?;
        access::member(&self.state.meeting_view, &meeting_id, &caller).await?;
        let page =
            self.state
                .page_tokens
                .page(format!("ListFiles|{meeting_id}"), &r.page_token, size)?;
        let rows = files::list(&self.state.db, &meeting_id, page.cursor(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |f| f.id.clone());
        Ok(Response::new(pb::ListFilesResponse {
            files: rows.iter().map(crate::wire::shared_file).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(file_id = %request.get_ref().file_id))]
    async fn delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let caller = caller(&request)?;
        let (file, loaded) = self
            .readable_file(&caller, &request.get_ref().file_id)
            .await?;
        if file.uploader_id != caller.user_id && !loaded.access.can_manage() && !caller.is_admin() {
            return Err(AppError::permission_denied(
                "only the uploader or the host may delete a file",
            )
            .into());
        }
        if let Some(deleted) = files::delete(&self.state.db, &file.id).await?
            && let Err(err) = self.state.blobs.delete(&deleted.blob_key).await
        {
            tracing::warn!(error = %err, "could not remove a deleted file's bytes");
        }
        Ok(Response::new(pb::DeleteFileResponse {}))
    }
}
