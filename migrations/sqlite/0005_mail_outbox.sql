-- Email waiting to be sent (invitations, cancellations, reminders). Kept
-- identical to the PostgreSQL twin.

CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY,
    to_address      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Also the lease: a sender pushes it forward while it works on the row.
    next_attempt_at BIGINT NOT NULL,
    sent_at         BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX mail_outbox_due ON mail_outbox (sent_at, next_attempt_at);
