//! The `meeting_invites` table.

use sqlx::FromRow;

use super::{
    Db, Error, Tx, dispatch, in_tx, mail,
    notifications::{self, NotificationRecord},
};
use crate::domain::{meeting::InviteStatus, notification::Draft, time::Micros};

#[derive(Debug, Clone, FromRow)]
pub struct InviteRecord {
    pub id: String,
    pub meeting_id: String,
    pub email: String,
    /// The address as compared (one invite per key and meeting).
    pub email_key: String,
    pub user_id: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub responded_at: Option<i64>,
}

impl InviteRecord {
    pub fn status(&self) -> InviteStatus {
        InviteStatus::from_db(&self.status).unwrap_or(InviteStatus::Pending)
    }
}

/// One address to invite.
#[derive(Debug)]
pub struct Invitee<'a> {
    /// Used only if the address is not invited yet.
    pub id: &'a str,
    pub email: &'a str,
    pub email_key: &'a str,
}

const COLUMNS: &str = "id, meeting_id, email, email_key, user_id, status, created_at, responded_at";

/// Inserts an invite unless the address is already invited; binds it to the
/// account with that address if there is one and it has proved the address
/// (DESIGN §7; otherwise the invite waits, as for an address without an
/// account). RETURNING answers only for a new invite.
const INSERT_IGNORING_EXISTING: &str = "INSERT INTO meeting_invites \
     (id, meeting_id, email, email_key, user_id, status, created_at) \
     VALUES ($1, $2, $3, $4, \
       (SELECT u.id FROM users u WHERE u.email_key = $4 AND u.email_verified), 'pending', $5) \
     ON CONFLICT (meeting_id, email_key) DO NOTHING RETURNING user_id";
/// Gives an account the invites waiting for its address; only an account
/// that has proved the address collects them, whoever calls this.
const BIND_TO_NEW_USER: &str = "UPDATE meeting_invites SET user_id = $1 \
     WHERE email_key = $2 AND user_id IS NULL \
       AND EXISTS (SELECT 1 FROM users u WHERE u.id = $1 AND u.email_key = $2 AND u.email_verified) \
     RETURNING meeting_id";

/// Inside `tx`: invites `invitees` (idempotently) to `meeting_id`,
/// notifying each newly invited account with `draft`, and mailing `draft`
/// to a new address without an account (the email is the only way to tell
/// them); without a draft, silently. Returns every invite in the order
/// given, and the notifications.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub(crate) async fn invite_all(
    tx: &mut Tx,
    meeting_id: &str,
    invitees: &[Invitee<'_>],
    draft: Option<&Draft>,
    now: Micros,
) -> Result<(Vec<InviteRecord>, Vec<NotificationRecord>), Error> {
    let select =
        format!("SELECT {COLUMNS} FROM meeting_invites WHERE meeting_id = $1 AND email_key = $2");
    let mut invites = Vec::with_capacity(invitees.len());
    let mut notices = Vec::new();
    for invitee in invitees {
        let new: Option<(Option<String>,)> = in_tx!(tx, conn => {
            sqlx::query_as(INSERT_IGNORING_EXISTING)
                .bind(invitee.id)
                .bind(meeting_id)
                .bind(invitee.email)
                .bind(invitee.email_key)
                .bind(now)
                .fetch_optional(conn)
                .await?
        });
        match (new, draft) {
            (Some((Some(user_id),)), Some(draft)) => {
                if let Some(notice) = notifications::insert(tx, &user_id, draft, now, None).await? {
                    notices.push(notice);
                }
            }
            (Some((None,)), Some(draft)) if draft.mail => {
                mail::enqueue_draft(tx, invitee.email, draft, now).await?;
            }
            _ => {}
        }
        invites.push(in_tx!(tx, conn => {
            sqlx::query_as::<_, InviteRecord>(&select)
                .bind(meeting_id)
                .bind(invitee.email_key)
                .fetch_one(conn)
                .await?
        }));
    }
    Ok((invites, notices))
}

/// Inside `tx`: the same invitations (address, account, answer) to each of
/// `meeting_ids` (the other occurrences of a series), silently; addresses
/// already invited there keep their invite. One statement per 64
/// invitations per meeting.
pub(crate) async fn copy_to(
    tx: &mut Tx,
    meeting_ids: &[&str],
    invites: &[InviteRecord],
    now: Micros,
) -> Result<(), Error> {
    // 7 parameters a row, 64 rows a statement: SQLite finds each `$n` by
    // a linear scan of the statement's parameters, so hundreds of rows cost
    // quadratic time, while PostgreSQL pays a round trip per statement (a
    // 200 × 200 series: 1.9 s with 200 rows, 1.6 s with 64 on SQLite).
    const PER_STATEMENT: usize = 64;
    for meeting_id in meeting_ids {
        for chunk in invites.chunks(PER_STATEMENT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = i * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO meeting_invites (id, meeting_id, email, email_key, user_id, status, created_at) \
                 VALUES {} ON CONFLICT (meeting_id, email_key) DO NOTHING",
                rows.join(", ")
            );
            in_tx!(tx, conn => {
                let mut query = sqlx::query(&sql);
                for invite in chunk {
                    query = query
                        .bind(crate::domain::new_id())
                        .bind(*meeting_id)
                        .bind(&invite.email)
                        .bind(&invite.email_key)
                        .bind(&invite.user_id)
                        .bind(&invite.status)
                        .bind(now);
                }
                query.execute(conn).await?;
            });
        }
    }
    Ok(())
}

