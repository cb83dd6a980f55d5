//! NotificationService: automatic notices (exactly once, in the right
//! inbox), filters, paging, read state, ownership, live watches and
//! reminders.

use std::time::Duration;

use prost_types::{FieldMask, Timestamp};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};
use unio::proto::pb::{self, notification_service_client::NotificationServiceClient};

use crate::helpers::{TestApp, assert_status, authed, bad_fields, spawn_app, spawn_app_with};

fn inbox(app: &TestApp) -> NotificationServiceClient<tonic::transport::Channel> {
    NotificationServiceClient::new(app.channel())
}

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

async fn list(
    app: &TestApp,
    token: &str,
    request: pb::ListNotificationsRequest,
) -> pb::ListNotificationsResponse {
    inbox(app)
        .list_notifications(authed(request, token))
        .await
        .unwrap()
        .into_inner()
}

fn types(response: &pb::ListNotificationsResponse) -> Vec<i32> {
    response.notifications.iter().map(|n| n.r#type).collect()
}

async fn create(app: &TestApp, token: &str, start_in: i64, invitees: &[&str]) -> pb::Meeting {
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Weekly".into(),
                start_time: at(start_in),
                duration_minutes: 30,
                invitee_emails: invitees.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn watch(app: &TestApp, token: &str) -> Streaming<pb::Notification> {
    inbox(app)
        .watch_notifications(authed(pb::WatchNotificationsRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

/// The next real notification (keep-alives have an empty id).
async fn next(stream: &mut Streaming<pb::Notification>) -> pb::Notification {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("within 5 s")
            .unwrap()
            .unwrap();
        if !n.id.is_empty() {
            return n;
        }
    }
}

#[tokio::test]
async fn meeting_events_reach_the_right_inboxes_exactly_once() {
    let app = spawn_app().await;
    let (host_user, host, _) = app.user("host@example.com").await;
    let (bob_user, bob, _) = app.user("bob@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let m = create(
        &app,
        &host,
        3600,
        &["bob@example.com", "carol@example.com", "dora@example.com"],
    )
    .await;
    use pb::NotificationType as T;

    let bobs = list(&app, &bob, Default::default()).await;
    assert_eq!(types(&bobs), [T::MeetingInvite as i32]);
    assert_eq!(bobs.notifications[0].meeting_id, m.id);
    assert_eq!(bobs.notifications[0].user_id, bob_user.id);
    assert_eq!(bobs.unread_count, 1);
    // Re-inviting does not notify again.
    app.meetings()
        .invite_participants(authed(
            pb::InviteParticipantsRequest {
                meeting_id: m.id.clone(),
                emails: vec!["bob@example.com".into()],
            },
            &host,
        ))
        .await
        .unwrap();
    assert_eq!(
        list(&app, &bob, Default::default())
            .await
            .notifications
            .len(),
        1
    );

    // Dora signs up later: her invite and its notice wait for her.
    let (_, dora, _) = app.user("dora@example.com").await;
    assert_eq!(
        types(&list(&app, &dora, Default::default()).await),
        [T::MeetingInvite as i32]
    );

    // Carol declines: the host hears it; she hears nothing more.
    let carol_invite = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &carol))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: carol_invite.id,
                response: pb::InviteStatus::Declined as i32,
            },
            &carol,
        ))
        .await
        .unwrap();
    // The same answer twice tells the host once.
    let carol_invite = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &carol))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: carol_invite.id,
                response: pb::InviteStatus::Declined as i32,
            },
            &carol,
        ))
        .await
        .unwrap();
    let hosts = list(&app, &host, Default::default()).await;
    assert_eq!(types(&hosts), [T::InviteResponse as i32]);
    assert_eq!(hosts.notifications[0].user_id, host_user.id);

    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: m.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_eq!(
        types(&list(&app, &bob, Default::default()).await),
        [T::MeetingStarted as i32, T::MeetingInvite as i32]
    );
    assert_eq!(
        types(&list(&app, &dora, Default::default()).await),
        [T::MeetingStarted as i32, T::MeetingInvite as i32]
    );
    assert_eq!(
        types(&list(&app, &carol, Default::default()).await),
        [T::MeetingInvite as i32],
        "decliners are not told"
    );
    assert_eq!(
        list(&app, &host, Default::default())
            .await
            .notifications
            .len(),
        1,
        "the host is not told of its own start"
    );

    // An incoming call rings in the callee's inbox.
    app.calls()
        .start_call(authed(
            pb::StartCallRequest {
                meeting_id: m.id.clone(),
                callee_id: bob_user.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_eq!(
        list(&app, &bob, Default::default()).await.notifications[0].r#type,
        T::IncomingCall as i32
    );

    // Cancelling a scheduled meeting tells invitees who did not decline.
    let other = create(&app, &host, 7200, &["bob@example.com", "carol@example.com"]).await;
    let carol_invite = app
        .meetings()
        .list_invites(authed(
            pb::ListInvitesRequest {
                meeting_id: other.id.clone(),
                ..Default::default()
            },
            &carol,
        ))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: carol_invite.id,
                response: pb::InviteStatus::Declined as i32,
            },
            &carol,
        ))
        .await
        .unwrap();
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: other.id.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    let bob_now = list(&app, &bob, Default::default()).await;
    assert_eq!(bob_now.notifications[0].r#type, T::MeetingCancelled as i32);
    assert_eq!(bob_now.notifications[0].meeting_id, other.id);
    let carol_now = list(&app, &carol, Default::default()).await;
    assert!(
        carol_now
            .notifications
            .iter()
            .all(|n| n.r#type != T::MeetingCancelled as i32)
    );
}

#[tokio::test]
async fn the_inbox_filters_pages_and_tracks_reading() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (bob_user, bob, _) = app.user("bob@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    for _ in 0..5 {
        create(&app, &host, 3600, &["bob@example.com"]).await;
    }
    let (_, admin) = app.admin("root@example.com").await;
    inbox(&app)
        .send_notification(authed(
            pb::SendNotificationRequest {
                user_ids: vec![bob_user.id.clone()],
                title: "Maintenance tonight".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();

    let first = list(
        &app,
        &bob,
        pb::ListNotificationsRequest {
            page_size: 4,
            ..Default::default()
        },
    )
    .await;
    let second = list(
        &app,
        &bob,
        pb::ListNotificationsRequest {
            page_size: 4,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first.notifications.len() + second.notifications.len(), 6);
    assert!(second.next_page_token.is_empty());
    assert_eq!(
        first.notifications[0].r#type,
        pb::NotificationType::General as i32,
        "newest first"
    );
    assert_eq!(first.unread_count, 6);

    let invites_only = list(
        &app,
        &bob,
        pb::ListNotificationsRequest {
            types: vec![pb::NotificationType::MeetingInvite as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(invites_only.notifications.len(), 5);
    let status = inbox(&app)
        .list_notifications(authed(
            pb::ListNotificationsRequest {
                page_token: first.next_page_token.clone(),
                unread_only: true,
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["page_token"]);
    let status = inbox(&app)
        .list_notifications(authed(
            pb::ListNotificationsRequest {
                types: vec![0],
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["types[0]"]);

    let one = first.notifications[1].id.clone();
    let read = inbox(&app)
        .mark_notification_read(authed(
            pb::MarkNotificationReadRequest {
                notification_id: one.clone(),
                read: true,
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(read.read);
    let unread = list(
        &app,
        &bob,
        pb::ListNotificationsRequest {
            unread_only: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((unread.notifications.len(), unread.unread_count), (5, 5));
    inbox(&app)
        .mark_notification_read(authed(
            pb::MarkNotificationReadRequest {
                notification_id: one.clone(),
                read: false,
            },
            &bob,
        ))
        .await
        .unwrap();
    assert_eq!(list(&app, &bob, Default::default()).await.unread_count, 6);
    let all = inbox(&app)
        .mark_all_notifications_read(authed(pb::MarkAllNotificationsReadRequest {}, &bob))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.updated_count, 6);
    let again = inbox(&app)
        .mark_all_notifications_read(authed(pb::MarkAllNotificationsReadRequest {}, &bob))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.updated_count, 0);

    // Someone else's notification does not exist for you.
    assert_status(
        inbox(&app)
            .mark_notification_read(authed(
                pb::MarkNotificationReadRequest {
                    notification_id: one.clone(),
                    read: true,
                },
                &eve,
            ))
            .await,
        Code::NotFound,
        "NOTIFICATION_NOT_FOUND",
    );
    assert_status(
        inbox(&app)
            .delete_notification(authed(
                pb::DeleteNotificationRequest {
                    notification_id: one.clone(),
                },
                &eve,
            ))
            .await,
        Code::NotFound,
        "NOTIFICATION_NOT_FOUND",
    );
    inbox(&app)
        .delete_notification(authed(
            pb::DeleteNotificationRequest {
                notification_id: one.clone(),
            },
            &bob,
        ))
        .await
        .unwrap();
    assert_eq!(
        list(&app, &bob, Default::default())
            .await
            .notifications
            .len(),
        5
    );
    let status = inbox(&app)
        .delete_notification(authed(
            pb::DeleteNotificationRequest {
                notification_id: "x".into(),
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["notification_id"]);
}

#[tokio::test]
async fn only_admins_and_hosts_send_and_hosts_only_to_members() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (bob_user, bob, _) = app.user("bob@example.com").await;
    let (eve_user, eve, _) = app.user("eve@example.com").await;
    let m = create(&app, &host, 3600, &["bob@example.com"]).await;
    let send = |user_ids: Vec<String>, meeting_id: &str, title: &str, token: &str| {
        let mut client = inbox(&app);
        let request = authed(
            pb::SendNotificationRequest {
                user_ids,
                meeting_id: meeting_id.into(),
                title: title.into(),
                body: "details".into(),
                r#type: 0,
            },
            token,
        );
        async move { client.send_notification(request).await }
    };
    let sent = send(vec![bob_user.id.clone()], &m.id, "Room changed", &host)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sent.notifications[0].r#type,
        pb::NotificationType::General as i32
    );
    assert_status(
        send(vec![eve_user.id.clone()], &m.id, "Hi", &host).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        send(vec![bob_user.id.clone()], &m.id, "Hi", &bob).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        send(vec![bob_user.id.clone()], "", "Hi", &host).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let status = send(vec![], &m.id, "", &host).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["user_ids", "title"]);
    let (_, admin) = app.admin("root@example.com").await;
    send(vec![eve_user.id.clone()], "", "Welcome", &admin)
        .await
        .unwrap();
    let status = send(vec![uuid::Uuid::now_v7().to_string()], "", "Hi", &admin)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["user_ids[0]"]);
    assert_eq!(
        list(&app, &eve, Default::default())
            .await
            .notifications
            .len(),
        1
    );
}

#[tokio::test]
async fn every_open_watch_of_a_user_gets_new_notifications_live() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let mut phone = watch(&app, &bob).await;
    let mut laptop = watch(&app, &bob).await;
    let mut eves = watch(&app, &eve).await;
    let started = std::time::Instant::now();
    let m = create(&app, &host, 3600, &["bob@example.com"]).await;
    for stream in [&mut phone, &mut laptop] {
        let n = next(stream).await;
        assert_eq!(
            (n.r#type, n.meeting_id.as_str()),
            (pb::NotificationType::MeetingInvite as i32, m.id.as_str())
        );
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), eves.next())
            .await
            .is_err(),
        "eve got nothing"
    );
}

#[tokio::test]
async fn reminders_go_out_once_even_with_racing_jobs_and_follow_reschedules() {
    // A long lead: the server's own job sweeps only at start-up, so the test
    // drives the sweeps.
    let app = spawn_app_with(&[("UNIO_REMINDER_LEAD", "10m")]).await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, carol, _) = app.user("carol@example.com").await;
    let soon = create(&app, &host, 300, &["bob@example.com", "carol@example.com"]).await;
    let later = create(&app, &host, 3 * 3600, &["bob@example.com"]).await;
    let cancelled = create(&app, &host, 120, &["bob@example.com"]).await;
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: cancelled.id.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    let carol_invite = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &carol))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: carol_invite.id,
                response: pb::InviteStatus::Declined as i32,
            },
            &carol,
        ))
        .await
        .unwrap();

    // Two nodes' jobs on one database, racing.
    let config = unio::config::Config::from_lookup(|k| app.vars.get(k).cloned()).unwrap();
    let node_a = unio::build_state(config.clone()).await.unwrap();
    let node_b = unio::build_state(config).await.unwrap();
    let lead = Duration::from_secs(600);
    let (a, b) = tokio::join!(
        unio::jobs::reminders::sweep_once(&node_a, lead),
        unio::jobs::reminders::sweep_once(&node_b, lead)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 2, "host and bob, once each");
    assert_eq!(
        unio::jobs::reminders::sweep_once(&node_a, lead)
            .await
            .unwrap(),
        0,
        "a later sweep sends nothing"
    );

    let reminders = |token: String| {
        let app = &app;
        async move {
            list(
                app,
                &token,
                pb::ListNotificationsRequest {
                    types: vec![pb::NotificationType::MeetingReminder as i32],
                    ..Default::default()
                },
            )
            .await
            .notifications
        }
    };
    let bobs = reminders(bob.clone()).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].meeting_id, soon.id);
    assert_eq!(reminders(host.clone()).await.len(), 1);
    assert!(
        reminders(carol.clone()).await.is_empty(),
        "decliners get no reminder"
    );

    // Moved into the window: the later meeting gets its reminder; moved
    // again, a new one for the new time.
    for start_in in [400, 500] {
        app.meetings()
            .update_meeting(authed(
                pb::UpdateMeetingRequest {
                    meeting: Some(pb::Meeting {
                        id: later.id.clone(),
                        start_time: at(start_in),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["start_time".into()],
                    }),
                    ..Default::default()
                },
                &host,
            ))
            .await
            .unwrap();
        unio::jobs::reminders::sweep_once(&node_b, lead)
            .await
            .unwrap();
    }
    let bobs = reminders(bob.clone()).await;
    assert_eq!(bobs.iter().filter(|n| n.meeting_id == later.id).count(), 2);
    assert!(bobs.iter().all(|n| n.meeting_id != cancelled.id));

    // A restart sends nothing again.
    node_a.db.close().await;
    node_b.db.close().await;
    let app = app.restart().await;
    let config = unio::config::Config::from_lookup(|k| app.vars.get(k).cloned()).unwrap();
    let node = unio::build_state(config).await.unwrap();
    unio::jobs::reminders::sweep_once(&node, lead)
        .await
        .unwrap();
    let after = list(
        &app,
        &bob,
        pb::ListNotificationsRequest {
            types: vec![pb::NotificationType::MeetingReminder as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(after.notifications.len(), 3);
}

#[tokio::test]
async fn the_servers_own_job_delivers_reminders_live() {
    let app = spawn_app_with(&[("UNIO_REMINDER_LEAD", "3s")]).await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let mut live = watch(&app, &bob).await;
    let m = create(&app, &host, 2, &["bob@example.com"]).await;
    assert_eq!(
        next(&mut live).await.r#type,
        pb::NotificationType::MeetingInvite as i32
    );
    let reminder = next(&mut live).await;
    assert_eq!(
        (reminder.r#type, reminder.meeting_id.as_str()),
        (pb::NotificationType::MeetingReminder as i32, m.id.as_str())
    );
}
