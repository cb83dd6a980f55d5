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
    redis_bus::RedisBus,
    room::Audience,
    room_log::{Replay, RoomLog, RosterOp, Snapshot},
};
use crate::proto::pb::{self, server_event::Event};

/// Appends waiting for Redis; past this, events are dropped (and logged).
const QUEUE: usize = 16_384;
/// Appends sent in one pipeline.
const BATCH: usize = 256;
/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(2);
/// How long one pipeline or read may take.
const REPLY: Duration = Duration::from_secs(2);
/// Records a room holds back while it catches up; past this it re-reads
/// them from the log.
pub const PENDING_MAX: usize = 4096;

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
            removed_user: String::new(),
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

/// What a resume token is kept as in a roster.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

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
        let conn = tokio::time::timeout(CONNECT, self.client.get_multiplexed_async_connection())
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
    reads: Arc<Connector>,
    keep: usize,
}

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
        tokio::spawn(appender(writes, keep, rx));
        let reads = Arc::new(Connector {
            client: bus.client().clone(),
            conn: Mutex::new(None),
        });
        Arc::new(Self {
            bus,
            out,
            reads,
            keep,
        })
    }

    pub fn node(&self) -> &str {
        self.bus.node()
    }

    pub fn bus(&self) -> &Arc<RedisBus> {
        &self.bus
    }

    /// Queues `record` for `room`'s log (with what it does to the roster).
    /// False when the queue is full and the record was dropped.
    pub fn append(&self, room: &str, record: &Record, op: RosterOp) -> bool {
        let append = Append {
            room: room.to_owned(),
            record: record.encode_to_vec(),
            op,
        };
        match self.out.try_send(append) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(room, "room log: append queue full; event dropped");
                false
            }
            // Stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    async fn log(&self) -> redis::RedisResult<RoomLog> {
        Ok(RoomLog::new(self.reads.get().await?, self.keep))
    }

    /// The room's number and roster now.
    pub async fn snapshot(&self, room: &str) -> redis::RedisResult<Snapshot> {
        let read = async { self.log().await?.snapshot(room).await };
        let result = tokio::time::timeout(REPLY, read)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if result.is_err() {
            self.reads.reset();
        }
        result
    }

    /// Moves the room's counter on to at least `to` (a log Redis lost).
    pub async fn advance(&self, room: &str, to: u64) -> redis::RedisResult<()> {
        let read = async { self.log().await?.advance(room, to).await };
        let result = tokio::time::timeout(REPLY, read)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if result.is_err() {
            self.reads.reset();
        }
        result
    }

    /// The room's records after `after`.
    pub async fn since(&self, room: &str, after: u64) -> redis::RedisResult<Replay> {
        let read = async { self.log().await?.since(room, after).await };
        let result = tokio::time::timeout(REPLY, read)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if result.is_err() {
            self.reads.reset();
        }
        result
    }

    /// A room's shared state on this node, subscribed to its channel for
    /// as long as it lives.
    pub fn room(&self, room: &str) -> RoomLink {
        let (ready, _) = watch::channel(false);
        RoomLink {
            members: BTreeMap::new(),
            synced: false,
            known: false,
            syncing: false,
            pending: BTreeMap::new(),
            ready,
            _interest: self.bus.hold_room(room),
        }
    }
}

/// Appends in the order queued, a pipeline at a time; a pipeline that
/// fails is tried once more on a new connection, then dropped.
async fn appender(conn: Arc<Connector>, keep: usize, mut rx: mpsc::Receiver<Append>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let mut sent = false;
        for _ in 0..2 {
            let attempt = async {
                let log = RoomLog::new(conn.get().await?, keep);
                let mut pipe = redis::pipe();
                for append in &batch {
                    log.add_append(&mut pipe, &append.room, &append.record, &append.op);
                    pipe.ignore();
                }
                pipe.query_async::<()>(&mut conn.get().await?).await
            };
            match tokio::time::timeout(REPLY, attempt).await {
                Ok(Ok(())) => {
                    sent = true;
                    break;
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "room log: append failed"),
                Err(_) => tracing::warn!("room log: Redis did not answer in time"),
            }
            conn.reset();
        }
        if !sent {
            tracing::warn!(dropped = batch.len(), "room log: events dropped");
        }
        batch.clear();
    }
}

/// A room's state on this node while it is shared with others.
pub struct RoomLink {
    /// Everyone in the room, on any node, as of the last record applied.
    pub members: BTreeMap<String, pb::Participant>,
    /// Caught up with the log: records are applied as they come.
    pub synced: bool,
    /// Whether this node ever caught up (else it starts from a snapshot).
    pub known: bool,
    /// A task is catching the room up.
    pub syncing: bool,
    /// Records that came while catching up, by number.
    pub pending: BTreeMap<u64, Vec<u8>>,
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
        self.members = snapshot
            .roster
            .iter()
            .filter_map(|(id, member)| {
                let p = pb::Participant::decode(member.participant.as_slice()).ok()?;
                (p.participant_id == *id).then(|| (id.clone(), p))
            })
            .collect();
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
}
