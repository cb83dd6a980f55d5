//! Recurring meetings (DESIGN §11): a weekly series across a
//! daylight-saving change keeps its local time; invitations go to the
//! series; "this" and "this and following" changes export as RRULE, EXDATE
//! and RECURRENCE-ID overrides that an independent parser (Python's
//! `icalendar`, expanded with `dateutil`) reads back; bad rules are refused
//! naming the field.

use prost_types::{FieldMask, Timestamp};
use tonic::Code;
use unio::proto::pb;

use crate::helpers::{TestApp, authed, bad_fields, spawn_app};

/// Monday 2036-03-17 09:00 in Berlin (CET); summer time starts on the 30th.
const FIRST: i64 = 2_089_353_600;
/// The six Mondays at 09:00 Berlin, in UTC seconds.
const MONDAYS: [i64; 6] = [
    2_089_353_600,
    2_089_958_400,
    2_090_559_600, // CEST from here: an hour less than a week later
    2_091_164_400,
    2_091_769_200,
    2_092_374_000,
];

/// What icalendar and dateutil make of the export: the master's rule
/// expanded (local ISO times), its EXDATEs, and each override.
const PARSE: &str = r#"
import sys, json, icalendar
from dateutil.rrule import rrulestr
cal = icalendar.Calendar.from_ical(sys.stdin.buffer.read())
events = list(cal.walk("VEVENT"))
[master] = [e for e in events if "RRULE" in e]
start = master.decoded("DTSTART")
rule = master["RRULE"].to_ical().decode()
expanded = [d.isoformat() for d in rrulestr(rule, dtstart=start)]
exdates = []
ex = master.get("EXDATE")
for group in (ex if isinstance(ex, list) else ([ex] if ex is not None else [])):
    exdates += [d.dt.isoformat() for d in group.dts]
overrides = [{
    "uid": str(e["UID"]),
    "recurrence_id": e.decoded("RECURRENCE-ID").isoformat(),
    "start": e.decoded("DTSTART").isoformat(),
    "summary": str(e["SUMMARY"]),
} for e in events if "RECURRENCE-ID" in e]
print(json.dumps({
    "uid": str(master["UID"]),
    "summary": str(master["SUMMARY"]),
    "tzid": str(master["DTSTART"].params.get("TZID", "")),
    "start": start.isoformat(),
    "expanded": expanded,
    "exdates": exdates,
    "overrides": overrides,
    "timezones": [str(t["TZID"]) for t in cal.walk("VTIMEZONE")],
}))
"#;

