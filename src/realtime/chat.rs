//! [`ChatLog`]: the one path every chat message takes, from SendMessage
//! and from the room alike — store, then deliver.
//!
//! A single writer task takes messages from a bounded queue and stores
//! whatever has queued up in one transaction (group commit), so a burst
//! costs one commit instead of one per message. After the commit it hands
//! the new messages to the room hub in sequence order, so the room sees
//! chat in the order of its sequence numbers. A retry (same sender and
//! client_message_id) gets the stored message back and is not delivered
//! again.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::RoomHub;
use crate::wire;
use crate::{
    domain::time::now_micros,
    error::AppError,
    proto::pb::{self, server_event::Event},
    store::{
        Db,
        chat::{self, Appended, MessageRecord, NewMessage},
        files,
    },
};

/// Messages waiting for the writer; senders wait when it is full.
const QUEUE: usize = 4096;
/// Most messages stored in one transaction.
const BATCH: usize = 256;

struct Job {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended, WriteFailure>>,
}

#[derive(Clone)]
pub struct ChatLog {
    jobs: mpsc::Sender<Job>,
}

/// The message with its attachment, looked up when it announces a file.
pub async fn to_pb_with_file(db: &Db, record: &MessageRecord) -> pb::ChatMessage {
    let mut message = wire::chat_message(record);
    if let Some(file_id) = &record.file_id
        && let Ok(Some(file)) = files::find(db, file_id).await
    {
        message.attachment = Some(wire::shared_file(&file));
    }
    message
}

impl ChatLog {
    /// Starts the writer task; it ends when the last `ChatLog` is dropped.
    pub fn start(db: Db, hub: Arc<RoomHub>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db, hub, rx));
        Self { jobs }
    }

    /// Stores (or finds, for a retry) one message; `Stored` ones have been
    /// committed and handed to the room when this returns.
    pub async fn append(&self, message: NewMessage) -> Result<Appended, AppError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { message, reply })
            .await
            .map_err(|_| AppError::Unavailable("the chat writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| AppError::Unavailable("the chat writer has stopped".into()))?
            .map_err(|failure| {
                if failure.transient {
                    tracing::warn!(error = %failure, "chat writer: database unavailable");
                    AppError::Unavailable("the database is busy; retry the message".into())
                } else {
                    AppError::internal_from("storing a chat message", failure)
                }
            })
    }
}

/// Why the writer could not store a message: the database error itself
/// cannot be shared between the batch's callers, so each gets whether it
/// was an outage (UNAVAILABLE, retry) and the cause for the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
struct WriteFailure {
    transient: bool,
    detail: String,
}

impl From<crate::store::Error> for WriteFailure {
    fn from(err: crate::store::Error) -> Self {
        Self {
            transient: err.is_transient(),
            detail: err.to_string(),
        }
    }
}

async fn writer(db: Db, hub: Arc<RoomHub>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let messages: Vec<NewMessage> = jobs.iter().map(|j| j.message.clone()).collect();
        let results = match chat::append_batch(&db, &messages, now_micros()).await {
            Ok(results) => results.into_iter().map(Ok).collect(),
            // One bad message must not fail its neighbours: store alone.
            Err(_) if messages.len() > 1 => {
                let mut each = Vec::with_capacity(messages.len());
                for message in &messages {
                    each.push(
                        chat::append_batch(&db, std::slice::from_ref(message), now_micros())
                            .await
                            .map_err(WriteFailure::from)
                            .and_then(|mut r| {
                                r.pop().ok_or_else(|| WriteFailure {
                                    transient: false,
                                    detail: "the batch returned no result".into(),
                                })
                            }),
                    );
                }
                each
            }
            Err(err) => vec![Err(WriteFailure::from(err))],
        };
        for (job, result) in jobs.into_iter().zip(results) {
            if let Ok(Appended::Stored(record)) = &result {
                let message = to_pb_with_file(&db, record).await;
                hub.broadcast(&record.meeting_id, Event::Chat(Box::new(message)));
            }
            let _ = job.reply.send(result);
        }
    }
}
