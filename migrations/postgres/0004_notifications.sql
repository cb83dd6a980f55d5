-- The notification inbox. Kept identical to the SQLite twin.

CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('meeting_invite', 'meeting_reminder', 'meeting_started',
                                             'meeting_cancelled', 'invite_response', 'incoming_call', 'general')),
    title      TEXT NOT NULL,
    body       TEXT NOT NULL DEFAULT '',
    meeting_id TEXT REFERENCES meetings (id) ON DELETE SET NULL,
    read_at    BIGINT,
    created_at BIGINT NOT NULL,
    -- Makes a notification happen once, whichever node writes it first
    -- (reminders: one per meeting, user and start time).
    dedupe_key TEXT UNIQUE
);
CREATE INDEX notifications_user ON notifications (user_id, id);
CREATE INDEX notifications_user_unread ON notifications (user_id, read_at);
