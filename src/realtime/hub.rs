//! [`RoomHub`]: every live room of this node.
//!
//! Rooms are created on first join and dropped when their last participant
//! is gone. Each operation takes the room's std mutex for a short
//! synchronous section (assign sequence, push to bounded queues) and never
//! awaits under it. The hub routes; the rest lives elsewhere: what a slot
//! is and when its epoch moves ([`RoomState`]), what a client may send
//! ([`super::inbound`]), attendance (queued for [`Attendance`]'s ordered
//! writer: the hub holds no database handle), timers ([`Reaper`]) and
//! detaches (reported by sessions over a channel). Lock order: `rooms`,
//! then one room; `sessions` is only ever taken alone.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message;
use rand::RngCore;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    attendance::Attendance,
    cluster::{self, Link, Record, RecordHead},
    ice::IceConfig,
    inbound::{self, EventCode, EventError},
    queue,
    rate::TokenBucket,
    reaper::{Due, Reaper},
    redis_bus::RoomSink,
    room::{
        Audience, CloseReason, Closed, DetachCause, Outbox, Overflowed, RoomState, SessionControl,
        SessionLimits, Slot,
    },
    room_log::{self, Replay, RosterOp},
    session::{DetachSender, Detached, SessionStream, error_event},
};
use crate::{
    domain::{
        new_id,
        time::{now_micros, to_timestamp},
    },
    metrics::Metrics,
    proto::pb::{self, client_event, server_event::Event},
};

/// Limits and timings of the live rooms. The hub's settings are the room settings of the configuration, used as
/// they are (not copied field by field).
pub use crate::config::RoomSettings as HubConfig;

/// Who is joining.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub user_id: String,
    pub display_name: String,
}

