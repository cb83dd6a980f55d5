//! Live access (DESIGN §8): open streams end within a second of the change
//! that withdraws their access, with the status a new call would get, and
//! streams whose access still holds go on.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Status, Streaming};
use unio::proto::pb::{
    self, client_event, file_service_client::FileServiceClient,
    room_service_client::RoomServiceClient, server_event::Event, upload_file_request,
};

use crate::helpers::{PASSWORD, TestApp, authed, reason, spawn_app};

/// Bob's three kinds of long-lived stream in one meeting.
pub(crate) struct Streams {
    _connect_tx: mpsc::Sender<pb::ClientEvent>,
    pub(crate) connect: Streaming<pb::ServerEvent>,
    pub(crate) connect_participant: String,
    pub(crate) subscribe: Streaming<pb::ServerEvent>,
    pub(crate) watch: Streaming<pb::Notification>,
}

async fn joined(events: &mut Streaming<pb::ServerEvent>) -> pb::Joined {
    loop {
        let event = events.next().await.unwrap().unwrap();
        if let Some(Event::Joined(joined)) = event.event {
            return *joined;
        }
    }
}

pub(crate) async fn open_streams(app: &TestApp, token: &str, meeting_id: &str) -> Streams {
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ClientEvent {
        request_id: "join".into(),
        event: Some(client_event::Event::Join(pb::JoinRoom {
            meeting_id: meeting_id.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut rooms = RoomServiceClient::new(app.channel());
    let mut connect = rooms
        .connect(authed(ReceiverStream::new(rx), token))
        .await
        .unwrap()
        .into_inner();
    let connect_participant = joined(&mut connect).await.participant_id;
    let mut subscribe = rooms
        .subscribe(authed(
            pb::SubscribeRequest {
                meeting_id: meeting_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    joined(&mut subscribe).await;
    let watch = app
        .notifications()
        .watch_notifications(authed(pb::WatchNotificationsRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    Streams {
        _connect_tx: tx,
        connect,
        connect_participant,
        subscribe,
        watch,
    }
}

/// How `stream` ends, which must be within a second.
pub(crate) async fn ending<T: std::fmt::Debug>(stream: &mut Streaming<T>) -> Status {
    tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ends within a second")
}

pub(crate) async fn all_end_with(streams: &mut Streams, code: Code, why: &str) {
    for status in [
        ending(&mut streams.connect).await,
        ending(&mut streams.subscribe).await,
        ending(&mut streams.watch).await,
    ] {
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(reason(&status), why, "{status:?}");
    }
}

/// Whether `stream` stays open (no status) for a while.
pub(crate) async fn stays_open<T>(stream: &mut Streaming<T>) -> bool {
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
    });
    quiet.await.is_err()
}

/// A host with a meeting bob is invited to; (meeting, host, bob, bob's id).
pub(crate) async fn setup(app: &TestApp) -> (String, String, String, String) {
    let (_, host, _) = app.user("host@example.com").await;
    let (bob_user, bob, _) = app.user("bob@example.com").await;
    let meeting = app
        .meeting(
            &host,
            "Live",
            &["bob@example.com"],
            pb::JoinPolicy::InvitedOnly,
        )
        .await;
    (meeting.id, host, bob, bob_user.id)
}

async fn second_session(app: &TestApp, email: &str) -> String {
    app.auth()
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

#[tokio::test]
async fn logout_ends_the_sessions_streams_and_the_room_sees_it_leave() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app).await;
    let mut host_streams = open_streams(&app, &host, &meeting).await;
    let mut streams = open_streams(&app, &bob, &meeting).await;

    app.auth()
        .logout(authed(pb::LogoutRequest::default(), &bob))
        .await
        .unwrap();
    all_end_with(&mut streams, Code::Unauthenticated, "TOKEN_REVOKED").await;

    // Bob's participants leave at once, without a grace period.
    let left = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let event = host_streams.connect.next().await.unwrap().unwrap();
            if let Some(Event::ParticipantLeft(left)) = event.event
                && left.participant_id == streams.connect_participant
            {
                return left;
            }
        }
    })
    .await
    .expect("the room hears bob leave within a second");
    assert_eq!(left.reason, pb::ParticipantLeftReason::Disconnected as i32);
    assert!(stays_open(&mut host_streams.watch).await);
}

#[tokio::test]
async fn a_password_change_elsewhere_ends_this_sessions_streams_only() {
    let app = spawn_app().await;
    let (meeting, _host, bob, _) = setup(&app).await;
    let mut old = open_streams(&app, &bob, &meeting).await;
    let other = second_session(&app, "bob@example.com").await;
    let mut kept = app
        .notifications()
        .watch_notifications(authed(pb::WatchNotificationsRequest {}, &other))
        .await
        .unwrap()
        .into_inner();

    app.users()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "a brand new passphrase 7".into(),
            },
            &other,
        ))
        .await
        .unwrap();
    all_end_with(&mut old, Code::Unauthenticated, "TOKEN_REVOKED").await;
    assert!(stays_open(&mut kept).await, "the changing session stays");
}

