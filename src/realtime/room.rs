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

use super::queue::{self, TrySendError};

use super::{cluster::RoomLink, rate::TokenBucket, settings::Settings};
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
    /// A host or co-host turned the waiter away.
    Denied,
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
    /// The stream ended with an event delivered outside the room's order
    /// still queued: lost, and in no replay.
    lost_unsequenced: std::sync::atomic::AtomicBool,
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
            lost_unsequenced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// See `lost_unsequenced`.
    pub fn lose_unsequenced(&self) {
        self.lost_unsequenced.store(true, Ordering::Relaxed);
    }

    pub fn lost_unsequenced(&self) -> bool {
        self.lost_unsequenced.load(Ordering::Relaxed)
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
    pub tx: queue::Sender,
    pub control: Arc<SessionControl>,
}

/// Per-session limits on what a client may send.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub chats: TokenBucket,
    pub signals: TokenBucket,
    pub typing: TokenBucket,
    pub media: TokenBucket,
    /// Reactions, and hands raised and lowered.
    pub reactions: TokenBucket,
}

/// An event delivered outside the room's order (sequence 0) that a
/// replay would have given again had it been numbered: not the replies,
/// errors and lobby news every session gets unnumbered, nor what only
/// matters the moment it happens (a reaction, typing).
pub fn unsequenced_replayable(event: &pb::ServerEvent) -> bool {
    event.sequence == 0
        && !matches!(
            event.event,
            None | Some(
                Event::Pong(_)
                    | Event::Heartbeat(_)
                    | Event::Joined(_)
                    | Event::Typing(_)
                    | Event::Error(_)
                    | Event::Waiting(_)
                    | Event::Lobby(_)
                    | Event::MeetingStatus(_)
                    | Event::Reaction(_)
            )
        )
}

