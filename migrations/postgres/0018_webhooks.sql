-- Webhooks (DESIGN §12). An event is queued in the same transaction as its
-- cause: one webhook_events row with the exact body to send, and one
-- webhook_deliveries row per endpoint subscribed to its type (the outbox).
-- A delivery is claimed by setting lease_until, so of N nodes exactly one
-- attempts it at a time, and only the holder of the lease records the
-- outcome; each row is also the delivery log (attempts, last status, last
-- error). Kept identical to the
-- other engine's twin.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    -- Space-separated types; empty means every type.
    event_types TEXT NOT NULL DEFAULT '',
    secret      TEXT NOT NULL,
    created_by  TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE webhook_events (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    -- Set while one node attempts it.
    lease_until      BIGINT,
    -- Retries stop here (24 hours after queueing or a redelivery).
    deadline_at      BIGINT NOT NULL,
    last_status_code INTEGER,
    last_error       TEXT,
    last_attempt_at  BIGINT,
    delivered_at     BIGINT,
    created_at       BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
