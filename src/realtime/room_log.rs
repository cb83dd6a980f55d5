//! One order per room across nodes (DESIGN §9): each room event gets its
//! sequence number from Redis, not from the node that produced it.
//!
//! [`RoomLog::append`] runs one Lua script, atomic in Redis: `INCR` the
//! room's counter, `XADD` the event to the room's stream under that number
//! (trimmed by number to about the replay window: `MINID`, so that a run
//! counts as its events), and `PUBLISH` it on the room's
//! channel. Redis runs scripts one at a time, so publication order *is*
//! sequence order, and every node subscribed to the room hears the same
//! order. The stream is the replay a resume needs, readable from any node
//! ([`RoomLog::since`]). Keys of a room nobody used for a day expire.
//!
//! Message on `unio:room:<id>`: the sequence number in decimal, `:`, then
//! the event's bytes ([`parse_published`]).
//!
//! A run of a room's events that change nothing else (signals, chat,
//! reactions) goes in one script call ([`RoomLog::add_run`]): `INCRBY`
//! the run's length, one stream entry under the run's last number, one
//! `PUBLISH` of `<first>+<count>:` and the events, each preceded by its
//! length (a protobuf varint). Redis spends most of an append on the call
//! itself, so under load a run costs about what one event did.
//!
//! Numbers never go back, even when Redis loses a room (restarted empty,
//! evicted, idle for a day): a counter starts at Redis's clock in
//! microseconds, above any number it gave before, and the log marks the
//! jump (`j`, the number jumped from: 0). [`RoomLog::advance`] moves a
//! counter up to the number a node had when it found Redis without the
//! room, with a marker under that number. Events may have gone with the
//! old room: a node's catch-up goes over a fresh start (its participants
//! were served live, and it replays nothing from before it) but not over
//! an advance (a node behind it missed the events the old room held); a
//! resume from before either fails. Numbers are therefore large; clients
//! only compare them.
//!
//! The roster (a hash per room) says who is in the room, which node serves
//! them and their resume token's hash; the same script changes it with the
//! event that announces the change ([`RosterOp`]), so that a join or leave
//! and its roster entry cannot disagree, and a leave or a reap goes out
//! once. Each node also says every second that it is alive (`unio:nodes`,
//! in Redis's clock) and which rooms it serves, so that the others can take
//! a dead node's participants out.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// What every room's channel name starts with.
pub const CHANNEL_PREFIX: &str = "unio:room:";

/// The room's channel.
pub fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

fn counter_key(room: &str) -> String {
    format!("unio:room:{room}:seq")
}

fn stream_key(room: &str) -> String {
    format!("unio:room:{room}:log")
}

fn roster_key(room: &str) -> String {
    format!("unio:room:{room}:roster")
}

/// Each participant's join number (by participant id), apart from the
/// roster so that a node of an earlier version reads the roster as ever.
fn joins_key(room: &str) -> String {
    format!("unio:room:{room}:joins")
}

/// Keys of a room idle this long go.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// Starts a room's counter at Redis's clock if it has none, and marks the
/// jump in the log (KEYS: counter, stream, channel; ARGV[2]: the stream's
/// length, ARGV[3]: the keys' idle time).
macro_rules! counter_start {
    () => {
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  local start = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[1], start, 'PX', ARGV[3])
  redis.call('XADD', KEYS[2], 'MINID', '~', string.format('%d', tonumber(start) - tonumber(ARGV[2]) + 1), start .. '-0', 'e', '', 'j', '0')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PUBLISH', KEYS[3], start .. ':')
end
"
    };
}

const APPEND: &str = concat!(
    r"
local op, pid, node = ARGV[4], ARGV[5], ARGV[7]
local tracked = 'unio:node:' .. node .. ':rooms'
if op == 'untrack' then
  -- Not while the roster names this node (a claim may have come since);
  -- only the fields naming nodes are read.
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[4], cursor, 'MATCH', 'o:*', 'COUNT', 512)
    cursor = page[1]
    for i = 2, #page[2], 2 do
      if page[2][i] == node then
        return 0
      end
    end
  until cursor == '0'
  redis.call('SREM', tracked, ARGV[9])
  return 0
