//! ExportCalendar output checked by an independent parser (Python's
//! `icalendar`, which the test command installs), and attendance as the live
//! room will record it.

use prost_types::Timestamp;
use unio::{config::Config, domain::time::now_micros, proto::pb, store::participants};

use crate::helpers::{TestApp, authed, spawn_app};

const PARSE: &str = r#"
import sys, json, icalendar
cal = icalendar.Calendar.from_ical(sys.stdin.buffer.read())
[event] = list(cal.walk("VEVENT"))
attendees = event.get("ATTENDEE")
if attendees is None:
    attendees = []
elif not isinstance(attendees, list):
    attendees = [attendees]
print(json.dumps({
    "version": str(cal["VERSION"]),
    "uid": str(event["UID"]),
    "summary": str(event["SUMMARY"]),
    "description": str(event.get("DESCRIPTION", "")),
    "dtstart": event.decoded("DTSTART").isoformat(),
    "dtend": event.decoded("DTEND").isoformat(),
    "status": str(event["STATUS"]),
    "sequence": int(event["SEQUENCE"]),
    "url": str(event["URL"]),
    "organizer": str(event["ORGANIZER"]),
    "organizer_cn": str(event["ORGANIZER"].params.get("CN", "")),
    "attendees": [[str(a), str(a.params.get("PARTSTAT"))] for a in attendees],
}))
"#;

/// Parses `ics` with Python's icalendar and returns what it understood.
async fn parse(ics: &str) -> serde_json::Value {
    let output = crate::helpers::python(PARSE, ics.as_bytes())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "icalendar refused the export (pip install icalendar; the test command does): {e}"
            )
        });
    serde_json::from_slice(&output).unwrap()
}

