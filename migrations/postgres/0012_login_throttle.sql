-- Login throttling per (email, client address), per client address and per
-- email, with growing delays instead of a lockout the owner cannot pass.
-- One row per key, changed by single-row updates, so concurrent attempts
-- count each other on both engines. Kept identical to the SQLite twin.
DROP TABLE login_failures;

CREATE TABLE login_throttle (
    throttle_key   TEXT PRIMARY KEY,
    failures       BIGINT NOT NULL DEFAULT 0,
    last_failed_at BIGINT NOT NULL DEFAULT 0,
    -- No attempt for this key is checked before this time.
    blocked_until  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX login_throttle_last_failed ON login_throttle (last_failed_at);