end
if op == 'unsession' then
  local home = redis.call('GET', 'unio:session:' .. pid)
  if home and string.sub(home, 1, #node + 1) == node .. ' ' then
    redis.call('DEL', 'unio:session:' .. pid)
  end
  return 0
end
if op == 'session' then
  redis.call('SET', 'unio:session:' .. pid, node .. ' ' .. ARGV[9] .. ' ' .. ARGV[6], 'PX', ARGV[3])
  return 0
end
if (op == 'reap' or op == 'del') and redis.call('HGET', KEYS[4], 'o:' .. pid) ~= node then
  return 0
end
if op == 'rejoin' and redis.call('HEXISTS', KEYS[4], 'o:' .. pid) == 1 then
  return 0
end
if op == 'claim' then
  if redis.call('HGET', KEYS[4], 't:' .. pid) ~= ARGV[8] then
    return 0
  end
  redis.call('HSET', KEYS[4], 'o:' .. pid, node)
  redis.call('SADD', tracked, ARGV[9])
end
if op == 'join' or op == 'rejoin' then
  redis.call('HDEL', KEYS[4], 'w:' .. pid)
  redis.call('HSET', KEYS[4], 'p:' .. pid, ARGV[6], 'o:' .. pid, node, 't:' .. pid, ARGV[8])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
  redis.call('SADD', tracked, ARGV[9])
elseif op == 'wait' then
  redis.call('HSET', KEYS[4], 'w:' .. pid, ARGV[6], 'o:' .. pid, node)
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
  redis.call('SADD', tracked, ARGV[9])
elseif op == 'set' then
  if redis.call('HEXISTS', KEYS[4], 'o:' .. pid) == 0 then
    return 0
  end
  redis.call('HSET', KEYS[4], 'p:' .. pid, ARGV[6])
elseif op == 'del' or op == 'reap' then
  if redis.call('HDEL', KEYS[4], 'p:' .. pid, 'o:' .. pid, 't:' .. pid, 'w:' .. pid) == 0 then
    return 0
  end
  redis.call('HDEL', KEYS[5], pid)
end
",
    counter_start!(),
    r"
local n = redis.call('INCR', KEYS[1])
local seq = string.format('%d', n)
redis.call('XADD', KEYS[2], 'MINID', '~', string.format('%d', n - tonumber(ARGV[2]) + 1), seq .. '-0', 'e', ARGV[1])
redis.call('PUBLISH', KEYS[3], seq .. ':' .. ARGV[1])
if op == 'join' or op == 'rejoin' then
  redis.call('HSET', KEYS[5], pid, ARGV[10])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
-- The idle timer restarts every 64 events (not on each: it costs).
if n % 64 == 0 then
  for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
return seq
"
);

/// A run of events (ARGV[1], each after its length; ARGV[4] of them) with
/// no roster operation: one number each, one stream entry (`n`: how many)
/// under the last, one message.
const APPEND_RUN: &str = concat!(
    counter_start!(),
    r"
local last = redis.call('INCRBY', KEYS[1], ARGV[4])
local first = last - tonumber(ARGV[4]) + 1
local seq = string.format('%d', last)
redis.call('XADD', KEYS[2], 'MINID', '~', string.format('%d', last - tonumber(ARGV[2]) + 1), seq .. '-0', 'e', ARGV[1], 'n', ARGV[4])
redis.call('PUBLISH', KEYS[3], string.format('%d', first) .. '+' .. ARGV[4] .. ':' .. ARGV[1])
if math.floor(last / 64) ~= math.floor((first - 1) / 64) then
  for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
return seq
"
);

fn append_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(APPEND))
}

fn run_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(APPEND_RUN))
}

