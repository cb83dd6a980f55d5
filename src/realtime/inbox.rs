//! Live notification delivery: every open WatchNotifications stream of a
//! user gets each new notification as soon as its transaction commits.
//!
//! Notifications travel on the bus ([`Topic::User`]), and each watch is a
//! bus subscription to its user and its session with a bounded queue. A
//! watcher that falls behind is ended (UNAVAILABLE) rather than holding
//! memory: the notifications are in the database, and the client lists
//! what it missed. An access change on its user or session re-checks the
//! watch (DESIGN §8), and nothing is delivered while that check runs, so a
//! notification published after a revocation never reaches a revoked
//! watch.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    sync::watch,
    time::{Instant, Sleep},
};
use tokio_stream::Stream;
use tonic::Status;

use super::{
    bus::{Bus, BusEvent, Delivery, Subscription, Topic},
    live::{Check, Checking, RECHECK_EVERY},
};
use crate::{error::AppError, proto::pb};

/// Notifications a watch may have queued before it counts as fallen behind.
const QUEUE: usize = 64;

#[derive(Debug)]
pub struct Inbox {
    bus: Arc<dyn Bus>,
    heartbeat: Duration,
    closing: watch::Sender<bool>,
}

impl Inbox {
    pub fn new(bus: Arc<dyn Bus>, heartbeat: Duration) -> Arc<Self> {
        Arc::new(Self {
            bus,
            heartbeat,
            closing: watch::Sender::new(false),
        })
    }

    /// A new live stream of `user_id`'s notifications for its `session_id`,
    /// which lasts while `check` passes.
    pub fn watch(&self, user_id: &str, session_id: &str, check: Check) -> InboxStream {
        let subscription = self.bus.subscribe(
            vec![
                Topic::User(user_id.to_owned()),
                Topic::Session(session_id.to_owned()),
            ],
            QUEUE,
        );
        let mut closing = self.closing.subscribe();
        InboxStream {
            subscription,
            // Checked once at once: a change announced before the
            // subscription existed is not missed.
            running: Some(check()),
            check,
            lagged: false,
            closing: Box::pin(async move {
                let _ = closing.wait_for(|closing| *closing).await;
            }),
            heartbeat_every: self.heartbeat,
            heartbeat: Box::pin(tokio::time::sleep(self.heartbeat)),
            recheck: Box::pin(tokio::time::sleep(RECHECK_EVERY)),
            done: false,
        }
    }

    /// Delivers committed notifications to their recipients' watches.
    pub fn publish(&self, notifications: impl IntoIterator<Item = pb::Notification>) {
        for notification in notifications {
            let topic = Topic::User(notification.user_id.clone());
            self.bus
                .publish(&topic, BusEvent::Notification(Arc::new(notification)));
        }
    }

    /// Ends every watch (server shutdown).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }
}

pub struct InboxStream {
    subscription: Subscription,
    check: Check,
    /// A re-check in progress: nothing is delivered until it passes.
    running: Option<Checking>,
    /// Events were lost: the watch ends once the check has run.
    lagged: bool,
    closing: Pin<Box<dyn Future<Output = ()> + Send>>,
    heartbeat_every: Duration,
    heartbeat: Pin<Box<Sleep>>,
    /// The periodic re-check (changes no bus announced).
    recheck: Pin<Box<Sleep>>,
    done: bool,
}

impl InboxStream {
    fn end(&mut self, status: Status) -> Poll<Option<Result<pb::Notification, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(status)))
    }
}

