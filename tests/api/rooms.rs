//! RoomService against the real server: native (Connect) and browser-style
//! (Subscribe + Publish) participants in one room, signaling, presence,
//! host controls, resume, heartbeats, back-pressure and rate limits.

use std::time::Duration;

use prost_types::Timestamp;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Streaming, transport::Channel};
use unio::proto::pb::{
    self, client_event, incoming_signal, outgoing_signal, room_service_client::RoomServiceClient,
    server_event::Event,
};

use crate::helpers::{TestApp, assert_status, authed, spawn_app, spawn_app_with};

/// A native participant: the sending half and the event stream.
pub(crate) struct Native {
    pub(crate) tx: mpsc::Sender<pb::ClientEvent>,
    pub(crate) events: Streaming<pb::ServerEvent>,
    pub(crate) joined: pb::Joined,
    pub(crate) joined_seq: u64,
}

pub(crate) fn rooms(app: &TestApp) -> RoomServiceClient<Channel> {
    RoomServiceClient::new(app.channel())
}

pub(crate) fn event(request_id: &str, event: client_event::Event) -> pb::ClientEvent {
    pb::ClientEvent {
        request_id: request_id.into(),
        event: Some(event),
    }
}

pub(crate) fn join(meeting_id: &str) -> client_event::Event {
    client_event::Event::Join(pb::JoinRoom {
        meeting_id: meeting_id.into(),
        ..Default::default()
    })
}

/// A join that resumes `resume_token`'s participant after `last_sequence`.
pub(crate) fn resume(
    meeting_id: &str,
    resume_token: &str,
    last_sequence: u64,
) -> client_event::Event {
    client_event::Event::Join(pb::JoinRoom {
        meeting_id: meeting_id.into(),
        resume_token: resume_token.into(),
        last_sequence,
    })
}

/// Opens Connect and sends `first` as its first event.
pub(crate) async fn open(
    app: &TestApp,
    token: &str,
    first: client_event::Event,
) -> Result<(mpsc::Sender<pb::ClientEvent>, Streaming<pb::ServerEvent>), tonic::Status> {
    open_via(rooms(app), token, first).await
}

/// [`open`] through `client` (a connection of its own).
pub(crate) async fn open_via(
    mut client: RoomServiceClient<Channel>,
    token: &str,
    first: client_event::Event,
) -> Result<(mpsc::Sender<pb::ClientEvent>, Streaming<pb::ServerEvent>), tonic::Status> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(event("join", first)).await.unwrap();
    let response = client
        .connect(authed(ReceiverStream::new(rx), token))
        .await?;
    Ok((tx, response.into_inner()))
}

pub(crate) async fn connect(app: &TestApp, token: &str, meeting_id: &str) -> Native {
    let (tx, mut events) = open(app, token, join(meeting_id)).await.expect("connect");
    let first = next(&mut events).await;
    let Some(Event::Joined(joined)) = first.event else {
        panic!("expected joined, got {first:?}")
    };
    Native {
        tx,
        events,
        joined: *joined,
        joined_seq: first.sequence,
    }
}

/// The next event that is not a heartbeat.
pub(crate) async fn next(events: &mut Streaming<pb::ServerEvent>) -> pb::ServerEvent {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream is open")
            .expect("not an error");
        if !matches!(item.event, Some(Event::Heartbeat(_))) {
            return item;
        }
    }
}

/// Waits until the server has handled everything `native` sent so far: a
/// ping's pong comes back after them, since one session's events are
/// handled in order. Events other than the pong that arrive meanwhile are
/// dropped (callers use it where none are expected).
pub(crate) async fn settle(native: &mut Native) {
    native
        .tx
        .send(event("settle", client_event::Event::Ping(pb::Ping {})))
        .await
        .unwrap();
    loop {
        if matches!(next(&mut native.events).await.event, Some(Event::Pong(_))) {
            return;
        }
    }
}

