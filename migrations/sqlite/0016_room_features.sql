-- Room features (DESIGN §10): a waiting room, a lock, and co-hosts, who
-- share the running of a meeting without owning it. Co-hosts are kept as
-- space-separated user ids on the meeting (at most 50), read with it in one
-- row. Kept identical to the PostgreSQL twin.
ALTER TABLE meetings ADD COLUMN waiting_room BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE meetings ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE meetings ADD COLUMN co_host_ids TEXT NOT NULL DEFAULT '';

-- Hosts hear when someone waits in the lobby: a new notification kind.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE notifications_next (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('meeting_invite', 'meeting_reminder', 'meeting_started',
                                             'meeting_cancelled', 'invite_response', 'incoming_call', 'general',
                                             'lobby_waiting')),
    title      TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '',
    meeting_id TEXT REFERENCES meetings (id) ON DELETE SET NULL,
    read_at    BIGINT,
    created_at BIGINT NOT NULL,
    dedupe_key TEXT UNIQUE
);
INSERT INTO notifications_next (id, user_id, kind, title, body, meeting_id, read_at, created_at, dedupe_key)
    SELECT id, user_id, kind, title, body, meeting_id, read_at, created_at, dedupe_key FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_next RENAME TO notifications;
CREATE INDEX notifications_user ON notifications (user_id, id);
CREATE INDEX notifications_user_unread ON notifications (user_id, read_at);
