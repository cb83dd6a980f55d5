//! The `chat_messages` table and each meeting's chat sequence.

use sqlx::FromRow;

use super::{Db, dispatch, dispatch_write};
use crate::domain::time::Micros;

#[derive(Debug, Clone, FromRow)]
pub struct MessageRecord {
    pub id: String,
    pub meeting_id: String,
    pub sender_id: String,
    pub sender_display_name: String,
    pub text: String,
    pub sequence: i64,
    pub client_message_id: Option<String>,
    pub created_at: i64,
    /// The shared file this message announces.
    pub file_id: Option<String>,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub meeting_id: String,
    pub sender_id: String,
    pub sender_display_name: String,
    pub text: String,
    pub client_message_id: Option<String>,
    pub file_id: Option<String>,
}

/// What happened to one message of a batch.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Stored now with the meeting's next sequence.
    Stored(MessageRecord),
    /// A retry: this sender already sent this client_message_id.
    Existing(MessageRecord),
    /// The meeting is over (or gone): its chat is read-only.
    MeetingClosed,
}

const COLUMNS: &str = "id, meeting_id, sender_id, sender_display_name, text, sequence, client_message_id, created_at, file_id";

/// Stores a batch of messages in one transaction (group commit). Each gets
/// its meeting's next sequence; as the increment and the insert share the
/// transaction, a failure leaves no gap.
pub async fn append_batch(
    db: &Db,
    messages: &[NewMessage],
    now: Micros,
) -> Result<Vec<Appended>, sqlx::Error> {
    let existing_sql = format!(
        "SELECT {COLUMNS} FROM chat_messages WHERE meeting_id = $1 AND sender_id = $2 AND client_message_id = $3"
    );
    let insert_sql = format!(
        "INSERT INTO chat_messages (id, meeting_id, sender_id, sender_display_name, text, sequence, \
         client_message_id, created_at, file_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    );
    dispatch_write!(db, tx => {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(client_id) = &message.client_message_id {
                let existing = sqlx::query_as::<_, MessageRecord>(&existing_sql)
                    .bind(&message.meeting_id)
                    .bind(&message.sender_id)
                    .bind(client_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(existing) = existing {
                    results.push(Appended::Existing(existing));
                    continue;
                }
            }
            let sequence: Option<(i64,)> = sqlx::query_as(
                "UPDATE meetings SET chat_seq = chat_seq + 1 \
                 WHERE id = $1 AND status IN ('scheduled', 'ongoing') RETURNING chat_seq",
            )
            .bind(&message.meeting_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((sequence,)) = sequence else {
                results.push(Appended::MeetingClosed);
                continue;
            };
            let stored = sqlx::query_as::<_, MessageRecord>(&insert_sql)
                .bind(&message.id)
                .bind(&message.meeting_id)
                .bind(&message.sender_id)
                .bind(&message.sender_display_name)
                .bind(&message.text)
                .bind(sequence)
                .bind(message.client_message_id.as_deref())
                .bind(now)
                .bind(message.file_id.as_deref())
                .fetch_one(&mut *tx)
                .await?;
            results.push(Appended::Stored(stored));
        }
        tx.commit().await?;
        Ok(results)
    })
}

/// Newest first before `before` (exclusive), or, with `after`, oldest
/// first after it.
pub async fn list(
    db: &Db,
    meeting_id: &str,
    after: Option<i64>,
    cursor: Option<i64>,
    limit: u32,
) -> Result<Vec<MessageRecord>, sqlx::Error> {
    let (sql, bound) = match after {
        Some(after) => (
            format!(
                "SELECT {COLUMNS} FROM chat_messages WHERE meeting_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
            ),
            cursor.unwrap_or(after).max(after),
        ),
        None => (
            format!(
                "SELECT {COLUMNS} FROM chat_messages WHERE meeting_id = $1 AND sequence < $2 ORDER BY sequence DESC LIMIT $3"
            ),
            cursor.unwrap_or(i64::MAX),
        ),
    };
    dispatch!(db, pool => {
        sqlx::query_as::<_, MessageRecord>(&sql)
            .bind(meeting_id)
            .bind(bound)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    })
}