async fn export(app: &TestApp, token: &str, meeting_id: &str) -> String {
    let response = app
        .meetings()
        .export_calendar(authed(
            pb::ExportCalendarRequest {
                meeting_id: meeting_id.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.content_type, "text/calendar; charset=utf-8");
    assert_eq!(response.filename, format!("{meeting_id}.ics"));
    response.ics
}

#[tokio::test]
async fn the_calendar_export_parses_and_tracks_changes() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    app.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    display_name: "Hôst, the \"Great\"".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &host,
        ))
        .await
        .unwrap();
    let title = format!("Budget; Q3, Q4 \\ review — {}", "long ".repeat(30));
    let description = "Line one, with comma;\nLine two\tand a tab";
    let meeting = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: title.clone(),
                description: description.into(),
                start_time: Some(Timestamp {
                    seconds: 4_102_444_800,
                    nanos: 0,
                }), // 2100-01-01T00:00:00Z
                duration_minutes: 90,
                invitee_emails: vec!["bob@example.com".into(), "later@example.com".into()],
                join_policy: 0,
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let invite = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner()
        .invites
        .remove(0);
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: invite.id,
                response: pb::InviteStatus::Accepted as i32,
            },
            &bob,
        ))
        .await
        .unwrap();

    let ics = export(&app, &bob, &meeting.id).await;
    assert!(
        ics.lines().all(|l| l.len() <= 76),
        "lines are folded at 75 octets"
    );
    let parsed = parse(&ics).await;
    assert_eq!(parsed["version"], "2.0");
    assert_eq!(parsed["uid"], meeting.id.as_str());
    assert_eq!(parsed["summary"], title.trim());
    assert_eq!(parsed["description"], description);
    assert_eq!(parsed["dtstart"], "2100-01-01T00:00:00+00:00");
    assert_eq!(parsed["dtend"], "2100-01-01T01:30:00+00:00");
    assert_eq!(parsed["status"], "CONFIRMED");
    assert_eq!(parsed["sequence"], 0);
    assert_eq!(parsed["url"], meeting.join_url.as_str());
    assert_eq!(parsed["organizer"], "mailto:host@example.com");
    assert_eq!(parsed["organizer_cn"], "Hôst, the Great");
    assert_eq!(
        parsed["attendees"],
        serde_json::json!([
            ["mailto:bob@example.com", "ACCEPTED"],
            ["mailto:later@example.com", "NEEDS-ACTION"]
        ])
    );

    app.meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: meeting.id.clone(),
                    duration_minutes: 30,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["duration_minutes".into()],
                }),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: meeting.id.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    let parsed = parse(&export(&app, &host, &meeting.id).await).await;
    assert_eq!(parsed["status"], "CANCELLED");
    assert_eq!(
        parsed["sequence"], 2,
        "one update and one cancellation later"
    );
    assert_eq!(parsed["dtend"], "2100-01-01T00:30:00+00:00");

    let refused = app
        .meetings()
        .export_calendar(authed(
            pb::ExportCalendarRequest {
                meeting_id: meeting.id.clone(),
            },
            &eve,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn attendance_recorded_by_the_store_shows_in_list_participants() {
    let app = spawn_app().await;
    let (bob_user, bob, _) = app.user("bob@example.com").await;
    let (host_user, host, _) = app.user("host@example.com").await;
    let meeting = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Standup".into(),
                start_time: Some(Timestamp {
                    seconds: now_micros() / 1_000_000 + 60,
                    nanos: 0,
                }),
                duration_minutes: 15,
                invitee_emails: vec!["bob@example.com".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: meeting.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();

    // What the room will do: a row per join, left_at on leave.
    let config = Config::from_lookup(|k| app.vars.get(k).cloned()).unwrap();
    let db = unio::open_database(&config).await.unwrap();
    let now = now_micros();
    let (host_join, bob_phone, bob_laptop) = (
        unio::domain::new_id(),
        unio::domain::new_id(),
        unio::domain::new_id(),
    );
    participants::record_join(&db, &host_join, &meeting.id, &host_user.id, now)
        .await
        .unwrap();
    participants::record_join(&db, &bob_phone, &meeting.id, &bob_user.id, now + 1)
        .await
        .unwrap();
    participants::record_join(&db, &bob_laptop, &meeting.id, &bob_user.id, now + 2)
        .await
        .unwrap();
    assert!(
        participants::record_leave(&db, &bob_phone, now + 10)
            .await
            .unwrap()
    );
    assert!(
        !participants::record_leave(&db, &bob_phone, now + 20)
            .await
            .unwrap(),
        "a leave is recorded once"
    );

    let list = |page_size: i32, page_token: String| {
        let mut meetings = app.meetings();
        let request = authed(
            pb::ListParticipantsRequest {
                meeting_id: meeting.id.clone(),
                page_size,
                page_token,
            },
            &bob,
        );
        async move {
            meetings
                .list_participants(request)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = list(2, String::new()).await;
    let second = list(2, first.next_page_token.clone()).await;
    let all: Vec<_> = first
        .participants
        .iter()
        .chain(&second.participants)
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter().map(|p| p.online).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert_eq!(all[1].display_name, "bob");
    assert!(all[1].leave_time.is_some() && all[0].leave_time.is_none());

    // Ending the meeting closes every open attendance.
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: meeting.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let after = list(10, String::new()).await;
    assert!(
        after
            .participants
            .iter()
            .all(|p| !p.online && p.leave_time.is_some())
    );
    assert_eq!(
        participants::close_open(&db, &meeting.id, now_micros())
            .await
            .unwrap(),
        0
    );

    // Having attended puts the meeting in a participant's history.
    let (eve_user, eve, _) = app.user("eve@example.com").await;
    let other = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Open".into(),
                start_time: Some(Timestamp {
                    seconds: now_micros() / 1_000_000 + 60,
                    nanos: 0,
                }),
                duration_minutes: 15,
                join_policy: pb::JoinPolicy::AnyoneWithLink as i32,
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: other.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    participants::record_join(
        &db,
        &unio::domain::new_id(),
        &other.id,
        &eve_user.id,
        now_micros(),
    )
    .await
    .unwrap();
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: other.id.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    let history = app
        .meetings()
        .get_meeting_history(authed(pb::GetMeetingHistoryRequest::default(), &eve))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history
            .meetings
            .iter()
            .map(|m| m.id.clone())
            .collect::<Vec<_>>(),
        [other.id]
    );
    db.close().await;
}
