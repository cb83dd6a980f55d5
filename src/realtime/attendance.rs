//! [`Attendance`]: the one writer of `meeting_participants`.
//!
//! Every attendance change — a join, a leave, the reopen of a resumed
//! participant, and the departures recorded at shutdown — goes through one
//! queue, applied in order by one task. Order is the point: a leave must
//! not overtake its join, nor the reopen of a quick resume the leave that
//! preceded it, which two independently spawned writes could do.
//!
//! The hub only queues (it holds no database handle), so it can be tested
//! without one. A join is awaited: its row exists before the participant's
//! stream is handed out, and a database that refuses it refuses the join.
//! The queue is unbounded, yet bounded in practice: every operation
//! follows a client's join or resume, and each join waits for its own
//! write, so the queue cannot run further ahead of the database than the
//! joins in flight and one leave and one reopen for each participant.

use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::time::Micros,
    store::{Db, Error, participants},
};

/// One attendance change, in the order it happened.
#[derive(Debug)]
pub enum Op {
    /// `id` joined `meeting_id`; `done` hears whether it was recorded.
    Join {
        id: String,
        meeting_id: String,
        user_id: String,
        at: Micros,
        done: oneshot::Sender<Result<(), Error>>,
    },
    /// `id` went offline (no-op if it already was).
    Leave { id: String, at: Micros },
    /// `id` resumed: online again.
    Reopen { id: String },
    /// The server stops: `ids` (everyone still in a room) leave at `at`,
    /// after everything queued before; then the writer ends.
    Finish {
        ids: Vec<String>,
        at: Micros,
        done: oneshot::Sender<()>,
    },
}

/// Queues attendance changes for the writer.
#[derive(Debug, Clone)]
pub struct Attendance {
    tx: mpsc::UnboundedSender<Op>,
}

impl Attendance {
    /// Starts the writer on `db`.
    pub fn start(db: Db) -> Self {
        let (attendance, ops) = Self::queue();
        tokio::spawn(write(db, ops));
        attendance
    }

    /// A queue without a writer: whoever holds the receiver applies it
    /// (the writer task, or a test reading what the hub queued).
    pub fn queue() -> (Self, mpsc::UnboundedReceiver<Op>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Records that attendance `id` of `user_id` in `meeting_id` began at
    /// `at`, after everything queued before it.
    pub async fn join(
        &self,
        id: &str,
        meeting_id: &str,
        user_id: &str,
        at: Micros,
    ) -> Result<(), Error> {
        let (done, result) = oneshot::channel();
        self.send(Op::Join {
            id: id.to_owned(),
            meeting_id: meeting_id.to_owned(),
            user_id: user_id.to_owned(),
            at,
            done,
        });
        // A writer that is gone (shutting down) recorded nothing.
        result
            .await
            .unwrap_or_else(|_| Err(Error::from(sqlx::Error::PoolClosed)))
    }

    pub fn leave(&self, id: &str, at: Micros) {
        self.send(Op::Leave {
            id: id.to_owned(),
            at,
        });
    }

    pub fn reopen(&self, id: &str) {
        self.send(Op::Reopen { id: id.to_owned() });
    }

    /// Drains the queue, records `ids` as gone at `at`, and stops the
    /// writer: what the server does last, so that attendance does not stay
    /// "online" across a restart.
    pub async fn finish(&self, ids: Vec<String>, at: Micros) {
        let (done, finished) = oneshot::channel();
        self.send(Op::Finish { ids, at, done });
        let _ = finished.await;
    }

    fn send(&self, op: Op) {
        if let Err(mpsc::error::SendError(op)) = self.tx.send(op) {
            tracing::warn!(
                ?op,
                "attendance change after the writer stopped; not recorded"
            );
        }
    }
}

/// The writer: applies `ops` one at a time, in order, until `Finish`.
async fn write(db: Db, mut ops: mpsc::UnboundedReceiver<Op>) {
    while let Some(op) = ops.recv().await {
        match op {
            Op::Join {
                id,
                meeting_id,
                user_id,
                at,
                done,
            } => {
                let result = participants::record_join(&db, &id, &meeting_id, &user_id, at).await;
                let _ = done.send(result);
            }
            Op::Leave { id, at } => {
                if let Err(err) = participants::record_leave(&db, &id, at).await {
                    tracing::warn!(error = %err, %id, "could not record a leave");
                }
            }
            Op::Reopen { id } => {
                if let Err(err) = participants::reopen(&db, &id).await {
                    tracing::warn!(error = %err, %id, "could not record a resume");
                }
            }
            Op::Finish { ids, at, done } => {
                for id in ids {
                    if let Err(err) = participants::record_leave(&db, &id, at).await {
                        tracing::warn!(error = %err, %id, "could not record a departure at shutdown");
                    }
                }
                ops.close();
                // Changes queued after Finish are not applied; say so.
                while let Some(late) = ops.recv().await {
                    tracing::warn!(op = ?late, "attendance change after shutdown; not recorded");
                }
                let _ = done.send(());
                return;
            }
        }
    }
}
