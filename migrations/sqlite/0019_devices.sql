-- Device push (DESIGN §12). A device is one registration token of one
-- user's phone; a token is unique per platform (registering it again moves
-- it to whoever registered last). push_outbox is the outbox: a row per
-- push per device, written in the same transaction as the notification
-- that causes it, claimed with a lease like webhook deliveries, deleted
-- when sent or given up. Kept identical to the other engine's twin.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    platform     TEXT NOT NULL CHECK (platform IN ('fcm', 'apns')),
    token        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    UNIQUE (platform, token)
);
CREATE INDEX devices_user ON devices (user_id, refreshed_at);

CREATE TABLE push_outbox (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    meeting_id      TEXT,
    call_id         TEXT,
    urgent          BOOLEAN NOT NULL DEFAULT FALSE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    deadline_at     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX push_outbox_due ON push_outbox (next_attempt_at);
CREATE INDEX push_outbox_device ON push_outbox (device_id);
