//! The `meetings` table, and the questions asked across meetings, invites
//! and attendance (a user's relation to a meeting, their lists, history).

use sqlx::FromRow;

use super::{
    Db, Error, dispatch, in_tx, invites, mail,
    notifications::{self, NotificationRecord},
    participants, webhooks,
};
use crate::domain::{
    meeting::{InviteStatus, JoinPolicy, MeetingStatus},
    notification::Draft,
    time::Micros,
    webhook::{EventType, rfc3339},
};

/// The webhook event of a move to `to`.
fn event_of(to: MeetingStatus) -> Option<EventType> {
    match to {
        MeetingStatus::Ongoing => Some(EventType::MeetingStarted),
        MeetingStatus::Completed => Some(EventType::MeetingEnded),
        MeetingStatus::Cancelled => Some(EventType::MeetingCancelled),
        MeetingStatus::Scheduled => None,
    }
}

/// The `data` of the meeting.* webhook events.
pub(super) fn event_data(m: &MeetingRecord) -> serde_json::Value {
    serde_json::json!({
        "meeting": {
            "id": m.id,
            "title": m.title,
            "host_id": m.host_id,
            "start_time": rfc3339(m.start_at),
            "duration_minutes": m.duration_minutes,
            "status": m.status,
            "join_policy": m.join_policy,
            "series_id": m.series_id,
            "actual_start_time": m.actual_start_at.map(rfc3339),
            "actual_end_time": m.actual_end_at.map(rfc3339),
        }
    })
}

#[derive(Debug, Clone, FromRow)]
pub struct MeetingRecord {
    pub id: String,
    pub host_id: String,
    pub title: String,
    pub description: String,
    pub start_at: i64,
    pub duration_minutes: i32,
    pub status: String,
    pub join_policy: String,
    pub actual_start_at: Option<i64>,
    pub actual_end_at: Option<i64>,
    pub revision: i32,
    pub created_at: i64,
    pub updated_at: i64,
    /// Joins wait for a host or co-host to admit them.
    pub waiting_room: bool,
    /// New joins other than hosts' and co-hosts' are refused.
    pub locked: bool,
    /// Space-separated user ids ([`MeetingRecord::co_hosts`]).
    pub co_host_ids: String,
    /// The series this is an occurrence of.
    pub series_id: Option<String>,
    /// An occurrence's start as the series' rule made it (its
    /// RECURRENCE-ID), whatever start it was moved to.
    pub occurrence_at: Option<i64>,
    /// The series' rule; empty for a single meeting.
    pub recurrence: String,
    /// IANA zone name.
    pub time_zone: String,
}

impl MeetingRecord {
    /// The co-hosts' user ids.
    pub fn co_hosts(&self) -> impl Iterator<Item = &str> {
        self.co_host_ids.split_ascii_whitespace()
    }

    pub fn is_co_host(&self, user_id: &str) -> bool {
        self.co_hosts().any(|id| id == user_id)
    }

    pub fn status(&self) -> MeetingStatus {
        MeetingStatus::from_db(&self.status).unwrap_or(MeetingStatus::Scheduled)
    }

    pub fn join_policy(&self) -> JoinPolicy {
        JoinPolicy::from_db(&self.join_policy).unwrap_or(JoinPolicy::InvitedOnly)
    }
}

const COLUMNS: &str = "m.id, m.host_id, m.title, m.description, m.start_at, m.duration_minutes, m.status, \
     m.join_policy, m.actual_start_at, m.actual_end_at, m.revision, m.created_at, m.updated_at, \
     m.waiting_room, m.locked, m.co_host_ids, m.series_id, m.occurrence_at, m.recurrence, m.time_zone";

/// The same columns unqualified, for RETURNING clauses.
const RETURNING: &str = "id, host_id, title, description, start_at, duration_minutes, status, \
     join_policy, actual_start_at, actual_end_at, revision, created_at, updated_at, waiting_room, locked, \
     co_host_ids, series_id, occurrence_at, recurrence, time_zone";

