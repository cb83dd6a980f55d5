//! `unio.v1.RoomService`: the gRPC faces of the room hub. Connect (native,
//! bidirectional), Subscribe + Publish (browsers) and RemoveParticipant all
//! meet in one [`RoomHub`](crate::realtime::RoomHub); this module only
//! admits callers and translates between the wire and the hub.

use std::{pin::Pin, time::Duration};

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::access;
use crate::wire;
use crate::{
    auth::{Caller, caller},
    domain::{
        new_id,
        notification::{Draft, lobby_key},
        parse_id,
        time::now_micros,
    },
    error::AppError,
    proto::pb::{self, client_event, room_service_server::RoomService},
    realtime::{
        SessionStream,
        attendance::Attendance,
        hub::{HubError, Joiner, LobbyError, Ready, Waiter},
        inbound::{EventCode, EventError},
        live::{Guarded, Verdict},
    },
    state::AppState,
    store::{meetings, notifications, participants, users},
};

pub struct RoomApi {
    state: AppState,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ServerEvent, Status>> + Send + 'static>>;

/// How long Connect waits for the first event (`join`).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Join outcomes that are not errors of the call itself.
enum Entered {
    Session(SessionStream),
    /// The resume token can no longer be honoured: tell the client, who
    /// joins afresh.
    ResumeFailed(&'static str),
}

fn resume_failed(message: &str) -> EventStream {
    let event = pb::ServerEvent {
        sequence: 0,
        event: Some(pb::server_event::Event::Error(pb::ErrorEvent {
            code: "RESUME_FAILED".into(),
            message: format!("{message}; join again without a resume_token"),
            request_id: String::new(),
        })),
    };
    Box::pin(tokio_stream::once(Ok(event)))
}

/// A chat message from a room session: rate-limited per session, then the
/// same path as SendMessage (being in the room makes the sender a member).
async fn room_chat(
    state: &AppState,
    session_id: &str,
    chat: &pb::ChatSend,
) -> Result<(), RoomChatError> {
    let (session, name) = state
        .hub
        .chat_sender(session_id)
        .map_err(RoomChatError::Event)?;
    super::chat::send(
        state,
        &session.user_id,
        &name,
        &session.meeting_id,
        &chat.text,
        &chat.client_message_id,
    )
    .await
    .map(|_| ())
    .map_err(RoomChatError::App)
}

/// Why a room chat message was refused: by the room (rate limits, closed
/// session) or by the chat path itself.
enum RoomChatError {
    Event(EventError),
    App(AppError),
}

impl RoomChatError {
    /// As an `error` event on a Connect stream.
    fn into_event(self) -> EventError {
        match self {
            Self::Event(err) => err,
            Self::App(err) => {
                let code = match &err {
                    AppError::InvalidArgument(_) => EventCode::InvalidChat,
                    AppError::FailedPrecondition { .. } => EventCode::MeetingReadOnly,
                    AppError::ResourceExhausted { .. } => EventCode::RateLimited,
                    _ => EventCode::ChatFailed,
                };
                EventError::new(code, tonic::Status::from(err).message())
            }
        }
    }

