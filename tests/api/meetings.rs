//! MeetingService against the real server: every RPC, its permissions (host,
//! invitee, stranger, admin), the status machine, paging and the calendar.

use prost_types::{FieldMask, Timestamp};
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{TestApp, assert_status, authed, bad_fields, spawn_app};

const HOUR: i64 = 3600;

fn at(offset_seconds: i64) -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Some(Timestamp {
        seconds: now + offset_seconds,
        nanos: 0,
    })
}

fn new_meeting(title: &str, start_in: i64, invitees: &[&str]) -> pb::CreateMeetingRequest {
    pb::CreateMeetingRequest {
        title: title.into(),
        description: "Agenda: plans, budget; questions\nsecond line".into(),
        start_time: at(start_in),
        duration_minutes: 45,
        invitee_emails: invitees.iter().map(|s| s.to_string()).collect(),
        join_policy: 0,
        ..Default::default()
    }
}

async fn create(app: &TestApp, token: &str, request: pb::CreateMeetingRequest) -> pb::Meeting {
    app.meetings()
        .create_meeting(authed(request, token))
        .await
        .expect("create meeting")
        .into_inner()
}

fn id_request(meeting_id: &str) -> pb::GetMeetingRequest {
    pb::GetMeetingRequest {
        meeting_id: meeting_id.into(),
    }
}

