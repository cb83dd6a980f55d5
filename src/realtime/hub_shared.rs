//! The hub's rooms when several nodes share them (DESIGN §9).
//!
//! On one node a room numbers its own events. In a cluster the room's log
//! in Redis does ([`Link`]): the hub *emits* into the log, and *applies*
//! what comes back on the room's channel, its own events included, in the
//! log's order. A node applies records only once it knows where it stands:
//! its first join waits for the room's snapshot (number and roster, read
//! after subscribing), and a gap in the numbers, or a subscription made
//! again, holds deliveries back while the missed records are read from the
//! log. What came meanwhile waits in `pending`.

use std::{sync::Arc, time::Duration};

use prost::Message;

use super::{
    Audience, Event, HubError, Link, Record, RecordHead, Replay, Room, RoomHub, RoomSink,
    RoomState, RosterOp, lock, room_log,
};
use crate::{domain::time::now_micros, proto::pb};

/// How often a node says it is alive, and looks for nodes that are not.
const BEAT: Duration = Duration::from_secs(1);
/// A node silent this long is dead: its participants leave, timed out.
const NODE_DEAD: Duration = Duration::from_secs(8);
/// The longest one round of heartbeat and reaping may take.
const ROUND: Duration = Duration::from_secs(5);

/// Says every [`BEAT`] that this node is alive, and takes the participants
/// of dead nodes out of their rooms.
pub(super) fn start_liveness(hub: &Arc<RoomHub>) {
    let hub = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(hub) = hub.upgrade() else { return };
            let Some(link) = hub.link.clone() else { return };
            let round = tokio::time::timeout(ROUND, hub.beat_and_reap(&link)).await;
            if !matches!(round, Ok(Ok(()))) {
                link.reset_liveness();
                tracing::debug!("room log: heartbeat round failed; next second");
            }
        }
    });
}

fn link_node(link: &Option<Arc<Link>>) -> &str {
    link.as_ref().map_or("", |l| l.node())
}

/// What applying records leaves to do once the room's lock is released.
#[derive(Default)]
struct Followups {
    /// Local participants a removal takes out.
    kicks: Vec<String>,
    /// Sessions whose participant moved to another node.
    gone_sessions: Vec<String>,
    /// Presence of this node's participants must be said again.
    repair: bool,
    /// Events Published on other nodes for sessions of this one: session,
    /// user, event.
    forwarded: Vec<(String, String, Vec<u8>)>,
    /// Waiters here a host or co-host denied.
    denied: Vec<String>,
}

impl Followups {
    fn is_empty(&self) -> bool {
        self.kicks.is_empty()
            && self.gone_sessions.is_empty()
            && !self.repair
            && self.forwarded.is_empty()
            && self.denied.is_empty()
    }

    fn extend(&mut self, other: Followups) {
        self.denied.extend(other.denied);
        self.kicks.extend(other.kicks);
        self.gone_sessions.extend(other.gone_sessions);
        self.repair |= other.repair;
        self.forwarded.extend(other.forwarded);
    }
}

/// A resume from another node under way in `room` (see
/// `RoomState::resuming`); its entry goes when this does, and the room
/// too if that leaves it empty (the resume failed, or its call went).
struct Resuming {
    hub: std::sync::Weak<RoomHub>,
    meeting_id: String,
    room: Arc<Room>,
    participant_id: String,
}

impl Resuming {
    /// The roster named the participant.
    fn name(&mut self, state: &mut RoomState, participant_id: &str) {
        if let Some(entry) = state
            .resuming
            .iter_mut()
            .find(|p| **p == self.participant_id)
        {
            participant_id.clone_into(entry);
        }
        participant_id.clone_into(&mut self.participant_id);
    }
}

impl Drop for Resuming {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.room);
            if let Some(at) = state
                .resuming
                .iter()
                .position(|p| *p == self.participant_id)
            {
                state.resuming.swap_remove(at);
            }
        }
        if let Some(hub) = self.hub.upgrade() {
            hub.drop_room_if_empty(&self.meeting_id, &self.room);
        }
    }
}

/// What takes `member`, `node`'s, out of the roster: the record (a waiter
/// was never in the room: it leaves the lobby; a participant leaves for
/// `reason`) and the roster operation, taken only while the roster still
/// names `node`.
fn reap(
    participant_id: &str,
    member: &room_log::Member,
    node: &str,
    reason: pb::ParticipantLeftReason,
) -> (Record, RosterOp) {
    let record = if member.waiting {
        Record {
            unwaiting: participant_id.to_owned(),
            ..Default::default()
        }
    } else {
        Record::event(&Audience::All, super::left(participant_id, reason))
    };
    let op = RosterOp::Reap {
        participant_id: participant_id.to_owned(),
        node: node.to_owned(),
    };
    (record, op)
}

/// A participant another node served, found for a resume here.
struct Found {
    participant_id: String,
    info: pb::Participant,
    /// Its resume token's hash, which the claim checks.
    token: Vec<u8>,
    /// Where its replay starts.
    from: u64,
    replay: Vec<(u64, Vec<u8>)>,
}

const GONE: HubError = HubError::ResumeFailed("the participant's grace period is over");
const UNREACHABLE: HubError =
    HubError::ResumeFailed("the room cannot be reached from this node now");

/// How long a claim (and what settles it) may wait for Redis.
const CLAIM_REPLY: Duration = Duration::from_secs(2);

/// What catching up read from the log.
enum Fetched {
    /// The records after where the room stands.
    Records(Vec<(u64, Vec<u8>)>),
    /// Where the log stands, and who is in the room.
    Snapshot(room_log::Snapshot),
}

