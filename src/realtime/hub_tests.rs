//! The hub on its own: no server, no database (attendance is read off its
//! queue), under paused tokio time, so grace periods, ping timeouts and
//! closed-room placeholders run in virtual seconds.

use std::{sync::Arc, time::Duration};

use tokio_stream::StreamExt;
use tonic::Code;

use super::{
    attendance::{Attendance, Change},
    hub::{HubConfig, HubError, Joiner, RoomHub},
    ice::IceConfig,
    inbound::EventCode,
    session::SessionStream,
};
use crate::{
    metrics::Metrics,
    proto::pb::{self, ParticipantLeftReason, client_event, server_event::Event},
};

struct Room {
    hub: Arc<RoomHub>,
    attendance: Attendance,
    meeting: pb::Meeting,
}

/// One participant's side: its stream and what `joined` told it.
struct Member {
    stream: SessionStream,
    session_id: String,
    participant_id: String,
    resume_token: String,
}

fn room(config: HubConfig) -> Room {
    let attendance = Attendance::default();
    let metrics = Arc::new(Metrics::new(Default::default()));
    Room {
        hub: RoomHub::new(
            config,
            IceConfig::default(),
            attendance.clone(),
            metrics,
            None,
        ),
        attendance,
        meeting: pb::Meeting {
            id: "meeting".into(),
            ..Default::default()
        },
    }
}

/// Lets the hub's tasks (detach reports, the reaper) run.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The next item of `stream` if one is ready now (paused time does not
/// move to a heartbeat while waiting for it).
async fn next(stream: &mut SessionStream) -> Option<Result<pb::ServerEvent, tonic::Status>> {
    tokio::time::timeout(Duration::from_millis(1), stream.next())
        .await
        .ok()
        .flatten()
}

/// Every event ready on `stream` now; panics on an error status.
async fn drain(stream: &mut SessionStream) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(item) = next(stream).await {
        events.push(item.expect("an event, not a status").event.unwrap());
    }
    events
}

fn left(events: &[Event]) -> Vec<(String, ParticipantLeftReason)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::ParticipantLeft(left) => Some((left.participant_id.clone(), left.reason())),
            _ => None,
        })
        .collect()
}

/// Attendance changes queued so far, as (kind, participant id).
fn ops(room: &mut Room) -> Vec<(&'static str, String)> {
    room.attendance
        .take()
        .into_iter()
        .map(|(id, change)| match change {
            Change::Leave(_) => ("leave", id),
            Change::Reopen => ("reopen", id),
        })
        .collect()
}

impl Room {
    async fn join(&self, user: &str, participant_id: &str) -> Member {
        let mut stream = self
            .hub
            .join(
                &self.meeting,
                Joiner {
                    user_id: user.into(),
                    display_name: user.to_uppercase(),
                },
                participant_id.into(),
            )
            .expect("joins");
        Member::from_joined(&mut stream).await.with(stream)
    }

    async fn resume(&self, user: &str, resume_token: &str, last_sequence: u64) -> Member {
        let mut stream = self
            .hub
            .resume(&self.meeting, user, resume_token, last_sequence)
            .expect("resumes");
        Member::from_joined(&mut stream).await.with(stream)
    }

    fn send(&self, member: &Member, event: client_event::Event) -> Result<(), EventCode> {
        self.hub
            .handle(&member.session_id, event)
            .map_err(|err| err.code)
    }
}

struct Joined {
    joined: pb::Joined,
}

impl Joined {
    fn with(self, stream: SessionStream) -> Member {
        Member {
            stream,
            session_id: self.joined.session_id,
            participant_id: self.joined.participant_id,
            resume_token: self.joined.resume_token,
        }
    }
}

impl Member {
    async fn from_joined(stream: &mut SessionStream) -> Joined {
        match next(stream).await.expect("an event").unwrap().event {
            Some(Event::Joined(joined)) => Joined { joined: *joined },
            other => panic!("expected joined first, got {other:?}"),
        }
    }
}

fn typing() -> client_event::Event {
    client_event::Event::Typing(pb::Typing { is_typing: true })
}

