-- Room features (DESIGN §10): a waiting room, a lock, and co-hosts, who
-- share the running of a meeting without owning it. Co-hosts are kept as
-- space-separated user ids on the meeting (at most 50), read with it in one
-- row. Kept identical to the SQLite twin.
ALTER TABLE meetings ADD COLUMN waiting_room BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE meetings ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE meetings ADD COLUMN co_host_ids TEXT NOT NULL DEFAULT '';

-- Hosts hear when someone waits in the lobby: a new notification kind.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('meeting_invite',
    'meeting_reminder', 'meeting_started', 'meeting_cancelled', 'invite_response', 'incoming_call', 'general',
    'lobby_waiting'));
