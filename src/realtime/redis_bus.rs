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
//! Redis pub/sub delivers at most once, so a node must notice when it may
//! have missed something, and then fail closed:
//! - every change a node publishes carries that node's next sequence
//!   number, and every node publishes a heartbeat with its last number
//!   four times a second: a receiver that sees a gap, or a peer it knows
//!   fall silent for a second, suspects it missed changes;
//! - the subscription is pinged four times a second; an unanswered ping
//!   (a Redis that stops answering, a partition) or a closed connection
//!   ends it.
//!
//! While the subscription is down or a peer is silent the node reports
//! itself unhealthy (caches of access are bypassed: DESIGN §8 fails
//! closed; `grpc.health.v1` says so) and its guards re-check every second.
//! A gap, or health coming back, makes every guard re-check and every
//! cache start over ([`Bus::generation`]); a new subscription also tells
//! every watch it lagged (notifications may have been lost). A peer silent
//! for 5 s is taken for dead (a restarted node comes back under a new
//! name) and forgotten; should it come back, its numbers show what was
//! missed. What a node cut off from Redis (but not from the database)
//! revokes after that goes unheard until it is back: caches elsewhere
//! hold it at most their TTL, and streams until their periodic re-check.
//!
//! The `redis` crate does the protocol and the connections; what is ours
//! is the reconnect loop, since re-subscribing must also resync.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::bus::{Bus, BusEvent, ChangeHook, LocalBus, Signal, Subscription, Topic};
use super::room_log;
use crate::proto::pb;

const CHANGES: &str = "unio:changes";
const USER_PREFIX: &str = "unio:user:";
/// Events waiting to be published; past this they are dropped, and the
/// gap in this node's numbers tells the others.
const OUTGOING: usize = 8192;
/// Events published in one pipeline.
const BATCH: usize = 128;
/// How often a node says it is alive, pings its subscription, and looks
/// at its peers.
const TICK: Duration = Duration::from_millis(250);
/// How long Redis may take to answer a ping or a (un)subscribe.
const REPLY: Duration = Duration::from_millis(500);
/// Deliveries may wait this long on a request to Redis before the node
/// stops vouching for its bus.
const STALLED: Duration = Duration::from_millis(200);
/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(2);
/// A subscription with no pong for this long is not trusted.
const FRESH: Duration = Duration::from_secs(1);
/// A peer silent this long makes this node suspect it misses changes...
const PEER_SILENT: Duration = Duration::from_secs(1);
/// ...and this long, is taken for dead.
const PEER_GONE: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the publisher task sends: a channel, its payload, and for a
/// change its sequence number.
type Outgoing = (String, Vec<u8>, Option<u64>);

pub struct RedisBus {
    local: Arc<LocalBus>,
    shared: Arc<Shared>,
    out: mpsc::Sender<Outgoing>,
    /// Held while a change is numbered and queued.
    numbering: Mutex<()>,
    client: redis::Client,
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
    /// The zero of the `*_ms` fields.
    started: Instant,
    /// Subscribed to everything this node listens to.
    subscribed: AtomicBool,
    /// When Redis last answered a ping.
    pong_ms: AtomicU64,
    /// Every known peer was heard from lately.
    peers_heard: AtomicBool,
    generation: AtomicU64,
    /// The number of this node's last change.
    change_seq: AtomicU64,
    /// The highest number dropped before it reached the publisher.
    dropped_seq: AtomicU64,
    /// Channels (users' and rooms') with an interest on this node, and
    /// how many.
    watched: Mutex<HashMap<String, usize>>,
    /// Channels that may need (un)subscribing.
    dirty: Mutex<HashSet<String>>,
    /// Wakes the subscriber when `dirty` gains a channel.
    dirty_wake: tokio::sync::Notify,
    /// Channels Redis confirmed subscribed.
    live: Mutex<HashSet<String>>,
    /// Wakes [`Bus::settled`] waiters when `live` changes.
    live_wake: tokio::sync::Notify,
    /// Where room channels' messages go.
    rooms: std::sync::OnceLock<Weak<dyn RoomSink>>,
    /// Since when (ms + 1; 0 = not) the subscriber waits on Redis and
    /// delivers nothing.
    awaiting_since: AtomicU64,
    /// The node said goodbye ([`Bus::close`]).
    closed: AtomicBool,
}

