-- Users a host removed from a meeting (DESIGN §8): recorded, so the
-- removal outlives the room and a restart. Kept identical to the PostgreSQL twin.
CREATE TABLE meeting_removals (
    meeting_id TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    removed_by TEXT,
    removed_at BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, user_id)
);
CREATE INDEX meeting_removals_user ON meeting_removals (user_id);
