//! The cluster bus (DESIGN §9): [`Bus`] over Redis pub/sub, chosen by
//! `UNIO_REDIS_URL`, so that what one node publishes reaches the holders
//! of access and the watches on every node.
//!
//! Each node delivers its own events at once through a [`LocalBus`]
//! inside, then publishes them; what other nodes publish is delivered into
//! the same local bus (a node skips its own echo). Two kinds of channel:
//! - `unio:changes`: every access and data change, heard by every node,
//!   since any node may hold a cached view or a guard for any user,
//!   session or meeting (changes are rare next to calls);
//! - `unio:user:<id>`: one user's live notifications, subscribed only
//!   while this node has a watch open for that user.
//!
//! Redis pub/sub delivers at most once: a node that loses its subscription
//! (Redis restarted, the connection cut) cannot know what it missed. So
//! while it is not subscribed it reports itself unhealthy (caches of
//! access are bypassed: DESIGN §8 fails closed; `grpc.health.v1` says so),
//! and once subscribed again it treats everything as changed: every guard
//! re-checks, every watch is told it lagged, every cache starts over
//! ([`Bus::generation`]). A node that could not publish (Redis down, its
//! queue full) tells every node the same (`resync`) once it can.
//!
//! The `redis` crate does the protocol and the connections; what is ours
//! is the reconnect loop, since re-subscribing must also resync.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use prost::Message;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::bus::{Bus, BusEvent, ChangeHook, LocalBus, Signal, Subscription, Topic};
use crate::proto::pb;

const CHANGES: &str = "unio:changes";
const USER_PREFIX: &str = "unio:user:";
/// Events waiting to be published; past this a node stops queueing and
/// resyncs everyone once it can publish again.
const OUTGOING: usize = 8192;
/// How often the subscription proves it is alive, and how long it may
/// take to answer: a node stops trusting its caches within twice this.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the publisher task sends: a channel and its payload.
type Outgoing = (String, Vec<u8>);

pub struct RedisBus {
    local: Arc<LocalBus>,
    shared: Arc<Shared>,
    out: mpsc::Sender<Outgoing>,
    /// Stopped with the bus (the publisher stops when `out` is dropped).
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

/// What the bus and its two tasks share.
struct Shared {
    /// This node, as it signs what it publishes.
    node: String,
    /// Subscribed to everything this node listens to.
    healthy: AtomicBool,
    generation: AtomicU64,
    /// A publish was lost: every node must resync.
    lost_out: AtomicBool,
    /// Users with a watch on this node, and how many.
    watched: Mutex<HashMap<String, usize>>,
    /// Tells the subscriber task to (un)subscribe a user's channel.
    resubscribe: mpsc::UnboundedSender<String>,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("node", &self.shared.node)
            .field("healthy", &self.shared.healthy.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisBus {
    /// Starts the bus's tasks; it becomes healthy once subscribed. Only a
    /// malformed URL fails here: an unreachable Redis is retried.
    pub fn start(url: &str) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let local = LocalBus::new();
        let (resubscribe, commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            node: uuid::Uuid::new_v4().simple().to_string(),
            healthy: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            lost_out: AtomicBool::new(false),
            watched: Mutex::new(HashMap::new()),
            resubscribe,
        });
        let (out, outgoing) = mpsc::channel(OUTGOING);
        tokio::spawn(publisher(client.clone(), shared.clone(), outgoing));
        let subscriber = tokio::spawn(subscriber(
            client,
            shared.clone(),
            Arc::downgrade(&local),
            commands,
        ));
        Ok(Arc::new(Self {
            local,
            shared,
            out,
            subscriber,
        }))
    }

    fn send(&self, channel: String, payload: Vec<u8>) {
        if self.out.try_send((channel, payload)).is_err() {
            self.shared.lost_out.store(true, Ordering::Release);
        }
    }

    fn signed(&self, body: &[u8]) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.shared.node.len() + 1 + body.len());
        payload.extend_from_slice(self.shared.node.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(body);
        payload
    }
}

impl Bus for RedisBus {
    fn publish(&self, topic: &Topic, event: BusEvent) {
        let body = match (&event, topic) {
            (BusEvent::AccessChanged, _) => Some((CHANGES.to_owned(), change("A", topic))),
            (BusEvent::DataChanged, _) => Some((CHANGES.to_owned(), change("D", topic))),
            (BusEvent::Notification(n), Topic::User(user)) => {
                Some((format!("{USER_PREFIX}{user}"), n.encode_to_vec()))
            }
            (BusEvent::Notification(_), _) => None,
        };
        self.local.publish(topic, event);
        if let Some((channel, body)) = body {
            let payload = self.signed(&body);
            self.send(channel, payload);
        }
    }