/// Marks the subscriber as waiting on Redis while alive.
struct Awaiting<'a>(&'a Shared);

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.0.awaiting_since.store(0, Ordering::Release);
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("node", &self.shared.node)
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl RedisBus {
    /// Starts the bus's tasks; it becomes healthy once subscribed. Only a
    /// malformed URL fails here: an unreachable Redis is retried.
    pub fn start(url: &str) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let local = LocalBus::new();
        let shared = Arc::new(Shared {
            node: uuid::Uuid::new_v4().simple().to_string(),
            started: Instant::now(),
            subscribed: AtomicBool::new(false),
            pong_ms: AtomicU64::new(0),
            peers_heard: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            change_seq: AtomicU64::new(0),
            dropped_seq: AtomicU64::new(0),
            watched: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            dirty_wake: tokio::sync::Notify::new(),
            live: Mutex::new(HashSet::new()),
            live_wake: tokio::sync::Notify::new(),
            awaiting_since: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            rooms: std::sync::OnceLock::new(),
        });
        let (out, outgoing) = mpsc::channel(OUTGOING);
        tokio::spawn(publisher(client.clone(), shared.clone(), outgoing));
        let subscriber = tokio::spawn(subscriber(
            client.clone(),
            shared.clone(),
            Arc::downgrade(&local),
        ));
        Ok(Arc::new(Self {
            local,
            shared,
            out,
            numbering: Mutex::new(()),
            client,
            subscriber,
        }))
    }

    fn signed(&self, body: &[u8]) -> Vec<u8> {
        signed(&self.shared.node, body)
    }

    /// This node's name on the bus (and in room rosters).
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Where the messages of room channels go (once, at startup).
    pub fn deliver_rooms_to(&self, sink: Weak<dyn RoomSink>) {
        let _ = self.shared.rooms.set(sink);
    }

    /// Subscribes this node to `room`'s channel for as long as the result
    /// is kept.
    pub fn hold_room(&self, room: &str) -> Box<dyn Send + Sync> {
        let channels = vec![room_log::channel(room)];
        self.shared.watch(&channels);
        Box::new(Watching {
            shared: self.shared.clone(),
            channels,
        })
    }

    /// Whether Redis confirmed the subscription to `room`'s channel,
    /// waiting up to a second for it.
    pub async fn room_live(&self, room: &str) -> bool {
        let channels = [room_log::channel(room)];
        let shared = self.shared.clone();
        let confirmed = async {
            loop {
                let notified = shared.live_wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if shared.subscribed.load(Ordering::Acquire) && shared.all_live(&channels) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(FRESH, confirmed).await.is_ok()
    }

    /// Where room channels' messages go, if set.
    pub fn room_sink(&self) -> Option<Arc<dyn RoomSink>> {
        self.shared.rooms.get().and_then(Weak::upgrade)
    }

    /// A connection for commands (not the subscription's).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}

/// Receives the messages of room channels ([`RedisBus::hold_room`]), on
/// the subscriber's task: implementations only queue or hand over.
pub trait RoomSink: Send + Sync {
    /// `payload` (a sequence number and a record) came on `room`'s channel.
    fn published(&self, room: &str, payload: &[u8]);
    /// The subscription was made again: rooms may have missed messages.
    fn resubscribed(&self);
    /// `record` could not reach `room`'s log (Redis is away): deliver it
    /// to this node's participants alone, outside the room's order.
    fn unsent(&self, room: &str, record: &[u8]);
}

fn signed(node: &str, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(node.len() + 1 + body.len());
    payload.extend_from_slice(node.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(body);
    payload
}

impl Bus for RedisBus {
    fn publish(&self, topic: &Topic, event: BusEvent) {
        let kind = match (&event, topic) {
            (BusEvent::AccessChanged, _) => Some("A"),
            (BusEvent::DataChanged, _) => Some("D"),
            (BusEvent::Notification(_), Topic::User(_)) => None,
            (BusEvent::Notification(_), _) => {
                self.local.publish(topic, event);
                return;
            }
        };
        let notification = match (&event, topic) {
            (BusEvent::Notification(n), Topic::User(user)) => Some((
                format!("{USER_PREFIX}{user}"),
                self.signed(&n.encode_to_vec()),
            )),
            _ => None,
        };
        self.local.publish(topic, event);
        // Numbered and queued in one step, so the queue holds changes in
        // number order (a receiver takes a jump for a loss).
        let _numbering = self.numbering.lock().unwrap_or_else(|p| p.into_inner());
        let outgoing = match (kind, notification) {
            (Some(kind), _) => {
                let seq = self.shared.change_seq.fetch_add(1, Ordering::AcqRel) + 1;
                let body = format!("{seq} {}", change(kind, topic));
                (CHANGES.to_owned(), self.signed(body.as_bytes()), Some(seq))
            }
            (None, Some((channel, payload))) => (channel, payload, None),
            (None, None) => return,
        };
        if self.out.try_send(outgoing).is_err() {
            // Lost: a number of its own shows the others the gap (and, for
            // a notification, that watches must list what they missed).
            let seq = self.shared.change_seq.fetch_add(1, Ordering::AcqRel) + 1;
            self.shared.dropped_seq.fetch_max(seq, Ordering::AcqRel);
        }
    }

    fn on_change(&self, hook: ChangeHook) {
        self.local.on_change(hook);
    }

    fn healthy(&self) -> bool {
        let fresh = self
            .shared
            .now_ms()
            .saturating_sub(self.shared.pong_ms.load(Ordering::Acquire))
            < FRESH.as_millis() as u64;
        let since = self.shared.awaiting_since.load(Ordering::Acquire);
        let delivering =
            since == 0 || self.shared.now_ms() + 1 - since < STALLED.as_millis() as u64;
        self.shared.subscribed.load(Ordering::Acquire)
            && fresh
            && delivering
            && self.shared.peers_heard.load(Ordering::Acquire)
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        // No more heartbeats, and nothing more heard: this node is leaving.
        self.shared.closed.store(true, Ordering::Release);
        self.subscriber.abort();
        let (client, node) = (self.client.clone(), self.shared.node.clone());
        let seq = self.shared.change_seq.load(Ordering::Acquire);
        Box::pin(async move {
            let goodbye = [(
                CHANGES.to_owned(),
                signed(&node, format!("{seq} G").as_bytes()),
                None,
            )];
            let mut connection = None;
            let _ = tokio::time::timeout(REPLY, send(&client, &mut connection, &goodbye)).await;
        })
    }

    fn settled(&self, topics: &[Topic]) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let channels = channels_of(topics);
        let shared = self.shared.clone();
        Box::pin(async move {
            let confirmed = async {
                loop {
                    let notified = shared.live_wake.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    // Not subscribed at all: the next subscription resyncs
                    // every watch anyway.
                    if !shared.subscribed.load(Ordering::Acquire) || shared.all_live(&channels) {
                        return;
                    }
                    notified.await;
                }
            };
            let _ = tokio::time::timeout(FRESH, confirmed).await;
        })
    }

    fn subscribe(&self, topics: Vec<Topic>, capacity: usize) -> Subscription {
        let channels = channels_of(&topics);
        let subscription = self.local.subscribe(topics, capacity);
        if channels.is_empty() {
            return subscription;
        }
        self.shared.watch(&channels);
        subscription.holding(Box::new(Watching {
            shared: self.shared.clone(),
            channels,
        }))
    }

    fn watch(&self, topics: Vec<Topic>) -> Signal {
        // Access changes reach every node on `unio:changes`.
        self.local.watch(topics)
    }
}

/// The notification channels of the users among `topics`.
fn channels_of(topics: &[Topic]) -> Vec<String> {
    topics
        .iter()
        .filter_map(|t| match t {
            Topic::User(id) => Some(format!("{USER_PREFIX}{id}")),
            _ => None,
        })
        .collect()
}

/// A change's description: what changed (`A`ccess or `D`ata) and where.
fn change(kind: &str, topic: &Topic) -> String {
    let (tag, id) = match topic {
        Topic::User(id) => ("u", id),
        Topic::Session(id) => ("s", id),
        Topic::Meeting(id) => ("m", id),
        Topic::Room(id) => ("r", id),
    };
    format!("{kind} {tag}:{id}")
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
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn watch(&self, channels: &[String]) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for channel in channels {
            let count = watched.entry(channel.clone()).or_default();
            *count += 1;
            if *count == 1 {
                dirty.insert(channel.clone());
                self.dirty_wake.notify_one();
            }
        }
    }

    fn unwatch(&self, channels: &[String]) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for channel in channels {
            if let Some(count) = watched.get_mut(channel) {
                *count -= 1;
                if *count == 0 {
                    watched.remove(channel);
                    dirty.insert(channel.clone());
                }
            }
        }
    }

    /// The channels to subscribe and to unsubscribe since the last call.
    fn take_dirty(&self) -> (Vec<String>, Vec<String>) {
        let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        let (mut on, mut off) = (Vec::new(), Vec::new());
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for channel in dirty {
            if watched.contains_key(&channel) {
                on.push(channel);
            } else {
                // No longer vouched for from this moment: a watch opened
                // again meanwhile waits for its own subscribe.
                live.remove(&channel);
                off.push(channel);
            }
        }
        (on, off)
    }

    fn awaiting_redis(&self) -> Awaiting<'_> {
        self.awaiting_since
            .store(self.now_ms() + 1, Ordering::Release);
        Awaiting(self)
    }

    fn all_live(&self, channels: &[String]) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        channels.iter().all(|channel| live.contains(channel))
    }

    /// Records what Redis confirmed: `on` subscribed, `off` not.
    fn confirmed(&self, on: &[String], off: &[String]) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for channel in on {
            if channel != CHANGES {
                live.insert(channel.clone());
            }
        }
        for channel in off {
            live.remove(channel);
        }
        drop(live);
        self.live_wake.notify_waiters();
    }

    /// Access changes may have been missed: guards re-check, caches start
    /// over.
    fn suspect(&self, local: &LocalBus) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        local.fire_signals();
    }

    /// Anything may have been missed, notifications too.
    fn resync(&self, local: &LocalBus) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        local.lost_all();
    }
}