impl RoomHub {
    /// One heartbeat, then every dead node's participants out of their
    /// rooms: `participant_left{TIMED_OUT}` once per participant (the
    /// script lets one node win), whose winner also closes its attendance.
    async fn beat_and_reap(&self, link: &Link) -> redis::RedisResult<()> {
        let log = link.liveness_log().await?;
        link.set_runs(log.beat(link.node()).await?);
        for node in log.dead_nodes(NODE_DEAD).await? {
            if node == link.node() {
                continue;
            }
            let mut complete = true;
            for room in log.rooms_of(&node).await? {
                // One room's failure does not hold up the others.
                let Ok(snapshot) = log.snapshot(&room).await else {
                    complete = false;
                    continue;
                };
                for (participant_id, member) in
                    snapshot.roster.iter().filter(|(_, m)| m.node == node)
                {
                    let (left, op) = reap(
                        participant_id,
                        member,
                        &node,
                        pb::ParticipantLeftReason::TimedOut,
                    );
                    let Ok(reaped) = log.append_with(&room, &left.encode_to_vec(), &op).await
                    else {
                        complete = false;
                        continue;
                    };
                    if reaped.is_some() {
                        tracing::info!(%room, %participant_id, %node, "participant of a dead node timed out");
                        self.attendance.leave(participant_id, now_micros());
                    }
                }
            }
            if complete {
                log.forget(&node).await?;
            }
        }
        Ok(())
    }

    /// In a cluster: resumes a participant another node served (one that
    /// died, or that the client left behind): the roster names it by its
    /// resume token's hash, the log replays what it missed after
    /// `last_sequence`, and a claim (atomic with the token's check) makes
    /// this node its server; the old node, if alive, drops its slot
    /// quietly when the claim's record reaches it.
    ///
    /// The reads happen in the call (a caller that goes away stops them).
    /// From the claim on, it runs on a task of its own, not cancelled with
    /// the call: a claim that went through ends attached (a stream nobody
    /// reads then detaches as any whose client left, and its grace runs
    /// out) or announced as left, never as a participant no node serves.
    pub async fn resume_elsewhere(
        self: &Arc<Self>,
        meeting: &pb::Meeting,
        user_id: &str,
        resume_token: &str,
        last_sequence: u64,
    ) -> Result<super::SessionStream, HubError> {
        let Some(link) = self.link.clone() else {
            return Err(GONE);
        };
        if last_sequence == 0 {
            return Err(HubError::ResumeFailed(
                "resuming on another node needs last_sequence",
            ));
        }
        let mut resuming = self.caught_up_room(&meeting.id).await?;
        let found = self
            .find_elsewhere(
                &link,
                meeting,
                &mut resuming,
                user_id,
                resume_token,
                last_sequence,
            )
            .await?;
        let (hub, meeting, resume_token) = (self.clone(), meeting.clone(), resume_token.to_owned());
        tokio::spawn(async move {
            let resumed = hub
                .claim_and_attach(&link, &meeting, &resuming, &resume_token, found)
                .await;
            drop(resuming);
            resumed
        })
        .await
        .unwrap_or(Err(UNREACHABLE))
    }

    /// Who `resume_token` names in the room's roster (a participant of
    /// `user_id` served by another node), and what it missed.
    async fn find_elsewhere(
        &self,
        link: &Link,
        meeting: &pb::Meeting,
        resuming: &mut Resuming,
        user_id: &str,
        resume_token: &str,
        last_sequence: u64,
    ) -> Result<Found, HubError> {
        let token = super::cluster::token_hash(resume_token);
        let snapshot = link.snapshot(&meeting.id).await.map_err(|_| UNREACHABLE)?;
        let Some((participant_id, member)) = snapshot.roster.iter().find(|(_, m)| m.token == token)
        else {
            return Err(GONE);
        };
        let info = pb::Participant::decode(member.participant.as_slice()).map_err(|_| GONE)?;
        if info.user_id != user_id || member.node == link.node() {
            return Err(GONE);
        }
        // What would refuse the attach is checked before the claim (and
        // again after it, under the lock).
        {
            let room = resuming.room.clone();
            let mut state = lock(&room);
            resuming.name(&mut state, participant_id);
            if state.closed.is_some() {
                return Err(HubError::NotJoinable);
            }
            if state.removed_users.contains(user_id) {
                return Err(HubError::Removed);
            }
            if state.slots.contains_key(participant_id) {
                return Err(HubError::ResumeFailed("the participant is already here"));
            }
        }
        // Nothing from before it joined, whatever the client asks.
        let joined = link
            .joined_at(&meeting.id, participant_id)
            .await
            .map_err(|_| UNREACHABLE)?;
        let from = last_sequence.max(joined);
        let replay = match link.resume_since(&meeting.id, from).await {
            Ok(Replay::Events(records)) => records,
            Ok(Replay::Gone) => {
                return Err(HubError::ResumeFailed(
                    "the events missed are no longer buffered",
                ));
            }
            Err(_) => return Err(UNREACHABLE),
        };
        Ok(Found {
            participant_id: participant_id.clone(),
            info,
            token,
            from,
            replay,
        })
    }

