//! GetMeetingReport (DESIGN §12) against the real server: attendance from
//! real room joins (two devices of one user count once in time), peak,
//! counts, and who may read it.

use tonic::Code;
use unio::proto::pb;

use crate::helpers::{assert_status, authed, bad_fields, spawn_app};
use crate::rooms::{connect, setup};

fn report_of(id: &str) -> pb::GetMeetingReportRequest {
    pb::GetMeetingReportRequest {
        meeting_id: id.into(),
    }
}

#[tokio::test]
async fn the_report_counts_who_came_and_only_runners_read_it() {
    let app = spawn_app().await;
    let (meeting, host, bob, carol) = setup(&app, pb::JoinPolicy::InvitedOnly).await;
    let (_, admin) = app.admin("root@example.com").await;
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: meeting.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let host_room = connect(&app, &host, &meeting).await;
    let phone = connect(&app, &bob, &meeting).await;
    let laptop = connect(&app, &bob, &meeting).await;
    for text in ["one", "two"] {
        app.chat()
            .send_message(authed(
                pb::SendMessageRequest {
                    meeting_id: meeting.clone(),
                    text: text.into(),
                    ..Default::default()
                },
                &bob,
            ))
            .await
            .unwrap();
    }
    let bob_id = phone
        .joined
        .participants
        .iter()
        .find(|p| p.participant_id == phone.joined.participant_id)
        .unwrap()
        .user_id
        .clone();
    drop((phone, laptop));
    // Carol never came: she is not in the report.
    let report = app
        .meetings()
        .get_meeting_report(authed(report_of(&meeting), &host))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.attendees.len(), 2, "{report:?}");
    let bob_row = report
        .attendees
        .iter()
        .find(|a| a.user_id == bob_id)
        .expect("bob attended");
    assert_eq!(bob_row.joins, 2);
    assert_eq!(bob_row.display_name, "bob");
    assert!(bob_row.first_join_time.is_some());
    assert_eq!(report.peak_participants, 3);
    assert_eq!(report.chat_messages, 2);
    assert_eq!((report.files_shared, report.calls), (0, 0));
    assert!(report.actual_duration_seconds >= 0);
    let host_row = &report.attendees[0];
    assert!(host_row.last_leave_time.is_none(), "the host is still in");

    // Who may read it: host, co-hosts, admins; not attendees.
    assert_status(
        app.meetings()
            .get_meeting_report(authed(report_of(&meeting), &carol))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    app.meetings()
        .get_meeting_report(authed(report_of(&meeting), &admin))
        .await
        .expect("admins read reports");
    crate::room_features::co_hosts(&app, &host, &meeting, &[&bob_id]).await;
    app.meetings()
        .get_meeting_report(authed(report_of(&meeting), &bob))
        .await
        .expect("co-hosts read reports");
    let status = assert_status(
        app.meetings()
            .get_meeting_report(authed(report_of("nope"), &host))
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(bad_fields(&status), ["meeting_id"]);
    drop(host_room);
}