/// A watch's interest in its users' channels, dropped with it.
struct Watching {
    shared: Arc<Shared>,
    channels: Vec<String>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.shared.unwatch(&self.channels);
    }
}

async fn backoff(attempt: &mut u32) {
    let wait = Duration::from_millis(50 << (*attempt).min(5)).min(MAX_BACKOFF);
    *attempt += 1;
    tokio::time::sleep(wait).await;
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
}

/// Publishes in order, in pipelines, and says every [`TICK`] which change
/// number this node is at. A batch that fails is tried once more on a new
/// connection (a connection Redis dropped fails only when used), then
/// dropped: the heartbeat's number shows the others the gap.
async fn publisher(
    client: redis::Client,
    shared: Arc<Shared>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut heartbeat = tokio::time::interval(TICK);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    // The number of the last change sent or given up on.
    let mut done_seq = 0u64;
    loop {
        tokio::select! {
            received = outgoing.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                if let Err(err) = send(&client, &mut connection, &batch).await {
                    tracing::warn!(error = %err, dropped = batch.len(), "bus: publish failed");
                    if batch.iter().any(|(_, _, seq)| seq.is_none()) {
                        // Notifications have no numbers: one for them
                        // shows the loss.
                        let seq = shared.change_seq.fetch_add(1, Ordering::AcqRel) + 1;
                        shared.dropped_seq.fetch_max(seq, Ordering::AcqRel);
                    }
                }
                if let Some(seq) = batch.iter().filter_map(|(_, _, seq)| *seq).max() {
                    done_seq = done_seq.max(seq);
                }
                batch.clear();
            }
            _ = heartbeat.tick() => {
                if shared.closed.load(Ordering::Acquire) {
                    continue;
                }
                let seq = done_seq.max(shared.dropped_seq.load(Ordering::Acquire));
                let beat = signed(&shared.node, format!("{seq} H").as_bytes());
                let _ = send(&client, &mut connection, &[(CHANGES.to_owned(), beat, None)]).await;
            }
        }
    }
}