/// A meeting with one user's relation to it.
#[derive(Debug, Clone, FromRow)]
pub struct MeetingWithRelation {
    #[sqlx(flatten)]
    pub meeting: MeetingRecord,
    pub invite_status: Option<String>,
    pub attended: bool,
    /// The host removed this user from the meeting.
    pub removed: bool,
}

impl MeetingWithRelation {
    pub fn invite(&self) -> Option<InviteStatus> {
        self.invite_status
            .as_deref()
            .and_then(InviteStatus::from_db)
    }
}

#[derive(Debug)]
pub struct NewMeeting<'a> {
    pub id: &'a str,
    pub host_id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub start_at: Micros,
    pub duration_minutes: i32,
    pub join_policy: JoinPolicy,
    /// IANA zone name.
    pub time_zone: &'a str,
    pub now: Micros,
}

/// The occurrences of a new series, the first of which is the meeting.
#[derive(Debug)]
pub struct NewSeries<'a> {
    pub id: &'a str,
    pub recurrence: &'a str,
    /// (meeting id, start) of every occurrence, the first being
    /// `NewMeeting`'s own.
    pub occurrences: &'a [(String, Micros)],
}

/// Creates the meeting (or every occurrence of `series`, each a meeting of
/// its own) and its invites in one transaction, notifying each invitee who
/// has an account with `invite_draft` once: for the first occurrence.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn create(
    db: &Db,
    meeting: &NewMeeting<'_>,
    series: Option<&NewSeries<'_>>,
    invitees: &[invites::Invitee<'_>],
    invite_draft: &Draft,
) -> Result<
    (
        MeetingRecord,
        Vec<invites::InviteRecord>,
        Vec<NotificationRecord>,
    ),
    Error,
> {
    let insert = format!(
        "INSERT INTO meetings (id, host_id, title, description, start_at, duration_minutes, status, \
         join_policy, created_at, updated_at, series_id, occurrence_at, recurrence, time_zone) \
         VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $8, $9, $10, $11, $12) RETURNING {RETURNING}"
    );
    let single = [(meeting.id.to_owned(), meeting.start_at)];
    let occurrences = series.map_or(&single[..], |s| s.occurrences);
    let mut tx = db.begin().await?;
    if let Some(series) = series {
        in_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO meeting_series (id, host_id, recurrence, time_zone, start_at, title, description, \
                 duration_minutes, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(series.id)
            .bind(meeting.host_id)
            .bind(series.recurrence)
            .bind(meeting.time_zone)
            .bind(meeting.start_at)
            .bind(meeting.title)
            .bind(meeting.description)
            .bind(meeting.duration_minutes)
            .bind(meeting.now)
            .execute(conn)
            .await?;
        });
    }
    let mut first = None;
    for (id, start_at) in occurrences {
        let record = in_tx!(&mut tx, conn => {
            sqlx::query_as::<_, MeetingRecord>(&insert)
                .bind(id)
                .bind(meeting.host_id)
                .bind(meeting.title)
                .bind(meeting.description)
                .bind(start_at)
                .bind(meeting.duration_minutes)
                .bind(meeting.join_policy.as_str())
                .bind(meeting.now)
                .bind(series.map(|s| s.id))
                .bind(series.map(|_| *start_at))
                .bind(series.map_or("", |s| s.recurrence))
                .bind(meeting.time_zone)
                .fetch_one(conn)
                .await?
        });
        webhooks::enqueue(
            &mut tx,
            EventType::MeetingCreated,
            event_data(&record),
            meeting.now,
        )
        .await?;
        first.get_or_insert(record);
    }
    let record = first.ok_or(Error(sqlx::Error::RowNotFound))?;
    let (created, notices) = invites::invite_all(
        &mut tx,
        meeting.id,
        invitees,
        Some(invite_draft),
        meeting.now,
    )
    .await?;
    let others: Vec<&str> = occurrences[1..].iter().map(|(id, _)| id.as_str()).collect();
    invites::copy_to(&mut tx, &others, &created, meeting.now).await?;
    tx.commit().await?;
    Ok((record, created, notices))
}