/// The events of a run, each after its length.
fn frame(events: &[&[u8]]) -> Vec<u8> {
    let len = events.iter().map(|e| e.len() + 5).sum();
    let mut body = Vec::with_capacity(len);
    for event in events {
        prost::encoding::encode_varint(event.len() as u64, &mut body);
        body.extend_from_slice(event);
    }
    body
}

/// [`frame`] read back: exactly `count` events, nothing after them.
fn unframe(mut body: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    let mut events = Vec::with_capacity(count.min(4096));
    while !body.is_empty() {
        let mut rest = body;
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        if len > rest.len() || events.len() == count {
            return None;
        }
        events.push(&rest[..len]);
        body = &rest[len..];
    }
    (events.len() == count).then_some(events)
}

/// Every node's last heartbeat, in Redis's clock (ms).
const NODES: &str = "unio:nodes";

fn tracked_key(node: &str) -> String {
    format!("unio:node:{node}:rooms")
}

/// Nodes that read runs (every node of this version says so as it beats).
const READS_RUNS: &str = "unio:nodes:runs";

/// Answers 1 when every node heard from reads runs: until then (a rolling
/// upgrade from a version without them) each event goes on its own.
const BEAT: &str = r"
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000))
redis.call('HSET', KEYS[2], ARGV[1], 1)
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], node) == 0 then
    return 0
  end
end
return 1
";

const DEAD: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local beats = redis.call('HGETALL', KEYS[1])
local dead = {}
for i = 1, #beats, 2 do
  if now - tonumber(beats[i + 1]) > tonumber(ARGV[1]) then
    table.insert(dead, beats[i])
  end
end
return dead
";

/// Moves the counter up to a number the lost room gave, leaving a marker
/// in the log under that number (`j`, the same number: no reader from
/// before it goes over it, since the event it stands for is gone; an
/// earlier version wrote the number jumped from).
const ADVANCE: &str = r"
local old = redis.call('GET', KEYS[1]) or '0'
if tonumber(old) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('XADD', KEYS[2], 'MINID', '~', string.format('%d', tonumber(ARGV[1]) - tonumber(ARGV[3]) + 1), ARGV[1] .. '-0', 'e', '', 'j', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('PUBLISH', KEYS[3], ARGV[1] .. ':')
end
return 0
";

/// What an append does to the room's roster (the participants every node
/// sees), in the same step as it sequences the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RosterOp {
    /// Nothing.
    #[default]
    None,
    /// A participant joined on `node`; `token` is its resume token's hash;
    /// `seen` is the number its `joined` carried (a resume on another node
    /// replays nothing older).
    Join {
        participant_id: String,
        participant: Vec<u8>,
        node: String,
        token: Vec<u8>,
        seen: u64,
    },
    /// A participant's details changed (media state); ignored once it left.
    Set {
        participant_id: String,
        participant: Vec<u8>,
    },
    /// A participant `node` served left; the event is dropped if it
    /// already had, or another node serves it now (it resumed there).
    Leave {
        participant_id: String,
        node: String,
    },
    /// A participant of a dead `node` is taken out, by whichever node gets
    /// there first: the event goes out once.
    Reap {
        participant_id: String,
        node: String,
    },
    /// [`RosterOp::Join`] again after Redis may have lost it: the event
    /// goes out only if the roster had lost the participant.
    Rejoin {
        participant_id: String,
        participant: Vec<u8>,
        node: String,
        token: Vec<u8>,
        seen: u64,
    },
    /// `node` no longer serves anyone in the room (nothing is published).
    Untrack { node: String },
    /// Session `session_id` of `participant` (and `user`) lives on `node`
    /// (nothing is published): where a Publish on another node goes.
    Session {
        session_id: String,
        node: String,
        participant_and_user: Vec<u8>,
    },
    /// Session `session_id` ended on `node` (its registration goes, unless
    /// another node's replaced it).
    Unsession { session_id: String, node: String },
    /// A participant waits in the lobby on `node` (no resume token: a
    /// waiter cannot resume). Its `Join`, once admitted, replaces it.
    Wait {
        participant_id: String,
        participant: Vec<u8>,
        node: String,
    },
    /// `node` serves the participant from now on, if `token` (its resume
    /// token's hash) is the one the roster has.
    Claim {
        participant_id: String,
        node: String,
        token: Vec<u8>,
    },
}

