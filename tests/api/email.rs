//! Email delivery through a small SMTP sink on loopback: invitations (also
//! to addresses without an account), cancellations, and retries.

use std::time::Duration;

use unio::proto::pb;

use crate::helpers::{authed, spawn_app, spawn_app_with};

#[tokio::test]
async fn invitations_and_cancellations_are_emailed() {
    let app = spawn_app().await;
    let sink = &app.mail;
    let (_, host, _) = app.user("host@example.com").await;
    app.user("bob@example.com").await;
    let meeting = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Quarterly planning".into(),
                start_time: crate::helpers::from_now(86_400),
                duration_minutes: 60,
                invitee_emails: vec!["bob@example.com".into(), "newbie@example.com".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let invitations = sink.wait_for(2).await;
    let mut to: Vec<&str> = invitations.iter().map(|m| m.to.as_str()).collect();
    to.sort();
    assert_eq!(to, ["bob@example.com", "newbie@example.com"]);
    assert!(
        invitations
            .iter()
            .all(|m| m.data.contains("Subject: Invitation: Quarterly planning"))
    );
    assert!(
        invitations
            .iter()
            .all(|m| m.data.contains("From: unio@example.com"))
    );

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
    let all = sink.wait_for(4).await;
    let cancellations: Vec<_> = all
        .iter()
        .filter(|m| m.data.contains("Subject: Cancelled: Quarterly planning"))
        .collect();
    assert_eq!(cancellations.len(), 2);
    app.mail_settled().await;
    assert_eq!(sink.others().len(), 4, "each email once");
}

#[tokio::test]
async fn a_refused_email_is_retried_and_sent_once() {
    let app = spawn_app().await;
    let sink = &app.mail;
    let (_, host, _) = app.user("host@example.com").await;
    sink.refuse_next(1);
    let started = std::time::Instant::now();
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Retry".into(),
                start_time: crate::helpers::from_now(86_400),
                duration_minutes: 30,
                invitee_emails: vec!["someone@example.com".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    // The RPC did not wait for the mail server.
    assert!(started.elapsed() < Duration::from_secs(1));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].to, "someone@example.com");
    app.mail_settled().await;
    assert_eq!(sink.others().len(), 1);
}

#[tokio::test]
async fn invitees_without_an_account_get_one_reminder_by_email() {
    let app = spawn_app_with(&[("UNIO_REMINDER_LEAD", "3s")]).await;
    let sink = &app.mail;
    let (_, host, _) = app.user("host@example.com").await;
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Soon".into(),
                start_time: crate::helpers::from_now(2),
                duration_minutes: 15,
                invitee_emails: vec!["solo@example.com".into()],
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap();
    let got = sink.wait_for(3).await;
    let to_solo: Vec<_> = got.iter().filter(|m| m.to == "solo@example.com").collect();
    assert!(
        to_solo
            .iter()
            .any(|m| m.data.contains("Subject: Invitation: Soon"))
    );
    assert_eq!(
        to_solo
            .iter()
            .filter(|m| m.data.contains("Subject: Soon: Soon"))
            .count(),
        1
    );
    // The host's reminder went out by email too.
    assert!(
        got.iter()
            .any(|m| m.to == "host@example.com" && m.data.contains("Subject: Soon: Soon"))
    );
    // Another sweep, as the job's next tick would run it, mails nothing again.
    let config = unio::config::Config::from_lookup(|k| app.vars.get(k).cloned()).unwrap();
    let node = unio::build_state(config).await.unwrap();
    unio::jobs::reminders::sweep_once(&node, Duration::from_secs(3))
        .await
        .unwrap();
    app.mail_settled().await;
    let later = sink.all();
    assert_eq!(
        later
            .iter()
            .filter(|m| m.data.contains("Subject: Soon: Soon"))
            .count(),
        2,
        "once each"
    );
}