/// Why a join or resume could not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// In a cluster: this node is catching up with the room's log; try
    /// again once this says so.
    Syncing(Ready),
    /// The meeting ended while joining.
    NotJoinable,
    /// The slot is gone (grace passed, kicked) or its events were evicted.
    ResumeFailed(&'static str),
    /// The host removed this user from the room.
    Removed,
    /// The lobby holds as many waiters as it may (in all, or of this
    /// user): the message says which.
    LobbyFull(&'static str),
}

/// Turns true when a room caught up with its log.
#[derive(Debug, Clone)]
pub struct Ready(pub watch::Receiver<bool>);

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for Ready {}

type Room = Mutex<RoomState>;

/// Reactions (and hand changes) a session may send per second.
const REACTIONS_PER_SECOND: u32 = 5;

/// A joiner's new session, made under its room's lock.
struct Arrival {
    session_id: String,
    tx: queue::Sender,
    rx: queue::Receiver,
    control: Arc<SessionControl>,
    info: pb::Participant,
}

/// Where a session lives, for Publish.
#[derive(Debug, Clone)]
pub struct SessionRef {
    pub meeting_id: String,
    pub participant_id: String,
    pub user_id: String,
}

pub struct RoomHub {
    /// Attendance changes, applied in order by one writer.
    attendance: Attendance,
    config: HubConfig,
    ice: IceConfig,
    /// Queue drops and resumes are counted here.
    metrics: Arc<Metrics>,
    /// By meeting id. A std Mutex: held only to find or insert a room.
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    /// By session id, so Publish finds its room without scanning.
    sessions: Mutex<HashMap<String, SessionRef>>,
    /// The zero of `SessionControl::last_seen_ms`.
    started: Instant,
    /// Sessions report here when they lose their client or go silent.
    detaches: DetachSender,
    /// Grace periods and closed-room placeholders.
    reaper: Reaper,
    /// In a cluster: the rooms' logs in Redis, which order every event.
    link: Option<Arc<Link>>,
    /// The rate of what this node forwards to other nodes' sessions.
    forward_buckets: super::rate::KeyedBuckets,
    this: std::sync::Weak<Self>,
}

#[path = "hub_shared.rs"]
mod shared;

#[path = "hub_lobby.rs"]
mod lobby;
pub use lobby::{LobbyError, Waiter};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `participant_left` for `participant_id`, for `reason`.
fn left(participant_id: &str, reason: pb::ParticipantLeftReason) -> Event {
    Event::ParticipantLeft(pb::ParticipantLeft {
        participant_id: participant_id.to_owned(),
        reason: reason as i32,
    })
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl RoomHub {
    pub fn new(
        config: HubConfig,
        ice: IceConfig,
        attendance: Attendance,
        metrics: Arc<Metrics>,
        link: Option<Arc<Link>>,
    ) -> Arc<Self> {
        let (detaches, mut reports) = mpsc::unbounded_channel::<Detached>();
        let hub = Arc::new_cyclic(|weak: &std::sync::Weak<Self>| {
            let this = weak.clone();
            let weak = weak.clone();
            let reaper = Reaper::start(move |due| {
                if let Some(hub) = weak.upgrade() {
                    hub.fire(due);
                }
            });
            Self {
                attendance,
                config,
                ice,
                metrics,
                rooms: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                started: Instant::now(),
                detaches,
                reaper,
                link,
                forward_buckets: Default::default(),
                this,
            }
        });
        if let Some(link) = &hub.link {
            let sink: std::sync::Weak<dyn RoomSink> = Arc::downgrade(&hub) as _;
            link.bus().deliver_rooms_to(sink);
            shared::start_liveness(&hub);
        }
        // Holds the hub weakly: the task ends with it.
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Some(report) = reports.recv().await {
                let Some(hub) = weak.upgrade() else { break };
                hub.detach(&report.control, report.cause);
            }
        });
        hub
    }

    /// Whether rooms are shared with other nodes.
    pub fn is_clustered(&self) -> bool {
        self.link.is_some()
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn room(&self, meeting_id: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(meeting_id).cloned()
    }

    fn limits(&self) -> SessionLimits {
        SessionLimits {
            chats: TokenBucket::new(self.config.chats_per_second),
            signals: TokenBucket::new(self.config.signals_per_second),
            typing: TokenBucket::new(self.config.typing_per_second),
            media: TokenBucket::new(self.config.media_per_second),
            reactions: TokenBucket::new(REACTIONS_PER_SECOND),
        }
    }

    fn stream(
        self: &Arc<Self>,
        rx: queue::Receiver,
        control: Arc<SessionControl>,
    ) -> SessionStream {
        SessionStream::new(
            rx,
            control,
            (self.detaches.clone(), self.started),
            self.config.ping_interval,
            self.config.ping_timeout,
        )
    }

    fn joined(
        &self,
        state: &RoomState,
        meeting: &pb::Meeting,
        slot: &Slot,
        session_id: &str,
        resumed: bool,
        sequence: u64,
    ) -> pb::ServerEvent {
        pb::ServerEvent {
            // Where the client stands: events after it follow (on a resume,
            // the replay).
            sequence,
            event: Some(Event::Joined(Box::new(pb::Joined {
                session_id: session_id.to_owned(),
                participant_id: slot.info.participant_id.clone(),
                resume_token: slot.resume_token.clone(),
                participants: {
                    let mut all = state.participants();
                    // In a cluster, a joiner is in the roster once its own
                    // join comes back from the log.
                    if !all
                        .iter()
                        .any(|p| p.participant_id == slot.info.participant_id)
                    {
                        all.push(slot.info.clone());
                    }
                    all
                },
                ice_servers: self.ice.servers(&slot.user_id, now_micros() / 1_000_000),
                ping_interval: Some(duration(self.config.ping_interval)),
                ping_timeout: Some(duration(self.config.ping_timeout)),
                meeting: Some(meeting.clone()),
                resumed,
            }))),
        }
    }

    /// Finds (or makes) `meeting`'s room and runs `f` under its lock once
    /// it takes `user_id`: not when the meeting is over, while this node
    /// catches up with the room (in a cluster), or when the host removed
    /// the user. The room takes the meeting's settings first.
    fn enter_room<T>(
        self: &Arc<Self>,
        meeting: &pb::Meeting,
        user_id: &str,
        f: impl FnOnce(&mut RoomState) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        loop {
            let room = lock(&self.rooms)
                .entry(meeting.id.clone())
                .or_insert_with(|| self.new_room(&meeting.id))
                .clone();
            let mut state = lock(&room);
            match state.closed {
                Some(Closed::Emptied) => continue,
                Some(Closed::MeetingOver) => return Err(HubError::NotJoinable),
                None => {}
            }
            if let Some(link) = &state.link
                && !link.synced
            {
                return Err(HubError::Syncing(Ready(link.ready.subscribe())));
            }
            if state.removed_users.contains(user_id) {
                return Err(HubError::Removed);
            }
            state.adopt_settings(meeting);
            return f(&mut state);
        }
    }

    /// A joiner's new session (queue and control) and the participant as
    /// the room will list it.
    fn arrival(
        &self,
        state: &RoomState,
        meeting: &pb::Meeting,
        joiner: &Joiner,
        participant_id: &str,
    ) -> Arrival {
        let session_id = new_id();
        let (tx, rx) = queue::channel(self.config.queue_capacity);
        let control = Arc::new(SessionControl::new(
            session_id.clone(),
            meeting.id.clone(),
            participant_id.to_owned(),
            joiner.user_id.clone(),
            0,
            self.now_ms(),
        ));
        let info = pb::Participant {
            participant_id: participant_id.to_owned(),
            user_id: joiner.user_id.clone(),
            display_name: joiner.display_name.clone(),
            join_time: Some(to_timestamp(now_micros())),
            media_state: Some(pb::MediaState::default()),
            role: state.settings.role(&joiner.user_id) as i32,
            hand_raise_time: None,
        };
        Arrival {
            session_id,
            tx,
            rx,
            control,
            info,
        }
    }

    /// Registers a session that just entered a room, here (Publish finds
    /// it) and in a cluster, and hands out its stream.
    fn opened(
        self: &Arc<Self>,
        meeting_id: &str,
        session_id: String,
        participant_id: String,
        user_id: String,
        rx: queue::Receiver,
        control: Arc<SessionControl>,
    ) -> SessionStream {
        self.register_session(meeting_id, &session_id, &participant_id, &user_id);
        lock(&self.sessions).insert(
            session_id,
            SessionRef {
                meeting_id: meeting_id.to_owned(),
                participant_id,
                user_id,
            },
        );
        self.stream(rx, control)
    }

    /// Adds a participant (whose attendance row `participant_id` names) and
    /// returns its stream, which starts with `joined`.
    pub fn join(
        self: &Arc<Self>,
        meeting: &pb::Meeting,
        joiner: Joiner,
        participant_id: String,
    ) -> Result<SessionStream, HubError> {
        let (session_id, rx, control) = self.enter_room(meeting, &joiner.user_id, |state| {
            let Arrival {
                session_id,
                tx,
                rx,
                control,
                info,
            } = self.arrival(state, meeting, &joiner, &participant_id);
            let resume_token = random_token();
            let seen = state.last_seq();
            let overflowed = self.emit(
                &meeting.id,
                state,
                Audience::AllExcept(participant_id.clone()),
                Event::ParticipantJoined(Box::new(pb::ParticipantJoined {
                    participant: Some(info.clone()),
                })),
                || RosterOp::Join {
                    participant_id: participant_id.clone(),
                    participant: info.encode_to_vec(),
                    node: self
                        .link
                        .as_ref()
                        .map(|l| l.node().to_owned())
                        .unwrap_or_default(),
                    token: cluster::token_hash(&resume_token),
                    seen,
                },
            );
            let outbox = Outbox {
                tx,
                control: control.clone(),
            };
            let slot = Slot::new(info, resume_token, outbox, state.last_seq(), self.limits());
            state.slots.insert(participant_id.clone(), Box::new(slot));
            let slot = &state.slots[&participant_id];
            let joined = self.joined(state, meeting, slot, &session_id, false, state.last_seq());
            control.mark_sent(state.last_seq());
            if let Some(outbox) = &slot.outbox {
                let _ = outbox.tx.try_send(Arc::new(joined));
            }
            self.send_lobby_to(state, &participant_id);
            state.tell_waiters();
            self.handle_overflow(&meeting.id, overflowed);
            Ok((session_id, rx, control))
        })?;
        Ok(self.opened(
            &meeting.id,
            session_id,
            participant_id,
            joiner.user_id,
            rx,
            control,
        ))
    }

    /// Re-attaches the participant `resume_token` names, replaying what it
    /// missed after `last_sequence` (0: after what was last queued for it).
    pub fn resume(
        self: &Arc<Self>,
        meeting: &pb::Meeting,
        user_id: &str,
        resume_token: &str,
        last_sequence: u64,
    ) -> Result<SessionStream, HubError> {
        let room = self.room(&meeting.id).ok_or(HubError::ResumeFailed(
            "the participant's grace period is over",
        ))?;
        let mut state = lock(&room);
        let participant_id = state
            .slots
            .iter()
            .find(|(_, slot)| {
                slot.waiting.is_none()
                    && slot.resume_token == resume_token
                    && slot.user_id == user_id
            })
            .map(|(id, _)| id.clone())
            .ok_or(HubError::ResumeFailed(
                "the participant's grace period is over",
            ))?;
        // A stream still attached loses what it has queued.
        if state.slots[&participant_id]
            .outbox
            .as_ref()
            .is_some_and(|outbox| outbox.tx.holds(super::room::unsequenced_replayable))
        {
            state.make_unresumable(&participant_id);
        }
        let from = state
            .resume_from(&participant_id, last_sequence)
            .expect("found above");
        let missed = state
            .replay_since(&participant_id, from)
            .ok_or(HubError::ResumeFailed(
                "the events missed are no longer buffered",
            ))?;

        let session_id = new_id();
        let (tx, rx) = queue::channel(self.config.queue_capacity + missed.len() + 1);
        let now_ms = self.now_ms();
        let (old_session, control) = state
            .reattach(&participant_id, session_id.clone(), tx.clone(), |epoch| {
                Arc::new(SessionControl::new(
                    session_id.clone(),
                    meeting.id.clone(),
                    participant_id.clone(),
                    user_id.to_owned(),
                    epoch,
                    now_ms,
                ))
            })
            .expect("found above");
        let slot = &state.slots[&participant_id];
        let joined = self.joined(&state, meeting, slot, &session_id, true, from);
        control.mark_sent(from);
        let _ = tx.try_send(Arc::new(joined));
        for event in missed {
            let _ = tx.try_send(event);
        }
        self.send_lobby_to(&state, &participant_id);
        // Queued under the room's lock, like the leave of a detach: the
        // two reach the writer in the order they happened.
        self.attendance.reopen(&participant_id);
        drop(state);
        self.register_session(&meeting.id, &session_id, &participant_id, user_id);
        self.forget_sessions(&meeting.id, std::slice::from_ref(&old_session));
        {
            let mut sessions = lock(&self.sessions);
            sessions.insert(
                session_id,
                SessionRef {
                    meeting_id: meeting.id.clone(),
                    participant_id: participant_id.clone(),
                    user_id: user_id.to_owned(),
                },
            );
        }
        self.metrics.room_resumed();
        Ok(self.stream(rx, control))
    }

    pub fn session(&self, session_id: &str) -> Option<SessionRef> {
        lock(&self.sessions).get(session_id).cloned()
    }

    /// Applies one client event from `session_id`'s participant.
    pub fn handle(
        self: &Arc<Self>,
        session_id: &str,
        event: client_event::Event,
    ) -> Result<(), EventError> {
        let closed = EventError::session_closed;
        let session = self.session(session_id).ok_or_else(closed)?;
        let room = self.room(&session.meeting_id).ok_or_else(closed)?;
        let mut state = lock(&room);
        let now = std::time::Instant::now();
        let now_ms = self.now_ms();
        let me = session.participant_id.clone();
        if state.removed_users.contains(&session.user_id) {
            return Err(closed());
        }
        let slot = state
            .slots
            .get_mut(&me)
            .filter(|s| s.session_id == session_id)
            .ok_or_else(closed)?;
        if let Some(outbox) = &slot.outbox {
            outbox.control.touch(now_ms);
        }
        if slot.waiting.is_some()
            && !matches!(
                event,
                client_event::Event::Ping(_) | client_event::Event::Leave(_)
            )
        {
            return Err(EventError::new(
                EventCode::InLobby,
                "you are in the waiting room: wait for a host to let you in",
            ));
        }
        let overflowed = match event {
            // Chat is stored before it is delivered: it goes through the
            // chat log (see `chat_sender`), never straight into the room.
            client_event::Event::Chat(_) => {
                return Err(EventError::new(
                    EventCode::InvalidEvent,
                    "chat goes through the chat log",
                ));
            }
            client_event::Event::Join(_) => {
                return Err(EventError::new(
                    EventCode::AlreadyJoined,
                    "this session has already joined",
                ));
            }
            client_event::Event::Ping(_) => {
                if let Some(outbox) = &slot.outbox {
                    let pong = pb::ServerEvent {
                        sequence: 0,
                        event: Some(Event::Pong(pb::Pong {})),
                    };
                    let _ = outbox.tx.try_send(Arc::new(pong));
                }
                Vec::new()
            }
            client_event::Event::Typing(typing) => {
                if !slot.limits.typing.try_take(now) {
                    return Err(EventError::rate_limited("typing"));
                }
                self.emit_client(
                    &session.meeting_id,
                    &mut state,
                    Audience::AllExcept(me.clone()),
                    Event::Typing(pb::TypingChanged {
                        participant_id: me,
                        is_typing: typing.is_typing,
                    }),
                    RosterOp::default,
                )?
            }
            client_event::Event::MediaState(media) => {
                if !slot.limits.media.try_take(now) {
                    return Err(EventError::rate_limited("media_state"));
                }
                slot.info.media_state = Some(media);
                let info = self.link.is_some().then(|| slot.info.encode_to_vec());
                self.emit_client(
                    &session.meeting_id,
                    &mut state,
                    Audience::AllExcept(me.clone()),
                    Event::MediaState(pb::MediaStateChanged {
                        participant_id: me.clone(),
                        media_state: Some(media),
                    }),
                    || RosterOp::Set {
                        participant_id: me,
                        participant: info.unwrap_or_default(),
                    },
                )?
            }
            client_event::Event::Signal(signal) => {
                if !slot.limits.signals.try_take(now) {
                    return Err(EventError::rate_limited("signal"));
                }
                let payload = inbound::signal_payload(&signal, self.config.max_sdp_bytes)?;
                let target = signal.to_participant_id;
                if target == me {
                    return Err(EventError::new(
                        EventCode::InvalidSignal,
                        "to_participant_id is yourself",
                    ));
                }
                if !state.has(&target) {
                    return Err(EventError::new(
                        EventCode::UnknownParticipant,
                        format!("no participant {target:?} in this room"),
                    ));
                }
                self.emit_client(
                    &session.meeting_id,
                    &mut state,
                    Audience::Only(target),
                    Event::Signal(pb::IncomingSignal {
                        from_participant_id: me,
                        payload: Some(payload),
                    }),
                    RosterOp::default,
                )?
            }
            client_event::Event::RaiseHand(raise) => {
                if !slot.limits.reactions.try_take(now) {
                    return Err(EventError::rate_limited("hand"));
                }
                if raise.raised == slot.info.hand_raise_time.is_some() {
                    // Already so: a raised hand keeps its place in line.
                    return Ok(());
                }
                let time = raise.raised.then(|| to_timestamp(now_micros()));
                slot.info.hand_raise_time = time;
                let info = self.link.is_some().then(|| slot.info.encode_to_vec());
                self.emit_client(
                    &session.meeting_id,
                    &mut state,
                    Audience::All,
                    Event::Hand(pb::HandChanged {
                        participant_id: me.clone(),
                        raised: raise.raised,
                        raise_time: time,
                    }),
                    || RosterOp::Set {
                        participant_id: me,
                        participant: info.unwrap_or_default(),
                    },
                )?
            }
            client_event::Event::LowerHand(lower) => {
                if !super::settings::runs(&slot.info) {
                    return Err(EventError::new(
                        EventCode::NotAllowed,
                        "only the host or a co-host lowers someone else's hand",
                    ));
                }
                if !slot.limits.reactions.try_take(now) {
                    return Err(EventError::rate_limited("hand"));
                }
                let target = lower.participant_id;
                let Some(mut info) = state.participant(&target) else {
                    return Err(EventError::new(
                        EventCode::UnknownParticipant,
                        format!("no participant {target:?} in this room"),
                    ));
                };
                if info.hand_raise_time.is_none() {
                    return Ok(());
                }
                info.hand_raise_time = None;
                if let Some(slot) = state.slots.get_mut(&target) {
                    slot.info.hand_raise_time = None;
                }
                self.emit_client(
                    &session.meeting_id,
                    &mut state,
                    Audience::All,
                    Event::Hand(pb::HandChanged {
                        participant_id: target.clone(),
                        raised: false,
                        raise_time: None,
                    }),
                    || RosterOp::Set {
                        participant_id: target,
                        participant: info.encode_to_vec(),
                    },
                )?
            }
            client_event::Event::Reaction(reaction) => {
                let emoji = inbound::reaction(&reaction.emoji)?.to_owned();
                if !slot.limits.reactions.try_take(now) {
                    return Err(EventError::rate_limited("reaction"));
                }
                self.emit_client(
                    &session.meeting_id,
                    &mut state,
                    Audience::All,
                    Event::Reaction(pb::Reaction {
                        participant_id: me,
                        emoji,
                    }),
                    RosterOp::default,
                )?
            }
            client_event::Event::Leave(_) => {
                drop(state);
                self.remove(
                    &session.meeting_id,
                    &me,
                    CloseReason::Left,
                    pb::ParticipantLeftReason::Left,
                );
                return Ok(());
            }
        };
        self.handle_overflow(&session.meeting_id, overflowed);
        Ok(())
    }

    /// Who is chatting from `session_id`, if its chat rate allows it now.
    pub fn chat_sender(&self, session_id: &str) -> Result<(SessionRef, String), EventError> {
        let closed = EventError::session_closed;
        let session = self.session(session_id).ok_or_else(closed)?;
        let room = self.room(&session.meeting_id).ok_or_else(closed)?;
        let mut state = lock(&room);
        let slot = state
            .slots
            .get_mut(&session.participant_id)
            .filter(|s| s.session_id == session_id)
            .ok_or_else(closed)?;
        if let Some(outbox) = &slot.outbox {
            outbox.control.touch(self.now_ms());
        }
        if slot.waiting.is_some() {
            return Err(EventError::new(
                EventCode::InLobby,
                "you are in the waiting room: wait for a host to let you in",
            ));
        }
        if !slot.limits.chats.try_take(std::time::Instant::now()) {
            return Err(EventError::rate_limited("chat"));
        }
        let name = slot.info.display_name.clone();
        Ok((session, name))
    }

    /// Sends an event to one session only, outside the room's order (errors).
    pub fn send_to_session(&self, session_id: &str, event: pb::ServerEvent) {
        let Some(session) = self.session(session_id) else {
            return;
        };
        let Some(room) = self.room(&session.meeting_id) else {
            return;
        };
        let state = lock(&room);
        if let Some(outbox) = state
            .slots
            .get(&session.participant_id)
            .filter(|s| s.session_id == session_id)
            .and_then(|s| s.outbox.as_ref())
        {
            let _ = outbox.tx.try_send(Arc::new(event));
        }
    }

    /// An `error` event for `session_id`, echoing `request_id`.
    pub fn send_error(&self, session_id: &str, err: &EventError, request_id: &str) {
        let request_id = inbound::echoed_request_id(request_id);
        self.send_to_session(
            session_id,
            error_event(err.code.as_str(), &err.message, request_id),
        );
    }

    /// The stream of `control` lost its client (or went silent): keep the
    /// slot for the grace period, then drop it unless it resumed.
    pub fn detach(self: &Arc<Self>, control: &SessionControl, cause: DetachCause) {
        let Some(room) = self.room(&control.meeting_id) else {
            return;
        };
        let mut state = lock(&room);
        if state
            .slots
            .get(&control.participant_id)
            .is_some_and(|slot| slot.waiting.is_some() && slot.epoch() == control.epoch)
        {
            // A waiter cannot resume: it leaves the lobby at once.
            drop(state);
            self.leave_lobby(
                &control.meeting_id,
                &control.participant_id,
                CloseReason::Left,
            );
            return;
        }
        // Resume from what reached the transport, not what was queued.
        let detached = state.detach(
            &control.participant_id,
            control.epoch,
            cause,
            control.sent_seq(),
        );
        let Some(epoch) = detached else {
            return; // Already resumed, replaced or detached.
        };
        if control.lost_unsequenced() {
            state.make_unresumable(&control.participant_id);
        }
        // One that cannot resume leaves at once.
        let grace = if state.unresumable(&control.participant_id) {
            Duration::ZERO
        } else {
            self.config.resume_grace
        };
        self.start_grace(
            control.meeting_id.clone(),
            control.participant_id.clone(),
            epoch,
            grace,
        );
    }

    /// Starts the grace of participants a publish detached. Called under
    /// the room's lock (it only queues), so that their leaves reach the
    /// attendance writer before any resume's reopen.
    fn handle_overflow(&self, meeting_id: &str, overflowed: Vec<Overflowed>) {
        for slow in overflowed {
            self.metrics.room_queue_dropped();
            tracing::info!(meeting_id, participant_id = %slow.participant_id, "participant fell behind; detached");
            self.end_grace_of(meeting_id, slow);
        }
    }

    /// Starts the grace of a detached participant: none for one that can
    /// no longer resume. Called under the room's lock.
    pub(super) fn end_grace_of(&self, meeting_id: &str, detached: Overflowed) {
        let grace = if detached.resumable {
            self.config.resume_grace
        } else {
            Duration::ZERO
        };
        self.start_grace(
            meeting_id.to_owned(),
            detached.participant_id,
            detached.epoch,
            grace,
        );
    }

    /// Marks the attendance offline now, and removes the participant after
    /// `grace` unless it resumed (which changes the epoch). Only queues;
    /// callers hold the room's lock.
    fn start_grace(&self, meeting_id: String, participant_id: String, epoch: u64, grace: Duration) {
        self.attendance.leave(&participant_id, now_micros());
        self.reaper.at(
            Instant::now() + grace,
            Due::Grace {
                meeting_id,
                participant_id,
                epoch,
            },
        );
    }

    /// A timer of the reaper came due.
    fn fire(self: &Arc<Self>, due: Due) {
        match due {
            Due::Grace {
                meeting_id,
                participant_id,
                epoch,
            } => self.expire(&meeting_id, &participant_id, epoch),
            Due::ClosedRoom { meeting_id } => {
                let mut rooms = lock(&self.rooms);
                if rooms
                    .get(&meeting_id)
                    .is_some_and(|room| lock(room).closed == Some(Closed::MeetingOver))
                {
                    rooms.remove(&meeting_id);
                    self.untrack(&meeting_id);
                }
            }
        }
    }

    fn expire(self: &Arc<Self>, meeting_id: &str, participant_id: &str, epoch: u64) {
        let Some(room) = self.room(meeting_id) else {
            return;
        };
        let Some(cause) = lock(&room).expired(participant_id, epoch) else {
            return;
        };
        let reason = match cause {
            DetachCause::TimedOut => pb::ParticipantLeftReason::TimedOut,
            DetachCause::Disconnected | DetachCause::SlowConsumer => {
                pb::ParticipantLeftReason::Disconnected
            }
        };
        self.remove(meeting_id, participant_id, CloseReason::Left, reason);
    }

    /// Removes a participant for good and tells the room why.
    fn remove(
        &self,
        meeting_id: &str,
        participant_id: &str,
        close: CloseReason,
        reason: pb::ParticipantLeftReason,
    ) -> bool {
        let Some(room) = self.room(meeting_id) else {
            return false;
        };
        let waiting = lock(&room)
            .slots
            .get(participant_id)
            .is_some_and(|slot| slot.waiting.is_some());
        if waiting {
            self.leave_lobby(meeting_id, participant_id, close);
            return true;
        }
        let (session_id, empty) = {
            let mut state = lock(&room);
            let Some(mut slot) = state.slots.remove(participant_id) else {
                return false;
            };
            slot.close(close);
            let overflowed = self.emit(
                meeting_id,
                &mut state,
                Audience::All,
                left(participant_id, reason),
                || RosterOp::Leave {
                    participant_id: participant_id.to_owned(),
                    node: self
                        .link
                        .as_ref()
                        .map(|l| l.node().to_owned())
                        .unwrap_or_default(),
                },
            );
            self.handle_overflow(meeting_id, overflowed);
            (slot.session_id, state.slots.is_empty())
        };
        self.forget_sessions(meeting_id, std::slice::from_ref(&session_id));
        if empty {
            self.drop_if_empty(meeting_id);
        }
        self.attendance.leave(participant_id, now_micros());
        true
    }

    /// Drops the room if nobody is in it here (also after a join that
    /// made the room, then failed).
    pub fn drop_if_empty(&self, meeting_id: &str) {
        let room = lock(&self.rooms).get(meeting_id).cloned();
        if let Some(room) = room {
            self.drop_room_if_empty(meeting_id, &room);
        }
    }

    /// [`RoomHub::drop_if_empty`] of `room` only, not of a room made for
    /// the meeting since.
    pub(super) fn drop_room_if_empty(&self, meeting_id: &str, room: &Arc<Room>) {
        let mut rooms = lock(&self.rooms);
        let Some(room) = rooms
            .get(meeting_id)
            .filter(|current| Arc::ptr_eq(current, room))
            .cloned()
        else {
            return;
        };
        let mut state = lock(&room);
        if state.slots.is_empty() && state.resuming.is_empty() && state.closed.is_none() {
            state.closed = Some(Closed::Emptied);
            rooms.remove(meeting_id);
            self.untrack(meeting_id);
        }
    }

    /// Live rooms and the sessions in them (for the metrics).
    pub fn counts(&self) -> (usize, usize) {
        let rooms = lock(&self.rooms).len();
        let sessions = lock(&self.sessions).len();
        (rooms, sessions)
    }

    /// The user behind a participant of a live room.
    pub fn user_of(&self, meeting_id: &str, participant_id: &str) -> Option<String> {
        let room = self.room(meeting_id)?;
        let state = lock(&room);
        state.slots.get(participant_id).map(|s| s.user_id.clone())
    }

    /// Ends a session whose access is gone (DESIGN §8): its participant
    /// leaves at once, without a grace period to resume in.
    pub fn end_session(self: &Arc<Self>, session_id: &str) {
        if let Some(session) = self.session(session_id) {
            self.remove(
                &session.meeting_id,
                &session.participant_id,
                CloseReason::Left,
                pb::ParticipantLeftReason::Disconnected,
            );
        }
    }

    /// Host control: removes every participant of `user_id` (all their
    /// devices); their streams end with PERMISSION_DENIED and their resume
    /// tokens stop working. Returns how many were removed.
    pub fn kick_user(self: &Arc<Self>, meeting_id: &str, user_id: &str) -> usize {
        if let Some(link) = &self.link {
            // Every node takes the user's participants out, and keeps them
            // out, when this comes back from the log.
            let record = Record {
                removed_user: user_id.to_owned(),
                ..Default::default()
            };
            link.append(meeting_id, record, RosterOp::None);
        }
        let Some(room) = self.room(meeting_id) else {
            return 0;
        };
        let participants: Vec<String> = {
            let mut state = lock(&room);
            state.removed_users.insert(user_id.to_owned());
            state
                .slots
                .iter()
                .filter(|(_, slot)| slot.user_id == user_id)
                .map(|(id, _)| id.clone())
                .collect()
        };
        participants
            .iter()
            .filter(|participant_id| {
                self.remove(
                    meeting_id,
                    participant_id,
                    CloseReason::Kicked,
                    pb::ParticipantLeftReason::Kicked,
                )
            })
            .count()
    }

    /// UpdateMeeting changed the room's settings: every participant hears
    /// `meeting_updated`, and roles follow the co-hosts.
    pub fn settings_changed(self: &Arc<Self>, meeting: &pb::Meeting) {
        if let Some(room) = self.room(&meeting.id) {
            // This node's participants get their roles before the event
            // comes back (in a cluster), so a new co-host acts at once.
            let mut state = lock(&room);
            if state.adopt_settings(meeting) && !state.lobby().is_empty() {
                state.tell_runners();
            }
        }
        self.broadcast(
            &meeting.id,
            Event::MeetingUpdated(Box::new(meeting.clone())),
        );
    }

    /// Pushes a room-wide event (meeting status, calls) if the room is live.
    pub fn broadcast(self: &Arc<Self>, meeting_id: &str, event: Event) {
        if let Some(link) = &self.link {
            // Participants may be on any node, this one or not.
            link.append(
                meeting_id,
                Record::event(&Audience::All, event),
                RosterOp::None,
            );
            return;
        }
        let Some(room) = self.room(meeting_id) else {
            return;
        };
        let mut state = lock(&room);
        let overflowed = state.publish(Audience::All, event);
        self.handle_overflow(meeting_id, overflowed);
    }

    /// The meeting is over: every stream gets a final `meeting_status` and
    /// ends; the room is gone.
    pub fn close_room(self: &Arc<Self>, meeting_id: &str, status: pb::MeetingStatus) {
        // The closed room stays in the map for a minute as a tombstone, so
        // a join that was admitted just before the end cannot open a new,
        // live room for a meeting that is over.
        let room = lock(&self.rooms)
            .entry(meeting_id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(RoomState::new(self.config.replay_capacity))))
            .clone();
        let sessions: Vec<String> = {
            let mut state = lock(&room);
            state.closed = Some(Closed::MeetingOver);
            let ids: Vec<String> = state
                .slots
                .iter()
                .filter(|(_, slot)| slot.waiting.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                state.publish(
                    Audience::AllExcept(id.clone()),
                    left(&id, pb::ParticipantLeftReason::MeetingEnded),
                );
            }
            let over = Event::MeetingStatus(pb::MeetingStatusChanged {
                status: status as i32,
            });
            state.publish(Audience::All, over.clone());
            // Waiters hear nothing of the room, but hear that it is over.
            let over = Arc::new(pb::ServerEvent {
                sequence: 0,
                event: Some(over),
            });
            for slot in state.slots.values().filter(|slot| slot.waiting.is_some()) {
                if let Some(outbox) = &slot.outbox {
                    let _ = outbox.tx.try_send(over.clone());
                }
            }
            let slots = std::mem::take(&mut state.slots);
            if let Some(link) = &self.link {
                // Every node closes its own; the roster forgets this one's.
                for participant_id in slots.keys() {
                    let leave = RosterOp::Leave {
                        participant_id: participant_id.clone(),
                        node: link.node().to_owned(),
                    };
                    link.append(meeting_id, Record::default(), leave);
                }
            }
            let now = now_micros();
            slots
                .into_iter()
                .map(|(participant_id, mut slot)| {
                    slot.close(CloseReason::MeetingEnded);
                    self.attendance.leave(&participant_id, now);
                    slot.session_id
                })
                .collect()
        };
        self.forget_sessions(meeting_id, &sessions);
        // The placeholder answers late joiners for a minute, then goes.
        self.reaper.at(
            Instant::now() + Duration::from_secs(60),
            Due::ClosedRoom {
                meeting_id: meeting_id.to_owned(),
            },
        );
    }

    /// Server shutdown: every stream ends with UNAVAILABLE.
    pub fn shutdown(&self) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        for room in rooms {
            let mut state = lock(&room);
            for slot in state.slots.values_mut() {
                slot.close(CloseReason::Shutdown);
            }
        }
    }

    /// Records every participant still in a room as gone, after every
    /// attendance change already queued, and stops the attendance writer
    /// (after shutdown, so attendance does not stay "online" across a
    /// restart).
    pub async fn record_departures(&self) {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let ids: Vec<String> = rooms
            .iter()
            .flat_map(|room| lock(room).slots.keys().cloned().collect::<Vec<_>>())
            .collect();
        let finish = self.attendance.finish(ids, now_micros());
        if tokio::time::timeout(Duration::from_secs(10), finish)
            .await
            .is_err()
        {
            tracing::warn!("attendance writes still queued after 10 s at shutdown; left undone");
        }
    }

    /// The attendance queue, for the joins the API records (and awaits).
    pub fn attendance(&self) -> &Attendance {
        &self.attendance
    }

    /// Participants currently in a room (present or within their grace).
    pub fn participants(&self, meeting_id: &str) -> Vec<pb::Participant> {
        self.room(meeting_id)
            .map(|room| lock(&room).participants())
            .unwrap_or_default()
    }
}