    /// As Publish's answer.
    fn into_status(self) -> Status {
        match self {
            Self::Event(err) => event_status(err),
            Self::App(err) => err.into(),
        }
    }
}

/// How long a join waits for this node to learn where a cluster's room
/// stands.
const ROOM_CATCH_UP: Duration = Duration::from_secs(3);

fn in_lobby() -> EventError {
    EventError::new(
        EventCode::InLobby,
        "you are in the waiting room: wait for a host to let you in",
    )
}

/// A refused event as the status Publish answers with.
fn event_status(err: EventError) -> Status {
    let EventError { code, message } = err;
    let reason = code.as_str();
    let error = match code {
        EventCode::UnknownParticipant => AppError::not_found(reason, message),
        EventCode::RateLimited => AppError::ResourceExhausted {
            reason,
            message,
            retry_after: Some(Duration::from_secs(1)),
        },
        EventCode::SessionClosed => AppError::FailedPrecondition { reason, message },
        EventCode::MeetingReadOnly | EventCode::InLobby => {
            AppError::FailedPrecondition { reason, message }
        }
        EventCode::NotAllowed => AppError::permission_denied(message),
        EventCode::InvalidReaction => AppError::invalid(
            "event.reaction.emoji",
            message.trim_start_matches("reaction.emoji "),
        ),
        EventCode::AlreadyJoined
        | EventCode::InvalidEvent
        | EventCode::InvalidSignal
        | EventCode::SignalTooLarge
        | EventCode::InvalidChat
        | EventCode::ChatFailed => AppError::invalid("event", message),
    };
    error.into()
}

impl RoomApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Publish for a session this node does not serve: in a cluster it may
    /// live on another node (a load balancer need not keep a browser's
    /// calls on one node). Chat takes SendMessage's path here; any other
    /// event goes to the session's node through the room's log, and a
    /// refusal there reaches the session's stream as an `error` event.
    async fn publish_elsewhere(
        &self,
        caller: &Caller,
        session_id: &str,
        event: Option<pb::ClientEvent>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let not_found = || {
            AppError::not_found(
                "SESSION_NOT_FOUND",
                "no open session with this id; Subscribe again",
            )
        };
        if !self.state.hub.is_clustered() {
            return Err(not_found().into());
        }
        // A session registers a moment after its `joined` went out: a
        // Publish right behind it looks twice more.
        let mut lookups = 0;
        let home = loop {
            match self.state.hub.session_home(session_id).await {
                Ok(Some(home)) => break home,
                Ok(None) if lookups < 2 => {
                    lookups += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => return Err(not_found().into()),
                Err(()) => {
                    return Err(AppError::Unavailable(
                        "the session's node cannot be reached now; retry".into(),
                    )
                    .into());
                }
            }
        };
        if home.user_id != caller.user_id {
            return Err(AppError::permission_denied("this session belongs to someone else").into());
        }
        // Registered here, but gone here: it ended.
        if self.state.hub.is_home(&home) {
            return Err(not_found().into());
        }
        // The caller must still have its place in the meeting (a session's
        // registration outlives a removal): a member, or a link holder
        // (who may wait in the lobby).
        access::in_room(
            access::load(
                &self.state.meeting_view,
                &home.meeting_id,
                &caller.user_id,
                caller.is_admin(),
            )
            .await?,
        )?;
        let Some(event) = event.filter(|e| e.event.is_some()) else {
            return Err(AppError::invalid("event", "is required").into());
        };
        match &event.event {
            Some(client_event::Event::Join(_)) => Err(AppError::invalid(
                "event",
                "join with Subscribe; Publish sends the other events",
            )
            .into()),
            Some(client_event::Event::Chat(chat)) => {
                // A waiter does not talk to the room, whichever node it asks.
                match self
                    .state
                    .hub
                    .is_waiting(&home.meeting_id, &home.participant_id)
                    .await
                {
                    Ok(false) => {}
                    Ok(true) => return Err(event_status(in_lobby())),
                    Err(_) => {
                        return Err(AppError::Unavailable(
                            "the room cannot be reached from this node now; retry".into(),
                        )
                        .into());
                    }
                }
                super::chat::send_as_member(
                    &self.state,
                    caller,
                    &home.meeting_id,
                    &chat.text,
                    &chat.client_message_id,
                )
                .await?;
                Ok(Response::new(pb::PublishResponse {}))
            }
            _ => {
                self.state
                    .hub
                    .forward(&home, session_id, &event)
                    .map_err(event_status)?;
                Ok(Response::new(pb::PublishResponse {}))
            }
        }
    }

    /// Checks that the caller may join the meeting now (a new join of a
    /// locked meeting only as host or co-host); says whether it was never
    /// in the meeting before, and whether it waits in the lobby.
    async fn admit(
        &self,
        caller: &Caller,
        raw_meeting_id: &str,
        resuming: bool,
    ) -> Result<(pb::Meeting, Joiner, bool, bool), AppError> {
        let meeting_id =
            parse_id(raw_meeting_id).map_err(|e| AppError::invalid("meeting_id", e.to_string()))?;
        let access::Loaded { record, access } = access::load(
            &self.state.meeting_view,
            &meeting_id,
            &caller.user_id,
            caller.is_admin(),
        )
        .await?;
        if access.status.is_over() {
            return Err(AppError::FailedPrecondition {
                reason: "MEETING_NOT_JOINABLE",
                message: format!(
                    "the meeting is {}; it can no longer be joined",
                    access.status.as_str()
                ),
            });
        }
        if access.is_removed() {
            return Err(access::removed_by_host());
        }
        if !access.can_join() {
            return Err(AppError::permission_denied(
                "you are not a member of this meeting",
            ));
        }
        if record.locked && !resuming && !access.skips_lobby() {
            return Err(AppError::FailedPrecondition {
                reason: "MEETING_LOCKED",
                message: "the meeting is locked: no one new may join now".into(),
            });
        }
        let waits = record.waiting_room && !resuming && !access.skips_lobby();
        let user = users::find_by_id(&self.state.db, &caller.user_id)
            .await?
            .ok_or_else(|| {
                AppError::unauthenticated("TOKEN_REVOKED", "your account no longer exists")
            })?;
        let meeting = wire::meeting(&record, &self.state.config.public_url);
        Ok((
            meeting,
            Joiner {
                user_id: user.id,
                display_name: user.display_name,
            },
            !access.relation.attended,
            waits,
        ))
    }

    /// The room stream, ended (and its participant out) once the caller's
    /// access to the meeting goes.
    fn guarded(&self, caller: &Caller, stream: SessionStream) -> EventStream {
        let meeting_id = stream.meeting_id().to_owned();
        let session_id = stream.session_id().to_owned();
        let guard = access::guard(
            &self.state,
            caller,
            access::Holds::Room {
                meeting_id: &meeting_id,
            },
        );
        let hub = self.state.hub.clone();
        Box::pin(Guarded::new(stream, guard).on_revoked(move || hub.end_session(&session_id)))
    }

    /// Joins or resumes.
    async fn enter(
        &self,
        caller: &Caller,
        meeting_id: &str,
        resume_token: &str,
        last_sequence: u64,
    ) -> Result<Entered, AppError> {
        let (meeting, joiner, first_join, waits) = self
            .admit(caller, meeting_id, !resume_token.is_empty())
            .await?;
        let hub = &self.state.hub;
        if waits {
            return self.wait(meeting, joiner, first_join).await;
        }
        if !resume_token.is_empty() {
            let resumed = match hub.resume(&meeting, &caller.user_id, resume_token, last_sequence) {
                // In a cluster, the participant may be another node's.
                Err(HubError::ResumeFailed(_)) if hub.is_clustered() => {
                    hub.resume_elsewhere(&meeting, &caller.user_id, resume_token, last_sequence)
                        .await
                }
                other => other,
            };
            return Ok(match resumed {
                Ok(stream) => Entered::Session(stream),
                Err(HubError::ResumeFailed(why)) => Entered::ResumeFailed(why),
                Err(HubError::NotJoinable) => Entered::ResumeFailed("the meeting is over"),
                Err(HubError::Removed) => Entered::ResumeFailed("the host removed you"),
                Err(HubError::Syncing(_)) => Entered::ResumeFailed("the room is catching up"),
                Err(HubError::LobbyFull(why)) => Entered::ResumeFailed(why),
            });
        }
        let participant_id = new_id();
        // The row exists before the stream is handed out. Until the hub has
        // the participant, a cancelled call (client reset, deadline) or a
        // refused join closes it again: nothing stays "online".
        let mut pending = PendingJoin {
            attendance: hub.attendance(),
            id: &participant_id,
            joined: false,
        };
        participants::record_join(
            &self.state.db,
            &participant_id,
            &meeting.id,
            &caller.user_id,
            now_micros(),
        )
        .await?;
        // A first join makes a participant a member.
        if first_join {
            self.state.bus.publish(
                &crate::realtime::bus::Topic::Meeting(meeting.id.clone()),
                crate::realtime::bus::BusEvent::DataChanged,
            );
        }
        let deadline = tokio::time::Instant::now() + ROOM_CATCH_UP;
        loop {
            return match hub.join(&meeting, joiner.clone(), participant_id.clone()) {
                Ok(stream) => {
                    pending.joined = true;
                    Ok(Entered::Session(stream))
                }
                // In a cluster: this node is reading where the room stands.
                Err(HubError::Syncing(Ready(mut ready))) => {
                    let caught_up = ready.wait_for(|ready| *ready);
                    if tokio::time::timeout_at(deadline, caught_up).await.is_err() {
                        hub.drop_if_empty(&meeting.id);
                        return Err(AppError::Unavailable(
                            "the room cannot be reached from this node now; retry".into(),
                        ));
                    }
                    continue;
                }
                Err(HubError::Removed) => {
                    hub.drop_if_empty(&meeting.id);
                    Err(access::removed_by_host())
                }
                Err(_) => Err(AppError::FailedPrecondition {
                    reason: "MEETING_NOT_JOINABLE",
                    message: "the meeting ended while joining".into(),
                }),
            };
        }
    }
}

impl RoomApi {
    /// A join that waits in the lobby: the stream says `waiting`; once a
    /// host or co-host admits it, a task records the attendance and lets
    /// it in (`joined`).
    async fn wait(
        &self,
        meeting: pb::Meeting,
        joiner: Joiner,
        first_join: bool,
    ) -> Result<Entered, AppError> {
        let hub = &self.state.hub;
        let participant_id = new_id();
        let deadline = tokio::time::Instant::now() + ROOM_CATCH_UP;
        let waiter = loop {
            match hub.wait(&meeting, joiner.clone(), participant_id.clone()) {
                Ok(waiter) => break waiter,
                Err(HubError::Syncing(Ready(mut ready))) => {
                    let caught_up = ready.wait_for(|ready| *ready);
                    if tokio::time::timeout_at(deadline, caught_up).await.is_err() {
                        hub.drop_if_empty(&meeting.id);
                        return Err(AppError::Unavailable(
                            "the room cannot be reached from this node now; retry".into(),
                        ));
                    }
                }
                Err(HubError::Removed) => {
                    hub.drop_if_empty(&meeting.id);
                    return Err(access::removed_by_host());
                }
                Err(HubError::LobbyFull(why)) => {
                    hub.drop_if_empty(&meeting.id);
                    return Err(AppError::ResourceExhausted {
                        reason: "LOBBY_FULL",
                        message: why.into(),
                        retry_after: Some(Duration::from_secs(30)),
                    });
                }
                Err(_) => {
                    return Err(AppError::FailedPrecondition {
                        reason: "MEETING_NOT_JOINABLE",
                        message: "the meeting ended while joining".into(),
                    });
                }
            }
        };
        let Waiter {
            stream,
            admission,
            runners_present,
            ..
        } = waiter;
        self.tell_absent_runners(&meeting, &joiner, &runners_present);
        let state = self.state.clone();
        let session_id = stream.session_id().to_owned();
        let (meeting_id, user_id) = (meeting.id.clone(), joiner.user_id.clone());
        tokio::spawn(async move {
            // Dropped (an error) when the waiter is gone first.
            if admission.await.is_err() {
                return;
            }
            let hub = &state.hub;
            let now = now_micros();
            if let Err(err) =
                participants::record_join(&state.db, &participant_id, &meeting_id, &user_id, now)
                    .await
            {
                tracing::warn!(%meeting_id, error = %err, "could not record an admitted waiter's attendance; it must join again");
                hub.end_session(&session_id);
                return;
            }
            if first_join {
                state.bus.publish(
                    &crate::realtime::bus::Topic::Meeting(meeting_id.clone()),
                    crate::realtime::bus::BusEvent::DataChanged,
                );
            }
            if !hub.let_in(&meeting_id, &participant_id) {
                // It left as it was let in.
                hub.attendance().leave(&participant_id, now_micros());
            }
        });
        Ok(Entered::Session(stream))
    }

