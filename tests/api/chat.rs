//! ChatService and room chat: one path, stored before delivery, delivered
//! once, idempotent, gap-free, members only.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Streaming};
use unio::proto::pb::{
    self, chat_service_client::ChatServiceClient, client_event,
    room_service_client::RoomServiceClient, server_event::Event,
};

use tonic_types::StatusExt;

use crate::helpers::{TestApp, assert_status, authed, bad_fields, spawn_app, spawn_app_with};

fn chat(app: &TestApp) -> ChatServiceClient<tonic::transport::Channel> {
    ChatServiceClient::new(app.channel())
}

async fn meeting(app: &TestApp, host: &str, invitees: &[&str]) -> String {
    app.meeting(host, "Chat", invitees, pb::JoinPolicy::InvitedOnly)
        .await
        .id
}

async fn send(
    app: &TestApp,
    token: &str,
    meeting_id: &str,
    text: &str,
    client_id: &str,
) -> Result<pb::ChatMessage, tonic::Status> {
    chat(app)
        .send_message(authed(
            pb::SendMessageRequest {
                meeting_id: meeting_id.into(),
                text: text.into(),
                client_message_id: client_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

async fn join(
    app: &TestApp,
    token: &str,
    meeting_id: &str,
) -> (mpsc::Sender<pb::ClientEvent>, Streaming<pb::ServerEvent>) {
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::ClientEvent {
        request_id: String::new(),
        event: Some(client_event::Event::Join(pb::JoinRoom {
            meeting_id: meeting_id.into(),
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
    assert!(matches!(
        events.next().await.unwrap().unwrap().event,
        Some(Event::Joined(_))
    ));
    (tx, events)
}

/// Chat messages (and errors) arriving within `wait`.
async fn chats(
    events: &mut Streaming<pb::ServerEvent>,
    wait: Duration,
) -> Vec<Result<pb::ChatMessage, pb::ErrorEvent>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, events.next()).await {
        match event.event {
            Some(Event::Chat(m)) => out.push(Ok(*m)),
            Some(Event::Error(e)) => out.push(Err(e)),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn both_paths_reach_the_room_once_in_sequence() {
    let app = spawn_app().await;
    let (host_user, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = meeting(&app, &host, &["bob@example.com"]).await;
    let (host_tx, mut host_room) = join(&app, &host, &m).await;
    let (_bob_tx, mut bob_room) = join(&app, &bob, &m).await;

    let sent = send(&app, &bob, &m, "  hello from the API  ", "c-1")
        .await
        .unwrap();
    assert_eq!(
        (sent.text.as_str(), sent.sequence),
        ("hello from the API", 1)
    );
    host_tx
        .send(pb::ClientEvent {
            request_id: "r1".into(),
            event: Some(client_event::Event::Chat(pb::ChatSend {
                text: "hello from the room".into(),
                client_message_id: "h-1".into(),
            })),
        })
        .await
        .unwrap();
    for room in [&mut host_room, &mut bob_room] {
        let got = chats(room, Duration::from_millis(500)).await;
        let texts: Vec<(i64, String)> = got
            .into_iter()
            .map(|m| m.unwrap())
            .map(|m| (m.sequence, m.text))
            .collect();
        assert_eq!(
            texts,
            [
                (1, "hello from the API".to_owned()),
                (2, "hello from the room".to_owned())
            ]
        );
    }
    let listed = chat(&app)
        .list_messages(authed(
            pb::ListMessagesRequest {
                meeting_id: m.clone(),
                ..Default::default()
            },
            &bob,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.messages.len(), 2);
    assert_eq!(
        listed.messages[0].sender_id, host_user.id,
        "newest first; sender from the token"
    );
    assert_eq!(listed.messages[0].sender_display_name, "host");
}

#[tokio::test]
async fn a_retry_returns_the_stored_message_and_is_not_delivered_twice() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    let (_tx, mut room) = join(&app, &host, &m).await;
    let first = send(&app, &host, &m, "once", "same-key").await.unwrap();
    let again = send(&app, &host, &m, "once", "same-key").await.unwrap();
    assert_eq!(
        (first.id.as_str(), first.sequence),
        (again.id.as_str(), again.sequence)
    );
    assert_eq!(chats(&mut room, Duration::from_millis(400)).await.len(), 1);
    // Without a key, two sends are two messages.
    send(&app, &host, &m, "twice", "").await.unwrap();
    let last = send(&app, &host, &m, "twice", "").await.unwrap();
    assert_eq!(last.sequence, 3);
}

#[tokio::test]
async fn sequences_have_no_gaps_under_concurrent_senders() {
    let app = spawn_app_with(&[("UNIO_CHAT_RATE", "1000")]).await;
    let (_, host, _) = app.user("host@example.com").await;
    let mut tokens = vec![host.clone()];
    let mut emails = Vec::new();
    for i in 0..4 {
        emails.push(format!("p{i}@example.com"));
    }
    let email_refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let m = meeting(&app, &host, &email_refs).await;
    for email in &emails {
        tokens.push(app.user(email).await.1);
    }
    let mut tasks = Vec::new();
    for (t, token) in tokens.iter().enumerate() {
        for i in 0..20 {
            let (app_channel, token, m) = (app.channel(), token.clone(), m.clone());
            tasks.push(tokio::spawn(async move {
                ChatServiceClient::new(app_channel)
                    .send_message(authed(
                        pb::SendMessageRequest {
                            meeting_id: m,
                            text: format!("{t}-{i}"),
                            client_message_id: format!("{t}-{i}"),
                        },
                        &token,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .sequence
            }));
        }
    }
    let mut sequences = Vec::new();
    for task in tasks {
        sequences.push(task.await.unwrap());
    }
    sequences.sort();
    assert_eq!(sequences, (1..=100).collect::<Vec<i64>>());
}

#[tokio::test]
async fn history_pages_newest_first_and_catches_up_after_a_sequence() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    for i in 1..=7 {
        send(&app, &host, &m, &format!("m{i}"), "").await.unwrap();
    }
    let list = |page_size: i32, page_token: String, after_sequence: i64| {
        let mut client = chat(&app);
        let request = authed(
            pb::ListMessagesRequest {
                meeting_id: m.clone(),
                page_size,
                page_token,
                after_sequence,
            },
            &host,
        );
        async move { client.list_messages(request).await }
    };
    let first = list(3, String::new(), 0).await.unwrap().into_inner();
    let second = list(3, first.next_page_token.clone(), 0)
        .await
        .unwrap()
        .into_inner();
    let third = list(3, second.next_page_token.clone(), 0)
        .await
        .unwrap()
        .into_inner();
    let seqs =
        |r: &pb::ListMessagesResponse| r.messages.iter().map(|m| m.sequence).collect::<Vec<_>>();
    assert_eq!(
        (seqs(&first), seqs(&second), seqs(&third)),
        (vec![7, 6, 5], vec![4, 3, 2], vec![1])
    );
    assert!(third.next_page_token.is_empty());

    let catch_up = list(2, String::new(), 4).await.unwrap().into_inner();
    assert_eq!(seqs(&catch_up), [5, 6]);
    let rest = list(2, catch_up.next_page_token.clone(), 4)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seqs(&rest), [7]);
    let status = list(2, catch_up.next_page_token, 0).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["page_token"]);
    let status = list(2, String::new(), -1).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["after_sequence"]);
}

#[tokio::test]
async fn members_only_and_finished_meetings_are_read_only() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, eve, _) = app.user("eve@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    assert_status(
        send(&app, &eve, &m, "hi", "").await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    assert_status(
        chat(&app)
            .list_messages(authed(
                pb::ListMessagesRequest {
                    meeting_id: m.clone(),
                    ..Default::default()
                },
                &eve,
            ))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    for (text, field) in [("", "text"), ("   ", "text"), ("bell\u{7}", "text")] {
        let status = send(&app, &host, &m, text, "").await.unwrap_err();
        assert_eq!(bad_fields(&status), [field]);
    }
    let status = send(&app, &host, &m, &"x".repeat(4001), "")
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["text"]);
    let status = send(&app, &host, &m, "ok", &"k".repeat(101))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["client_message_id"]);
    send(&app, &host, &m, &"x".repeat(4000), "").await.unwrap();

    app.meetings()
        .start_meeting(authed(
            pb::StartMeetingRequest {
                meeting_id: m.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    app.meetings()
        .end_meeting(authed(
            pb::EndMeetingRequest {
                meeting_id: m.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_status(
        send(&app, &host, &m, "too late", "").await,
        Code::FailedPrecondition,
        "MEETING_READ_ONLY",
    );
    let history = chat(&app)
        .list_messages(authed(
            pb::ListMessagesRequest {
                meeting_id: m.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.messages.len(), 1);

    // Deleting the meeting deletes its chat.
    app.meetings()
        .delete_meeting(authed(
            pb::DeleteMeetingRequest {
                meeting_id: m.clone(),
            },
            &host,
        ))
        .await
        .unwrap();
    assert_status(
        chat(&app)
            .list_messages(authed(
                pb::ListMessagesRequest {
                    meeting_id: m.clone(),
                    ..Default::default()
                },
                &host,
            ))
            .await,
        Code::NotFound,
        "MEETING_NOT_FOUND",
    );
}

#[tokio::test]
async fn room_chat_is_rate_limited_with_error_events() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let m = meeting(&app, &host, &[]).await;
    let (tx, mut room) = join(&app, &host, &m).await;
    for i in 0..14 {
        tx.send(pb::ClientEvent {
            request_id: format!("c{i}"),
            event: Some(client_event::Event::Chat(pb::ChatSend {
                text: format!("m{i}"),
                client_message_id: String::new(),
            })),
        })
        .await
        .unwrap();
    }
    tx.send(pb::ClientEvent {
        request_id: "bad".into(),
        event: Some(client_event::Event::Chat(pb::ChatSend {
            text: " ".into(),
            client_message_id: String::new(),
        })),
    })
    .await
    .unwrap();
    let got = chats(&mut room, Duration::from_millis(800)).await;
    let delivered = got.iter().filter(|g| g.is_ok()).count();
    let limited = got
        .iter()
        .filter(|g| matches!(g, Err(e) if e.code == "RATE_LIMITED"))
        .count();
    assert_eq!(
        (delivered, limited),
        (10, 5),
        "a burst of 10, then errors; the blank one is refused too"
    );
}

#[tokio::test]
async fn a_deleted_senders_messages_stay_anonymised_without_gaps() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = meeting(&app, &host, &["bob@example.com"]).await;
    send(&app, &host, &m, "one", "").await.unwrap();
    send(&app, &bob, &m, "two", "").await.unwrap();
    send(&app, &host, &m, "three", "").await.unwrap();
    app.users()
        .delete_user(authed(pb::DeleteUserRequest::default(), &bob))
        .await
        .unwrap();
    let history = chat(&app)
        .list_messages(authed(
            pb::ListMessagesRequest {
                meeting_id: m.clone(),
                ..Default::default()
            },
            &host,
        ))
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<i64> = history.messages.iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, [3, 2, 1]);
    assert_eq!(
        (
            history.messages[1].sender_id.as_str(),
            history.messages[1].sender_display_name.as_str()
        ),
        ("", "Deleted user")
    );
}

#[tokio::test]
async fn one_chat_budget_per_user_and_meeting_spans_every_path() {
    let app = spawn_app().await;
    let (_, host, _) = app.user("host@example.com").await;
    let (_, bob, _) = app.user("bob@example.com").await;
    let m = meeting(&app, &host, &["bob@example.com"]).await;
    // A burst of 10 (twice the 5/s rate), then a clear refusal.
    let mut refused = None;
    for i in 0..15 {
        if let Err(status) = send(&app, &host, &m, &format!("m{i}"), "").await {
            refused = Some((i, status));
            break;
        }
    }
    let (at, status) = refused.expect("SendMessage is rate-limited");
    assert!((10..=12).contains(&at), "refused at message {at}");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(crate::helpers::reason(&status), "RATE_LIMITED");
    assert!(status.get_error_details().retry_info().is_some());

    // A fresh room session does not bring a fresh budget.
    let (tx, mut room) = join(&app, &host, &m).await;
    tx.send(pb::ClientEvent {
        request_id: "r1".into(),
        event: Some(client_event::Event::Chat(pb::ChatSend {
            text: "from the room".into(),
            client_message_id: String::new(),
        })),
    })
    .await
    .unwrap();
    let got = chats(&mut room, Duration::from_millis(300)).await;
    assert!(
        matches!(got.as_slice(), [Err(e)] if e.code == "RATE_LIMITED"),
        "{got:?}"
    );
    // Other users and other meetings keep their own budgets.
    send(&app, &bob, &m, "bob is fine", "").await.unwrap();
    let other = meeting(&app, &host, &[]).await;
    send(&app, &host, &other, "another meeting", "")
        .await
        .unwrap();
}