impl RosterOp {
    /// The script's arguments for this operation: op, participant id,
    /// participant, node, token.
    fn args(&self) -> [&[u8]; 5] {
        match self {
            Self::None => [b"", b"", b"", b"", b""],
            Self::Join {
                participant_id,
                participant,
                node,
                token,
                ..
            } => [
                b"join",
                participant_id.as_bytes(),
                participant,
                node.as_bytes(),
                token,
            ],
            Self::Set {
                participant_id,
                participant,
            } => [b"set", participant_id.as_bytes(), participant, b"", b""],
            Self::Leave {
                participant_id,
                node,
            } => [b"del", participant_id.as_bytes(), b"", node.as_bytes(), b""],
            Self::Reap {
                participant_id,
                node,
            } => [
                b"reap",
                participant_id.as_bytes(),
                b"",
                node.as_bytes(),
                b"",
            ],
            Self::Rejoin {
                participant_id,
                participant,
                node,
                token,
                ..
            } => [
                b"rejoin",
                participant_id.as_bytes(),
                participant,
                node.as_bytes(),
                token,
            ],
            Self::Untrack { node } => [b"untrack", b"", b"", node.as_bytes(), b""],
            Self::Wait {
                participant_id,
                participant,
                node,
            } => [
                b"wait",
                participant_id.as_bytes(),
                participant,
                node.as_bytes(),
                b"",
            ],
            Self::Unsession { session_id, node } => [
                b"unsession",
                session_id.as_bytes(),
                b"",
                node.as_bytes(),
                b"",
            ],
            Self::Session {
                session_id,
                node,
                participant_and_user,
            } => [
                b"session",
                session_id.as_bytes(),
                participant_and_user,
                node.as_bytes(),
                b"",
            ],
            Self::Claim {
                participant_id,
                node,
                token,
            } => [
                b"claim",
                participant_id.as_bytes(),
                b"",
                node.as_bytes(),
                token,
            ],
        }
    }
}

/// One roster entry: the participant as last announced, the node that
/// serves it, and its resume token's hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub participant: Vec<u8>,
    pub node: String,
    pub token: Vec<u8>,
    /// In the lobby, not the room.
    pub waiting: bool,
}

/// Where a session lives ([`RoomLog::session_home`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHome {
    pub node: String,
    pub meeting_id: String,
    pub participant_id: String,
    pub user_id: String,
}

/// A room as of one sequence number.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    /// By participant id.
    pub roster: std::collections::BTreeMap<String, Member>,
}

/// What a resume can get back.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Every event after the one asked for, in order.
    Events(Vec<(u64, Vec<u8>)>),
    /// Some were trimmed away: join afresh.
    Gone,
}

#[derive(Clone)]
pub struct RoomLog {
    conn: MultiplexedConnection,
    /// Events kept per room for replay (approximately: Redis trims whole
    /// nodes of its stream).
    keep: usize,
}

impl RoomLog {
    pub fn new(conn: MultiplexedConnection, keep: usize) -> Self {
        Self {
            conn,
            keep: keep.max(1),
        }
    }

    /// Sequences `event` in `room` and publishes it; returns its number.
    pub async fn append(&self, room: &str, event: &[u8]) -> redis::RedisResult<u64> {
        Ok(self
            .append_with(room, event, &RosterOp::None)
            .await?
            .unwrap_or(0))
    }

