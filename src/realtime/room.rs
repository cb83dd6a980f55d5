//! One room's state: its participants, its sequence counter and the replay
//! buffer that lets a dropped participant resume.
//!
//! Everything here is synchronous and runs under the room's mutex, which is
//! what gives every participant the same order: an event gets its sequence
//! number and is pushed into every recipient's queue in one critical section.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::mpsc::{self, error::TrySendError};

use super::rate::TokenBucket;
use crate::proto::pb::{self, server_event::Event};

/// Who receives an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    All,
    Only(String),
    AllExcept(String),
}

impl Audience {
    pub fn includes(&self, participant_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(id) => id == participant_id,
            Self::AllExcept(id) => id != participant_id,
        }
    }
}

/// Why a session's stream ended (set before its queue's sender is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Left,
    Kicked,
    MeetingEnded,
    SlowConsumer,
    Replaced,
    TimedOut,
    Shutdown,
}

/// Why a participant lost its stream while keeping its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachCause {
    Disconnected,
    TimedOut,
    SlowConsumer,
}

/// Shared between the hub (which closes) and the session's stream (which
/// reads why, and reports liveness).
#[derive(Debug)]
pub struct SessionControl {
    pub session_id: String,
    pub meeting_id: String,
    pub participant_id: String,
    pub user_id: String,
    /// Which attachment of the slot this session is; stale detaches and
    /// timers compare it.
    pub epoch: u64,
    reason: Mutex<Option<CloseReason>>,
    /// Milliseconds since the hub started at the client's last event.
    last_seen_ms: AtomicU64,
    /// The last room sequence handed to the transport: where a resume
    /// without `last_sequence` starts (what was only queued was lost).
    sent_seq: AtomicU64,
}

impl SessionControl {
    pub fn new(
        session_id: String,
        meeting_id: String,
        participant_id: String,
        user_id: String,
        epoch: u64,
        now_ms: u64,
    ) -> Self {
        Self {
            session_id,
            meeting_id,
            participant_id,
            user_id,
            epoch,
            reason: Mutex::new(None),
            last_seen_ms: AtomicU64::new(now_ms),
            sent_seq: AtomicU64::new(0),
        }
    }

    pub fn close(&self, reason: CloseReason) {
        let mut current = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        current.get_or_insert(reason);
    }

    pub fn reason(&self) -> Option<CloseReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    pub fn mark_sent(&self, sequence: u64) {
        self.sent_seq.fetch_max(sequence, Ordering::Relaxed);
    }

    pub fn sent_seq(&self) -> u64 {
        self.sent_seq.load(Ordering::Relaxed)
    }
}

/// The sending half of a session's bounded queue.
#[derive(Debug)]
pub struct Outbox {
    pub tx: mpsc::Sender<Arc<pb::ServerEvent>>,
    pub control: Arc<SessionControl>,
}

/// Per-session limits on what a client may send.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub chats: TokenBucket,
    pub signals: TokenBucket,
    pub typing: TokenBucket,
    pub media: TokenBucket,
}

/// A participant: present (with an outbox) or detached within its grace.
#[derive(Debug)]
pub struct Slot {
    pub info: pb::Participant,
    pub user_id: String,
    pub resume_token: String,
    pub session_id: String,
    pub outbox: Option<Outbox>,
    pub epoch: u64,
    /// While detached: the last sequence that reached the participant's
    /// transport, where a resume without `last_sequence` starts. (While
    /// attached, the session's own `sent_seq` says it.)
    pub delivered: u64,
    pub detached: Option<DetachCause>,
    pub limits: SessionLimits,
}

impl Slot {
    /// Closes the attached stream, if any, for `reason`.
    pub fn close(&mut self, reason: CloseReason) -> Option<Arc<SessionControl>> {
        self.outbox.take().map(|outbox| {
            outbox.control.close(reason);
            outbox.control
        })
    }
}

