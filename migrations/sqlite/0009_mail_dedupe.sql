-- Emails that must go out once (reminders to invitees without an account).
-- Kept identical to the PostgreSQL twin.
ALTER TABLE mail_outbox ADD COLUMN dedupe_key TEXT;
CREATE UNIQUE INDEX mail_outbox_dedupe ON mail_outbox (dedupe_key);