    /// Claims `found` for this node and attaches it here.
    async fn claim_and_attach(
        self: &Arc<Self>,
        link: &Link,
        meeting: &pb::Meeting,
        resuming: &Resuming,
        resume_token: &str,
        found: Found,
    ) -> Result<super::SessionStream, HubError> {
        let Found {
            participant_id,
            info,
            token,
            from,
            replay,
        } = found;
        let claim = Record {
            moved: participant_id.clone(),
            origin: link.node().to_owned(),
            ..Default::default()
        };
        let op = RosterOp::Claim {
            participant_id: participant_id.clone(),
            node: link.node().to_owned(),
            token,
        };
        // One connection for the claim and whatever settles it: Redis
        // answers a connection's commands in the order they came.
        let log = link.log().await.map_err(|_| UNREACHABLE)?;
        let claim = claim.encode_to_vec();
        let claimed = log.append_with(&meeting.id, &claim, &op);
        match tokio::time::timeout(CLAIM_REPLY, claimed).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err(GONE),
            // Redis did not say, and the claim may yet go through: asked
            // after it, the roster tells.
            _ => {
                let server = log.server_of(&meeting.id, &participant_id);
                match tokio::time::timeout(CLAIM_REPLY, server).await {
                    Ok(Ok(Some(node))) if node == link.node() => {}
                    Ok(Ok(_)) => return Err(GONE),
                    _ => {
                        self.leave_if_unattached(
                            &log,
                            link,
                            &resuming.room,
                            &meeting.id,
                            &participant_id,
                        )
                        .await;
                        return Err(UNREACHABLE);
                    }
                }
            }
        }
        let attached = self.attach_moved(meeting, &resuming.room, info, resume_token, from, replay);
        if attached.is_err() {
            // The meeting ended meanwhile, or this node missed what the
            // replay needs.
            self.leave_if_unattached(&log, link, &resuming.room, &meeting.id, &participant_id)
                .await;
        }
        attached
    }

    /// A participant this node claimed (or may have: Redis did not answer)
    /// is not attached here: its old node let it go, so no node serves it.
    /// It leaves for good rather than linger in every node's roster,
    /// unless another resume of it here attached it or is under way; the
    /// roster takes the leave only while it names this node (a claim that
    /// never happened leaves it where it was). The leave goes on `log`,
    /// the claim's connection, so that Redis takes it after the claim.
    async fn leave_if_unattached(
        &self,
        log: &super::room_log::RoomLog,
        link: &Link,
        room: &Arc<Room>,
        meeting_id: &str,
        participant_id: &str,
    ) {
        let alone = {
            let state = lock(room);
            !state.slots.contains_key(participant_id)
                && state
                    .resuming
                    .iter()
                    .filter(|p| *p == participant_id)
                    .count()
                    == 1
        };
        if !alone {
            return;
        }
        let left = Record::event(
            &Audience::All,
            super::left(participant_id, pb::ParticipantLeftReason::Disconnected),
        );
        let leave = RosterOp::Leave {
            participant_id: participant_id.to_owned(),
            node: link.node().to_owned(),
        };
        let encoded = left.encode_to_vec();
        let sent = log.append_with(meeting_id, &encoded, &leave);
        match tokio::time::timeout(CLAIM_REPLY, sent).await {
            Ok(Ok(Some(_))) => self.attendance.leave(participant_id, now_micros()),
            Ok(Ok(None)) => {}
            // Redis did not say: the leave goes through the queue, which
            // tries again (the roster still takes it only from this node).
            // Whether it will is unknown here, so attendance stays open.
            _ => {
                tracing::warn!(
                    meeting_id,
                    participant_id,
                    "room log: the leave of a participant claimed but not attached is queued"
                );
                link.append(meeting_id, left, leave);
            }
        }
    }

    /// This node's room for `meeting_id`, caught up with its log (waiting
    /// a few seconds at most), held open for a resume from the moment it
    /// is found open (another resume failing here must not drop it while
    /// this one waits).
    async fn caught_up_room(&self, meeting_id: &str) -> Result<Resuming, HubError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let (resuming, ready) = loop {
            let room = lock(&self.rooms)
                .entry(meeting_id.to_owned())
                .or_insert_with(|| self.new_room(meeting_id))
                .clone();
            let mut state = lock(&room);
            match state.closed {
                Some(super::Closed::Emptied) => continue,
                Some(super::Closed::MeetingOver) => return Err(HubError::NotJoinable),
                None => {}
            }
            state.resuming.push(String::new());
            let ready = match &state.link {
                Some(link) if !link.synced => Some(link.ready.subscribe()),
                _ => None,
            };
            drop(state);
            let resuming = Resuming {
                hub: self.this.clone(),
                meeting_id: meeting_id.to_owned(),
                room,
                participant_id: String::new(),
            };
            break (resuming, ready);
        };
        if let Some(mut ready) = ready
            && tokio::time::timeout_at(deadline, ready.wait_for(|r| *r))
                .await
                .is_err()
        {
            // The guard's drop lets the room go if nobody else holds it.
            return Err(HubError::ResumeFailed(
                "the room cannot be reached from this node now",
            ));
        }
        Ok(resuming)
    }

    /// Attaches a participant claimed from another node, with what it
    /// missed: the log's records after `from` up to what this node has
    /// delivered (later ones reach it live), then what this node delivered
    /// after the log's replay ended.
    fn attach_moved(
        self: &Arc<Self>,
        meeting: &pb::Meeting,
        room: &Arc<Room>,
        info: pb::Participant,
        resume_token: &str,
        from: u64,
        replay: Vec<(u64, Vec<u8>)>,
    ) -> Result<super::SessionStream, HubError> {
        let participant_id = info.participant_id.clone();
        let user_id = info.user_id.clone();
        let mut state = lock(room);
        if state.closed.is_some() {
            return Err(HubError::NotJoinable);
        }
        if state.removed_users.contains(&user_id) {
            return Err(HubError::Removed);
        }
        if state.slots.contains_key(&participant_id) {
            return Err(HubError::ResumeFailed("the participant is already here"));
        }
        state.adopt_settings(meeting);
        let mut info = info;
        info.role = state.settings.role(&user_id) as i32;
        let last = state.last_seq();
        let from = from.min(last);
        let mut missed: Vec<Arc<pb::ServerEvent>> = Vec::new();
        let mut replayed_to = from;
        // A record appended twice (a retried pipeline) is replayed once.
        let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for (seq, bytes) in replay {
            if seq > last {
                break;
            }
            replayed_to = seq;
            let Ok(record) = Record::decode(bytes.as_slice()) else {
                continue;
            };
            if record.rid != 0 {
                let last_rid = seen.entry(record.origin.clone()).or_default();
                if record.rid <= *last_rid {
                    continue;
                }
                *last_rid = record.rid;
            }
            if !record.audience().includes(&participant_id) {
                continue;
            }
            if let Some(event) = record.event.and_then(|e| e.event) {
                missed.push(Arc::new(pb::ServerEvent {
                    sequence: seq,
                    event: Some(event),
                }));
            }
        }
        if replayed_to < last {
            let Some(rest) = state.replay_since(&participant_id, replayed_to) else {
                return Err(HubError::ResumeFailed(
                    "the events missed are no longer buffered",
                ));
            };
            missed.extend(rest);
        }
        let session_id = crate::domain::new_id();
        let (tx, rx) = super::queue::channel(self.config.queue_capacity + missed.len() + 1);
        let control = Arc::new(super::SessionControl::new(
            session_id.clone(),
            meeting.id.clone(),
            participant_id.clone(),
            user_id.clone(),
            0,
            self.now_ms(),
        ));
        let outbox = super::Outbox {
            tx: tx.clone(),
            control: control.clone(),
        };
        let mut slot = super::Slot::new(info, resume_token.to_owned(), outbox, last, self.limits());
        // Where it resumed from, at or after its join (see
        // `claim_and_attach`), not where this node picked it up: a later
        // resume here replays nothing older.
        slot.joined_seq = from;
        state.slots.insert(participant_id.clone(), Box::new(slot));
        let slot = &state.slots[&participant_id];
        let joined = self.joined(&state, meeting, slot, &session_id, true, from);
        control.mark_sent(from);
        let _ = tx.try_send(Arc::new(joined));
        for event in missed {
            let _ = tx.try_send(event);
        }
        self.send_lobby_to(&state, &participant_id);
        self.attendance.reopen(&participant_id);
        drop(state);
        self.register_session(&meeting.id, &session_id, &participant_id, &user_id);
        lock(&self.sessions).insert(
            session_id,
            super::SessionRef {
                meeting_id: meeting.id.clone(),
                participant_id,
                user_id,
            },
        );
        self.metrics.room_resumed();
        Ok(self.stream(rx, control))
    }

    /// In a cluster: says where session `session_id` lives, so that a
    /// Publish reaching another node finds it.
    pub(super) fn register_session(
        &self,
        meeting_id: &str,
        session_id: &str,
        participant_id: &str,
        user_id: &str,
    ) {
        if let Some(link) = &self.link {
            let op = RosterOp::Session {
                session_id: session_id.to_owned(),
                node: link.node().to_owned(),
                participant_and_user: format!("{participant_id} {user_id}").into_bytes(),
            };
            link.append(meeting_id, Record::default(), op);
        }
    }

    /// Sessions that ended here: out of the map, and (in a cluster) their
    /// registrations out of Redis, so that a Publish elsewhere finds them
    /// gone.
    pub(super) fn forget_sessions(&self, meeting_id: &str, sessions: &[String]) {
        {
            let mut map = lock(&self.sessions);
            for session in sessions {
                map.remove(session);
            }
        }
        if let Some(link) = &self.link {
            for session in sessions {
                let op = RosterOp::Unsession {
                    session_id: session.clone(),
                    node: link.node().to_owned(),
                };
                link.append(meeting_id, Record::default(), op);
            }
        }
    }

    /// In a cluster: where a session this node does not serve lives;
    /// `Err` when Redis cannot say now.
    pub async fn session_home(
        &self,
        session_id: &str,
    ) -> Result<Option<room_log::SessionHome>, ()> {
        let Some(link) = &self.link else {
            return Ok(None);
        };
        link.session_home(session_id).await.map_err(|_| ())
    }

    /// Whether `home` names this node.
    pub fn is_home(&self, home: &room_log::SessionHome) -> bool {
        self.link.as_ref().is_some_and(|l| l.node() == home.node)
    }

    /// In a cluster: hands `event`, Published here for a session `home`
    /// serves, to that node through the room's log; false when this
    /// node's queue is full.
    pub fn forward(
        &self,
        home: &room_log::SessionHome,
        session_id: &str,
        event: &pb::ClientEvent,
    ) -> Result<(), super::EventError> {
        let Some(link) = &self.link else {
            return Err(super::EventError::session_closed());
        };
        // Checked here as well as on the session's node: what is refused
        // must not take room in the log.
        let event = super::inbound::forwardable(event, self.config.max_sdp_bytes)?;
        if !self
            .forward_buckets
            .take(session_id, self.config.signals_per_second)
        {
            return Err(super::EventError::rate_limited("forwarded"));
        }
        let record = Record {
            forward: event.encode_to_vec(),
            forward_session: session_id.to_owned(),
            forward_user: home.user_id.clone(),
            forward_node: home.node.clone(),
            ..Default::default()
        };
        if link.append(&home.meeting_id, record, RosterOp::None) {
            Ok(())
        } else {
            Err(super::EventError::busy())
        }
    }

    /// In a cluster: this node serves nobody in the room any more.
    pub(super) fn untrack(&self, meeting_id: &str) {
        if let Some(link) = &self.link {
            let node = link.node().to_owned();
            link.append(meeting_id, Record::default(), RosterOp::Untrack { node });
        }
    }

    /// A new room of this node (in a cluster, subscribed to its channel
    /// and catching up with its log).
    pub(super) fn new_room(&self, meeting_id: &str) -> Arc<Room> {
        let mut state = RoomState::new(self.config.replay_capacity);
        let Some(link) = &self.link else {
            return Arc::new(std::sync::Mutex::new(state));
        };
        let mut shared = link.room(meeting_id);
        shared.syncing = true;
        state.link = Some(shared);
        let room = Arc::new(std::sync::Mutex::new(state));
        self.spawn_sync(meeting_id, &room);
        room
    }

    /// Sends `event` to `to`: at once on one node; in a cluster into the
    /// room's log (with `op` on its roster), to be delivered when it comes
    /// back. Callers hold the room's lock, so a room's events leave in
    /// the order they happened.
    pub(super) fn emit(
        &self,
        meeting_id: &str,
        state: &mut RoomState,
        to: Audience,
        event: Event,
        op: impl FnOnce() -> RosterOp,
    ) -> Vec<super::Overflowed> {
        // A full queue drops what the server itself emits;
        // what clients send hears "busy" ([`RoomHub::emit_client`]).
        self.emit_client(meeting_id, state, to, event, op)
            .unwrap_or_default()
    }

    /// [`RoomHub::emit`] for what a client sent: refused (to be sent again
    /// later) when this node's queue to the room logs is full.
    pub(super) fn emit_client(
        &self,
        meeting_id: &str,
        state: &mut RoomState,
        to: Audience,
        event: Event,
        op: impl FnOnce() -> RosterOp,
    ) -> Result<Vec<super::Overflowed>, super::EventError> {
        match &self.link {
            None => Ok(state.publish(to, event)),
            Some(link) => {
                if link.append(meeting_id, Record::event(&to, event), op()) {
                    Ok(Vec::new())
                } else {
                    Err(super::EventError::busy())
                }
            }
        }
    }

    fn spawn_sync(&self, meeting_id: &str, room: &Arc<Room>) {
        let (hub, room, meeting_id) = (
            self.this.clone(),
            Arc::downgrade(room),
            meeting_id.to_owned(),
        );
        tokio::spawn(async move { catch_up(hub, room, meeting_id).await });
    }

    /// Holds `room`'s deliveries back and reads what it missed, unless
    /// that is already under way.
    fn resync(&self, meeting_id: &str, room: &Arc<Room>, state: &mut RoomState, repair: bool) {
        let Some(link) = state.link.as_mut() else {
            return;
        };
        link.set_ready(false);
        link.repair |= repair;
        if link.syncing {
            // What the running catch-up read may be older than the miss.
            link.again = true;
        } else {
            link.syncing = true;
            self.spawn_sync(meeting_id, room);
        }
    }

    /// Applies record `seq` (the next one) to the room; returns what must
    /// follow once the lock is released.
    fn apply(
        &self,
        meeting_id: &str,
        state: &mut RoomState,
        seq: u64,
        bytes: bytes::Bytes,
    ) -> Followups {
        let mut followups = Followups::default();
        if bytes.is_empty() {
            // A jump in the log's numbers: Redis lost the room, and with it
            // perhaps events this node never heard. No replay reaches back
            // over it.
            state.forget_until(seq);
            return followups;
        }
        if self.signal(meeting_id, state, seq, &bytes) {
            return followups;
        }
        let Ok(record) = Record::decode(&bytes[..]) else {
            tracing::warn!(meeting_id, seq, "room log: unreadable record skipped");
            state.forget_until(seq);
            return followups;
        };
        let Some(link) = state.link.as_mut() else {
            return followups;
        };
        if !link.first_time(&record.origin, record.rid) {
            state.skip(seq);
            return followups;
        }
        let lobby = self.apply_lobby(state, &record);
        followups.denied.extend(lobby.denied);
        followups.repair |= lobby.repair;
        if !record.removed_user.is_empty() {
            followups.kicks = state
                .slots
                .iter()
                .filter(|(_, slot)| slot.user_id == record.removed_user)
                .map(|(id, _)| id.clone())
                .collect();
            state.removed_users.insert(record.removed_user.clone());
        }
        // A participant resumed on another node: its slot here goes
        // quietly (no one left the room).
        if !record.moved.is_empty()
            && record.origin != link_node(&self.link)
            && let Some(mut slot) = state.slots.remove(&record.moved)
        {
            slot.close(super::CloseReason::Replaced);
            followups.gone_sessions.push(slot.session_id);
        }
        // A Publish another node took for a session of this one.
        if !record.forward_node.is_empty() {
            if record.forward_node == link_node(&self.link) {
                followups.forwarded.push((
                    record.forward_session.clone(),
                    record.forward_user.clone(),
                    record.forward.clone(),
                ));
            }
            state.skip(seq);
            return followups;
        }
        let to = record.audience();
        let Some(event) = record.event.and_then(|e| e.event) else {
            state.skip(seq);
            return followups;
        };
        // Presence said again (a repair after Redis came back) is news
        // only to whom it is news.
        let link = state.link.as_mut().expect("checked above");
        let news = match &event {
            Event::ParticipantJoined(joined) => joined
                .participant
                .as_ref()
                .is_some_and(|p| link.members.get(&p.participant_id) != Some(p)),
            Event::ParticipantLeft(left) => {
                let here = state.slots.contains_key(&left.participant_id);
                let ours = record.origin == link_node(&self.link);
                if here {
                    // Taken out of the roster while still here: reaped by
                    // another node (this one is alive after all), or a
                    // leave of ours queued before this attachment (a claim
                    // Redis did not answer, then a second one that did).
                    followups.repair = true;
                }
                if ours && !here {
                    // This node's leave of one it no longer holds, taken by
                    // the roster only now (one queued after a claim it
                    // could not attach, or a prune): its attendance closes
                    // (again, harmlessly, after an ordinary leave).
                    self.attendance.leave(&left.participant_id, now_micros());
                }
                link.members.contains_key(&left.participant_id)
                    || state.slots.contains_key(&left.participant_id)
            }
            _ => true,
        };
        let link = state.link.as_mut().expect("checked above");
        link.note(&event);
        if news {
            let overflowed = state.deliver(seq, to, event);
            self.handle_overflow(meeting_id, overflowed);
        } else {
            state.skip(seq);
        }
        followups
    }

    /// A record that only carries a signal to one participant, read
    /// without decoding the rest: kept encoded for replay when that
    /// participant is not served here (what most records are to the node
    /// of a signal's sender), delivered when it is. False for any other
    /// record, which [`RoomHub::apply`] decodes whole.
    fn signal(
        &self,
        meeting_id: &str,
        state: &mut RoomState,
        seq: u64,
        bytes: &bytes::Bytes,
    ) -> bool {
        let Ok(head) = RecordHead::decode(bytes.clone()) else {
            return false;
        };
        let (Some((to, encoded)), Some(origin)) = (head.passing(), head.origin()) else {
            return false;
        };
        if state.link.is_none() {
            return false;
        }
        // Decoded only for a participant here.
        let event = if state.slots.contains_key(to) {
            let Some(event) = pb::ServerEvent::decode(encoded).ok().and_then(|e| e.event) else {
                tracing::warn!(meeting_id, seq, "room log: unreadable record skipped");
                state.forget_until(seq);
                return true;
            };
            Some(event)
        } else {
            None
        };
        let link = state.link.as_mut().expect("checked above");
        if !link.first_time(origin, head.rid) {
            state.skip(seq);
            return true;
        }
        let to = Audience::Only(to.to_owned());
        match event {
            None => state.pass(seq, to, encoded),
            Some(event) => {
                let overflowed = state.deliver(seq, to, event);
                self.handle_overflow(meeting_id, overflowed);
            }
        }
        true
    }

    /// Applies an event Published on another node for `session_id`, if it
    /// is still here and `user_id`'s; a refusal is an `error` event on the
    /// session's stream (the Publish already answered).
    fn handle_forwarded(&self, meeting_id: &str, session_id: &str, user_id: &str, bytes: &[u8]) {
        let Some(hub) = self.this.upgrade() else {
            return;
        };
        let Ok(event) = pb::ClientEvent::decode(bytes) else {
            return;
        };
        if self
            .session(session_id)
            .is_none_or(|s| s.user_id != user_id || s.meeting_id != meeting_id)
        {
            return;
        }
        let Some(kind) = event.event else { return };
        if let Err(err) = hub.handle(session_id, kind) {
            self.send_error(session_id, &err, &event.request_id);
        }
    }

    /// Says again who this node serves in the room: whoever the roster
    /// lost (Redis restarted empty, or another node took this one for
    /// dead) is announced again.
    fn repair(&self, meeting_id: &str, state: &RoomState) {
        let Some(link) = &self.link else { return };
        for (participant_id, slot) in &state.slots {
            if slot.waiting.is_some() {
                let record = Record {
                    waiting: Some(slot.info.clone()),
                    ..Default::default()
                };
                let op = RosterOp::Wait {
                    participant_id: participant_id.clone(),
                    participant: slot.info.encode_to_vec(),
                    node: link.node().to_owned(),
                };
                link.append(meeting_id, record, op);
                self.register_session(meeting_id, &slot.session_id, participant_id, &slot.user_id);
                continue;
            }
            let joined = Event::ParticipantJoined(Box::new(pb::ParticipantJoined {
                participant: Some(slot.info.clone()),
            }));
            let op = RosterOp::Rejoin {
                participant_id: participant_id.clone(),
                participant: slot.info.encode_to_vec(),
                node: link.node().to_owned(),
                token: super::cluster::token_hash(&slot.resume_token),
                seen: slot.joined_seq,
            };
            let to = Audience::AllExcept(participant_id.clone());
            link.append(meeting_id, Record::event(&to, joined), op);
            if slot.outbox.is_some() {
                // Redis may have lost the session's registration too.
                self.register_session(meeting_id, &slot.session_id, participant_id, &slot.user_id);
            }
        }
    }

    fn follow_up(&self, meeting_id: &str, followups: Followups) {
        if !followups.gone_sessions.is_empty() {
            self.forget_sessions(meeting_id, &followups.gone_sessions);
            self.drop_if_empty(meeting_id);
        }
        if followups.repair
            && let Some(room) = self.room(meeting_id)
        {
            // Another node took one of ours for gone (this node's
            // heartbeats stalled): say again who is here.
            let state = lock(&room);
            self.repair(meeting_id, &state);
        }
        for participant_id in followups.denied {
            self.leave_lobby(meeting_id, &participant_id, super::CloseReason::Denied);
        }
        // Removals first: what a removed user forwarded is refused.
        for participant_id in followups.kicks {
            self.remove(
                meeting_id,
                &participant_id,
                super::CloseReason::Kicked,
                pb::ParticipantLeftReason::Kicked,
            );
        }
        for (session_id, user_id, bytes) in followups.forwarded {
            self.handle_forwarded(meeting_id, &session_id, &user_id, &bytes);
        }
    }

    /// Applies what catching up read, then what waited meanwhile; true
    /// when the room is caught up (or gone), false when more must be read.
    fn caught_up(&self, meeting_id: &str, room: &Arc<Room>, fetched: Fetched) -> bool {
        let mut followups = Followups::default();
        let done = {
            let mut state = lock(room);
            if state.closed.is_some() || state.link.is_none() {
                return true;
            }
            match fetched {
                Fetched::Snapshot(snapshot) => {
                    let link = state.link.as_mut().expect("checked above");
                    let known = link.known;
                    link.adopt(&snapshot);
                    link.known = true;
                    // Roles follow the room's settings, not what the
                    // roster recorded at each join.
                    state.reassign_roles();
                    if known {
                        // It missed more than the log keeps.
                        tracing::warn!(meeting_id, "room log: fell behind; participants resume");
                        let (detached, away) = state.fell_behind();
                        self.handle_overflow(meeting_id, detached);
                        for gone in away {
                            self.end_grace_of(meeting_id, gone);
                        }
                    }
                    // What came before is known here only from the log.
                    state.forget_until(snapshot.seq);
                }
                // Complete from where the room stands (the log checked it,
                // across the jumps it marked).
                Fetched::Records(records) => {
                    for (seq, bytes) in records {
                        if seq > state.last_seq() {
                            followups.extend(self.apply(meeting_id, &mut state, seq, bytes.into()));
                        }
                    }
                }
            }
            loop {
                let last = state.last_seq();
                let link = state.link.as_mut().expect("checked above");
                let Some((&seq, bytes)) = link.pending.first_key_value() else {
                    break;
                };
                if seq > last + 1 {
                    break;
                }
                // A jump marker heard live: the log decides (read again,
                // once).
                if seq == last + 1 && bytes.is_empty() {
                    if link.marker_checked != seq {
                        link.marker_checked = seq;
                        link.again = true;
                        break;
                    }
                    // The log no longer has it (Redis lost the room again):
                    // dropped, and the next read moves the counter on.
                    link.take_first();
                    continue;
                }
                let (seq, bytes) = link.take_first().expect("peeked");
                if seq == last + 1 {
                    followups.extend(self.apply(meeting_id, &mut state, seq, bytes.into()));
                }
            }
            let link = state.link.as_mut().expect("checked above");
            let done = link.pending.is_empty() && !std::mem::take(&mut link.again);
            if done {
                link.syncing = false;
                link.set_ready(true);
                if std::mem::take(&mut link.repair) {
                    self.repair(meeting_id, &state);
                }
            }
            done
        };
        self.follow_up(meeting_id, followups);
        done
    }
}