/// A participant whose queue overflowed during a publish; the hub starts
/// its grace timer after the lock is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflowed {
    pub participant_id: String,
    pub epoch: u64,
}

/// Why a room stopped taking joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its last participant left; a joiner should make a new room.
    Emptied,
    /// The meeting is over.
    MeetingOver,
}

struct Buffered {
    seq: u64,
    to: Audience,
    event: Arc<pb::ServerEvent>,
    bytes: usize,
}

/// The replay ring also stops at this many encoded bytes: a burst of large
/// SDP offers must not pin tens of MiB per room.
pub const REPLAY_MAX_BYTES: usize = 4 * 1024 * 1024;

pub struct RoomState {
    next_seq: u64,
    /// By participant id; ids are time-ordered, so this is join order.
    pub slots: BTreeMap<String, Slot>,
    replay: VecDeque<Buffered>,
    replay_capacity: usize,
    replay_bytes: usize,
    pub closed: Option<Closed>,
    /// Users the host removed: they may not join this room again while it
    /// lives.
    pub removed_users: std::collections::HashSet<String>,
}

impl RoomState {
    pub fn new(replay_capacity: usize) -> Self {
        Self {
            next_seq: 1,
            slots: BTreeMap::new(),
            replay: VecDeque::new(),
            replay_capacity,
            replay_bytes: 0,
            closed: None,
            removed_users: std::collections::HashSet::new(),
        }
    }

    /// The sequence of the latest event.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Gives `event` the next sequence, keeps it for replay, and pushes it to
    /// every attached participant in `to`. A participant whose queue is full
    /// is detached on the spot (its stream ends after draining, telling it
    /// to resume) and returned so the hub can start its grace timer.
    pub fn publish(&mut self, to: Audience, event: Event) -> Vec<Overflowed> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = Arc::new(pb::ServerEvent {
            sequence: seq,
            event: Some(event),
        });
        let bytes = prost::Message::encoded_len(event.as_ref());
        while self.replay.len() >= self.replay_capacity
            || (!self.replay.is_empty() && self.replay_bytes + bytes > REPLAY_MAX_BYTES)
        {
            if let Some(old) = self.replay.pop_front() {
                self.replay_bytes -= old.bytes;
            }
        }
        self.replay_bytes += bytes;
        self.replay.push_back(Buffered {
            seq,
            to: to.clone(),
            event: event.clone(),
            bytes,
        });

