//! The hub's link to the other nodes (DESIGN §9): a room's events take one
//! path on every node — into the room's log in Redis, which numbers them,
//! then back from the room's channel to every node with participants in
//! it, this one included. So every participant, wherever it is served,
//! sees one order.
//!
//! - [`Record`]: what goes into the log: an event, its audience, or a
//!   control (a user the host removed).
//! - [`Link`]: appends in order, in pipelines, from one task per node (the
//!   hub queues under a room's lock, so a room's events leave in the order
//!   they happened here); reads snapshots and replays for the hub.
//! - [`RoomLink`]: a room's state on this node while it is shared: who is
//!   in it everywhere, and whether this node has caught up with its log.
//!
//! Redis does the ordering (a script per append); what is ours is the
//! queue in front of it and the catching up after it, since a node must
//! hold back deliveries until it knows where it stands.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prost::Message;
use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::{
    bus::Bus,
    redis_bus::RedisBus,
    room::Audience,
    room_log::{Replay, RoomLog, RosterOp, Snapshot},
};
use crate::proto::pb::{self, server_event::Event};

/// Appends waiting for Redis; past this many, or [`QUEUE_BYTES`], events
/// are dropped (and logged).
const QUEUE: usize = 16_384;
const QUEUE_BYTES: usize = 64 << 20;
/// Appends sent in one pipeline.
const BATCH: usize = 256;
/// A run of one room's plain records goes in one script call up to this
/// many bytes (a record is at most a few hundred KiB).
const RUN_BYTES: usize = 1 << 20;
/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(2);
/// How long one pipeline or read may take.
const REPLY: Duration = Duration::from_secs(2);
/// How long one attempt at a pipeline of appends may take.
const APPEND_REPLY: Duration = Duration::from_millis(500);
/// Records (and bytes) a room holds back while it catches up; past this
/// it re-reads them from the log.
pub const PENDING_MAX: usize = 1024;
pub const PENDING_BYTES: usize = 8 << 20;

/// One entry of a room's log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// The event (its `sequence` is the log's number, set on delivery).
    #[prost(message, optional, tag = "1")]
    pub event: Option<pb::ServerEvent>,
    /// 0: everyone; 1: only `participant_id`; 2: everyone but them.
    #[prost(uint32, tag = "2")]
    pub audience: u32,
    #[prost(string, tag = "3")]
    pub participant_id: String,
    /// The host removed this user: every node takes their participants
    /// out and keeps them out.
    #[prost(string, tag = "4")]
    pub removed_user: String,
    /// The node that appended it, and its number there: an append tried
    /// again (after a timeout that hid its success) or delivered here
    /// while Redis was away is applied once.
    #[prost(string, tag = "5")]
    pub origin: String,
    #[prost(uint64, tag = "6")]
    pub rid: u64,
    /// This participant resumed on the record's origin: its slot elsewhere
    /// goes quietly.
    #[prost(string, tag = "7")]
    pub moved: String,
    /// A client event Published on another node for session
    /// `forward_session` (of `forward_user`), which `forward_node` serves.
    #[prost(bytes = "vec", tag = "8")]
    pub forward: Vec<u8>,
    #[prost(string, tag = "9")]
    pub forward_session: String,
    #[prost(string, tag = "10")]
    pub forward_user: String,
    #[prost(string, tag = "11")]
    pub forward_node: String,
    /// This participant (of the record's origin) waits in the lobby.
    #[prost(message, optional, tag = "12")]
    pub waiting: Option<pb::Participant>,
    /// This participant left the lobby without being let in.
    #[prost(string, tag = "13")]
    pub unwaiting: String,
    /// A host or co-host admitted this waiting participant: its node lets
    /// it in.
    #[prost(string, tag = "14")]
    pub admit: String,
    /// A host or co-host denied this waiting participant: its node turns
    /// it away.
    #[prost(string, tag = "15")]
    pub deny: String,
}

impl Record {
    pub fn event(to: &Audience, event: Event) -> Self {
        let (audience, participant_id) = match to {
            Audience::All => (0, String::new()),
            Audience::Only(id) => (1, id.clone()),
            Audience::AllExcept(id) => (2, id.clone()),
        };
        Self {
            event: Some(pb::ServerEvent {
                sequence: 0,
                event: Some(event),
            }),
            audience,
            participant_id,
            ..Default::default()
        }
    }