#[tokio::test]
async fn deactivation_ends_every_stream_of_the_user() {
    let app = spawn_app().await;
    let (meeting, _host, bob, bob_id) = setup(&app).await;
    let (_, admin) = app.admin("root@example.com").await;
    let mut streams = open_streams(&app, &bob, &meeting).await;

    app.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: bob_id,
                    is_active: false,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["is_active".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap();
    all_end_with(&mut streams, Code::Unauthenticated, "ACCOUNT_DISABLED").await;
}

#[tokio::test]
async fn deleting_the_account_ends_its_streams() {
    let app = spawn_app().await;
    let (meeting, _host, bob, _) = setup(&app).await;
    let mut streams = open_streams(&app, &bob, &meeting).await;
    app.users()
        .delete_user(authed(pb::DeleteUserRequest::default(), &bob))
        .await
        .unwrap();
    all_end_with(&mut streams, Code::Unauthenticated, "TOKEN_REVOKED").await;
}

/// Starts an upload to `meeting` and keeps its request stream open.
async fn open_upload(
    app: &TestApp,
    token: &str,
    meeting: &str,
) -> (
    mpsc::Sender<pb::UploadFileRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<pb::SharedFile>, Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::UploadFileRequest {
        data: Some(upload_file_request::Data::Metadata(pb::FileMetadata {
            meeting_id: meeting.into(),
            filename: "notes.txt".into(),
            content_type: String::new(),
            size_bytes: None,
            sha256: String::new(),
        })),
    })
    .await
    .unwrap();
    tx.send(pb::UploadFileRequest {
        data: Some(upload_file_request::Data::Chunk(b"first part".to_vec())),
    })
    .await
    .unwrap();
    let mut files = FileServiceClient::new(app.channel());
    let request = authed(ReceiverStream::new(rx), token);
    let call = tokio::spawn(async move { files.upload_file(request).await });
    (tx, call)
}

#[tokio::test]
async fn a_removed_user_loses_the_upload_in_progress() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app).await;
    let streams = open_streams(&app, &bob, &meeting).await;
    let (_tx, upload) = open_upload(&app, &bob, &meeting).await;
    // The upload is under way (its first chunk read) before the removal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!upload.is_finished());

    RoomServiceClient::new(app.channel())
        .remove_participant(authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: streams.connect_participant.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(1), upload)
        .await
        .expect("the upload ends within a second")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason(&status), "REMOVED_BY_HOST");
}

#[tokio::test]
async fn deleting_the_meeting_ends_its_uploads() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app).await;
    let (_tx, upload) = open_upload(&app, &bob, &meeting).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.meetings()
        .delete_meeting(authed(
            pb::DeleteMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(1), upload)
        .await
        .expect("the upload ends within a second")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(reason(&status), "MEETING_NOT_FOUND");
}