    /// The host and co-hosts who are not in the room hear that someone
    /// waits (DESIGN §10), at most once per ten minutes per waiter.
    fn tell_absent_runners(&self, meeting: &pb::Meeting, joiner: &Joiner, present: &[String]) {
        let recipients: Vec<String> = std::iter::once(&meeting.host_id)
            .chain(&meeting.co_host_ids)
            .filter(|id| !present.contains(id) && **id != joiner.user_id)
            .cloned()
            .collect();
        if recipients.is_empty() {
            return;
        }
        let state = self.state.clone();
        let draft = Draft::lobby_waiting(&meeting.id, &meeting.title, &joiner.display_name);
        let (meeting_id, waiter) = (meeting.id.clone(), joiner.user_id.clone());
        tokio::spawn(async move {
            let now = now_micros();
            let key = |recipient: &str| lobby_key(&meeting_id, &waiter, recipient, now);
            // One at a time: a recipient who cannot be told (an account
            // deleted meanwhile) does not keep the others from hearing.
            for recipient in recipients {
                match notifications::send_once_each(&state.db, &[recipient], &draft, key, now).await
                {
                    Ok(sent) => super::deliver(&state, &sent),
                    Err(err) => {
                        tracing::warn!(%meeting_id, error = %err, "could not tell a host someone waits")
                    }
                }
            }
        });
    }

