//! Email delivery through a small SMTP sink on loopback: invitations (also
//! to addresses without an account), cancellations, and retries.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prost_types::Timestamp;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use unio::proto::pb;

use crate::helpers::{TestApp, authed, spawn_app_with};

#[derive(Debug, Clone)]
struct Received {
    to: String,
    data: String,
}

/// An SMTP server that accepts everything, after refusing the first
/// `refuse` messages with a temporary error.
struct SmtpSink {
    addr: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SmtpSink {
    async fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0usize));
        let store = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let refused = refused.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                    let mut to = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let command = line.to_ascii_uppercase();
                        let reply: &[u8] =
                            if command.starts_with("EHLO") || command.starts_with("HELO") {
                                b"250 sink\r\n"
                            } else if command.starts_with("RCPT TO:") {
                                to = line[8..].trim().trim_matches(['<', '>']).to_owned();
                                b"250 OK\r\n"
                            } else if command.starts_with("DATA") {
                                let refuse_this = {
                                    let mut count = refused.lock().unwrap();
                                    *count += 1;
                                    *count <= refuse
                                };
                                if refuse_this {
                                    b"451 try again later\r\n"
                                } else {
                                    let _ = write.write_all(b"354 go ahead\r\n").await;
                                    let mut data = String::new();
                                    while let Ok(Some(body)) = lines.next_line().await {
                                        if body == "." {
                                            break;
                                        }
                                        data.push_str(&body);
                                        data.push('\n');
                                    }
                                    store.lock().unwrap().push(Received {
                                        to: to.clone(),
                                        data,
                                    });
                                    b"250 queued\r\n"
                                }
                            } else if command.starts_with("QUIT") {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            } else {
                                b"250 OK\r\n"
                            };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, received }
    }

    /// Waits until `count` emails arrived, and returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..100 {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "expected {count} emails, got {:?}",
            self.received.lock().unwrap()
        );
    }
}

async fn app_with(sink: &SmtpSink) -> TestApp {
    let url = format!("smtp://{}", sink.addr);
    spawn_app_with(&[
        ("UNIO_SMTP_URL", &url),
        ("UNIO_MAIL_FROM", "unio@example.com"),
    ])
    .await
}

fn start_in(seconds: i64) -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Some(Timestamp {
        seconds: now + seconds,
        nanos: 0,
    })
}

#[tokio::test]
async fn invitations_and_cancellations_are_emailed() {
    let sink = SmtpSink::start(0).await;
    let app = app_with(&sink).await;
    let (_, host, _) = app.user("host@example.com").await;
    app.user("bob@example.com").await;
    let meeting = app
        .meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Quarterly planning".into(),
                start_time: start_in(86_400),
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
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.received.lock().unwrap().len(), 4, "each email once");
}

#[tokio::test]
async fn a_refused_email_is_retried_and_sent_once() {
    let sink = SmtpSink::start(1).await;
    let app = app_with(&sink).await;
    let (_, host, _) = app.user("host@example.com").await;
    let started = std::time::Instant::now();
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Retry".into(),
                start_time: start_in(86_400),
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
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn invitees_without_an_account_get_one_reminder_by_email() {
    let sink = SmtpSink::start(0).await;
    let url = format!("smtp://{}", sink.addr);
    let app = spawn_app_with(&[
        ("UNIO_SMTP_URL", &url),
        ("UNIO_MAIL_FROM", "unio@example.com"),
        ("UNIO_REMINDER_LEAD", "3s"),
    ])
    .await;
    let (_, host, _) = app.user("host@example.com").await;
    app.meetings()
        .create_meeting(authed(
            pb::CreateMeetingRequest {
                title: "Soon".into(),
                start_time: start_in(2),
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
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = sink.received.lock().unwrap().clone();
    assert_eq!(
        later
            .iter()
            .filter(|m| m.data.contains("Subject: Soon: Soon"))
            .count(),
        2,
        "once each"
    );
}
