//! The `chat_messages` table and each meeting's chat sequence.

use sqlx::FromRow;

use super::{Db, Error, dispatch, in_tx, webhooks};
use crate::domain::{
    time::Micros,
    webhook::{EventType, rfc3339},
};

#[derive(Debug, Clone, FromRow)]
pub struct MessageRecord {
    pub id: String,
    pub meeting_id: String,
    /// `None` once the sender's account is deleted.
    pub sender_id: Option<String>,
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

/// Most rows one INSERT statement of a batch carries. A batch goes in
/// statements of power-of-two sizes (64, 32, …, 1): few round trips to the
/// database, and seven statement texts to prepare, whatever the batch size.
const INSERT_ROWS: usize = 64;

/// The sizes of the INSERTs that store `n` rows, largest first.
fn insert_chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= INSERT_ROWS {
            INSERT_ROWS
        } else {
            1 << n.ilog2()
        };
        n -= size;
        Some(size)
    })
}

/// The INSERT of `rows` messages (a power of two up to INSERT_ROWS), built
/// once per size.
///
/// With `anonymous`, its parameters are plain `?` (SQLite): sqlx asks
/// SQLite for every parameter's name, a linear scan of the statement's
/// names, so numbered ones cost time quadratic in their count.
fn insert_sql(rows: usize, anonymous: bool) -> &'static str {
    static SQL: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| [false, true].map(build_inserts));
    &all[usize::from(anonymous)][rows.ilog2() as usize]
}

fn build_inserts(anonymous: bool) -> Vec<String> {
    let parameter = |i: usize| {
        if anonymous {
            "?".to_owned()
        } else {
            format!("${i}")
        }
    };
    (0..=INSERT_ROWS.ilog2())
        .map(|power| {
            let values: Vec<String> = (0..1usize << power)
                .map(|r| {
                    let row: Vec<String> = (1..=9).map(|c| parameter(r * 9 + c)).collect();
                    format!("({})", row.join(", "))
                })
                .collect();
            format!(
                "INSERT INTO chat_messages (id, meeting_id, sender_id, sender_display_name, text, \
                 sequence, client_message_id, created_at, file_id) VALUES {}",
                values.join(", ")
            )
        })
        .collect()
}

const COLUMNS: &str = "id, meeting_id, sender_id, sender_display_name, text, sequence, client_message_id, created_at, file_id";

