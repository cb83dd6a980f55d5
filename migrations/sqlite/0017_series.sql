-- Recurring meetings (DESIGN §11). A series keeps its rule, its zone and
-- the values of its master event (what ExportCalendar writes as the VEVENT
-- with the RRULE); each occurrence is a meeting of its own that remembers
-- its series and its original start (RECURRENCE-ID), so a moved or renamed
-- occurrence exports as an override and a cancelled or deleted one as an
-- EXDATE. Kept identical to the other engine's twin.
CREATE TABLE meeting_series (
    id               TEXT PRIMARY KEY,
    host_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    recurrence       TEXT NOT NULL,
    time_zone        TEXT NOT NULL,
    start_at         BIGINT NOT NULL,
    title            TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    duration_minutes INTEGER NOT NULL,
    revision         INTEGER NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

ALTER TABLE meetings ADD COLUMN series_id TEXT REFERENCES meeting_series (id) ON DELETE CASCADE;
ALTER TABLE meetings ADD COLUMN occurrence_at BIGINT;
ALTER TABLE meetings ADD COLUMN recurrence TEXT NOT NULL DEFAULT '';
ALTER TABLE meetings ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
CREATE INDEX meetings_series ON meetings (series_id, occurrence_at);