/// The meeting and how `user_id` stands to it.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id, user_id = %user_id))]
pub async fn with_relation(
    db: &Db,
    meeting_id: &str,
    user_id: &str,
) -> Result<Option<MeetingWithRelation>, Error> {
    let sql = format!(
        "SELECT {COLUMNS}, \
           (SELECT i.status FROM meeting_invites i WHERE i.meeting_id = m.id AND i.user_id = $2 LIMIT 1) AS invite_status, \
           EXISTS (SELECT 1 FROM meeting_participants p WHERE p.meeting_id = m.id AND p.user_id = $2) AS attended, \
           EXISTS (SELECT 1 FROM meeting_removals r WHERE r.meeting_id = m.id AND r.user_id = $2) AS removed \
         FROM meetings m WHERE m.id = $1"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, MeetingWithRelation>(&sql)
            .bind(meeting_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Records that `by` removed `user_id` from the meeting (idempotent); a
/// removed co-host is a co-host no more, in the same transaction.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id, user_id = %user_id))]
pub async fn record_removal(
    db: &Db,
    meeting_id: &str,
    user_id: &str,
    by: &str,
    now: Micros,
) -> Result<(), Error> {
    let mut tx = db.begin().await?;
    in_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO meeting_removals (meeting_id, user_id, removed_by, removed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (meeting_id, user_id) DO NOTHING",
        )
        .bind(meeting_id)
        .bind(user_id)
        .bind(by)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE meetings SET co_host_ids = TRIM(REPLACE(' ' || co_host_ids || ' ', ' ' || $2 || ' ', ' ')), \
               updated_at = $3 \
             WHERE id = $1 AND ' ' || co_host_ids || ' ' LIKE '% ' || $2 || ' %'",
        )
        .bind(meeting_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    });
    tx.commit().await?;
    Ok(())
}

#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn find(db: &Db, meeting_id: &str) -> Result<Option<MeetingRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, MeetingRecord>(&format!("SELECT {COLUMNS} FROM meetings m WHERE m.id = $1"))
            .bind(meeting_id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// Changes to a meeting; `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct MeetingChanges<'a> {
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub start_at: Option<Micros>,
    pub duration_minutes: Option<i32>,
    pub join_policy: Option<JoinPolicy>,
    pub waiting_room: Option<bool>,
    pub locked: Option<bool>,
    /// Space-separated user ids.
    pub co_host_ids: Option<&'a str>,
}

impl MeetingChanges<'_> {
    /// Whether the schedule changes (what calendars see: the revision
    /// grows); the room's settings do not make a new revision.
    pub fn touches_schedule(&self) -> bool {
        self.title.is_some()
            || self.description.is_some()
            || self.start_at.is_some()
            || self.duration_minutes.is_some()
            || self.join_policy.is_some()
    }
}

/// Applies `changes` while the meeting is not over (`None` otherwise, or if
/// it does not exist). A new start time needs a meeting still scheduled.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn update(
    db: &Db,
    meeting_id: &str,
    changes: &MeetingChanges<'_>,
    now: Micros,
) -> Result<Option<MeetingRecord>, Error> {
    let mut updated = update_all(db, &[(meeting_id, changes.start_at)], changes, None, now).await?;
    Ok(updated.pop())
}