async fn send(
    client: &redis::Client,
    connection: &mut Option<MultiplexedConnection>,
    batch: &[Outgoing],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (channel, payload, _) in batch {
        pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
    }
    let mut last = Ok(());
    for _ in 0..2 {
        let conn = match connection {
            Some(conn) => conn,
            None => {
                let connecting = client.get_multiplexed_async_connection();
                match tokio::time::timeout(CONNECT, connecting).await {
                    Ok(Ok(conn)) => connection.insert(conn),
                    Ok(Err(err)) => return Err(err),
                    Err(_) => return Err(timed_out()),
                }
            }
        };
        last = pipe.query_async::<()>(conn).await;
        if last.is_ok() {
            return last;
        }
        *connection = None;
    }
    last
}

/// What this node knows of the others: their last change number and when
/// they were last heard.
#[derive(Default)]
struct Peers {
    known: HashMap<Vec<u8>, (u64, Instant)>,
}

impl Peers {
    /// Notes `seq` from `node` (a change, or with `beat` a heartbeat);
    /// true when changes of it were missed.
    fn heard(&mut self, node: &[u8], seq: u64, beat: bool, now: Instant) -> bool {
        match self.known.get_mut(node) {
            Some((last, heard)) => {
                let missed = if beat { seq > *last } else { seq > *last + 1 };
                *last = (*last).max(seq);
                *heard = now;
                missed
            }
            None => {
                // A node first heard with history (back from a silence
                // long enough to be forgotten) may have said what we missed.
                let first = if beat { 0 } else { 1 };
                self.known.insert(node.to_vec(), (seq, now));
                seq > first
            }
        }
    }