    /// Adds one append (with its roster operation) to `pipe`; it answers
    /// the event's number, or 0 when the operation refused it.
    /// `pipe` must have loaded the script first ([`RoomLog::load`]): a
    /// script is sent by its hash, not its text.
    pub fn add_append(&self, pipe: &mut redis::Pipeline, room: &str, event: &[u8], op: &RosterOp) {
        let seen = match op {
            RosterOp::Join { seen, .. } | RosterOp::Rejoin { seen, .. } => *seen,
            _ => 0,
        };
        let [op, participant_id, participant, node, token] = op.args();
        pipe.cmd("EVALSHA")
            .arg(append_script().get_hash())
            .arg(5)
            .arg(counter_key(room))
            .arg(stream_key(room))
            .arg(channel(room))
            .arg(roster_key(room))
            .arg(joins_key(room))
            .arg(event)
            .arg(self.keep)
            .arg(IDLE.as_millis() as u64)
            .arg(op)
            .arg(participant_id)
            .arg(participant)
            .arg(node)
            .arg(token)
            .arg(room)
            .arg(seen);
    }

    /// Adds one append of a run of `events` (in order, none with a roster
    /// operation) to `pipe`; it answers the last one's number. `pipe` must
    /// have loaded the scripts first ([`RoomLog::load`]).
    pub fn add_run(&self, pipe: &mut redis::Pipeline, room: &str, events: &[&[u8]]) {
        debug_assert!(!events.is_empty(), "a run of nothing would reuse a number");
        pipe.cmd("EVALSHA")
            .arg(run_script().get_hash())
            .arg(5)
            .arg(counter_key(room))
            .arg(stream_key(room))
            .arg(channel(room))
            .arg(roster_key(room))
            .arg(joins_key(room))
            .arg(frame(events))
            .arg(self.keep)
            .arg(IDLE.as_millis() as u64)
            .arg(events.len());
    }

    /// Loads the append scripts into Redis (once per pipeline: a Redis
    /// restarted meanwhile has forgotten them).
    pub fn load(pipe: &mut redis::Pipeline) {
        pipe.load_script(append_script()).ignore();
        pipe.load_script(run_script()).ignore();
    }

