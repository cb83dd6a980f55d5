-- Accounts, sessions (refresh-token families) and login throttling.
-- Times are microseconds since the Unix epoch (UTC); ids are UUID strings.
-- The SQLite twin of this file must stay column-for-column identical.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    email               TEXT NOT NULL,
    email_key           TEXT NOT NULL UNIQUE,
    display_name        TEXT NOT NULL,
    password_hash       TEXT,
    role                TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    auth_provider       TEXT NOT NULL CHECK (auth_provider IN ('password', 'google', 'microsoft')),
    is_active           BOOLEAN NOT NULL DEFAULT TRUE,
    avatar_key          TEXT,
    avatar_content_type TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

-- One row per sign-in: the family every rotated refresh token belongs to.
-- Access tokens carry the session id, so revoking a session revokes them too.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Refresh tokens are stored as SHA-256 hashes; used_at marks a rotated token,
-- whose reuse revokes the session.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Access tokens revoked before their expiry (Logout); rows past expires_at
-- are swept.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE login_failures (
    email_key TEXT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX login_failures_email_key ON login_failures (email_key, failed_at);