    /// Loads the meeting for a host or co-host acting on its room.
    async fn running(&self, caller: &Caller, meeting_id: &str) -> Result<access::Loaded, AppError> {
        let loaded = access::load(
            &self.state.meeting_view,
            meeting_id,
            &caller.user_id,
            caller.is_admin(),
        )
        .await?;
        if loaded.access.is_removed() {
            return Err(access::removed_by_host());
        }
        if !loaded.access.can_run() {
            return Err(AppError::permission_denied(
                "only the host or a co-host may do this",
            ));
        }
        Ok(loaded)
    }

    /// AdmitParticipant and DenyParticipant.
    async fn decide(
        &self,
        caller: &Caller,
        raw_meeting_id: &str,
        raw_participant_id: &str,
        admit: bool,
    ) -> Result<(), AppError> {
        let meeting_id = super::id_field("meeting_id", raw_meeting_id)?;
        let participant_id = super::id_field("participant_id", raw_participant_id)?;
        self.running(caller, &meeting_id).await?;
        let hub = &self.state.hub;
        let decided = if admit {
            hub.admit(&meeting_id, &participant_id).await
        } else {
            hub.deny(&meeting_id, &participant_id).await
        };
        match decided {
            Ok(()) => {
                tracing::info!(%meeting_id, %participant_id, admit, by = %caller.user_id, "lobby decision");
                Ok(())
            }
            Err(LobbyError::NotWaiting) => Err(AppError::not_found(
                "PARTICIPANT_NOT_WAITING",
                "no one with this participant id waits in the lobby",
            )),
            Err(LobbyError::Unavailable) => Err(AppError::Unavailable(
                "the room cannot be reached from this node now; retry".into(),
            )),
        }
    }
}

/// An attendance row being opened for a join: closed again when dropped
/// before the hub took the participant in.
struct PendingJoin<'a> {
    attendance: &'a Attendance,
    id: &'a str,
    joined: bool,
}

impl Drop for PendingJoin<'_> {
    fn drop(&mut self) {
        if !self.joined {
            // A row that was never written makes this a no-op.
            self.attendance.leave(self.id, now_micros());
        }
    }
}