/// Whether nothing but heartbeats arrives within `wait`.
pub(crate) async fn quiet(events: &mut Streaming<pb::ServerEvent>, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(pb::ServerEvent {
                event: Some(Event::Heartbeat(_)),
                ..
            }))) => continue,
            Ok(other) => {
                eprintln!("unexpected: {other:?}");
                return false;
            }
        }
    }
}

/// The stream's end: Ok(()) for a clean end, or its error status.
pub(crate) async fn end_of(
    events: &mut Streaming<pb::ServerEvent>,
) -> Result<Vec<pb::ServerEvent>, tonic::Status> {
    let mut rest = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("ends within 5 s")
        {
            None => return Ok(rest),
            Some(Ok(e)) if matches!(e.event, Some(Event::Heartbeat(_))) => {}
            Some(Ok(e)) => rest.push(e),
            Some(Err(status)) => return Err(status),
        }
    }
}

pub(crate) fn offer(to: &str, sdp: &str) -> client_event::Event {
    client_event::Event::Signal(pb::OutgoingSignal {
        to_participant_id: to.into(),
        payload: Some(outgoing_signal::Payload::Offer(pb::SessionDescription {
            sdp: sdp.into(),
        })),
    })
}

pub(crate) fn answer(to: &str, sdp: &str) -> client_event::Event {
    client_event::Event::Signal(pb::OutgoingSignal {
        to_participant_id: to.into(),
        payload: Some(outgoing_signal::Payload::Answer(pb::SessionDescription {
            sdp: sdp.into(),
        })),
    })
}

pub(crate) fn ice(to: &str) -> client_event::Event {
    client_event::Event::Signal(pb::OutgoingSignal {
        to_participant_id: to.into(),
        payload: Some(outgoing_signal::Payload::IceCandidate(pb::IceCandidate {
            candidate: "candidate:1 1 UDP 2122252543 192.0.2.1 54321 typ host".into(),
            sdp_mid: "0".into(),
            sdp_mline_index: 0,
        })),
    })
}

/// A meeting hosted by host@ with bob@ and carol@ invited; returns tokens.
pub(crate) async fn setup(
    app: &TestApp,
    policy: pb::JoinPolicy,
) -> (String, String, String, String) {
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let meeting = app
        .meeting(
            &host,
            "Room",
            &["bob@example.com", "carol@example.com"],
            policy,
        )
        .await;
    (meeting.id, host, bob, carol)
}

#[tokio::test]
async fn two_natives_exchange_offer_answer_and_ice() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    assert_eq!(a.joined.participants.len(), 1);
    assert!(a.joined.ping_interval.is_some() && a.joined.ping_timeout.is_some());
    assert_eq!(
        a.joined.ice_servers[0].urls,
        ["stun:stun.l.google.com:19302"]
    );
    assert_eq!(a.joined.meeting.as_ref().unwrap().id, meeting);
    let mut b = connect(&app, &bob, &meeting).await;
    assert_eq!(b.joined.participants.len(), 2);
    let (a_id, b_id) = (
        a.joined.participant_id.clone(),
        b.joined.participant_id.clone(),
    );

    let seen = next(&mut a.events).await;
    let Some(Event::ParticipantJoined(joined)) = seen.event else {
        panic!("{seen:?}")
    };
    assert_eq!(joined.participant.unwrap().participant_id, b_id);
    assert_eq!(
        seen.sequence, b.joined_seq,
        "joined carries the room's position"
    );

    a.tx.send(event("o1", offer(&b_id, "v=0 offer")))
        .await
        .unwrap();
    let got = next(&mut b.events).await;
    let Some(Event::Signal(signal)) = got.event else {
        panic!("{got:?}")
    };
    assert_eq!(signal.from_participant_id, a_id);
    assert_eq!(
        signal.payload,
        Some(incoming_signal::Payload::Offer(pb::SessionDescription {
            sdp: "v=0 offer".into()
        }))
    );

    b.tx.send(event("a1", answer(&a_id, "v=0 answer")))
        .await
        .unwrap();
    b.tx.send(event("i1", ice(&a_id))).await.unwrap();
    let got = next(&mut a.events).await;
    assert!(matches!(
        got.event,
        Some(Event::Signal(pb::IncomingSignal {
            payload: Some(incoming_signal::Payload::Answer(_)),
            ..
        }))
    ));
    let got = next(&mut a.events).await;
    assert!(matches!(
        got.event,
        Some(Event::Signal(pb::IncomingSignal {
            payload: Some(incoming_signal::Payload::IceCandidate(_)),
            ..
        }))
    ));

    // Attendance rows were written.
    let listed = app
        .meetings()
        .list_participants(authed(
            pb::ListParticipantsRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|p| p.online));
}

