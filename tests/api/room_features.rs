//! Room features of DESIGN §10 against the real server: co-hosts and what
//! they may and may not do, the lock, the waiting room on both transports,
//! raised hands and reactions, and their bad paths.

use std::time::Duration;

use prost_types::FieldMask;
use tonic::{Code, Streaming};
use unio::proto::pb::{self, client_event, server_event::Event};

use crate::helpers::{TestApp, assert_status, authed, bad_fields, eventually, spawn_app};
use crate::rooms::{connect, end_of, event, next, open, rooms, setup};

/// `token` changes `paths` of meeting `id` to the values in `meeting`.
pub(crate) async fn update(
    app: &TestApp,
    token: &str,
    id: &str,
    meeting: pb::Meeting,
    paths: &[&str],
) -> Result<pb::Meeting, tonic::Status> {
    app.meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: id.into(),
                    ..meeting
                }),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn co_hosts(app: &TestApp, host: &str, id: &str, users: &[&str]) -> pb::Meeting {
    let meeting = pb::Meeting {
        co_host_ids: users.iter().map(|u| u.to_string()).collect(),
        ..Default::default()
    };
    update(app, host, id, meeting, &["co_host_ids"])
        .await
        .expect("name co-hosts")
}

pub(crate) async fn waiting_room(app: &TestApp, token: &str, id: &str, on: bool) {
    let meeting = pb::Meeting {
        waiting_room: on,
        ..Default::default()
    };
    update(app, token, id, meeting, &["waiting_room"])
        .await
        .expect("switch the waiting room");
}