/// After Redis is back: in every room this node is tracked in, takes out
/// of the roster whoever it names this node's but this node no longer
/// serves (they left, or could no longer resume, while Redis was away,
/// and their leave never reached it): else every node would list them,
/// and a resume elsewhere could claim them. A room this node no longer
/// has (its last participant went meanwhile) stops being tracked. One
/// room at a time; each read is tried a few times.
async fn prune(hub: std::sync::Weak<RoomHub>, link: Arc<Link>) {
    /// Should a pass panic, pruning is not left switched off for good.
    struct Unwinding<'a>(&'a Link);
    impl Drop for Unwinding<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.abandon_pruning();
            }
        }
    }
    let _unwinding = Unwinding(&link);
    // One task at a time; asked again meanwhile, it makes another pass.
    while link.next_prune() {
        prune_pass(&hub, &link).await;
    }
}

async fn prune_pass(hub: &std::sync::Weak<RoomHub>, link: &Link) {
    let mut rooms = None;
    for attempt in 0..5u32 {
        match link.tracked_rooms().await {
            Ok(found) => {
                rooms = Some(found);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
        }
    }
    let Some(rooms) = rooms else {
        tracing::warn!("room log: cannot read this node's rooms to prune their rosters");
        return;
    };
    for room in rooms {
        for attempt in 0..5u32 {
            match prune_room(hub, link, &room).await {
                Ok(()) => break,
                Err(err) if attempt == 4 => {
                    tracing::warn!(%room, error = %err, "room log: cannot prune the room's roster");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
            }
        }
    }
}

/// [`prune`] of one room. Each leave is taken only while the roster still
/// names this node; whoever is here, or resuming here, stays. An error
/// (Redis, or a full queue) means the room is to be tried again.
async fn prune_room(
    hub: &std::sync::Weak<RoomHub>,
    link: &Link,
    meeting_id: &str,
) -> redis::RedisResult<()> {
    if hub.strong_count() == 0 {
        return Ok(()); // Shutting down.
    }
    let snapshot = link.snapshot(meeting_id).await?;
    let Some(hub) = hub.upgrade() else {
        return Ok(());
    };
    let local = hub.room(meeting_id);
    let mut queued = true;
    {
        let state = local.as_ref().map(|room| lock(room));
        if state.as_ref().is_some_and(|state| state.closed.is_some()) {
            return Ok(());
        }
        for (participant_id, member) in &snapshot.roster {
            let here = state.as_ref().is_some_and(|state| {
                state.slots.contains_key(participant_id)
                    || state.resuming.iter().any(|p| p == participant_id)
            });
            if member.node != link.node() || here {
                continue;
            }
            tracing::info!(%meeting_id, %participant_id, "room log: a participant gone from this node leaves the roster");
            let (left, op) = reap(
                participant_id,
                member,
                link.node(),
                pb::ParticipantLeftReason::Disconnected,
            );
            queued &= link.append(meeting_id, left, op);
        }
    }
    if !queued {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the append queue is full",
        )));
    }
    // A room this node forgot stops being tracked (under the rooms' lock,
    // so that a join making it again queues its own tracking after this;
    // Redis keeps the room tracked while its roster still names this node).
    if local.is_none() {
        let rooms = lock(&hub.rooms);
        if !rooms.contains_key(meeting_id) {
            hub.untrack(meeting_id);
        }
    }
    Ok(())
}

