-- Hardening after review. Kept identical to the PostgreSQL twin.

-- Grows whenever the ways into an account change (a verified identity
-- claims it, an admin re-passwords it, the password changes): a session is
-- opened, or a password set, only if the epoch it was checked under holds.
ALTER TABLE users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;

-- Mail that anyone could make us send (verification links, invitations,
-- cancellations), counted per recipient address or per sender. Rows outlive
-- accounts and meetings, so deleting either does not reset a count.
CREATE TABLE send_ledger (
    ledger_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    amount     BIGINT NOT NULL
);
CREATE INDEX send_ledger_key ON send_ledger (ledger_key, created_at);

-- (email, client address) pairs that signed in successfully: the owner's
-- own places, exempt from the per-email throttle a guesser elsewhere can
-- trip.
CREATE TABLE login_known (
    email_key       TEXT NOT NULL,
    client_address  TEXT NOT NULL,
    last_success_at BIGINT NOT NULL,
    PRIMARY KEY (email_key, client_address)
);

-- Started OAuth sign-ins are capped per client address.
ALTER TABLE oauth_states ADD COLUMN client_key TEXT NOT NULL DEFAULT '';
CREATE INDEX oauth_states_client ON oauth_states (client_key);

-- What the per-user limits count.
CREATE INDEX calls_caller_started ON calls (caller_id, started_at);
CREATE INDEX calls_callee_status ON calls (callee_id, status);
CREATE INDEX shared_files_uploader ON shared_files (uploader_id);
CREATE INDEX uploads_uploader ON uploads (uploader_id);