#[tokio::test]
async fn signals_reach_only_their_target_and_order_is_shared() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let mut b = connect(&app, &bob, &meeting).await;
    let mut c = connect(&app, &carol, &meeting).await;
    let b_id = b.joined.participant_id.clone();
    // a sees b and c join; b sees c join.
    let a1 = next(&mut a.events).await.sequence;
    let a2 = next(&mut a.events).await.sequence;
    let b1 = next(&mut b.events).await.sequence;
    assert!(a1 < a2 && b1 == a2 && c.joined_seq == a2);

    a.tx.send(event("x", offer(&b_id, "for b only")))
        .await
        .unwrap();
    c.tx.send(event(
        "m",
        client_event::Event::MediaState(pb::MediaState {
            audio_enabled: true,
            ..Default::default()
        }),
    ))
    .await
    .unwrap();
    let to_b = next(&mut b.events).await;
    assert!(matches!(to_b.event, Some(Event::Signal(_))));
    let media_at_b = next(&mut b.events).await;
    let media_at_a = next(&mut a.events).await;
    assert!(matches!(media_at_a.event, Some(Event::MediaState(_))));
    assert_eq!(
        media_at_a.sequence, media_at_b.sequence,
        "one order for everyone"
    );
    assert!(
        quiet(&mut c.events, Duration::from_millis(200)).await,
        "c saw nothing addressed to others"
    );
}

