//! The stranger matrix: every meeting-, call-, file-, invite- and
//! notification-scoped RPC, called as each kind of user, against a table of
//! who may do what. The table's meeting rules are those of
//! `domain::meeting::Access` (each role's `Relation` is evaluated by the
//! real rule); the rest (call parties, notification owners) are stated here.
//!
//! "Allowed" means the call got past authorization: any answer but
//! PERMISSION_DENIED, NOT_FOUND or UNAUTHENTICATED. "Refused" means exactly
//! PERMISSION_DENIED or NOT_FOUND, never a leak of the resource.

use std::{future::Future, pin::Pin, time::Duration};

use prost_types::FieldMask;
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};
use unio::{
    domain::meeting::{Access, InviteStatus, JoinPolicy, MeetingStatus, Relation},
    proto::pb::{
        self, call_service_client::CallServiceClient, file_service_client::FileServiceClient,
        room_service_client::RoomServiceClient,
    },
};

use crate::helpers::{TestApp, authed, spawn_app};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Host,
    CoHost,
    Invitee,
    Decliner,
    Removed,
    Stranger,
    Admin,
}

const ROLES: [Role; 7] = [
    Role::Host,
    Role::CoHost,
    Role::Invitee,
    Role::Decliner,
    Role::Removed,
    Role::Stranger,
    Role::Admin,
];

impl Role {
    /// How this role stands to the test meeting, as the server records it.
    fn relation(self) -> Relation {
        let nobody = Relation {
            is_host: false,
            is_co_host: false,
            is_admin: false,
            invite: None,
            attended: false,
            removed: false,
        };
        match self {
            Role::Host => Relation {
                is_host: true,
                attended: true,
                ..nobody
            },
            Role::CoHost => Relation {
                is_co_host: true,
                invite: Some(InviteStatus::Accepted),
                ..nobody
            },
            Role::Invitee => Relation {
                invite: Some(InviteStatus::Accepted),
                attended: true,
                ..nobody
            },
            Role::Decliner => Relation {
                invite: Some(InviteStatus::Declined),
                ..nobody
            },
            Role::Removed => Relation {
                invite: Some(InviteStatus::Accepted),
                attended: true,
                removed: true,
                ..nobody
            },
            Role::Stranger => nobody,
            Role::Admin => Relation {
                is_admin: true,
                ..nobody
            },
        }
    }

    fn access(self) -> Access {
        Access {
            relation: self.relation(),
            policy: JoinPolicy::InvitedOnly,
            status: MeetingStatus::Ongoing,
        }
    }
}