async fn user_id(app: &TestApp, token: &str) -> String {
    app.users()
        .get_me(authed(pb::GetMeRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .id
}

pub(crate) async fn admit(
    app: &TestApp,
    token: &str,
    meeting: &str,
    participant: &str,
) -> Result<(), tonic::Status> {
    rooms(app)
        .admit_participant(authed(
            pb::AdmitParticipantRequest {
                meeting_id: meeting.into(),
                participant_id: participant.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

async fn deny(
    app: &TestApp,
    token: &str,
    meeting: &str,
    participant: &str,
) -> Result<(), tonic::Status> {
    rooms(app)
        .deny_participant(authed(
            pb::DenyParticipantRequest {
                meeting_id: meeting.into(),
                participant_id: participant.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

async fn remove(
    app: &TestApp,
    token: &str,
    meeting: &str,
    participant: &str,
) -> Result<(), tonic::Status> {
    rooms(app)
        .remove_participant(authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.into(),
                participant_id: participant.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

fn meeting_id(id: &str) -> pb::StartMeetingRequest {
    pb::StartMeetingRequest {
        meeting_id: id.into(),
    }
}

/// The next event that is not `what` filtered away (heartbeats aside).
pub(crate) async fn next_of(
    events: &mut Streaming<pb::ServerEvent>,
    wanted: fn(&Event) -> bool,
) -> pb::ServerEvent {
    loop {
        let e = next(events).await;
        if e.event.as_ref().is_some_and(wanted) {
            return e;
        }
    }
}

/// A Connect whose first answer is `waiting`.
pub(crate) async fn wait_native(
    app: &TestApp,
    token: &str,
    meeting: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::ClientEvent>,
    Streaming<pb::ServerEvent>,
    pb::Waiting,
) {
    let (tx, mut events) = open(app, token, crate::rooms::join(meeting))
        .await
        .expect("connect");
    let first = next(&mut events).await;
    let Some(Event::Waiting(waiting)) = first.event else {
        panic!("expected waiting, got {first:?}")
    };
    assert_eq!(first.sequence, 0);
    (tx, events, *waiting)
}

fn lobby_ids(e: &pb::ServerEvent) -> Vec<String> {
    match &e.event {
        Some(Event::Lobby(lobby)) => lobby
            .participants
            .iter()
            .map(|p| p.participant_id.clone())
            .collect(),
        other => panic!("expected lobby, got {other:?}"),
    }
}

fn role_of(joined: &pb::Joined, user: &str) -> pb::ParticipantRole {
    joined
        .participants
        .iter()
        .find(|p| p.user_id == user)
        .map(|p| p.role())
        .expect("listed")
}

#[tokio::test]
async fn co_hosts_have_exactly_the_powers_design_gives_them() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let (_, dave, _) = app.user("dave@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    app.meetings()
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: meeting.clone(),
                emails: vec!["eve@example.com".into()],
            },
            &host,
        ))
        .await
        .unwrap();
    let (bob_id, carol_id, dave_id, eve_id, host_id) = (
        user_id(&app, &bob).await,
        user_id(&app, &carol).await,
        user_id(&app, &dave).await,
        user_id(&app, &eve).await,
        user_id(&app, &host).await,
    );

    // Only the host names co-hosts, and only members.
    let named = pb::Meeting {
        co_host_ids: vec![bob_id.clone()],
        ..Default::default()
    };
    assert_status(
        update(&app, &bob, &meeting, named.clone(), &["co_host_ids"]).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    for (bad, field) in [
        (vec![dave_id.clone()], "meeting.co_host_ids[0]"),
        (
            vec![bob_id.clone(), host_id.clone()],
            "meeting.co_host_ids[1]",
        ),
        (vec!["not-a-uuid".into()], "meeting.co_host_ids[0]"),
        (vec![uuid_like()], "meeting.co_host_ids[0]"),
    ] {
        let status = assert_status(
            update(
                &app,
                &host,
                &meeting,
                pb::Meeting {
                    co_host_ids: bad,
                    ..Default::default()
                },
                &["co_host_ids"],
            )
            .await,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert_eq!(bad_fields(&status), [field]);
    }
    let too_many = pb::Meeting {
        co_host_ids: (0..51).map(|_| uuid_like()).collect(),
        ..Default::default()
    };
    let status = assert_status(
        update(&app, &host, &meeting, too_many, &["co_host_ids"]).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&status), ["meeting.co_host_ids"]);
    let before = app
        .meetings()
        .get_meeting(authed(
            pb::GetMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let m = co_hosts(&app, &host, &meeting, &[&bob_id, &eve_id, &bob_id]).await;
    assert_eq!(m.co_host_ids, [bob_id.clone(), eve_id.clone()]);
    assert_eq!(
        m.revision, before.revision,
        "room settings are not a new schedule"
    );

    // A co-host runs the room, but the schedule stays the host's.
    let renamed = pb::Meeting {
        title: "Mine now".into(),
        ..Default::default()
    };
    assert_status(
        update(&app, &bob, &meeting, renamed, &["title"]).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        update(&app, &bob, &meeting, named.clone(), &["co_host_ids"]).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let locked = pb::Meeting {
        locked: true,
        ..Default::default()
    };
    let m = update(&app, &bob, &meeting, locked, &["locked", "waiting_room"])
        .await
        .expect("a co-host locks");
    assert!(m.locked && !m.waiting_room);
    let unlocked = update(&app, &bob, &meeting, pb::Meeting::default(), &["locked"])
        .await
        .unwrap();
    assert!(!unlocked.locked);
    let cancel = app
        .meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &bob,
        ))
        .await;
    assert_status(cancel, Code::PermissionDenied, "PERMISSION_DENIED");
    let delete = app
        .meetings()
        .delete_meeting(authed(
            pb::DeleteMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &bob,
        ))
        .await;
    assert_status(delete, Code::PermissionDenied, "PERMISSION_DENIED");
    let invite = app
        .meetings()
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: meeting.clone(),
                emails: vec!["dave@example.com".into()],
            },
            &bob,
        ))
        .await;
    assert_status(invite, Code::PermissionDenied, "PERMISSION_DENIED");
    // An attendee does none of it.
    let start = app
        .meetings()
        .start_meeting(authed(meeting_id(&meeting), &carol))
        .await;
    assert_status(start, Code::PermissionDenied, "PERMISSION_DENIED");
    app.meetings()
        .start_meeting(authed(meeting_id(&meeting), &bob))
        .await
        .expect("a co-host starts");

    // In the room: roles, and removals.
    let mut host_room = connect(&app, &host, &meeting).await;
    let mut bob_room = connect(&app, &bob, &meeting).await;
    let mut eve_room = connect(&app, &eve, &meeting).await;
    let mut carol_room = connect(&app, &carol, &meeting).await;
    let joined = &carol_room.joined;
    assert_eq!(role_of(joined, &host_id), pb::ParticipantRole::Host);
    assert_eq!(role_of(joined, &bob_id), pb::ParticipantRole::CoHost);
    assert_eq!(role_of(joined, &carol_id), pb::ParticipantRole::Attendee);
    let carol_pid = joined.participant_id.clone();
    assert_status(
        remove(&app, &carol, &meeting, &bob_room.joined.participant_id).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // A co-host removes attendees, not the host or other co-hosts.
    assert_status(
        remove(&app, &bob, &meeting, &host_room.joined.participant_id).await,
        Code::FailedPrecondition,
        "HOST_NOT_REMOVABLE",
    );
    assert_status(
        remove(&app, &bob, &meeting, &eve_room.joined.participant_id).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    remove(&app, &bob, &meeting, &carol_pid)
        .await
        .expect("a co-host removes an attendee");
    let end = end_of(&mut carol_room.events).await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    // The host removes a co-host, who is one no more.
    remove(&app, &host, &meeting, &eve_room.joined.participant_id)
        .await
        .unwrap();
    let _ = end_of(&mut eve_room.events).await;
    let updated = next_of(
        &mut bob_room.events,
        |e| matches!(e, Event::MeetingUpdated(m) if m.co_host_ids.len() == 1),
    )
    .await;
    let Some(Event::MeetingUpdated(m)) = updated.event else {
        unreachable!()
    };
    assert_eq!(m.co_host_ids, std::slice::from_ref(&bob_id));
    let now = app
        .meetings()
        .get_meeting(authed(
            pb::GetMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.co_host_ids, std::slice::from_ref(&bob_id));
    // Naming co-hosts while the room is live changes roles at once.
    co_hosts(&app, &host, &meeting, &[]).await;
    next_of(
        &mut host_room.events,
        |e| matches!(e, Event::MeetingUpdated(m) if m.co_host_ids.is_empty()),
    )
    .await;
    assert_status(
        admit(&app, &bob, &meeting, &carol_pid).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &bob,
        ))
        .await
        .expect_err("no longer a co-host");
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    drop(bob_room);
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn a_locked_meeting_refuses_new_joins_but_not_resumes_or_co_hosts() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let (_, dave, _) = app.user("dave@example.com").await;
    app.meetings()
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: meeting.clone(),
                emails: vec!["dave@example.com".into()],
            },
            &host,
        ))
        .await
        .unwrap();
    let dave_id = user_id(&app, &dave).await;
    co_hosts(&app, &host, &meeting, &[&dave_id]).await;
    let mut host_room = connect(&app, &host, &meeting).await;
    let bob_room = connect(&app, &bob, &meeting).await;
    let _ = next(&mut host_room.events).await; // bob joined
    let locked = pb::Meeting {
        locked: true,
        ..Default::default()
    };
    update(&app, &host, &meeting, locked, &["locked"])
        .await
        .unwrap();
    let got = next(&mut host_room.events).await;
    let Some(Event::MeetingUpdated(m)) = got.event else {
        panic!("{got:?}")
    };
    assert!(m.locked);
    assert!(got.sequence > 0, "in the room's order");

    let refused = open(&app, &carol, crate::rooms::join(&meeting)).await;
    assert_status(refused, Code::FailedPrecondition, "MEETING_LOCKED");
    let refused = rooms(&app)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &carol,
        ))
        .await;
    assert_status(refused, Code::FailedPrecondition, "MEETING_LOCKED");
    // A co-host passes the lock, and a dropped participant resumes.
    connect(&app, &dave, &meeting).await;
    let token = bob_room.joined.resume_token.clone();
    drop(bob_room);
    let (_tx, mut resumed) = open(&app, &bob, crate::rooms::resume(&meeting, &token, 0))
        .await
        .expect("a resume passes the lock");
    let first = next(&mut resumed).await;
    let Some(Event::Joined(joined)) = first.event else {
        panic!("{first:?}")
    };
    assert!(joined.resumed);
    assert!(joined.meeting.unwrap().locked);
}

#[tokio::test]
async fn the_waiting_room_holds_attendees_until_a_host_decides() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    waiting_room(&app, &host, &meeting, true).await;

    // Nobody to admit yet: the waiter is told, and the host notified.
    let (bob_tx, mut bob_events, waiting) = wait_native(&app, &bob, &meeting).await;
    assert!(!waiting.host_present);
    assert!(waiting.meeting.unwrap().waiting_room);
    let notifications = app.notifications();
    eventually("the host hears someone waits", || {
        let (host, mut n) = (host.clone(), notifications.clone());
        async move {
            n.list_notifications(authed(pb::ListNotificationsRequest::default(), &host))
                .await
                .unwrap()
                .into_inner()
                .notifications
                .iter()
                .any(|n| n.r#type() == pb::NotificationType::LobbyWaiting)
        }
    })
    .await;

    // The host arrives: it sees the lobby, the waiter that it is there.
    let mut host_room = connect(&app, &host, &meeting).await;
    assert_eq!(
        host_room.joined.participants.len(),
        1,
        "waiters are not in the room"
    );
    let lobby = next(&mut host_room.events).await;
    assert_eq!(
        lobby_ids(&lobby),
        std::slice::from_ref(&waiting.participant_id)
    );
    assert_eq!(lobby.sequence, 0);
    let again = next(&mut bob_events).await;
    let Some(Event::Waiting(w)) = again.event else {
        panic!("{again:?}")
    };
    assert!(w.host_present);

    // A waiter may only ping and leave; it hears nothing of the room.
    bob_tx
        .send(event(
            "t",
            client_event::Event::Typing(pb::Typing { is_typing: true }),
        ))
        .await
        .unwrap();
    let refused = next(&mut bob_events).await;
    let Some(Event::Error(err)) = refused.event else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (err.code.as_str(), err.request_id.as_str()),
        ("IN_LOBBY", "t")
    );
    host_room
        .tx
        .send(event(
            "m",
            client_event::Event::MediaState(pb::MediaState {
                audio_enabled: true,
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    bob_tx
        .send(event(
            "c",
            client_event::Event::Chat(pb::ChatSend {
                text: "let me in".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    let refused = next(&mut bob_events).await;
    let Some(Event::Error(err)) = refused.event else {
        panic!("{refused:?}")
    };
    assert_eq!(err.code, "IN_LOBBY");

    // A browser waits too, and the host sees both.
    let mut carol_events = rooms(&app)
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting.clone(),
                ..Default::default()
            },
            &carol,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut carol_events).await;
    let Some(Event::Waiting(carol_waiting)) = first.event else {
        panic!("{first:?}")
    };
    assert!(carol_waiting.host_present);
    let lobby = next(&mut host_room.events).await;
    assert_eq!(
        lobby_ids(&lobby),
        [
            waiting.participant_id.clone(),
            carol_waiting.participant_id.clone()
        ]
    );
    let publish = |e: client_event::Event| {
        let mut client = rooms(&app);
        let request = authed(
            pb::PublishRequest {
                session_id: carol_waiting.session_id.clone(),
                event: Some(event("p", e)),
            },
            &carol,
        );
        async move { client.publish(request).await }
    };
    publish(client_event::Event::Ping(pb::Ping {}))
        .await
        .expect("a waiter pings");
    assert!(matches!(
        next(&mut carol_events).await.event,
        Some(Event::Pong(_))
    ));
    let refused = publish(client_event::Event::Chat(pb::ChatSend {
        text: "hi".into(),
        ..Default::default()
    }))
    .await;
    assert_status(refused, Code::FailedPrecondition, "IN_LOBBY");
    let refused = publish(crate::rooms::offer(&host_room.joined.participant_id, "sdp")).await;
    assert_status(refused, Code::FailedPrecondition, "IN_LOBBY");

    // Only hosts and co-hosts decide, and only about waiters.
    assert_status(
        admit(&app, &carol, &meeting, &waiting.participant_id).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        admit(&app, &host, &meeting, &host_room.joined.participant_id).await,
        Code::NotFound,
        "PARTICIPANT_NOT_WAITING",
    );
    assert_status(
        deny(&app, &host, &meeting, &uuid_like()).await,
        Code::NotFound,
        "PARTICIPANT_NOT_WAITING",
    );
    let status = assert_status(
        admit(&app, &host, &meeting, "nope").await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&status), ["participant_id"]);

    // Admitted: joined, in the room's order, seen by everyone.
    admit(&app, &host, &meeting, &waiting.participant_id)
        .await
        .unwrap();
    let first = next_of(&mut bob_events, |e| matches!(e, Event::Joined(_))).await;
    let Some(Event::Joined(bob_joined)) = first.event else {
        unreachable!()
    };
    assert_eq!(bob_joined.participant_id, waiting.participant_id);
    assert_eq!(bob_joined.session_id, waiting.session_id);
    assert_eq!(bob_joined.participants.len(), 2);
    assert!(!bob_joined.resume_token.is_empty());
    let seen = next_of(&mut host_room.events, |e| {
        matches!(e, Event::ParticipantJoined(_))
    })
    .await;
    assert!(seen.sequence > 0);
    let lobby = next_of(&mut host_room.events, |e| matches!(e, Event::Lobby(_))).await;
    assert_eq!(
        lobby_ids(&lobby),
        std::slice::from_ref(&carol_waiting.participant_id)
    );
    // The admitted now talks to the room.
    bob_tx
        .send(event(
            "o",
            crate::rooms::offer(&host_room.joined.participant_id, "sdp"),
        ))
        .await
        .unwrap();
    let got = next_of(&mut host_room.events, |e| matches!(e, Event::Signal(_))).await;
    let Some(Event::Signal(signal)) = got.event else {
        unreachable!()
    };
    assert_eq!(signal.from_participant_id, bob_joined.participant_id);

    // Denied: told, and cut.
    deny(&app, &host, &meeting, &carol_waiting.participant_id)
        .await
        .unwrap();
    let rest = end_of(&mut carol_events).await.expect("a clean end");
    let Some(Event::Error(err)) = &rest.last().and_then(|e| e.event.clone()) else {
        panic!("{rest:?}")
    };
    assert_eq!(err.code, "LOBBY_DENIED");
    let lobby = next_of(&mut host_room.events, |e| matches!(e, Event::Lobby(_))).await;
    assert!(lobby_ids(&lobby).is_empty());

    // The admitted resumes without the lobby.
    drop(bob_tx);
    drop(bob_events);
    let (_tx, mut resumed) = open(
        &app,
        &bob,
        crate::rooms::resume(&meeting, &bob_joined.resume_token, 0),
    )
    .await
    .unwrap();
    let first = next(&mut resumed).await;
    let Some(Event::Joined(j)) = first.event else {
        panic!("{first:?}")
    };
    assert!(j.resumed);

    // A waiter that goes away leaves the lobby.
    let (carol_tx, carol_events, _) = wait_native(&app, &carol, &meeting).await;
    let lobby = next_of(&mut host_room.events, |e| matches!(e, Event::Lobby(_))).await;
    assert_eq!(lobby_ids(&lobby).len(), 1);
    drop((carol_tx, carol_events));
    let lobby = next_of(&mut host_room.events, |e| matches!(e, Event::Lobby(_))).await;
    assert!(lobby_ids(&lobby).is_empty());
    // One user waits on at most three devices.
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(wait_native(&app, &carol, &meeting).await);
    }
    let refused = open(&app, &carol, crate::rooms::join(&meeting)).await;
    assert_status(refused, Code::ResourceExhausted, "LOBBY_FULL");
    // The meeting ends: waiters hear it, and their streams end.
    app.meetings()
        .start_meeting(authed(meeting_id(&meeting), &host))
        .await
        .unwrap();
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    for (_tx, mut events, _) in devices {
        let rest = end_of(&mut events).await.expect("a clean end");
        assert!(
            rest.iter().any(|e| matches!(
                &e.event,
                Some(Event::MeetingStatus(m)) if m.status == pb::MeetingStatus::Completed as i32
            )),
            "{rest:?}"
        );
    }
}

#[tokio::test]
async fn switching_the_waiting_room_off_lets_new_joins_straight_in() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    waiting_room(&app, &host, &meeting, true).await;
    wait_native(&app, &bob, &meeting).await;
    waiting_room(&app, &host, &meeting, false).await;
    connect(&app, &bob, &meeting).await;
}

#[tokio::test]
async fn hands_queue_in_order_and_reactions_are_checked() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let mut host_room = connect(&app, &host, &meeting).await;
    let mut bob_room = connect(&app, &bob, &meeting).await;
    let mut carol_room = connect(&app, &carol, &meeting).await;
    let hand = |raised: bool| client_event::Event::RaiseHand(pb::RaiseHand { raised });
    let next_hand = |e: &Event| matches!(e, Event::Hand(_));

    bob_room.tx.send(event("b", hand(true))).await.unwrap();
    let got = next_of(&mut host_room.events, next_hand).await;
    let Some(Event::Hand(bob_hand)) = got.event else {
        unreachable!()
    };
    assert!(bob_hand.raised && bob_hand.raise_time.is_some());
    assert_eq!(bob_hand.participant_id, bob_room.joined.participant_id);
    // Everyone, the raiser too, sees it.
    next_of(&mut bob_room.events, next_hand).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    carol_room.tx.send(event("c", hand(true))).await.unwrap();
    let got = next_of(&mut host_room.events, next_hand).await;
    let Some(Event::Hand(carol_hand)) = got.event else {
        unreachable!()
    };
    // Raising again keeps the place in line (no event).
    bob_room.tx.send(event("b2", hand(true))).await.unwrap();
    crate::rooms::settle(&mut bob_room).await;

    // A late joiner sees the queue.
    let late = connect(&app, &host, &meeting).await;
    let queue: Vec<(String, prost_types::Timestamp)> = {
        let mut raised: Vec<_> = late
            .joined
            .participants
            .iter()
            .filter_map(|p| Some((p.participant_id.clone(), p.hand_raise_time?)))
            .collect();
        raised.sort_by_key(|(_, t)| (t.seconds, t.nanos));
        raised
    };
    assert_eq!(
        queue.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        [
            bob_room.joined.participant_id.clone(),
            carol_room.joined.participant_id.clone()
        ]
    );
    assert_eq!(queue[0].1, bob_hand.raise_time.unwrap());
    assert_eq!(queue[1].1, carol_hand.raise_time.unwrap());

    // Only hosts and co-hosts lower others' hands.
    let lower = |id: &str| {
        client_event::Event::LowerHand(pb::LowerHand {
            participant_id: id.into(),
        })
    };
    carol_room
        .tx
        .send(event("l", lower(&bob_room.joined.participant_id)))
        .await
        .unwrap();
    let refused = next_of(&mut carol_room.events, |e| matches!(e, Event::Error(_))).await;
    let Some(Event::Error(err)) = refused.event else {
        unreachable!()
    };
    assert_eq!(
        (err.code.as_str(), err.request_id.as_str()),
        ("NOT_ALLOWED", "l")
    );
    host_room
        .tx
        .send(event("h", lower(&uuid_like())))
        .await
        .unwrap();
    let refused = next_of(&mut host_room.events, |e| matches!(e, Event::Error(_))).await;
    let Some(Event::Error(err)) = refused.event else {
        unreachable!()
    };
    assert_eq!(err.code, "UNKNOWN_PARTICIPANT");
    host_room
        .tx
        .send(event("h", lower(&bob_room.joined.participant_id)))
        .await
        .unwrap();
    let got = next_of(&mut bob_room.events, next_hand).await;
    let Some(Event::Hand(lowered)) = got.event else {
        unreachable!()
    };
    assert!(!lowered.raised && lowered.raise_time.is_none());
    assert_eq!(lowered.participant_id, bob_room.joined.participant_id);

    // Reactions: allowed emoji reach everyone, others are refused.
    let react = |emoji: &str| {
        client_event::Event::Reaction(pb::SendReaction {
            emoji: emoji.into(),
        })
    };
    carol_room.tx.send(event("r", react("🎉"))).await.unwrap();
    let got = next_of(&mut bob_room.events, |e| matches!(e, Event::Reaction(_))).await;
    let Some(Event::Reaction(reaction)) = got.event else {
        unreachable!()
    };
    assert_eq!(
        (reaction.participant_id.as_str(), reaction.emoji.as_str()),
        (carol_room.joined.participant_id.as_str(), "🎉")
    );
    carol_room
        .tx
        .send(event("bad", react("<script>")))
        .await
        .unwrap();
    let refused = next_of(&mut carol_room.events, |e| matches!(e, Event::Error(_))).await;
    let Some(Event::Error(err)) = refused.event else {
        unreachable!()
    };
    assert_eq!(
        (err.code.as_str(), err.request_id.as_str()),
        ("INVALID_REACTION", "bad")
    );
    // Bursts of twice the rate (5/s) pass; more do not.
    for i in 0..12 {
        carol_room
            .tx
            .send(event(&format!("flood{i}"), react("👍")))
            .await
            .unwrap();
    }
    let limited = next_of(&mut carol_room.events, |e| matches!(e, Event::Error(_))).await;
    let Some(Event::Error(err)) = limited.event else {
        unreachable!()
    };
    assert_eq!(err.code, "RATE_LIMITED");

    // Over Publish, a bad emoji is INVALID_ARGUMENT naming it.
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
    let Some(Event::Joined(joined)) = next(&mut browser).await.event else {
        panic!()
    };
    let status = assert_status(
        rooms(&app)
            .publish(authed(
                pb::PublishRequest {
                    session_id: joined.session_id.clone(),
                    event: Some(event("x", react("🍆"))),
                },
                &bob,
            ))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&status), ["event.reaction.emoji"]);
    let status = assert_status(
        rooms(&app)
            .publish(authed(
                pb::PublishRequest {
                    session_id: joined.session_id.clone(),
                    event: Some(event("x", lower(&carol_room.joined.participant_id))),
                },
                &bob,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    drop(status);

    // The queue survives a resume: carol's hand is still up.
    let token = carol_room.joined.resume_token.clone();
    drop(carol_room);
    let (_tx, mut resumed) = open(&app, &carol, crate::rooms::resume(&meeting, &token, 0))
        .await
        .unwrap();
    let Some(Event::Joined(j)) = next(&mut resumed).await.event else {
        panic!()
    };
    let me = j
        .participants
        .iter()
        .find(|p| p.participant_id == j.participant_id)
        .unwrap();
    assert_eq!(me.hand_raise_time, carol_hand.raise_time);
    drop((browser, late));
}