/// Stores a batch of messages in one transaction (group commit). Each gets
/// its meeting's next sequence; as the increments and the inserts share the
/// transaction, a failure leaves no gap. The statements are few whatever
/// the batch size: one statement bumps the sequences, one inserts.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn append_batch(
    db: &Db,
    messages: &[NewMessage],
    now: Micros,
) -> Result<Vec<Appended>, Error> {
    let existing_sql = format!(
        "SELECT {COLUMNS} FROM chat_messages WHERE meeting_id = $1 AND sender_id = $2 AND client_message_id = $3"
    );
    let mut tx = db.begin().await?;
    let anonymous = matches!(tx, super::Tx::Sqlite(_));
    let out = in_tx!(&mut tx, conn => {
        let mut results: Vec<Option<Appended>> = vec![None; messages.len()];
        // Retries first: they get the stored message back.
        for (i, message) in messages.iter().enumerate() {
            if let Some(client_id) = &message.client_message_id {
                let existing = sqlx::query_as::<_, MessageRecord>(&existing_sql)
                    .bind(&message.meeting_id)
                    .bind(&message.sender_id)
                    .bind(client_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(existing) = existing {
                    results[i] = Some(Appended::Existing(existing));
                }
            }
        }
        // One sequence bump per meeting for its new messages, in order.
        let mut meetings: Vec<&str> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if results[i].is_none() && !meetings.contains(&message.meeting_id.as_str()) {
                meetings.push(&message.meeting_id);
            }
        }
        // One statement bumps every meeting's sequence by its count.
        let counts: Vec<(&str, i64)> = meetings
            .iter()
            .map(|m| (*m, (0..messages.len()).filter(|&i| results[i].is_none() && messages[i].meeting_id == *m).count() as i64))
            .collect();
        let mut lasts: Vec<(String, i64)> = Vec::new();
        if !counts.is_empty() {
            let cases: Vec<String> = (0..counts.len()).map(|k| format!("WHEN ${} THEN ${}", 2 * k + 1, 2 * k + 2)).collect();
            let ids: Vec<String> = (0..counts.len()).map(|k| format!("${}", 2 * k + 1)).collect();
            let sql = format!(
                "UPDATE meetings SET chat_seq = chat_seq + CASE id {} END \
                 WHERE id IN ({}) AND status IN ('scheduled', 'ongoing') RETURNING id, chat_seq",
                cases.join(" "),
                ids.join(", ")
            );
            let mut bump = sqlx::query_as::<_, (String, i64)>(&sql);
            for (meeting_id, count) in &counts {
                bump = bump.bind(*meeting_id).bind(*count);
            }
            lasts = bump.fetch_all(&mut *conn).await?;
        }
        let mut stored = Vec::new();
        for (meeting_id, count) in counts {
            let indexes: Vec<usize> = (0..messages.len())
                .filter(|&i| results[i].is_none() && messages[i].meeting_id == meeting_id)
                .collect();
            let Some(last) = lasts.iter().find(|(id, _)| id == meeting_id).map(|(_, last)| *last) else {
                for i in indexes {
                    results[i] = Some(Appended::MeetingClosed);
                }
                continue;
            };
            let first = last - count + 1;
            for (n, i) in indexes.into_iter().enumerate() {
                let message = &messages[i];
                let record = MessageRecord {
                    id: message.id.clone(),
                    meeting_id: message.meeting_id.clone(),
                    sender_id: Some(message.sender_id.clone()),
                    sender_display_name: message.sender_display_name.clone(),
                    text: message.text.clone(),
                    sequence: first + n as i64,
                    client_message_id: message.client_message_id.clone(),
                    created_at: now,
                    file_id: message.file_id.clone(),
                };
                stored.push((i, record));
            }
        }
        // In statements of a few rows, so that every batch size is not a
        // statement to prepare anew (and PostgreSQL's numbered parameters
        // stay few: SQLite looks each name up by a linear scan).
        let mut rest = &stored[..];
        for size in insert_chunks(stored.len()) {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let mut insert = sqlx::query(insert_sql(size, anonymous));
            for (_, r) in chunk {
                insert = insert
                    .bind(&r.id)
                    .bind(&r.meeting_id)
                    .bind(&r.sender_id)
                    .bind(&r.sender_display_name)
                    .bind(&r.text)
                    .bind(r.sequence)
                    .bind(r.client_message_id.as_deref())
                    .bind(r.created_at)
                    .bind(r.file_id.as_deref());
            }
            insert.execute(&mut *conn).await?;
        }
        for (i, record) in stored {
            results[i] = Some(Appended::Stored(record));
        }
        results.into_iter().map(|r| r.unwrap_or(Appended::MeetingClosed)).collect::<Vec<_>>()
    });
    if out.iter().any(|a| matches!(a, Appended::Stored(_))) {
        let build = || {
            out.iter()
                .filter_map(|a| match a {
                    Appended::Stored(record) => Some(serde_json::json!({
                        "message": {
                            "id": record.id,
                            "meeting_id": record.meeting_id,
                            "sender_id": record.sender_id,
                            "sender_display_name": record.sender_display_name,
                            "text": record.text,
                            "sequence": record.sequence,
                            "file_id": record.file_id,
                            "time": rfc3339(record.created_at),
                        }
                    })),
                    _ => None,
                })
                .collect()
        };
        webhooks::enqueue_built(&mut tx, EventType::ChatMessageSent, build, now).await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Newest first before `before` (exclusive), or, with `after`, oldest
/// first after it.
#[tracing::instrument(level = "debug", skip_all, fields(meeting_id = %meeting_id))]
pub async fn list(
    db: &Db,
    meeting_id: &str,
    after: Option<i64>,
    cursor: Option<i64>,
    limit: u32,
) -> Result<Vec<MessageRecord>, Error> {
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
            .await.map_err(Error::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_in_power_of_two_statements() {
        for n in 0..300 {
            let sizes: Vec<usize> = insert_chunks(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(
                sizes
                    .iter()
                    .all(|s| s.is_power_of_two() && *s <= INSERT_ROWS)
            );
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        }
        assert_eq!(insert_chunks(100).collect::<Vec<_>>(), [64, 32, 4]);
        for anonymous in [false, true] {
            let sql = insert_sql(64, anonymous);
            let marks = if anonymous {
                sql.matches('?').count()
            } else {
                sql.matches('$').count()
            };
            assert_eq!(marks, 64 * 9);
            assert_eq!(insert_sql(1, anonymous).matches("), (").count(), 0);
        }
        assert!(insert_sql(2, false).ends_with("$10, $11, $12, $13, $14, $15, $16, $17, $18)"));
    }
}