        let mut overflowed = Vec::new();
        for (id, slot) in self.slots.iter_mut() {
            if !to.includes(id) {
                continue;
            }
            let Some(outbox) = &slot.outbox else { continue };
            match outbox.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    // What it received is what it can resume from.
                    slot.delivered = outbox.control.sent_seq();
                    slot.close(CloseReason::SlowConsumer);
                    slot.detached = Some(DetachCause::SlowConsumer);
                    slot.epoch += 1;
                    overflowed.push(Overflowed {
                        participant_id: id.clone(),
                        epoch: slot.epoch,
                    });
                }
                // The stream is gone; its drop detaches the slot.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        overflowed
    }

    /// Events after `from` addressed to `participant_id`, or `None` when
    /// some of them already left the replay buffer.
    pub fn replay_since(
        &self,
        participant_id: &str,
        from: u64,
    ) -> Option<Vec<Arc<pb::ServerEvent>>> {
        let first_kept = self.replay.front().map_or(self.next_seq, |b| b.seq);
        if from + 1 < first_kept {
            return None;
        }
        Some(
            self.replay
                .iter()
                .filter(|b| b.seq > from && b.to.includes(participant_id))
                .map(|b| b.event.clone())
                .collect(),
        )
    }

    /// Everyone present or within their grace, in join order.
    pub fn participants(&self) -> Vec<pb::Participant> {
        self.slots.values().map(|slot| slot.info.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: &str, capacity: usize) -> (Slot, mpsc::Receiver<Arc<pb::ServerEvent>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let control = Arc::new(SessionControl::new(
            "s".into(),
            "m".into(),
            id.into(),
            "u".into(),
            0,
            0,
        ));
        let slot = Slot {
            info: pb::Participant {
                participant_id: id.into(),
                ..Default::default()
            },
            user_id: "u".into(),
            resume_token: format!("token-{id}"),
            session_id: format!("session-{id}"),
            outbox: Some(Outbox { tx, control }),
            epoch: 0,
            delivered: 0,
            detached: None,
            limits: SessionLimits {
                chats: TokenBucket::new(5),
                signals: TokenBucket::new(20),
                typing: TokenBucket::new(5),
                media: TokenBucket::new(10),
            },
        };
        (slot, rx)
    }

    fn pong() -> Event {
        Event::Pong(pb::Pong {})
    }

    #[test]
    fn everyone_sees_the_same_order_and_only_targets_get_signals() {
        let mut room = RoomState::new(16);
        let (a, mut rx_a) = slot("a", 8);
        let (b, mut rx_b) = slot("b", 8);
        room.slots.insert("a".into(), a);
        room.slots.insert("b".into(), b);
        room.publish(Audience::All, pong());
        room.publish(Audience::Only("b".into()), pong());
        room.publish(Audience::AllExcept("b".into()), pong());
        let seqs = |rx: &mut mpsc::Receiver<Arc<pb::ServerEvent>>| {
            let mut out = Vec::new();
            while let Ok(e) = rx.try_recv() {
                out.push(e.sequence);
            }
            out
        };
        assert_eq!(seqs(&mut rx_a), [1, 3]);
        assert_eq!(seqs(&mut rx_b), [1, 2]);
    }

    #[test]
    fn a_full_queue_detaches_its_participant_without_blocking_others() {
        let mut room = RoomState::new(16);
        let (slow, _rx_slow) = slot("slow", 1);
        let (fast, mut rx_fast) = slot("fast", 8);
        room.slots.insert("slow".into(), slow);
        room.slots.insert("fast".into(), fast);
        assert!(room.publish(Audience::All, pong()).is_empty());
        let overflowed = room.publish(Audience::All, pong());
        assert_eq!(
            overflowed,
            [Overflowed {
                participant_id: "slow".into(),
                epoch: 1
            }]
        );
        let slow = &room.slots["slow"];
        assert!(slow.outbox.is_none());
        assert_eq!(slow.detached, Some(DetachCause::SlowConsumer));
        // Nothing reached its transport (no stream polled it): it resumes
        // from the start, and everything is still replayable.
        assert_eq!(slow.delivered, 0);
        assert_eq!(rx_fast.try_recv().unwrap().sequence, 1);
        assert_eq!(rx_fast.try_recv().unwrap().sequence, 2);
        let missed = room.replay_since("slow", slow.delivered).unwrap();
        assert_eq!(
            missed.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn the_replay_ring_is_bounded_in_bytes_too() {
        let mut room = RoomState::new(1000);
        let big = || {
            Event::Signal(pb::IncomingSignal {
                from_participant_id: "a".into(),
                payload: Some(pb::incoming_signal::Payload::Offer(
                    pb::SessionDescription {
                        sdp: "s".repeat(64 * 1024),
                    },
                )),
            })
        };
        for _ in 0..200 {
            room.publish(Audience::All, big());
        }
        assert!(room.replay_bytes <= REPLAY_MAX_BYTES);
        assert!(room.replay.len() < 100);
        assert!(room.replay_since("x", 150).is_some());
    }

    #[test]
    fn replay_fails_once_missed_events_are_evicted() {
        let mut room = RoomState::new(3);
        for _ in 0..5 {
            room.publish(Audience::All, pong());
        }
        assert!(room.replay_since("x", 1).is_none());
        assert_eq!(room.replay_since("x", 2).unwrap().len(), 3);
        assert_eq!(room.replay_since("x", 5).unwrap().len(), 0);
    }
}