async fn invites_of(app: &TestApp, token: &str, meeting_id: &str) -> Vec<pb::Invite> {
    app.meetings()
        .list_invites(authed(
            pb::ListInvitesRequest {
                meeting_id: meeting_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invites
}

#[tokio::test]
async fn create_returns_a_scheduled_meeting_with_its_join_url() {
    let app = spawn_app().await;
    let (host, token, _) = app.user("host@example.com").await;
    let meeting = create(&app, &token, new_meeting("  Kick-off  ", HOUR, &[])).await;
    assert_eq!(meeting.title, "Kick-off");
    assert_eq!(meeting.host_id, host.id);
    assert_eq!(meeting.status, pb::MeetingStatus::Scheduled as i32);
    assert_eq!(meeting.join_policy, pb::JoinPolicy::InvitedOnly as i32);
    assert_eq!(
        meeting.join_url,
        format!("http://localhost:50051/m/{}", meeting.id)
    );
    assert_eq!(meeting.duration_minutes, 45);
    assert_eq!(meeting.revision, 0);
    assert!(meeting.actual_start_time.is_none());
    let fetched = app
        .meetings()
        .get_meeting(authed(id_request(&meeting.id), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, meeting);
}

#[tokio::test]
async fn create_names_every_bad_field() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("host@example.com").await;
    let bad = pb::CreateMeetingRequest {
        title: " ".into(),
        description: "d".repeat(5001),
        start_time: at(-10 * 60),
        duration_minutes: 0,
        invitee_emails: vec![
            "ok@example.com".into(),
            "not-an-email".into(),
            "HOST@example.com".into(),
        ],
        join_policy: 9,
        ..Default::default()
    };
    let status = app
        .meetings()
        .create_meeting(authed(bad, &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&status),
        [
            "title",
            "description",
            "start_time",
            "duration_minutes",
            "join_policy",
            "invitee_emails[1]",
            "invitee_emails[2]"
        ]
    );
    for (request, field) in [
        (
            pb::CreateMeetingRequest {
                title: "t".repeat(201),
                ..new_meeting("", HOUR, &[])
            },
            "title",
        ),
        (
            pb::CreateMeetingRequest {
                start_time: None,
                ..new_meeting("t", HOUR, &[])
            },
            "start_time",
        ),
        (
            pb::CreateMeetingRequest {
                duration_minutes: 1441,
                ..new_meeting("t", HOUR, &[])
            },
            "duration_minutes",
        ),
        (
            pb::CreateMeetingRequest {
                invitee_emails: (0..201).map(|i| format!("p{i}@example.com")).collect(),
                ..new_meeting("t", HOUR, &[])
            },
            "invitee_emails",
        ),
    ] {
        let status = app
            .meetings()
            .create_meeting(authed(request, &token))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), [field]);
    }
    // A start a little in the past is fine (clocks differ).
    create(&app, &token, new_meeting("now-ish", -120, &[])).await;
    let list = app
        .meetings()
        .list_meetings(authed(pb::ListMeetingsRequest::default(), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.meetings.len(), 1, "refused requests stored nothing");
}

#[tokio::test]
async fn invitees_see_the_meeting_and_strangers_do_not() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (bob, bob_token, _) = app.user("bob@example.com").await;
    let (_, stranger, _) = app.user("eve@example.com").await;
    let meeting = create(
        &app,
        &host,
        new_meeting(
            "Plan",
            HOUR,
            &["BOB@example.com", "carol@example.com", "bob@example.com"],
        ),
    )
    .await;

    let invites = invites_of(&app, &host, &meeting.id).await;
    assert_eq!(invites.len(), 2, "duplicates collapse");
    assert_eq!(invites[0].user_id, bob.id);
    assert_eq!(invites[1].user_id, "", "carol has no account yet");
    assert!(
        invites
            .iter()
            .all(|i| i.status == pb::InviteStatus::Pending as i32)
    );

    app.meetings()
        .get_meeting(authed(id_request(&meeting.id), &bob_token))
        .await
        .unwrap();
    assert_status(
        app.meetings()
            .get_meeting(authed(id_request(&meeting.id), &stranger))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        app.meetings()
            .invite_participants(authed(
                pb::InviteParticipantsRequest {
                    meeting_id: meeting.id.clone(),
                    emails: vec!["x@example.com".into()],
                },
                &stranger,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        app.meetings()
            .update_meeting(authed(
                pb::UpdateMeetingRequest {
                    meeting: Some(pb::Meeting {
                        id: meeting.id.clone(),
                        title: "Mine".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                    ..Default::default()
                },
                &stranger,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // Carol signs up later and finds her invite waiting.
    let (carol, carol_token, _) = app.user("Carol@Example.com").await;
    let mine = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &carol_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.invites.len(), 1);
    assert_eq!(mine.invites[0].user_id, carol.id);
    assert_eq!(mine.invites[0].meeting_id, meeting.id);
    app.meetings()
        .get_meeting(authed(id_request(&meeting.id), &carol_token))
        .await
        .unwrap();
    let invited = app
        .meetings()
        .list_meetings(authed(
            pb::ListMeetingsRequest {
                role: pb::MeetingRole::Invited as i32,
                ..Default::default()
            },
            &carol_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(invited.meetings.len(), 1);
    let hosted = app
        .meetings()
        .list_meetings(authed(
            pb::ListMeetingsRequest {
                role: pb::MeetingRole::Hosted as i32,
                ..Default::default()
            },
            &carol_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(hosted.meetings.is_empty());
    // An invitee sees only their own invite of the meeting.
    assert_eq!(invites_of(&app, &bob_token, &meeting.id).await.len(), 1);
}

#[tokio::test]
async fn inviting_is_idempotent_and_validated() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob_token, _) = app.user("bob@example.com").await;
    let meeting = create(&app, &host, new_meeting("Plan", HOUR, &["bob@example.com"])).await;
    let invite = |emails: Vec<&str>, token: &str| {
        let mut meetings = app.meetings();
        let request = authed(
            pb::InviteParticipantsRequest {
                meeting_id: meeting.id.clone(),
                emails: emails.into_iter().map(String::from).collect(),
            },
            token,
        );
        async move { meetings.invite_participants(request).await }
    };
    let first = invite(vec!["bob@example.com", "dan@example.com"], &host)
        .await
        .unwrap()
        .into_inner()
        .invites;
    let again = invite(vec!["Bob@Example.com"], &host)
        .await
        .unwrap()
        .into_inner()
        .invites;
    assert_eq!(
        first[0].id, again[0].id,
        "re-inviting returns the existing invite"
    );
    assert_eq!(invites_of(&app, &host, &meeting.id).await.len(), 2);

    let status = invite(vec!["host@example.com"], &host).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["emails[0]"]);
    let status = invite(vec![], &host).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["emails"]);
    let status = invite(vec!["ok@example.com", "@bad"], &host)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["emails[1]"]);
    assert_status(
        invite(vec!["x@example.com"], &bob_token).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_eq!(
        invites_of(&app, &host, &meeting.id).await.len(),
        2,
        "refused calls invited nobody"
    );
}

#[tokio::test]
async fn invitees_answer_and_the_host_sees_every_answer() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let meeting = create(
        &app,
        &host,
        new_meeting("Plan", HOUR, &["bob@example.com", "carol@example.com"]),
    )
    .await;
    let mine = |token: &str| {
        let mut meetings = app.meetings();
        let request = authed(pb::ListInvitesRequest::default(), token);
        async move {
            meetings
                .list_invites(request)
                .await
                .unwrap()
                .into_inner()
                .invites
                .remove(0)
        }
    };
    let respond = |invite_id: String, response: pb::InviteStatus, token: &str| {
        let mut meetings = app.meetings();
        let request = authed(
            pb::RespondToInviteRequest {
                invite_id,
                response: response as i32,
            },
            token,
        );
        async move { meetings.respond_to_invite(request).await }
    };
    let bob_invite = mine(&bob).await;
    let carol_invite = mine(&carol).await;
    let accepted = respond(bob_invite.id.clone(), pb::InviteStatus::Accepted, &bob)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.status, pb::InviteStatus::Accepted as i32);
    assert!(accepted.respond_time.is_some());
    respond(carol_invite.id.clone(), pb::InviteStatus::Declined, &carol)
        .await
        .unwrap();

    let seen = invites_of(&app, &host, &meeting.id).await;
    let statuses: Vec<i32> = seen.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        [
            pb::InviteStatus::Accepted as i32,
            pb::InviteStatus::Declined as i32
        ]
    );
    let declined_only = app
        .meetings()
        .list_invites(authed(
            pb::ListInvitesRequest {
                meeting_id: meeting.id.clone(),
                statuses: vec![pb::InviteStatus::Declined as i32],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined_only.invites.len(), 1);

    // Carol changes her mind; Bob cannot answer for her; nobody answers "pending".
    respond(carol_invite.id.clone(), pb::InviteStatus::Accepted, &carol)
        .await
        .unwrap();
    assert_status(
        respond(carol_invite.id.clone(), pb::InviteStatus::Declined, &bob).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let status = respond(carol_invite.id.clone(), pb::InviteStatus::Pending, &carol)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["response"]);
    assert_status(
        respond(
            uuid::Uuid::now_v7().to_string(),
            pb::InviteStatus::Accepted,
            &carol,
        )
        .await,
        Code::NotFound,
        "INVITE_NOT_FOUND",
    );
    let status = respond("nope".into(), pb::InviteStatus::Accepted, &carol)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["invite_id"]);
}

#[tokio::test]
async fn the_status_machine_refuses_every_illegal_transition() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let meetings = app.meetings();
    let call = |what: &'static str, id: String, token: String| {
        let mut m = meetings.clone();
        async move {
            match what {
                "start" => {
                    m.start_meeting(authed(pb::StartMeetingRequest { meeting_id: id }, &token))
                        .await
                }
                "end" => {
                    m.end_meeting(authed(pb::EndMeetingRequest { meeting_id: id }, &token))
                        .await
                }
                _ => {
                    m.cancel_meeting(authed(
                        pb::CancelMeetingRequest {
                            meeting_id: id,
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
                }
            }
        }
    };
    let illegal = |result: Result<tonic::Response<pb::Meeting>, tonic::Status>| {
        assert_status(
            result,
            Code::FailedPrecondition,
            "INVALID_STATUS_TRANSITION",
        );
    };

    let m = create(&app, &host, new_meeting("A", HOUR, &["bob@example.com"])).await;
    illegal(call("end", m.id.clone(), host.clone()).await);
    assert_status(
        call("start", m.id.clone(), bob.clone()).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let started = call("start", m.id.clone(), host.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.status, pb::MeetingStatus::Ongoing as i32);
    assert!(started.actual_start_time.is_some());
    illegal(call("start", m.id.clone(), host.clone()).await);
    illegal(call("cancel", m.id.clone(), host.clone()).await);
    let ended = call("end", m.id.clone(), host.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.status, pb::MeetingStatus::Completed as i32);
    assert!(ended.actual_end_time.is_some());
    for what in ["start", "end", "cancel"] {
        illegal(call(what, m.id.clone(), host.clone()).await);
    }

    let c = create(&app, &host, new_meeting("B", HOUR, &[])).await;
    let cancelled = call("cancel", c.id.clone(), host.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::MeetingStatus::Cancelled as i32);
    for what in ["start", "end", "cancel"] {
        illegal(call(what, c.id.clone(), host.clone()).await);
    }

    // Over means read-only: no edits, no invites, no answers.
    assert_status(
        app.meetings()
            .update_meeting(authed(
                pb::UpdateMeetingRequest {
                    meeting: Some(pb::Meeting {
                        id: m.id.clone(),
                        title: "Again".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                    ..Default::default()
                },
                &host,
            ))
            .await,
        Code::FailedPrecondition,
        "MEETING_READ_ONLY",
    );
    assert_status(
        app.meetings()
            .invite_participants(authed(
                pb::InviteParticipantsRequest {
                    meeting_id: c.id.clone(),
                    emails: vec!["x@example.com".into()],
                },
                &host,
            ))
            .await,
        Code::FailedPrecondition,
        "MEETING_READ_ONLY",
    );
    let invite = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    assert_status(
        app.meetings()
            .respond_to_invite(authed(
                pb::RespondToInviteRequest {
                    invite_id: invite.id,
                    response: pb::InviteStatus::Accepted as i32,
                },
                &bob,
            ))
            .await,
        Code::FailedPrecondition,
        "MEETING_READ_ONLY",
    );
}

#[tokio::test]
async fn the_host_updates_fields_named_in_the_mask() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = create(&app, &host, new_meeting("Plan", HOUR, &["bob@example.com"])).await;
    let update = |meeting: pb::Meeting, paths: &[&str], token: &str| {
        let mut meetings = app.meetings();
        let request = authed(
            pb::UpdateMeetingRequest {
                meeting: Some(meeting),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
                ..Default::default()
            },
            token,
        );
        async move { meetings.update_meeting(request).await }
    };
    let changed = update(
        pb::Meeting {
            id: m.id.clone(),
            title: "Better plan".into(),
            duration_minutes: 90,
            description: "ignored".into(),
            ..Default::default()
        },
        &["title", "duration_minutes"],
        &host,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        (changed.title.as_str(), changed.duration_minutes),
        ("Better plan", 90)
    );
    assert_eq!(
        changed.description, m.description,
        "not in the mask, not changed"
    );
    assert_eq!(changed.revision, 1);
    // One instant, computed once: the RPC may straddle a second.
    let new_start = at(2 * HOUR);
    let moved = update(
        pb::Meeting {
            id: m.id.clone(),
            start_time: new_start,
            ..Default::default()
        },
        &["start_time"],
        &host,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(moved.start_time, new_start);
    assert_eq!(moved.revision, 2);
    let opened = update(
        pb::Meeting {
            id: m.id.clone(),
            join_policy: pb::JoinPolicy::AnyoneWithLink as i32,
            ..Default::default()
        },
        &["join_policy"],
        &host,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(opened.join_policy, pb::JoinPolicy::AnyoneWithLink as i32);

    let status = update(
        pb::Meeting {
            id: m.id.clone(),
            ..Default::default()
        },
        &["host_id"],
        &host,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["update_mask.paths"]);
    let status = update(
        pb::Meeting {
            id: m.id.clone(),
            duration_minutes: 0,
            ..Default::default()
        },
        &["duration_minutes"],
        &host,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["meeting.duration_minutes"]);
    let status = update(
        pb::Meeting {
            id: m.id.clone(),
            start_time: at(-HOUR),
            ..Default::default()
        },
        &["start_time"],
        &host,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["meeting.start_time"]);
    let status = update(
        pb::Meeting {
            id: m.id.clone(),
            title: "x".into(),
            ..Default::default()
        },
        &[],
        &host,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["update_mask"]);
    assert_status(
        update(
            pb::Meeting {
                id: m.id.clone(),
                title: "Bob's".into(),
                ..Default::default()
            },
            &["title"],
            &bob,
        )
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: m.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_status(
        update(
            pb::Meeting {
                id: m.id.clone(),
                start_time: at(3 * HOUR),
                ..Default::default()
            },
            &["start_time"],
            &host,
        )
        .await,
        Code::FailedPrecondition,
        "MEETING_ALREADY_STARTED",
    );
    update(
        pb::Meeting {
            id: m.id.clone(),
            title: "Live title".into(),
            ..Default::default()
        },
        &["title"],
        &host,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn hosts_and_admins_delete_meetings() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, admin) = app.admin("root@example.com").await;
    let a = create(&app, &host, new_meeting("A", HOUR, &["bob@example.com"])).await;
    let b = create(&app, &host, new_meeting("B", HOUR, &[])).await;
    let delete = |id: &str, token: &str| {
        let mut meetings = app.meetings();
        let request = authed(
            pb::DeleteMeetingRequest {
                meeting_id: id.into(),
            },
            token,
        );
        async move { meetings.delete_meeting(request).await }
    };
    assert_status(
        delete(&a.id, &bob).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // Admins read any meeting, and delete it.
    app.meetings()
        .get_meeting(authed(id_request(&b.id), &admin))
        .await
        .unwrap();
    delete(&b.id, &admin).await.unwrap();
    delete(&a.id, &host).await.unwrap();
    assert_status(
        delete(&a.id, &host).await,
        Code::NotFound,
        "MEETING_NOT_FOUND",
    );
    assert_status(
        app.meetings()
            .get_meeting(authed(id_request(&a.id), &bob))
            .await,
        Code::NotFound,
        "MEETING_NOT_FOUND",
    );
    assert!(
        app.meetings()
            .list_invites(authed(pb::ListInvitesRequest::default(), &bob))
            .await
            .unwrap()
            .into_inner()
            .invites
            .is_empty()
    );
}

#[tokio::test]
async fn list_meetings_pages_through_filters_in_start_order() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    // Seven meetings at 1h..7h; Bob is invited to the odd ones; 2h is cancelled.
    let mut ids = Vec::new();
    for i in 1..=7 {
        let invitees: &[&str] = if i % 2 == 1 {
            &["bob@example.com"]
        } else {
            &[]
        };
        ids.push(
            create(
                &app,
                &host,
                new_meeting(&format!("M{i}"), i * HOUR, invitees),
            )
            .await
            .id,
        );
    }
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: ids[1].clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    // Bob hosts one of his own too.
    create(&app, &bob, new_meeting("Bob's", 30 * 60, &[])).await;

    let list = |request: pb::ListMeetingsRequest, token: &str| {
        let mut meetings = app.meetings();
        let request = authed(request, token);
        async move { meetings.list_meetings(request).await }
    };
    let titles = |page: &pb::ListMeetingsResponse| {
        page.meetings
            .iter()
            .map(|m| m.title.clone())
            .collect::<Vec<_>>()
    };

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = list(
            pb::ListMeetingsRequest {
                page_size: 3,
                page_token: page_token.clone(),
                ..Default::default()
            },
            &host,
        )
        .await
        .unwrap()
        .into_inner();
        pages += 1;
        seen.extend(titles(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["M1", "M2", "M3", "M4", "M5", "M6", "M7"]);

    let scheduled_in_window = pb::ListMeetingsRequest {
        page_size: 2,
        statuses: vec![pb::MeetingStatus::Scheduled as i32],
        start_after: at(90 * 60),
        start_before: at(5 * HOUR + 60),
        ..Default::default()
    };
    let first = list(scheduled_in_window.clone(), &host)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&first), ["M3", "M4"]);
    let second = list(
        pb::ListMeetingsRequest {
            page_token: first.next_page_token.clone(),
            ..scheduled_in_window.clone()
        },
        &host,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(titles(&second), ["M5"]);
    assert!(second.next_page_token.is_empty());

    // A token is bound to its filters and its caller.
    let status = list(
        pb::ListMeetingsRequest {
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
        &host,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["page_token"]);
    let status = list(
        pb::ListMeetingsRequest {
            page_token: first.next_page_token.clone(),
            ..scheduled_in_window.clone()
        },
        &bob,
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&status), ["page_token"]);

    let bobs = list(pb::ListMeetingsRequest::default(), &bob)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(&bobs), ["Bob's", "M1", "M3", "M5", "M7"]);
    let bob_invited = list(
        pb::ListMeetingsRequest {
            role: pb::MeetingRole::Invited as i32,
            ..Default::default()
        },
        &bob,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(titles(&bob_invited), ["M1", "M3", "M5", "M7"]);
    let bob_hosted = list(
        pb::ListMeetingsRequest {
            role: pb::MeetingRole::Hosted as i32,
            ..Default::default()
        },
        &bob,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(titles(&bob_hosted), ["Bob's"]);
    let cancelled = list(
        pb::ListMeetingsRequest {
            statuses: vec![pb::MeetingStatus::Cancelled as i32],
            ..Default::default()
        },
        &host,
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(titles(&cancelled), ["M2"]);

    for (request, field) in [
        (
            pb::ListMeetingsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListMeetingsRequest {
                statuses: vec![0],
                ..Default::default()
            },
            "statuses[0]",
        ),
        (
            pb::ListMeetingsRequest {
                role: 42,
                ..Default::default()
            },
            "role",
        ),
        (
            pb::ListMeetingsRequest {
                start_after: at(HOUR),
                start_before: at(0),
                ..Default::default()
            },
            "start_before",
        ),
        (
            pb::ListMeetingsRequest {
                page_token: "forged.token".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let status = list(request, &host).await.unwrap_err();
        assert_eq!(bad_fields(&status), [field]);
    }
}

#[tokio::test]
async fn history_lists_finished_meetings_newest_first() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(
            create(
                &app,
                &host,
                new_meeting(&format!("H{i}"), i * HOUR, &["bob@example.com"]),
            )
            .await
            .id,
        );
    }
    for id in &ids[..2] {
        app.meetings()
            .start_meeting(authed(
                pb::StartMeetingRequest {
                    meeting_id: id.clone(),
                },
                &host,
            ))
            .await
            .unwrap();
        app.meetings()
            .end_meeting(authed(
                pb::EndMeetingRequest {
                    meeting_id: id.clone(),
                },
                &host,
            ))
            .await
            .unwrap();
    }
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: ids[2].clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();

    for token in [&host, &bob] {
        let first = app
            .meetings()
            .get_meeting_history(authed(
                pb::GetMeetingHistoryRequest {
                    page_size: 2,
                    page_token: String::new(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let second = app
            .meetings()
            .get_meeting_history(authed(
                pb::GetMeetingHistoryRequest {
                    page_size: 2,
                    page_token: first.next_page_token.clone(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let titles: Vec<String> = first
            .meetings
            .iter()
            .chain(&second.meetings)
            .map(|m| m.title.clone())
            .collect();
        assert_eq!(titles, ["H3", "H2", "H1"]);
        assert!(second.next_page_token.is_empty());
    }
    let none = app
        .meetings()
        .get_meeting_history(authed(pb::GetMeetingHistoryRequest::default(), &eve))
        .await
        .unwrap()
        .into_inner();
    assert!(none.meetings.is_empty());
}

#[tokio::test]
async fn anyone_with_the_link_may_look_but_not_manage() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let m = create(
        &app,
        &host,
        pb::CreateMeetingRequest {
            join_policy: pb::JoinPolicy::AnyoneWithLink as i32,
            ..new_meeting("Open", HOUR, &[])
        },
    )
    .await;
    app.meetings()
        .get_meeting(authed(id_request(&m.id), &eve))
        .await
        .unwrap();
    // Attendance and the invitee list are for members, not every link holder.
    assert_status(
        app.meetings()
            .list_participants(authed(
                pb::ListParticipantsRequest {
                    meeting_id: m.id.clone(),
                    ..Default::default()
                },
                &eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        app.meetings()
            .export_calendar(authed(
                pb::ExportCalendarRequest {
                    meeting_id: m.id.clone(),
                },
                &eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        app.meetings()
            .start_meeting(authed(
                pb::StartMeetingRequest {
                    meeting_id: m.id.clone(),
                },
                &eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    // It is not one of Eve's meetings until she joins.
    let eves = app
        .meetings()
        .list_meetings(authed(pb::ListMeetingsRequest::default(), &eve))
        .await
        .unwrap()
        .into_inner();
    assert!(eves.meetings.is_empty());
}

#[tokio::test]
async fn requests_with_bad_ids_name_the_field() {
    let app = spawn_app().await;
    let (_, token, _) = app.user("host@example.com").await;
    for bad in ["", "123", "'; DROP TABLE meetings; --"] {
        let status = app
            .meetings()
            .get_meeting(authed(id_request(bad), &token))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["meeting_id"]);
    }
    assert_status(
        app.meetings()
            .get_meeting(authed(
                id_request(&uuid::Uuid::now_v7().to_string()),
                &token,
            ))
            .await,
        Code::NotFound,
        "MEETING_NOT_FOUND",
    );
    assert_status(
        app.meetings()
            .get_meeting(id_request(&uuid::Uuid::now_v7().to_string()))
            .await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
}

#[tokio::test]
async fn deleting_a_host_removes_their_meetings() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = create(
        &app,
        &host,
        new_meeting("Gone soon", HOUR, &["bob@example.com"]),
    )
    .await;
    app.users()
        .delete_user(authed(pb::DeleteUserRequest::default(), &host))
        .await
        .unwrap();
    assert_status(
        app.meetings()
            .get_meeting(authed(id_request(&m.id), &bob))
            .await,
        Code::NotFound,
        "MEETING_NOT_FOUND",
    );
}

#[tokio::test]
async fn invitations_are_bounded_per_meeting_and_per_day() {
    let app = crate::helpers::spawn_app_with(&[
        ("UNIO_MAX_INVITES_PER_MEETING", "3"),
        ("UNIO_MAX_INVITES_PER_DAY", "5"),
    ])
    .await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = create(
        &app,
        &host,
        new_meeting(
            "Small",
            HOUR,
            &["a@x.example", "b@x.example", "c@x.example"],
        ),
    )
    .await;
    let more = app
        .meetings()
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: m.id.clone(),
                emails: vec!["d@x.example".into()],
            },
            &host,
        ))
        .await;
    assert_status(more, Code::ResourceExhausted, "TOO_MANY_INVITES");
    create(
        &app,
        &host,
        new_meeting("Second", HOUR, &["e@x.example", "f@x.example"]),
    )
    .await;
    // Five sent today: the next one, in any meeting, waits for tomorrow.
    let third = app
        .meetings()
        .create_meeting(authed(new_meeting("Third", HOUR, &["g@x.example"]), &host))
        .await;
    let status = assert_status(third, Code::ResourceExhausted, "TOO_MANY_INVITES");
    use tonic_types::StatusExt;
    assert!(status.get_error_details().retry_info().is_some());
    // Nothing was stored or mailed for the refused ones.
    assert_eq!(invites_of(&app, &host, &m.id).await.len(), 3);
    app.mail_settled().await;
    assert!(
        app.mail
            .others()
            .iter()
            .all(|mail| mail.to != "d@x.example" && mail.to != "g@x.example")
    );
}
