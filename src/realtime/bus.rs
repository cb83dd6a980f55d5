//! The event backbone (DESIGN §8): one bus carries what holders of access
//! must hear at once — access changes and live notifications — by topic.
//!
//! [`Bus`] is the interface: publish an event on a [`Topic`]; subscribe to
//! several topics with one bounded queue (notification watches), or watch
//! them with a [`Signal`] that only says *that* access changed (guards).
//! [`LocalBus`] is the in-process implementation (the default, one node); a
//! cluster implements the same trait over Redis, and nothing above it
//! changes.
//!
//! Delivery never blocks a publisher. A subscriber whose queue is full is
//! told it *lagged* instead of being handed a longer queue ("list what you
//! missed"); a signal cannot lag, since many changes are one wake-up.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::proto::pb;

/// What an event concerns. Subscribers name the topics they hold access
/// under; publishers name what changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A user: their account (deactivated, deleted, role, ways in) and
    /// their notifications.
    User(String),
    /// One session (one sign-in on one device).
    Session(String),
    /// A meeting: its status and existence.
    Meeting(String),
    /// A meeting's room.
    Room(String),
}

/// An event on the bus.
#[derive(Clone, Debug)]
pub enum BusEvent {
    /// The grounds of access under this topic changed: whoever holds
    /// access re-checks it, as a new call would be checked.
    AccessChanged,
    /// What readers may cache under this topic changed without taking
    /// anyone's access away (an edit, a new invite, a first join): caches
    /// drop it, and holders of access are not woken (a join must not make
    /// a whole room re-check).
    DataChanged,
    /// A committed notification for the topic's user.
    Notification(Arc<pb::Notification>),
}

/// What a subscription yields.
#[derive(Clone, Debug)]
pub enum Delivery {
    Event(BusEvent),
    /// Events were lost because the queue was full: re-check everything.
    Lagged,
}

/// Publish and subscribe by topic. Implementations never block the
/// publisher.
pub trait Bus: Send + Sync + fmt::Debug {
    /// Delivers `event` to the subscribers of `topic`; an access or data
    /// change first runs every [`Bus::on_change`] hook, and a data change
    /// goes no further.
    fn publish(&self, topic: &Topic, event: BusEvent);

    /// Runs `hook` for every access or data change on any topic, before it
    /// is delivered (caches drop what it concerns).
    fn on_change(&self, hook: ChangeHook);

    /// Whether every access change is known to reach this node. While it
    /// is false, caches of access must not be trusted (fail closed).
    fn healthy(&self) -> bool {
        true
    }

    /// Changes whenever this node may have missed events (a cluster bus
    /// lost its subscription or heard that another node could not
    /// publish): caches of access kept under an older generation are
    /// dropped.
    fn generation(&self) -> u64 {
        0
    }

    /// This node is stopping: a cluster bus says goodbye, so that the
    /// other nodes forget it at once instead of taking its silence for a
    /// partition.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(std::future::ready(()))
    }

    /// Resolves once a subscription to `topics` hears every node (a
    /// cluster bus subscribes to Redis one round trip after
    /// [`Bus::subscribe`] returns), or after at most a second. A caller
    /// that lists what it missed after subscribing waits for this first.
    fn settled(&self, _topics: &[Topic]) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(std::future::ready(()))
    }

    /// One queue of `capacity` events for all of `topics`; dropping the
    /// subscription unsubscribes.
    fn subscribe(&self, topics: Vec<Topic>, capacity: usize) -> Subscription;

    /// A [`Signal`] that fires on every access change under `topics`: for
    /// holders of access (guards), which only need to know *that*
    /// something changed, at a fraction of a queue's memory (a guarded
    /// stream holds one for its whole life). An implementation that can
    /// lose events (a cluster bus reconnecting) must fire every signal
    /// when it may have: a guard re-checks, fail closed.
    fn watch(&self, topics: Vec<Topic>) -> Signal;
}

/// A sticky flag set by access changes, with the waker of whoever polls
/// it: nothing to queue, so nothing to lose or to lag.
#[derive(Default)]
pub struct SignalState {
    fired: AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl SignalState {
    /// Sets the flag and wakes the poller (for [`Bus`] implementations).
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// See [`Bus::watch`]; dropping it unsubscribes.
pub struct Signal {
    state: Arc<SignalState>,
    _registration: Box<dyn Send + Sync>,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal").finish_non_exhaustive()
    }
}

impl Signal {
    /// Builds a signal for a [`Bus`] implementation: `state` is what its
    /// publisher fires, and `registration` is dropped with it.
    pub fn new(state: Arc<SignalState>, registration: Box<dyn Send + Sync>) -> Self {
        Self {
            state,
            _registration: registration,
        }
    }

