-- Meeting chat. Kept identical to the PostgreSQL twin.

-- The last chat sequence of each meeting: incremented in the transaction
-- that stores a message, so sequences have no gaps.
ALTER TABLE meetings ADD COLUMN chat_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE chat_messages (
    id                  TEXT PRIMARY KEY,
    meeting_id          TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    sender_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sender_display_name TEXT NOT NULL,
    text                TEXT NOT NULL,
    sequence            BIGINT NOT NULL,
    client_message_id   TEXT,
    created_at          BIGINT NOT NULL,
    UNIQUE (meeting_id, sequence),
    UNIQUE (meeting_id, sender_id, client_message_id)
);
