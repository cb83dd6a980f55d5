-- Verified email addresses (DESIGN §7). Kept identical to the PostgreSQL twin.

-- Whether the account proved it receives mail at its address (a link we
-- sent, or a provider that vouches). Only verified accounts collect
-- invitations sent to their address.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
-- Admins are made by an operator on the command line; Google never signed
-- anyone in without a verified address.
UPDATE users SET email_verified = TRUE WHERE role = 'admin' OR auth_provider = 'google';

-- Whether the provider vouched for the address when the identity was
-- linked: an unverified identity loses its way in when a verified one
-- claims the address.
ALTER TABLE user_identities ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE user_identities SET email_verified = TRUE WHERE provider = 'google';

-- Invitations that bound to accounts which never proved the address go
-- back to waiting for the address; they bind again on verification.
UPDATE meeting_invites SET user_id = NULL
WHERE user_id IN (SELECT id FROM users WHERE NOT email_verified);

-- Outstanding verification links: single use, 24 hours, stored hashed.
-- email_key pins the address the link was sent to.
CREATE TABLE email_verifications (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email_key  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX email_verifications_user ON email_verifications (user_id, created_at);
CREATE INDEX email_verifications_expires ON email_verifications (expires_at);