/// Who may call an RPC.
#[derive(Clone, Copy)]
enum Rule {
    /// A predicate of `domain::meeting::Access`.
    Meeting(fn(&Access) -> bool),
    /// Exactly these roles (call parties, owners of a notification).
    Only(&'static [Role]),
}

impl Rule {
    fn allows(self, role: Role) -> bool {
        match self {
            Rule::Meeting(predicate) => predicate(&role.access()),
            Rule::Only(roles) => roles.contains(&role),
        }
    }
}

type Call = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;
/// One RPC of the table: its name, its rule, and how to call it with a token.
type Row<'a> = (&'static str, Rule, Box<dyn Fn(String) -> Call + 'a>);

struct World {
    channel: Channel,
    meeting: String,
    call: String,
    file: String,
    invite: String,
    notification: String,
    invitee_id: String,
}

fn ok<T>(result: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    result.map(|_| ())
}

/// Opens a server stream and reads its first item: a refusal may come as
/// the call's error or as the stream's first item.
async fn first_of<T>(
    result: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<(), Status> {
    let mut stream = result?.into_inner();
    match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
        Ok(Some(Err(status))) => Err(status),
        _ => Ok(()),
    }
}

/// The RPCs of the matrix, each with its rule.
fn table(w: &World) -> Vec<Row<'_>> {
    let meetings = || pb::meeting_service_client::MeetingServiceClient::new(w.channel.clone());
    let calls = || CallServiceClient::new(w.channel.clone());
    let chat = || pb::chat_service_client::ChatServiceClient::new(w.channel.clone());
    let files = || FileServiceClient::new(w.channel.clone());
    let notes =
        || pb::notification_service_client::NotificationServiceClient::new(w.channel.clone());
    let rooms = || RoomServiceClient::new(w.channel.clone());
    let id = || w.meeting.clone();
    vec![
        (
            "GetMeeting",
            Rule::Meeting(Access::can_view),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(pb::GetMeetingRequest { meeting_id: id() }, &t);
                Box::pin(async move { ok(c.get_meeting(r).await) }) as Call
            }),
        ),
        (
            "UpdateMeeting",
            Rule::Meeting(Access::can_schedule),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(
                    pb::UpdateMeetingRequest {
                        meeting: Some(pb::Meeting {
                            id: id(),
                            description: "new agenda".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["description".into()],
                        }),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { ok(c.update_meeting(r).await) }) as Call
            }),
        ),
        (
            "StartMeeting",
            Rule::Meeting(Access::can_run),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(pb::StartMeetingRequest { meeting_id: id() }, &t);
                // Already ongoing: the host gets FAILED_PRECONDITION, past auth.
                Box::pin(async move { ok(c.start_meeting(r).await) }) as Call
            }),
        ),
        (
            "InviteParticipants",
            Rule::Meeting(Access::can_manage),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(
                    pb::InviteParticipantsRequest {
                        meeting_id: id(),
                        emails: vec!["later@example.com".into()],
                    },
                    &t,
                );
                Box::pin(async move { ok(c.invite_participants(r).await) }) as Call
            }),
        ),
        (
            "ListParticipants",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(
                    pb::ListParticipantsRequest {
                        meeting_id: id(),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { ok(c.list_participants(r).await) }) as Call
            }),
        ),
        (
            "ExportCalendar",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(pb::ExportCalendarRequest { meeting_id: id() }, &t);
                Box::pin(async move { ok(c.export_calendar(r).await) }) as Call
            }),
        ),
        (
            "RespondToInvite",
            Rule::Only(&[Role::Invitee]),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(
                    pb::RespondToInviteRequest {
                        invite_id: w.invite.clone(),
                        response: pb::InviteStatus::Accepted as i32,
                    },
                    &t,
                );
                Box::pin(async move { ok(c.respond_to_invite(r).await) }) as Call
            }),
        ),
        (
            "StartCall",
            Rule::Meeting(Access::can_join),
            Box::new(move |t: String| {
                let mut c = calls();
                let r = authed(
                    pb::StartCallRequest {
                        meeting_id: id(),
                        callee_id: String::new(),
                    },
                    &t,
                );
                Box::pin(async move { ok(c.start_call(r).await) }) as Call
            }),
        ),
        (
            "GetCall",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = calls();
                let r = authed(
                    pb::GetCallRequest {
                        call_id: w.call.clone(),
                    },
                    &t,
                );
                Box::pin(async move { ok(c.get_call(r).await) }) as Call
            }),
        ),
        (
            "ListCalls",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = calls();
                let r = authed(
                    pb::ListCallsRequest {
                        meeting_id: id(),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { ok(c.list_calls(r).await) }) as Call
            }),
        ),
        (
            "EndCall",
            // The call's parties: the host called the invitee.
            Rule::Only(&[Role::Host, Role::Invitee]),
            Box::new(move |t: String| {
                let mut c = calls();
                let r = authed(
                    pb::EndCallRequest {
                        call_id: w.call.clone(),
                    },
                    &t,
                );
                Box::pin(async move { ok(c.end_call(r).await) }) as Call
            }),
        ),
        (
            "SendMessage",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = chat();
                let r = authed(
                    pb::SendMessageRequest {
                        meeting_id: id(),
                        text: "hello".into(),
                        client_message_id: String::new(),
                    },
                    &t,
                );
                Box::pin(async move { ok(c.send_message(r).await) }) as Call
            }),
        ),
        (
            "ListMessages",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = chat();
                let r = authed(
                    pb::ListMessagesRequest {
                        meeting_id: id(),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { ok(c.list_messages(r).await) }) as Call
            }),
        ),
        (
            "ListFiles",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = files();
                let r = authed(
                    pb::ListFilesRequest {
                        meeting_id: id(),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { ok(c.list_files(r).await) }) as Call
            }),
        ),
        (
            "DownloadFile",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = files();
                let r = authed(
                    pb::DownloadFileRequest {
                        file_id: w.file.clone(),
                    },
                    &t,
                );
                Box::pin(async move { first_of(c.download_file(r).await).await }) as Call
            }),
        ),
        (
            "CreateUpload",
            Rule::Meeting(Access::is_member),
            Box::new(move |t: String| {
                let mut c = files();
                let r = authed(
                    pb::CreateUploadRequest {
                        metadata: Some(pb::FileMetadata {
                            meeting_id: id(),
                            filename: "notes.txt".into(),
                            ..Default::default()
                        }),
                    },
                    &t,
                );
                Box::pin(async move { ok(c.create_upload(r).await) }) as Call
            }),
        ),
        (
            "SendNotification",
            // Admins, or the host to the meeting's members.
            Rule::Only(&[Role::Host, Role::Admin]),
            Box::new(move |t: String| {
                let mut c = notes();
                let r = authed(
                    pb::SendNotificationRequest {
                        user_ids: vec![w.invitee_id.clone()],
                        meeting_id: id(),
                        r#type: pb::NotificationType::General as i32,
                        title: "t".into(),
                        body: "b".into(),
                    },
                    &t,
                );
                Box::pin(async move { ok(c.send_notification(r).await) }) as Call
            }),
        ),
        (
            "MarkNotificationRead",
            Rule::Only(&[Role::Invitee]),
            Box::new(move |t: String| {
                let mut c = notes();
                let r = authed(
                    pb::MarkNotificationReadRequest {
                        notification_id: w.notification.clone(),
                        read: true,
                    },
                    &t,
                );
                Box::pin(async move { ok(c.mark_notification_read(r).await) }) as Call
            }),
        ),
        (
            "Subscribe",
            Rule::Meeting(Access::can_join),
            Box::new(move |t: String| {
                let mut c = rooms();
                let r = authed(
                    pb::SubscribeRequest {
                        meeting_id: id(),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { first_of(c.subscribe(r).await).await }) as Call
            }),
        ),
        (
            "RemoveParticipant",
            Rule::Meeting(Access::can_run),
            Box::new(move |t: String| {
                let mut c = rooms();
                let r = authed(
                    pb::RemoveParticipantRequest {
                        meeting_id: id(),
                        participant_id: uuid::Uuid::new_v4().to_string(),
                    },
                    &t,
                );
                // No such participant: the host gets NOT_FOUND for the
                // participant, which this table cannot tell from a refusal.
                Box::pin(async move {
                    match c.remove_participant(r).await {
                        Err(s) if crate::helpers::reason(&s) == "PARTICIPANT_NOT_FOUND" => Ok(()),
                        other => ok(other),
                    }
                }) as Call
            }),
        ),
        (
            "GetMeetingReport",
            Rule::Meeting(Access::can_report),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(pb::GetMeetingReportRequest { meeting_id: id() }, &t);
                Box::pin(async move { ok(c.get_meeting_report(r).await) }) as Call
            }),
        ),
        (
            "AdmitParticipant",
            Rule::Meeting(Access::can_run),
            Box::new(move |t: String| {
                let mut c = rooms();
                let r = authed(
                    pb::AdmitParticipantRequest {
                        meeting_id: id(),
                        participant_id: uuid::Uuid::new_v4().to_string(),
                    },
                    &t,
                );
                // Nobody waits: past auth, NOT_FOUND for the participant.
                Box::pin(async move { not_waiting(c.admit_participant(r).await) }) as Call
            }),
        ),
        (
            "DenyParticipant",
            Rule::Meeting(Access::can_run),
            Box::new(move |t: String| {
                let mut c = rooms();
                let r = authed(
                    pb::DenyParticipantRequest {
                        meeting_id: id(),
                        participant_id: uuid::Uuid::new_v4().to_string(),
                    },
                    &t,
                );
                Box::pin(async move { not_waiting(c.deny_participant(r).await) }) as Call
            }),
        ),
        (
            "UpdateMeeting(locked)",
            Rule::Meeting(|a| a.can_run() || a.can_schedule()),
            Box::new(move |t: String| {
                let mut c = meetings();
                let r = authed(
                    pb::UpdateMeetingRequest {
                        meeting: Some(pb::Meeting {
                            id: id(),
                            ..Default::default()
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["locked".into()],
                        }),
                        ..Default::default()
                    },
                    &t,
                );
                Box::pin(async move { ok(c.update_meeting(r).await) }) as Call
            }),
        ),
        (
            "DeleteFile",
            // The uploader (the host here), the host, or an admin.
            Rule::Only(&[Role::Host, Role::Admin]),
            Box::new(move |t: String| {
                let mut c = files();
                let r = authed(
                    pb::DeleteFileRequest {
                        file_id: w.file.clone(),
                    },
                    &t,
                );
                // Only refusals are tried: the allowed roles would delete it.
                Box::pin(async move { ok(c.delete_file(r).await) }) as Call
            }),
        ),
    ]
}