/// [`update`] for several occurrences of a series in one transaction: each
/// target gets `changes` with its own start (`changes.start_at` is not
/// used), and with `master` the series' own title, description and length
/// change too (the values its calendar event shows). Returns the meetings
/// changed; those over (or started, for a new start) are left alone.
#[tracing::instrument(level = "debug", skip_all, fields(meetings = targets.len()))]
pub async fn update_all(
    db: &Db,
    targets: &[(&str, Option<Micros>)],
    changes: &MeetingChanges<'_>,
    master: Option<&str>,
    now: Micros,
) -> Result<Vec<MeetingRecord>, Error> {
    let sql = format!(
        "UPDATE meetings SET title = COALESCE($2, title), description = COALESCE($3, description), \
           start_at = COALESCE($4, start_at), duration_minutes = COALESCE($5, duration_minutes), \
           join_policy = COALESCE($6, join_policy), waiting_room = COALESCE($8, waiting_room), \
           locked = COALESCE($9, locked), co_host_ids = COALESCE($10, co_host_ids), \
           revision = revision + $11, updated_at = $7 \
         WHERE id = $1 AND (status = 'scheduled' OR (status = 'ongoing' AND $4 IS NULL)) RETURNING {RETURNING}"
    );
    let mut tx = db.begin().await?;
    let mut updated = Vec::with_capacity(targets.len());
    for (meeting_id, start_at) in targets {
        let record = in_tx!(&mut tx, conn => {
            sqlx::query_as::<_, MeetingRecord>(&sql)
                .bind(meeting_id)
                .bind(changes.title)
                .bind(changes.description)
                .bind(start_at)
                .bind(changes.duration_minutes)
                .bind(changes.join_policy.map(JoinPolicy::as_str))
                .bind(now)
                .bind(changes.waiting_room)
                .bind(changes.locked)
                .bind(changes.co_host_ids)
                .bind(i32::from(changes.touches_schedule()))
                .fetch_optional(conn)
                .await?
        });
        if let Some(record) = &record {
            webhooks::enqueue(&mut tx, EventType::MeetingUpdated, event_data(record), now).await?;
        }
        updated.extend(record);
    }
    if let Some(series_id) = master {
        in_tx!(&mut tx, conn => {
            sqlx::query(
                "UPDATE meeting_series SET title = COALESCE($2, title), description = COALESCE($3, description), \
                   duration_minutes = COALESCE($4, duration_minutes), revision = revision + 1, updated_at = $5 \
                 WHERE id = $1",
            )
            .bind(series_id)
            .bind(changes.title)
            .bind(changes.description)
            .bind(changes.duration_minutes)
            .bind(now)
            .execute(conn)
            .await?;
        });
    }
    tx.commit().await?;
    Ok(updated)
}

/// A series: its rule and zone, and its master event's values.
#[derive(Debug, Clone, FromRow)]
pub struct SeriesRecord {
    pub id: String,
    pub host_id: String,
    pub recurrence: String,
    pub time_zone: String,
    /// The first occurrence's start (DTSTART).
    pub start_at: i64,
    pub title: String,
    pub description: String,
    pub duration_minutes: i32,
    pub revision: i32,
    pub created_at: i64,
    pub updated_at: i64,
}

#[tracing::instrument(level = "debug", skip_all, fields(series_id = %series_id))]
pub async fn find_series(db: &Db, series_id: &str) -> Result<Option<SeriesRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, SeriesRecord>(
            "SELECT id, host_id, recurrence, time_zone, start_at, title, description, duration_minutes, \
             revision, created_at, updated_at FROM meeting_series WHERE id = $1",
        )
        .bind(series_id)
        .fetch_optional(pool)
        .await
        .map_err(Error::from)
    })
}

/// The occurrences of a series that still exist, by original start; only
/// those from `from` (an original start) on, when given.
#[tracing::instrument(level = "debug", skip_all, fields(series_id = %series_id))]
pub async fn occurrences(
    db: &Db,
    series_id: &str,
    from: Option<Micros>,
) -> Result<Vec<MeetingRecord>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM meetings m WHERE m.series_id = $1 AND m.occurrence_at >= $2 \
         ORDER BY m.occurrence_at, m.id"
    );
    dispatch!(db, pool => {
        sqlx::query_as::<_, MeetingRecord>(&sql)
            .bind(series_id)
            .bind(from.unwrap_or(i64::MIN))
            .fetch_all(pool)
            .await
            .map_err(Error::from)
    })
}

/// Moves the meeting from `from` to `to` if it is still in `from`; `None`
/// when it is not (someone else changed it first). Ending a meeting closes
/// every open attendance, and `notify` goes to every invitee with an
/// account who did not decline, all in the same transaction.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn transition(
    db: &Db,
    meeting_id: &str,
    from: MeetingStatus,
    to: MeetingStatus,
    notify: Option<&Draft>,
    now: Micros,
) -> Result<Option<(MeetingRecord, Vec<NotificationRecord>)>, Error> {
    let (mut records, notices) = transition_all(db, &[meeting_id], from, to, notify, now).await?;
    Ok(records.pop().map(|record| (record, notices)))
}

