-- Shared files and resumable uploads. Kept identical to the SQLite twin.

CREATE TABLE shared_files (
    id           TEXT PRIMARY KEY,
    meeting_id   TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    uploader_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    -- Server-generated name of the bytes in the blob store.
    blob_key     TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX shared_files_meeting ON shared_files (meeting_id, id);

-- Browser uploads in progress; discarded after expires_at.
CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    meeting_id      TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    uploader_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename        TEXT NOT NULL,
    declared_size   BIGINT,
    declared_sha256 TEXT NOT NULL DEFAULT '',
    received_bytes  BIGINT NOT NULL DEFAULT 0,
    temp_key        TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX uploads_expires ON uploads (expires_at);

-- A chat message that announces a shared file.
ALTER TABLE chat_messages ADD COLUMN file_id TEXT;
