-- Calls inside meetings. Kept identical to the PostgreSQL twin.

CREATE TABLE calls (
    id               TEXT PRIMARY KEY,
    meeting_id       TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    caller_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    callee_id        TEXT REFERENCES users (id) ON DELETE CASCADE,
    status           TEXT NOT NULL CHECK (status IN ('ringing', 'active', 'ended', 'declined', 'missed')),
    started_at       BIGINT NOT NULL,
    answered_at      BIGINT,
    ended_at         BIGINT,
    duration_seconds BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX calls_meeting ON calls (meeting_id, id);
-- The missed-call sweep looks for old ringing calls.
CREATE INDEX calls_status_started ON calls (status, started_at);