#[tokio::test(start_paused = true)]
async fn everyone_hears_joins_and_leaves_and_a_leave_is_recorded() {
    let mut room = room(HubConfig::default());
    let mut a = room.join("ua", "pa").await;
    let mut b = room.join("ub", "pb").await;
    let heard = drain(&mut a.stream).await;
    assert!(
        matches!(&heard[..], [Event::ParticipantJoined(j)] if j.participant.as_ref().unwrap().participant_id == "pb"),
        "{heard:?}"
    );
    assert_eq!(room.hub.participants("meeting").len(), 2);

    room.send(&b, client_event::Event::Leave(pb::LeaveRoom {}))
        .unwrap();
    assert_eq!(
        left(&drain(&mut a.stream).await),
        [("pb".to_owned(), ParticipantLeftReason::Left)]
    );
    assert!(b.stream.next().await.is_none(), "the leaver's stream ends");
    assert_eq!(ops(&mut room), [("leave", "pb".to_owned())]);
    assert_eq!(
        room.send(&b, typing()),
        Err(EventCode::SessionClosed),
        "a left session takes no events"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_keeps_its_place_for_the_grace_period_only() {
    let config = HubConfig::default();
    let grace = config.resume_grace;
    let mut room = room(config);
    let mut a = room.join("ua", "pa").await;
    let b = room.join("ub", "pb").await;
    drain(&mut a.stream).await;

    drop(b.stream);
    settle().await;
    assert_eq!(
        ops(&mut room),
        [("leave", "pb".to_owned())],
        "offline at once"
    );
    tokio::time::sleep(grace - Duration::from_secs(1)).await;
    room.send(&a, client_event::Event::Ping(pb::Ping {}))
        .unwrap();
    assert!(
        left(&drain(&mut a.stream).await).is_empty(),
        "still within grace"
    );
    assert_eq!(room.hub.participants("meeting").len(), 2);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        left(&drain(&mut a.stream).await),
        [("pb".to_owned(), ParticipantLeftReason::Disconnected)]
    );
    assert_eq!(room.hub.participants("meeting").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_resume_within_grace_replays_what_was_missed_and_outlives_the_timer() {
    let config = HubConfig::default();
    let grace = config.resume_grace;
    let mut room = room(config);
    let mut a = room.join("ua", "pa").await;
    let b = room.join("ub", "pb").await;
    drain(&mut a.stream).await;

    drop(b.stream);
    settle().await;
    room.send(&a, typing()).unwrap();

    let mut b = room.resume("ub", &b.resume_token, 0).await;
    assert_eq!(b.participant_id, "pb", "the same participant");
    let replayed = drain(&mut b.stream).await;
    assert!(
        matches!(&replayed[..], [Event::Typing(t)] if t.participant_id == "pa"),
        "{replayed:?}"
    );
    assert_eq!(
        ops(&mut room),
        [("reopen", "pb".to_owned())],
        "the leave, then the reopen: online"
    );

    tokio::time::sleep(grace + Duration::from_secs(1)).await;
    room.send(&a, client_event::Event::Ping(pb::Ping {}))
        .unwrap();
    assert!(
        left(&drain(&mut a.stream).await).is_empty(),
        "the old grace timer no longer applies"
    );
    // A resume token is not a key to someone else's place.
    assert!(matches!(
        room.hub.resume(&room.meeting, "ua", &b.resume_token, 0),
        Err(HubError::ResumeFailed(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn resuming_a_live_stream_replaces_it() {
    let mut room = room(HubConfig::default());
    let mut a_old = room.join("ua", "pa").await;
    let mut a_new = room.resume("ua", &a_old.resume_token, 0).await;
    let ending = drain(&mut a_old.stream).await;
    assert!(
        matches!(&ending[..], [Event::Error(e)] if e.code == "SESSION_REPLACED"),
        "{ending:?}"
    );
    assert_eq!(room.send(&a_old, typing()), Err(EventCode::SessionClosed));
    // The replaced stream's end is not a detach of the new one.
    drop(a_old.stream);
    settle().await;
    room.send(&a_new, client_event::Event::Ping(pb::Ping {}))
        .unwrap();
    assert!(matches!(
        drain(&mut a_new.stream).await[..],
        [Event::Pong(_)]
    ));
    assert_eq!(ops(&mut room), [("reopen", "pa".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_participant_times_out_and_leaves_after_its_grace() {
    let config = HubConfig {
        ping_interval: Duration::from_secs(2),
        ping_timeout: Duration::from_secs(5),
        resume_grace: Duration::from_secs(3),
        ..HubConfig::default()
    };
    let mut room = room(config);
    let mut a = room.join("ua", "pa").await;
    let mut b = room.join("ub", "pb").await;
    let mut heard = Vec::new();
    let mut b_status = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        room.send(&a, client_event::Event::Ping(pb::Ping {}))
            .unwrap();
        heard.extend(drain(&mut a.stream).await);
        // b reads (heartbeats arrive) but never sends.
        while b_status.is_none() {
            match next(&mut b.stream).await {
                Some(Ok(_)) => {}
                Some(Err(status)) => b_status = Some(status),
                None => break,
            }
        }
    }
    assert_eq!(b_status.expect("b timed out").code(), Code::Unavailable);
    assert_eq!(
        left(&heard),
        [("pb".to_owned(), ParticipantLeftReason::TimedOut)]
    );
    assert_eq!(
        ops(&mut room),
        [("leave", "pb".to_owned())],
        "offline since it went silent"
    );
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_falls_behind_is_told_and_resumes_from_where_it_was() {
    let config = HubConfig {
        queue_capacity: 4,
        ..HubConfig::default()
    };
    let mut room = room(config);
    let mut b = room.join("ub", "pb").await;
    let status = |n: i32| Event::MeetingStatus(pb::MeetingStatusChanged { status: n });
    for n in 0..10 {
        room.hub.broadcast("meeting", status(n));
    }
    let mut last = 0;
    let mut events = Vec::new();
    let end = loop {
        match next(&mut b.stream)
            .await
            .expect("the stream ends with a status")
        {
            Ok(event) => {
                if event.sequence > 0 {
                    last = event.sequence;
                }
                events.push(event.event.unwrap());
            }
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        matches!(events.last(), Some(Event::Error(e)) if e.code == "SLOW_CONSUMER"),
        "{events:?}"
    );
    assert_eq!(
        events.len(),
        5,
        "what fit in the queue, then why: {events:?}"
    );

    let mut b = room.resume("ub", &b.resume_token, last).await;
    let rest = drain(&mut b.stream).await;
    assert_eq!(rest.len(), 6, "the rest, from the replay: {rest:?}");
    let statuses: Vec<i32> = rest
        .iter()
        .filter_map(|event| match event {
            Event::MeetingStatus(s) => Some(s.status),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        (4..10).collect::<Vec<_>>(),
        "in order, none twice"
    );
    assert_eq!(
        ops(&mut room),
        [("reopen", "pb".to_owned())],
        "detached, then resumed: online"
    );
}

#[tokio::test(start_paused = true)]
async fn signals_reach_only_their_target_and_bad_ones_are_refused() {
    let room = room(HubConfig::default());
    let a = room.join("ua", "pa").await;
    let mut b = room.join("ub", "pb").await;
    let mut c = room.join("uc", "pc").await;
    drain(&mut b.stream).await;
    drain(&mut c.stream).await;
    let signal = |to: &str, sdp: usize| {
        client_event::Event::Signal(pb::OutgoingSignal {
            to_participant_id: to.into(),
            payload: Some(pb::outgoing_signal::Payload::Offer(
                pb::SessionDescription {
                    sdp: "v".repeat(sdp),
                },
            )),
        })
    };
    room.send(&a, signal("pb", 10)).unwrap();
    let got = drain(&mut b.stream).await;
    assert!(
        matches!(&got[..], [Event::Signal(s)] if s.from_participant_id == "pa"),
        "{got:?}"
    );
    assert!(drain(&mut c.stream).await.is_empty(), "not for c");

    assert_eq!(
        room.send(&a, signal("nobody", 10)),
        Err(EventCode::UnknownParticipant)
    );
    assert_eq!(
        room.send(&a, signal("pa", 10)),
        Err(EventCode::InvalidSignal)
    );
    assert_eq!(
        room.send(&a, signal("pb", 64 * 1024 + 1)),
        Err(EventCode::SignalTooLarge)
    );
    assert_eq!(
        room.send(&a, client_event::Event::Join(pb::JoinRoom::default())),
        Err(EventCode::AlreadyJoined)
    );
    let refused = (0..100)
        .map(|_| room.send(&a, signal("pb", 10)))
        .filter(|r| *r == Err(EventCode::RateLimited))
        .count();
    assert!(refused > 50, "the signal bucket runs dry: {refused}");
    assert!(
        room.hub.handle("no-such-session", typing()).is_err(),
        "an unknown session"
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_user_loses_every_device_and_cannot_return() {
    let room = room(HubConfig::default());
    let mut host = room.join("host", "ph").await;
    let mut phone = room.join("guest", "p1").await;
    let mut laptop = room.join("guest", "p2").await;
    drain(&mut host.stream).await;

    assert_eq!(room.hub.kick_user("meeting", "guest"), 2);
    for device in [&mut phone, &mut laptop] {
        let status = loop {
            match device.stream.next().await.expect("a status") {
                Ok(_) => {}
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let mut gone = left(&drain(&mut host.stream).await);
    gone.sort();
    assert_eq!(
        gone,
        [
            ("p1".to_owned(), ParticipantLeftReason::Kicked),
            ("p2".to_owned(), ParticipantLeftReason::Kicked)
        ]
    );
    let again = room.hub.join(
        &room.meeting,
        Joiner {
            user_id: "guest".into(),
            display_name: "G".into(),
        },
        "p3".into(),
    );
    assert_eq!(again.err(), Some(HubError::Removed));
    assert!(
        room.hub
            .resume(&room.meeting, "guest", &phone.resume_token, 0)
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_room_ends_every_stream_and_turns_joins_away_for_a_minute() {
    let mut room = room(HubConfig::default());
    let mut a = room.join("ua", "pa").await;
    let mut b = room.join("ub", "pb").await;
    drain(&mut a.stream).await;

    room.hub.close_room("meeting", pb::MeetingStatus::Completed);
    for member in [&mut a, &mut b] {
        let events = drain(&mut member.stream).await;
        assert!(
            matches!(events.last(), Some(Event::MeetingStatus(s)) if s.status() == pb::MeetingStatus::Completed),
            "{events:?}"
        );
        assert!(member.stream.next().await.is_none(), "then it ends");
    }
    let mut closed = ops(&mut room);
    closed.sort();
    assert_eq!(
        closed,
        [("leave", "pa".to_owned()), ("leave", "pb".to_owned())],
        "everyone's attendance closes with the room"
    );
    let joiner = || Joiner {
        user_id: "uc".into(),
        display_name: "C".into(),
    };
    assert_eq!(
        room.hub.join(&room.meeting, joiner(), "pc".into()).err(),
        Some(HubError::NotJoinable)
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(
        room.hub.join(&room.meeting, joiner(), "pc".into()).is_ok(),
        "the placeholder is gone (the API checks the meeting's status first)"
    );
}

#[tokio::test(start_paused = true)]
async fn departures_are_recorded_after_everything_queued() {
    let mut room = room(HubConfig::default());
    let _a = room.join("ua", "pa").await;
    let b = room.join("ub", "pb").await;
    room.send(&b, client_event::Event::Leave(pb::LeaveRoom {}))
        .unwrap();
    let hub = room.hub.clone();
    let departures = tokio::spawn(async move { hub.record_departures().await });
    settle().await;
    assert_eq!(ops(&mut room), [("leave", "pb".to_owned())]);
    let (ids, done) = room.attendance.take_finish().expect("finish queued");
    assert_eq!(ids, ["pa".to_owned()]);
    done.send(()).unwrap();
    departures.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_hears_nothing_of_the_room_and_a_silent_one_leaves_the_lobby() {
    let config = HubConfig {
        ping_interval: Duration::from_secs(2),
        ping_timeout: Duration::from_secs(5),
        ..HubConfig::default()
    };
    let mut room = room(config);
    room.meeting.host_id = "uh".into();
    room.meeting.waiting_room = true;
    let mut host = room.join("uh", "ph").await;
    let a = room.join("ua", "pa").await;
    drain(&mut host.stream).await;
    let waiter = room
        .hub
        .wait(
            &room.meeting,
            Joiner {
                user_id: "uw".into(),
                display_name: "W".into(),
            },
            "pw".into(),
        )
        .expect("waits");
    let mut w = waiter.stream;
    assert!(waiter.host_present && waiter.runners_present == ["uh"]);
    let told = drain(&mut w).await;
    assert!(
        matches!(&told[..], [Event::Waiting(w)] if w.host_present),
        "{told:?}"
    );
    let lobby = drain(&mut host.stream).await;
    assert!(
        matches!(&lobby[..], [Event::Lobby(l)] if l.participants[0].participant_id == "pw"),
        "{lobby:?}"
    );
    // The room goes on without it; it may not take part.
    room.send(&a, typing()).unwrap();
    room.hub.broadcast(
        "meeting",
        Event::MeetingStatus(pb::MeetingStatusChanged { status: 2 }),
    );
    assert_eq!(room.hub.participants("meeting").len(), 2);
    let waiter_session = w.session_id().to_owned();
    assert_eq!(
        room.hub
            .handle(&waiter_session, typing())
            .map_err(|e| e.code),
        Err(EventCode::InLobby)
    );
    let signal = client_event::Event::Signal(pb::OutgoingSignal {
        to_participant_id: "pw".into(),
        payload: Some(pb::outgoing_signal::Payload::Offer(
            pb::SessionDescription { sdp: "v=0".into() },
        )),
    });
    assert_eq!(room.send(&a, signal), Err(EventCode::UnknownParticipant));
    assert!(drain(&mut w).await.is_empty(), "a waiter hears nothing");
    // Silent past ping_timeout: it leaves the lobby, not the room.
    drain(&mut host.stream).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        room.send(&host, client_event::Event::Ping(pb::Ping {}))
            .unwrap();
        while let Some(Ok(_)) = next(&mut w).await {}
    }
    settle().await;
    let heard = drain(&mut host.stream).await;
    assert!(left(&heard).is_empty(), "{heard:?}");
    assert!(
        heard
            .iter()
            .any(|e| matches!(e, Event::Lobby(l) if l.participants.is_empty())),
        "{heard:?}"
    );
    assert!(ops(&mut room).is_empty(), "a waiter has no attendance");
    assert!(
        room.hub.admit("meeting", "pw").await.is_err(),
        "gone from the lobby"
    );
}

#[tokio::test(start_paused = true)]
async fn an_admitted_waiter_joins_in_the_rooms_order() {
    let room = room(HubConfig::default());
    let mut host = room.join("uh", "ph").await;
    let mut waiter = room
        .hub
        .wait(
            &room.meeting,
            Joiner {
                user_id: "uw".into(),
                display_name: "W".into(),
            },
            "pw".into(),
        )
        .expect("waits");
    drain(&mut waiter.stream).await;
    drain(&mut host.stream).await;
    room.hub.admit("meeting", "pw").await.expect("waiting");
    // The API records the attendance when the admission fires, then lets
    // it in.
    (&mut waiter.admission).await.expect("admitted");
    assert!(room.hub.let_in("meeting", "pw"));
    assert!(!room.hub.let_in("meeting", "pw"), "once");
    let joined = drain(&mut waiter.stream).await;
    let Some(Event::Joined(j)) = joined.first() else {
        panic!("{joined:?}")
    };
    assert_eq!(j.participants.len(), 2);
    assert!(!j.resume_token.is_empty());
    let heard = drain(&mut host.stream).await;
    assert!(
        matches!(heard.first(), Some(Event::ParticipantJoined(_))),
        "{heard:?}"
    );
    assert_eq!(room.hub.participants("meeting").len(), 2);
    // A denial of someone in the room is refused.
    assert!(room.hub.deny("meeting", "pw").await.is_err());
}