/// Inside `tx`: gives the account `user_id` the invites waiting for
/// `email_key` (only if it proved that address) and notifies it of each
/// live meeting among them.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub(crate) async fn bind_waiting(
    tx: &mut Tx,
    user_id: &str,
    email_key: &str,
    now: Micros,
) -> Result<Vec<NotificationRecord>, Error> {
    let bound: Vec<(String,)> = in_tx!(tx, conn => {
        sqlx::query_as(BIND_TO_NEW_USER)
            .bind(user_id)
            .bind(email_key)
            .fetch_all(conn)
            .await?
    });
    let mut notices = Vec::new();
    let mut series_told = std::collections::HashSet::new();
    for (meeting_id,) in bound {
        let meeting: Option<(String, String, Option<String>)> = in_tx!(tx, conn => {
            sqlx::query_as(
                "SELECT m.title, u.display_name, m.series_id FROM meetings m JOIN users u ON u.id = m.host_id \
                 WHERE m.id = $1 AND m.status IN ('scheduled', 'ongoing')",
            )
            .bind(&meeting_id)
            .fetch_optional(conn)
            .await?
        });
        if let Some((title, host, series_id)) = meeting {
            // A series' invitations are one invitation.
            if let Some(series_id) = series_id
                && !series_told.insert(series_id)
            {
                continue;
            }
            let draft = Draft::invite(&meeting_id, &title, &host);
            if let Some(notice) = notifications::insert(tx, user_id, &draft, now, None).await? {
                notices.push(notice);
            }
        }
    }
    Ok(notices)
}

/// Binds invites waiting for `email_key` to a verified account (run at
/// login, for an invite that raced the verification) and notifies it.
#[tracing::instrument(level = "debug", skip_all, fields(user_id = %user_id))]
pub async fn bind_to_user(
    db: &Db,
    user_id: &str,
    email_key: &str,
    now: Micros,
) -> Result<Vec<NotificationRecord>, Error> {
    let mut tx = db.begin().await?;
    let notices = bind_waiting(&mut tx, user_id, email_key, now).await?;
    tx.commit().await?;
    Ok(notices)
}

/// Invites each address (idempotently) to `meeting_id`, notifying newly
/// invited accounts with `draft`, and to the meetings `also` (the other
/// occurrences of its series) silently; returns every invite of
/// `meeting_id` in the order given.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn invite(
    db: &Db,
    meeting_id: &str,
    also: &[&str],
    invitees: &[Invitee<'_>],
    draft: &Draft,
    now: Micros,
) -> Result<(Vec<InviteRecord>, Vec<NotificationRecord>), Error> {
    let mut tx = db.begin().await?;
    let result = invite_all(&mut tx, meeting_id, invitees, Some(draft), now).await?;
    copy_to(&mut tx, also, &result.0, now).await?;
    tx.commit().await?;
    Ok(result)
}

/// Invitations `meeting_id` holds (zero for a new meeting).
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn count_in_meeting(db: &Db, meeting_id: &str) -> Result<i64, Error> {
    dispatch!(db, pool => {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM meeting_invites WHERE meeting_id = $1")
                .bind(meeting_id)
                .fetch_one(pool)
                .await?;
        Ok(count)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(invite_id = %invite_id))]
pub async fn find(db: &Db, invite_id: &str) -> Result<Option<InviteRecord>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, InviteRecord>(&format!("SELECT {COLUMNS} FROM meeting_invites WHERE id = $1"))
            .bind(invite_id)
            .fetch_optional(pool)
            .await.map_err(Error::from)
    })
}

/// An answer recorded: the invite, the host's notification, and the other
/// occurrences of a series the answer also went to.
pub type Answered = (InviteRecord, Option<NotificationRecord>, Vec<String>);