/// Why a Connect's reader stopped.
enum ReaderEnd {
    /// The hub closed the session (replaced, removed, or ended).
    SessionClosed,
    /// The client closed its side; it may still read its stream.
    InputClosed,
    /// The response stream was dropped.
    StreamGone,
    /// Access went while an event waited.
    Revoked,
}

/// Reads a Connect's events and hands them to the hub (chat to the chat
/// path) until one side is done. Each event waits out a running access
/// check first, as the response stream does.
async fn read_events(
    state: &AppState,
    session_id: &str,
    inbound: &mut Streaming<pb::ClientEvent>,
    verdict: &Verdict,
) -> ReaderEnd {
    let hub = &state.hub;
    loop {
        let Ok(Some(event)) = inbound.message().await else {
            return ReaderEnd::InputClosed;
        };
        if verdict.settled().await.is_err() {
            return ReaderEnd::Revoked;
        }
        let Some(event_kind) = event.event else {
            let err = EventError::new(EventCode::InvalidEvent, "the event is empty");
            hub.send_error(session_id, &err, &event.request_id);
            continue;
        };
        if let client_event::Event::Chat(chat) = &event_kind {
            // Boxed: the chat path's future is large, and this task lives
            // as long as the stream.
            if let Err(err) = Box::pin(room_chat(state, session_id, chat)).await {
                hub.send_error(session_id, &err.into_event(), &event.request_id);
            }
            continue;
        }
        if let Err(err) = hub.handle(session_id, event_kind) {
            if err.code == EventCode::SessionClosed {
                return ReaderEnd::SessionClosed;
            }
            hub.send_error(session_id, &err, &event.request_id);
        }
    }
}