    fn on_change(&self, hook: ChangeHook) {
        self.local.on_change(hook);
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    fn subscribe(&self, topics: Vec<Topic>, capacity: usize) -> Subscription {
        let users: Vec<String> = topics
            .iter()
            .filter_map(|t| match t {
                Topic::User(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let subscription = self.local.subscribe(topics, capacity);
        if users.is_empty() {
            return subscription;
        }
        self.shared.watch(&users);
        subscription.holding(Box::new(Watching {
            shared: self.shared.clone(),
            users,
        }))
    }

    fn watch(&self, topics: Vec<Topic>) -> Signal {
        // Access changes reach every node on `unio:changes`.
        self.local.watch(topics)
    }
}

/// A `unio:changes` body: what changed (`A`ccess or `D`ata) and where.
fn change(kind: &str, topic: &Topic) -> Vec<u8> {
    let (tag, id) = match topic {
        Topic::User(id) => ("u", id),
        Topic::Session(id) => ("s", id),
        Topic::Meeting(id) => ("m", id),
        Topic::Room(id) => ("r", id),
    };
    format!("{kind} {tag}:{id}").into_bytes()
}

fn parse_change(body: &str) -> Option<(BusEvent, Topic)> {
    let (kind, rest) = body.split_once(' ')?;
    let (tag, id) = rest.split_once(':')?;
    let event = match kind {
        "A" => BusEvent::AccessChanged,
        "D" => BusEvent::DataChanged,
        _ => return None,
    };
    let topic = match tag {
        "u" => Topic::User(id.to_owned()),
        "s" => Topic::Session(id.to_owned()),
        "m" => Topic::Meeting(id.to_owned()),
        "r" => Topic::Room(id.to_owned()),
        _ => return None,
    };
    Some((event, topic))
}

impl Shared {
    fn watch(&self, users: &[String]) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        for user in users {
            let count = watched.entry(user.clone()).or_default();
            *count += 1;
            if *count == 1 {
                let _ = self.resubscribe.send(user.clone());
            }
        }
    }

    fn unwatch(&self, users: &[String]) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        for user in users {
            if let Some(count) = watched.get_mut(user) {
                *count -= 1;
                if *count == 0 {
                    watched.remove(user);
                    let _ = self.resubscribe.send(user.clone());
                }
            }
        }
    }

    fn is_watched(&self, user: &str) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(user)
    }

    /// Events may have been missed: everything here starts over.
    fn resync(&self, local: &LocalBus) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        local.lost_all();
    }
}

/// A watch's interest in its users' channels, dropped with it.
struct Watching {
    shared: Arc<Shared>,
    users: Vec<String>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.shared.unwatch(&self.users);
    }
}

async fn backoff(attempt: &mut u32) {
    let wait = Duration::from_millis(50 << (*attempt).min(5)).min(MAX_BACKOFF);
    *attempt += 1;
    tokio::time::sleep(wait).await;
}

/// Publishes in order. A publish that fails is tried once more on a new
/// connection (a connection Redis dropped fails only when used); one that
/// fails twice is dropped, and every node is told to resync once Redis
/// answers again.
async fn publisher(
    client: redis::Client,
    shared: Arc<Shared>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut attempt = 0;
    while let Some((channel, payload)) = outgoing.recv().await {
        let mut sent = false;
        for _ in 0..2 {
            match send_one(&client, &shared, &mut connection, &channel, &payload).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "bus: publish failed");
                    connection = None;
                }
            }
        }
        if sent {
            attempt = 0;
        } else {
            shared.lost_out.store(true, Ordering::Release);
            backoff(&mut attempt).await;
        }
    }
}

/// One publish, after the resync a lost publish owes.
async fn send_one(
    client: &redis::Client,
    shared: &Shared,
    connection: &mut Option<MultiplexedConnection>,
    channel: &str,
    payload: &[u8],
) -> redis::RedisResult<()> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(client.get_multiplexed_async_connection().await?),
    };
    if shared.lost_out.swap(false, Ordering::AcqRel) {
        let resync = format!("{}\nR", shared.node).into_bytes();
        if let Err(err) = publish(conn, CHANGES, &resync).await {
            shared.lost_out.store(true, Ordering::Release);
            return Err(err);
        }
    }
    publish(conn, channel, payload).await
}