/// [`transition`] for several meetings (occurrences of one series) in one
/// transaction: those still in `from` move, and each invitee hears of it
/// once, by `notify`. Returns the meetings that moved.
#[tracing::instrument(level = "debug", skip_all, fields(meetings = meeting_ids.len()))]
pub async fn transition_all(
    db: &Db,
    meeting_ids: &[&str],
    from: MeetingStatus,
    to: MeetingStatus,
    notify: Option<&Draft>,
    now: Micros,
) -> Result<(Vec<MeetingRecord>, Vec<NotificationRecord>), Error> {
    let sql = format!(
        "UPDATE meetings SET status = $3, \
           actual_start_at = CASE WHEN $3 = 'ongoing' THEN $4 ELSE actual_start_at END, \
           actual_end_at = CASE WHEN $3 = 'completed' THEN $4 ELSE actual_end_at END, \
           revision = revision + 1, updated_at = $4 \
         WHERE id = $1 AND status = $2 RETURNING {RETURNING}"
    );
    let mut tx = db.begin().await?;
    let mut records = Vec::new();
    let mut recipients: Vec<(Option<String>, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for meeting_id in meeting_ids {
        let found = in_tx!(&mut tx, conn => {
            let record = sqlx::query_as::<_, MeetingRecord>(&sql)
                .bind(meeting_id)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(record) = record else {
                continue;
            };
            let found: Vec<(Option<String>, String)> = if notify.is_some() {
                sqlx::query_as(
                    "SELECT i.user_id, i.email FROM meeting_invites i WHERE i.meeting_id = $1 AND i.status <> 'declined' \
                     AND NOT EXISTS (SELECT 1 FROM meeting_removals r WHERE r.meeting_id = i.meeting_id AND r.user_id = i.user_id)",
                )
                .bind(meeting_id)
                .fetch_all(conn)
                .await?
            } else {
                Vec::new()
            };
            records.push(record);
            found
        });
        if to.is_over() {
            participants::close_open_in(&mut tx, meeting_id, now).await?;
        }
        if let (Some(kind), Some(record)) = (event_of(to), records.last()) {
            webhooks::enqueue(&mut tx, kind, event_data(record), now).await?;
        }
        for recipient in found {
            if seen.insert(recipient.clone()) {
                recipients.push(recipient);
            }
        }
    }
    let mut notices = Vec::new();
    if let Some(draft) = notify {
        for (user_id, email) in recipients {
            match user_id {
                Some(user_id) => {
                    if let Some(notice) =
                        notifications::insert(&mut tx, &user_id, draft, now, None).await?
                    {
                        notices.push(notice);
                    }
                }
                None if draft.mail => mail::enqueue_draft(&mut tx, &email, draft, now).await?,
                None => {}
            }
        }
    }
    tx.commit().await?;
    Ok((records, notices))
}

/// Deletes every meeting a user hosts (with the user), returning them.
pub(super) fn delete_hosted_sql() -> String {
    format!("DELETE FROM meetings WHERE host_id = $1 RETURNING {RETURNING}")
}

/// Deletes the meeting with its invites and attendance.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn delete(db: &Db, meeting_id: &str) -> Result<bool, Error> {
    let mut tx = db.begin().await?;
    let gone = in_tx!(&mut tx, conn => {
        sqlx::query_as::<_, MeetingRecord>(&format!(
            "DELETE FROM meetings WHERE id = $1 RETURNING {RETURNING}"
        ))
        .bind(meeting_id)
        .fetch_optional(conn)
        .await?
    });
    let Some(record) = gone else {
        return Ok(false);
    };
    let now = crate::domain::time::now_micros();
    webhooks::enqueue(&mut tx, EventType::MeetingDeleted, event_data(&record), now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Which of a user's meetings to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Hosted,
    Invited,
    Any,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hosted => "hosted",
            Self::Invited => "invited",
            Self::Any => "any",
        }
    }
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub statuses: Vec<MeetingStatus>,
    pub start_after: Option<Micros>,
    pub start_before: Option<Micros>,
}

