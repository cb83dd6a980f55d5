//! Live notification delivery: every open WatchNotifications stream of a
//! user gets each new notification as soon as its transaction commits.
//!
//! Each watch has a bounded queue. A watcher that falls behind is dropped
//! (its stream ends with UNAVAILABLE) rather than holding memory: the
//! notifications are in the database, and the client lists what it missed.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    sync::mpsc::{self, error::TrySendError},
    time::{Instant, Sleep},
};
use tokio_stream::Stream;
use tonic::Status;

use crate::{error::AppError, proto::pb};

/// Notifications a watch may have queued before it counts as fallen behind.
const QUEUE: usize = 64;

struct Watcher {
    id: u64,
    tx: mpsc::Sender<pb::Notification>,
    fell_behind: Arc<AtomicBool>,
    /// Set when the watch ends because its user's sessions were revoked.
    revoked: Arc<AtomicBool>,
}

pub struct Inbox {
    /// By user id. A std Mutex: held for a lookup and a few try_sends.
    watchers: Mutex<HashMap<String, Vec<Watcher>>>,
    next_id: AtomicU64,
    heartbeat: Duration,
    closing: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    pub fn new(heartbeat: Duration) -> Arc<Self> {
        Arc::new(Self {
            watchers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            heartbeat,
            closing: AtomicBool::new(false),
        })
    }

    /// A new live stream of `user_id`'s notifications.
    pub fn watch(self: &Arc<Self>, user_id: &str) -> InboxStream {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fell_behind = Arc::new(AtomicBool::new(false));
        let revoked = Arc::new(AtomicBool::new(false));
        lock(&self.watchers)
            .entry(user_id.to_owned())
            .or_default()
            .push(Watcher {
                id,
                tx,
                fell_behind: fell_behind.clone(),
                revoked: revoked.clone(),
            });
        InboxStream {
            rx,
            inbox: self.clone(),
            user_id: user_id.to_owned(),
            id,
            fell_behind,
            revoked,
            heartbeat: Box::pin(tokio::time::sleep(self.heartbeat)),
            done: false,
        }
    }

    /// Delivers committed notifications to their recipients' watches.
    pub fn publish(&self, notifications: impl IntoIterator<Item = pb::Notification>) {
        let mut watchers = lock(&self.watchers);
        for notification in notifications {
            let Some(list) = watchers.get_mut(&notification.user_id) else {
                continue;
            };
            list.retain(|w| match w.tx.try_send(notification.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    w.fell_behind.store(true, Ordering::Relaxed);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            });
            if watchers
                .get(&notification.user_id)
                .is_some_and(Vec::is_empty)
            {
                watchers.remove(&notification.user_id);
            }
        }
    }

    /// Ends every watch of `user_id` with UNAUTHENTICATED: every session of
    /// the user was revoked (an address claimed, the account deactivated
    /// or deleted). Called before anything new is published to the user.
    pub fn close_user(&self, user_id: &str) {
        if let Some(list) = lock(&self.watchers).remove(user_id) {
            for watcher in list {
                watcher.revoked.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Ends every watch (server shutdown).
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Relaxed);
        lock(&self.watchers).clear();
    }

    fn unwatch(&self, user_id: &str, id: u64) {
        let mut watchers = lock(&self.watchers);
        if let Some(list) = watchers.get_mut(user_id) {
            list.retain(|w| w.id != id);
            if list.is_empty() {
                watchers.remove(user_id);
            }
        }
    }
}

pub struct InboxStream {
    rx: mpsc::Receiver<pb::Notification>,
    inbox: Arc<Inbox>,
    user_id: String,
    id: u64,
    fell_behind: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
    heartbeat: Pin<Box<Sleep>>,
    done: bool,
}

impl Stream for InboxStream {
    type Item = Result<pb::Notification, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(notification)) => {
                let next = Instant::now() + this.inbox.heartbeat;
                this.heartbeat.as_mut().reset(next);
                return Poll::Ready(Some(Ok(notification)));
            }
            Poll::Ready(None) => {
                this.done = true;
                if this.revoked.load(Ordering::Relaxed) {
                    return Poll::Ready(Some(Err(AppError::unauthenticated(
                        "TOKEN_REVOKED",
                        "your sessions were revoked; sign in again",
                    )
                    .into())));
                }
                let message = if this.fell_behind.load(Ordering::Relaxed) {
                    "fell behind; call ListNotifications for what you missed, then watch again"
                } else {
                    "the server is shutting down; watch again and list what you missed"
                };
                return Poll::Ready(Some(Err(AppError::Unavailable(message.into()).into())));
            }
            Poll::Pending => {}
        }
        if this.heartbeat.as_mut().poll(cx).is_ready() {
            let next = Instant::now() + this.inbox.heartbeat;
            this.heartbeat.as_mut().reset(next);
            // The keep-alive: a notification with an empty id.
            return Poll::Ready(Some(Ok(pb::Notification::default())));
        }
        Poll::Pending
    }
}

impl Drop for InboxStream {
    fn drop(&mut self) {
        self.inbox.unwatch(&self.user_id, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn note(user: &str, title: &str) -> pb::Notification {
        pb::Notification {
            id: title.into(),
            user_id: user.into(),
            title: title.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_watch_of_the_user_gets_it_and_nobody_else() {
        let inbox = Inbox::new(Duration::from_secs(60));
        let mut a1 = inbox.watch("a");
        let mut a2 = inbox.watch("a");
        let mut b = inbox.watch("b");
        inbox.publish([note("a", "hello")]);
        assert_eq!(a1.next().await.unwrap().unwrap().title, "hello");
        assert_eq!(a2.next().await.unwrap().unwrap().title, "hello");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_dropped() {
        let inbox = Inbox::new(Duration::from_secs(60));
        let mut slow = inbox.watch("a");
        inbox.publish((0..QUEUE + 1).map(|i| note("a", &i.to_string())));
        let mut received = 0;
        let status = loop {
            match slow.next().await.unwrap() {
                Ok(_) => received += 1,
                Err(status) => break status,
            }
        };
        assert_eq!(received, QUEUE);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(lock(&inbox.watchers).is_empty());
    }

    #[tokio::test]
    async fn idle_watches_get_keep_alives() {
        let inbox = Inbox::new(Duration::from_millis(50));
        let mut watch = inbox.watch("a");
        let keep_alive = watch.next().await.unwrap().unwrap();
        assert!(keep_alive.id.is_empty());
    }
}
