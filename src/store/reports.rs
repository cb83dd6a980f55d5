//! What a meeting's report is made of (DESIGN §12): its attendance rows
//! with names, and counts of its chat, files and calls, read together.

use super::{Db, Error, dispatch};

/// Attendance rows a report reads at most (a meeting of a day with
/// thousands of rejoins stays far below).
pub const MAX_STAYS: i64 = 100_000;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StayRow {
    pub user_id: String,
    pub display_name: String,
    pub joined_at: i64,
    pub left_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct Counts {
    pub chat_messages: i64,
    pub files_shared: i64,
    pub calls: i64,
}

/// The meeting's attendance, by join time, with each user's current name.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn stays(db: &Db, meeting_id: &str) -> Result<Vec<StayRow>, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, StayRow>(
            "SELECT p.user_id, u.display_name, p.joined_at, p.left_at \
             FROM meeting_participants p JOIN users u ON u.id = p.user_id \
             WHERE p.meeting_id = $1 ORDER BY p.joined_at LIMIT $2",
        )
        .bind(meeting_id)
        .bind(MAX_STAYS)
        .fetch_all(pool)
        .await
        .map_err(Error::from)
    })
}

#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn counts(db: &Db, meeting_id: &str) -> Result<Counts, Error> {
    dispatch!(db, pool => {
        sqlx::query_as::<_, Counts>(
            "SELECT (SELECT COUNT(*) FROM chat_messages WHERE meeting_id = $1) AS chat_messages, \
                    (SELECT COUNT(*) FROM shared_files WHERE meeting_id = $1) AS files_shared, \
                    (SELECT COUNT(*) FROM calls WHERE meeting_id = $1) AS calls",
        )
        .bind(meeting_id)
        .fetch_one(pool)
        .await
        .map_err(Error::from)
    })
}