    /// Forgets peers silent for [`PEER_GONE`]; whether all the others
    /// were heard within [`PEER_SILENT`].
    fn all_heard(&mut self, now: Instant) -> bool {
        self.known
            .retain(|_, (_, heard)| now.duration_since(*heard) < PEER_GONE);
        self.known
            .values()
            .all(|(_, heard)| now.duration_since(*heard) < PEER_SILENT)
    }
}

/// Keeps this node subscribed, and delivers what others publish.
async fn subscriber(client: redis::Client, shared: Arc<Shared>, local: Weak<LocalBus>) {
    let mut attempt = 0;
    let mut peers = Peers::default();
    loop {
        let Some(bus) = local.upgrade() else { return };
        drop(bus);
        let connecting = tokio::time::timeout(CONNECT, subscribe_all(&client, &shared));
        tokio::pin!(connecting);
        let mut unhealthy = tokio::time::interval(Duration::from_secs(1));
        unhealthy.tick().await;
        let connected = loop {
            tokio::select! {
                connected = &mut connecting => break connected,
                // Still cut off: guards keep re-checking every second.
                _ = unhealthy.tick() => {
                    if let Some(local) = local.upgrade() {
                        shared.suspect(&local);
                    }
                }
            }
        };
        match connected {
            Ok(Ok((sink, messages))) => {
                attempt = 0;
                shared.pong_ms.store(shared.now_ms(), Ordering::Release);
                shared.subscribed.store(true, Ordering::Release);
                tracing::info!("bus: subscribed to Redis");
                if let Some(local) = local.upgrade() {
                    shared.resync(&local);
                }
                if let Some(rooms) = shared.rooms.get().and_then(Weak::upgrade) {
                    rooms.resubscribed();
                }
                listen(&shared, &local, &mut peers, sink, messages).await;
                shared.subscribed.store(false, Ordering::Release);
                tracing::warn!("bus: lost the Redis subscription; serving this node alone");
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "bus: cannot subscribe to Redis"),
            Err(_) => tracing::warn!("bus: Redis did not answer in time"),
        }
        shared.subscribed.store(false, Ordering::Release);
        // Unhealthy: guards re-check about every second until back.
        if let Some(local) = local.upgrade() {
            shared.suspect(&local);
        }
        backoff(&mut attempt).await;
    }
}

/// A subscription to `unio:changes` and every watched user's channel.
async fn subscribe_all(
    client: &redis::Client,
    shared: &Shared,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (sink, messages) = client.get_async_pubsub().await?.split();
    // Everything watched now is subscribed here; what changes later is
    // picked up by the next tick.
    shared
        .dirty
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let mut channels: Vec<String> = shared
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    channels.push(CHANGES.to_owned());
    if !each(&sink, &channels, true).await {
        return Err(timed_out());
    }
    shared
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    shared.confirmed(&channels, &[]);
    Ok((sink, messages))
}

/// Delivers until the subscription ends; every [`TICK`] applies watch
/// changes, pings Redis and looks at the peers, each bounded by [`REPLY`].
async fn listen(
    shared: &Shared,
    local: &Weak<LocalBus>,
    peers: &mut Peers,
    mut sink: PubSubSink,
    mut messages: PubSubStream,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pings = 0u64;
    let mut healthy = true;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return };
                let Some(local) = local.upgrade() else { return };
                deliver(shared, &local, peers, &message);
            }
            // A new watch is subscribed at once (its notifications from
            // other nodes start arriving one round trip later); closed ones
            // wait for the tick.
            _ = shared.dirty_wake.notified() => {
                if !apply_watches(shared, &sink).await {
                    return;
                }
            }
            _ = tick.tick() => {
                let Some(local) = local.upgrade() else { return };
                if !apply_watches(shared, &sink).await {
                    return;
                }
                pings += 1;
                let token = format!("unio-{pings}");
                let pong = {
                    let _waiting = shared.awaiting_redis();
                    tokio::time::timeout(REPLY, sink.ping_message::<Vec<String>>(&token)).await
                };
                if !matches!(&pong, Ok(Ok(reply)) if reply.last() == Some(&token)) {
                    return;
                }
                shared.pong_ms.store(shared.now_ms(), Ordering::Release);
                let heard = peers.all_heard(Instant::now());
                shared.peers_heard.store(heard, Ordering::Release);
                if !heard {
                    // A silent peer may be revoking what we cannot hear.
                    if pings % 4 == 0 || healthy {
                        shared.suspect(&local);
                    }
                } else if !healthy {
                    // Back: what was kept before may be stale.
                    shared.suspect(&local);
                }
                healthy = heard;
            }
        }
    }
}

