-- Meetings, invitations and attendance. Kept identical to the PostgreSQL twin.

CREATE TABLE meetings (
    id               TEXT PRIMARY KEY,
    host_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title            TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    start_at         BIGINT NOT NULL,
    duration_minutes INTEGER NOT NULL CHECK (duration_minutes BETWEEN 1 AND 1440),
    status           TEXT NOT NULL CHECK (status IN ('scheduled', 'ongoing', 'completed', 'cancelled')),
    join_policy      TEXT NOT NULL CHECK (join_policy IN ('invited_only', 'anyone_with_link')),
    actual_start_at  BIGINT,
    actual_end_at    BIGINT,
    -- iCalendar SEQUENCE: grows with every change to schedule or status.
    revision         INTEGER NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX meetings_host_start ON meetings (host_id, start_at, id);
CREATE INDEX meetings_status_start ON meetings (status, start_at, id);

-- One invite per (meeting, address). user_id is bound when an account with
-- that address exists, at invite time or at sign-up.
CREATE TABLE meeting_invites (
    id           TEXT PRIMARY KEY,
    meeting_id   TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    email_key    TEXT NOT NULL,
    user_id      TEXT REFERENCES users (id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'declined')),
    created_at   BIGINT NOT NULL,
    responded_at BIGINT,
    UNIQUE (meeting_id, email_key)
);
CREATE INDEX meeting_invites_user ON meeting_invites (user_id, meeting_id);
CREATE INDEX meeting_invites_email_key ON meeting_invites (email_key);

-- One row per join; left_at is set when the participant leaves or drops.
CREATE TABLE meeting_participants (
    id         TEXT PRIMARY KEY,
    meeting_id TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at  BIGINT NOT NULL,
    left_at    BIGINT
);
CREATE INDEX meeting_participants_meeting ON meeting_participants (meeting_id, id);
CREATE INDEX meeting_participants_user ON meeting_participants (user_id, meeting_id);