    pub fn audience(&self) -> Audience {
        match self.audience {
            1 => Audience::Only(self.participant_id.clone()),
            2 => Audience::AllExcept(self.participant_id.clone()),
            _ => Audience::All,
        }
    }
}

/// A [`Record`] read as far as where it goes, its event left encoded:
/// in a busy cluster most records a node hears are signals to
/// participants served elsewhere, which it only keeps for replay
/// ([`RecordHead::passing`]). Decoded from a [`bytes::Bytes`], its fields
/// are slices of it, not copies. Every field of [`Record`] is here (the
/// control ones as bytes), so that a record doing more than carry an event
/// is seen as such.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecordHead {
    /// The encoded `ServerEvent`.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub event: Option<bytes::Bytes>,
    #[prost(uint32, tag = "2")]
    pub audience: u32,
    #[prost(bytes = "bytes", tag = "3")]
    pub participant_id: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    pub removed_user: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub origin: bytes::Bytes,
    #[prost(uint64, tag = "6")]
    pub rid: u64,
    #[prost(bytes = "bytes", tag = "7")]
    pub moved: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "8")]
    pub forward: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "9")]
    pub forward_session: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "10")]
    pub forward_user: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "11")]
    pub forward_node: bytes::Bytes,
    #[prost(bytes = "bytes", optional, tag = "12")]
    pub waiting: Option<bytes::Bytes>,
    #[prost(bytes = "bytes", tag = "13")]
    pub unwaiting: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "14")]
    pub admit: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "15")]
    pub deny: bytes::Bytes,
}

/// The `ServerEvent` field that holds a signal.
const SIGNAL_FIELD: u32 = 5;

impl RecordHead {
    /// For a record that only carries a signal to one participant: that
    /// participant's id and the encoded event. Anything else (another
    /// audience, another kind of event, a control) is `None`: it is
    /// decoded and applied whole.
    pub fn passing(&self) -> Option<(&str, &[u8])> {
        let controls = [
            &self.removed_user,
            &self.moved,
            &self.forward,
            &self.forward_session,
            &self.forward_user,
            &self.forward_node,
            &self.unwaiting,
            &self.admit,
            &self.deny,
        ];
        if self.audience != 1
            || self.waiting.is_some()
            || controls.iter().any(|field| !field.is_empty())
        {
            return None;
        }
        let event = self.event.as_deref()?;
        if event_field(event)? != SIGNAL_FIELD {
            return None;
        }
        let to = std::str::from_utf8(&self.participant_id).ok()?;
        Some((to, event))
    }

    pub fn origin(&self) -> Option<&str> {
        std::str::from_utf8(&self.origin).ok()
    }
}

/// The number of the field that holds an encoded `ServerEvent`'s event
/// (the oneof), past its `sequence` if that is set; `None` unless the
/// encoding holds exactly one such field, length-delimited, and nothing
/// else (prost would take the last of several, so a second one must not
/// go unseen).
fn event_field(mut encoded: &[u8]) -> Option<u32> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut field = None;
    while !encoded.is_empty() {
        let (tag, wire_type) = decode_key(&mut encoded).ok()?;
        match (tag, wire_type) {
            (1, WireType::Varint) => {
                decode_varint(&mut encoded).ok()?;
            }
            (1, _) => return None,
            (tag, WireType::LengthDelimited) if field.is_none() => {
                let len = usize::try_from(decode_varint(&mut encoded).ok()?).ok()?;
                encoded = encoded.get(len..)?;
                field = Some(tag);
            }
            _ => return None,
        }
    }
    field
}

/// What a resume token is kept as in a roster.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[derive(Debug, PartialEq)]
struct Append {
    room: String,
    record: Vec<u8>,
    op: RosterOp,
}

/// A connection for commands, made again after a failure.
struct Connector {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Connector {
    async fn get(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(conn);
        }
        // Replies may take as long as our own bounds allow (redis-rs would
        // give up on each after 500 ms): a claim that Redis is slow to
        // answer is waited for, not taken for failed.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(REPLY));
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let conn = tokio::time::timeout(CONNECT, connecting)
            .await
            .map_err(|_| timed_out())??;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    fn reset(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))
}