/// (Un)subscribes the channels of watches opened or closed since last
/// time; false if Redis did not answer in time.
async fn apply_watches(shared: &Shared, sink: &PubSubSink) -> bool {
    let (on, off) = shared.take_dirty();
    let _waiting = shared.awaiting_redis();
    if !each(sink, &on, true).await || !each(sink, &off, false).await {
        return false;
    }
    shared.confirmed(&on, &off);
    true
}

/// (Un)subscribes `channels`, one command each, all within [`REPLY`].
/// Redis answers a SUBSCRIBE of N channels N times, and redis-rs would
/// take the extra answers for the replies to later requests (a ping).
async fn each(sink: &PubSubSink, channels: &[String], on: bool) -> bool {
    let mut requests = tokio::task::JoinSet::new();
    for channel in channels {
        let (mut sink, channel) = (sink.clone(), channel.clone());
        requests.spawn(async move {
            if on {
                sink.subscribe(&channel).await
            } else {
                sink.unsubscribe(&channel).await
            }
        });
    }
    let all = async {
        while let Some(done) = requests.join_next().await {
            if !matches!(done, Ok(Ok(()))) {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(REPLY, all).await.unwrap_or(false)
}

/// Hands another node's event to this node's subscribers.
fn deliver(shared: &Shared, local: &LocalBus, peers: &mut Peers, message: &redis::Msg) {
    let payload = message.get_payload_bytes();
    let channel = message.get_channel_name();
    if let Some(room) = channel.strip_prefix(room_log::CHANNEL_PREFIX) {
        if let Some(rooms) = shared.rooms.get().and_then(Weak::upgrade) {
            rooms.published(room, payload);
        }
        return;
    }
    let Some(split) = payload.iter().position(|b| *b == b'\n') else {
        return;
    };
    let (origin, body) = (&payload[..split], &payload[split + 1..]);
    if origin == shared.node.as_bytes() {
        return;
    }
    if channel == CHANGES {
        let Some((seq, rest)) = std::str::from_utf8(body)
            .ok()
            .and_then(|body| body.split_once(' '))
            .and_then(|(seq, rest)| Some((seq.parse::<u64>().ok()?, rest)))
        else {
            tracing::warn!("bus: unreadable change ignored");
            return;
        };
        let beat = rest == "H" || rest == "G";
        if peers.heard(origin, seq, beat, Instant::now()) {
            tracing::warn!("bus: missed events from another node; re-checking everything");
            shared.resync(local);
        }
        if rest == "G" {
            // It stopped: its silence from now on is no partition.
            peers.known.remove(origin);
        }
        if beat {
            return;
        }
        match parse_change(rest) {
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
            let (event, back) = parse_change(&body).unwrap();
            assert!(matches!(event, BusEvent::AccessChanged));
            assert_eq!(back, topic);
        }
        assert!(parse_change("X u:1").is_none());
        assert!(parse_change("A q:1").is_none());
        assert!(parse_change("garbage").is_none());
    }

    #[test]
    fn gaps_and_silences_of_peers_are_noticed() {
        let start = Instant::now();
        let mut peers = Peers::default();
        assert!(
            !peers.heard(b"a", 0, true, start),
            "a new node's first beat"
        );
        assert!(!peers.heard(b"a", 1, false, start));
        assert!(!peers.heard(b"a", 2, false, start));
        assert!(
            !peers.heard(b"a", 2, true, start),
            "a beat at the last change"
        );
        assert!(peers.heard(b"a", 4, false, start), "3 was missed");
        assert!(peers.heard(b"a", 6, true, start), "5 and 6 were missed");
        assert!(
            peers.heard(b"b", 9, true, start),
            "first heard with history"
        );
        assert!(peers.all_heard(start + Duration::from_millis(500)));
        assert!(!peers.all_heard(start + PEER_SILENT), "silent for a second");
        assert!(peers.all_heard(start + PEER_GONE), "forgotten");
        assert!(peers.known.is_empty());
    }
}