async fn parse(ics: &str) -> serde_json::Value {
    let output = crate::helpers::python(PARSE, ics.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("icalendar refused the export: {e}\n{ics}"));
    serde_json::from_slice(&output).unwrap()
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

async fn create(
    app: &TestApp,
    token: &str,
    recurrence: &str,
    time_zone: &str,
    start: i64,
) -> Result<pb::Meeting, tonic::Status> {
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Weekly".into(),
                start_time: at(start),
                duration_minutes: 30,
                invitee_emails: vec!["bob@example.com".into()],
                recurrence: recurrence.into(),
                time_zone: time_zone.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn occurrences(app: &TestApp, token: &str) -> Vec<pb::Meeting> {
    app.meetings()
        .list_meetings(authed(
            pb::ListMeetingsRequest {
                page_size: 100,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .meetings
}

async fn export(app: &TestApp, token: &str, meeting_id: &str) -> serde_json::Value {
    let ics = app
        .meetings()
        .export_calendar(authed(
            pb::ExportCalendarRequest {
                meeting_id: meeting_id.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .ics;
    parse(&ics).await
}

#[tokio::test]
async fn a_weekly_series_keeps_local_time_and_exports_its_exceptions() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let first = create(
        &app,
        &host,
        "FREQ=WEEKLY;BYDAY=MO;COUNT=6",
        "Europe/Berlin",
        FIRST,
    )
    .await
    .unwrap();
    assert!(!first.series_id.is_empty());
    assert_eq!(first.recurrence, "FREQ=WEEKLY;COUNT=6;BYDAY=MO");
    assert_eq!(first.time_zone, "Europe/Berlin");

    // Six meetings of their own, each at 09:00 Berlin.
    let series = occurrences(&app, &bob).await;
    assert_eq!(
        series
            .iter()
            .map(|m| m.start_time.as_ref().unwrap().seconds)
            .collect::<Vec<_>>(),
        MONDAYS
    );
    assert!(series.iter().all(|m| m.series_id == first.series_id));
    let ids: Vec<String> = series.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids[0], first.id);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        6
    );

    // One invitation to the series: one notification; answering it
    // answers for every occurrence.
    let notes = app
        .notifications()
        .list_notifications(authed(pb::ListNotificationsRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].body.contains("series of 6"), "{}", notes[0].body);
    let invites = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner()
        .invites;
    assert_eq!(invites.len(), 6);
    app.meetings()
        .respond_to_invite(authed(
            pb::RespondToInviteRequest {
                invite_id: invites[0].id.clone(),
                response: pb::InviteStatus::Accepted as i32,
            },
            &bob,
        ))
        .await
        .unwrap();
    let invites = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner()
        .invites;
    assert!(
        invites
            .iter()
            .all(|i| i.status == pb::InviteStatus::Accepted as i32)
    );

    // Cancel the second; rename the fourth "and following".
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: ids[1].clone(),
                scope: pb::RecurrenceScope::This as i32,
            },
            &host,
        ))
        .await
        .unwrap();
    let renamed = app
        .meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: ids[3].clone(),
                    title: "Weekly (new room)".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
                scope: pb::RecurrenceScope::ThisAndFollowing as i32,
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.title, "Weekly (new room)");
    let titles: Vec<String> = occurrences(&app, &bob)
        .await
        .into_iter()
        .map(|m| m.title)
        .collect();
    assert_eq!(
        titles,
        [
            "Weekly",
            "Weekly",
            "Weekly",
            "Weekly (new room)",
            "Weekly (new room)",
            "Weekly (new room)"
        ]
    );

    let parsed = export(&app, &bob, &ids[2]).await;
    assert_eq!(parsed["uid"], first.series_id.as_str());
    assert_eq!(parsed["summary"], "Weekly");
    assert_eq!(parsed["tzid"], "Europe/Berlin");
    assert_eq!(parsed["timezones"], serde_json::json!(["Europe/Berlin"]));
    assert_eq!(
        parsed["expanded"],
        serde_json::json!([
            "2036-03-17T09:00:00+01:00",
            "2036-03-24T09:00:00+01:00",
            "2036-03-31T09:00:00+02:00",
            "2036-04-07T09:00:00+02:00",
            "2036-04-14T09:00:00+02:00",
            "2036-04-21T09:00:00+02:00"
        ]),
        "the independent expansion keeps 09:00 across the change"
    );
    assert_eq!(
        parsed["exdates"],
        serde_json::json!(["2036-03-24T09:00:00+01:00"])
    );
    let overrides = parsed["overrides"].as_array().unwrap();
    assert_eq!(
        overrides
            .iter()
            .map(|o| (
                o["recurrence_id"].as_str().unwrap(),
                o["summary"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            ("2036-04-07T09:00:00+02:00", "Weekly (new room)"),
            ("2036-04-14T09:00:00+02:00", "Weekly (new room)"),
            ("2036-04-21T09:00:00+02:00", "Weekly (new room)")
        ]
    );
    assert!(
        overrides
            .iter()
            .all(|o| o["uid"] == first.series_id.as_str())
    );

    // Moving one occurrence by an hour exports its new start under its
    // original RECURRENCE-ID; cancelling "this and following" from the
    // fifth leaves the fourth alone.
    app.meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: ids[2].clone(),
                    start_time: at(MONDAYS[2] + 3_600),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["start_time".into()],
                }),
                scope: 0,
            },
            &host,
        ))
        .await
        .unwrap();
    app.meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: ids[4].clone(),
                scope: pb::RecurrenceScope::ThisAndFollowing as i32,
            },
            &host,
        ))
        .await
        .unwrap();
    let statuses: Vec<i32> = occurrences(&app, &host)
        .await
        .into_iter()
        .map(|m| m.status)
        .collect();
    let (s, c) = (
        pb::MeetingStatus::Scheduled as i32,
        pb::MeetingStatus::Cancelled as i32,
    );
    assert_eq!(statuses, [s, c, s, s, c, c]);
    let parsed = export(&app, &host, &ids[0]).await;
    assert_eq!(
        parsed["exdates"],
        serde_json::json!([
            "2036-03-24T09:00:00+01:00",
            "2036-04-14T09:00:00+02:00",
            "2036-04-21T09:00:00+02:00"
        ])
    );
    assert_eq!(
        parsed["overrides"],
        serde_json::json!([
            {
                "uid": first.series_id,
                "recurrence_id": "2036-03-31T09:00:00+02:00",
                "start": "2036-03-31T10:00:00+02:00",
                "summary": "Weekly"
            },
            {
                "uid": first.series_id,
                "recurrence_id": "2036-04-07T09:00:00+02:00",
                "start": "2036-04-07T09:00:00+02:00",
                "summary": "Weekly (new room)"
            }
        ])
    );
    // Bob heard of the cancellation of the last two once.
    let cancelled = app
        .notifications()
        .list_notifications(authed(
            pb::ListNotificationsRequest {
                types: vec![pb::NotificationType::MeetingCancelled as i32],
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(cancelled.len(), 2, "one per cancel call: {cancelled:?}");
}

#[tokio::test]
async fn renaming_from_the_first_occurrence_renames_the_series() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, _bob, _) = app.user("bob@example.com").await;
    let first = create(&app, &host, "FREQ=DAILY;COUNT=3", "", FIRST)
        .await
        .unwrap();
    assert_eq!(first.time_zone, "UTC");
    app.meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: first.id.clone(),
                    title: "Daily".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
                scope: pb::RecurrenceScope::ThisAndFollowing as i32,
            },
            &host,
        ))
        .await
        .unwrap();
    let parsed = export(&app, &host, &first.id).await;
    assert_eq!(parsed["summary"], "Daily");
    assert_eq!(parsed["tzid"], "");
    assert_eq!(parsed["overrides"], serde_json::json!([]));
    assert_eq!(
        parsed["expanded"],
        serde_json::json!([
            "2036-03-17T08:00:00+00:00",
            "2036-03-18T08:00:00+00:00",
            "2036-03-19T08:00:00+00:00"
        ])
    );
}