    /// Ready (and reset) once an access change came since the last time.
    /// One poller only (`&mut`): the waker of a second would replace the
    /// first's.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.fired.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.state.waker.register(cx.waker());
        // A change that came while registering is not missed.
        if self.state.fired.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// See [`Bus::on_change`].
pub type ChangeHook = Arc<dyn Fn(&Topic) + Send + Sync>;

/// A subscriber's end: its queue, the lag flag, and what unsubscribes it.
pub struct Subscription {
    rx: mpsc::Receiver<BusEvent>,
    lagged: Arc<AtomicBool>,
    _registration: Box<dyn Send + Sync>,
    _held: Option<Box<dyn Send + Sync>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Builds a subscription for a [`Bus`] implementation: `rx` is its
    /// queue, `lagged` the flag the publisher sets when the queue was full,
    /// and `registration` is dropped with it (and unsubscribes).
    pub fn new(
        rx: mpsc::Receiver<BusEvent>,
        lagged: Arc<AtomicBool>,
        registration: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            rx,
            lagged,
            _registration: registration,
            _held: None,
        }
    }

    /// Keeps `held` as long as the subscription (a cluster bus's interest
    /// in the subscription's channels).
    pub fn holding(mut self, held: Box<dyn Send + Sync>) -> Self {
        self._held = Some(held);
        self
    }

    /// The next delivery; `None` when the bus is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Queued events in order, then the lag (what was lost came after
    /// what is queued; nothing newer is queued until the lag is read).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Delivery::Event(event))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if self.lagged.swap(false, Ordering::AcqRel) => {
                Poll::Ready(Some(Delivery::Lagged))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Entry {
    id: u64,
    sink: Sink,
}

/// Where an entry's events go.
enum Sink {
    Queue {
        tx: mpsc::Sender<BusEvent>,
        lagged: Arc<AtomicBool>,
    },
    Signal(Arc<SignalState>),
}

/// The in-process bus: a map from topic to the queues subscribed to it.
pub struct LocalBus {
    /// A std Mutex: held for a lookup and a few `try_send`s, never across
    /// an await.
    topics: Mutex<HashMap<Topic, Vec<Entry>>>,
    hooks: std::sync::RwLock<Vec<ChangeHook>>,
    next_id: AtomicU64,
    me: Weak<LocalBus>,
}

impl fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBus")
            .field("topics", &lock(&self.topics).len())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalBus {
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            topics: Mutex::new(HashMap::new()),
            hooks: std::sync::RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    /// Topics with at least one subscriber (for tests and metrics).
    pub fn topic_count(&self) -> usize {
        lock(&self.topics).len()
    }

    /// Access changes may have been missed (none of the queued kind):
    /// every guard re-checks; queues are left alone.
    pub fn fire_signals(&self) {
        let topics = lock(&self.topics);
        for entry in topics.values().flatten() {
            if let Sink::Signal(state) = &entry.sink {
                state.fire();
            }
        }
    }

    /// Events may have been lost (a cluster bus lost its subscription):
    /// every signal fires, so every guard re-checks, and every queue is
    /// told it lagged, so every watcher lists what it missed.
    pub fn lost_all(&self) {
        let topics = lock(&self.topics);
        for entry in topics.values().flatten() {
            match &entry.sink {
                Sink::Signal(state) => state.fire(),
                Sink::Queue { tx, lagged } => {
                    lagged.store(true, Ordering::Release);
                    // Wakes a waiting subscriber, who reads the lag after
                    // it (a full queue wakes it anyway).
                    let _ = tx.try_send(BusEvent::DataChanged);
                }
            }
        }
    }

    /// Files one subscriber (whose sink `sink` makes) under `topics`.
    fn register(&self, mut topics: Vec<Topic>, sink: impl Fn() -> Sink) -> Registration {
        topics.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        topics.dedup();
        topics.shrink_to_fit();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&self.topics);
        for topic in &topics {
            map.entry(topic.clone())
                .or_default()
                .push(Entry { id, sink: sink() });
        }
        Registration {
            bus: self.me.clone(),
            id,
            topics,
        }
    }

    fn unsubscribe(&self, id: u64, topics: &[Topic]) {
        let mut map = lock(&self.topics);
        for topic in topics {
            if let Some(entries) = map.get_mut(topic) {
                entries.retain(|e| e.id != id);
                if entries.is_empty() {
                    map.remove(topic);
                }
            }
        }
    }
}

/// Unsubscribes on drop.
struct Registration {
    bus: Weak<LocalBus>,
    id: u64,
    topics: Vec<Topic>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe(self.id, &self.topics);
        }
    }
}

