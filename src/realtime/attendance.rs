//! [`Attendance`]: the one writer of attendance changes after a join.
//!
//! Leaves, reopens of resumed participants, and the departures recorded at
//! shutdown go through one queue, applied in order by one task. Order is
//! the point: the reopen of a quick resume must not overtake the leave of
//! the detach before it, which two independently spawned writes could do.
//! The hub queues them while it holds the room's lock, so the queue's order
//! is the room's. It holds no database handle, so it can be tested alone.
//!
//! Joins are not queued: the API inserts the row, awaited and in parallel
//! with other joins, before the participant exists anywhere else (nothing
//! can be queued for an id the hub has not seen), and a join must not
//! wait behind other participants' leaves.
//!
//! The queue is unbounded but fed only by what clients do to their own
//! slot (a detach, a resume, a removal), each of which costs them a call
//! or a stream; the writer applies thousands of these small updates a
//! second. At shutdown, [`Attendance::finish`] drains it.

use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::time::Micros,
    store::{Db, participants},
};

/// One attendance change, in the order it happened.
#[derive(Debug)]
pub enum Op {
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