/// A participant: present (with an outbox) or detached within its grace.
///
/// Its epoch counts its attachments and detachments; only [`RoomState`]
/// changes it (and what goes with it: `detached`, `delivered`), so a stale
/// detach or grace timer can always tell it no longer applies.
#[derive(Debug)]
pub struct Slot {
    pub info: pb::Participant,
    pub user_id: String,
    pub resume_token: String,
    pub session_id: String,
    pub outbox: Option<Outbox>,
    epoch: u64,
    /// While detached: the last sequence that reached the participant's
    /// transport, where a resume without `last_sequence` starts. (While
    /// attached, the session's own `sent_seq` says it.)
    delivered: u64,
    /// The room's number when it joined (or was let in from the lobby):
    /// a resume replays nothing older, whatever `last_sequence` it asks.
    pub joined_seq: u64,
    detached: Option<DetachCause>,
    /// It missed an event that no replay holds (one delivered outside the
    /// room's order while it was away, or more than this node kept): it
    /// cannot resume, only join anew.
    unresumable: bool,
    pub limits: SessionLimits,
    /// In the lobby: what it was told (`waiting`), sent again with
    /// `host_present` changed. It hears nothing of the room. Boxed: most
    /// slots never wait, and inline it would double every slot's size.
    pub waiting: Option<Box<pb::Waiting>>,
    /// In the lobby: fired when a host or co-host admits it.
    pub admission: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Slot {
    /// A participant that just joined (epoch 0), attached to `outbox`, who
    /// has seen everything up to `delivered` (where its resumes stop).
    pub fn new(
        info: pb::Participant,
        resume_token: String,
        outbox: Outbox,
        delivered: u64,
        limits: SessionLimits,
    ) -> Self {
        Self {
            user_id: info.user_id.clone(),
            info,
            resume_token,
            session_id: outbox.control.session_id.clone(),
            outbox: Some(outbox),
            epoch: 0,
            delivered,
            joined_seq: delivered,
            detached: None,
            unresumable: false,
            limits,
            waiting: None,
            admission: None,
        }
    }

    /// Closes the attached stream, if any, for `reason`.
    pub fn close(&mut self, reason: CloseReason) -> Option<Arc<SessionControl>> {
        self.outbox.take().map(|outbox| {
            outbox.control.close(reason);
            outbox.control
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Loses the stream (closed for `close` if still attached), keeping the
    /// slot for a resume from `delivered`; a new epoch.
    fn detach(&mut self, cause: DetachCause, delivered: u64, close: Option<CloseReason>) -> u64 {
        if let Some(reason) = close {
            self.close(reason);
        } else {
            self.outbox = None;
        }
        self.detached = Some(cause);
        self.delivered = delivered;
        self.epoch += 1;
        self.epoch
    }
}

/// A participant whose queue overflowed during a publish; the hub starts
/// its grace timer after the lock is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflowed {
    pub participant_id: String,
    pub epoch: u64,
    /// Whether a resume could still give it what it missed (else its
    /// grace has no purpose).
    pub resumable: bool,
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
    event: Kept,
    bytes: usize,
}

/// What the replay ring keeps of an event.
enum Kept {
    Event(Arc<pb::ServerEvent>),
    /// An event this node only passed on, as it came (a `ServerEvent`
    /// without its number): in a cluster, a signal to a participant served
    /// elsewhere. Decoded only should that participant resume here.
    Encoded(Box<[u8]>),
}

impl Kept {
    fn event(&self, seq: u64) -> Option<Arc<pb::ServerEvent>> {
        match self {
            Kept::Event(event) => Some(event.clone()),
            Kept::Encoded(bytes) => {
                let mut event = <pb::ServerEvent as prost::Message>::decode(&bytes[..]).ok()?;
                event.sequence = seq;
                Some(Arc::new(event))
            }
        }
    }
}

/// The replay ring also stops at this many encoded bytes: a burst of large
/// SDP offers must not pin tens of MiB per room.
pub const REPLAY_MAX_BYTES: usize = 4 * 1024 * 1024;

pub struct RoomState {
    next_seq: u64,
    /// By participant id; ids are time-ordered, so this is join order.
    /// Boxed: a slot is large next to a B-tree's pointer, and B-tree
    /// nodes are often half empty (ids arrive in order), so inline slots
    /// cost an idle room half again their size.
    pub slots: BTreeMap<String, Box<Slot>>,
    replay: VecDeque<Buffered>,
    replay_capacity: usize,
    replay_bytes: usize,
    /// Events numbered up to this one may be missing from the ring
    /// (pushed out, or never heard here): a replay from before it is
    /// incomplete. Numbers after it that the ring lacks carried nothing
    /// to replay (a cluster's control records, reactions).
    replay_floor: u64,
    pub closed: Option<Closed>,
    /// Users the host removed: they may not join this room again while it
    /// lives.
    pub removed_users: std::collections::HashSet<String>,
    /// In a cluster: participants resuming here from another node, under
    /// way (an empty id until the roster names it). The room is not
    /// dropped as empty while one is.
    pub resuming: Vec<String>,
    /// In a cluster: the room as every node shares it.
    pub link: Option<RoomLink>,
    /// Host, co-hosts, waiting room, lock.
    pub settings: Settings,
}

impl RoomState {
    pub fn new(replay_capacity: usize) -> Self {
        Self {
            next_seq: 1,
            slots: BTreeMap::new(),
            replay: VecDeque::new(),
            replay_capacity,
            replay_bytes: 0,
            replay_floor: 0,
            closed: None,
            removed_users: std::collections::HashSet::new(),
            resuming: Vec::new(),
            link: None,
            settings: Settings::default(),
        }
    }

    /// Takes `meeting`'s settings (unless newer ones are kept) and gives
    /// every participant, here and elsewhere, the role they now have.
    pub fn adopt_settings(&mut self, meeting: &pb::Meeting) -> bool {
        if !self.settings.adopt(meeting) {
            return false;
        }
        self.reassign_roles();
        true
    }

    /// Gives every participant, here and elsewhere, the role the room's
    /// settings say (after a snapshot, whose roster has join-time roles).
    pub fn reassign_roles(&mut self) {
        if self.settings.host_id.is_empty() {
            return; // Not known yet: the first join's meeting sets them.
        }
        let settings = &self.settings;
        for slot in self.slots.values_mut() {
            slot.info.role = settings.role(&slot.user_id) as i32;
        }
        if let Some(link) = &mut self.link {
            for member in link.members.values_mut() {
                member.role = settings.role(&member.user_id) as i32;
            }
        }
    }

    /// What an event changes in the room's state besides who is in it:
    /// hands and settings, on whichever node serves whom. Returns whether
    /// hosts must hear the lobby again, once the event went out (so that a
    /// join is seen before the shorter waiting list).
    fn note(&mut self, event: &Event) -> bool {
        match event {
            Event::Hand(hand) => {
                let time = hand.raised.then_some(hand.raise_time).flatten();
                if let Some(slot) = self.slots.get_mut(&hand.participant_id) {
                    slot.info.hand_raise_time = time;
                }
                if let Some(member) = self
                    .link
                    .as_mut()
                    .and_then(|link| link.members.get_mut(&hand.participant_id))
                {
                    member.hand_raise_time = time;
                }
                false
            }
            // A new co-host sees who waits.
            Event::MeetingUpdated(meeting) => {
                self.adopt_settings(meeting) && !self.lobby().is_empty()
            }
            Event::ParticipantJoined(joined) => joined.participant.as_ref().is_some_and(|p| {
                self.link
                    .as_mut()
                    .is_some_and(|link| link.lobby.remove(&p.participant_id).is_some())
            }),
            _ => false,
        }
    }

    /// After an event went out: hosts hear the lobby if it changed, and
    /// waiters whether someone can admit them.
    fn after(&mut self, lobby_changed: bool, event: &pb::ServerEvent) {
        if lobby_changed {
            self.tell_runners();
        }
        if matches!(
            event.event,
            Some(
                Event::ParticipantJoined(_) | Event::ParticipantLeft(_) | Event::MeetingUpdated(_)
            )
        ) {
            self.tell_waiters();
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
        self.deliver(self.next_seq, to, event)
    }

    /// Moves the room on to `seq` without an event for anyone here.
    pub fn skip(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// The room went past `seq` without this node hearing every event up
    /// to it (it started following the room's log there, or could not
    /// read a record): no replay reaches back over it.
    pub fn forget_until(&mut self, seq: u64) {
        self.skip(seq);
        self.replay_floor = self.replay_floor.max(seq);
    }

    /// [`RoomState::publish`] under a number given elsewhere (a cluster's
    /// room log): `seq` is after every event delivered so far.
    pub fn deliver(&mut self, seq: u64, to: Audience, event: Event) -> Vec<Overflowed> {
        debug_assert!(seq >= self.next_seq);
        self.next_seq = seq + 1;
        let lobby_changed = self.note(&event);
        let event = Arc::new(pb::ServerEvent {
            sequence: seq,
            event: Some(event),
        });
        // A reaction lasts a moment and is not replayed: a burst of them
        // must not push out of the ring what a resume needs.
        if matches!(event.event, Some(Event::Reaction(_))) {
            let overflowed = self.fan(&to, event.clone());
            self.after(lobby_changed, &event);
            return overflowed;
        }
        let bytes = prost::Message::encoded_len(event.as_ref());
        self.keep(Buffered {
            seq,
            to: to.clone(),
            event: Kept::Event(event.clone()),
            bytes,
        });
        let overflowed = self.fan(&to, event.clone());
        self.after(lobby_changed, &event);
        overflowed
    }

    /// [`RoomState::deliver`] of an event that no participant here
    /// receives and that changes nothing here (in a cluster: a signal to
    /// a participant served elsewhere): kept for replay as it came, in
    /// `encoded` (a `ServerEvent` without its number), and not decoded.
    pub fn pass(&mut self, seq: u64, to: Audience, encoded: &[u8]) {
        debug_assert!(seq >= self.next_seq);
        self.next_seq = seq + 1;
        self.keep(Buffered {
            seq,
            to,
            event: Kept::Encoded(encoded.into()),
            bytes: encoded.len(),
        });
    }

    /// Puts an event in the replay ring, pushing out the oldest ones past
    /// its count or its bytes.
    fn keep(&mut self, buffered: Buffered) {
        while self.replay.len() >= self.replay_capacity
            || (!self.replay.is_empty() && self.replay_bytes + buffered.bytes > REPLAY_MAX_BYTES)
        {
            if let Some(old) = self.replay.pop_front() {
                self.replay_bytes -= old.bytes;
                self.replay_floor = self.replay_floor.max(old.seq);
            }
        }
        self.replay_bytes += buffered.bytes;
        self.replay.push_back(buffered);
    }

    /// Delivers `event` outside the room's order (sequence 0, not kept
    /// for replay): in a cluster, what this node's participants send each
    /// other while Redis, which orders the room, is away. Returns, besides
    /// who overflowed, the detached participants it made unable to resume
    /// (their grace has no purpose left).
    pub fn deliver_unsequenced(
        &mut self,
        to: Audience,
        event: Event,
    ) -> (Vec<Overflowed>, Vec<Overflowed>) {
        let lobby_changed = self.note(&event);
        // Who is here changed here: when the log says it again, it is no
        // news to this node's participants.
        if let Some(link) = self.link.as_mut() {
            link.note(&event);
        }
        let event = Arc::new(pb::ServerEvent {
            sequence: 0,
            event: Some(event),
        });
        let overflowed = self.fan(&to, event.clone());
        // Whoever it did not reach cannot have it replayed: their resume
        // must not pass for complete.
        let mut unresumable = Vec::new();
        if unsequenced_replayable(&event) {
            for (id, slot) in self.slots.iter_mut() {
                let reached = slot
                    .outbox
                    .as_ref()
                    .is_some_and(|outbox| !outbox.tx.is_closed());
                if !to.includes(id) || slot.waiting.is_some() || reached {
                    continue;
                }
                if !slot.unresumable && slot.outbox.is_none() {
                    unresumable.push(Overflowed {
                        participant_id: id.clone(),
                        epoch: slot.epoch,
                        resumable: false,
                    });
                }
                slot.unresumable = true;
            }
        }
        self.after(lobby_changed, &event);
        (overflowed, unresumable)
    }

    /// `participant_id` lost an event delivered outside the room's order
    /// (its stream ended with it queued): it cannot resume.
    pub fn make_unresumable(&mut self, participant_id: &str) {
        if let Some(slot) = self.slots.get_mut(participant_id) {
            slot.unresumable = true;
        }
    }

    /// Whether `participant_id` can no longer resume (see
    /// [`RoomState::make_unresumable`]).
    pub fn unresumable(&self, participant_id: &str) -> bool {
        self.slots
            .get(participant_id)
            .is_some_and(|slot| slot.unresumable)
    }

    /// Pushes `event` to every attached participant in `to`.
    fn fan(&mut self, to: &Audience, event: Arc<pb::ServerEvent>) -> Vec<Overflowed> {
        let mut overflowed = Vec::new();
        for (id, slot) in self.slots.iter_mut() {
            if !to.includes(id) || slot.waiting.is_some() {
                continue;
            }
            let Some(outbox) = &slot.outbox else { continue };
            match outbox.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full) => {
                    // What it received is what it can resume from, unless
                    // what it did not receive is in no replay.
                    if outbox.tx.holds(unsequenced_replayable) {
                        slot.unresumable = true;
                    }
                    let delivered = outbox.control.sent_seq();
                    let epoch = slot.detach(
                        DetachCause::SlowConsumer,
                        delivered,
                        Some(CloseReason::SlowConsumer),
                    );
                    overflowed.push(Overflowed {
                        participant_id: id.clone(),
                        epoch,
                        resumable: !slot.unresumable,
                    });
                }
                // The stream is gone; its drop detaches the slot.
                Err(TrySendError::Closed) => {}
            }
        }
        overflowed
    }

    /// This node missed more of the room than its log keeps (or what
    /// Redis lost): every participant is told it fell behind and cannot
    /// resume (what it missed is gone), and the replay ring starts over.
    ///
    /// Returns who it detached, and who was away already (their grace has
    /// no purpose left either).
    pub fn fell_behind(&mut self) -> (Vec<Overflowed>, Vec<Overflowed>) {
        self.replay.clear();
        self.replay_bytes = 0;
        self.replay_floor = self.last_seq();
        let (mut detached, mut away) = (Vec::new(), Vec::new());
        for (id, slot) in self.slots.iter_mut() {
            // A waiter missed nothing: it hears nothing of the room.
            if slot.waiting.is_some() {
                continue;
            }
            let newly = !slot.unresumable;
            slot.unresumable = true;
            let Some(outbox) = &slot.outbox else {
                if newly {
                    away.push(Overflowed {
                        participant_id: id.clone(),
                        epoch: slot.epoch,
                        resumable: false,
                    });
                }
                continue;
            };
            let delivered = outbox.control.sent_seq();
            let epoch = slot.detach(
                DetachCause::SlowConsumer,
                delivered,
                Some(CloseReason::SlowConsumer),
            );
            detached.push(Overflowed {
                participant_id: id.clone(),
                epoch,
                resumable: false,
            });
        }
        (detached, away)
    }

    /// Events after `from` addressed to `participant_id`, or `None` when
    /// some of them already left the replay buffer.
    pub fn replay_since(
        &self,
        participant_id: &str,
        from: u64,
    ) -> Option<Vec<Arc<pb::ServerEvent>>> {
        if from < self.replay_floor
            || self
                .slots
                .get(participant_id)
                .is_some_and(|slot| slot.unresumable)
        {
            return None;
        }
        Some(
            self.replay
                .iter()
                .filter(|b| b.seq > from && b.to.includes(participant_id))
                .filter_map(|b| b.event.event(b.seq))
                .collect(),
        )
    }

    /// The stream of `participant_id`'s attachment `epoch` lost its client
    /// (`cause`) after `delivered` reached it: the slot stays for a resume.
    /// The new epoch, for the grace timer; `None` when that attachment is
    /// already over (resumed, replaced, detached, gone).
    pub fn detach(
        &mut self,
        participant_id: &str,
        epoch: u64,
        cause: DetachCause,
        delivered: u64,
    ) -> Option<u64> {
        let slot = self.slots.get_mut(participant_id)?;
        (slot.epoch == epoch).then(|| slot.detach(cause, delivered, None))
    }

    /// Why `participant_id` went, if the grace period of `epoch` still
    /// applies (it is detached and has not resumed since).
    pub fn expired(&self, participant_id: &str, epoch: u64) -> Option<DetachCause> {
        self.slots
            .get(participant_id)
            .filter(|slot| slot.epoch == epoch)
            .and_then(|slot| slot.detached)
    }

    /// Where a resume of `participant_id` starts: after `last_sequence` if
    /// the client says (at most the latest event), else after what last
    /// reached its transport.
    pub fn resume_from(&self, participant_id: &str, last_sequence: u64) -> Option<u64> {
        let slot = self.slots.get(participant_id)?;
        Some(match (&slot.outbox, last_sequence) {
            (_, n) if n > 0 => n.max(slot.joined_seq).min(self.last_seq()),
            // Replacing a stream the server has not yet seen drop.
            (Some(outbox), _) => outbox.control.sent_seq(),
            (None, _) => slot.delivered,
        })
    }

    /// Attaches a new stream (sending on `tx`, session `session_id`) to
    /// `participant_id`: a stream still attached ends as replaced, and the
    /// epoch moves on. `control` makes the new session's control for that
    /// epoch. Returns the replaced session's id and the new control.
    pub fn reattach(
        &mut self,
        participant_id: &str,
        session_id: String,
        tx: queue::Sender,
        control: impl FnOnce(u64) -> Arc<SessionControl>,
    ) -> Option<(String, Arc<SessionControl>)> {
        let slot = self.slots.get_mut(participant_id)?;
        let old_session = std::mem::replace(&mut slot.session_id, session_id);
        slot.close(CloseReason::Replaced);
        slot.epoch += 1;
        slot.detached = None;
        let control = control(slot.epoch);
        slot.outbox = Some(Outbox {
            tx,
            control: control.clone(),
        });
        Some((old_session, control))
    }

    /// Everyone present or within their grace, in join order (in a
    /// cluster, on every node).
    pub fn participants(&self) -> Vec<pb::Participant> {
        match &self.link {
            Some(link) => link.members.values().cloned().collect(),
            None => self
                .slots
                .values()
                .filter(|slot| slot.waiting.is_none())
                .map(|slot| slot.info.clone())
                .collect(),
        }
    }

    /// `participant_id` as the room knows it (on any node).
    pub fn participant(&self, participant_id: &str) -> Option<pb::Participant> {
        match &self.link {
            Some(link) => link.members.get(participant_id).cloned(),
            None => self
                .slots
                .get(participant_id)
                .filter(|slot| slot.waiting.is_none())
                .map(|slot| slot.info.clone()),
        }
    }

    /// Who waits in the lobby (on any node), in arrival order.
    pub fn lobby(&self) -> Vec<pb::Participant> {
        match &self.link {
            Some(link) => link.lobby.values().cloned().collect(),
            None => self
                .slots
                .values()
                .filter(|slot| slot.waiting.is_some())
                .map(|slot| slot.info.clone())
                .collect(),
        }
    }

    /// `participant_id` if it waits in the lobby (on any node).
    pub fn waiter(&self, participant_id: &str) -> Option<pb::Participant> {
        match &self.link {
            Some(link) => link.lobby.get(participant_id).cloned(),
            None => self
                .slots
                .get(participant_id)
                .filter(|slot| slot.waiting.is_some())
                .map(|slot| slot.info.clone()),
        }
    }

    /// Whether a host or co-host is in the room (on any node) to admit.
    pub fn host_present(&self) -> bool {
        self.participants().iter().any(super::settings::runs)
    }

    /// Tells every waiter here whether someone can admit it, when that
    /// changed since it was last told.
    pub fn tell_waiters(&mut self) {
        let present = self.host_present();
        for slot in self.slots.values_mut() {
            let (Some(waiting), Some(outbox)) = (&mut slot.waiting, &slot.outbox) else {
                continue;
            };
            if waiting.host_present != present {
                waiting.host_present = present;
                let event = pb::ServerEvent {
                    sequence: 0,
                    event: Some(Event::Waiting(waiting.clone())),
                };
                let _ = outbox.tx.try_send(Arc::new(event));
            }
        }
    }

    /// Sends the waiting list to every host and co-host here (outside the
    /// room's order: it is the whole list each time).
    pub fn tell_runners(&self) {
        let lobby = Arc::new(pb::ServerEvent {
            sequence: 0,
            event: Some(Event::Lobby(pb::Lobby {
                participants: self.lobby(),
            })),
        });
        for slot in self.slots.values() {
            if slot.waiting.is_some() || !super::settings::runs(&slot.info) {
                continue;
            }
            if let Some(outbox) = &slot.outbox {
                let _ = outbox.tx.try_send(lobby.clone());
            }
        }
    }

    /// Whether `participant_id` is in the room (on any node).
    pub fn has(&self, participant_id: &str) -> bool {
        self.slots
            .get(participant_id)
            .is_some_and(|slot| slot.waiting.is_none())
            || self
                .link
                .as_ref()
                .is_some_and(|link| link.members.contains_key(participant_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            chats: TokenBucket::new(5),
            signals: TokenBucket::new(20),
            typing: TokenBucket::new(5),
            media: TokenBucket::new(10),
            reactions: TokenBucket::new(5),
        }
    }

    fn control(id: &str, epoch: u64) -> Arc<SessionControl> {
        Arc::new(SessionControl::new(
            format!("session-{id}-{epoch}"),
            "m".into(),
            id.into(),
            "u".into(),
            epoch,
            0,
        ))
    }

    fn slot(id: &str, capacity: usize) -> (Slot, queue::Receiver) {
        let (tx, rx) = queue::channel(capacity);
        let info = pb::Participant {
            participant_id: id.into(),
            user_id: "u".into(),
            ..Default::default()
        };
        let outbox = Outbox {
            tx,
            control: control(id, 0),
        };
        (
            Slot::new(info, format!("token-{id}"), outbox, 0, limits()),
            rx,
        )
    }

    fn pong() -> Event {
        Event::Pong(pb::Pong {})
    }

    fn joined(id: &str) -> Event {
        Event::ParticipantJoined(Box::new(pb::ParticipantJoined {
            participant: Some(pb::Participant {
                participant_id: id.into(),
                ..Default::default()
            }),
        }))
    }

    #[test]
    fn everyone_sees_the_same_order_and_only_targets_get_signals() {
        let mut room = RoomState::new(16);
        let (a, mut rx_a) = slot("a", 8);
        let (b, mut rx_b) = slot("b", 8);
        room.slots.insert("a".into(), Box::new(a));
        room.slots.insert("b".into(), Box::new(b));
        room.publish(Audience::All, pong());
        room.publish(Audience::Only("b".into()), pong());
        room.publish(Audience::AllExcept("b".into()), pong());
        let seqs = |rx: &mut queue::Receiver| {
            let mut out = Vec::new();
            while let Some(e) = rx.try_recv() {
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
        room.slots.insert("slow".into(), Box::new(slow));
        room.slots.insert("fast".into(), Box::new(fast));
        assert!(room.publish(Audience::All, pong()).is_empty());
        let overflowed = room.publish(Audience::All, pong());
        assert_eq!(
            overflowed,
            [Overflowed {
                participant_id: "slow".into(),
                epoch: 1,
                resumable: true,
            }]
        );
        let slow = &room.slots["slow"];
        assert!(slow.outbox.is_none());
        assert_eq!(slow.epoch(), 1);
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
    fn an_event_passed_on_is_replayed_to_its_target_only() {
        let mut room = RoomState::new(16);
        let (a, mut rx_a) = slot("a", 8);
        room.slots.insert("a".into(), Box::new(a));
        room.deliver(5, Audience::All, pong());
        let signal = pb::ServerEvent {
            sequence: 0,
            event: Some(Event::Signal(pb::IncomingSignal {
                from_participant_id: "a".into(),
                payload: Some(pb::incoming_signal::Payload::Offer(
                    pb::SessionDescription { sdp: "v=0".into() },
                )),
            })),
        };
        room.pass(
            6,
            Audience::Only("b".into()),
            &prost::Message::encode_to_vec(&signal),
        );
        room.deliver(7, Audience::All, pong());
        // Nobody here received it, and the room went on past it.
        assert_eq!(rx_a.try_recv().unwrap().sequence, 5);
        assert_eq!(rx_a.try_recv().unwrap().sequence, 7);
        assert!(rx_a.try_recv().is_none());
        assert_eq!(room.last_seq(), 7);
        // Its target, should it resume here, gets it whole and numbered.
        let missed = room.replay_since("b", 4).unwrap();
        assert_eq!(missed.len(), 3);
        assert_eq!(
            *missed[1],
            pb::ServerEvent {
                sequence: 6,
                ..signal
            }
        );
        assert_eq!(
            room.replay_since("a", 4)
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect::<Vec<_>>(),
            [5, 7]
        );
        // It counts against the ring's bytes like any other.
        assert_eq!(
            room.replay_bytes,
            room.replay.iter().map(|b| b.bytes).sum::<usize>()
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
    fn numbers_that_carried_nothing_do_not_break_a_replay() {
        // A node starts following a cluster room's log at 10: before that
        // it knows nothing; 11 was a control record (a resume's claim).
        let mut room = RoomState::new(16);
        room.forget_until(10);
        room.skip(11);
        assert_eq!(room.last_seq(), 11);
        assert!(room.replay_since("x", 9).is_none(), "before it followed");
        assert_eq!(room.replay_since("x", 10).unwrap().len(), 0);
        room.deliver(12, Audience::All, pong());
        let missed = room.replay_since("x", 10).unwrap();
        assert_eq!(missed.iter().map(|e| e.sequence).collect::<Vec<_>>(), [12]);
        // A ring emptied because the node fell behind replays nothing older.
        let _ = room.fell_behind();
        assert!(room.replay_since("x", 11).is_none());
        assert_eq!(room.replay_since("x", 12).unwrap().len(), 0);
    }

    #[test]
    fn who_missed_an_unsequenced_event_cannot_resume() {
        // Redis is away: a and b are here, c's stream is gone, d is away.
        let mut room = RoomState::new(16);
        let (a, mut rx_a) = slot("a", 8);
        let (b, _rx_b) = slot("b", 8);
        let (c, rx_c) = slot("c", 8);
        let (d, _rx_d) = slot("d", 8);
        for (id, slot) in [("a", a), ("b", b), ("c", c), ("d", d)] {
            room.slots.insert(id.into(), Box::new(slot));
        }
        room.deliver(5, Audience::All, pong());
        drop(rx_c);
        room.detach("d", 0, DetachCause::Disconnected, 5);
        let (overflowed, unresumable) =
            room.deliver_unsequenced(Audience::AllExcept("b".into()), joined("x"));
        assert!(overflowed.is_empty());
        assert_eq!(rx_a.try_recv().unwrap().sequence, 5);
        assert_eq!(rx_a.try_recv().unwrap().sequence, 0);
        // a got it and b was not meant to: their replays stand.
        assert!(room.replay_since("a", 5).is_some());
        assert!(room.replay_since("b", 4).is_some());
        // c and d would resume as if complete: they may not, and d's
        // grace (c's starts when its stream reports) has no purpose left.
        assert!(room.replay_since("c", 5).is_none());
        assert!(room.replay_since("d", 5).is_none());
        assert_eq!(
            unresumable,
            [Overflowed {
                participant_id: "d".into(),
                epoch: 1,
                resumable: false,
            }]
        );
        // Replies and reactions are never replayed: missing one is no loss.
        let (_, unresumable) = room.deliver_unsequenced(Audience::All, pong());
        assert!(unresumable.is_empty());
        assert!(!unsequenced_replayable(&pb::ServerEvent {
            sequence: 0,
            event: Some(Event::Reaction(Default::default())),
        }));
    }

    #[test]
    fn a_queue_that_overflows_holding_an_unsequenced_event_cannot_resume() {
        let mut room = RoomState::new(16);
        let (slow, _rx) = slot("slow", 1);
        room.slots.insert("slow".into(), Box::new(slow));
        room.deliver_unsequenced(Audience::All, joined("x"));
        let overflowed = room.publish(Audience::All, pong());
        assert_eq!(overflowed.len(), 1);
        assert!(!overflowed[0].resumable);
        assert!(room.unresumable("slow"));
        assert!(room.replay_since("slow", 0).is_none());
    }

    #[test]
    fn a_stream_that_ends_holding_an_unsequenced_event_cannot_resume() {
        let (tx, rx) = queue::channel(4);
        assert!(!rx.holds(unsequenced_replayable));
        tx.try_send(Arc::new(pb::ServerEvent {
            sequence: 0,
            event: Some(pong()),
        }))
        .unwrap();
        assert!(!rx.holds(unsequenced_replayable), "a pong is no loss");
        tx.try_send(Arc::new(pb::ServerEvent {
            sequence: 0,
            event: Some(joined("x")),
        }))
        .unwrap();
        assert!(rx.holds(unsequenced_replayable));
        assert!(tx.holds(unsequenced_replayable));
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

    #[test]
    fn only_the_current_attachment_can_detach_and_expire() {
        let mut room = RoomState::new(16);
        let (a, _rx) = slot("a", 8);
        room.slots.insert("a".into(), Box::new(a));
        assert_eq!(room.expired("a", 0), None, "attached: no grace");
        let epoch = room
            .detach("a", 0, DetachCause::Disconnected, 0)
            .expect("the current attachment detaches");
        assert_eq!(epoch, 1);
        assert!(room.slots["a"].outbox.is_none());
        // The same stream reporting twice, or an older one, changes nothing.
        assert_eq!(room.detach("a", 0, DetachCause::TimedOut, 0), None);
        assert_eq!(room.expired("a", 0), None, "a stale timer");
        assert_eq!(room.expired("a", 1), Some(DetachCause::Disconnected));
        assert_eq!(room.detach("nobody", 0, DetachCause::TimedOut, 0), None);
    }

    #[test]
    fn a_resume_replaces_the_stream_and_outdates_its_timers() {
        let mut room = RoomState::new(16);
        let (a, _rx_old) = slot("a", 8);
        let old_control = a.outbox.as_ref().unwrap().control.clone();
        room.slots.insert("a".into(), Box::new(a));
        room.publish(Audience::All, pong());
        room.publish(Audience::All, pong());
        old_control.mark_sent(1);
        // Replacing a live stream resumes from what reached its transport.
        assert_eq!(room.resume_from("a", 0), Some(1));
        assert_eq!(room.resume_from("a", 99), Some(2), "at most the latest");
        // Nothing from before it joined.
        room.slots.get_mut("a").unwrap().joined_seq = 2;
        assert_eq!(room.resume_from("a", 1), Some(2), "not before its join");
        let (tx, _rx) = queue::channel(8);
        let (old_session, new_control) = room
            .reattach("a", "session-a-1".into(), tx, |epoch| control("a", epoch))
            .unwrap();
        assert_eq!(old_session, "session-a-0");
        assert_eq!(old_control.reason(), Some(CloseReason::Replaced));
        assert_eq!(new_control.epoch, 1);
        assert_eq!(room.slots["a"].session_id, "session-a-1");
        // The replaced stream's own detach report is stale now.
        assert_eq!(room.detach("a", 0, DetachCause::Disconnected, 0), None);
        // A detach and a resume: the grace timer of the detach is outdated.
        let grace = room.detach("a", 1, DetachCause::Disconnected, 2).unwrap();
        assert_eq!(room.resume_from("a", 0), Some(2), "from what was delivered");
        let (tx, _rx) = queue::channel(8);
        room.reattach("a", "session-a-3".into(), tx, |epoch| control("a", epoch))
            .unwrap();
        assert_eq!(room.expired("a", grace), None);
        assert!(
            room.reattach("nobody", "x".into(), queue::channel(1).0, |e| control(
                "x", e
            ))
            .is_none()
        );
    }
}
