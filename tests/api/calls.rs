//! CallService: the call lifecycle with durations, the missed timeout,
//! permissions, and `call` events pushed to the room.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Streaming};
use unio::proto::pb::{
    self, call_service_client::CallServiceClient, client_event,
    room_service_client::RoomServiceClient, server_event::Event,
};

use crate::helpers::{TestApp, assert_status, authed, bad_fields, spawn_app, spawn_app_with};

fn calls(app: &TestApp) -> CallServiceClient<tonic::transport::Channel> {
    CallServiceClient::new(app.channel())
}

struct People {
    meeting: String,
    host: String,
    bob: String,
    bob_id: String,
    carol: String,
    eve: String,
}

async fn setup(app: &TestApp) -> People {
    let (_, host, _) = app.user("host@example.com").await;
    let (bob_user, bob, _) = app.user("bob@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let meeting = app
        .meeting(
            &host,
            "Calls",
            &["bob@example.com", "carol@example.com"],
            pb::JoinPolicy::InvitedOnly,
        )
        .await
        .id;
    People {
        meeting,
        host,
        bob,
        bob_id: bob_user.id,
        carol,
        eve,
    }
}

/// Joins the room over Connect and returns the event stream after `joined`.
async fn watch_room(
    app: &TestApp,
    token: &str,
    meeting: &str,
) -> (mpsc::Sender<pb::ClientEvent>, Streaming<pb::ServerEvent>) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ClientEvent {
        request_id: String::new(),
        event: Some(client_event::Event::Join(pb::JoinRoom {
            meeting_id: meeting.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut events = RoomServiceClient::new(app.channel())
        .connect(authed(ReceiverStream::new(rx), token))
        .await
        .unwrap()
        .into_inner();
    let joined = events.next().await.unwrap().unwrap();
    assert!(matches!(joined.event, Some(Event::Joined(_))));
    (tx, events)
}

async fn next_call(events: &mut Streaming<pb::ServerEvent>) -> pb::CallSession {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Event::Call(call)) = e.event {
            return *call;
        }
    }
}

#[tokio::test]
async fn a_call_rings_is_answered_and_ends_with_its_duration() {
    let app = spawn_app().await;
    let p = setup(&app).await;
    let (_tx, mut room) = watch_room(&app, &p.bob, &p.meeting).await;

    let call = calls(&app)
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: p.meeting.clone(),
                callee_id: p.bob_id.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(call.status, pb::CallStatus::Ringing as i32);
    assert!(call.answer_time.is_none());
    // The call started the meeting, and the room heard both.
    let meeting = app
        .meetings()
        .get_meeting(authed(
            pb::GetMeetingRequest {
                meeting_id: p.meeting.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meeting.status, pb::MeetingStatus::Ongoing as i32);
    let pushed = next_call(&mut room).await;
    assert_eq!(
        (pushed.id.as_str(), pushed.status),
        (call.id.as_str(), pb::CallStatus::Ringing as i32)
    );

    let answered = calls(&app)
        .answer_call(authed(
            pb::AnswerCallRequest {
                call_id: call.id.clone(),
                accept: true,
            },
            &p.bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.status, pb::CallStatus::Active as i32);
    assert!(answered.answer_time.is_some());
    assert_eq!(
        next_call(&mut room).await.status,
        pb::CallStatus::Active as i32
    );

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let ended = calls(&app)
        .end_call(authed(
            pb::EndCallRequest {
                call_id: call.id.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.status, pb::CallStatus::Ended as i32);
    assert!(ended.end_time.is_some());
    assert_eq!(ended.duration_seconds, 1);
    assert_eq!(
        next_call(&mut room).await.status,
        pb::CallStatus::Ended as i32
    );

    assert_status(
        calls(&app)
            .end_call(authed(
                pb::EndCallRequest {
                    call_id: call.id.clone(),
                },
                &p.bob,
            ))
            .await,
        Code::FailedPrecondition,
        "INVALID_STATUS_TRANSITION",
    );
    let fetched = calls(&app)
        .get_call(authed(
            pb::GetCallRequest {
                call_id: call.id.clone(),
            },
            &p.carol,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, ended);
}

#[tokio::test]
async fn room_calls_are_live_at_once_and_declines_are_recorded() {
    let app = spawn_app().await;
    let p = setup(&app).await;
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: p.meeting.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap();
    let room_call = calls(&app)
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: p.meeting.clone(),
                callee_id: String::new(),
            },
            &p.bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(room_call.status, pb::CallStatus::Active as i32);
    assert!(room_call.answer_time.is_some());
    let ended = calls(&app)
        .end_call(authed(
            pb::EndCallRequest {
                call_id: room_call.id.clone(),
            },
            &p.bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.status, pb::CallStatus::Ended as i32);

    let ringing = calls(&app)
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: p.meeting.clone(),
                callee_id: p.bob_id.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    let declined = calls(&app)
        .answer_call(authed(
            pb::AnswerCallRequest {
                call_id: ringing.id.clone(),
                accept: false,
            },
            &p.bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined.status, pb::CallStatus::Declined as i32);
    assert_eq!(declined.duration_seconds, 0);
    assert_status(
        calls(&app)
            .answer_call(authed(
                pb::AnswerCallRequest {
                    call_id: ringing.id.clone(),
                    accept: true,
                },
                &p.bob,
            ))
            .await,
        Code::FailedPrecondition,
        "INVALID_STATUS_TRANSITION",
    );

    let list = calls(&app)
        .list_calls(authed(
            pb::ListCallsRequest {
                meeting_id: p.meeting.clone(),
                page_size: 1,
                page_token: String::new(),
            },
            &p.carol,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.calls[0].id, ringing.id, "newest first");
    let rest = calls(&app)
        .list_calls(authed(
            pb::ListCallsRequest {
                meeting_id: p.meeting.clone(),
                page_size: 1,
                page_token: list.next_page_token,
            },
            &p.carol,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.calls[0].id, room_call.id);
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn an_unanswered_call_becomes_missed() {
    let app = spawn_app_with(&[("UNIO_CALL_RING_TIMEOUT", "300ms")]).await;
    let p = setup(&app).await;
    let (_tx, mut room) = watch_room(&app, &p.host, &p.meeting).await;
    let call = calls(&app)
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: p.meeting.clone(),
                callee_id: p.bob_id.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_call(&mut room).await.status,
        pb::CallStatus::Ringing as i32
    );
    let missed = next_call(&mut room).await;
    assert_eq!(
        (missed.id.as_str(), missed.status),
        (call.id.as_str(), pb::CallStatus::Missed as i32)
    );
    assert!(missed.end_time.is_some());
    assert_status(
        calls(&app)
            .answer_call(authed(
                pb::AnswerCallRequest {
                    call_id: call.id.clone(),
                    accept: true,
                },
                &p.bob,
            ))
            .await,
        Code::FailedPrecondition,
        "INVALID_STATUS_TRANSITION",
    );
}

#[tokio::test]
async fn calls_belong_to_their_parties_and_members() {
    let app = spawn_app().await;
    let p = setup(&app).await;
    let (eve_user, _, _) = (
        app.users()
            .get_me(authed(pb::GetMeRequest {}, &p.eve))
            .await
            .unwrap()
            .into_inner(),
        (),
        (),
    );
    let start = |callee: &str, token: &str| {
        let mut client = calls(&app);
        let request = authed(
            pb::StartCallRequest {
                meeting_id: p.meeting.clone(),
                callee_id: callee.into(),
            },
            token,
        );
        async move { client.start_call(request).await }
    };
    assert_status(
        start("", &p.eve).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let status = start(&eve_user.id, &p.host).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["callee_id"]);
    let host_id = app
        .users()
        .get_me(authed(pb::GetMeRequest {}, &p.host))
        .await
        .unwrap()
        .into_inner()
        .id;
    let status = start(&host_id, &p.host).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["callee_id"]);
    let status = start("not-a-uuid", &p.host).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["callee_id"]);

    let call = start(&p.bob_id, &p.host).await.unwrap().into_inner();
    assert_status(
        calls(&app)
            .answer_call(authed(
                pb::AnswerCallRequest {
                    call_id: call.id.clone(),
                    accept: true,
                },
                &p.carol,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        calls(&app)
            .end_call(authed(
                pb::EndCallRequest {
                    call_id: call.id.clone(),
                },
                &p.carol,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        calls(&app)
            .get_call(authed(
                pb::GetCallRequest {
                    call_id: call.id.clone(),
                },
                &p.eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        calls(&app)
            .list_calls(authed(
                pb::ListCallsRequest {
                    meeting_id: p.meeting.clone(),
                    ..Default::default()
                },
                &p.eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        calls(&app)
            .get_call(authed(
                pb::GetCallRequest {
                    call_id: uuid::Uuid::now_v7().to_string(),
                },
                &p.host,
            ))
            .await,
        Code::NotFound,
        "CALL_NOT_FOUND",
    );

    // No calls once the meeting is over.
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: p.meeting.clone(),
            },
            &p.host,
        ))
        .await
        .unwrap();
    assert_status(
        start("", &p.host).await,
        Code::FailedPrecondition,
        "MEETING_NOT_JOINABLE",
    );
}

#[tokio::test]
async fn an_invitee_cannot_start_the_hosts_meeting_with_a_call() {
    let app = spawn_app().await;
    let p = setup(&app).await;
    for callee in [String::new(), p.bob_id.clone()] {
        let token = if callee.is_empty() { &p.bob } else { &p.carol };
        assert_status(
            calls(&app)
                .start_call(authed(
                    pb::StartCallRequest {
                        meeting_id: p.meeting.clone(),
                        callee_id: callee,
                    },
                    token,
                ))
                .await,
            Code::FailedPrecondition,
            "MEETING_NOT_STARTED",
        );
    }
    // The meeting is still the host's to reschedule or cancel.
    let meeting = app
        .meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: p.meeting.clone(),
                ..Default::default()
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meeting.status, pb::MeetingStatus::Cancelled as i32);
    let listed = calls(&app)
        .list_calls(authed(
            pb::ListCallsRequest {
                meeting_id: p.meeting.clone(),
                ..Default::default()
            },
            &p.host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.calls.is_empty(), "nothing half-stored");
}

#[tokio::test]
async fn ringing_a_callee_again_and_again_rings_once_and_is_bounded() {
    let app = spawn_app().await;
    let p = setup(&app).await;
    let ring = |token: &str| {
        let mut client = calls(&app);
        let request = authed(
            pb::StartCallRequest {
                meeting_id: p.meeting.clone(),
                callee_id: p.bob_id.clone(),
            },
            token,
        );
        async move { client.start_call(request).await }
    };
    let first = ring(&p.host).await.unwrap().into_inner();
    for _ in 0..5 {
        let again = ring(&p.host).await.unwrap().into_inner();
        assert_eq!(again.id, first.id, "the ringing call answers again");
    }
    let incoming = app
        .notifications()
        .list_notifications(authed(
            pb::ListNotificationsRequest {
                types: vec![pb::NotificationType::IncomingCall as i32],
                ..Default::default()
            },
            &p.bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(incoming.notifications.len(), 1, "one INCOMING_CALL");

    // A caller who keeps hanging up and calling again is slowed down.
    let mut limited = None;
    for _ in 0..12 {
        let call = match ring(&p.host).await {
            Ok(call) => call.into_inner(),
            Err(status) => {
                limited = Some(status);
                break;
            }
        };
        calls(&app)
            .end_call(authed(pb::EndCallRequest { call_id: call.id }, &p.host))
            .await
            .unwrap();
    }
    let status = limited.expect("the caller is limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(crate::helpers::reason(&status), "TOO_MANY_CALLS");
}