    /// Appends a run of `events`; the last one's number.
    pub async fn append_run(&self, room: &str, events: &[&[u8]]) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        Self::load(&mut pipe);
        self.add_run(&mut pipe, room, events);
        let (seq,): (u64,) = pipe.query_async(&mut conn).await?;
        Ok(seq)
    }

    /// Appends `event` unless `op` refuses it; its number, or `None`.
    pub async fn append_with(
        &self,
        room: &str,
        event: &[u8],
        op: &RosterOp,
    ) -> redis::RedisResult<Option<u64>> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        Self::load(&mut pipe);
        self.add_append(&mut pipe, room, event, op);
        let (seq,): (u64,) = pipe.query_async(&mut conn).await?;
        Ok((seq > 0).then_some(seq))
    }

    /// Where session `session_id` lives: node, meeting, participant, user.
    pub async fn session_home(&self, session_id: &str) -> redis::RedisResult<Option<SessionHome>> {
        let mut conn = self.conn.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("unio:session:{session_id}"))
            .query_async(&mut conn)
            .await?;
        Ok(value.and_then(|v| {
            let mut parts = v.split(' ').map(str::to_owned);
            Some(SessionHome {
                node: parts.next()?,
                meeting_id: parts.next()?,
                participant_id: parts.next()?,
                user_id: parts.next()?,
            })
        }))
    }

    /// Says `node` is alive, in Redis's clock.
    /// Says `node` is alive (and reads runs); answers whether every node
    /// heard from reads runs.
    pub async fn beat(&self, node: &str) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let runs: u8 = redis::cmd("EVAL")
            .arg(BEAT)
            .arg(2)
            .arg(NODES)
            .arg(READS_RUNS)
            .arg(node)
            .query_async(&mut conn)
            .await?;
        Ok(runs == 1)
    }

    /// Nodes whose last heartbeat is older than `silent`.
    pub async fn dead_nodes(&self, silent: Duration) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("EVAL")
            .arg(DEAD)
            .arg(1)
            .arg(NODES)
            .arg(silent.as_millis() as u64)
            .query_async(&mut conn)
            .await
    }

    /// The rooms where `node` served someone.
    pub async fn rooms_of(&self, node: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("SMEMBERS")
            .arg(tracked_key(node))
            .query_async(&mut conn)
            .await
    }

    /// Forgets a dead node once nobody of it is left in any room.
    pub async fn forget(&self, node: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("DEL")
            .arg(tracked_key(node))
            .ignore()
            .cmd("HDEL")
            .arg(NODES)
            .arg(node)
            .ignore()
            .cmd("HDEL")
            .arg(READS_RUNS)
            .arg(node)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Moves the room's counter on to at least `to`: after Redis lost the
    /// room, numbers continue from what its nodes delivered.
    pub async fn advance(&self, room: &str, to: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("EVAL")
            .arg(ADVANCE)
            .arg(3)
            .arg(counter_key(room))
            .arg(stream_key(room))
            .arg(channel(room))
            .arg(to)
            .arg(IDLE.as_millis() as u64)
            .arg(self.keep)
            .query_async(&mut conn)
            .await
    }

    /// The room's sequence and roster at one instant.
    pub async fn snapshot(&self, room: &str) -> redis::RedisResult<Snapshot> {
        let mut conn = self.conn.clone();
        // A transaction of reads, not a script: it goes on while Redis
        // holds writes back (`CLIENT PAUSE WRITE`, as in a failover).
        // Pairs read either protocol's reply (a RESP3 map, a RESP2 array).
        type Pairs = Vec<(Vec<u8>, Vec<u8>)>;
        let (seq, roster): (Option<Vec<u8>>, Pairs) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(counter_key(room))
            .cmd("HGETALL")
            .arg(roster_key(room))
            .query_async(&mut conn)
            .await?;
        let mut flat = Vec::with_capacity(1 + 2 * roster.len());
        flat.push(seq.unwrap_or_else(|| b"0".to_vec()));
        for (field, value) in roster {
            flat.push(field);
            flat.push(value);
        }
        parse_snapshot(flat).ok_or_else(|| unreadable("a room snapshot"))
    }

    /// The node the roster says serves `participant_id`, if any.
    pub async fn server_of(
        &self,
        room: &str,
        participant_id: &str,
    ) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(roster_key(room))
            .arg(format!("o:{participant_id}"))
            .query_async(&mut conn)
            .await
    }

    /// The number `participant_id`'s `joined` carried (at its join or
    /// admission), 0 if the log lacks it (a node of an earlier version
    /// does not record it).
    pub async fn joined_at(&self, room: &str, participant_id: &str) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(joins_key(room))
            .arg(participant_id)
            .query_async(&mut conn)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// The room's last sequence number (0 before its first event).
    pub async fn last(&self, room: &str) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let last: Option<u64> = redis::cmd("GET")
            .arg(counter_key(room))
            .query_async(&mut conn)
            .await?;
        Ok(last.unwrap_or(0))
    }

    /// The events after `after`, if the stream still holds all of them.
    pub async fn since(&self, room: &str, after: u64) -> redis::RedisResult<Replay> {
        self.read_since(room, after, None).await
    }

    /// [`RoomLog::since`] for a resume, which the client starts where it
    /// says: no more than a node's own replay ring would hold (`keep`
    /// events, [`REPLAY_MAX_BYTES`]), or [`Replay::Gone`], found without
    /// reading further.
    pub async fn replay_for_resume(&self, room: &str, after: u64) -> redis::RedisResult<Replay> {
        self.read_since(room, after, Some(REPLAY_MAX_BYTES)).await
    }

    /// Reads the stream a page at a time: a room's records may be large,
    /// and a limited read stops as soon as it is past its limit.
    async fn read_since(
        &self,
        room: &str,
        after: u64,
        max_bytes: Option<usize>,
    ) -> redis::RedisResult<Replay> {
        let mut conn = self.conn.clone();
        let last = self.last(room).await?;
        if after >= last {
            return Ok(Replay::Events(Vec::new()));
        }
        let too_much = |events: &[(u64, Vec<u8>)], bytes: usize| {
            max_bytes.is_some_and(|max| bytes > max || events.len() > self.keep)
        };
        let (mut events, mut bytes) = (Vec::new(), 0usize);
        // Complete only if it starts right after `after` and has no holes
        // (but the jumps an advance marked).
        let mut expected = after + 1;
        let mut from = format!("{}-0", after + 1);
        // Small pages while a limit may stop the read early.
        let page = if max_bytes.is_some() {
            LIMITED_PAGE
        } else {
            PAGE
        };
        while expected <= last {
            let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(stream_key(room))
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(page)
                .query_async(&mut conn)
                .await?;
            let more = entries.len() == page;
            for (id, mut fields) in entries {
                let seq = id
                    .split_once('-')
                    .and_then(|(seq, _)| seq.parse::<u64>().ok())
                    .ok_or_else(|| unreadable("a stream entry id"))?;
                // Every entry is `<number>-0`: the next page starts after.
                from = format!("{seq}-1");
                let number = |field: &[u8]| std::str::from_utf8(field).ok()?.parse::<u64>().ok();
                let (jumped_from, run) = match (fields.len(), fields.get(2).map(Vec::as_slice)) {
                    (2, _) => (None, None),
                    (4, Some(b"j")) => (number(&fields[3]), None),
                    (4, Some(b"n")) => {
                        let count = number(&fields[3])
                            .filter(|n| (1..=seq).contains(n))
                            .ok_or_else(|| unreadable("a run's length"))?;
                        (None, Some(count))
                    }
                    _ => return Err(unreadable("a stream entry")),
                };
                if let Some(count) = run {
                    // A run under its last number: the events from `first`.
                    let first = seq - (count - 1);
                    if first > last {
                        // Appended after the read began, like below.
                        if expected <= last {
                            return Ok(Replay::Gone);
                        }
                        break;
                    }
                    let run = unframe(&fields[1], count as usize)
                        .ok_or_else(|| unreadable("a run of events"))?;
                    for (offset, event) in (0..count).zip(run) {
                        let seq = first + offset;
                        if seq <= after || seq > last {
                            continue;
                        }
                        if seq != expected {
                            return Ok(Replay::Gone);
                        }
                        expected = seq.checked_add(1).ok_or_else(|| unreadable("a number"))?;
                        bytes += event.len();
                        events.push((seq, event.to_vec()));
                        if too_much(&events, bytes) {
                            return Ok(Replay::Gone);
                        }
                    }
                    continue;
                }
                if seq > last {
                    // Appended after the read began (it reaches the reader
                    // live): what should have come before is missing.
                    if expected <= last {
                        return Ok(Replay::Gone);
                    }
                    break;
                }
                match jumped_from {
                    // Where Redis lost the room (restarted empty, failed
                    // over): what it held before may be gone.
                    Some(from) => {
                        // A resume never goes over it. A node's catch-up
                        // goes over a fresh start (`j` 0: nothing is known
                        // of what came before, and its participants were
                        // served live; it replays nothing from before it)
                        // and over the numbers an earlier version's advance
                        // skipped, but not over an advance's own number (an
                        // event the old room held, which this node missed).
                        let over =
                            max_bytes.is_none() && from < seq && from < expected && expected <= seq;
                        if !over {
                            return Ok(Replay::Gone);
                        }
                    }
                    None if seq != expected => return Ok(Replay::Gone),
                    None => {}
                }
                expected = seq.checked_add(1).ok_or_else(|| unreadable("a number"))?;
                fields.truncate(2);
                let event = fields.swap_remove(1);
                bytes += event.len();
                events.push((seq, event));
                if too_much(&events, bytes) {
                    return Ok(Replay::Gone);
                }
            }
            if !more {
                break;
            }
        }
        if expected <= last {
            return Ok(Replay::Gone);
        }
        Ok(Replay::Events(events))
    }
}