#[tokio::test]
async fn bad_rules_and_zones_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    for (rule, zone, start, field) in [
        ("FREQ=WEEKLY", "Europe/Berlin", FIRST, "recurrence"),
        ("FREQ=DAILY;COUNT=201", "Europe/Berlin", FIRST, "recurrence"),
        (
            "FREQ=DAILY;UNTIL=21050101T000000Z",
            "UTC",
            FIRST,
            "recurrence",
        ),
        ("FREQ=MINUTELY;COUNT=3", "UTC", FIRST, "recurrence"),
        ("BYDAY=XX;COUNT=3", "UTC", FIRST, "recurrence"),
        (
            "FREQ=DAILY;COUNT=2\nDTSTART:20350101T000000Z",
            "UTC",
            FIRST,
            "recurrence",
        ),
        (
            "FREQ=DAILY;COUNT=2",
            "Mars/Olympus_Mons",
            FIRST,
            "time_zone",
        ),
    ] {
        let refused = create(&app, &host, rule, zone, start).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{rule}: {refused:?}");
        assert_eq!(bad_fields(&refused), [field], "{rule}");
    }
    assert!(
        occurrences(&app, &host).await.is_empty(),
        "nothing half-stored"
    );
    // A start the rule does not produce: the series starts at its first
    // occurrence (Tuesday 2036-03-18, 09:00 Berlin).
    let tuesday = create(
        &app,
        &host,
        "FREQ=WEEKLY;BYDAY=TU;COUNT=2",
        "Europe/Berlin",
        FIRST,
    )
    .await
    .unwrap();
    assert_eq!(tuesday.start_time.unwrap().seconds, FIRST + 86_400);
    let parsed = export(&app, &host, &tuesday.id).await;
    assert_eq!(
        parsed["expanded"],
        serde_json::json!(["2036-03-18T09:00:00+01:00", "2036-03-25T09:00:00+01:00"]),
        "the export starts where the stored series does"
    );
    assert_eq!(parsed["overrides"], serde_json::json!([]));
    for m in occurrences(&app, &host).await {
        app.meetings()
            .delete_meeting(authed(pb::DeleteMeetingRequest { meeting_id: m.id }, &host))
            .await
            .unwrap();
    }

    // Scopes: an unknown value is refused; a co-host may not change the
    // later occurrences.
    let first = create(&app, &host, "FREQ=DAILY;COUNT=2", "UTC", FIRST)
        .await
        .unwrap();
    let refused = app
        .meetings()
        .cancel_meeting(authed(
            pb::CancelMeetingRequest {
                meeting_id: first.id.clone(),
                scope: 9,
            },
            &host,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), ["scope"]);
    let invite = app
        .meetings()
        .list_invites(authed(pb::ListInvitesRequest::default(), &bob))
        .await
        .unwrap()
        .into_inner()
        .invites
        .into_iter()
        .find(|i| i.meeting_id == first.id)
        .unwrap();
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
    app.meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: first.id.clone(),
                    co_host_ids: vec![invite.user_id.clone()],
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["co_host_ids".into()],
                }),
                scope: 0,
            },
            &host,
        ))
        .await
        .unwrap();
    let refused = app
        .meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: first.id.clone(),
                    locked: true,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["locked".into()],
                }),
                scope: pb::RecurrenceScope::ThisAndFollowing as i32,
            },
            &bob,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn moving_this_and_following_keeps_the_wall_clock() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let first = create(&app, &host, "FREQ=WEEKLY;COUNT=3", "Europe/Berlin", FIRST)
        .await
        .unwrap();
    // 09:00 becomes 10:00 on every Monday, also after summer time starts.
    app.meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: first.id.clone(),
                    start_time: at(FIRST + 3_600),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["start_time".into()],
                }),
                scope: pb::RecurrenceScope::ThisAndFollowing as i32,
            },
            &host,
        ))
        .await
        .unwrap();
    let starts: Vec<i64> = occurrences(&app, &host)
        .await
        .iter()
        .map(|m| m.start_time.as_ref().unwrap().seconds)
        .collect();
    assert_eq!(
        starts,
        [MONDAYS[0] + 3_600, MONDAYS[1] + 3_600, MONDAYS[2] + 3_600]
    );
    let parsed = export(&app, &host, &first.id).await;
    let moved: Vec<&str> = parsed["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        moved,
        [
            "2036-03-17T10:00:00+01:00",
            "2036-03-24T10:00:00+01:00",
            "2036-03-31T10:00:00+02:00"
        ]
    );
    // Co-hosts are named per occurrence.
    let refused = app
        .meetings()
        .update_meeting(authed(
            pb::UpdateMeetingRequest {
                meeting: Some(pb::Meeting {
                    id: first.id.clone(),
                    co_host_ids: vec![],
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["co_host_ids".into()],
                }),
                scope: pb::RecurrenceScope::ThisAndFollowing as i32,
            },
            &host,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), ["scope"]);
}