impl Stream for InboxStream {
    type Item = Result<pb::Notification, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.closing.as_mut().poll(cx).is_ready() {
            return this.end(
                AppError::Unavailable(
                    "the server is shutting down; watch again and list what you missed".into(),
                )
                .into(),
            );
        }
        if this.running.is_none() && this.recheck.as_mut().poll(cx).is_ready() {
            this.recheck.as_mut().reset(Instant::now() + RECHECK_EVERY);
            this.running = Some((this.check)());
        }
        loop {
            if let Some(running) = &mut this.running {
                match running.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => this.running = None,
                    Poll::Ready(Err(status)) => return this.end(status),
                    Poll::Pending => return Poll::Pending,
                }
                if this.lagged {
                    return this.end(
                        AppError::Unavailable(
                            "fell behind; call ListNotifications for what you missed, then watch again"
                                .into(),
                        )
                        .into(),
                    );
                }
            }
            match this.subscription.poll_recv(cx) {
                Poll::Ready(Some(Delivery::Event(BusEvent::Notification(notification)))) => {
                    let next = Instant::now() + this.heartbeat_every;
                    this.heartbeat.as_mut().reset(next);
                    return Poll::Ready(Some(Ok((*notification).clone())));
                }
                Poll::Ready(Some(Delivery::Event(BusEvent::AccessChanged))) => {
                    this.running = Some((this.check)());
                }
                // Never delivered (caches only), and nothing to do.
                Poll::Ready(Some(Delivery::Event(BusEvent::DataChanged))) => {}
                // Lost events may have been an access change: check first,
                // then end either way (the client lists what it missed).
                Poll::Ready(Some(Delivery::Lagged)) => {
                    this.running = Some((this.check)());
                    this.lagged = true;
                }
                Poll::Ready(None) => {
                    return this
                        .end(AppError::Unavailable("the server is shutting down".into()).into());
                }
                Poll::Pending => break,
            }
        }
        if this.heartbeat.as_mut().poll(cx).is_ready() {
            let next = Instant::now() + this.heartbeat_every;
            this.heartbeat.as_mut().reset(next);
            // The keep-alive: a notification with an empty id.
            return Poll::Ready(Some(Ok(pb::Notification::default())));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::bus::LocalBus;
    use tokio_stream::StreamExt;

    fn allow() -> Check {
        Arc::new(|| Box::pin(async { Ok(()) }))
    }

    fn inbox(heartbeat: Duration) -> (Arc<LocalBus>, Arc<Inbox>) {
        let bus = LocalBus::new();
        (bus.clone(), Inbox::new(bus, heartbeat))
    }

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
        let (_bus, inbox) = inbox(Duration::from_secs(60));
        let mut a1 = inbox.watch("a", "s1", allow());
        let mut a2 = inbox.watch("a", "s2", allow());
        let mut b = inbox.watch("b", "s3", allow());
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
        let (bus, inbox) = inbox(Duration::from_secs(60));
        let mut slow = inbox.watch("a", "s", allow());
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
        drop(slow);
        assert_eq!(bus.topic_count(), 0);
    }

    #[tokio::test]
    async fn idle_watches_get_keep_alives() {
        let (_bus, inbox) = inbox(Duration::from_millis(50));
        let mut watch = inbox.watch("a", "s", allow());
        let keep_alive = watch.next().await.unwrap().unwrap();
        assert!(keep_alive.id.is_empty());
    }

    #[tokio::test]
    async fn nothing_reaches_a_watch_after_its_access_goes() {
        let (bus, inbox) = inbox(Duration::from_secs(60));
        let deny: Check = Arc::new(|| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(Status::unauthenticated("revoked"))
            })
        });
        let mut watch = inbox.watch("a", "s", deny);
        bus.publish(&Topic::Session("s".into()), BusEvent::AccessChanged);
        inbox.publish([note("a", "after")]);
        let ended = watch.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unauthenticated);
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn shutdown_ends_every_watch() {
        let (_bus, inbox) = inbox(Duration::from_secs(60));
        let mut watch = inbox.watch("a", "s", allow());
        inbox.close_all();
        let ended = watch.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_watch_that_lost_events_is_checked_before_it_ends() {
        let (_bus, inbox) = inbox(Duration::from_secs(60));
        let allowed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let gate = allowed.clone();
        let check: Check = Arc::new(move || {
            let allowed = gate.load(std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                if allowed {
                    Ok(())
                } else {
                    Err(Status::unauthenticated("revoked"))
                }
            })
        });
        let mut watch = inbox.watch("a", "s", check);
        // The first check passes; then the queue overflows (a revocation
        // may have been among what was lost).
        inbox.publish([note("a", "first")]);
        assert_eq!(watch.next().await.unwrap().unwrap().title, "first");
        allowed.store(false, std::sync::atomic::Ordering::Relaxed);
        inbox.publish((0..QUEUE + 5).map(|i| note("a", &i.to_string())));
        let mut received = 0;
        let status = loop {
            match watch.next().await.unwrap() {
                Ok(_) => received += 1,
                Err(status) => break status,
            }
        };
        assert_eq!(received, QUEUE, "nothing after the lag");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
