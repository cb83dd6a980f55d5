//! One order per room across nodes (DESIGN §9): each room event gets its
//! sequence number from Redis, not from the node that produced it.
//!
//! [`RoomLog::append`] runs one Lua script, atomic in Redis: `INCR` the
//! room's counter, `XADD` the event to the room's stream under that number
//! (trimmed to about the replay window), and `PUBLISH` it on the room's
//! channel. Redis runs scripts one at a time, so publication order *is*
//! sequence order, and every node subscribed to the room hears the same
//! order. The stream is the replay a resume needs, readable from any node
//! ([`RoomLog::since`]). Keys of a room nobody used for a day expire.
//!
//! Message on `unio:room:<id>`: the sequence number in decimal, `:`, then
//! the event's bytes ([`parse_published`]).

use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// The room's channel.
pub fn channel(room: &str) -> String {
    format!("unio:room:{room}")
}

fn counter_key(room: &str) -> String {
    format!("unio:room:{room}:seq")
}

fn stream_key(room: &str) -> String {
    format!("unio:room:{room}:log")
}

/// Keys of a room idle this long go.
const IDLE: Duration = Duration::from_secs(24 * 3600);

const APPEND: &str = r"
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', ARGV[1])
redis.call('PUBLISH', KEYS[3], seq .. ':' .. ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq
";

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
    script: std::sync::Arc<redis::Script>,
    /// Events kept per room for replay (approximately: Redis trims whole
    /// nodes of its stream).
    keep: usize,
}

impl RoomLog {
    pub fn new(conn: MultiplexedConnection, keep: usize) -> Self {
        Self {
            conn,
            script: std::sync::Arc::new(redis::Script::new(APPEND)),
            keep: keep.max(1),
        }
    }

    /// Sequences `event` in `room` and publishes it; returns its number.
    pub async fn append(&self, room: &str, event: &[u8]) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        self.script
            .key(counter_key(room))
            .key(stream_key(room))
            .key(channel(room))
            .arg(event)
            .arg(self.keep)
            .arg(IDLE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
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
        let mut conn = self.conn.clone();
        let last = self.last(room).await?;
        if after >= last {
            return Ok(Replay::Events(Vec::new()));
        }
        let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream_key(room))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .query_async(&mut conn)
            .await?;
        let mut events = Vec::with_capacity(entries.len());
        for (id, mut fields) in entries {
            let seq = id
                .split_once('-')
                .and_then(|(seq, _)| seq.parse::<u64>().ok())
                .ok_or_else(|| unreadable("a stream entry id"))?;
            if fields.len() != 2 {
                return Err(unreadable("a stream entry"));
            }
            events.push((seq, fields.swap_remove(1)));
        }
        // Complete only if it starts right after `after` and has no holes.
        let complete = events
            .iter()
            .enumerate()
            .all(|(i, (seq, _))| *seq == after + 1 + i as u64);
        if !complete || events.last().map(|(seq, _)| *seq) < Some(last) {
            return Ok(Replay::Gone);
        }
        Ok(Replay::Events(events))
    }
}

fn unreadable(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unreadable room log",
        what.to_owned(),
    ))
}

/// A message from a room's channel: its sequence number and event bytes.
pub fn parse_published(payload: &[u8]) -> Option<(u64, &[u8])> {
    let colon = payload.iter().position(|b| *b == b':')?;
    let seq = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    Some((seq, &payload[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_messages_read_back() {
        assert_eq!(
            parse_published(b"42:\x00\x01:"),
            Some((42, &b"\x00\x01:"[..]))
        );
        assert_eq!(parse_published(b"x:1"), None);
        assert_eq!(parse_published(b"17"), None);
    }
}