/// Keyset position: the last row's (start_at, id).
pub type Cursor = (i64, String);

/// The user's meetings by (start_at, id), after `cursor`.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn list_for_user(
    db: &Db,
    user_id: &str,
    scope: Scope,
    filter: &ListFilter,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<MeetingRecord>, Error> {
    let statuses = status_filter(&filter.statuses, 8);
    let sql = format!(
        "SELECT {COLUMNS} FROM meetings m \
         WHERE (($2 IN ('any', 'hosted') AND m.host_id = $1) \
             OR ($2 IN ('any', 'invited') AND EXISTS (SELECT 1 FROM meeting_invites i WHERE i.meeting_id = m.id AND i.user_id = $1)) \
             OR ($2 = 'any' AND EXISTS (SELECT 1 FROM meeting_participants p WHERE p.meeting_id = m.id AND p.user_id = $1))) \
           AND (m.host_id = $1 OR NOT EXISTS (SELECT 1 FROM meeting_removals r WHERE r.meeting_id = m.id AND r.user_id = $1)) \
           AND m.start_at >= $3 AND m.start_at < $4 \
           AND (m.start_at > $5 OR (m.start_at = $5 AND m.id > $6)) {statuses} \
         ORDER BY m.start_at, m.id LIMIT $7"
    );
    // No meeting starts at i64::MIN, so without a cursor the id is never compared.
    let (after_start, after_id) = cursor.cloned().unwrap_or((i64::MIN, String::new()));
    dispatch!(db, pool => {
        let mut query = sqlx::query_as::<_, MeetingRecord>(&sql)
            .bind(user_id)
            .bind(scope.as_str())
            .bind(filter.start_after.unwrap_or(i64::MIN))
            .bind(filter.start_before.unwrap_or(i64::MAX))
            .bind(after_start)
            .bind(after_id)
            .bind(i64::from(limit));
        for status in &filter.statuses {
            query = query.bind(status.as_str());
        }
        query.fetch_all(pool).await.map_err(Error::from)
    })
}

/// Completed and cancelled meetings the user hosted, was invited to or
/// attended, newest first, before `cursor`.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn history_for_user(
    db: &Db,
    user_id: &str,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<Vec<MeetingRecord>, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM meetings m \
         WHERE m.status IN ('completed', 'cancelled') \
           AND (m.host_id = $1 \
             OR EXISTS (SELECT 1 FROM meeting_invites i WHERE i.meeting_id = m.id AND i.user_id = $1) \
             OR EXISTS (SELECT 1 FROM meeting_participants p WHERE p.meeting_id = m.id AND p.user_id = $1)) \
           AND (m.host_id = $1 OR NOT EXISTS (SELECT 1 FROM meeting_removals r WHERE r.meeting_id = m.id AND r.user_id = $1)) \
           AND (m.start_at < $2 OR (m.start_at = $2 AND m.id < $3)) \
         ORDER BY m.start_at DESC, m.id DESC LIMIT $4"
    );
    // No meeting starts at i64::MAX, so without a cursor the id is never compared.
    let (before_start, before_id) = cursor.cloned().unwrap_or((i64::MAX, String::new()));
    dispatch!(db, pool => {
        sqlx::query_as::<_, MeetingRecord>(&sql)
            .bind(user_id)
            .bind(before_start)
            .bind(before_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await.map_err(Error::from)
    })
}

/// `AND m.status IN ($first, …)` for a non-empty filter.
fn status_filter(statuses: &[MeetingStatus], first: usize) -> String {
    if statuses.is_empty() {
        return String::new();
    }
    let placeholders: Vec<String> = (first..first + statuses.len())
        .map(|n| format!("${n}"))
        .collect();
    format!("AND m.status IN ({})", placeholders.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_number_their_placeholders() {
        assert_eq!(status_filter(&[], 8), "");
        assert_eq!(
            status_filter(&[MeetingStatus::Scheduled, MeetingStatus::Ongoing], 8),
            "AND m.status IN ($8, $9)"
        );
    }
}