/// Records the invitee's answer while the meeting is not over, and tells
/// the host with `draft` in the same transaction; `None` when the invite is
/// not `user_id`'s or the meeting is over. An invitation to a series is
/// one invitation: the answer goes to the invitee's invites of every
/// occurrence not over, whose ids come back third.
#[tracing::instrument(level = "debug", skip_all, fields(invite_id = %invite_id, user_id = %user_id))]
pub async fn respond(
    db: &Db,
    invite_id: &str,
    user_id: &str,
    status: InviteStatus,
    draft: &Draft,
    now: Micros,
) -> Result<Option<Answered>, Error> {
    let sql = format!(
        "UPDATE meeting_invites SET status = $3, responded_at = $4 \
         WHERE id = $1 AND user_id = $2 AND status <> $3 AND EXISTS (SELECT 1 FROM meetings m \
           WHERE m.id = meeting_invites.meeting_id AND m.status IN ('scheduled', 'ongoing')) \
         RETURNING {COLUMNS}"
    );
    // The same answer again changes nothing and tells the host nothing.
    let unchanged_sql = format!(
        "SELECT {COLUMNS} FROM meeting_invites WHERE id = $1 AND user_id = $2 AND status = $3 \
         AND EXISTS (SELECT 1 FROM meetings m WHERE m.id = meeting_invites.meeting_id \
           AND m.status IN ('scheduled', 'ongoing'))"
    );
    let mut tx = db.begin().await?;
    let (invite, host_id, siblings) = in_tx!(&mut tx, conn => {
        let updated = sqlx::query_as::<_, InviteRecord>(&sql)
            .bind(invite_id)
            .bind(user_id)
            .bind(status.as_str())
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(invite) = updated else {
            let unchanged = sqlx::query_as::<_, InviteRecord>(&unchanged_sql)
                .bind(invite_id)
                .bind(user_id)
                .bind(status.as_str())
                .fetch_optional(conn)
                .await?;
            return Ok(unchanged.map(|invite| (invite, None, Vec::new())));
        };
        let (host_id,): (String,) = sqlx::query_as("SELECT host_id FROM meetings WHERE id = $1")
            .bind(&invite.meeting_id)
            .fetch_one(&mut *conn)
            .await?;
        let siblings: Vec<(String,)> = sqlx::query_as(
            "UPDATE meeting_invites SET status = $3, responded_at = $4 \
             WHERE user_id = $2 AND status <> $3 AND meeting_id IN (SELECT s.id FROM meetings s \
               JOIN meetings t ON t.series_id = s.series_id \
               WHERE t.id = $1 AND s.id <> t.id AND s.status IN ('scheduled', 'ongoing')) \
             RETURNING meeting_id",
        )
        .bind(&invite.meeting_id)
        .bind(user_id)
        .bind(status.as_str())
        .bind(now)
        .fetch_all(conn)
        .await?;
        (invite, host_id, siblings.into_iter().map(|(id,)| id).collect::<Vec<_>>())
    });
    let notice = notifications::insert(&mut tx, &host_id, draft, now, None).await?;
    let data = serde_json::json!({
        "invite": {
            "id": invite.id,
            "meeting_id": invite.meeting_id,
            "user_id": invite.user_id,
            "email": invite.email,
            "status": invite.status,
            "also_meeting_ids": siblings,
        }
    });
    super::webhooks::enqueue(
        &mut tx,
        crate::domain::webhook::EventType::InviteResponded,
        data,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Some((invite, notice, siblings)))
}

/// Whose invites to list.
#[derive(Debug, Clone, Copy)]
pub enum InviteScope<'a> {
    /// Every invite of one meeting (its host's view).
    Meeting(&'a str),
    /// One user's invites, optionally of one meeting only.
    User {
        user_id: &'a str,
        meeting_id: Option<&'a str>,
    },
}

/// Invites in id (creation) order after `after_id`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    db: &Db,
    scope: InviteScope<'_>,
    statuses: &[InviteStatus],
    after_id: Option<&str>,
    limit: u32,
) -> Result<Vec<InviteRecord>, Error> {
    let (meeting_id, user_id) = match scope {
        InviteScope::Meeting(meeting_id) => (Some(meeting_id), None),
        InviteScope::User {
            user_id,
            meeting_id,
        } => (meeting_id, Some(user_id)),
    };
    let status_filter = if statuses.is_empty() {
        String::new()
    } else {
        let placeholders: Vec<String> = (5..5 + statuses.len()).map(|n| format!("${n}")).collect();
        format!("AND status IN ({})", placeholders.join(", "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM meeting_invites \
         WHERE ($1 = '' OR meeting_id = $1) AND ($2 = '' OR user_id = $2) AND id > $3 {status_filter} \
         ORDER BY id LIMIT $4"
    );
    dispatch!(db, pool => {
        let mut query = sqlx::query_as::<_, InviteRecord>(&sql)
            .bind(meeting_id.unwrap_or_default())
            .bind(user_id.unwrap_or_default())
            .bind(after_id.unwrap_or_default())
            .bind(i64::from(limit));
        for status in statuses {
            query = query.bind(status.as_str());
        }
        query.fetch_all(pool).await.map_err(Error::from)
    })
}

/// Every invite of a meeting with the invitee's display name when known,
/// for the calendar export.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn attendees(
    db: &Db,
    meeting_id: &str,
) -> Result<Vec<(InviteRecord, Option<String>)>, Error> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        invite: InviteRecord,
        display_name: Option<String>,
    }
    let rows: Vec<Row> = dispatch!(db, pool => {
        sqlx::query_as::<_, Row>(
            "SELECT i.id, i.meeting_id, i.email, i.email_key, i.user_id, i.status, i.created_at, i.responded_at, \
               u.display_name FROM meeting_invites i LEFT JOIN users u ON u.id = i.user_id \
             WHERE i.meeting_id = $1 ORDER BY i.id",
        )
        .bind(meeting_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|r| (r.invite, r.display_name))
        .collect())
}