/// Stream entries one read of the log asks for.
const PAGE: usize = 64;

/// The same for a limited read (a resume's): an entry may be a run of up
/// to a MiB, and the limit is checked between pages' entries.
const LIMITED_PAGE: usize = 8;

/// The most a replay read from the log may hold (what a node's own replay
/// ring keeps of a room at most): a resume from further back is refused.
const REPLAY_MAX_BYTES: usize = super::room::REPLAY_MAX_BYTES;

fn unreadable(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unreadable room log",
        what.to_owned(),
    ))
}

fn parse_snapshot(flat: Vec<Vec<u8>>) -> Option<Snapshot> {
    let mut fields = flat.into_iter();
    let seq = std::str::from_utf8(&fields.next()?).ok()?.parse().ok()?;
    let mut roster = std::collections::BTreeMap::<String, Member>::new();
    while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
        let field = String::from_utf8(field).ok()?;
        let (kind, id) = field.split_once(':')?;
        let member = roster.entry(id.to_owned()).or_default();
        match kind {
            "p" => member.participant = value,
            "w" => {
                member.participant = value;
                member.waiting = true;
            }
            "o" => member.node = String::from_utf8(value).ok()?,
            "t" => member.token = value,
            _ => return None,
        }
    }
    Some(Snapshot { seq, roster })
}