/// Reads what `room` missed until it is caught up, or gone.
async fn catch_up(hub: std::sync::Weak<RoomHub>, room: std::sync::Weak<Room>, meeting_id: String) {
    let mut attempt = 0u32;
    loop {
        let (Some(hub), Some(room)) = (hub.upgrade(), room.upgrade()) else {
            return;
        };
        let Some(link) = hub.link.clone() else { return };
        let (known, last) = {
            let state = lock(&room);
            match (&state.closed, &state.link) {
                (None, Some(shared)) => (shared.known, state.last_seq()),
                _ => return,
            }
        };
        match fetch(&link, &meeting_id, known, last).await {
            Ok(fetched) => {
                attempt = 0;
                if hub.caught_up(&meeting_id, &room, fetched) {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(%meeting_id, error = %err, "room log: cannot catch up yet");
                drop((hub, room));
                let wait = Duration::from_millis(50 << attempt.min(4)).min(Duration::from_secs(1));
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One read of what a room at `last` missed: the records after it, or a
/// snapshot (a room new here, or one that missed more than the log keeps).
async fn fetch(link: &Link, room: &str, known: bool, last: u64) -> redis::RedisResult<Fetched> {
    // Subscribed first: nothing published after the read is missed.
    if !link.bus().room_live(room).await {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the room's channel is not subscribed yet",
        )));
    }
    if known {
        match link.since(room, last).await? {
            Replay::Events(records) if !records.is_empty() => {
                return Ok(Fetched::Records(records));
            }
            Replay::Events(_) => {
                // Nothing after `last`. If the log is behind it, Redis lost
                // the room (restarted empty): numbers go on from here.
                if link.snapshot(room).await?.seq < last {
                    link.advance(room, last).await?;
                }
                return Ok(Fetched::Records(Vec::new()));
            }
            Replay::Gone => {}
        }
    }
    let snapshot = link.snapshot(room).await?;
    Ok(Fetched::Snapshot(snapshot))
}

impl RoomSink for RoomHub {
    fn published(&self, meeting_id: &str, payload: &[u8]) {
        let Some(room) = self.room(meeting_id) else {
            return;
        };
        // One copy, which the records are slices of.
        let payload = bytes::Bytes::copy_from_slice(payload);
        let Some(records) = room_log::parse_published(&payload) else {
            return;
        };
        // A record's follow-ups run before the next record of a run is
        // applied, as they would had each come alone.
        let mut next = 0;
        while next < records.len() {
            let mut followups = Followups::default();
            {
                let mut state = lock(&room);
                let from = next;
                next = records.len();
                for (i, &(seq, bytes)) in records.iter().enumerate().skip(from) {
                    let last = state.last_seq();
                    if state.closed.is_some() {
                        break;
                    }
                    if seq <= last {
                        continue;
                    }
                    let Some(link) = state.link.as_mut() else {
                        break;
                    };
                    // A jump marker (empty) waits for the log's reading,
                    // which knows whether it stands for a missed event.
                    if link.synced && seq == last + 1 && !bytes.is_empty() {
                        followups =
                            self.apply(meeting_id, &mut state, seq, payload.slice_ref(bytes));
                        if !followups.is_empty() {
                            next = i + 1;
                            break;
                        }
                        continue;
                    }
                    // A gap: this and the rest wait, and what is missing is
                    // read from the log.
                    let synced = link.synced;
                    for &(seq, bytes) in &records[i..] {
                        link.hold(seq, bytes);
                    }
                    if synced {
                        self.resync(meeting_id, &room, &mut state, false);
                    }
                    break;
                }
            }
            self.follow_up(meeting_id, followups);
        }
    }

    fn resubscribed(&self) {
        let rooms: Vec<(String, Arc<Room>)> = lock(&self.rooms)
            .iter()
            .map(|(id, room)| (id.clone(), room.clone()))
            .collect();
        for (meeting_id, room) in rooms {
            let mut state = lock(&room);
            if state.closed.is_none() {
                self.resync(&meeting_id, &room, &mut state, true);
            }
        }
        if let Some(link) = self.link.clone()
            && link.start_pruning()
        {
            tokio::spawn(prune(self.this.clone(), link));
        }
    }

    fn unsent(&self, meeting_id: &str, bytes: &[u8]) {
        let Some(room) = self.room(meeting_id) else {
            return;
        };
        let Ok(record) = Record::decode(bytes) else {
            return;
        };
        let mut state = lock(&room);
        if state.closed.is_some() {
            return;
        }
        let Some(link) = state.link.as_mut() else {
            return;
        };
        if !link.first_time(&record.origin, record.rid) {
            return;
        }
        // Out of the room's order (its numbers are Redis's), and not kept
        // for replay; presence and removals wait for the repair.
        let to = record.audience();
        if let Some(event) = record.event.and_then(|e| e.event) {
            // A leave said again (a prune) is news only once.
            if let Event::ParticipantLeft(left) = &event
                && !state
                    .link
                    .as_ref()
                    .is_some_and(|link| link.members.contains_key(&left.participant_id))
                && !state.slots.contains_key(&left.participant_id)
            {
                return;
            }
            let (overflowed, unresumable) = state.deliver_unsequenced(to, event);
            self.handle_overflow(meeting_id, overflowed);
            for gone in unresumable {
                self.end_grace_of(meeting_id, gone);
            }
        }
    }
}
