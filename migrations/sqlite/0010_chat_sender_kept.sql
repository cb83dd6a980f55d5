-- A deleted user's chat messages stay (anonymised) so meeting histories
-- keep their gap-free sequences: sender_id becomes NULL instead of the
-- message being deleted. SQLite cannot alter a foreign key: rebuild.
CREATE TABLE chat_messages_new (
    id                  TEXT PRIMARY KEY,
    meeting_id          TEXT NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    sender_id           TEXT REFERENCES users (id) ON DELETE SET NULL,
    sender_display_name TEXT NOT NULL,
    text                TEXT NOT NULL,
    sequence            BIGINT NOT NULL,
    client_message_id   TEXT,
    created_at          BIGINT NOT NULL,
    file_id             TEXT,
    UNIQUE (meeting_id, sequence),
    UNIQUE (meeting_id, sender_id, client_message_id)
);
INSERT INTO chat_messages_new (id, meeting_id, sender_id, sender_display_name, text, sequence,
                               client_message_id, created_at, file_id)
SELECT id, meeting_id, sender_id, sender_display_name, text, sequence, client_message_id,
       created_at, file_id
FROM chat_messages;
DROP TABLE chat_messages;
ALTER TABLE chat_messages_new RENAME TO chat_messages;
-- Finds a user's messages when the user goes.
CREATE INDEX chat_messages_sender ON chat_messages (sender_id);
