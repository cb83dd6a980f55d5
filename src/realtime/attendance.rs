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
//! The queue keeps one pending change per participant: a newer change
//! replaces an unapplied older one (a leave keeps the earliest time), so
//! the queue is bounded by the participants with changes in flight,
//! however often a client detaches and resumes, and the database still
//! ends in the state the room last had. At shutdown,
//! [`Attendance::finish`] drains it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::{Notify, oneshot};

use crate::{
    domain::time::Micros,
    store::{Db, participants},
};

/// The change pending for one attendance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Offline since then (no-op if it already was).
    Leave(Micros),
    /// Resumed: online again.
    Reopen,
}

impl Change {
    /// `self` followed by `next`, as one change.
    fn then(self, next: Change) -> Change {
        match (self, next) {
            // Still the first time it went offline.
            (Change::Leave(at), Change::Leave(_)) => Change::Leave(at),
            (_, next) => next,
        }
    }
}

type Finish = (Vec<String>, Micros, oneshot::Sender<()>);

#[derive(Default)]
struct Pending {
    /// Ids with a pending change, in the order of their first change.
    order: VecDeque<String>,
    changes: HashMap<String, Change>,
    finish: Option<Finish>,
    /// Finish was taken: nothing more is applied.
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    queued: Notify,
}

/// Queues attendance changes for the writer.
#[derive(Clone, Default)]
pub struct Attendance {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Attendance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attendance").finish_non_exhaustive()
    }
}

impl Attendance {
    /// Starts the writer on `db`.
    pub fn start(db: Db) -> Self {
        let attendance = Self::default();
        tokio::spawn(write(db, attendance.shared.clone()));
        attendance
    }

    pub fn leave(&self, id: &str, at: Micros) {
        self.push(id, Change::Leave(at));
    }

    pub fn reopen(&self, id: &str) {
        self.push(id, Change::Reopen);
    }

    /// Drains the queue, records `ids` as gone at `at`, and stops the
    /// writer: what the server does last, so that attendance does not stay
    /// "online" across a restart.
    pub async fn finish(&self, ids: Vec<String>, at: Micros) {
        let (done, finished) = oneshot::channel();
        {
            let mut pending = self.shared.lock();
            if pending.stopped || pending.finish.is_some() {
                return;
            }
            pending.finish = Some((ids, at, done));
        }
        self.shared.queued.notify_one();
        let _ = finished.await;
    }

    fn push(&self, id: &str, change: Change) {
        {
            let mut pending = self.shared.lock();
            if pending.stopped || pending.finish.is_some() {
                tracing::warn!(%id, ?change, "attendance change after shutdown; not recorded");
                return;
            }
            match pending.changes.get_mut(id) {
                Some(queued) => *queued = queued.then(change),
                None => {
                    pending.order.push_back(id.to_owned());
                    pending.changes.insert(id.to_owned(), change);
                }
            }
        }
        self.shared.queued.notify_one();
    }

    /// What is queued, in order, taken off the queue (tests play the
    /// writer with it).
    #[cfg(test)]
    pub fn take(&self) -> Vec<(String, Change)> {
        let mut pending = self.shared.lock();
        let order = std::mem::take(&mut pending.order);
        order
            .into_iter()
            .map(|id| {
                let change = pending.changes.remove(&id).expect("queued with its id");
                (id, change)
            })
            .collect()
    }

    /// The pending finish, taken (tests play the writer with it).
    #[cfg(test)]
    pub fn take_finish(&self) -> Option<(Vec<String>, oneshot::Sender<()>)> {
        let mut pending = self.shared.lock();
        pending.finish.take().map(|(ids, _, done)| {
            pending.stopped = true;
            (ids, done)
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Next {
    Change(String, Change),
    Finish(Finish),
}

/// The writer: applies changes one at a time, in order, then the finish.
async fn write(db: Db, shared: Arc<Shared>) {
    loop {
        let next = {
            let mut pending = shared.lock();
            if let Some(id) = pending.order.pop_front() {
                let change = pending.changes.remove(&id).expect("queued with its id");
                Some(Next::Change(id, change))
            } else if let Some(finish) = pending.finish.take() {
                pending.stopped = true;
                Some(Next::Finish(finish))
            } else {
                None
            }
        };
        match next {
            Some(Next::Change(id, Change::Leave(at))) => {
                if let Err(err) = participants::record_leave(&db, &id, at).await {
                    tracing::warn!(error = %err, %id, "could not record a leave");
                }
            }
            Some(Next::Change(id, Change::Reopen)) => {
                if let Err(err) = participants::reopen(&db, &id).await {
                    tracing::warn!(error = %err, %id, "could not record a resume");
                }
            }
            Some(Next::Finish((ids, at, done))) => {
                for id in ids {
                    if let Err(err) = participants::record_leave(&db, &id, at).await {
                        tracing::warn!(error = %err, %id, "could not record a departure at shutdown");
                    }
                }
                let _ = done.send(());
                return;
            }
            None => shared.queued.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pending_change_per_participant_the_last_one_but_the_first_leave_time() {
        let attendance = Attendance::default();
        for _ in 0..1000 {
            attendance.leave("a", 5);
            attendance.reopen("a");
        }
        attendance.leave("b", 7);
        attendance.leave("b", 9);
        attendance.leave("a", 11);
        assert_eq!(
            attendance.take(),
            [
                ("a".to_owned(), Change::Leave(11)),
                ("b".to_owned(), Change::Leave(7)),
            ]
        );
        assert!(attendance.take().is_empty());
    }
}