/// See the module doc.
pub struct Link {
    bus: Arc<RedisBus>,
    out: mpsc::Sender<Append>,
    /// Bytes of records queued.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// This node's last record number, taken and queued under one lock so
    /// that the queue (and so the log) holds them in order.
    rid: Mutex<u64>,
    reads: Arc<Connector>,
    /// The heartbeats' own connection: a large read (a replay) on the
    /// connection for reads must not hold them back.
    beats: Connector,
    keep: usize,
    /// Every node reads runs: a room's plain records may go together.
    runs: Arc<std::sync::atomic::AtomicBool>,
    /// Resumes from another node reading the log at once.
    resumes: tokio::sync::Semaphore,
    /// A prune of this node's rosters is running; another was asked for
    /// meanwhile.
    pruning: std::sync::atomic::AtomicBool,
    prune_again: std::sync::atomic::AtomicBool,
}

/// How many resumes from another node may read a room's log at once:
/// each reads up to a replay ring's bytes, on the connection the
/// heartbeats share.
const RESUME_READS: usize = 4;

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("node", &self.node()).finish()
    }
}

impl Link {
    /// Starts the appender; `keep` events per room stay replayable.
    pub fn start(bus: Arc<RedisBus>, keep: usize) -> Arc<Self> {
        let (out, rx) = mpsc::channel(QUEUE);
        let writes = Arc::new(Connector {
            client: bus.client().clone(),
            conn: Mutex::new(None),
        });
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runs = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(appender(
            writes,
            bus.clone(),
            keep,
            rx,
            queued.clone(),
            runs.clone(),
        ));
        let reads = Arc::new(Connector {
            client: bus.client().clone(),
            conn: Mutex::new(None),
        });
        let beats = Connector {
            client: bus.client().clone(),
            conn: Mutex::new(None),
        };
        Arc::new(Self {
            bus,
            out,
            queued,
            rid: Mutex::new(0),
            reads,
            beats,
            keep,
            runs,
            resumes: tokio::sync::Semaphore::new(RESUME_READS),
            pruning: std::sync::atomic::AtomicBool::new(false),
            prune_again: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the caller is to prune this node's rosters now: false when
    /// a prune is running, which then runs once more.
    pub fn start_pruning(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.prune_again.store(true, Ordering::SeqCst);
        self.pruning
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The pruning task is gone without finishing (it panicked): the next
    /// resubscription starts another.
    pub fn abandon_pruning(&self) {
        self.pruning
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the pruning task runs a pass (one was asked for since its
    /// last); once it says no, the task is over.
    pub fn next_prune(&self) -> bool {
        use std::sync::atomic::Ordering;
        loop {
            if self.prune_again.swap(false, Ordering::SeqCst) {
                return true;
            }
            self.pruning.store(false, Ordering::SeqCst);
            // Asked between the swap and the store, with no task started
            // for it: this one goes on.
            if !(self.prune_again.load(Ordering::SeqCst)
                && self
                    .pruning
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok())
            {
                return false;
            }
        }
    }

    /// Whether every node reads runs (from each heartbeat's answer): a
    /// node of an earlier version would drop them.
    pub fn set_runs(&self, runs: bool) {
        self.runs.store(runs, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn node(&self) -> &str {
        self.bus.node()
    }

    pub fn bus(&self) -> &Arc<RedisBus> {
        &self.bus
    }

    /// Queues `record` for `room`'s log (with what it does to the roster).
    /// False when the queue is full: the record was refused (a client's
    /// event is answered "busy, slow down"; see the hub's `emit`).
    pub fn append(&self, room: &str, mut record: Record, op: RosterOp) -> bool {
        use std::sync::atomic::Ordering;
        record.origin = self.node().to_owned();
        let mut rid = self.rid.lock().unwrap_or_else(|p| p.into_inner());
        *rid += 1;
        record.rid = *rid;
        let record = record.encode_to_vec();
        let bytes = record.len() + room.len();
        if self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes > QUEUE_BYTES {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            tracing::debug!(room, "room log: append queue full; event refused");
            return false;
        }
        let append = Append {
            room: room.to_owned(),
            record,
            op,
        };
        let sent = self.out.try_send(append);
        if sent.is_err() {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(room, "room log: append queue full; event refused");
                false
            }
            // Stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The logs, on this link's connection for reads.
    pub async fn log(&self) -> redis::RedisResult<RoomLog> {
        Ok(RoomLog::new(self.reads.get().await?, self.keep))
    }

    /// `read` within [`REPLY`]; a failure drops the connection for reads.
    async fn bounded<T>(
        &self,
        read: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let result = tokio::time::timeout(REPLY, read)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if result.is_err() {
            self.reads.reset();
        }
        result
    }

    /// Drops the connection for reads (after a failure on it).
    pub fn reset(&self) {
        self.reads.reset();
    }

    /// The logs, on the heartbeats' connection.
    pub async fn liveness_log(&self) -> redis::RedisResult<RoomLog> {
        Ok(RoomLog::new(self.beats.get().await?, self.keep))
    }

    /// Drops the heartbeats' connection (after a failed round).
    pub fn reset_liveness(&self) {
        self.beats.reset();
    }

    /// The rooms this node is tracked in (where the roster may name it).
    pub async fn tracked_rooms(&self) -> redis::RedisResult<Vec<String>> {
        self.bounded(async { self.log().await?.rooms_of(self.node()).await })
            .await
    }

    /// The room's number and roster now.
    pub async fn snapshot(&self, room: &str) -> redis::RedisResult<Snapshot> {
        self.bounded(async { self.log().await?.snapshot(room).await })
            .await
    }

    /// Moves the room's counter on to at least `to` (a log Redis lost).
    pub async fn advance(&self, room: &str, to: u64) -> redis::RedisResult<()> {
        self.bounded(async { self.log().await?.advance(room, to).await })
            .await
    }

    /// Where session `session_id` lives, if a node registered it.
    pub async fn session_home(
        &self,
        session_id: &str,
    ) -> redis::RedisResult<Option<super::room_log::SessionHome>> {
        self.bounded(async { self.log().await?.session_home(session_id).await })
            .await
    }

    /// The number of `participant_id`'s join, 0 if not recorded.
    pub async fn joined_at(&self, room: &str, participant_id: &str) -> redis::RedisResult<u64> {
        self.bounded(async { self.log().await?.joined_at(room, participant_id).await })
            .await
    }

    /// The room's records after `after`.
    pub async fn since(&self, room: &str, after: u64) -> redis::RedisResult<Replay> {
        self.bounded(async { self.log().await?.since(room, after).await })
            .await
    }

    /// [`Link::since`] for a participant resuming here from another node,
    /// a few at a time: what a client asks for, it must not be able to
    /// make this node read without bound.
    pub async fn resume_since(&self, room: &str, after: u64) -> redis::RedisResult<Replay> {
        let _permit = tokio::time::timeout(REPLY, self.resumes.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| timed_out())?;
        self.bounded(async { self.log().await?.replay_for_resume(room, after).await })
            .await
    }

    /// A room's shared state on this node, subscribed to its channel for
    /// as long as it lives.
    pub fn room(&self, room: &str) -> RoomLink {
        let (ready, _) = watch::channel(false);
        RoomLink {
            members: BTreeMap::new(),
            lobby: BTreeMap::new(),
            synced: false,
            known: false,
            syncing: false,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            again: false,
            repair: false,
            seen: std::collections::HashMap::new(),
            marker_checked: 0,
            ready,
            _interest: self.bus.hold_room(room),
        }
    }
}

/// Appends in the order queued, a pipeline at a time. A pipeline that
/// fails is tried again (records carry their origin's number, so one that
/// did go through is applied once) for as long as the bus is subscribed:
/// meanwhile the queue fills and clients hear "busy". While the bus is
/// cut off from Redis, each batch is tried once, then handed to the hub
/// to deliver to this node's participants alone, outside the room's
/// order (what they send each other keeps flowing; the others hear it
/// not).
async fn appender(
    conn: Arc<Connector>,
    bus: Arc<RedisBus>,
    keep: usize,
    mut rx: mpsc::Receiver<Append>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    runs: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let bytes: usize = batch.iter().map(|a| a.record.len() + a.room.len()).sum();
        let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
        let mut attempt = 0u32;
        loop {
            let sent = async {
                let mut connection = conn.get().await?;
                let log = RoomLog::new(connection.clone(), keep);
                let mut pipe = redis::pipe();
                // One script that fails (a record Redis refuses) must not
                // fail, and so repeat, the others.
                pipe.ignore_errors();
                RoomLog::load(&mut pipe);
                for call in calls(&batch, runs) {
                    match call {
                        Call::One(append) => {
                            log.add_append(&mut pipe, &append.room, &append.record, &append.op);
                        }
                        Call::Run(run) if run.len() == 1 => {
                            let append = run[0];
                            log.add_append(&mut pipe, &append.room, &append.record, &append.op);
                        }
                        Call::Run(run) => {
                            let records: Vec<&[u8]> =
                                run.iter().map(|a| a.record.as_slice()).collect();
                            log.add_run(&mut pipe, &run[0].room, &records);
                        }
                    }
                }
                pipe.query_async::<Vec<redis::Value>>(&mut connection).await
            };
            match tokio::time::timeout(APPEND_REPLY, sent).await {
                Ok(Ok(replies)) => {
                    let refused: Vec<&redis::Value> = replies
                        .iter()
                        .filter(|v| matches!(v, redis::Value::ServerError(_)))
                        .collect();
                    if let Some(first) = refused.first() {
                        tracing::warn!(count = refused.len(), error = ?first, "room log: appends refused by Redis");
                    }
                    break;
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "room log: append failed"),
                Err(_) => tracing::warn!("room log: Redis did not answer in time"),
            }
            conn.reset();
            attempt += 1;
            if !bus.healthy() {
                // Served here alone until Redis is back.
                if let Some(sink) = bus.room_sink() {
                    for append in &batch {
                        sink.unsent(&append.room, &append.record);
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
        }
        queued.fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
        batch.clear();
    }
}

/// One script call of a pipeline.
#[derive(Debug, PartialEq)]
enum Call<'a> {
    /// A record and what it does to the roster.
    One(&'a Append),
    /// Records of one room that do nothing else, in order.
    Run(Vec<&'a Append>),
}

/// The batch as script calls: a room's plain records join the run its
/// first one opened, until a record with a roster operation (in the same
/// room) comes between, so each room keeps its order. Rooms have no order
/// between them (each has its own numbers and channel). Without `runs`,
/// every record goes alone.
fn calls(batch: &[Append], runs: bool) -> Vec<Call<'_>> {
    let mut calls = Vec::with_capacity(batch.len());
    // Per room, its open run and the run's bytes.
    let mut open = std::collections::HashMap::<&str, (usize, usize)>::new();
    for append in batch {
        let room = append.room.as_str();
        if append.op != RosterOp::None || !runs {
            open.remove(room);
            calls.push(Call::One(append));
            continue;
        }
        let len = append.record.len();
        if let Some((i, bytes)) = open.get_mut(room)
            && *bytes + len <= RUN_BYTES
            && let Call::Run(run) = &mut calls[*i]
        {
            run.push(append);
            *bytes += len;
            continue;
        }
        open.insert(room, (calls.len(), len));
        calls.push(Call::Run(vec![append]));
    }
    calls
}

/// A room's state on this node while it is shared with others.
pub struct RoomLink {
    /// Everyone in the room, on any node, as of the last record applied.
    pub members: BTreeMap<String, pb::Participant>,
    /// Everyone waiting in the lobby, on any node.
    pub lobby: BTreeMap<String, pb::Participant>,
    /// Caught up with the log: records are applied as they come.
    pub synced: bool,
    /// Whether this node ever caught up (else it starts from a snapshot).
    pub known: bool,
    /// A task is catching the room up.
    pub syncing: bool,
    /// Records that came while catching up, by number, and their bytes.
    pub pending: BTreeMap<u64, Vec<u8>>,
    pub pending_bytes: usize,
    /// Records were dropped from `pending`, or the room may have missed
    /// some since the running catch-up read the log: read again.
    pub again: bool,
    /// Once caught up, say again who this node serves (Redis may have
    /// lost the roster, or another node taken them for dead).
    pub repair: bool,
    /// By origin node, the last record number applied.
    pub seen: std::collections::HashMap<String, u64>,
    /// A jump marker heard live is applied only as the log reads it (it
    /// may stand for an event this node missed); this one was held past a
    /// read already, and the log no longer has it.
    pub marker_checked: u64,
    /// Says joiners may go ahead.
    pub ready: watch::Sender<bool>,
    _interest: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for RoomLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomLink")
            .field("members", &self.members.len())
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

impl RoomLink {
    /// Applies what an event says about who is in the room.
    pub fn note(&mut self, event: &Event) {
        match event {
            Event::ParticipantJoined(joined) => {
                if let Some(p) = &joined.participant {
                    self.members.insert(p.participant_id.clone(), p.clone());
                }
            }
            Event::ParticipantLeft(left) => {
                self.members.remove(&left.participant_id);
            }
            Event::MediaState(media) => {
                if let Some(p) = self.members.get_mut(&media.participant_id) {
                    p.media_state = media.media_state;
                }
            }
            _ => {}
        }
    }

    /// Takes the roster of `snapshot` as who is in the room.
    pub fn adopt(&mut self, snapshot: &Snapshot) {
        let entries = |waiting: bool| {
            snapshot
                .roster
                .iter()
                .filter(move |(_, member)| member.waiting == waiting)
                .filter_map(|(id, member)| {
                    let p = pb::Participant::decode(member.participant.as_slice()).ok()?;
                    (p.participant_id == *id).then(|| (id.clone(), p))
                })
        };
        self.members = entries(false).collect();
        self.lobby = entries(true).collect();
    }

    /// Holds back record `seq` until caught up; false if it had to be
    /// dropped (it is read from the log again).
    pub fn hold(&mut self, seq: u64, bytes: &[u8]) -> bool {
        if self.pending.len() >= PENDING_MAX || self.pending_bytes + bytes.len() > PENDING_BYTES {
            self.again = true;
            return false;
        }
        // A jump marker under a number the old room gave does not replace
        // the event this node did get under it.
        if bytes.is_empty() && self.pending.get(&seq).is_some_and(|held| !held.is_empty()) {
            return true;
        }
        self.pending_bytes += bytes.len();
        if let Some(old) = self.pending.insert(seq, bytes.to_vec()) {
            self.pending_bytes -= old.len();
        }
        true
    }

    /// The first held record, taken out.
    pub fn take_first(&mut self) -> Option<(u64, Vec<u8>)> {
        let (seq, bytes) = self.pending.pop_first()?;
        self.pending_bytes -= bytes.len();
        Some((seq, bytes))
    }

    /// Whether record `rid` of `origin` is new here (and notes it).
    pub fn first_time(&mut self, origin: &str, rid: u64) -> bool {
        if rid == 0 {
            return true;
        }
        // The origin's name is copied once, not for every record.
        let seen = match self.seen.get_mut(origin) {
            Some(seen) => seen,
            None => self.seen.entry(origin.to_owned()).or_default(),
        };
        if rid <= *seen {
            return false;
        }
        *seen = rid;
        true
    }

    pub fn set_ready(&mut self, ready: bool) {
        self.synced = ready;
        self.ready.send_replace(ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_their_audience() {
        for to in [
            Audience::All,
            Audience::Only("p1".into()),
            Audience::AllExcept("p2".into()),
        ] {
            let record = Record::event(&to, Event::Pong(pb::Pong {}));
            let back = Record::decode(record.encode_to_vec().as_slice()).unwrap();
            assert_eq!(back.audience(), to);
            assert!(back.event.is_some());
        }
    }

    #[test]
    fn only_plain_signals_to_one_participant_pass_undecoded() {
        let signal = Event::Signal(pb::IncomingSignal {
            from_participant_id: "p1".into(),
            payload: Some(pb::incoming_signal::Payload::IceCandidate(
                pb::IceCandidate {
                    candidate: "candidate:1".into(),
                    sdp_mid: "0".into(),
                    sdp_mline_index: 0,
                },
            )),
        });
        let head = |record: &Record| {
            RecordHead::decode(bytes::Bytes::from(record.encode_to_vec())).unwrap()
        };
        let mut record = Record::event(&Audience::Only("p2".into()), signal.clone());
        record.origin = "node-a".into();
        record.rid = 7;
        let read = head(&record);
        let (to, event) = read.passing().expect("a plain signal passes");
        assert_eq!(to, "p2");
        assert_eq!(read.origin(), Some("node-a"));
        assert_eq!(read.rid, 7);
        // The event is kept as it was encoded, and reads back whole.
        assert_eq!(
            pb::ServerEvent::decode(event).unwrap(),
            *record.event.as_ref().unwrap()
        );
        // Numbered or not, the event's kind is read past its sequence.
        let mut numbered = record.clone();
        numbered.event.as_mut().unwrap().sequence = 42;
        assert!(head(&numbered).passing().is_some());

        // Anything else is decoded whole.
        let everyone = Record::event(&Audience::All, signal.clone());
        assert!(head(&everyone).passing().is_none());
        let others = Record::event(&Audience::AllExcept("p2".into()), signal.clone());
        assert!(head(&others).passing().is_none());
        let chat = Record::event(&Audience::Only("p2".into()), Event::Pong(pb::Pong {}));
        assert!(head(&chat).passing().is_none());
        let controls: [fn(&mut Record); 10] = [
            |r| r.removed_user = "u".into(),
            |r| r.moved = "p".into(),
            |r| r.forward = vec![1],
            |r| r.forward_session = "s".into(),
            |r| r.forward_user = "u".into(),
            |r| r.forward_node = "n".into(),
            |r| r.waiting = Some(pb::Participant::default()),
            |r| r.unwaiting = "p".into(),
            |r| r.admit = "p".into(),
            |r| r.deny = "p".into(),
        ];
        for set in controls {
            let mut control = record.clone();
            set(&mut control);
            assert!(head(&control).passing().is_none(), "{control:?}");
        }
        let empty = Record {
            audience: 1,
            participant_id: "p2".into(),
            ..Default::default()
        };
        assert!(head(&empty).passing().is_none());
    }

    #[test]
    fn a_record_head_reads_every_field_of_a_record() {
        // A field added to Record but not to RecordHead would be skipped,
        // and a control taken for a plain signal: the head must carry
        // every field back out.
        let full = Record {
            event: Some(pb::ServerEvent {
                sequence: 3,
                event: Some(Event::Pong(pb::Pong {})),
            }),
            audience: 2,
            participant_id: "p".into(),
            removed_user: "u".into(),
            origin: "o".into(),
            rid: 9,
            moved: "m".into(),
            forward: vec![1, 2],
            forward_session: "s".into(),
            forward_user: "fu".into(),
            forward_node: "n".into(),
            waiting: Some(pb::Participant {
                participant_id: "w".into(),
                ..Default::default()
            }),
            unwaiting: "uw".into(),
            admit: "a".into(),
            deny: "d".into(),
        };
        let bytes = full.encode_to_vec();
        let head = RecordHead::decode(bytes::Bytes::from(bytes.clone())).unwrap();
        assert_eq!(head.encode_to_vec(), bytes);
    }

    #[test]
    fn an_events_kind_is_read_only_from_a_well_formed_encoding() {
        let pong = |sequence| {
            pb::ServerEvent {
                sequence,
                event: Some(Event::Pong(pb::Pong {})),
            }
            .encode_to_vec()
        };
        assert_eq!(event_field(&pong(0)), Some(12));
        assert_eq!(event_field(&pong(7)), Some(12));
        // Two events (prost would keep the last), a truncated one, a
        // number that is not a varint, nothing at all: not read.
        let twice = [pong(0), vec![0x2a, 0x00]].concat();
        assert_eq!(event_field(&twice), None);
        assert_eq!(event_field(&[0x2a, 0x05, 0x00]), None);
        assert_eq!(event_field(&[0x0a, 0x00]), None);
        assert_eq!(event_field(&pong(7)[..2]), None);
        assert_eq!(event_field(&[0x28, 0x01]), None);
        assert_eq!(event_field(&[]), None);
    }

    #[test]
    fn runs_keep_each_rooms_order() {
        let plain = |room: &str, record: u8| Append {
            room: room.into(),
            record: vec![record; 3],
            op: RosterOp::None,
        };
        let untrack = |room: &str| Append {
            room: room.into(),
            record: Vec::new(),
            op: RosterOp::Untrack { node: "n".into() },
        };
        let batch = [
            plain("a", 1),
            plain("b", 2),
            plain("a", 3),
            untrack("a"),
            plain("a", 4),
            plain("b", 5),
            plain("a", 6),
        ];
        let records = |call: &Call| match call {
            Call::One(a) => vec![a.record.first().copied().unwrap_or(0)],
            Call::Run(run) => run.iter().map(|a| a.record[0]).collect(),
        };
        let planned = calls(&batch, true);
        assert_eq!(
            planned.iter().map(records).collect::<Vec<_>>(),
            [vec![1, 3], vec![2, 5], vec![0], vec![4, 6]]
        );
        assert!(matches!(planned[2], Call::One(_)));
        // Until every node reads runs, each record goes alone.
        assert!(
            calls(&batch, false)
                .iter()
                .all(|c| matches!(c, Call::One(_)))
        );
        assert_eq!(calls(&batch, false).len(), batch.len());

        // A run stops growing at RUN_BYTES.
        let big = |record: u8| Append {
            room: "a".into(),
            record: vec![record; RUN_BYTES / 2],
            op: RosterOp::None,
        };
        let batch = [big(1), big(2), big(3)];
        assert_eq!(
            calls(&batch, true).iter().map(records).collect::<Vec<_>>(),
            [vec![1, 2], vec![3]]
        );
    }
}