async fn publish(
    conn: &mut MultiplexedConnection,
    channel: &str,
    payload: &[u8],
) -> redis::RedisResult<()> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async::<i64>(conn)
        .await
        .map(|_| ())
}

/// Keeps this node subscribed, and delivers what others publish.
async fn subscriber(
    client: redis::Client,
    shared: Arc<Shared>,
    local: std::sync::Weak<LocalBus>,
    mut commands: mpsc::UnboundedReceiver<String>,
) {
    let mut attempt = 0;
    loop {
        if local.strong_count() == 0 {
            return;
        }
        match client.get_async_pubsub().await {
            Ok(pubsub) => {
                let (mut sink, mut messages) = pubsub.split();
                if subscribe_all(&mut sink, &shared).await.is_ok() {
                    attempt = 0;
                    shared.healthy.store(true, Ordering::Release);
                    tracing::info!("bus: subscribed to Redis");
                    if let Some(local) = local.upgrade() {
                        shared.resync(&local);
                    }
                    let mut liveness = tokio::time::interval(PING_EVERY);
                    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            // A connection can die without a word (a
                            // partition): unanswered pings end it.
                            _ = liveness.tick() => {
                                let pong = tokio::time::timeout(
                                    PING_EVERY,
                                    sink.ping::<redis::Value>(),
                                )
                                .await;
                                if !matches!(pong, Ok(Ok(_))) {
                                    break;
                                }
                            }
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let Some(local) = local.upgrade() else { return };
                                deliver(&shared, &local, &message);
                            }
                            user = commands.recv() => {
                                let Some(user) = user else { return };
                                let channel = format!("{USER_PREFIX}{user}");
                                let done = if shared.is_watched(&user) {
                                    sink.subscribe(&channel).await
                                } else {
                                    sink.unsubscribe(&channel).await
                                };
                                if done.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    tracing::warn!("bus: lost the Redis subscription; serving this node alone");
                }
                shared.healthy.store(false, Ordering::Release);
                if let Some(local) = local.upgrade() {
                    shared.resync(&local);
                }
            }
            Err(err) => {
                shared.healthy.store(false, Ordering::Release);
                tracing::warn!(error = %err, "bus: cannot reach Redis to subscribe");
            }
        }
        backoff(&mut attempt).await;
    }
}

async fn subscribe_all(sink: &mut PubSubSink, shared: &Shared) -> redis::RedisResult<()> {
    sink.subscribe(CHANGES).await?;
    let users: Vec<String> = shared
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .map(|user| format!("{USER_PREFIX}{user}"))
        .collect();
    if !users.is_empty() {
        sink.subscribe(&users).await?;
    }
    Ok(())
}

/// Hands another node's event to this node's subscribers.
fn deliver(shared: &Shared, local: &LocalBus, message: &redis::Msg) {
    let payload = message.get_payload_bytes();
    let Some(split) = payload.iter().position(|b| *b == b'\n') else {
        return;
    };
    let (origin, body) = (&payload[..split], &payload[split + 1..]);
    if origin == shared.node.as_bytes() {
        return;
    }
    let channel = message.get_channel_name();
    if channel == CHANGES {
        if body == b"R" {
            shared.resync(local);
            return;
        }
        match std::str::from_utf8(body).ok().and_then(parse_change) {
            Some((event, topic)) => local.publish(&topic, event),
            None => tracing::warn!("bus: unreadable change ignored"),
        }
    } else if let Some(user) = channel.strip_prefix(USER_PREFIX) {
        match pb::Notification::decode(body) {
            Ok(n) => local.publish(
                &Topic::User(user.to_owned()),
                BusEvent::Notification(Arc::new(n)),
            ),
            Err(_) => tracing::warn!("bus: unreadable notification ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_as_written() {
        for topic in [
            Topic::User("u1".into()),
            Topic::Session("s1".into()),
            Topic::Meeting("m1".into()),
            Topic::Room("r1".into()),
        ] {
            let body = change("A", &topic);
            let (event, back) = parse_change(std::str::from_utf8(&body).unwrap()).unwrap();
            assert!(matches!(event, BusEvent::AccessChanged));
            assert_eq!(back, topic);
        }
        assert!(parse_change("X u:1").is_none());
        assert!(parse_change("A q:1").is_none());
        assert!(parse_change("garbage").is_none());
    }
}
