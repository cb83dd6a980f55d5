-- Sign-in with Google and Microsoft. Kept identical to the SQLite twin.

-- Which provider account (issuer subject) belongs to which user.
CREATE TABLE user_identities (
    provider   TEXT NOT NULL CHECK (provider IN ('google', 'microsoft')),
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

-- Web sign-ins in progress: single use, 10 minutes. The state is stored
-- hashed; the PKCE verifier and nonce never leave the server.
CREATE TABLE oauth_states (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);