#[tonic::async_trait]
impl RoomService for RoomApi {
    type ConnectStream = EventStream;
    type SubscribeStream = EventStream;

    #[tracing::instrument(skip_all)]
    async fn connect(
        &self,
        request: Request<Streaming<pb::ClientEvent>>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(JOIN_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(event))) => event,
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) | Err(_) => {
                return Err(AppError::invalid("event", "send `join` as the first event").into());
            }
        };
        let Some(client_event::Event::Join(join)) = first.event else {
            return Err(AppError::invalid("event", "the first event must be `join`").into());
        };
        let stream = match self
            .enter(
                &caller,
                &join.meeting_id,
                &join.resume_token,
                join.last_sequence,
            )
            .await?
        {
            Entered::Session(stream) => stream,
            Entered::ResumeFailed(why) => return Ok(Response::new(resume_failed(why))),
        };
        let state = self.state.clone();
        let session_id = stream.session_id().to_owned();
        let meeting_id = stream.meeting_id().to_owned();
        // One guard for both directions, driven by the reader task: a
        // client that stops reading its events (so the response stream is
        // not polled) still loses its place and its voice the moment its
        // access goes, and a reading one hears why from its stream.
        let mut access = access::guard(
            &self.state,
            &caller,
            access::Holds::Room {
                meeting_id: &meeting_id,
            },
        );
        let verdict = access.verdict();
        let (stream, mut stream_gone) = Guarded::shared(stream, verdict.clone());
        let stream: EventStream = Box::pin(stream);
        // The guard is driven next to the reader, not between its events,
        // so that a slow event (a chat append) does not keep a revocation
        // waiting.
        tokio::spawn(async move {
            // A reader that dies (a bug) ends its stream and its place.
            let fail_closed = verdict.fail_closed().then({
                let (hub, session_id) = (state.hub.clone(), session_id.clone());
                move || hub.end_session(&session_id)
            });
            let end = {
                let reader = read_events(&state, &session_id, &mut inbound, &verdict);
                tokio::pin!(reader);
                // The stream's end is heard even while an event is being
                // handled (a slow chat append, a long check).
                tokio::select! {
                    biased;
                    _ = access.drive(&verdict) => ReaderEnd::Revoked,
                    _ = &mut stream_gone => ReaderEnd::StreamGone,
                    end = &mut reader => end,
                }
            };
            let revoked = match end {
                ReaderEnd::Revoked => true,
                ReaderEnd::SessionClosed | ReaderEnd::StreamGone => false,
                // The client stopped sending but may still read: its
                // stream stays guarded until it ends.
                ReaderEnd::InputClosed => tokio::select! {
                    biased;
                    _ = access.drive(&verdict) => true,
                    _ = &mut stream_gone => false,
                },
            };
            fail_closed.disarm();
            if revoked {
                state.hub.end_session(&session_id);
            }
        });
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(meeting_id = %request.get_ref().meeting_id))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        match self
            .enter(&caller, &r.meeting_id, &r.resume_token, r.last_sequence)
            .await?
        {
            Entered::Session(stream) => Ok(Response::new(self.guarded(&caller, stream))),
            Entered::ResumeFailed(why) => Ok(Response::new(resume_failed(why))),
        }
    }

    #[tracing::instrument(skip_all, fields(session_id = %request.get_ref().session_id))]
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = caller(&request)?;
        let pb::PublishRequest { session_id, event } = request.into_inner();
        let session_id = super::id_field("session_id", &session_id)?;
        let Some(session) = self.state.hub.session(&session_id) else {
            return self.publish_elsewhere(&caller, &session_id, event).await;
        };
        if session.user_id != caller.user_id {
            return Err(AppError::permission_denied("this session belongs to someone else").into());
        }
        let Some(event) = event.and_then(|e| e.event) else {
            return Err(AppError::invalid("event", "is required").into());
        };
        if matches!(event, client_event::Event::Join(_)) {
            return Err(AppError::invalid(
                "event",
                "join with Subscribe; Publish sends the other events",
            )
            .into());
        }
        if let client_event::Event::Chat(chat) = &event {
            room_chat(&self.state, &session_id, chat)
                .await
                .map_err(RoomChatError::into_status)?;
            return Ok(Response::new(pb::PublishResponse {}));
        }
        self.state
            .hub
            .handle(&session_id, event)
            .map_err(event_status)?;
        Ok(Response::new(pb::PublishResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_participant(
        &self,
        request: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::RemoveParticipantResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let meeting_id = super::id_field("meeting_id", &r.meeting_id)?;
        let participant_id = super::id_field("participant_id", &r.participant_id)?;
        let loaded = self.running(&caller, &meeting_id).await?;
        // Here, or (in a cluster) online or waiting on another node. One
        // node's hub knows everyone in its rooms: an attendance row still
        // open for a participant it just took out (the leave is queued) must
        // not make a second removal look like a first.
        let user_id = match self.state.hub.user_of(&meeting_id, &participant_id) {
            Some(user_id) => Some(user_id),
            None if !self.state.hub.is_clustered() => None,
            None => match participants::online_user(&self.state.db, &meeting_id, &participant_id)
                .await
                .map_err(AppError::from)?
            {
                Some(user_id) => Some(user_id),
                None => self
                    .state
                    .hub
                    .waiter_user(&meeting_id, &participant_id)
                    .await
                    .map_err(|()| {
                        AppError::Unavailable(
                            "the room cannot be reached from this node now; retry".into(),
                        )
                    })?,
            },
        };
        let Some(user_id) = user_id else {
            return Err(AppError::not_found(
                "PARTICIPANT_NOT_FOUND",
                "no such participant in the room",
            )
            .into());
        };
        if user_id == loaded.record.host_id {
            return Err(AppError::FailedPrecondition {
                reason: "HOST_NOT_REMOVABLE",
                message: "the host cannot remove themselves; leave instead".into(),
            }
            .into());
        }
        let co_host = loaded.record.is_co_host(&user_id);
        if co_host && !loaded.access.relation.is_host {
            return Err(AppError::permission_denied("only the host may remove a co-host").into());
        }
        // Recorded first: once this answers OK the removal holds, in every
        // room and after any restart.
        meetings::record_removal(
            &self.state.db,
            &meeting_id,
            &user_id,
            &caller.user_id,
            now_micros(),
        )
        .await?;
        self.state.hub.kick_user(&meeting_id, &user_id);
        if co_host {
            // A co-host no more: the room hears of it.
            if let Some(record) = meetings::find(&self.state.db, &meeting_id).await? {
                self.state
                    .hub
                    .settings_changed(&wire::meeting(&record, &self.state.config.public_url));
            }
        }
        // The other streams in this meeting (uploads, downloads) re-check,
        // and so do the user's own, which reach room streams this node's
        // hub does not serve (in a cluster, on other nodes).
        self.state
            .accounts
            .access_changed(crate::realtime::bus::Topic::Meeting(meeting_id.clone()));
        self.state
            .accounts
            .access_changed(crate::realtime::bus::Topic::User(user_id.clone()));
        tracing::info!(%meeting_id, %participant_id, by = %caller.user_id, "participant removed");
        Ok(Response::new(pb::RemoveParticipantResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn admit_participant(
        &self,
        request: Request<pb::AdmitParticipantRequest>,
    ) -> Result<Response<pb::AdmitParticipantResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        self.decide(&caller, &r.meeting_id, &r.participant_id, true)
            .await?;
        Ok(Response::new(pb::AdmitParticipantResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn deny_participant(
        &self,
        request: Request<pb::DenyParticipantRequest>,
    ) -> Result<Response<pb::DenyParticipantResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        self.decide(&caller, &r.meeting_id, &r.participant_id, false)
            .await?;
        Ok(Response::new(pb::DenyParticipantResponse {}))
    }
}