#[tokio::test]
async fn a_browser_and_a_native_client_talk_in_one_room() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut native = connect(&app, &host, &meeting).await;
    let mut browser = rooms(&app)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut browser).await;
    let Some(Event::Joined(joined)) = first.event else {
        panic!("{first:?}")
    };
    assert_eq!(joined.participants.len(), 2);
    let native_id = native.joined.participant_id.clone();
    let seen = next(&mut native.events).await;
    assert!(matches!(seen.event, Some(Event::ParticipantJoined(_))));

    let publish = |event: client_event::Event, session: &str, token: &str| {
        let mut client = rooms(&app);
        let request = authed(
            pb::PublishRequest {
                session_id: session.into(),
                event: Some(pb::ClientEvent {
                    request_id: "r".into(),
                    event: Some(event),
                }),
            },
            token,
        );
        async move { client.publish(request).await }
    };
    publish(offer(&native_id, "browser offer"), &joined.session_id, &bob)
        .await
        .unwrap();
    let got = next(&mut native.events).await;
    let Some(Event::Signal(signal)) = got.event else {
        panic!("{got:?}")
    };
    assert_eq!(signal.from_participant_id, joined.participant_id);

    native
        .tx
        .send(event("a", answer(&joined.participant_id, "native answer")))
        .await
        .unwrap();
    native
        .tx
        .send(event("i", ice(&joined.participant_id)))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut browser).await.event,
        Some(Event::Signal(_))
    ));
    assert!(matches!(
        next(&mut browser).await.event,
        Some(Event::Signal(_))
    ));

    // Only the session's owner may publish into it.
    assert_status(
        publish(offer(&native_id, "forged"), &joined.session_id, &host).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        publish(
            offer("0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f", "x"),
            &joined.session_id,
            &bob,
        )
        .await,
        Code::NotFound,
        "UNKNOWN_PARTICIPANT",
    );
    assert_status(
        publish(
            offer(&native_id, "x"),
            "0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f",
            &bob,
        )
        .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let status = publish(join(&meeting), &joined.session_id, &bob)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A ping keeps the browser session alive and changes nothing.
    publish(
        client_event::Event::Ping(pb::Ping {}),
        &joined.session_id,
        &bob,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_events_get_error_events_and_the_stream_stays_open() {
    let app = spawn_app().await;
    let (meeting, host, _, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    a.tx.send(event(
        "req-7",
        offer("0192f0c1-7b3a-7c4e-9d2f-1a2b3c4d5e6f", "sdp"),
    ))
    .await
    .unwrap();
    let err = next(&mut a.events).await;
    let Some(Event::Error(error)) = err.event else {
        panic!("{err:?}")
    };
    assert_eq!(
        (error.code.as_str(), error.request_id.as_str()),
        ("UNKNOWN_PARTICIPANT", "req-7")
    );
    a.tx.send(pb::ClientEvent {
        request_id: "empty".into(),
        event: None,
    })
    .await
    .unwrap();
    assert!(
        matches!(next(&mut a.events).await.event, Some(Event::Error(e)) if e.request_id == "empty")
    );
    a.tx.send(event(
        "big",
        offer(&a.joined.participant_id, &"x".repeat(70 * 1024)),
    ))
    .await
    .unwrap();
    assert!(
        matches!(next(&mut a.events).await.event, Some(Event::Error(e)) if e.code == "SIGNAL_TOO_LARGE")
    );
    a.tx.send(event("again", join(&meeting))).await.unwrap();
    assert!(
        matches!(next(&mut a.events).await.event, Some(Event::Error(e)) if e.code == "ALREADY_JOINED")
    );

    // Typing faster than the limit: errors for the excess, not a cut.
    for i in 0..30 {
        a.tx.send(event(
            &format!("t{i}"),
            client_event::Event::Typing(pb::Typing { is_typing: true }),
        ))
        .await
        .unwrap();
    }
    let mut limited = 0;
    for _ in 0..20 {
        if let Some(Event::Error(e)) = next(&mut a.events).await.event {
            assert_eq!(e.code, "RATE_LIMITED");
            limited += 1;
        }
    }
    assert_eq!(limited, 20, "30 typing events, a burst of 10 allowed");
    a.tx.send(event("p", client_event::Event::Ping(pb::Ping {})))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut a.events).await.event,
        Some(Event::Pong(_))
    ));
}