#[tokio::test]
async fn a_join_sent_after_logout_gets_no_room() {
    let app = spawn_app().await;
    let (meeting, _host, bob, _) = setup(&app).await;
    // Connect is authenticated when it opens; the join comes later.
    let (tx, rx) = mpsc::channel(8);
    let mut rooms = RoomServiceClient::new(app.channel());
    let request = authed(ReceiverStream::new(rx), &bob);
    let call = tokio::spawn(async move { rooms.connect(request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.auth()
        .logout(authed(pb::LogoutRequest::default(), &bob))
        .await
        .unwrap();
    tx.send(pb::ClientEvent {
        request_id: "join".into(),
        event: Some(client_event::Event::Join(pb::JoinRoom {
            meeting_id: meeting,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let status = match call.await.unwrap() {
        Err(status) => status,
        Ok(mut response) => ending(response.get_mut()).await,
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), "TOKEN_REVOKED");
}

/// Whether a room stream ends (a status or its end) within a second.
async fn room_ends(stream: &mut Streaming<pb::ServerEvent>) {
    tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await
    .expect("the room stream ends within a second");
}

#[tokio::test]
async fn deleting_a_host_takes_their_meetings_from_everyone_at_once() {
    let app = spawn_app().await;
    let (meeting, host, bob, _) = setup(&app).await;
    let get = |token: String| {
        let mut meetings = app.meetings();
        let meeting = meeting.clone();
        async move {
            meetings
                .get_meeting(authed(
                    pb::GetMeetingRequest {
                        meeting_id: meeting,
                    },
                    &token,
                ))
                .await
        }
    };
    // Bob has read it (so memory holds it for him) and is in its room.
    get(bob.clone()).await.unwrap();
    let mut streams = open_streams(&app, &bob, &meeting).await;
    let (_tx, upload) = open_upload(&app, &bob, &meeting).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.users()
        .delete_user(authed(pb::DeleteUserRequest::default(), &host))
        .await
        .unwrap();
    let status = get(bob.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    room_ends(&mut streams.connect).await;
    room_ends(&mut streams.subscribe).await;
    let status = tokio::time::timeout(Duration::from_secs(1), upload)
        .await
        .expect("the upload ends within a second")
        .unwrap()
        .unwrap_err();
    assert_eq!(reason(&status), "MEETING_NOT_FOUND", "{status:?}");
    assert!(
        stays_open(&mut streams.watch).await,
        "bob's own watch goes on"
    );
}

#[tokio::test]
async fn every_change_to_a_meeting_is_seen_by_the_next_call() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let meeting = app
        .meeting(&host, "Before", &[], pb::JoinPolicy::InvitedOnly)
        .await
        .id;
    let mut meetings = app.meetings();
    let get = |token: &str| {
        authed(
            pb::GetMeetingRequest {
                meeting_id: meeting.clone(),
            },
            token,
        )
    };
    let send = |token: &str| {
        authed(
            pb::SendMessageRequest {
                meeting_id: meeting.clone(),
                text: "hello".into(),
                ..Default::default()
            },
            token,
        )
    };
    // Refused, and remembered as refused...
    for _ in 0..2 {
        let status = meetings.get_meeting(get(&carol)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // ...until the host invites her: the very next call lets her in.
    let invite = meetings
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: meeting.clone(),
                emails: vec!["carol@example.com".into()],
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    meetings.get_meeting(get(&carol)).await.unwrap();
    app.chat().send_message(send(&carol)).await.unwrap();

    // An edit is seen at once.
    meetings
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: meeting.clone(),
                    title: "After".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    let seen = meetings
        .get_meeting(get(&carol))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.title, "After");

    // Declining ends her membership: no more chat.
    meetings
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: invite.id,
                response: pb::InviteStatus::Declined as i32,
            },
            &carol,
        ))
        .await
        .unwrap();
    let status = app.chat().send_message(send(&carol)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}