impl Bus for LocalBus {
    fn publish(&self, topic: &Topic, event: BusEvent) {
        if matches!(event, BusEvent::AccessChanged | BusEvent::DataChanged) {
            let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner());
            for hook in hooks.iter() {
                hook(topic);
            }
        }
        if matches!(event, BusEvent::DataChanged) {
            return;
        }
        let topics = lock(&self.topics);
        let Some(entries) = topics.get(topic) else {
            return;
        };
        for entry in entries {
            match &entry.sink {
                Sink::Signal(state) => {
                    if matches!(event, BusEvent::AccessChanged) {
                        state.fire();
                    }
                }
                // A subscriber that lost events gets nothing newer until
                // it has been told: what it learns after the lag is the lag.
                Sink::Queue { lagged, .. } if lagged.load(Ordering::Acquire) => {}
                Sink::Queue { tx, lagged } => match tx.try_send(event.clone()) {
                    Ok(()) | Err(TrySendError::Closed(_)) => {}
                    Err(TrySendError::Full(_)) => lagged.store(true, Ordering::Release),
                },
            }
        }
    }

    fn on_change(&self, hook: ChangeHook) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    fn subscribe(&self, topics: Vec<Topic>, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let registration = self.register(topics, || Sink::Queue {
            tx: tx.clone(),
            lagged: lagged.clone(),
        });
        Subscription::new(rx, lagged, Box::new(registration))
    }

    fn watch(&self, topics: Vec<Topic>) -> Signal {
        let state = Arc::new(SignalState::default());
        let registration = self.register(topics, || Sink::Signal(state.clone()));
        Signal::new(state, Box::new(registration))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn user(id: &str) -> Topic {
        Topic::User(id.into())
    }

    async fn quiet(sub: &mut Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(30), sub.recv())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn subscribers_hear_their_topics_only() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe(vec![user("a"), Topic::Session("s1".into())], 8);
        let mut b = bus.subscribe(vec![user("b")], 8);
        bus.publish(&Topic::Session("s1".into()), BusEvent::AccessChanged);
        assert!(matches!(
            a.recv().await,
            Some(Delivery::Event(BusEvent::AccessChanged))
        ));
        assert!(quiet(&mut b).await);
        bus.publish(&user("b"), BusEvent::AccessChanged);
        assert!(b.recv().await.is_some());
        assert!(quiet(&mut a).await);
    }

    #[tokio::test]
    async fn a_full_queue_reports_lag_and_never_blocks() {
        let bus = LocalBus::new();
        let mut sub = bus.subscribe(vec![user("a")], 2);
        for _ in 0..5 {
            bus.publish(&user("a"), BusEvent::AccessChanged);
        }
        assert!(matches!(sub.recv().await, Some(Delivery::Event(_))));
        assert!(matches!(sub.recv().await, Some(Delivery::Event(_))));
        assert!(matches!(sub.recv().await, Some(Delivery::Lagged)));
        assert!(quiet(&mut sub).await);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = LocalBus::new();
        let sub = bus.subscribe(vec![user("a"), user("a"), Topic::Meeting("m".into())], 4);
        let other = bus.subscribe(vec![user("a")], 4);
        assert_eq!(bus.topic_count(), 2);
        drop(sub);
        assert_eq!(bus.topic_count(), 1);
        drop(other);
        assert_eq!(bus.topic_count(), 0);
        bus.publish(&user("a"), BusEvent::AccessChanged);
    }

    #[tokio::test]
    async fn a_data_change_runs_the_hooks_but_wakes_no_subscriber() {
        let bus = LocalBus::new();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        bus.on_change(Arc::new(move |topic| lock(&log).push(topic.clone())));
        let mut sub = bus.subscribe(vec![Topic::Meeting("m".into())], 4);
        bus.publish(&Topic::Meeting("m".into()), BusEvent::DataChanged);
        assert!(quiet(&mut sub).await);
        bus.publish(&Topic::Meeting("m".into()), BusEvent::AccessChanged);
        assert!(sub.recv().await.is_some());
        assert_eq!(lock(&heard).len(), 2, "both changes ran the hook");
    }

    async fn fired(signal: &mut Signal) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(signal.poll_fired(cx).is_ready())).await
    }

    #[tokio::test]
    async fn a_signal_fires_on_access_changes_only_and_never_lags() {
        let bus = LocalBus::new();
        let mut signal = bus.watch(vec![user("a"), Topic::Meeting("m".into())]);
        assert!(!fired(&mut signal).await);
        bus.publish(&Topic::Meeting("m".into()), BusEvent::DataChanged);
        assert!(
            !fired(&mut signal).await,
            "data changes wake no holder of access"
        );
        for _ in 0..100 {
            bus.publish(&user("a"), BusEvent::AccessChanged);
        }
        assert!(fired(&mut signal).await);
        assert!(!fired(&mut signal).await, "many changes, one wake-up");
        // A poller waiting on it is woken.
        let waiting = tokio::spawn({
            let bus = bus.clone();
            async move {
                let mut signal = bus.watch(vec![user("b")]);
                std::future::poll_fn(|cx| signal.poll_fired(cx)).await
            }
        });
        tokio::task::yield_now().await;
        while bus.topic_count() < 3 {
            tokio::task::yield_now().await;
        }
        bus.publish(&user("b"), BusEvent::AccessChanged);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(signal);
        assert_eq!(bus.topic_count(), 0);
    }
}