/// A message from a room's channel: its events' sequence numbers and
/// bytes, in order (one, or a run's).
pub fn parse_published(payload: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let colon = payload.iter().position(|b| *b == b':')?;
    let head = std::str::from_utf8(&payload[..colon]).ok()?;
    let body = &payload[colon + 1..];
    match head.split_once('+') {
        None => Some(vec![(head.parse().ok()?, body)]),
        Some((first, count)) => {
            let first: u64 = first.parse().ok()?;
            let count: usize = count.parse().ok()?;
            let events = unframe(body, count)?;
            // Every number of the run must exist.
            first.checked_add(count as u64)?;
            Some((0..).map(|i| first + i).zip(events).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_messages_read_back() {
        assert_eq!(
            parse_published(b"42:\x00\x01:"),
            Some(vec![(42, &b"\x00\x01:"[..])])
        );
        assert_eq!(parse_published(b"x:1"), None);
        assert_eq!(parse_published(b"17"), None);
        // A run: numbers from the first, each event after its length.
        let mut run = b"7+3:".to_vec();
        run.extend(frame(&[b"ab", b"", &[9u8; 200]]));
        assert_eq!(
            parse_published(&run),
            Some(vec![(7, &b"ab"[..]), (8, &b""[..]), (9, &[9u8; 200][..])])
        );
        // A count that does not match the events, a length past the end,
        // a number that would overflow: refused.
        run[2] = b'4';
        assert_eq!(parse_published(&run), None);
        assert_eq!(parse_published(b"7+1:\x05ab"), None);
        assert_eq!(parse_published(b"7+2:\x01a"), None);
        assert_eq!(parse_published(b"18446744073709551615+1:\x00"), None);
        assert_eq!(parse_published(b"7+0:"), Some(vec![]));
    }

    #[test]
    fn snapshots_read_back() {
        let flat = [
            "7", "p:a", "pa", "o:a", "n1", "t:a", "ta", "p:b", "pb", "o:b", "n2", "t:b", "tb",
        ]
        .map(|s| s.as_bytes().to_vec())
        .to_vec();
        let snapshot = parse_snapshot(flat).unwrap();
        assert_eq!(snapshot.seq, 7);
        assert_eq!(snapshot.roster.len(), 2);
        assert_eq!(snapshot.roster["b"].node, "n2");
        assert_eq!(snapshot.roster["a"].participant, b"pa");
        assert!(parse_snapshot(vec![b"x".to_vec()]).is_none());
        assert!(parse_snapshot(vec![b"1".to_vec(), b"q:a".to_vec(), b"v".to_vec()]).is_none());
    }
}