#[tokio::test]
async fn strangers_and_finished_meetings_are_refused() {
    let app = spawn_app().await;
    let (meeting, host, _, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let status = open(&app, &eve, join(&meeting)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = rooms(&app)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &eve,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = open(&app, &host, client_event::Event::Ping(pb::Ping {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = open(&app, &host, join("nope")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    assert_status(
        open(&app, &host, join(&meeting)).await,
        Code::FailedPrecondition,
        "MEETING_NOT_JOINABLE",
    );

    // With an open link, a stranger may join.
    let (open_meeting, host2, _, _) = {
        let (_, h, _) = app.user("host2@example.com").await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let m = app
            .meetings()
            .create_meeting(authed(
                pb::CreateMeetingRequest {
                    title: "Open".into(),
                    start_time: Some(Timestamp {
                        seconds: now + 60,
                        nanos: 0,
                    }),
                    duration_minutes: 30,
                    join_policy: pb::JoinPolicy::AnyoneWithLink as i32,
                    ..Default::default()
                },
                &h,
            ))
            .await
            .unwrap()
            .into_inner();
        (m.id, h, (), ())
    };
    let _ = host2;
    connect(&app, &eve, &open_meeting).await;
}

#[tokio::test]
async fn the_host_removes_a_participant() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let mut b = connect(&app, &bob, &meeting).await;
    let b_id = b.joined.participant_id.clone();
    next(&mut a.events).await;
    let remove = |participant: &str, token: &str| {
        let mut client = rooms(&app);
        let request = authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: participant.into(),
            },
            token,
        );
        async move { client.remove_participant(request).await }
    };
    assert_status(
        remove(&a.joined.participant_id, &bob).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    remove(&b_id, &host).await.unwrap();
    let left = next(&mut a.events).await;
    let Some(Event::ParticipantLeft(left)) = left.event else {
        panic!("{left:?}")
    };
    assert_eq!(
        (left.participant_id.as_str(), left.reason),
        (b_id.as_str(), pb::ParticipantLeftReason::Kicked as i32)
    );
    let status = end_of(&mut b.events).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(crate::helpers::reason(&status), "KICKED");
    assert_status(
        remove(&b_id, &host).await,
        Code::NotFound,
        "PARTICIPANT_NOT_FOUND",
    );
    // The kicked participant's resume token is dead: the removal is checked
    // before any resume.
    assert_status(
        open(&app, &bob, resume(&meeting, &b.joined.resume_token, 0)).await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    // ... and a fresh join is refused.
    assert_status(
        open(&app, &bob, join(&meeting)).await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    let _ = carol;
}

#[tokio::test]
async fn ending_the_meeting_closes_every_stream() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let mut b = rooms(&app)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    next(&mut b).await;
    next(&mut a.events).await;
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    for events in [&mut a.events, &mut b] {
        let started = next(events).await;
        assert!(
            matches!(started.event, Some(Event::MeetingStatus(s)) if s.status == pb::MeetingStatus::Ongoing as i32)
        );
    }
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    for events in [&mut a.events, &mut b] {
        let rest = end_of(events).await.expect("a clean end");
        assert!(
            rest.iter().any(|e| matches!(&e.event, Some(Event::ParticipantLeft(l)) if l.reason == pb::ParticipantLeftReason::MeetingEnded as i32)),
            "{rest:?}"
        );
        assert!(
            matches!(rest.last().and_then(|e| e.event.clone()), Some(Event::MeetingStatus(s)) if s.status == pb::MeetingStatus::Completed as i32)
        );
    }
    let listed = app
        .meetings()
        .list_participants(authed(
            pb::ListParticipantsRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner()
        .participants;
    assert!(listed.iter().all(|p| !p.online));
}

#[tokio::test]
async fn a_dropped_participant_resumes_and_gets_what_it_missed() {
    let app = spawn_app_with(&[("UNIO_RESUME_GRACE", "3s")]).await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let b = connect(&app, &bob, &meeting).await;
    let (b_id, token, b_seen) = (
        b.joined.participant_id.clone(),
        b.joined.resume_token.clone(),
        b.joined_seq,
    );
    next(&mut a.events).await;
    drop(b); // the connection is lost

    a.tx.send(event(
        "m",
        client_event::Event::MediaState(pb::MediaState {
            video_enabled: true,
            ..Default::default()
        }),
    ))
    .await
    .unwrap();
    a.tx.send(event("o", offer(&b_id, "while you were away")))
        .await
        .unwrap();
    a.tx.send(event(
        "t",
        client_event::Event::Typing(pb::Typing { is_typing: true }),
    ))
    .await
    .unwrap();
    settle(&mut a).await;

    let (_tx, mut again) = open(&app, &bob, resume(&meeting, &token, b_seen))
        .await
        .unwrap();
    let first = next(&mut again).await;
    let Some(Event::Joined(joined)) = first.event else {
        panic!("{first:?}")
    };
    assert!(joined.resumed);
    assert_eq!(joined.participant_id, b_id, "same participant");
    let replayed: Vec<_> = [
        next(&mut again).await,
        next(&mut again).await,
        next(&mut again).await,
    ]
    .into();
    assert!(matches!(replayed[0].event, Some(Event::MediaState(_))));
    assert!(matches!(replayed[1].event, Some(Event::Signal(_))));
    assert!(matches!(replayed[2].event, Some(Event::Typing(_))));
    assert!(replayed.windows(2).all(|w| w[0].sequence < w[1].sequence));
    // The room never saw b leave.
    assert!(quiet(&mut a.events, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn a_resume_replays_nothing_from_before_the_join() {
    let app = spawn_app_with(&[("UNIO_RESUME_GRACE", "3s")]).await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    a.tx.send(event(
        "h",
        client_event::Event::RaiseHand(pb::RaiseHand { raised: true }),
    ))
    .await
    .unwrap();
    settle(&mut a).await;
    let b = connect(&app, &bob, &meeting).await;
    let token = b.joined.resume_token.clone();
    next(&mut a.events).await;
    drop(b);
    a.tx.send(event(
        "t",
        client_event::Event::Typing(pb::Typing { is_typing: true }),
    ))
    .await
    .unwrap();
    settle(&mut a).await;

    // It asks for everything since the room began: it gets what came
    // after its join, not the host's join or hand before it.
    let (_tx, mut again) = open(&app, &bob, resume(&meeting, &token, 1)).await.unwrap();
    let first = next(&mut again).await;
    assert!(matches!(first.event, Some(Event::Joined(_))), "{first:?}");
    let replayed = next(&mut again).await;
    assert!(
        matches!(replayed.event, Some(Event::Typing(_))),
        "{replayed:?}"
    );
    assert!(quiet(&mut again, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn past_the_grace_period_the_room_is_told_and_resume_fails() {
    let app = spawn_app_with(&[("UNIO_RESUME_GRACE", "300ms")]).await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let b = connect(&app, &bob, &meeting).await;
    let (b_id, token) = (
        b.joined.participant_id.clone(),
        b.joined.resume_token.clone(),
    );
    next(&mut a.events).await;
    drop(b);
    let left = next(&mut a.events).await;
    let Some(Event::ParticipantLeft(left)) = left.event else {
        panic!("{left:?}")
    };
    assert_eq!(
        (left.participant_id.as_str(), left.reason),
        (
            b_id.as_str(),
            pb::ParticipantLeftReason::Disconnected as i32
        )
    );
    let (_tx, mut again) = open(&app, &bob, resume(&meeting, &token, 0)).await.unwrap();
    assert!(
        matches!(next(&mut again).await.event, Some(Event::Error(e)) if e.code == "RESUME_FAILED")
    );
}

#[tokio::test]
async fn idle_streams_get_heartbeats_and_silent_clients_are_dropped() {
    let app = spawn_app_with(&[
        ("UNIO_PING_INTERVAL", "100ms"),
        ("UNIO_PING_TIMEOUT", "600ms"),
        ("UNIO_RESUME_GRACE", "200ms"),
    ])
    .await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let mut silent = connect(&app, &bob, &meeting).await;
    next(&mut a.events).await;
    // a pings and stays; bob says nothing.
    let pinger = {
        let tx = a.tx.clone();
        tokio::spawn(async move {
            loop {
                if tx
                    .send(event("", client_event::Event::Ping(pb::Ping {})))
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut heartbeats = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), silent.events.next())
            .await
            .unwrap()
        {
            Some(Ok(pb::ServerEvent {
                event: Some(Event::Heartbeat(_)),
                ..
            })) => heartbeats += 1,
            Some(Ok(pb::ServerEvent {
                event: Some(Event::Error(e)),
                ..
            })) => assert_eq!(e.code, "PING_TIMEOUT"),
            Some(Ok(other)) => panic!("{other:?}"),
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert!(heartbeats >= 3, "{heartbeats} heartbeats");
    // After its grace the silent participant is gone, with the reason.
    let left = loop {
        let e = next(&mut a.events).await;
        if let Some(Event::ParticipantLeft(left)) = e.event {
            break left;
        }
    };
    assert_eq!(left.reason, pb::ParticipantLeftReason::TimedOut as i32);
    pinger.abort();
}

#[tokio::test]
async fn a_slow_consumer_is_cut_loose_and_can_resume() {
    let (app, admin) = crate::helpers::spawn_app_with_admin(&[("UNIO_ROOM_QUEUE", "4")]).await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    // Bob reads through a connection of his own with a 64 KiB stream
    // window, so what he does not read backs up into his queue whatever
    // the machine's speed: hyper's default window (2 MiB) holds every
    // offer below, and on a slow machine the server then kept up.
    let narrow = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let (slow_tx, mut slow_events) = open_via(RoomServiceClient::new(narrow), &bob, join(&meeting))
        .await
        .expect("connect");
    let first = next(&mut slow_events).await;
    let Some(Event::Joined(slow_joined)) = first.event else {
        panic!("expected joined, got {first:?}")
    };
    let mut slow = Native {
        tx: slow_tx,
        events: slow_events,
        joined: *slow_joined,
        joined_seq: first.sequence,
    };
    let mut c = connect(&app, &carol, &meeting).await;
    let slow_id = slow.joined.participant_id.clone();
    next(&mut a.events).await;
    next(&mut a.events).await;
    next(&mut slow.events).await;
    // Big offers fill the HTTP/2 windows, then the 4-event queue: bob is
    // not reading.
    let sdp = "s".repeat(60 * 1024);
    for i in 0..30 {
        a.tx.send(event(&format!("o{i}"), offer(&slow_id, &sdp)))
            .await
            .unwrap();
    }
    // The rest of the room is unaffected: carol and a still get events promptly.
    a.tx.send(event(
        "m",
        client_event::Event::MediaState(pb::MediaState {
            audio_enabled: true,
            ..Default::default()
        }),
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let got = next(&mut c.events).await;
    assert!(matches!(got.event, Some(Event::MediaState(_))), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Bob finally reads: what was queued, then the news that he fell behind.
    let mut last_seq = 0;
    // (Generous: under a loaded CI machine the queued 60 KiB offers take a
    // while to drain; this waits for them, it does not time them.)
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(20), slow.events.next())
            .await
            .unwrap()
        {
            Some(Ok(pb::ServerEvent {
                event: Some(Event::Error(e)),
                ..
            })) => assert_eq!(e.code, "SLOW_CONSUMER"),
            Some(Ok(e)) => last_seq = last_seq.max(e.sequence),
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    // ... and resumes from where he got to.
    let (_tx, mut again) = open(
        &app,
        &bob,
        resume(&meeting, &slow.joined.resume_token, last_seq),
    )
    .await
    .unwrap();
    let first = next(&mut again).await;
    assert!(matches!(first.event, Some(Event::Joined(j)) if j.resumed));
    let mut signals = 0;
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(500), again.next()).await
    {
        if matches!(e.event, Some(Event::Signal(_))) {
            signals += 1;
        }
    }
    assert!(signals > 0, "missed offers were replayed");
    let (_, _, metrics) = crate::helpers::scrape_admin(&admin, http::Method::GET, "/metrics").await;
    for line in [
        "unio_room_queue_drops_total 1\n",
        "unio_room_resumes_total 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn late_joiners_see_current_media_state_and_turn_credentials() {
    let app = spawn_app_with(&[
        ("UNIO_TURN_URLS", "turn:turn.example:3478"),
        ("UNIO_TURN_SECRET", "turn-secret"),
    ])
    .await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    a.tx.send(event(
        "m",
        client_event::Event::MediaState(pb::MediaState {
            audio_enabled: true,
            video_enabled: false,
            screen_sharing: true,
        }),
    ))
    .await
    .unwrap();
    settle(&mut a).await;
    let b = connect(&app, &bob, &meeting).await;
    let host_there = b
        .joined
        .participants
        .iter()
        .find(|p| p.participant_id == a.joined.participant_id)
        .unwrap();
    assert_eq!(
        host_there.media_state,
        Some(pb::MediaState {
            audio_enabled: true,
            video_enabled: false,
            screen_sharing: true
        })
    );
    let turn = b
        .joined
        .ice_servers
        .iter()
        .find(|s| s.urls[0].starts_with("turn:"))
        .expect("a TURN server");
    // `<expiry>:<user id>`: the joiner's own id, valid for a while from now.
    let (expiry, user) = turn.username.split_once(':').unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry = expiry.parse::<i64>().unwrap();
    assert!(
        expiry > now + 60 && expiry <= now + 24 * 3600,
        "{expiry} vs {now}"
    );
    let bob_there = b
        .joined
        .participants
        .iter()
        .find(|p| p.participant_id == b.joined.participant_id)
        .expect("the joiner is in its own list");
    assert_eq!(user, bob_there.user_id);
    assert_ne!(user, host_there.user_id);
    assert_eq!(
        turn.credential,
        unio::realtime::ice::turn_password("turn-secret", &turn.username)
    );
}

#[tokio::test]
async fn shutdown_ends_room_streams_with_unavailable_and_closes_attendance() {
    let mut app = spawn_app().await;
    let (meeting, host, _, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let (stop, server) = app.shutdown_handle();
    stop.send(()).unwrap();
    let status = end_of(&mut a.events).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let config = unio::config::Config::from_lookup(|k| app.vars.get(k).cloned()).unwrap();
    let db = unio::open_database(&config).await.unwrap();
    let rows = unio::store::participants::list(&db, &meeting, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].left_at.is_some(),
        "nobody stays online across a restart"
    );
    db.close().await;
}

#[tokio::test]
async fn resuming_without_a_sequence_replays_what_never_reached_the_client() {
    let app = spawn_app_with(&[("UNIO_RESUME_GRACE", "3s")]).await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut a = connect(&app, &host, &meeting).await;
    let b = connect(&app, &bob, &meeting).await;
    let token = b.joined.resume_token.clone();
    next(&mut a.events).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.tx.send(event(
        "t",
        client_event::Event::Typing(pb::Typing { is_typing: true }),
    ))
    .await
    .unwrap();
    settle(&mut a).await;
    let (_tx, mut again) = open(&app, &bob, resume(&meeting, &token, 0)).await.unwrap();
    let joined = next(&mut again).await;
    assert!(matches!(joined.event, Some(Event::Joined(j)) if j.resumed));
    let replayed = next(&mut again).await;
    assert!(
        matches!(replayed.event, Some(Event::Typing(_))),
        "{replayed:?}"
    );
    assert!(
        replayed.sequence > joined.sequence,
        "joined says where the replay starts"
    );
}

#[tokio::test]
async fn a_removal_takes_every_device_and_outlives_the_room_and_a_restart() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::AnyoneWithLink).await;
    let a = connect(&app, &host, &meeting).await;
    let mut phone = connect(&app, &bob, &meeting).await;
    let mut laptop = connect(&app, &bob, &meeting).await;
    let remove = |participant: String, token: &str| {
        let mut client = rooms(&app);
        let request = authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: participant,
            },
            token,
        );
        async move { client.remove_participant(request).await }
    };
    assert_status(
        remove(a.joined.participant_id.clone(), &host).await,
        Code::FailedPrecondition,
        "HOST_NOT_REMOVABLE",
    );
    remove(phone.joined.participant_id.clone(), &host)
        .await
        .unwrap();
    // Both of bob's devices are cut, not just the one named.
    for events in [&mut phone.events, &mut laptop.events] {
        let status = end_of(events).await.unwrap_err();
        assert_eq!(crate::helpers::reason(&status), "KICKED");
    }
    drop(a);
    // The room empties and the server restarts: the removal holds.
    let app = app.restart().await;
    assert_status(
        open(&app, &bob, join(&meeting)).await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    assert_status(
        app.chat()
            .send_message(authed(
                pb::SendMessageRequest {
                    meeting_id: meeting.clone(),
                    text: "let me back in".into(),
                    client_message_id: String::new(),
                },
                &bob,
            ))
            .await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    assert_status(
        app.chat()
            .list_messages(authed(
                pb::ListMessagesRequest {
                    meeting_id: meeting.clone(),
                    ..Default::default()
                },
                &bob,
            ))
            .await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    assert_status(
        unio::proto::pb::file_service_client::FileServiceClient::new(app.channel())
            .list_files(authed(
                pb::ListFilesRequest {
                    meeting_id: meeting.clone(),
                    ..Default::default()
                },
                &bob,
            ))
            .await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    assert_status(
        app.meetings()
            .get_meeting(authed(
                pb::GetMeetingRequest {
                    meeting_id: meeting.clone(),
                },
                &bob,
            ))
            .await,
        Code::PermissionDenied,
        "REMOVED_BY_HOST",
    );
    // The host still gets in.
    connect(&app, &host, &meeting).await;
}