/// NOT_FOUND because nobody waits in the lobby: past authorization.
fn not_waiting<T>(result: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    match result {
        Err(s) if crate::helpers::reason(&s) == "PARTICIPANT_NOT_WAITING" => Ok(()),
        other => ok(other),
    }
}

/// RPCs whose allowed calls change what later rows need: only their
/// refusals are tried.
const REFUSALS_ONLY: [&str; 1] = ["DeleteFile"];

async fn setup(app: &TestApp) -> (World, Vec<(Role, String)>) {
    let (_, host, _) = app.user("host@example.com").await;
    let (invitee_user, invitee, _) = app.user("invitee@example.com").await;
    let (_, decliner, _) = app.user("decliner@example.com").await;
    let (_, removed, _) = app.user("removed@example.com").await;
    let (co_host_user, co_host, _) = app.user("cohost@example.com").await;
    let (_, stranger, _) = app.user("stranger@example.com").await;
    let (_, admin) = app.admin("admin@example.com").await;
    let meeting = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Matrix".into(),
                start_time: crate::helpers::from_now(3600),
                duration_minutes: 60,
                invitee_emails: vec![
                    "invitee@example.com".into(),
                    "decliner@example.com".into(),
                    "removed@example.com".into(),
                    "cohost@example.com".into(),
                ],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let mine = |token: &str| {
        let mut c = app.meetings();
        let r = authed(pb::ListInvitesRequest::default(), token);
        async move { c.list_invites(r).await.unwrap().into_inner().invites }
    };
    let invite = mine(&invitee).await[0].id.clone();
    for (token, response) in [
        (&co_host, pb::InviteStatus::Accepted),
        (&invitee, pb::InviteStatus::Accepted),
        (&decliner, pb::InviteStatus::Declined),
        (&removed, pb::InviteStatus::Accepted),
    ] {
        let id = mine(token).await[0].id.clone();
        app.meetings()
            .respond_to_invite(authed(
                pb::RespondToInviteRequest {
                    invite_id: id,
                    response: response as i32,
                },
                token,
            ))
            .await
            .unwrap();
    }
    crate::room_features::co_hosts(app, &host, &meeting, &[&co_host_user.id]).await;
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    // Host, invitee and the soon-removed user attend; the host removes one.
    let mut rooms = RoomServiceClient::new(app.channel());
    let mut streams = Vec::new();
    for token in [&host, &invitee, &removed] {
        let mut stream = rooms
            .subscribe(authed(
                pb::SubscribeRequest {
                    meeting_id: meeting.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        let Some(pb::server_event::Event::Joined(joined)) = first.event else {
            panic!("{first:?}");
        };
        streams.push((stream, joined.participant_id));
    }
    rooms
        .remove_participant(authed(
            pb::RemoveParticipantRequest {
                meeting_id: meeting.clone(),
                participant_id: streams[2].1.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let call = CallServiceClient::new(app.channel())
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: meeting.clone(),
                callee_id: invitee_user.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let file = FileServiceClient::new(app.channel())
        .upload_file(authed(
            tokio_stream::iter(vec![
                pb::UploadFileRequest {
                    data: Some(pb::upload_file_request::Data::Metadata(pb::FileMetadata {
                        meeting_id: meeting.clone(),
                        filename: "agenda.txt".into(),
                        ..Default::default()
                    })),
                },
                pb::UploadFileRequest {
                    data: Some(pb::upload_file_request::Data::Chunk(
                        b"1. budget\n".to_vec(),
                    )),
                },
            ]),
            &host,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let notification = app
        .notifications()
        .list_notifications(authed(pb::ListNotificationsRequest::default(), &invitee))
        .await
        .unwrap()
        .into_inner()
        .notifications[0]
        .id
        .clone();
    let world = World {
        channel: app.channel(),
        meeting,
        call,
        file,
        invite,
        notification,
        invitee_id: invitee_user.id,
    };
    let tokens = vec![
        (Role::Host, host),
        (Role::CoHost, co_host),
        (Role::Invitee, invitee),
        (Role::Decliner, decliner),
        (Role::Removed, removed),
        (Role::Stranger, stranger),
        (Role::Admin, admin),
    ];
    drop(streams);
    (world, tokens)
}

#[tokio::test]
async fn every_scoped_rpc_answers_each_kind_of_user_as_the_rules_say() {
    let app = spawn_app().await;
    let (world, tokens) = setup(&app).await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, rule, call) in table(&world) {
        // Refusals first: an allowed call may change the state later
        // rows of the same RPC see (an answered invite, an ended call).
        let mut order: Vec<Role> = ROLES.to_vec();
        order.sort_by_key(|role| rule.allows(*role));
        for role in order {
            let allowed = rule.allows(role);
            if allowed && REFUSALS_ONLY.contains(&name) {
                continue;
            }
            let token = &tokens.iter().find(|(r, _)| *r == role).unwrap().1;
            let result = call(token.clone()).await;
            checked += 1;
            let code = result.as_ref().err().map(Status::code);
            let refused = matches!(code, Some(Code::PermissionDenied | Code::NotFound));
            let unauthenticated = code == Some(Code::Unauthenticated);
            let wrong = if allowed {
                refused || unauthenticated
            } else {
                !refused
            };
            if wrong {
                failures.push(format!(
                    "{name} as {role:?}: expected {}, got {:?}",
                    if allowed { "allowed" } else { "refused" },
                    result.err()
                ));
            }
        }
    }
    assert!(checked >= 100, "only {checked} cells checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
