-- A deleted user's chat messages stay (anonymised) so meeting histories
-- keep their gap-free sequences: sender_id becomes NULL instead of the
-- message being deleted.
ALTER TABLE chat_messages ALTER COLUMN sender_id DROP NOT NULL;
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey;
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey
    FOREIGN KEY (sender_id) REFERENCES users (id) ON DELETE SET NULL;
-- Finds a user's messages when the user goes.
CREATE INDEX chat_messages_sender ON chat_messages (sender_id);
